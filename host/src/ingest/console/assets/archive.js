// Archive: search archived events with the pattern language and a time range
// (GET /v1/archive, a page at a time), open one, and replay a time range to
// all rules of the bus or chosen ones (POST /v1/replays).

import { get, post, qs } from "./api.js";
import { h, clear, attempt, json, kv, openDrawer, patternEditor, table, toast, localToIso, isoToLocal, clock } from "./ui.js";

export default function archive(view, arg) {
  const editor = patternEditor({ id: "archive-pattern", rows: 4, optional: true, value: arg ? prettyArg(arg) : "" });
  editor.area.dataset.search = "";
  editor.area.placeholder = '{"source": ["payment-service"]}  (empty: every event)';
  const hourAgo = new Date(Date.now() - 3600e3);
  const since = h("input", { type: "datetime-local", id: "archive-since", value: isoToLocal(hourAgo) });
  const until = h("input", { type: "datetime-local", id: "archive-until" });
  const bus = h("select", { id: "archive-bus" }, h("option", { value: "" }, "every bus"));
  const results = h("div", { id: "archive-results" });
  const more = h("button", { type: "button", id: "archive-more", hidden: true }, "More");
  const summary = h("span", { class: "muted" });
  let shown = [];
  let next = null;
  let query = null;

  const form = h("form", { class: "panel", id: "archive-form", onsubmit: (e) => { e.preventDefault(); search(); } },
    h("label", { for: "archive-pattern" }, "Pattern"), editor.node,
    h("div", { class: "bar", style: "margin-top:6px" },
      h("div", {}, h("label", { for: "archive-since" }, "Since (received)"), since),
      h("div", {}, h("label", { for: "archive-until" }, "Until (empty: now)"), until),
      h("div", {}, h("label", { for: "archive-bus" }, "Bus"), bus),
      h("div", { class: "grow" }),
      h("button", { type: "submit", class: "primary", id: "archive-search" }, "Search")));

  const replayName = h("input", { id: "replay-name", value: `replay-${Date.now().toString(36)}` });
  const replayRules = h("input", { id: "replay-rules", placeholder: "every rule of the bus" });
  const replays = h("div", { id: "replay-list" });
  const replayPanel = h("details", { class: "panel" },
    h("summary", {}, h("b", {}, "Replay"), h("span", { class: "muted" }, " — publish the archived events of the range above again")),
    h("p", { class: "muted small" }, "A replay publishes every archived event received in the range (Since … Until) of the bus again, to every rule or the ones named; replayed events are not archived twice."),
    h("div", { class: "bar" },
      h("div", {}, h("label", { for: "replay-name" }, "Name"), replayName),
      h("div", { class: "grow" }, h("label", { for: "replay-rules" }, "Rules (comma-separated)"), replayRules),
      h("button", { type: "button", class: "primary", onclick: startReplay, style: "align-self:flex-end" }, "Start replay")),
    replays);

  clear(view, h("h1", {}, "Archive"), form, h("div", { class: "bar" }, summary, h("span", { class: "grow" })), results,
    h("div", { class: "bar", style: "margin-top:8px" }, more), replayPanel);

  function draw() {
    clear(results, table([
      ["time", (e) => clock(e.time)],
      ["source", (e) => e.source],
      ["detail-type", (e) => e["detail-type"]],
      ["bus", (e) => e["event-bus-name"], { narrow: true }],
      ["id", (e) => h("code", {}, e.id), { narrow: true }],
    ], shown, {
      empty: query ? "No archived event matches." : "Search to see archived events.",
      onOpen: (e) => openDrawer(`Event ${e.id}`,
        kv([["source", e.source], ["detail-type", e["detail-type"]], ["bus", e["event-bus-name"]], ["time", e.time],
          e["replay-name"] ? ["replay", e["replay-name"]] : null]),
        json(e)),
    }));
    more.hidden = !next;
    summary.textContent = query ? `${shown.length} event${shown.length === 1 ? "" : "s"}${next ? " so far" : ""}` : "";
  }

  async function page() {
    const r = await attempt("Archive", () => get(`/v1/archive${qs({ ...query, cursor: next || undefined })}`));
    if (!r) return;
    shown = shown.concat(r.events);
    next = r.next || null;
    draw();
  }

  async function search() {
    const pattern = editor.area.value.trim();
    if (pattern && (await editor.check(), editor.area.classList.contains("invalid"))) return;
    query = { pattern: pattern || undefined, since: localToIso(since.value), until: localToIso(until.value), bus: bus.value, limit: 100 };
    shown = [];
    next = null;
    await page();
  }
  more.addEventListener("click", page);

  async function startReplay() {
    const body = {
      name: replayName.value.trim(),
      bus: bus.value || "default",
      since: localToIso(since.value) || new Date(0).toISOString(),
      until: localToIso(until.value) || new Date().toISOString(),
    };
    const rules = replayRules.value.split(",").map((r) => r.trim()).filter(Boolean);
    if (rules.length) body.rules = rules;
    const r = await attempt("Replay", () => post("/v1/replays", body));
    if (r) {
      toast(`Replay ${r.name}: ${r.state || "started"}`, "ok");
      replayName.value = `replay-${Date.now().toString(36)}`;
      listReplays();
    }
  }

  async function listReplays() {
    const r = await attempt("Replays", () => get("/v1/replays"));
    if (!r) return;
    clear(replays, h("h3", {}, "Replays"), table([
      ["name", (x) => x.name], ["bus", (x) => x.bus], ["state", (x) => x.state],
      ["published", (x) => x.published ?? x.replayed ?? "", { num: true }],
      ["detail", (x) => x.error || "", { wrap: true }],
    ], r.replays, { empty: "No replay yet." }));
  }
  replayPanel.addEventListener("toggle", () => { if (replayPanel.open) listReplays(); });

  attempt("Buses", async () => {
    const r = await get("/v1/buses");
    bus.append(...r.buses.map((b) => h("option", { value: b.name }, b.name)));
  });
  draw();
  if (arg) search();
}

function prettyArg(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (_) {
    return text;
  }
}
