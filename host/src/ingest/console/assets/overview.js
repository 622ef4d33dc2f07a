// Overview: the node's figures now and over the last minutes, from
// /v1/history. One small request per sampling interval asks only for the
// samples the page does not have yet, and none while the tab is hidden.

import { get, qs } from "./api.js";
import { h, clear, num } from "./ui.js";
import { lineChart } from "./charts.js";

const KEPT = 300;

export default function overview(view) {
  const cards = h("div", { class: "cards", id: "overview-cards" });
  const charts = {
    events: lineChart("Events in (per second)", ["events/s"]),
    deliveries: lineChart("Deliveries by outcome (per second)", ["delivered/s", "failed/s"], { colors: ["#16a34a", "#dc2626"] }),
    backlog: lineChart("Backlog (deliveries waiting)", ["backlog"]),
    p99: lineChart("p99 handling time (slowest target)", ["p99"], { unit: " ms" }),
  };
  const note = h("p", { class: "muted small" });
  clear(view,
    h("h1", {}, "Overview"),
    cards,
    h("div", { class: "charts" }, Object.values(charts).map((c) => c.node)),
    note);

  let samples = [];
  let interval = 2000;
  let timer = null;
  let stopped = false;

  const card = (label, value, bad) =>
    h("div", { class: `card ${bad ? "bad" : ""}`, dataset: { card: label } },
      h("div", { class: "label" }, label), h("div", { class: "value" }, value));

  function draw() {
    const last = samples[samples.length - 1];
    if (!last) {
      clear(cards, h("div", { class: "muted" }, "Waiting for the first sample…"));
      return;
    }
    clear(cards,
      card("Events in /s", num(last.events_per_sec, 1)),
      card("Delivered /s", num(last.delivered_per_sec, 1)),
      card("Failed /s", num(last.failed_per_sec, 1), last.failed_per_sec > 0),
      card("Backlog", num(last.backlog)),
      card("p99", `${num(last.p99_ms, 1)} ms`),
      card("Plugins loaded", num(last.plugins_loaded)),
      card("Plugins failed", num(last.plugins_failed), last.plugins_failed > 0),
      card("Dead letters waiting", num(last.dead_letters), last.dead_letters > 0));
    const xs = samples.map((s) => s.t / 1000);
    charts.events.set(xs, [samples.map((s) => s.events_per_sec)]);
    charts.deliveries.set(xs, [samples.map((s) => s.delivered_per_sec), samples.map((s) => s.failed_per_sec)]);
    charts.backlog.set(xs, [samples.map((s) => s.backlog)]);
    charts.p99.set(xs, [samples.map((s) => s.p99_ms)]);
    note.textContent = `${samples.length} samples, one every ${interval / 1000} s; totals since start: ` +
      `${num(last.events_total)} events, ${num(last.delivered_total)} delivered, ${num(last.failed_total)} failed attempts.`;
  }

  async function refresh() {
    timer = null;
    if (stopped) return;
    if (document.visibilityState === "visible") {
      try {
        const after = samples.length ? samples[samples.length - 1].t : undefined;
        const r = await get(`/v1/history${qs({ after })}`);
        interval = r.interval_ms || interval;
        samples = samples.concat(r.samples).slice(-KEPT);
        draw();
      } catch (e) {
        note.textContent = `Could not read /v1/history: ${e.message}`;
      }
    }
    if (!stopped) timer = setTimeout(refresh, interval);
  }

  draw();
  refresh();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    Object.values(charts).forEach((c) => c.destroy());
  };
}
