// Grants loyalty points for processed payments: floor(total_cost) points are added
// to the customer's balance in kv, and a RewardsGranted event announces the result.

import { log } from "busbar:plugin/log@0.1.0";
import { get, set, increment } from "busbar:plugin/kv@0.1.0";

// componentize-js turns a thrown object with an own `payload` into the export's
// `err` value; any other exception would trap the instance instead.
class HandlerError extends Error {
  constructor(tag, message) {
    super(message);
    this.payload = { tag, val: message };
  }
}

const reject = (message) => new HandlerError("reject", message);

const kindOf = (value) => {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  const t = typeof value;
  return t === "object" ? "an object" : `a ${t}`;
};

// kv failures arrive as thrown errors whose payload is the kv-error variant.
function kvCall(what, fn) {
  try {
    return fn();
  } catch (e) {
    const err = e && e.payload;
    if (!err || typeof err.tag !== "string") throw e;
    const message = `kv ${what}: ${err.tag}: ${err.val}`;
    throw new HandlerError(err.tag === "store" ? "retry" : "reject", message);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function handle(event, delivery) {
  if (event.detailType !== "Payment Processed") return [];

  let detail;
  try {
    detail = JSON.parse(event.detail);
  } catch (e) {
    throw reject(`detail is not valid JSON: ${e.message}`);
  }
  if (detail === null || typeof detail !== "object" || Array.isArray(detail)) {
    throw reject(`detail must be a JSON object, got ${kindOf(detail)}`);
  }

  const customer = detail.customer_id;
  if (customer === undefined || customer === null || customer === "") {
    throw reject("detail.customer_id is missing");
  }
  if (typeof customer !== "string" && typeof customer !== "number") {
    throw reject(`detail.customer_id must be a string or a number, got ${kindOf(customer)}`);
  }
  const cost = detail.total_cost;
  if (cost === undefined || cost === null) {
    throw reject("detail.total_cost is missing");
  }
  if (typeof cost !== "number" || !Number.isFinite(cost)) {
    throw reject(`detail.total_cost must be a number, got ${kindOf(cost)}`);
  }
  if (cost < 0) {
    throw reject(`detail.total_cost must not be negative, got ${cost}`);
  }
  const points = Math.floor(cost);

  // Delivery is at least once: a retry of a delivery whose points were already
  // added answers with the balance recorded then instead of adding them again.
  const grantKey = `granted/${delivery.id}`;
  const previous = kvCall(`get ${grantKey}`, () => get(grantKey));
  let balance;
  if (previous !== undefined && previous !== null) {
    balance = Number(decoder.decode(previous));
    log("info", `delivery ${delivery.id} already granted; balance ${balance}`);
  } else {
    const key = `balance/${customer}`;
    balance = Number(kvCall(`increment ${key}`, () => increment(key, BigInt(points))));
    kvCall(`set ${grantKey}`, () => set(grantKey, encoder.encode(String(balance))));
    log("info", `customer ${customer}: +${points} points, balance ${balance}`);
  }

  return [
    {
      source: "rewards-service",
      detailType: "RewardsGranted",
      detail: JSON.stringify({ customer_id: customer, points, balance }),
      resources: [],
      bus: undefined,
    },
  ];
}
