// Send event: a form like EventBridge's "Send events", posting to the native
// POST /events (publish token or admin token, whichever this tab holds).

import { get, request } from "./api.js";
import { h, clear, attempt, pretty, toast } from "./ui.js";

const SAMPLES = {
  "Order of 100": { source: "order-service", "detail-type": "OrderCreated", detail: { id: "order-1", amount: 100, customer: "ana@example.com" } },
  "Order of 600": { source: "order-service", "detail-type": "OrderCreated", detail: { id: "order-2", amount: 600, customer: "bo@example.com" } },
  "Payment processed": { source: "payment-service", "detail-type": "Payment Processed", detail: { order: "order-1", total_cost: 250 } },
};

export default function send(view) {
  const bus = h("select", { id: "send-bus" }, h("option", { value: "default" }, "default"));
  const source = h("input", { id: "send-source", required: true, placeholder: "order-service", "data-search": "" });
  const type = h("input", { id: "send-detail-type", required: true, placeholder: "OrderCreated" });
  const detail = h("textarea", { id: "send-detail", rows: 10, spellcheck: "false" }, "{\n  \n}");
  const resources = h("textarea", { id: "send-resources", rows: 2, spellcheck: "false", placeholder: "one ARN or name per line (optional)" });
  const detailMsg = h("div", { class: "field-error", role: "status" });
  const result = h("div", { id: "send-result" });

  const fill = (sample) => {
    source.value = sample.source;
    type.value = sample["detail-type"];
    detail.value = JSON.stringify(sample.detail, null, 2);
    checkDetail();
  };
  const checkDetail = () => {
    try {
      const v = JSON.parse(detail.value);
      if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("the detail must be a JSON object");
      detailMsg.textContent = "";
      detail.classList.remove("invalid");
      return v;
    } catch (e) {
      detailMsg.textContent = `Event detail: ${e.message}`;
      detail.classList.add("invalid");
      return undefined;
    }
  };
  detail.addEventListener("input", checkDetail);

  const form = h("form", { id: "send-form", class: "panel", onsubmit: async (e) => {
    e.preventDefault();
    const d = checkDetail();
    if (d === undefined) return;
    const event = { source: source.value.trim(), "detail-type": type.value.trim(), detail: d, "event-bus-name": bus.value };
    const res = resources.value.split("\n").map((r) => r.trim()).filter(Boolean);
    if (res.length) event.resources = res;
    const r = await attempt("Send", () => request("POST", "/events", event));
    if (!r) return;
    const entry = r.entries[0];
    if (entry.id) {
      toast(`Sent: ${entry.id}`, "ok");
      clear(result, h("p", {}, "Accepted as ", h("code", { id: "sent-id" }, entry.id), ". ",
        h("a", { href: `#/tail` }, "Watch the live tail"), " or ",
        h("a", { href: `#/archive/${encodeURIComponent(JSON.stringify({ id: [entry.id] }))}` }, "find it in the archive"), "."));
    } else {
      clear(result, h("p", { class: "field-error" }, `${entry.error_code}: ${entry.error_message}`));
    }
  } },
  h("div", { class: "bar" }, h("span", { class: "muted" }, "Samples:"),
    Object.entries(SAMPLES).map(([name, s]) => h("button", { type: "button", onclick: () => fill(s) }, name))),
  h("label", { for: "send-bus" }, "Event bus"), bus,
  h("label", { for: "send-source" }, "Event source"), source,
  h("label", { for: "send-detail-type" }, "Detail type"), type,
  h("label", { for: "send-detail" }, "Event detail (JSON object)"), detail, detailMsg,
  h("label", { for: "send-resources" }, "Resources"), resources,
  h("div", { class: "bar", style: "margin-top:10px" }, h("button", { class: "primary", type: "submit", id: "send-submit" }, "Send"),
    h("span", { class: "muted small" }, "Ctrl+Enter sends")),
  result);
  form.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });
  for (const input of [source, type]) input.style.width = "100%";
  clear(view, h("h1", {}, "Send event"), form);

  attempt("Buses", async () => {
    const r = await get("/v1/buses");
    const names = r.buses.map((b) => b.name).sort();
    clear(bus, names.map((n) => h("option", { value: n, selected: n === "default" }, n)));
  });
  fill(SAMPLES["Order of 100"]);
  detail.value = pretty(detail.value);
}
