// Targets: each (rule, target)'s workers and bounds, backlog and latency
// (GET /v1/targets), and its concurrency over time from /v1/history, where
// the autoscaler's decisions show as steps.

import { get, qs } from "./api.js";
import { h, clear, ago, num, pill, table } from "./ui.js";
import { lineChart } from "./charts.js";

const KEPT = 300;

export default function targets(view) {
  const list = h("div", { id: "targets-list" });
  const charts = h("div", { class: "charts", id: "targets-charts", style: "margin-top:12px" });
  clear(view, h("h1", {}, "Targets"), list, charts);
  let samples = [];
  let plots = null;
  let queues = "";
  let timer = null;
  let stopped = false;

  function drawTable(ts) {
    clear(list, table([
      ["rule / target", (t) => [h("b", {}, t.rule), h("span", { class: "muted" }, ` / ${t.target}`), t.bus !== "default" ? h("span", { class: "muted" }, ` (${t.bus})`) : ""]],
      ["plugin", (t) => [t.plugin, " ", t.plugin_loaded ? "" : pill("not loaded", "warn")]],
      ["workers", (t) => `${t.concurrency} (${t.min_concurrency}–${t.max_concurrency})`, { num: true }],
      ["backlog", (t) => num(t.backlog), { num: true }],
      ["in flight", (t) => num(t.in_flight), { num: true, narrow: true }],
      ["oldest", (t) => (t.oldest_age_ms ? `${num(t.oldest_age_ms / 1000, 1)} s` : "–"), { num: true, narrow: true }],
      ["per s", (t) => num(t.processed_per_sec, 1), { num: true }],
      ["errors", (t) => `${num(t.error_rate * 100, 1)}%`, { num: true }],
      ["p50 / p99", (t) => `${num(t.p50_ms, 1)} / ${num(t.p99_ms, 1)} ms`, { num: true, narrow: true }],
      ["last scaling", (t) => (t.last_scaling
        ? [`${t.last_scaling.from} → ${t.last_scaling.applied}`, h("span", { class: "muted" }, ` ${ago(t.last_scaling.at)}${t.last_scaling.by ? ` by ${t.last_scaling.by}` : ""}: ${t.last_scaling.reason}`)]
        : h("span", { class: "muted" }, "none")), { wrap: true }],
    ], ts, { empty: "No target: add a rule with a target." }));
  }

  function drawCharts() {
    const names = [...new Set(samples.flatMap((s) => Object.keys(s.targets)))].sort();
    if (names.join("|") !== queues || !plots) {
      queues = names.join("|");
      // Queues are bus/rule/target; on the default bus the rule and target say it all.
      const labels = names.map((n) => n.replace(/^default\//, ""));
      if (plots) plots.forEach((p) => p.destroy());
      plots = [
        lineChart("Concurrency per target (autoscaler decisions as steps)", labels, { stepped: true }),
        lineChart("Backlog per target", labels),
      ];
      clear(charts, plots.map((p) => p.node));
    }
    const xs = samples.map((s) => s.t / 1000);
    const series = (field) => names.map((n) => samples.map((s) => (s.targets[n] ? s.targets[n][field] : null)));
    plots[0].set(xs, series("concurrency"));
    plots[1].set(xs, series("backlog"));
  }

  async function refresh() {
    timer = null;
    if (stopped) return;
    let interval = 2000;
    if (document.visibilityState === "visible") {
      try {
        const after = samples.length ? samples[samples.length - 1].t : undefined;
        const [t, hist] = await Promise.all([get("/v1/targets"), get(`/v1/history${qs({ after })}`)]);
        interval = hist.interval_ms || interval;
        drawTable(t.targets);
        samples = samples.concat(hist.samples).slice(-KEPT);
        drawCharts();
      } catch (e) {
        clear(list, h("p", { class: "field-error" }, `Could not read the targets: ${e.message}`));
      }
    }
    if (!stopped) timer = setTimeout(refresh, interval);
  }
  refresh();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    if (plots) plots.forEach((p) => p.destroy());
  };
}
