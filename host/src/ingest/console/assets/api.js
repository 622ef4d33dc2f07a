// Talking to the node: the /v1 admin API and the live tail, with the admin
// token kept for this tab (sessionStorage) and sent as X-Busbar-Token. There
// are no cookies, so no other site can make the browser act with the token.

const TOKEN_KEY = "busbar.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function headers(extra) {
  const h = { ...extra };
  const t = token();
  if (t) h["X-Busbar-Token"] = t;
  return h;
}

/// An error the node answered with: `message` is the node's own words.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Asks for the token once; concurrent requests that hit 401 wait for the same answer.
let asking = null;
function askToken(why) {
  if (!asking) {
    asking = new Promise((resolve) => {
      const dialog = document.getElementById("token-dialog");
      const input = document.getElementById("token-input");
      document.getElementById("token-why").textContent =
        `This node asks for a token; it is kept for this tab only. The node said: ${why}`;
      input.value = "";
      dialog.addEventListener("close", () => {
        const t = input.value.trim();
        if (t) sessionStorage.setItem(TOKEN_KEY, t);
        asking = null;
        resolve(Boolean(t));
      }, { once: true });
      dialog.showModal();
      input.focus();
    });
  }
  return asking;
}

export function changeToken() {
  return askToken("The admin token for this node (server.admin_token). It is kept for this tab only.");
}

async function errorOf(resp) {
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    const e = body.error;
    if (e && typeof e === "object") return new ApiError(resp.status, e.code, e.message);
    if (typeof e === "string") return new ApiError(resp.status, "", e);
    // The EventBridge API's errors: {"__type", "message"}.
    if (typeof body.message === "string") return new ApiError(resp.status, body.__type || "", body.message);
  } catch (_) { /* not JSON: the text itself */ }
  return new ApiError(resp.status, "", text || `${resp.status} ${resp.statusText}`);
}

/// A request with the token; asks for it on 401 and tries again.
export async function request(method, path, body, opts = {}) {
  for (;;) {
    const init = { method, headers: headers(opts.headers), signal: opts.signal };
    if (body !== undefined) {
      if (body instanceof Blob || body instanceof ArrayBuffer) {
        init.body = body;
      } else {
        init.body = JSON.stringify(body);
        init.headers["Content-Type"] = "application/json";
      }
    }
    const resp = await fetch(path, init);
    if (resp.status === 401) {
      const err = await errorOf(resp);
      if (await askToken(err.message)) continue;
      throw err;
    }
    if (!resp.ok) throw await errorOf(resp);
    if (resp.status === 204) return null;
    const type = resp.headers.get("content-type") || "";
    return type.includes("json") ? resp.json() : resp.text();
  }
}

export const get = (path, opts) => request("GET", path, undefined, opts);
export const post = (path, body) => request("POST", path, body);
export const put = (path, body) => request("PUT", path, body);
export const del = (path) => request("DELETE", path);

/// Query string from an object, leaving out empty values.
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/// Reads the tail's Server-Sent Events over ONE fetch (EventSource cannot send
/// the token header). Calls `onItem` with each parsed item and `onLagged` with
/// the number skipped; resolves when the stream ends or `signal` aborts it.
export async function tail(pattern, { onItem, onLagged, onOpen, signal }) {
  for (;;) {
    const resp = await fetch(`/v1/tail${qs({ pattern })}`, { headers: headers(), signal });
    if (resp.status === 401) {
      const err = await errorOf(resp);
      if (await askToken(err.message)) continue;
      throw err;
    }
    if (!resp.ok) throw await errorOf(resp);
    if (onOpen) onOpen();
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let kind = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) kind = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue; // keep-alive comment
        const item = JSON.parse(data.join("\n"));
        if (kind === "lagged") { if (onLagged) onLagged(item.skipped); } else onItem(item);
      }
    }
  }
}
