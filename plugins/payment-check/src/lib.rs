//! Decides whether an order's payment goes through: amounts over 500 fail, the rest succeed.

use serde_json::{Map, Value, json};

wit_bindgen::generate!({
    world: "handler",
    path: "../../wit",
});

/// Payments above this amount are declined.
const LIMIT: f64 = 500.0;

struct PaymentCheck;

impl Guest for PaymentCheck {
    fn handle(event: Event, _delivery: Delivery) -> Result<Vec<NewEvent>, HandlerError> {
        let detail: Map<String, Value> = match serde_json::from_str(&event.detail) {
            Ok(Value::Object(detail)) => detail,
            Ok(other) => {
                return Err(HandlerError::Reject(format!(
                    "detail must be a JSON object, got {}",
                    kind(&other)
                )));
            }
            Err(err) => {
                return Err(HandlerError::Reject(format!(
                    "detail is not valid JSON: {err}"
                )));
            }
        };
        let amount = match detail.get("amount") {
            None | Some(Value::Null) => {
                return Err(HandlerError::Reject("detail.amount is missing".into()));
            }
            Some(Value::Number(n)) => n.clone(),
            Some(other) => {
                return Err(HandlerError::Reject(format!(
                    "detail.amount must be a number, got {}",
                    kind(other)
                )));
            }
        };
        // Orders carry their id as `id` or `order_id`; the event id still ties the
        // answer to its cause when neither is present.
        let id = detail
            .get("id")
            .or_else(|| detail.get("order_id"))
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or_else(|| Value::String(event.id.clone()));

        let value = amount.as_f64().unwrap_or(f64::INFINITY);
        let detail_type = if value > LIMIT {
            "PaymentFailed"
        } else {
            "PaymentSucceeded"
        };
        let mut out = json!({ "id": id, "amount": amount });
        // The customer travels with the answer, so the notification service can
        // tell them about their payment without looking the order up.
        if let Some(customer) = detail.get("customer").filter(|v| !v.is_null()) {
            out["customer"] = customer.clone();
        }
        Ok(vec![NewEvent {
            source: "payment-service".into(),
            detail_type: detail_type.into(),
            detail: out.to_string(),
            resources: Vec::new(),
            bus: None,
        }])
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

export!(PaymentCheck);
