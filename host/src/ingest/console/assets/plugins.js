// Plugins: every plugin's state, version, limits, instances, calls and errors
// (GET /v1/plugins), and a .wasm upload (PUT /v1/plugins/NAME), which the
// node loads with the same checks as a file dropped into its directory.

import { get, request } from "./api.js";
import { h, clear, attempt, ago, kv, num, openDrawer, pill, table, toast, json } from "./ui.js";

const stateKind = { loaded: "ok", failed: "bad", unloaded: "off" };

export default function plugins(view) {
  const list = h("div", { id: "plugins-list" });
  const file = h("input", { type: "file", id: "upload-file", accept: ".wasm,application/wasm" });
  const name = h("input", { id: "upload-name", placeholder: "plugin name (the file's, by default)" });
  const status = h("div", { id: "upload-status", role: "status" });
  file.addEventListener("change", () => {
    if (file.files[0] && !name.value) name.value = file.files[0].name.replace(/\.wasm$/, "");
  });
  const upload = async (e) => {
    e.preventDefault();
    const f = file.files[0];
    if (!f) {
      status.className = "field-error";
      status.textContent = "Choose a .wasm file first.";
      return;
    }
    const n = name.value.trim() || f.name.replace(/\.wasm$/, "");
    status.className = "muted";
    status.textContent = `Uploading ${f.name} as ${n}.wasm and loading it…`;
    try {
      const p = await request("PUT", `/v1/plugins/${encodeURIComponent(n)}`, f);
      status.className = "field-ok";
      status.textContent = `${p.name} ${p.version} serves now.`;
      toast(`${p.name} loaded`, "ok");
    } catch (err) {
      status.className = "field-error";
      status.textContent = err.message;
    }
    load();
  };
  clear(view, h("h1", {}, "Plugins"),
    list,
    h("form", { class: "panel", id: "upload-form", style: "margin-top:12px", onsubmit: upload },
      h("h2", {}, "Upload a plugin"),
      h("p", { class: "muted small" }, "The file becomes NAME.wasm in the plugins directory and is loaded with the same checks as one copied there: a component of the busbar:plugin world, within the size bound; a bad file never replaces the version that serves. Its manifest (NAME.toml) stays as it is on disk."),
      h("div", { class: "bar" }, file, name, h("button", { type: "submit", class: "primary", id: "upload-submit" }, "Upload")),
      status));

  async function load() {
    const r = await attempt("Plugins", () => get("/v1/plugins"));
    if (!r) return;
    const rows = [...r].sort((a, b) => a.name.localeCompare(b.name));
    clear(list, table([
      ["name", (p) => h("b", {}, p.name)],
      ["state", (p) => pill(p.state, stateKind[p.state] || "off")],
      ["version", (p) => h("code", {}, p.version || "–")],
      ["loaded", (p) => ago(p.loaded_at), { narrow: true }],
      ["limits", (p) => (p.limits ? `${p.limits.memory_mib} MiB, ${p.limits.timeout_ms} ms, ≤${p.limits.max_instances}` : "–"), { narrow: true }],
      ["instances", (p) => `${p.instances} (${p.idle_instances} idle)`, { num: true }],
      ["calls", (p) => num(p.calls), { num: true }],
      ["errors", (p) => num(p.errors), { num: true }],
      ["last error", (p) => h("span", { class: "field-error" }, p.last_error || p.last_call_error || ""), { wrap: true }],
    ], rows, {
      empty: "No plugin in the plugins directory.",
      onOpen: (p) => openDrawer(`Plugin ${p.name}`,
        kv([["state", p.state], ["version", p.version || "–"], ["loaded at", p.loaded_at || "–"], ["policy", p.policy || "–"],
          ["calls", num(p.calls)], ["errors", num(p.errors)], ["last load error", p.last_error || "none"],
          ["last failed call", p.last_call_error || "none"]]),
        h("h3", {}, "Limits"), json(p.limits)),
    }));
  }

  load();
  const timer = setInterval(() => { if (document.visibilityState === "visible") load(); }, 5000);
  return () => clearInterval(timer);
}
