// Small building blocks shared by the pages: elements, tables, the details
// drawer, toasts, times and numbers, and the pattern editor with live checks.

import { request } from "./api.js";

/// h("div", {class: "x", onclick: f}, child, "text", [more]) builds an element.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function toast(message, kind = "") {
  const t = h("div", { class: `toast ${kind}` }, message);
  document.getElementById("toasts").append(t);
  setTimeout(() => t.remove(), kind === "bad" ? 9000 : 4000);
}

/// Runs an action, reporting its failure in a toast with the node's message.
export async function attempt(what, fn) {
  try {
    return await fn();
  } catch (e) {
    toast(`${what}: ${e.message}`, "bad");
    return undefined;
  }
}

export function pill(text, kind) {
  return h("span", { class: `pill ${kind}` }, text);
}

export const num = (n, digits = 0) =>
  n === undefined || n === null ? "–" : Number(n).toLocaleString(undefined, { maximumFractionDigits: digits });

export function ago(iso) {
  if (!iso) return "–";
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (Number.isNaN(s)) return iso;
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return iso.slice(0, 16).replace("T", " ");
}

export const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "–");

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

/// A table: columns are [title, cell(row) -> node|text, {num, narrow}]; rows
/// with `onOpen` are clickable and open with Enter too.
export function table(columns, rows, { onOpen, empty = "Nothing here yet.", rowClass } = {}) {
  const head = h("tr", {}, columns.map(([title, , o = {}]) =>
    h("th", { class: [o.num ? "num" : "", o.narrow ? "hide-narrow" : ""].join(" ") }, title)));
  const body = rows.length
    ? rows.map((r) => {
      const tr = h("tr", {
        class: [onOpen ? "clickable" : "", rowClass ? rowClass(r) : ""].join(" "),
        tabindex: onOpen ? "0" : undefined,
      }, columns.map(([, cell, o = {}]) =>
        h("td", { class: [o.num ? "num" : "", o.wrap ? "wrap" : "", o.narrow ? "hide-narrow" : ""].join(" ") }, cell(r))));
      if (onOpen) {
        tr.addEventListener("click", (e) => {
          if (e.target.closest("button, input, a, select")) return;
          onOpen(r, tr);
        });
        tr.addEventListener("keydown", (e) => { if (e.key === "Enter") onOpen(r, tr); });
      }
      return tr;
    })
    : [h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, empty))];
  return h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
}

export function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

let drawerOwner = null;
/// Opens the details drawer; `owner` lets a page close only its own drawer.
export function openDrawer(title, ...content) {
  const d = document.getElementById("drawer");
  document.getElementById("drawer-title").textContent = title;
  clear(document.getElementById("drawer-body"), ...content);
  d.hidden = false;
  drawerOwner = location.hash;
  document.getElementById("drawer-close").focus();
}

export function closeDrawer() {
  document.getElementById("drawer").hidden = true;
  drawerOwner = null;
}

export const drawerOpen = () => !document.getElementById("drawer").hidden && drawerOwner !== null;

/// A debounced function: called `ms` after the last call.
export function debounce(fn, ms) {
  let t;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

/// Checks a pattern with the node itself (EventBridge's TestEventPattern), so
/// the message is exactly the one a rule change would get. null when valid.
export async function patternError(text) {
  if (!text.trim()) return "The pattern is empty: write a JSON object such as {\"source\": [\"order-service\"]}.";
  try {
    JSON.parse(text);
  } catch (e) {
    return `Not JSON: ${e.message}`;
  }
  try {
    await request("POST", "/", { EventPattern: text, Event: "{}" }, {
      headers: { "X-Amz-Target": "AWSEvents.TestEventPattern", "Content-Type": "application/x-amz-json-1.1" },
    });
    return null;
  } catch (e) {
    return e.message;
  }
}

/// A textarea for a pattern whose error shows right under it as you type.
export function patternEditor({ value = "", rows = 8, id, optional = false, onState } = {}) {
  const area = h("textarea", { id, rows, spellcheck: "false", "aria-describedby": id ? `${id}-msg` : undefined }, value);
  const msg = h("div", { class: "field-error", id: id ? `${id}-msg` : undefined, role: "status" });
  let seq = 0;
  const check = async () => {
    const mine = ++seq;
    const text = area.value;
    const err = optional && !text.trim() ? null : await patternError(text);
    if (mine !== seq) return; // a newer check is on its way
    area.classList.toggle("invalid", Boolean(err));
    msg.className = err ? "field-error" : "field-ok";
    msg.textContent = err ? err : (text.trim() ? "Valid pattern." : "");
    if (onState) onState(!err);
  };
  area.addEventListener("input", debounce(check, 250));
  area.addEventListener("keydown", (e) => {
    // Tab indents inside the editor; Esc then Tab leaves it (keyboard users keep a way out).
    if (e.key === "Tab" && !e.shiftKey && !area.dataset.escaped) {
      e.preventDefault();
      area.setRangeText("  ", area.selectionStart, area.selectionEnd, "end");
    } else if (e.key === "Escape") {
      area.dataset.escaped = "1";
    } else {
      delete area.dataset.escaped;
    }
  });
  if (value) check();
  return { area, msg, check, node: h("div", {}, area, msg) };
}

/// Pretty-prints JSON text when it parses; leaves it alone otherwise.
export function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (_) {
    return text;
  }
}

/// RFC 3339 (UTC) of a datetime-local input's value, or "" when empty.
export function localToIso(v) {
  return v ? new Date(v).toISOString() : "";
}

/// A datetime-local value for a Date (the input shows local time).
export function isoToLocal(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
