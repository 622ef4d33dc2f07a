// Live tail: the node's /v1/tail stream over one connection, with a pattern
// filter applied by the node, pause (items keep arriving and are counted, the
// list stands still), and click-through to an event and its deliveries.

import { tail as openTail } from "./api.js";
import { h, clear, json, kv, openDrawer, patternEditor, pill, table } from "./ui.js";

const SHOWN = 500;

const outcomeKind = { ok: "ok", retry: "warn", "dead-letter": "bad", dropped: "off" };

export default function tail(view) {
  const editor = patternEditor({ id: "tail-pattern", rows: 2, optional: true });
  editor.area.dataset.search = "";
  editor.area.placeholder = '{"source": ["order-service"]}  (empty: everything)';
  const state = h("span", { class: "muted", id: "tail-state" }, "connecting…");
  const pauseButton = h("button", { type: "button", id: "tail-pause", title: "Pause or resume (p)" }, "Pause");
  const list = h("div", { id: "tail-list" });
  clear(view,
    h("h1", {}, "Live tail"),
    h("div", { class: "panel" },
      h("label", { for: "tail-pattern" }, "Filter with a pattern (applied by the node; deliveries follow their event)"),
      editor.node,
      h("div", { class: "bar", style: "margin-top:8px" },
        h("button", { type: "button", class: "primary", id: "tail-apply", onclick: () => connect() }, "Apply filter"),
        pauseButton,
        h("button", { type: "button", onclick: () => { items = []; events.clear(); draw(); } }, "Clear"),
        h("span", { class: "grow" }),
        state)),
    list);

  let items = [];
  const events = new Map(); // event id -> {event, rules, deliveries}
  let paused = false;
  let missed = 0;
  let controller = null;
  let drawPending = false;

  function draw() {
    drawPending = false;
    if (paused) return;
    clear(list, table([
      ["time", (i) => i.at],
      ["", (i) => (i.kind === "event" ? pill("event", "ok") : pill(i.outcome, outcomeKind[i.outcome] || "off"))],
      ["what", (i) => (i.kind === "event"
        ? [h("b", {}, i.event.source), " ", i.event["detail-type"], i.rules.length ? h("span", { class: "muted" }, ` → ${i.rules.join(", ")}`) : h("span", { class: "muted" }, " → no rule")]
        : [`${i.rule}/${i.target}`, h("span", { class: "muted" }, ` ${i.plugin} #${i.attempt} ${i.latency_ms.toFixed(1)} ms`), i.error ? h("span", { class: "field-error" }, ` ${i.error}`) : ""])],
      ["event id", (i) => h("span", { class: "muted" }, (i.event ? i.event.id : i.event_id).slice(0, 8)), { narrow: true }],
    ], items, {
      empty: "Nothing yet: events appear here as they become durable.",
      rowClass: (i) => `tail ${i.kind}`,
      onOpen: (i) => open(i.event ? i.event.id : i.event_id),
    }));
  }

  const schedule = () => {
    if (!drawPending) {
      drawPending = true;
      requestAnimationFrame(draw);
    }
  };

  function open(id) {
    const e = events.get(id);
    if (!e) return;
    openDrawer(`Event ${id}`,
      kv([["source", e.event.source], ["detail-type", e.event["detail-type"]], ["bus", e.event["event-bus-name"]],
        ["time", e.event.time], ["rules", e.rules.join(", ") || "none"]]),
      h("p", {}, h("a", { href: `#/archive/${encodeURIComponent(JSON.stringify({ id: [id] }))}` }, "Open in the archive")),
      h("h3", {}, "Deliveries"),
      e.deliveries.length
        ? table([["rule/target", (d) => `${d.rule}/${d.target}`], ["attempt", (d) => d.attempt, { num: true }],
          ["outcome", (d) => pill(d.outcome, outcomeKind[d.outcome] || "off")], ["error", (d) => d.error || "", { wrap: true }]], e.deliveries)
        : h("p", { class: "muted" }, "None seen yet."),
      h("h3", {}, "Event"), json(e.event));
  }

  function add(item) {
    item.at = new Date().toLocaleTimeString();
    if (item.kind === "event") {
      events.set(item.event.id, { event: item.event, rules: item.rules, deliveries: [] });
    } else {
      const e = events.get(item.event_id);
      if (e) e.deliveries.push(item);
    }
    if (events.size > SHOWN * 2) events.delete(events.keys().next().value);
    if (paused) {
      missed += 1;
      pauseButton.textContent = `Resume (${missed} new)`;
    }
    items.unshift(item);
    if (items.length > SHOWN) items.length = SHOWN;
    if (!paused) schedule();
  }

  function setPaused(p) {
    paused = p;
    missed = 0;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    view.dataset.paused = String(paused);
    if (!paused) draw();
  }
  pauseButton.addEventListener("click", () => setPaused(!paused));
  view.addEventListener("pagekey", (e) => { if (e.detail === "p") setPaused(!paused); });

  async function connect() {
    if (controller) controller.abort();
    const mine = new AbortController();
    controller = mine;
    const pattern = editor.area.value.trim() || undefined;
    state.textContent = "connecting…";
    try {
      await openTail(pattern, {
        signal: mine.signal,
        onOpen: () => { state.textContent = pattern ? "live, filtered" : "live"; view.dataset.live = "true"; },
        onItem: add,
        onLagged: (n) => add({ kind: "delivery", event_id: "", rule: "(tail)", target: "", plugin: "", attempt: 0, outcome: "dropped", latency_ms: 0, error: `${n} items skipped: this tab fell behind`, emitted: 0 }),
      });
      if (controller === mine) state.textContent = "the stream ended; Apply filter reconnects";
    } catch (e) {
      if (mine.signal.aborted) return;
      state.textContent = `not connected: ${e.message}`;
      state.className = "field-error";
    }
  }

  draw();
  connect();
  return () => { if (controller) controller.abort(); controller = null; };
}
