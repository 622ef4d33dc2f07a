//! CloudEvents 1.0 over HTTP: structured mode (`Content-Type:
//! application/cloudevents+json`), binary mode (`ce-*` headers, the body is the
//! data) and batch mode (`application/cloudevents-batch+json`, a JSON array of
//! structured events). Served at `POST /cloudevents`, and at `POST /events` when
//! the content type is one of the two above or a `ce-specversion` header is present.
//!
//! # Mapping to the busbar (EventBridge) envelope
//!
//! | CloudEvents | busbar event | Notes |
//! |---|---|---|
//! | `specversion` | — | required; must be `"1.0"` |
//! | `id` | `id` | required, non-empty |
//! | `source` | `source` | required, non-empty |
//! | `type` | `detail-type` | required, non-empty |
//! | `time` | `time` | optional RFC 3339; normalized to UTC seconds; now when absent |
//! | `subject` | `resources: [subject]` | the thing the event is about, which is what EventBridge's `resources` holds, so patterns can match it with `"resources": [...]` |
//! | `data` (a JSON object) | `detail` | as is |
//! | `data` (anything else: string, number, array, boolean, null) | `detail: {"data": <value>}` | `detail` is always an object |
//! | `data_base64` | `detail: {"data_base64": "<base64 text>"}` | the base64 text is kept, not decoded |
//! | no data | `detail: {}` | |
//! | `datacontenttype`, `dataschema`, every extension attribute | `extensions.<name>` | kept verbatim (strings in binary mode) |
//!
//! Binary mode reads the same attributes from `ce-<name>` headers (values are
//! percent-decoded as the HTTP binding specifies) and the data from the body:
//! a JSON content type (`application/json`, `*/*+json`) or none is parsed as
//! JSON, `text/*` is kept as a string, and any other content type is carried as
//! `data_base64`. `Content-Type` becomes `extensions.datacontenttype`.
//!
//! Extension attribute names must be lowercase letters and digits (the
//! CloudEvents naming rule) and their values scalars.
//!
//! The bus is chosen with the `bus` query parameter (`POST /cloudevents?bus=orders`);
//! without it, `default`.
//!
//! # Replies
//!
//! A batch is answered like `POST /events`: 200 with one entry per event,
//! `{"failed": N, "entries": [{"id"} | {"error_code", "error_message"}]}`, or 429
//! when every entry was throttled. A single event (structured or binary) is
//! answered with that same 200 body when it is accepted, and otherwise with the
//! error itself: 400 naming the attribute at fault, or 429 when throttled, so a
//! CloudEvents sender that only looks at the status code knows it was not taken.

use super::auth::Scope;
use super::errors::ApiError;
use super::limits::{check_entries, read_body};
use super::{EntryOutcome, NodeState, Surface, authorize, batch_response, publish_entries};
use crate::event::{Event, EventError, EventInput, json_kind, parse_json_bytes};
use crate::node::Node;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value};

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

/// The three ways a CloudEvent arrives over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Structured,
    Binary,
    Batch,
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

fn mode(headers: &HeaderMap) -> Option<Mode> {
    match media_type(headers).as_deref() {
        Some(STRUCTURED) => Some(Mode::Structured),
        Some(BATCH) => Some(Mode::Batch),
        _ if headers.contains_key("ce-specversion") => Some(Mode::Binary),
        _ => None,
    }
}

/// Whether a request to `/events` is a CloudEvent.
pub fn is_cloudevents(headers: &HeaderMap) -> bool {
    mode(headers).is_some()
}

pub async fn handle(
    State(node): NodeState,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match receive(&node, query.as_deref(), &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn receive(
    node: &Node,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(node, headers, Scope::Publish)?;
    let Some(mode) = mode(headers) else {
        return Err(ApiError::bad_request(
            "NotACloudEvent",
            format!(
                "not a CloudEvent: send Content-Type {STRUCTURED} (structured), {BATCH} (batch), or ce-specversion and the other ce-* headers (binary)"
            ),
        ));
    };
    let bus = bus_param(query)?;
    let limits = &node.config.limits;
    let bytes = read_body(headers, body, limits.max_body_bytes).await?;
    match mode {
        Mode::Batch => {
            let items = match parse_json_bytes(&bytes, limits.max_depth)? {
                Value::Array(items) => items,
                other => {
                    return Err(ApiError::bad_request(
                        "InvalidArgument",
                        format!(
                            "a {BATCH} body must be a JSON array of CloudEvents, got {}",
                            json_kind(&other)
                        ),
                    ));
                }
            };
            check_entries(items.len(), limits.max_entries_per_request)?;
            let entries = items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    structured(v, bus.clone(), node).map_err(|e| EventError {
                        code: e.code,
                        message: format!("event {i} of the batch: {}", e.message),
                    })
                })
                .collect();
            let outcomes = publish_entries(node, Surface::CloudEvents, entries).await;
            Ok(batch_response(&outcomes))
        }
        Mode::Structured => {
            let value = parse_json_bytes(&bytes, limits.max_depth)?;
            single(node, structured(value, bus, node)).await
        }
        Mode::Binary => single(node, binary(headers, &bytes, bus, node)).await,
    }
}

async fn single(node: &Node, entry: Result<Event, EventError>) -> Result<Response, ApiError> {
    let outcome = publish_entries(node, Surface::CloudEvents, vec![entry]).await;
    match &outcome[0] {
        EntryOutcome::Accepted { .. } => Ok(batch_response(&outcome)),
        EntryOutcome::Failed { code, message } => {
            let status = match *code {
                "ThrottlingException" => StatusCode::TOO_MANY_REQUESTS,
                "ResourceNotFoundException" => StatusCode::NOT_FOUND,
                "InternalException" => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            Err(ApiError::new(status, code, message.clone()))
        }
    }
}

/// The `bus` query parameter, when given.
fn bus_param(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "bus" {
            let v = percent_decode(&v.replace('+', " ")).map_err(|e| {
                ApiError::bad_request("InvalidArgument", format!("query parameter bus: {e}"))
            })?;
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// One structured-mode event (a JSON object of attributes) as a busbar event.
fn structured(value: Value, bus: Option<String>, node: &Node) -> Result<Event, EventError> {
    let Value::Object(map) = value else {
        return Err(EventError::invalid(format!(
            "a CloudEvent must be a JSON object, got {}",
            json_kind(&value)
        )));
    };
    let mut attrs = Attributes::default();
    let mut data = None;
    let mut data_base64 = None;
    for (name, v) in map {
        match name.as_str() {
            "data" => data = Some(v),
            "data_base64" => match v {
                Value::String(s) => data_base64 = Some(s),
                other => {
                    return Err(EventError::invalid(format!(
                        "data_base64 must be a string, got {}",
                        json_kind(&other)
                    )));
                }
            },
            _ => attrs.set(name, v)?,
        }
    }
    let detail = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(EventError::invalid(
                "a CloudEvent may carry data or data_base64, not both",
            ));
        }
        (Some(v), None) => detail_of(v),
        (None, Some(b64)) => {
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| {
                    EventError::invalid(format!("data_base64 is not valid base64: {e}"))
                })?;
            detail_of_base64(b64)
        }
        (None, None) => Value::Object(Map::new()),
    };
    attrs.into_event(detail, bus, node)
}

/// One binary-mode event: attributes in `ce-*` headers, data in the body.
fn binary(
    headers: &HeaderMap,
    body: &Bytes,
    bus: Option<String>,
    node: &Node,
) -> Result<Event, EventError> {
    let mut attrs = Attributes::default();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let raw = value.to_str().map_err(|_| {
            EventError::invalid(format!(
                "header {name} is not visible ASCII; percent-encode other characters"
            ))
        })?;
        let text =
            percent_decode(raw).map_err(|e| EventError::invalid(format!("header {name}: {e}")))?;
        attrs.set(attr.to_string(), Value::String(text))?;
    }
    let media = media_type(headers);
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        attrs
            .extensions
            .insert("datacontenttype".into(), Value::String(ct.to_string()));
    }
    let detail = if body.is_empty() {
        Value::Object(Map::new())
    } else {
        match media.as_deref() {
            None => detail_of(json_data(
                body,
                node,
                "the body (no Content-Type: read as JSON)",
            )?),
            Some(m) if m == "application/json" || m.ends_with("+json") => detail_of(json_data(
                body,
                node,
                &format!("the body (Content-Type {m})"),
            )?),
            Some(m) if m.starts_with("text/") => {
                let text = std::str::from_utf8(body).map_err(|e| {
                    EventError::invalid(format!(
                        "the body (Content-Type {m}) is not valid UTF-8 (first bad byte at offset {})",
                        e.valid_up_to()
                    ))
                })?;
                detail_of(Value::String(text.to_string()))
            }
            Some(_) => detail_of_base64(base64::engine::general_purpose::STANDARD.encode(body)),
        }
    };
    attrs.into_event(detail, bus, node)
}

fn json_data(body: &Bytes, node: &Node, what: &str) -> Result<Value, EventError> {
    parse_json_bytes(body, node.config.limits.max_depth).map_err(|e| EventError {
        code: e.code,
        message: format!("{what}: {}", e.message),
    })
}

/// `detail` is always an object: other data is wrapped (see the module docs).
fn detail_of(data: Value) -> Value {
    match data {
        Value::Object(m) => Value::Object(m),
        other => {
            let mut m = Map::new();
            m.insert("data".into(), other);
            Value::Object(m)
        }
    }
}

fn detail_of_base64(b64: String) -> Value {
    let mut m = Map::new();
    m.insert("data_base64".into(), Value::String(b64));
    Value::Object(m)
}

/// The context attributes of one CloudEvent, as they are read.
#[derive(Default)]
struct Attributes {
    specversion: Option<String>,
    id: Option<String>,
    source: Option<String>,
    kind: Option<String>,
    time: Option<String>,
    subject: Option<String>,
    extensions: Map<String, Value>,
}

impl Attributes {
    fn set(&mut self, name: String, value: Value) -> Result<(), EventError> {
        let slot = match name.as_str() {
            "specversion" => &mut self.specversion,
            "id" => &mut self.id,
            "source" => &mut self.source,
            "type" => &mut self.kind,
            "time" => &mut self.time,
            "subject" => &mut self.subject,
            _ => {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                {
                    return Err(EventError::invalid(format!(
                        "CloudEvents attribute name {name:?} must be lowercase letters and digits"
                    )));
                }
                if matches!(value, Value::Object(_) | Value::Array(_)) {
                    return Err(EventError::invalid(format!(
                        "CloudEvents attribute {name} must be a string, number or boolean, got {}",
                        json_kind(&value)
                    )));
                }
                self.extensions.insert(name, value);
                return Ok(());
            }
        };
        match value {
            Value::String(s) => *slot = Some(s),
            other => {
                return Err(EventError::invalid(format!(
                    "CloudEvents attribute {name} must be a string, got {}",
                    json_kind(&other)
                )));
            }
        }
        Ok(())
    }

    fn into_event(
        self,
        detail: Value,
        bus: Option<String>,
        node: &Node,
    ) -> Result<Event, EventError> {
        match self.specversion.as_deref() {
            None => {
                return Err(EventError::invalid(
                    "CloudEvents attribute specversion is required (it must be \"1.0\")",
                ));
            }
            Some("1.0") => {}
            Some(other) => {
                return Err(EventError::invalid(format!(
                    "CloudEvents specversion {other:?} is not supported; busbar accepts \"1.0\""
                )));
            }
        }
        let required = |v: Option<String>, name: &str| match v {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(EventError::invalid(format!(
                "CloudEvents attribute {name} must not be empty"
            ))),
            None => Err(EventError::invalid(format!(
                "CloudEvents attribute {name} is required"
            ))),
        };
        let id = required(self.id, "id")?;
        let source = required(self.source, "source")?;
        let kind = required(self.kind, "type")?;
        let resources = match self.subject {
            Some(s) if s.is_empty() => {
                return Err(EventError::invalid(
                    "CloudEvents attribute subject must not be empty when given",
                ));
            }
            Some(s) => vec![s],
            None => Vec::new(),
        };
        EventInput {
            id: Some(id),
            source: Some(source),
            detail_type: Some(kind),
            detail: Some(detail),
            time: self.time,
            resources,
            bus,
            extensions: self.extensions,
            ..Default::default()
        }
        .into_client_event(&node.event_limits)
        .map_err(|e| {
            // Name the attribute the sender used, not the envelope field it became.
            let message = if let Some(rest) = e.message.strip_prefix("detail-type ") {
                format!("CloudEvents attribute type {rest}")
            } else if e.message.starts_with("time ")
                || e.message.starts_with("source ")
                || e.message.starts_with("id ")
            {
                format!("CloudEvents attribute {}", e.message)
            } else {
                e.message
            };
            EventError {
                code: e.code,
                message,
            }
        })
    }
}

/// Decodes `%XX` escapes (the CloudEvents HTTP binding's header encoding).
fn percent_decode(text: &str) -> Result<String, String> {
    if !text.contains('%') {
        return Ok(text.to_string());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at offset {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-decoded value is not valid UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%C3%A9").unwrap(), "a bé");
        assert_eq!(percent_decode("plain").unwrap(), "plain");
        assert!(percent_decode("bad%2").is_err());
    }

    #[test]
    fn data_is_wrapped_unless_an_object() {
        assert_eq!(
            detail_of(serde_json::json!({"a": 1})),
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            detail_of(serde_json::json!([1])),
            serde_json::json!({"data": [1]})
        );
        assert_eq!(
            detail_of(serde_json::json!("x")),
            serde_json::json!({"data": "x"})
        );
    }
}
