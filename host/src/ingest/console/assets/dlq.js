// Dead letters: list (GET /v1/dlq, a page at a time), inspect one (its event,
// last error, attempts), redrive the selected ones or all back into their
// queues (POST /v1/dlq/redrive), delete one or purge all.

import { get, post, del, qs } from "./api.js";
import { h, clear, attempt, ago, json, kv, openDrawer, closeDrawer, table, toast } from "./ui.js";

const PAGE = 100;

export default function dlq(view) {
  const list = h("div", { id: "dlq-list" });
  const summary = h("span", { class: "muted", id: "dlq-summary" });
  const more = h("button", { type: "button", hidden: true, onclick: () => page() }, "More");
  const selected = new Set();
  let letters = [];
  let done = false;

  const redriveSelected = h("button", { type: "button", class: "primary", id: "dlq-redrive", disabled: true, onclick: () => redrive([...selected]) }, "Redrive selected");
  clear(view, h("h1", {}, "Dead letters"),
    h("div", { class: "bar" }, summary, h("span", { class: "grow" }),
      redriveSelected,
      h("button", { type: "button", id: "dlq-redrive-all", onclick: () => redrive(null) }, "Redrive all"),
      h("button", { type: "button", class: "danger", id: "dlq-purge", onclick: purge }, "Purge all"),
      h("button", { type: "button", onclick: reload }, "Refresh")),
    list, h("div", { class: "bar", style: "margin-top:8px" }, more));

  function draw() {
    const all = h("input", {
      type: "checkbox", "aria-label": "select all", checked: letters.length > 0 && selected.size === letters.length,
      onchange: (e) => { letters.forEach((l) => (e.target.checked ? selected.add(l.id) : selected.delete(l.id))); draw(); },
    });
    clear(list, table([
      [all, (l) => h("input", {
        type: "checkbox", "aria-label": `select ${l.id}`, checked: selected.has(l.id), dataset: { id: String(l.id) },
        onchange: (e) => { (e.target.checked ? selected.add(l.id) : selected.delete(l.id)); draw(); },
      })],
      ["id", (l) => l.id, { num: true }],
      ["rule / target", (l) => [h("b", {}, l.rule), h("span", { class: "muted" }, ` / ${l.target}`)]],
      ["event", (l) => [l.event.source, " ", h("span", { class: "muted" }, l.event["detail-type"])], { narrow: true }],
      ["attempts", (l) => l.attempts, { num: true }],
      ["last error", (l) => h("span", { class: "field-error" }, l.last_error), { wrap: true }],
      ["dead-lettered", (l) => ago(l.dead_lettered_at), { narrow: true }],
    ], letters, { empty: "No dead letter: every delivery ended well or is still trying.", onOpen: inspect, rowClass: (l) => (selected.has(l.id) ? "selected" : "") }));
    redriveSelected.disabled = selected.size === 0;
    redriveSelected.textContent = selected.size ? `Redrive ${selected.size} selected` : "Redrive selected";
    summary.textContent = `${letters.length}${done ? "" : "+"} dead letter${letters.length === 1 ? "" : "s"}`;
    more.hidden = done;
  }

  function inspect(l) {
    openDrawer(`Dead letter ${l.id}`,
      kv([["rule / target", `${l.rule} / ${l.target}`], ["plugin", l.plugin], ["bus", l.bus], ["attempts", l.attempts],
        ["first queued", l.first_queued_at], ["dead-lettered", l.dead_lettered_at], ["delivery id", h("code", {}, l.delivery_id)],
        ["last error", h("span", { class: "field-error" }, l.last_error)]]),
      h("div", { class: "bar" },
        h("button", { type: "button", class: "primary", id: "dlq-redrive-one", onclick: () => redrive([l.id]).then(closeDrawer) }, "Redrive"),
        h("button", { type: "button", class: "danger", onclick: async () => {
          if (await attempt("Delete", () => del(`/v1/dlq/${l.id}`))) { toast(`Dead letter ${l.id} deleted`, "ok"); closeDrawer(); reload(); }
        } }, "Delete")),
      h("h3", {}, "Event"), json(l.event));
  }

  async function redrive(ids) {
    if (ids === null && !confirm("Redrive every dead letter back into its queue?")) return;
    const r = await attempt("Redrive", () => post("/v1/dlq/redrive", ids ? { ids } : {}));
    if (r) {
      toast(`${r.redriven} redriven`, "ok");
      reload();
    }
  }

  async function purge() {
    if (!confirm("Delete every dead letter? This cannot be undone.")) return;
    const r = await attempt("Purge", () => del("/v1/dlq"));
    if (r) {
      toast(`${r.purged} purged`, "ok");
      reload();
    }
  }

  async function page() {
    const after = letters.length ? letters[letters.length - 1].id : undefined;
    const r = await attempt("Dead letters", () => get(`/v1/dlq${qs({ after, limit: PAGE })}`));
    if (!r) return;
    letters = letters.concat(r.dead_letters);
    done = r.dead_letters.length < PAGE;
    draw();
  }

  function reload() {
    letters = [];
    selected.clear();
    done = false;
    page();
  }
  reload();
}
