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

/// Longest `source`, in characters (EventBridge's limit on Source).
pub const MAX_SOURCE_CHARS: usize = 256;
/// Longest publisher-given `id`, in characters.
pub const MAX_ID_CHARS: usize = 256;
/// Longest `detail-type`, in characters (EventBridge's limit on DetailType).
pub const MAX_DETAIL_TYPE_CHARS: usize = 128;
/// Longest `account` and `region`, in characters. EventBridge sets both itself
/// (a 12-digit account id, a region name of at most 25 characters); busbar lets
/// the publisher name them, so they get a bound that fits any such name.
pub const MAX_ACCOUNT_REGION_CHARS: usize = 64;
/// Most `resources` in one event, and the longest one, in characters
/// (EventBridge's limits on Resources).
pub const MAX_RESOURCES: usize = 100;
pub const MAX_RESOURCE_CHARS: usize = 2048;

/// The source busbar publishes its own events under; it and every `busbar.*`
/// source are reserved: clients may not publish them (see
/// [`EventInput::into_client_event`]), busbar and its plugins may.
pub const RESERVED_SOURCE: &str = "busbar";
/// Extension attributes whose names start with this carry busbar's own
/// bookkeeping (such as the plugin that produced an event); clients may not set them.
pub const RESERVED_EXTENSION_PREFIX: &str = "busbar";

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
        let source = required_string(self.source, "source", MAX_SOURCE_CHARS)?;
        let detail_type = required_string(self.detail_type, "detail-type", MAX_DETAIL_TYPE_CHARS)?;
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
            Some(id) => {
                check_length(&id, "id", MAX_ID_CHARS)?;
                id
            }
        };
        let bus = match self.bus {
            None => DEFAULT_BUS.to_string(),
            Some(b) => validate_bus_name(&b)?,
        };
        if self.resources.len() > MAX_RESOURCES {
            return Err(EventError::invalid(format!(
                "resources has {} entries; the limit is {MAX_RESOURCES}",
                self.resources.len()
            )));
        }
        for (i, r) in self.resources.iter().enumerate() {
            if r.is_empty() {
                return Err(EventError::invalid(format!("resources[{i}] is empty")));
            }
            check_length(r, &format!("resources[{i}]"), MAX_RESOURCE_CHARS)?;
        }
        let account = optional_name(self.account, "account", DEFAULT_ACCOUNT)?;
        let region = optional_name(self.region, "region", DEFAULT_REGION)?;
        let event = Event {
            version: "0".to_string(),
            id,
            detail_type,
            source,
            account,
            time,
            region,
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

    /// Like [`EventInput::into_event`], for an event that comes from outside
    /// busbar (every ingest surface): the reserved source `busbar` and every
    /// `busbar.*` source are refused, since rules that drive busbar itself
    /// (metrics, scaling decisions) match them, and so are extension attributes
    /// named `busbar*`, which carry busbar's own provenance.
    pub fn into_client_event(self, limits: &EventLimits) -> Result<Event, EventError> {
        if let Some(source) = self.source.as_deref()
            && is_reserved_source(source)
        {
            return Err(EventError {
                code: "ReservedSource",
                message: format!(
                    "source {source:?} is reserved: sources \"{RESERVED_SOURCE}\" and \"{RESERVED_SOURCE}.*\" are published only by busbar and its plugins; publish under a source of your own"
                ),
            });
        }
        if let Some(name) = self
            .extensions
            .keys()
            .find(|k| has_reserved_prefix(k, RESERVED_EXTENSION_PREFIX))
        {
            return Err(EventError {
                code: "ReservedAttribute",
                message: format!(
                    "extension attribute {name:?} is reserved: names starting with \"{RESERVED_EXTENSION_PREFIX}\" carry busbar's own bookkeeping; rename the attribute"
                ),
            });
        }
        self.into_event(limits)
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

/// The size of an entry, checked against `limits.max_entry_bytes`. It starts
/// from what EventBridge charges (the UTF-8 bytes of Source, DetailType,
/// Detail and each Resource, plus 14 bytes for Time, always present on a stored
/// event) and adds every other field an event carries, because busbar lets the
/// publisher set fields EventBridge fills in itself: the bytes of `id`,
/// `account`, `region` and the bus name, and the name and JSON value of each
/// extension attribute. Nothing an event carries to the store goes uncounted.
pub fn entry_size(event: &Event) -> usize {
    let json_len = |v: &Value| serde_json::to_string(v).map(|s| s.len()).unwrap_or(0);
    event.source.len()
        + event.detail_type.len()
        + json_len(&event.detail)
        + event.resources.iter().map(String::len).sum::<usize>()
        + 14
        + event.id.len()
        + event.account.len()
        + event.region.len()
        + event.bus.len()
        + event
            .extensions
            .iter()
            .map(|(k, v)| k.len() + json_len(v))
            .sum::<usize>()
}

/// Whether `source` is one only busbar and its plugins may publish: `busbar`
/// or `busbar.*`, in any letter case (a rule may match case-insensitively).
pub fn is_reserved_source(source: &str) -> bool {
    source.eq_ignore_ascii_case(RESERVED_SOURCE)
        || has_reserved_prefix(source, &format!("{RESERVED_SOURCE}."))
}

fn has_reserved_prefix(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
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

fn required_string(v: Option<String>, field: &str, max_chars: usize) -> Result<String, EventError> {
    match v {
        None => Err(EventError::invalid(format!("{field} is required"))),
        Some(s) if s.trim().is_empty() => {
            Err(EventError::invalid(format!("{field} must not be empty")))
        }
        Some(s) => {
            check_length(&s, field, max_chars)?;
            Ok(s)
        }
    }
}

/// `account` or `region`: the default when absent, else 1 to
/// [`MAX_ACCOUNT_REGION_CHARS`] characters.
fn optional_name(v: Option<String>, field: &str, default: &str) -> Result<String, EventError> {
    match v {
        None => Ok(default.to_string()),
        Some(s) if s.trim().is_empty() => Err(EventError::invalid(format!(
            "{field} must not be empty when given"
        ))),
        Some(s) => {
            check_length(&s, field, MAX_ACCOUNT_REGION_CHARS)?;
            Ok(s)
        }
    }
}

/// Refuses `text` longer than `max_chars` characters (EventBridge counts
/// characters, not bytes). Counting stops just past the limit, so a hostile
/// megabyte costs no more than a string at the limit.
fn check_length(text: &str, field: &str, max_chars: usize) -> Result<(), EventError> {
    if text.len() > max_chars && text.chars().nth(max_chars).is_some() {
        return Err(EventError::invalid(format!(
            "{field} is longer than {max_chars} characters ({} bytes); shorten it",
            text.len()
        )));
    }
    Ok(())
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
        // EventBridge's charge, 3 + 2 + len({"k":"v"})=9 + 2 + 14, then the
        // id (a 36-character UUID), account, region and bus.
        assert_eq!(entry_size(&e), 30 + 36 + 12 + 5 + 7);
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
    fn every_field_counts_and_envelope_fields_are_bounded() {
        let limits = EventLimits {
            max_entry_bytes: 1000,
            ..Default::default()
        };
        let mut with_ext =
            EventInput::from_json(json!({"source": "s", "detail-type": "t", "detail": {}}))
                .unwrap();
        with_ext
            .extensions
            .insert("big".into(), Value::String("x".repeat(1000)));
        let err = with_ext.into_event(&limits).unwrap_err();
        assert_eq!(err.code, "EntryTooLarge", "{err}");
        for (field, len, limit) in [
            ("account", 65, "64"),
            ("region", 65, "64"),
            ("source", 257, "256"),
            ("detail-type", 129, "128"),
            ("id", 257, "256"),
        ] {
            let mut v = json!({"source": "s", "detail-type": "t", "detail": {}});
            v[field] = Value::String("é".repeat(len));
            let err = input(v).unwrap_err();
            assert!(
                err.message
                    .starts_with(&format!("{field} is longer than {limit} characters")),
                "{err}"
            );
            // At the limit, in characters (not bytes), it is accepted.
            let mut v = json!({"source": "s", "detail-type": "t", "detail": {}});
            v[field] = Value::String("é".repeat(len - 1));
            input(v).unwrap();
        }
        let many: Vec<String> = (0..101).map(|i| format!("r{i}")).collect();
        let err =
            input(json!({"source": "s", "detail-type": "t", "detail": {}, "resources": many}))
                .unwrap_err();
        assert!(err.message.contains("the limit is 100"), "{err}");
        let err = input(json!({"source": "s", "detail-type": "t", "detail": {}, "account": " "}))
            .unwrap_err();
        assert_eq!(err.message, "account must not be empty when given");
    }

    #[test]
    fn clients_may_not_use_reserved_sources_or_attributes() {
        let client = |v: Value| {
            EventInput::from_json(v)
                .unwrap()
                .into_client_event(&EventLimits::default())
        };
        for source in ["busbar", "busbar.autoscaler", "BusBar.x"] {
            let err =
                client(json!({"source": source, "detail-type": "t", "detail": {}})).unwrap_err();
            assert_eq!(err.code, "ReservedSource");
            assert!(
                err.message.contains(&format!("{source:?} is reserved")),
                "{err}"
            );
            // busbar itself and its plugins go through into_event and may.
            input(json!({"source": source, "detail-type": "t", "detail": {}})).unwrap();
        }
        for source in ["busbarish", "my.busbar", "busba"] {
            client(json!({"source": source, "detail-type": "t", "detail": {}})).unwrap();
        }
        let mut forged =
            EventInput::from_json(json!({"source": "s", "detail-type": "t", "detail": {}}))
                .unwrap();
        forged
            .extensions
            .insert("busbarproducer".into(), Value::String("autoscaler".into()));
        let err = forged
            .into_client_event(&EventLimits::default())
            .unwrap_err();
        assert_eq!(err.code, "ReservedAttribute");
        assert!(
            err.message.contains("\"busbarproducer\" is reserved"),
            "{err}"
        );
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
