// The console's shell: the menu, a hash router (#/page/arg) that mounts one
// page at a time and unmounts the previous one (stopping its timers and
// streams), and the keyboard shortcuts.

import { changeToken, token } from "./api.js";
import { h, clear, closeDrawer, drawerOpen } from "./ui.js";
import overview from "./overview.js";
import rules from "./rules.js";
import plugins from "./plugins.js";
import targets from "./targets.js";
import dlq from "./dlq.js";
import archive from "./archive.js";
import tail from "./tail.js";
import send from "./send.js";

const PAGES = [
  ["overview", "Overview", overview],
  ["rules", "Rules", rules],
  ["plugins", "Plugins", plugins],
  ["targets", "Targets", targets],
  ["dlq", "Dead letters", dlq],
  ["archive", "Archive", archive],
  ["tail", "Live tail", tail],
  ["send", "Send event", send],
];

const nav = document.getElementById("nav");
const view = document.getElementById("view");
let unmount = null;
let current = null;

for (const [id, title] of PAGES) {
  nav.append(h("a", { href: `#/${id}`, dataset: { page: id } }, title, h("kbd", {}, String(PAGES.findIndex((p) => p[0] === id) + 1))));
}

function route() {
  const [, id = "overview", ...rest] = location.hash.split("/");
  const page = PAGES.find((p) => p[0] === id) || PAGES[0];
  const arg = rest.map(decodeURIComponent).join("/");
  if (current && current.id === page[0] && current.arg === arg) return;
  if (unmount) unmount();
  unmount = null;
  closeDrawer();
  // A page's notices are about that page: they go with it.
  document.getElementById("toasts").replaceChildren();
  current = { id: page[0], arg };
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.page === page[0]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${page[1]} · busbar`;
  clear(view);
  for (const k of Object.keys(view.dataset)) delete view.dataset[k];
  view.dataset.page = page[0];
  const cleanup = page[2](view, arg);
  unmount = typeof cleanup === "function" ? cleanup : null;
}

window.addEventListener("hashchange", route);

const tokenButton = document.getElementById("token-button");
tokenButton.addEventListener("click", async () => {
  await changeToken();
  tokenButton.textContent = token() ? "token ✓" : "token";
  current = null;
  route();
});
if (token()) tokenButton.textContent = "token ✓";

document.getElementById("drawer-close").addEventListener("click", closeDrawer);

function typing(e) {
  const t = e.target;
  return t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName);
}

document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && drawerOpen()) {
    closeDrawer();
    return;
  }
  if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
  if (/^[1-8]$/.test(e.key)) {
    location.hash = `#/${PAGES[Number(e.key) - 1][0]}`;
    view.focus();
  } else if (e.key === "/") {
    const search = view.querySelector("[data-search]");
    if (search) {
      e.preventDefault();
      search.focus();
    }
  } else if (e.key === "?") {
    document.getElementById("help").showModal();
  } else {
    view.dispatchEvent(new CustomEvent("pagekey", { detail: e.key }));
  }
});

route();
