// Time-series plots on uPlot (vendored, loaded as the global `uPlot`): one
// chart per figure, resized with its box, colours taken from the stylesheet
// so they follow the light/dark setting.

import { h } from "./ui.js";

const PALETTE = ["#2563eb", "#16a34a", "#dc2626", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/// A chart titled `title` with one line per series label; returns the element
/// (put it in the page) and `set(xs, ys[])` to give it data (xs in seconds).
export function lineChart(title, labels, { unit = "", stepped = false, colors = PALETTE } = {}) {
  const plot = h("div", { class: "plot" });
  const box = h("div", { class: "chart", dataset: { chart: title } }, h("h2", {}, title), plot);
  let chart = null;
  let data = [[], ...labels.map(() => [])];
  const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--line"), width: 1 }, ticks: { stroke: cssVar("--line") } };
  const make = () => {
    const width = Math.max(plot.clientWidth, 200);
    chart = new uPlot({
      width,
      height: 170,
      // One line needs no legend: the title names it.
      legend: { show: labels.length > 1, live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max, 1) * 1.1] } },
      // Wall-clock labels (14:05:10): the plots span minutes, not milliseconds.
      axes: [{ ...axis, space: 70, values: (u, vals) => vals.map((v) => new Date(v * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })) },
        { ...axis, size: 60, values: (u, vals) => vals.map((v) => `${+v.toFixed(2)}${unit}`) }],
      series: [
        {},
        ...labels.map((label, i) => ({
          label,
          stroke: colors[i % colors.length],
          width: 1.5,
          fill: labels.length === 1 ? `${colors[i % colors.length]}22` : undefined,
          paths: stepped ? uPlot.paths.stepped({ align: 1 }) : undefined,
          points: { show: false },
        })),
      ],
    }, data, plot);
  };
  const resize = new ResizeObserver(() => {
    if (!plot.isConnected) return;
    if (!chart) make();
    else chart.setSize({ width: Math.max(plot.clientWidth, 200), height: 170 });
  });
  resize.observe(plot);
  return {
    node: box,
    /// Replaces the data: xs (Unix seconds) and one array of ys per label.
    set(xs, ys) {
      data = [xs, ...ys];
      if (chart) chart.setData(data);
      box.dataset.points = String(xs.length);
    },
    destroy() {
      resize.disconnect();
      if (chart) chart.destroy();
    },
  };
}
