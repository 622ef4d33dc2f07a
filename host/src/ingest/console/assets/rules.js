// Rules: per bus, with pattern, targets and state; create and edit with the
// pattern checked by the node as you type and its errors shown in place;
// enable and disable; and test the pattern against an event.

import { get, put, del, request } from "./api.js";
import { h, clear, attempt, openDrawer, closeDrawer, patternEditor, pill, table, toast, pretty } from "./ui.js";

const SAMPLE_EVENT = {
  source: "order-service", "detail-type": "OrderCreated",
  detail: { id: "order-1", amount: 100, customer: "ana@example.com" },
};

export default function rules(view) {
  const tabs = h("div", { class: "bar", id: "rules-buses", role: "tablist" });
  const filter = h("input", { placeholder: "filter by name", "data-search": "", id: "rules-filter" });
  const list = h("div", { id: "rules-list" });
  let bus = "default";
  let all = [];
  clear(view, h("h1", {}, "Rules"), tabs,
    h("div", { class: "bar" }, filter, h("span", { class: "grow" }),
      h("button", { type: "button", class: "primary", id: "rule-new", onclick: () => edit(null) }, "New rule")),
    list);
  filter.addEventListener("input", draw);

  async function load() {
    const [b, r] = await Promise.all([get("/v1/buses"), get("/v1/rules")]);
    all = r.rules;
    const names = b.buses.map((x) => x.name).sort();
    if (!names.includes(bus)) bus = names[0] || "default";
    clear(tabs, names.map((n) => h("button", {
      type: "button", role: "tab", class: n === bus ? "primary" : "", "aria-selected": String(n === bus),
      onclick: () => { bus = n; load(); },
    }, n, h("span", { class: "muted" }, ` ${all.filter((x) => x.bus === n).length}`))));
    draw();
  }

  function draw() {
    const f = filter.value.trim().toLowerCase();
    const rows = all.filter((r) => r.bus === bus && (!f || r.name.toLowerCase().includes(f)))
      .sort((a, b) => a.name.localeCompare(b.name));
    clear(list, table([
      ["name", (r) => h("b", {}, r.name)],
      ["state", (r) => pill(r.state.toLowerCase(), r.state === "ENABLED" ? "ok" : "off")],
      ["pattern", (r) => h("div", { class: "pattern mono" }, compact(r.pattern)), { wrap: true }],
      ["targets", (r) => r.targets.map((t) => t.plugin).join(", ") || h("span", { class: "muted" }, "none")],
      ["from", (r) => r.origin, { narrow: true }],
      ["", (r) => h("button", { type: "button", onclick: () => toggle(r) }, r.state === "ENABLED" ? "Disable" : "Enable")],
    ], rows, { empty: `No rule on bus ${bus}.`, onOpen: (r) => edit(r) }));
  }

  async function toggle(r) {
    const state = r.state === "ENABLED" ? "DISABLED" : "ENABLED";
    const body = { pattern: r.pattern, state };
    if (r.description) body.description = r.description;
    if (await attempt(`Rule ${r.name}`, () => put(`/v1/rules/${enc(r.bus)}/${enc(r.name)}`, body))) {
      toast(`${r.name} ${state.toLowerCase()}`, "ok");
      load();
    }
  }

  function edit(rule) {
    const isNew = !rule;
    const name = h("input", { id: "rule-name", value: rule ? rule.name : "", readonly: !isNew, required: true });
    const ruleBus = h("input", { id: "rule-bus", value: rule ? rule.bus : bus, readonly: !isNew });
    const description = h("input", { id: "rule-description", value: (rule && rule.description) || "" });
    const enabled = h("input", { type: "checkbox", id: "rule-enabled", checked: !rule || rule.state === "ENABLED" });
    const editor = patternEditor({ id: "rule-pattern", rows: 9, value: rule ? pretty(rule.pattern) : "{\n  \"source\": [\"order-service\"]\n}" });
    const targets = h("textarea", { id: "rule-targets", rows: 5, spellcheck: "false" },
      JSON.stringify(rule ? rule.targets : [{ id: "1", plugin: "notification" }], null, 2));
    const formError = h("div", { class: "field-error", id: "rule-error", role: "alert" });
    const save = async (e) => {
      e.preventDefault();
      formError.textContent = "";
      let t;
      try {
        t = JSON.parse(targets.value);
        if (!Array.isArray(t)) throw new Error("targets must be a JSON array");
      } catch (err) {
        formError.textContent = `Targets: ${err.message}`;
        return;
      }
      const body = { pattern: editor.area.value, state: enabled.checked ? "ENABLED" : "DISABLED", targets: t };
      if (description.value.trim()) body.description = description.value.trim();
      try {
        await put(`/v1/rules/${enc(ruleBus.value.trim())}/${enc(name.value.trim())}`, body);
      } catch (err) {
        // A pattern error belongs under the pattern; anything else under the form.
        if (err.code === "InvalidEventPattern") {
          editor.msg.className = "field-error";
          editor.msg.textContent = err.message;
          editor.area.classList.add("invalid");
        } else {
          formError.textContent = err.message;
        }
        return;
      }
      toast(`Rule ${name.value} saved`, "ok");
      closeDrawer();
      bus = ruleBus.value.trim();
      load();
    };
    const remove = async () => {
      if (!confirm(`Delete rule ${rule.name}? Deliveries still waiting for it are dead-lettered.`)) return;
      if (await attempt(`Delete ${rule.name}`, () => del(`/v1/rules/${enc(rule.bus)}/${enc(rule.name)}`))) {
        toast(`Rule ${rule.name} deleted`, "ok");
        closeDrawer();
        load();
      }
    };
    openDrawer(isNew ? "New rule" : `Rule ${rule.name}`,
      h("form", { id: "rule-form", onsubmit: save },
        h("div", { class: "split" },
          h("div", {}, h("label", { for: "rule-name" }, "Name"), name),
          h("div", {}, h("label", { for: "rule-bus" }, "Bus"), ruleBus)),
        h("label", { for: "rule-description" }, "Description"), description,
        h("label", { for: "rule-pattern" }, "Event pattern (checked by the node as you type)"), editor.node,
        h("label", { for: "rule-targets" }, "Targets (JSON: id, plugin, and optionally input, input_path, input_transformer, retry, dead_letter)"), targets,
        h("label", {}, enabled, " Enabled"),
        formError,
        h("div", { class: "bar", style: "margin-top:10px" },
          h("button", { type: "submit", class: "primary", id: "rule-save" }, "Save"),
          isNew ? "" : h("button", { type: "button", class: "danger", onclick: remove }, "Delete"))),
      h("h3", {}, "Test against an event"),
      tester(() => editor.area.value, rule));
    setTimeout(() => (isNew ? name : editor.area).focus(), 0);
  }

  load().catch((e) => clear(list, h("p", { class: "field-error" }, `Could not read the rules: ${e.message}`)));
}

/// The event box and its verdict for the pattern in the editor.
function tester(patternText) {
  const event = h("textarea", { id: "test-event", rows: 8, spellcheck: "false" }, JSON.stringify(SAMPLE_EVENT, null, 2));
  const out = h("div", { id: "test-result", class: "explain" });
  const run = async () => {
    let ev;
    try {
      ev = JSON.parse(event.value);
    } catch (e) {
      clear(out, h("p", { class: "field-error" }, `Event: not JSON: ${e.message}`));
      return;
    }
    clear(out, await verdict(patternText(), ev));
  };
  return h("div", {}, event,
    h("div", { class: "bar", style: "margin-top:6px" }, h("button", { type: "button", id: "test-run", onclick: run }, "Test")),
    out);
}

/// Why the pattern does or does not match the event: the node's explanation
/// (POST /v1/explain), each alternative with each field's values and verdict.
/// A node without that route still gives the verdict (TestEventPattern).
async function verdict(pattern, event) {
  try {
    return explainView(await request("POST", "/v1/explain", { event, pattern }));
  } catch (e) {
    if (!(e.status === 404 && e.message.includes("no route"))) return h("p", { class: "field-error" }, e.message);
  }
  try {
    const r = await request("POST", "/", { EventPattern: pattern, Event: JSON.stringify(event) }, {
      headers: { "X-Amz-Target": "AWSEvents.TestEventPattern", "Content-Type": "application/x-amz-json-1.1" },
    });
    return h("div", {}, said(r.Result), h("p", { class: "muted small" }, "This node gives the verdict only (it has no /v1/explain)."));
  } catch (e) {
    return h("p", { class: "field-error" }, e.message);
  }
}

const said = (matched) => (matched
  ? h("p", { class: "verdict ok" }, "✓ The pattern matches this event.")
  : h("p", { class: "verdict no" }, "✗ The pattern does not match this event."));

function explainView(x) {
  const many = x.alternatives.length > 1;
  return h("div", {}, said(x.matched),
    x.alternatives.map((alt, i) => h("div", { class: `alt ${alt.matched ? "ok" : "no"}` },
      many ? h("b", {}, `Alternative ${i + 1}: ${alt.matched ? "matches" : "does not match"}`) : "",
      h("ul", {}, alt.fields.map((f) => h("li", { class: f.matched ? "ok" : "no" },
        h("code", {}, f.path), " ", f.matched ? "✓ " : "✗ ", f.why,
        f.found.length ? h("span", { class: "muted" }, ` (found ${f.found.map((v) => JSON.stringify(v)).join(", ")})`) : ""))),
      alt.why ? h("p", { class: "muted small" }, alt.why) : "")));
}

const enc = encodeURIComponent;

function compact(text) {
  try {
    return JSON.stringify(JSON.parse(text));
  } catch (_) {
    return text;
  }
}
