//! The event envelope: the Amazon EventBridge event shape, its ids and times,
//! and the validation every ingest surface applies before an event is accepted.
//!
//! An [`Event`] serializes to exactly the JSON that EventBridge patterns are
//! matched against (`version`, `id`, `detail-type`, `source`, `account`, `time`,
//! `region`, `resources`, `detail`), plus busbar's own bookkeeping fields, which
//! live under names no EventBridge pattern uses.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The default entry size limit: EventBridge's 256 KiB.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 256 * 1024;
/// The default limit on JSON nesting depth inside `detail`.
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// The account busbar reports when the publisher gives none.
pub const DEFAULT_ACCOUNT: &str = "000000000000";
/// The region busbar reports when the publisher gives none.
pub const DEFAULT_REGION: &str = "local";
/// The bus an event goes to when the publisher names none.
pub const DEFAULT_BUS: &str = "default";

/// One event, as stored, matched and delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub version: String,
    pub id: String,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub source: String,
    pub account: String,
    /// RFC 3339, UTC, second precision (as EventBridge writes it).
    pub time: String,
    pub region: String,
    pub resources: Vec<String>,
    /// Always a JSON object.
    pub detail: Value,
    /// The bus the event was published to.
    #[serde(rename = "event-bus-name", default = "default_bus")]
    pub bus: String,
    /// Set on events re-published by a replay; such events are not archived again.
    #[serde(
        rename = "replay-name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub replay_name: Option<String>,
    /// How many plugin hops produced this event (0: published from outside).
    /// Bounds choreography loops.
    #[serde(rename = "busbar-hops", default, skip_serializing_if = "is_zero")]
    pub hops: u32,
    /// CloudEvents extension attributes (and other publisher metadata) kept verbatim.
    #[serde(rename = "extensions", default, skip_serializing_if = "Map::is_empty")]
    pub extensions: Map<String, Value>,
}

fn default_bus() -> String {
    DEFAULT_BUS.to_string()
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a publisher supplies; everything but `source`, `detail-type` and `detail`
/// is optional and filled in by [`EventInput::into_event`].
#[derive(Debug, Clone, Default)]
pub struct EventInput {
    pub id: Option<String>,
    pub source: Option<String>,
    pub detail_type: Option<String>,
    pub detail: Option<Value>,
    pub time: Option<String>,
    pub account: Option<String>,
    pub region: Option<String>,
    pub resources: Vec<String>,
    pub bus: Option<String>,
    pub extensions: Map<String, Value>,
}

/// Limits applied to every event at ingest.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// Maximum entry size, computed the way EventBridge computes it (see [`entry_size`]).
    pub max_entry_bytes: usize,
    /// Maximum nesting depth of `detail` (an object holding a scalar is depth 1).
    pub max_depth: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits {
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Why an event was refused. The message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    /// A stable, machine-readable code, e.g. `InvalidArgument`, `EntryTooLarge`.
    pub code: &'static str,
    pub message: String,
}

impl EventError {
    pub fn invalid(message: impl Into<String>) -> Self {
        EventError {
            code: "InvalidArgument",
            message: message.into(),
        }
    }
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for EventError {}

impl EventInput {
    /// Validates the input against `limits` and fills in the defaults
    /// (a v4 UUID id, the current time, the default account, region and bus).
    pub fn into_event(self, limits: &EventLimits) -> Result<Event, EventError> {
        let source = required_string(self.source, "source")?;
        let detail_type = required_string(self.detail_type, "detail-type")?;
        let detail = match self.detail {
            None => return Err(EventError::invalid("detail is required")),
            Some(Value::Object(map)) => Value::Object(map),
            Some(other) => {
                return Err(EventError::invalid(format!(
                    "detail must be a JSON object, got {}",
                    json_kind(&other)
                )));
            }
        };
        let depth = json_depth(&detail);
        if depth > limits.max_depth {
            return Err(EventError {
                code: "InvalidArgument",
                message: format!(
                    "detail is nested {depth} levels deep; the limit is {}",
                    limits.max_depth
                ),
            });
        }
        let time = match self.time {
            None => now_rfc3339(),
            Some(t) => normalize_time(&t)?,
        };
        let id = match self.id {
            None => uuid::Uuid::new_v4().to_string(),
            Some(id) if id.is_empty() => {
                return Err(EventError::invalid("id must not be empty when given"));
            }
            Some(id) if id.len() > 256 => {
                return Err(EventError::invalid("id is longer than 256 characters"));
            }
            Some(id) => id,
        };
        let bus = match self.bus {
            None => DEFAULT_BUS.to_string(),
            Some(b) => validate_bus_name(&b)?,
        };
        for (i, r) in self.resources.iter().enumerate() {
            if r.is_empty() {
                return Err(EventError::invalid(format!("resources[{i}] is empty")));
            }
        }
        let event = Event {
            version: "0".to_string(),
            id,
            detail_type,
            source,
            account: self.account.unwrap_or_else(|| DEFAULT_ACCOUNT.to_string()),
            time,
            region: self.region.unwrap_or_else(|| DEFAULT_REGION.to_string()),
            resources: self.resources,
            detail,
            bus,
            replay_name: None,
            hops: 0,
            extensions: self.extensions,
        };
        let size = entry_size(&event);
        if size > limits.max_entry_bytes {
            return Err(EventError {
                code: "EntryTooLarge",
                message: format!(
                    "event entry is {size} bytes; the limit is {} bytes",
                    limits.max_entry_bytes
                ),
            });
        }
        Ok(event)
    }

    /// Reads the native JSON shape (`source`, `detail-type`, `detail`, optional `id`,
    /// `time`, `account`, `region`, `resources`, `event-bus-name`). `DetailType` and
    /// `Detail`-style keys are accepted too so an EventBridge entry pasted as-is works;
    /// unknown keys are an error, so a typo is never silently dropped.
    pub fn from_json(value: Value) -> Result<EventInput, EventError> {
        let Value::Object(map) = value else {
            return Err(EventError::invalid(format!(
                "an event must be a JSON object, got {}",
                json_kind(&value)
            )));
        };
        let mut input = EventInput::default();
        for (key, v) in map {
            match key.as_str() {
                "source" | "Source" => input.source = Some(string_field(v, &key)?),
                "detail-type" | "detailType" | "DetailType" => {
                    input.detail_type = Some(string_field(v, &key)?)
                }
                "detail" | "Detail" => {
                    // EventBridge's own API carries detail as a JSON string.
                    input.detail = Some(match v {
                        Value::String(s) => serde_json::from_str(&s).map_err(|e| {
                            EventError::invalid(format!(
                                "{key} is a string but not valid JSON: {e}"
                            ))
                        })?,
                        other => other,
                    })
                }
                "id" => input.id = Some(string_field(v, &key)?),
                "time" | "Time" => input.time = Some(string_field(v, &key)?),
                "account" => input.account = Some(string_field(v, &key)?),
                "region" => input.region = Some(string_field(v, &key)?),
                "version" => {
                    if v != Value::String("0".into()) {
                        return Err(EventError::invalid("version must be \"0\" when given"));
                    }
                }
                "resources" | "Resources" => input.resources = string_list(v, &key)?,
                "event-bus-name" | "EventBusName" | "bus" => {
                    input.bus = Some(string_field(v, &key)?)
                }
                other => {
                    return Err(EventError::invalid(format!(
                        "unknown field {other:?}; expected source, detail-type, detail, id, time, account, region, resources or event-bus-name"
                    )));
                }
            }
        }
        Ok(input)
    }
}

/// The size EventBridge charges for an entry: the UTF-8 bytes of Source,
/// DetailType, Detail and each Resource, plus 14 bytes when Time is present
/// (always, for a stored event).
pub fn entry_size(event: &Event) -> usize {
    let detail = serde_json::to_string(&event.detail)
        .map(|s| s.len())
        .unwrap_or(0);
    event.source.len()
        + event.detail_type.len()
        + detail
        + event.resources.iter().map(String::len).sum::<usize>()
        + 14
}

/// Nesting depth of a JSON value: a scalar is 0, `{"a": 1}` is 1.
pub fn json_depth(value: &Value) -> usize {
    // Iterative so a hostile document cannot overflow the stack here.
    let mut max = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(m) => {
                max = max.max(d + 1);
                stack.extend(m.values().map(|c| (c, d + 1)));
            }
            Value::Array(a) => {
                max = max.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            _ => max = max.max(d),
        }
    }
    max
}

/// A bus name: 1–256 characters of letters, digits and `.-_/`.
pub fn validate_bus_name(name: &str) -> Result<String, EventError> {
    if name.is_empty() || name.len() > 256 {
        return Err(EventError::invalid(
            "event bus name must be 1 to 256 characters",
        ));
    }
    // EventBridge accepts an ARN wherever a bus name goes; keep the name part.
    let name = name.rsplit(":event-bus/").next().unwrap_or(name);
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
    {
        return Err(EventError::invalid(format!(
            "event bus name {name:?} may contain only letters, digits and . - _ /"
        )));
    }
    Ok(name.to_string())
}

/// The current time in EventBridge's format (`2026-12-01T06:11:06Z`).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format_time(now)
}

fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses an RFC 3339 time and writes it back in UTC, second precision.
pub fn normalize_time(text: &str) -> Result<String, EventError> {
    parse_time(text).map(format_time).map_err(|e| {
        EventError::invalid(format!("time {text:?} is not an RFC 3339 timestamp: {e}"))
    })
}

/// Parses an RFC 3339 timestamp.
pub fn parse_time(text: &str) -> Result<time::OffsetDateTime, time::error::Parse> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
}

/// Seconds since the Unix epoch of an event's `time` (0 if it does not parse,
/// which cannot happen for an event that went through [`EventInput::into_event`]).
pub fn event_epoch_secs(event: &Event) -> i64 {
    parse_time(&event.time)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn required_string(v: Option<String>, field: &str) -> Result<String, EventError> {
    match v {
        None => Err(EventError::invalid(format!("{field} is required"))),
        Some(s) if s.trim().is_empty() => {
            Err(EventError::invalid(format!("{field} must not be empty")))
        }
        Some(s) if s.len() > 256 => Err(EventError::invalid(format!(
            "{field} is {} bytes; the limit is 256",
            s.len()
        ))),
        Some(s) => Ok(s),
    }
}

fn string_field(v: Value, key: &str) -> Result<String, EventError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(EventError::invalid(format!(
            "{key} must be a string, got {}",
            json_kind(&other)
        ))),
    }
}

fn string_list(v: Value, key: &str) -> Result<Vec<String>, EventError> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| string_field(item, &format!("{key}[{i}]")))
            .collect(),
        other => Err(EventError::invalid(format!(
            "{key} must be an array of strings, got {}",
            json_kind(&other)
        ))),
    }
}

/// Parses JSON bytes, refusing invalid UTF-8 with a clear message (serde_json's
/// own error for it is cryptic) and bounding nesting before anything recurses.
pub fn parse_json_bytes(bytes: &[u8], max_depth: usize) -> Result<Value, EventError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        EventError::invalid(format!(
            "body is not valid UTF-8 (first bad byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    // Count brackets outside strings first: serde_json recurses, and its own limit
    // (128) gives a message that does not say which limit was hit.
    let depth = raw_depth(text.as_bytes());
    // +2: the body may wrap events in an array, and the envelope object adds one.
    if depth > max_depth + 2 {
        return Err(EventError::invalid(format!(
            "JSON is nested {depth} levels deep; the limit is {max_depth}"
        )));
    }
    serde_json::from_str(text).map_err(|e| EventError {
        code: "MalformedJSON",
        message: format!("malformed JSON: {e}"),
    })
}

/// Maximum bracket depth of JSON text, ignoring brackets inside strings.
pub fn raw_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> Result<Event, EventError> {
        EventInput::from_json(v)?.into_event(&EventLimits::default())
    }

    #[test]
    fn fills_defaults() {
        let e = input(json!({"source": "s", "detail-type": "t", "detail": {}})).unwrap();
        assert_eq!(e.version, "0");
        assert_eq!(uuid::Uuid::parse_str(&e.id).unwrap().get_version_num(), 4);
        assert!(parse_time(&e.time).is_ok());
        assert_eq!(e.bus, "default");
        assert_eq!(e.account, DEFAULT_ACCOUNT);
    }

    #[test]
    fn names_the_missing_field() {
        let err = input(json!({"detail-type": "t", "detail": {}})).unwrap_err();
        assert_eq!(err.message, "source is required");
        let err = input(json!({"source": "s", "detail": {}})).unwrap_err();
        assert_eq!(err.message, "detail-type is required");
        let err = input(json!({"source": "s", "detail-type": "t"})).unwrap_err();
        assert_eq!(err.message, "detail is required");
    }

    #[test]
    fn detail_must_be_an_object() {
        let err = input(json!({"source": "s", "detail-type": "t", "detail": [1]})).unwrap_err();
        assert_eq!(err.message, "detail must be a JSON object, got an array");
        // A JSON string holding an object is EventBridge's wire form and is accepted.
        let ok = input(json!({"source": "s", "detail-type": "t", "detail": "{\"a\":1}"})).unwrap();
        assert_eq!(ok.detail, json!({"a": 1}));
    }

    #[test]
    fn size_is_computed_like_eventbridge() {
        let e = input(json!({"source": "abc", "detail-type": "de", "detail": {"k": "v"}, "resources": ["r1"]}))
            .unwrap();
        // 3 + 2 + len({"k":"v"})=9 + 2 + 14
        assert_eq!(entry_size(&e), 30);
        let big = "x".repeat(DEFAULT_MAX_ENTRY_BYTES);
        let err =
            input(json!({"source": "s", "detail-type": "t", "detail": {"k": big}})).unwrap_err();
        assert_eq!(err.code, "EntryTooLarge");
        let limits = EventLimits {
            max_entry_bytes: 20,
            ..Default::default()
        };
        let err = EventInput::from_json(
            json!({"source": "s", "detail-type": "t", "detail": {"k": "0123456789"}}),
        )
        .unwrap()
        .into_event(&limits)
        .unwrap_err();
        assert!(err.message.contains("limit is 20 bytes"), "{err}");
    }

    #[test]
    fn depth_and_utf8_limits() {
        let mut deep = json!(1);
        for _ in 0..70 {
            deep = json!({ "a": deep });
        }
        let err = input(json!({"source": "s", "detail-type": "t", "detail": deep})).unwrap_err();
        assert!(err.message.contains("nested"), "{err}");
        let err = parse_json_bytes(b"{\"a\":\"\xff\"}", 64).unwrap_err();
        assert!(err.message.contains("UTF-8"), "{err}");
        let text = format!("{}{}", "[".repeat(500), "]".repeat(500));
        let err = parse_json_bytes(text.as_bytes(), 64).unwrap_err();
        assert!(err.message.contains("limit is 64"), "{err}");
        assert_eq!(raw_depth(br#"{"a":"[[[[","b":[1]}"#), 2);
    }

    #[test]
    fn time_is_normalized_and_checked() {
        let e = input(json!({"source": "s", "detail-type": "t", "detail": {}, "time": "2024-03-01T10:00:00+02:00"}))
            .unwrap();
        assert_eq!(e.time, "2024-03-01T08:00:00Z");
        let err =
            input(json!({"source": "s", "detail-type": "t", "detail": {}, "time": "yesterday"}))
                .unwrap_err();
        assert!(err.message.starts_with("time \"yesterday\""), "{err}");
    }

    #[test]
    fn unknown_fields_and_bad_bus_names_are_refused() {
        let err = input(json!({"source": "s", "detail-type": "t", "detail": {}, "detial": {}}))
            .unwrap_err();
        assert!(err.message.contains("\"detial\""), "{err}");
        let err = input(
            json!({"source": "s", "detail-type": "t", "detail": {}, "event-bus-name": "a b"}),
        )
        .unwrap_err();
        assert!(err.message.contains("may contain only"), "{err}");
    }

    #[test]
    fn serializes_as_the_eventbridge_envelope() {
        let e = input(json!({"source": "s", "detail-type": "t", "detail": {"x": 1}})).unwrap();
        let v = serde_json::to_value(&e).unwrap();
        for k in [
            "version",
            "id",
            "detail-type",
            "source",
            "account",
            "time",
            "region",
            "resources",
            "detail",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
