//! Target input: what a rule's target receives as `detail` in place of the
//! matched event's own detail. A target takes at most one of three settings,
//! with the meaning Amazon EventBridge gives them:
//!
//! | setting             | the target receives                                             |
//! |---------------------|-----------------------------------------------------------------|
//! | none                | the event's own `detail`, unchanged                             |
//! | `input`             | that constant JSON text; nothing from the event                 |
//! | `input_path`        | the part of the event a JSON path selects                       |
//! | `input_transformer` | a template filled with values taken from the event              |
//!
//! Paths and templates see the whole event envelope, not only its detail:
//! `version`, `id`, `detail-type`, `source`, `account`, `time`, `region`,
//! `resources`, `detail` (and busbar's own fields such as `event-bus-name`).
//! Everything is checked when the rule is stored ([`validate_target_input`]); a
//! rule that was stored never fails to render.
//!
//! # JSON paths
//!
//! `input_path` and the values of `input_paths_map` use the JSONPath subset
//! EventBridge supports: `$` (the whole event), then any number of
//!
//! - `.name` — an object member; names are letters, digits, `-`, `_` and `/`
//!   (`$.detail-type`, `$.detail.instance-id`);
//! - `[N]` — an array element, counted from 0 (`$.resources[0]`);
//! - `.*` or `[*]` — every member of an object or element of an array.
//!
//! A path without a wildcard selects one value or nothing. A path with a
//! wildcard selects every match and yields them as one array, possibly empty
//! (`$.detail.items[*].sku` gives the `sku` of each item that has one).
//! Bracketed names (`['name']`), recursive descent (`..`), filters (`[?(...)]`)
//! and slices (`[0:2]`) are refused when the rule is stored, naming the path.
//! Paths are at most 256 characters.
//!
//! `input_path` delivers the selected value as JSON text: `$.detail.order`
//! delivers the order object, `$.detail.order.id` a JSON string or number. A
//! path that selects nothing delivers `null` (EventBridge documents no
//! behaviour for this case).
//!
//! # Input transformers
//!
//! ```json
//! { "input_paths_map": { "instance": "$.detail.instance-id", "state": "$.detail.state" },
//!   "input_template": "{\"instance\": <instance>, \"message\": \"<instance> is <state>\"}" }
//! ```
//!
//! `input_paths_map` names up to 100 variables. A name is 1 to 256 letters,
//! digits, `_` or `-`. Five names are predefined, reserved, and need no entry:
//!
//! | variable                          | value                                                     |
//! |-----------------------------------|-----------------------------------------------------------|
//! | `aws.events.rule-arn`             | the rule's ARN                                            |
//! | `aws.events.rule-name`            | the rule's name                                           |
//! | `aws.events.event.ingestion-time` | when busbar received the event (RFC 3339)                 |
//! | `aws.events.event`                | the event without its `detail`; `detail-type` is spelled `detailType`, as EventBridge delivers it |
//! | `aws.events.event.json`           | the whole event, `detail` included                        |
//!
//! `input_template` (1 to 8192 characters) holds placeholders: a variable's
//! name in angle brackets, `<instance>`. Every `<` followed by name characters
//! (letters, digits, `_`, `-`, `.`) and `>` is a placeholder; as in EventBridge
//! there is no way to escape one, and a placeholder naming no variable is
//! refused when the rule is stored ("InputTemplate contains invalid placeholder
//! ..."). Any other `<` or `>` (`a <= b`) is plain text. To deliver a literal
//! `<tag>` inside a JSON string, write it as `\u003ctag\u003e`.
//!
//! ## JSON templates
//!
//! A template that is valid JSON once its placeholders are filled is a JSON
//! template, and what a placeholder becomes depends on where it stands:
//!
//! | the value is       | as a JSON value: `{"a": <v>}` | inside a string: `{"a": "id <v>"}`       |
//! |--------------------|-------------------------------|------------------------------------------|
//! | a string `i-1`     | `"i-1"` (quotes added)        | `i-1`                                    |
//! | a number, boolean, `null` | `42`, `true`, `null`   | `42`, `true`, `null`                     |
//! | an object or array | the JSON as is                | the JSON with its quotes removed: `{id:7,tags:[a,b]}` |
//! | missing (the path selects nothing) | `""`          | nothing                                  |
//!
//! So `{"instance": <instance>}` and `{"instance": "<instance>"}` both deliver
//! `{"instance":"i-1"}`, and an object belongs unquoted: `{"order": <order>}`.
//! Text inserted inside a string is JSON-escaped, so a value holding `"`, `\`
//! or a newline cannot break out of its string: the result is always valid
//! JSON. (EventBridge inserts such text unescaped; busbar escapes it because
//! a plugin's detail must be JSON.) A template that is a single JSON string,
//! `"instance <instance> is in <state>"`, is a JSON template too and delivers a
//! JSON string. JSON output is minified.
//!
//! Restrictions, checked when the rule is stored:
//!
//! - a template surrounded by curly braces is a JSON object and must be valid
//!   JSON;
//! - a placeholder cannot be an object key, bare (`{<k>: 1}`) or quoted
//!   (`{"<k>": 1}`);
//! - `<aws.events.event>` and `<aws.events.event.json>` can only stand as a
//!   JSON value (`{"original": <aws.events.event.json>}`), never inside a string
//!   or a text template.
//!
//! ## Text templates
//!
//! Any other template is plain text, `<instance> is in state <state>` or
//! several quoted lines:
//!
//! ```text
//! "<severity> severity finding <findingArn>"
//! "Affected instance: <instanceId>"
//! ```
//!
//! Every placeholder is replaced by the value's text: strings without quotes,
//! numbers and booleans as written, objects and arrays as compact JSON, missing
//! values by nothing. Backslashes and quotes in the template are kept as they
//! are. EventBridge hands such text to its targets verbatim; a busbar plugin's
//! `detail` is JSON text, so busbar delivers the text as one JSON string:
//! `<instance> is in state <state>` delivers `"i-1 is in state RUNNING"`.
//!
//! # Checked when a rule is stored
//!
//! - at most one of `input`, `input_path`, `input_transformer` ("Only one of
//!   Input, InputPath, or InputTransformer must be provided for target ...");
//! - `input` is valid JSON of at most 8192 characters;
//! - every path parses; `input_paths_map` has at most 100 entries, its names
//!   are well formed and none is a predefined name;
//! - the template restrictions above.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use crate::rules::Target;

/// The most entries an `input_paths_map` may hold (EventBridge's limit).
pub const MAX_INPUT_PATHS: usize = 100;
/// The longest variable name in an `input_paths_map`.
pub const MAX_VARIABLE_NAME_LEN: usize = 256;
/// The longest JSON path, in `input_path` or an `input_paths_map` value.
pub const MAX_PATH_LEN: usize = 256;
/// The longest `input_template`.
pub const MAX_TEMPLATE_LEN: usize = 8192;
/// The longest constant `input`.
pub const MAX_INPUT_LEN: usize = 8192;

/// `<aws.events.rule-arn>`: the rule's ARN.
pub const VAR_RULE_ARN: &str = "aws.events.rule-arn";
/// `<aws.events.rule-name>`: the rule's name.
pub const VAR_RULE_NAME: &str = "aws.events.rule-name";
/// `<aws.events.event.ingestion-time>`: when busbar received the event.
pub const VAR_INGESTION_TIME: &str = "aws.events.event.ingestion-time";
/// `<aws.events.event>`: the event without its detail.
pub const VAR_EVENT: &str = "aws.events.event";
/// `<aws.events.event.json>`: the whole event.
pub const VAR_EVENT_JSON: &str = "aws.events.event.json";

const PREDEFINED: [&str; 5] = [
    VAR_RULE_ARN,
    VAR_RULE_NAME,
    VAR_INGESTION_TIME,
    VAR_EVENT,
    VAR_EVENT_JSON,
];

/// EventBridge's InputTransformer: variables taken from the event by JSON
/// path, and the template they fill in (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTransformer {
    #[serde(default)]
    pub input_paths_map: BTreeMap<String, String>,
    pub input_template: String,
}

/// Why a target's input settings were refused or could not be rendered. The
/// message names the target, key, path or placeholder at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformError(pub String);

impl TransformError {
    fn new(message: impl Into<String>) -> Self {
        TransformError(message.into())
    }

    /// The message, without the target it concerns.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransformError {}

/// The rule-level facts the predefined variables report.
#[derive(Debug, Clone, Copy)]
pub struct TransformContext<'a> {
    pub rule_name: &'a str,
    pub rule_arn: &'a str,
    /// When busbar received the event, RFC 3339.
    pub ingestion_time: &'a str,
}

/// What a target delivers in place of the event's detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetInput<'a> {
    /// The event's own detail, unchanged.
    Event,
    /// Constant JSON text (EventBridge `Input`).
    Constant(&'a str),
    /// The value a JSON path selects from the event (EventBridge `InputPath`).
    Path(&'a str),
    /// A template filled from the event (EventBridge `InputTransformer`).
    Transformer(&'a InputTransformer),
}

impl<'a> TargetInput<'a> {
    /// Reads a target's input settings, refusing more than one.
    pub fn of(target: &'a Target) -> Result<Self, TransformError> {
        match (&target.input, &target.input_path, &target.input_transformer) {
            (None, None, None) => Ok(TargetInput::Event),
            (Some(input), None, None) => Ok(TargetInput::Constant(input)),
            (None, Some(path), None) => Ok(TargetInput::Path(path)),
            (None, None, Some(transformer)) => Ok(TargetInput::Transformer(transformer)),
            _ => Err(TransformError(format!(
                "Only one of Input, InputPath, or InputTransformer must be provided for target {}.",
                target.id
            ))),
        }
    }

    /// Checks the setting as it would be stored.
    pub fn validate(&self) -> Result<(), TransformError> {
        match self {
            TargetInput::Event => Ok(()),
            TargetInput::Constant(input) => validate_constant(input),
            TargetInput::Path(path) => {
                JsonPath::parse(path).map_err(|why| {
                    TransformError(format!("InputPath `{path}` is not supported: {why}"))
                })?;
                Ok(())
            }
            TargetInput::Transformer(transformer) => transformer.validate(),
        }
    }

    /// The text to deliver as `detail`; `None` delivers the event's own detail.
    pub fn render(
        &self,
        event: &Value,
        ctx: &TransformContext,
    ) -> Result<Option<String>, TransformError> {
        match self {
            TargetInput::Event => Ok(None),
            TargetInput::Constant(input) => {
                validate_constant(input)?;
                Ok(Some((*input).to_string()))
            }
            TargetInput::Path(path) => {
                let parsed = JsonPath::parse(path).map_err(|why| {
                    TransformError(format!("InputPath `{path}` is not supported: {why}"))
                })?;
                Ok(Some(match parsed.select(event) {
                    Some(value) => value.to_string(),
                    None => "null".to_string(),
                }))
            }
            TargetInput::Transformer(transformer) => transformer.apply(event, ctx).map(Some),
        }
    }
}

/// Applies a target's input settings (Input, InputPath, InputTransformer — at
/// most one) and returns the text to deliver as `detail` (None: deliver the
/// event's own detail unchanged).
pub fn render_target_input(
    target: &Target,
    event: &Value,
    ctx: &TransformContext,
) -> Result<Option<String>, TransformError> {
    TargetInput::of(target)?
        .render(event, ctx)
        .map_err(|e| for_target(target, e))
}

/// Validates a target's input settings (at most one of the three; Input must
/// be valid JSON; paths and template valid).
pub fn validate_target_input(target: &Target) -> Result<(), TransformError> {
    TargetInput::of(target)?
        .validate()
        .map_err(|e| for_target(target, e))
}

fn for_target(target: &Target, e: TransformError) -> TransformError {
    TransformError(format!("target `{}`: {}", target.id, e.0))
}

fn validate_constant(input: &str) -> Result<(), TransformError> {
    if input.len() > MAX_INPUT_LEN {
        return Err(TransformError(format!(
            "Input is {} characters long; the limit is {MAX_INPUT_LEN}",
            input.len()
        )));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(input)
        .map_err(|e| TransformError(format!("Input is not valid JSON: {e}")))?;
    Ok(())
}

impl InputTransformer {
    /// Validates paths and template when the rule is stored (errors name the
    /// bad key/path/placeholder).
    pub fn validate(&self) -> Result<(), TransformError> {
        self.compile().map(|_| ())
    }

    /// Renders the template against the full event envelope JSON (as
    /// `busbar::event::Event` serializes it: version, id, detail-type, source,
    /// account, time, region, resources, detail). The result is JSON text.
    pub fn apply(&self, event: &Value, ctx: &TransformContext) -> Result<String, TransformError> {
        self.compile()?.render(event, ctx)
    }

    fn compile(&self) -> Result<Compiled<'_>, TransformError> {
        if self.input_paths_map.len() > MAX_INPUT_PATHS {
            return Err(TransformError(format!(
                "InputPathsMap has {} entries; the limit is {MAX_INPUT_PATHS}",
                self.input_paths_map.len()
            )));
        }
        let mut variables = BTreeMap::new();
        for (name, path) in &self.input_paths_map {
            check_variable_name(name)?;
            let parsed = JsonPath::parse(path).map_err(|why| {
                TransformError(format!(
                    "InputPathsMap value for `{name}`, `{path}`, is not supported: {why}"
                ))
            })?;
            variables.insert(name.as_str(), parsed);
        }
        let template = Template::compile(&self.input_template, |name| {
            variables.contains_key(name) || PREDEFINED.contains(&name)
        })?;
        Ok(Compiled {
            variables,
            template,
        })
    }
}

fn check_variable_name(name: &str) -> Result<(), TransformError> {
    if PREDEFINED.contains(&name) {
        return Err(TransformError(format!(
            "InputPathsMap key `{name}` is a predefined variable; predefined names are reserved"
        )));
    }
    if name.is_empty() {
        return Err(TransformError::new("InputPathsMap has an empty key"));
    }
    if name.len() > MAX_VARIABLE_NAME_LEN {
        return Err(TransformError(format!(
            "InputPathsMap key `{name}` is {} characters long; the limit is {MAX_VARIABLE_NAME_LEN}",
            name.len()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(TransformError(format!(
            "InputPathsMap key `{name}` contains `{bad}`; keys may contain only letters, digits, `_` and `-`"
        )));
    }
    Ok(())
}

struct Compiled<'t> {
    variables: BTreeMap<&'t str, JsonPath>,
    template: Template<'t>,
}

impl Compiled<'_> {
    fn render(&self, event: &Value, ctx: &TransformContext) -> Result<String, TransformError> {
        let mut out = String::with_capacity(self.template.source.len() + 64);
        for piece in &self.template.pieces {
            match *piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Var { name, place, .. } => {
                    let value = self.resolve(name, event, ctx);
                    let value = value.as_deref();
                    match (self.template.kind, place) {
                        (TemplateKind::Json, Place::Value) => match value {
                            Some(v) => out.push_str(&v.to_string()),
                            None => out.push_str("\"\""),
                        },
                        (TemplateKind::Json, Place::InString) => {
                            if let Some(v) = value {
                                push_escaped(&mut out, &unquoted(v));
                            }
                        }
                        (TemplateKind::Text, _) => {
                            if let Some(v) = value {
                                out.push_str(&as_text(v));
                            }
                        }
                    }
                }
            }
        }
        match self.template.kind {
            TemplateKind::Json => {
                let minified = minify(&out);
                debug_assert!(
                    serde_json::from_str::<serde::de::IgnoredAny>(&minified).is_ok(),
                    "a JSON template rendered invalid JSON: {minified}"
                );
                Ok(minified)
            }
            TemplateKind::Text => Ok(Value::String(out).to_string()),
        }
    }

    /// The value of one variable; `None` when its path selects nothing.
    fn resolve<'v>(
        &self,
        name: &str,
        event: &'v Value,
        ctx: &TransformContext,
    ) -> Option<Cow<'v, Value>> {
        if let Some(path) = self.variables.get(name) {
            return path.select(event);
        }
        let text = |s: &str| Some(Cow::Owned(Value::String(s.to_string())));
        match name {
            VAR_RULE_ARN => text(ctx.rule_arn),
            VAR_RULE_NAME => text(ctx.rule_name),
            VAR_INGESTION_TIME => text(ctx.ingestion_time),
            VAR_EVENT_JSON => Some(Cow::Borrowed(event)),
            VAR_EVENT => Some(Cow::Owned(event_without_detail(event))),
            // Compilation refused every other name.
            _ => None,
        }
    }
}

/// `<aws.events.event>`: EventBridge delivers the envelope without `detail`,
/// and spells `detail-type` as `detailType` there.
fn event_without_detail(event: &Value) -> Value {
    match event {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(k, _)| k.as_str() != "detail")
                .map(|(k, v)| {
                    let key = if k == "detail-type" { "detailType" } else { k };
                    (key.to_string(), v.clone())
                })
                .collect::<Map<String, Value>>(),
        ),
        other => other.clone(),
    }
}

/// A value as it reads inside a JSON string: strings bare, objects and arrays
/// with every quote removed (EventBridge "removes any internal quotes to
/// ensure a valid string").
fn unquoted(value: &Value) -> String {
    fn write(out: &mut String, value: &Value) {
        match value {
            Value::String(s) => out.push_str(s),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(out, item);
                }
                out.push(']');
            }
            Value::Object(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push(':');
                    write(out, v);
                }
                out.push('}');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(&mut out, value);
    out
}

/// A value as it reads in a text template: strings bare, the rest as JSON.
fn as_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// Appends `s` escaped for the inside of a JSON string.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

/// Drops the whitespace between the tokens of valid JSON text.
fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TemplateKind {
    Json,
    Text,
}

/// Where a placeholder stands in the template's JSON structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Where a JSON value goes (or anywhere outside a string literal).
    Value,
    /// Inside a string literal.
    InString,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'t> {
    Text(&'t str),
    Var {
        name: &'t str,
        place: Place,
        /// In an object key: bare where a key goes, or inside a key string.
        in_key: bool,
    },
}

#[derive(Debug)]
struct Template<'t> {
    source: &'t str,
    pieces: Vec<Piece<'t>>,
    kind: TemplateKind,
}

impl<'t> Template<'t> {
    fn compile(source: &'t str, defined: impl Fn(&str) -> bool) -> Result<Self, TransformError> {
        if source.is_empty() {
            return Err(TransformError::new("InputTemplate is empty"));
        }
        if source.len() > MAX_TEMPLATE_LEN {
            return Err(TransformError(format!(
                "InputTemplate is {} characters long; the limit is {MAX_TEMPLATE_LEN}",
                source.len()
            )));
        }
        let pieces = scan(source);
        for piece in &pieces {
            if let Piece::Var { name, .. } = piece
                && !defined(name)
            {
                return Err(TransformError(format!(
                    "InputTemplate contains invalid placeholder <{name}>: it is neither a key of \
                     InputPathsMap nor a predefined variable ({})",
                    PREDEFINED.join(", ")
                )));
            }
        }

        // Any JSON value can stand where a lone `null` can, and any escaped text
        // inside a string where a plain `x` can (an `x` also fails to complete a
        // dangling `\` before the placeholder, as a value would), so the probe is
        // valid JSON exactly when every rendering of the template is.
        let mut probe = String::with_capacity(source.len());
        for piece in &pieces {
            match piece {
                Piece::Text(text) => probe.push_str(text),
                Piece::Var {
                    place: Place::Value,
                    ..
                } => probe.push_str("null"),
                Piece::Var {
                    place: Place::InString,
                    ..
                } => probe.push('x'),
            }
        }
        let parsed = serde_json::from_str::<serde::de::IgnoredAny>(&probe);
        let trimmed = source.trim();
        let object_template = trimmed.starts_with('{') && trimmed.ends_with('}');

        // Key positions mean something only in JSON; an object template that is
        // not valid JSON is still checked, as a placeholder key is the likely
        // reason it is not.
        if (parsed.is_ok() || object_template)
            && let Some(Piece::Var { name, .. }) = pieces
                .iter()
                .find(|p| matches!(p, Piece::Var { in_key: true, .. }))
        {
            return Err(TransformError(format!(
                "InputTemplate uses placeholder <{name}> as an object key; placeholders \
                 can only stand for values"
            )));
        }
        let kind = match parsed {
            Ok(_) => TemplateKind::Json,
            Err(e) if object_template => {
                return Err(TransformError(format!(
                    "InputTemplate is surrounded by curly braces but is not a valid JSON object \
                     (with each placeholder filled in): {e}"
                )));
            }
            Err(_) => TemplateKind::Text,
        };

        for piece in &pieces {
            if let Piece::Var { name, place, .. } = *piece
                && (name == VAR_EVENT || name == VAR_EVENT_JSON)
                && (kind == TemplateKind::Text || place == Place::InString)
            {
                return Err(TransformError(format!(
                    "InputTemplate places <{name}> inside a string; it can only be used as \
                     a JSON value, unquoted, e.g. {{\"event\": <{name}>}}"
                )));
            }
        }
        Ok(Template {
            source,
            pieces,
            kind,
        })
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Splits a template into text and placeholders, noting for each placeholder
/// whether it stands inside a JSON string literal and whether in an object key.
/// The structure it tracks is only meaningful for JSON templates; text
/// templates ignore it.
fn scan(source: &str) -> Vec<Piece<'_>> {
    #[derive(Clone, Copy)]
    enum Open {
        /// An object; true while a key is expected next.
        Object(bool),
        Array,
    }
    let expects_key = |stack: &[Open]| matches!(stack.last(), Some(Open::Object(true)));

    let bytes = source.as_bytes();
    let mut pieces = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut in_string = false;
    let mut string_is_key = false;
    let mut text_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'<' {
            let len = bytes[i + 1..]
                .iter()
                .take_while(|b| is_name_byte(**b))
                .count();
            if len > 0 && bytes.get(i + 1 + len) == Some(&b'>') {
                if text_start < i {
                    pieces.push(Piece::Text(&source[text_start..i]));
                }
                let (place, in_key) = if in_string {
                    (Place::InString, string_is_key)
                } else {
                    (Place::Value, expects_key(&stack))
                };
                pieces.push(Piece::Var {
                    name: &source[i + 1..i + 1 + len],
                    place,
                    in_key,
                });
                i += len + 2;
                text_start = i;
                continue;
            }
        }
        if in_string {
            match b {
                // An escape covers the next character, except a `<`, which
                // cannot be escaped and may open a placeholder.
                b'\\' if bytes.get(i + 1).is_some_and(|n| *n != b'<') => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => {
                    in_string = true;
                    string_is_key = expects_key(&stack);
                }
                b'{' => stack.push(Open::Object(true)),
                b'[' => stack.push(Open::Array),
                b'}' | b']' => {
                    stack.pop();
                }
                b':' | b',' => {
                    if let Some(Open::Object(expect)) = stack.last_mut() {
                        *expect = b == b',';
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    if text_start < source.len() {
        pieces.push(Piece::Text(&source[text_start..]));
    }
    pieces
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
    Wildcard,
}

/// A parsed path in EventBridge's JSONPath subset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JsonPath {
    steps: Vec<Step>,
}

impl JsonPath {
    /// Parses `path`; the error says what is wrong, without repeating the path.
    fn parse(path: &str) -> Result<Self, String> {
        if path.len() > MAX_PATH_LEN {
            return Err(format!(
                "it is {} characters long; the limit is {MAX_PATH_LEN}",
                path.len()
            ));
        }
        let Some(mut rest) = path.strip_prefix('$') else {
            return Err("a path starts with `$`, e.g. `$.detail.id`".into());
        };
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if rest.starts_with("..") {
                return Err("recursive descent (`..`) is not supported".into());
            } else if let Some(after) = rest.strip_prefix('.') {
                if let Some(after) = after.strip_prefix('*') {
                    steps.push(Step::Wildcard);
                    rest = after;
                    continue;
                }
                let len = after
                    .find(|c: char| !is_path_name_char(c))
                    .unwrap_or(after.len());
                if len == 0 {
                    return Err(match after.chars().next() {
                        None => "it ends with `.`".to_string(),
                        Some(c) => format!(
                            "`{c}` cannot appear in a member name; names may contain letters, \
                             digits, `-`, `_` and `/`"
                        ),
                    });
                }
                steps.push(Step::Key(after[..len].to_string()));
                rest = &after[len..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let Some(end) = after.find(']') else {
                    return Err("a `[` is not closed".into());
                };
                let inner = &after[..end];
                steps.push(match inner {
                    "*" => Step::Wildcard,
                    _ if !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()) => {
                        Step::Index(
                            inner
                                .parse()
                                .map_err(|_| format!("array index `{inner}` is too large"))?,
                        )
                    }
                    _ if inner.starts_with('\'') || inner.starts_with('"') => {
                        return Err(format!(
                            "bracket notation for member names (`[{inner}]`) is not supported; \
                             use dot notation"
                        ));
                    }
                    _ if inner.starts_with('?') => {
                        return Err("filter expressions are not supported".into());
                    }
                    _ if inner.contains(':') => {
                        return Err("array slices are not supported".into());
                    }
                    _ => {
                        return Err(format!(
                            "`[{inner}]` is not an array index; indexes are whole numbers \
                             from 0, or `*`"
                        ));
                    }
                });
                rest = &after[end + 1..];
            } else {
                return Err(format!(
                    "expected `.` or `[` after `{}`",
                    &path[..path.len() - rest.len()]
                ));
            }
        }
        Ok(JsonPath { steps })
    }

    fn is_definite(&self) -> bool {
        !self.steps.contains(&Step::Wildcard)
    }

    /// The value the path selects: the single match of a path without
    /// wildcards, or every match of one with wildcards, as an array.
    fn select<'v>(&self, root: &'v Value) -> Option<Cow<'v, Value>> {
        let mut current: Vec<&'v Value> = vec![root];
        for step in &self.steps {
            let mut next = Vec::with_capacity(current.len());
            for value in current {
                match (step, value) {
                    (Step::Key(key), Value::Object(fields)) => next.extend(fields.get(key)),
                    (Step::Index(index), Value::Array(items)) => next.extend(items.get(*index)),
                    (Step::Wildcard, Value::Array(items)) => next.extend(items.iter()),
                    (Step::Wildcard, Value::Object(fields)) => next.extend(fields.values()),
                    _ => {}
                }
            }
            current = next;
        }
        if self.is_definite() {
            current.first().map(|v| Cow::Borrowed(*v))
        } else {
            Some(Cow::Owned(Value::Array(
                current.into_iter().cloned().collect(),
            )))
        }
    }
}

fn is_path_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RetryPolicy;
    use serde_json::json;

    /// The example event of the EventBridge user guide's "Input transform examples".
    fn ec2_event() -> Value {
        json!({
            "version": "0",
            "id": "7bf73129-1428-4cd3-a780-95db273d1602",
            "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2",
            "account": "123456789012",
            "time": "2015-11-11T21:29:54Z",
            "region": "us-east-1",
            "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
            "detail": {"instance-id": "i-0123456789", "state": "RUNNING"}
        })
    }

    /// An order event with the value shapes the guide's event lacks.
    fn order_event() -> Value {
        json!({
            "version": "0",
            "id": "1",
            "detail-type": "OrderPlaced",
            "source": "shop",
            "account": "000000000000",
            "time": "2026-01-02T03:04:05Z",
            "region": "local",
            "resources": [],
            "detail": {
                "order": {"id": 7, "tags": ["a", "b"]},
                "items": [
                    {"sku": "X-1", "qty": 2},
                    {"qty": 1},
                    {"sku": "Y-2", "qty": 5, "tags": ["gift"]}
                ],
                "total": 12.5,
                "paid": true,
                "coupon": null,
                "note": "say \"hi\"\\now\nline two",
                "path/part": "slash"
            }
        })
    }

    const CTX: TransformContext<'static> = TransformContext {
        rule_name: "example",
        rule_arn: "arn:aws:events:us-east-2:123456789012:rule/example",
        ingestion_time: "2015-11-11T21:29:55Z",
    };

    /// The guide's InputPathsMap.
    const GUIDE_PATHS: [(&str, &str); 4] = [
        ("timestamp", "$.time"),
        ("instance", "$.detail.instance-id"),
        ("state", "$.detail.state"),
        ("resource", "$.resources[0]"),
    ];

    fn transformer(paths: &[(&str, &str)], template: &str) -> InputTransformer {
        InputTransformer {
            input_paths_map: paths
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            input_template: template.to_string(),
        }
    }

    fn render(paths: &[(&str, &str)], template: &str, event: &Value) -> String {
        let t = transformer(paths, template);
        t.validate().expect("template should validate");
        t.apply(event, &CTX).expect("template should render")
    }

    fn guide(template: &str) -> String {
        render(&GUIDE_PATHS, template, &ec2_event())
    }

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    fn refused(paths: &[(&str, &str)], template: &str) -> String {
        let t = transformer(paths, template);
        let err = t.validate().expect_err("template should be refused");
        assert_eq!(t.apply(&ec2_event(), &CTX), Err(err.clone()));
        err.0
    }

    fn target(id: &str) -> Target {
        Target {
            id: id.to_string(),
            plugin: "p".to_string(),
            input: None,
            input_path: None,
            input_transformer: None,
            retry: RetryPolicy::default(),
            dead_letter: true,
        }
    }

    // The user guide's examples table, row by row.

    #[test]
    fn guide_simple_string() {
        assert_eq!(
            guide(r#""instance <instance> is in <state>""#),
            r#""instance i-0123456789 is in RUNNING""#
        );
    }

    #[test]
    fn guide_string_with_escaped_quotes() {
        assert_eq!(
            guide(r#""instance \"<instance>\" is in <state>""#),
            r#""instance \"i-0123456789\" is in RUNNING""#
        );
    }

    #[test]
    fn guide_string_with_quotes_unescaped_as_the_cli_sends_it() {
        // The guide notes the CLI turns the template above into this text, and the
        // target receives `"instance "i-0123456789" is in RUNNING"`. That is not
        // JSON, so busbar delivers it as a JSON string.
        let out = guide(r#""instance "<instance>" is in <state>""#);
        assert_eq!(
            parsed(&out),
            json!(r#""instance "i-0123456789" is in RUNNING""#)
        );
    }

    #[test]
    fn guide_simple_json() {
        let out = guide("{\n  \"instance\" : <instance>,\n  \"state\": <state>\n}");
        assert_eq!(out, r#"{"instance":"i-0123456789","state":"RUNNING"}"#);
    }

    #[test]
    fn guide_json_with_strings_and_variables() {
        let out = guide(
            r#"{
 "instance" : <instance>,
 "state": "<state>",
 "instanceStatus": "instance \"<instance>\" is in <state>"
}"#,
        );
        assert_eq!(
            parsed(&out),
            json!({
                "instance": "i-0123456789",
                "state": "RUNNING",
                "instanceStatus": "instance \"i-0123456789\" is in RUNNING"
            })
        );
    }

    #[test]
    fn guide_json_with_a_mix_of_variables_and_static_information() {
        let out = guide(
            r#"{
  "instance" : <instance>,
  "state": [ 9, <state>, true ],
  "Transformed" : "Yes"
}"#,
        );
        assert_eq!(
            out,
            r#"{"instance":"i-0123456789","state":[9,"RUNNING",true],"Transformed":"Yes"}"#
        );
    }

    #[test]
    fn guide_reserved_variables_in_json() {
        let out = guide(
            r#"{
  "instance" : <instance>,
  "state": <state>,
  "ruleArn" : <aws.events.rule-arn>,
  "ruleName" : <aws.events.rule-name>,
  "originalEvent" : <aws.events.event>
}"#,
        );
        assert_eq!(
            parsed(&out),
            json!({
                "instance": "i-0123456789",
                "state": "RUNNING",
                "ruleArn": "arn:aws:events:us-east-2:123456789012:rule/example",
                "ruleName": "example",
                "originalEvent": {
                    "version": "0",
                    "id": "7bf73129-1428-4cd3-a780-95db273d1602",
                    "detailType": "EC2 Instance State-change Notification",
                    "source": "aws.ec2",
                    "account": "123456789012",
                    "time": "2015-11-11T21:29:54Z",
                    "region": "us-east-1",
                    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"]
                }
            })
        );
    }

    #[test]
    fn guide_reserved_variables_in_a_string() {
        assert_eq!(
            guide(r#""<aws.events.rule-name> triggered""#),
            r#""example triggered""#
        );
    }

    #[test]
    fn guide_cloudwatch_log_group() {
        // The guide shows what a CloudWatch log group displays for this template
        // (the timestamp unquoted, the message's quotes unescaped); the JSON
        // EventBridge produces, and busbar delivers, is this.
        let out = guide(
            r#"{
  "timestamp" : <timestamp>,
  "message": "instance \"<instance>\" is in <state>"
}"#,
        );
        assert_eq!(
            out,
            r#"{"timestamp":"2015-11-11T21:29:54Z","message":"instance \"i-0123456789\" is in RUNNING"}"#
        );
    }

    #[test]
    fn guide_array_index_variable() {
        assert_eq!(
            guide(r#"{"resource": <resource>, "text": "on <resource>"}"#),
            r#"{"resource":"arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111","text":"on arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"}"#
        );
    }

    #[test]
    fn guide_tutorial_message() {
        assert_eq!(
            guide(r#""The EC2 instance <instance> has changed state to <state>.""#),
            r#""The EC2 instance i-0123456789 has changed state to RUNNING.""#
        );
    }

    // The InputTransformer API reference's examples.

    #[test]
    fn api_reference_plain_text() {
        let paths = [
            ("instance", "$.detail.instance"),
            ("status", "$.detail.status"),
        ];
        let event = json!({"detail": {"instance": "i-1", "status": "ok"}});
        let out = render(&paths, "<instance> is in state <status>", &event);
        assert_eq!(out, r#""i-1 is in state ok""#);
        let out = render(&paths, r#"<instance> is in state "<status>""#, &event);
        assert_eq!(parsed(&out), json!(r#"i-1 is in state "ok""#));
    }

    #[test]
    fn api_reference_json_with_variables_in_quotes_or_out() {
        let paths = [
            ("instance", "$.detail.instance"),
            ("status", "$.detail.status"),
        ];
        let event = json!({"detail": {"instance": "i-1", "status": "ok"}});
        let out = render(
            &paths,
            r#"{"myInstance": <instance>,"myStatus": "<instance> is in state \"<status>\""}"#,
            &event,
        );
        assert_eq!(
            out,
            r#"{"myInstance":"i-1","myStatus":"i-1 is in state \"ok\""}"#
        );
    }

    #[test]
    fn multi_line_text_template() {
        let paths = [
            ("severity", "$.detail.severity"),
            ("instanceId", "$.detail.id"),
        ];
        let event = json!({"detail": {"severity": "HIGH", "id": "i-9"}});
        let out = render(
            &paths,
            "\"<severity> severity finding\"\n\"Affected instance: <instanceId>\"",
            &event,
        );
        assert_eq!(
            parsed(&out),
            json!("\"HIGH severity finding\"\n\"Affected instance: i-9\"")
        );
    }

    // Missing values: the variable renders as nothing, `""` where a JSON value goes.

    #[test]
    fn missing_path_renders_nothing_inside_strings() {
        let paths = [
            ("type", "$.detail-type"),
            ("command", "$.detail.notinmessage"),
        ];
        let out = render(
            &paths,
            r#""Event of <type> type, info extracted from detail <command>""#,
            &order_event(),
        );
        assert_eq!(
            out,
            r#""Event of OrderPlaced type, info extracted from detail ""#
        );
    }

    #[test]
    fn missing_path_renders_an_empty_string_as_a_json_value() {
        let paths = [
            ("type", "$.detail-type"),
            ("command", "$.detail.notinmessage"),
        ];
        let out = render(
            &paths,
            r#"{"detailType": <type>, "command": <command>, "quoted": "<command>"}"#,
            &order_event(),
        );
        assert_eq!(
            out,
            r#"{"detailType":"OrderPlaced","command":"","quoted":""}"#
        );
    }

    #[test]
    fn missing_path_renders_nothing_in_text_templates() {
        let out = render(&[("x", "$.nope")], "value: <x>!", &order_event());
        assert_eq!(out, r#""value: !""#);
    }

    #[test]
    fn out_of_range_index_and_wrong_shapes_are_missing() {
        let event = order_event();
        for path in [
            "$.detail.items[9]",
            "$.detail.order[0]",
            "$.detail.items.sku",
            "$.detail.total.x",
            "$.resources[0]",
        ] {
            assert_eq!(
                render(&[("v", path)], r#"{"v": <v>}"#, &event),
                r#"{"v":""}"#,
                "{path}"
            );
        }
    }

    // Value shapes in each position.

    #[test]
    fn scalars_as_json_values_and_inside_strings() {
        let paths = [
            ("total", "$.detail.total"),
            ("paid", "$.detail.paid"),
            ("coupon", "$.detail.coupon"),
            ("qty", "$.detail.items[0].qty"),
        ];
        let out = render(
            &paths,
            r#"{"t": <total>, "p": <paid>, "c": <coupon>, "q": <qty>, "s": "<total>/<paid>/<coupon>/<qty>"}"#,
            &order_event(),
        );
        assert_eq!(
            out,
            r#"{"t":12.5,"p":true,"c":null,"q":2,"s":"12.5/true/null/2"}"#
        );
    }

    #[test]
    fn objects_and_arrays_as_json_values() {
        let paths = [("order", "$.detail.order"), ("tags", "$.detail.order.tags")];
        let out = render(
            &paths,
            r#"{"order": <order>, "tags": <tags>}"#,
            &order_event(),
        );
        assert_eq!(
            out,
            r#"{"order":{"id":7,"tags":["a","b"]},"tags":["a","b"]}"#
        );
    }

    #[test]
    fn objects_and_arrays_inside_strings_lose_their_quotes() {
        let paths = [("order", "$.detail.order"), ("tags", "$.detail.order.tags")];
        let out = render(
            &paths,
            r#"{"text": "Order is <order>, tags <tags>"}"#,
            &order_event(),
        );
        assert_eq!(out, r#"{"text":"Order is {id:7,tags:[a,b]}, tags [a,b]"}"#);
        let out = render(&paths, r#""Order is <order>""#, &order_event());
        assert_eq!(out, r#""Order is {id:7,tags:[a,b]}""#);
    }

    #[test]
    fn objects_in_text_templates_are_compact_json() {
        let out = render(
            &[("order", "$.detail.order")],
            "Order: <order>",
            &order_event(),
        );
        assert_eq!(parsed(&out), json!(r#"Order: {"id":7,"tags":["a","b"]}"#));
    }

    #[test]
    fn a_lone_placeholder_is_a_json_template() {
        let event = order_event();
        assert_eq!(
            render(&[("o", "$.detail.order")], "<o>", &event),
            r#"{"id":7,"tags":["a","b"]}"#
        );
        assert_eq!(render(&[("o", "$.detail.total")], " <o> ", &event), "12.5");
        assert_eq!(render(&[("o", "$.source")], "<o>", &event), r#""shop""#);
        assert_eq!(
            render(&[], "<aws.events.event.json>", &event),
            event.to_string()
        );
    }

    #[test]
    fn values_inserted_in_strings_are_escaped() {
        let out = render(
            &[("note", "$.detail.note")],
            r#"{"n": "note: <note>", "raw": <note>}"#,
            &order_event(),
        );
        let v = parsed(&out);
        assert_eq!(v["n"], json!("note: say \"hi\"\\now\nline two"));
        assert_eq!(v["raw"], json!("say \"hi\"\\now\nline two"));
    }

    #[test]
    fn text_templates_deliver_one_json_string() {
        let out = render(
            &[("note", "$.detail.note")],
            r"Note <note> \o/",
            &order_event(),
        );
        assert_eq!(parsed(&out), json!("Note say \"hi\"\\now\nline two \\o/"));
    }

    #[test]
    fn whitespace_inside_strings_survives_minifying() {
        let out = render(
            &[("s", "$.source")],
            "{ \"a b\" : \"  <s>  \" ,\n\t\"c\": [ 1 , 2 ] }",
            &order_event(),
        );
        assert_eq!(out, r#"{"a b":"  shop  ","c":[1,2]}"#);
    }

    // Paths.

    #[test]
    fn paths_select_members_indexes_and_the_whole_event() {
        let event = order_event();
        let cases = [
            ("$.detail.items[2].tags[0]", json!("gift")),
            ("$.detail.path/part", json!("slash")),
            ("$.detail-type", json!("OrderPlaced")),
            ("$.detail.order", json!({"id": 7, "tags": ["a", "b"]})),
            ("$", event.clone()),
        ];
        for (path, expected) in cases {
            let out = render(&[("v", path)], r#"{"v": <v>}"#, &event);
            assert_eq!(parsed(&out)["v"], expected, "{path}");
        }
    }

    #[test]
    fn wildcards_collect_every_match_into_an_array() {
        let event = order_event();
        let cases = [
            ("$.detail.items[*].sku", json!(["X-1", "Y-2"])),
            ("$.detail.items.*.qty", json!([2, 1, 5])),
            ("$.detail.order.*", json!([7, ["a", "b"]])),
            ("$.detail.items[*].tags[*]", json!(["gift"])),
            ("$.detail.items[*].nothing", json!([])),
            ("$.detail.total.*", json!([])),
        ];
        for (path, expected) in cases {
            let out = render(&[("v", path)], r#"{"v": <v>}"#, &event);
            assert_eq!(parsed(&out)["v"], expected, "{path}");
        }
    }

    #[test]
    fn unsupported_paths_are_refused_naming_the_path() {
        let cases = [
            ("detail.x", "starts with `$`"),
            ("$..x", "recursive descent"),
            ("$.detail['x']", "bracket notation"),
            ("$.items[?(@.qty > 1)]", "filter"),
            ("$.items[0:2]", "slices"),
            ("$.items[-1]", "not an array index"),
            ("$.items[0", "not closed"),
            ("$.detail.", "ends with `.`"),
            ("$.detail.a b", "expected `.` or `[` after `$.detail.a`"),
            ("$.detail.a.%", "cannot appear"),
            ("$x", "expected `.` or `[`"),
        ];
        for (path, why) in cases {
            let err = refused(&[("v", path)], r#"{"v": <v>}"#);
            assert!(
                err.contains(&format!("`{path}`")) && err.contains("`v`") && err.contains(why),
                "{path}: {err}"
            );
        }
        let long = format!("$.{}", "a".repeat(MAX_PATH_LEN));
        assert!(refused(&[("v", &long)], "<v>").contains("the limit is 256"));
    }

    // Placeholders and template validation.

    #[test]
    fn undefined_placeholders_are_refused_by_name() {
        let err = refused(
            &[("type", "$.detail-type")],
            r#""Event of <type> type, with not defined key <notdefinedkey>""#,
        );
        assert!(
            err.starts_with("InputTemplate contains invalid placeholder <notdefinedkey>"),
            "{err}"
        );
        // `<` cannot be escaped: a markup tag reads as a placeholder too.
        let err = refused(&[], r#""<b>bold</b>""#);
        assert!(err.contains("<b>"), "{err}");
    }

    #[test]
    fn angle_brackets_that_are_not_placeholders_are_text() {
        let paths = [("n", "$.detail.total")];
        let event = order_event();
        assert_eq!(
            render(&paths, r#""a <= <n> >= b < c > d <>""#, &event),
            r#""a <= 12.5 >= b < c > d <>""#
        );
        assert_eq!(
            render(
                &paths,
                r#"{"html": "\u003cb\u003e<n>\u003c/b\u003e"}"#,
                &event
            ),
            r#"{"html":"\u003cb\u003e12.5\u003c/b\u003e"}"#
        );
        assert_eq!(
            parsed(&render(&paths, r#"{"html": "\u003cb\u003e<n>"}"#, &event))["html"],
            json!("<b>12.5")
        );
    }

    #[test]
    fn a_placeholder_after_a_backslash_is_still_a_placeholder() {
        // `\<` is no JSON escape, so the template is text, and `<n>` is filled in.
        let out = render(&[("n", "$.detail.total")], r#""x \<n>""#, &order_event());
        assert_eq!(parsed(&out), json!(r#""x \12.5""#));
    }

    #[test]
    fn the_predefined_variables() {
        let out = render(
            &[],
            r#""<aws.events.rule-arn> <aws.events.rule-name> <aws.events.event.ingestion-time>""#,
            &ec2_event(),
        );
        assert_eq!(
            out,
            r#""arn:aws:events:us-east-2:123456789012:rule/example example 2015-11-11T21:29:55Z""#
        );
        let out = render(
            &[],
            r#"{"originalEvent": <aws.events.event>, "originalEventJson": <aws.events.event.json>}"#,
            &ec2_event(),
        );
        let v = parsed(&out);
        assert_eq!(v["originalEventJson"], ec2_event());
        assert_eq!(v["originalEvent"]["detailType"], ec2_event()["detail-type"]);
        assert!(v["originalEvent"].get("detail").is_none());
        assert!(v["originalEvent"].get("detail-type").is_none());
    }

    #[test]
    fn event_variables_only_stand_as_json_values() {
        for template in [
            r#"{"e": "<aws.events.event>"}"#,
            r#"{"e": "event: <aws.events.event.json>"}"#,
            r#""<aws.events.event.json>""#,
            "event: <aws.events.event>",
        ] {
            let err = refused(&[], template);
            assert!(
                err.contains("can only be used as a JSON value"),
                "{template}: {err}"
            );
        }
    }

    #[test]
    fn placeholders_cannot_be_object_keys() {
        for template in [
            r#"{<k>: 1}"#,
            r#"{"<k>": 1}"#,
            r#"{"a": 1, <k>: 2}"#,
            r#"{"a": {"b-<k>": 2}}"#,
            r#"[{"<k>": 1}]"#,
        ] {
            let err = refused(&[("k", "$.source")], template);
            assert!(err.contains("<k> as an object key"), "{template}: {err}");
        }
        // Values in objects, arrays inside objects, and keys that merely follow
        // a placeholder value are fine.
        let out = render(
            &[("k", "$.source")],
            r#"{"a": <k>, "b": [<k>, {"c": "<k>"}], "<d": 1}"#,
            &order_event(),
        );
        assert_eq!(out, r#"{"a":"shop","b":["shop",{"c":"shop"}],"<d":1}"#);
    }

    #[test]
    fn object_templates_must_be_valid_json() {
        let err = refused(&[("k", "$.source")], r#"{"a": <k> <k>}"#);
        assert!(err.contains("not a valid JSON object"), "{err}");
        let err = refused(&[], r#"{"a": 1,}"#);
        assert!(err.contains("not a valid JSON object"), "{err}");
        // Text that merely contains braces is a text template.
        let out = render(&[("k", "$.source")], "from {<k>}!", &order_event());
        assert_eq!(out, r#""from {shop}!""#);
    }

    #[test]
    fn template_length_limits() {
        assert_eq!(refused(&[], ""), "InputTemplate is empty");
        let long = format!("\"{}\"", "x".repeat(MAX_TEMPLATE_LEN));
        assert!(refused(&[], &long).contains("the limit is 8192"));
        let longest = format!("\"{}\"", "x".repeat(MAX_TEMPLATE_LEN - 2));
        assert_eq!(render(&[], &longest, &order_event()), longest);
    }

    #[test]
    fn input_paths_map_keys() {
        let err = refused(
            &[("aws.events.rule-name", "$.source")],
            "<aws.events.rule-name>",
        );
        assert!(err.contains("predefined variable"), "{err}");
        let err = refused(&[("AWS.thing", "$.source")], r#""x""#);
        assert!(err.contains("`AWS.thing` contains `.`"), "{err}");
        let err = refused(&[("a b", "$.source")], r#""x""#);
        assert!(err.contains("`a b` contains ` `"), "{err}");
        let err = refused(&[("", "$.source")], r#""x""#);
        assert!(err.contains("empty key"), "{err}");
        let long = "k".repeat(MAX_VARIABLE_NAME_LEN + 1);
        assert!(refused(&[(&long, "$.source")], r#""x""#).contains("the limit is 256"));
        let ok = "k".repeat(MAX_VARIABLE_NAME_LEN);
        let out = render(
            &[(&ok, "$.source"), ("A_b-9", "$.id")],
            &format!("\"<{ok}><A_b-9>\""),
            &order_event(),
        );
        assert_eq!(out, r#""shop1""#);
    }

    #[test]
    fn at_most_100_variables() {
        let keys: Vec<String> = (0..=MAX_INPUT_PATHS).map(|i| format!("v{i}")).collect();
        let mut paths: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "$.id")).collect();
        let err = refused(&paths, r#""x""#);
        assert!(err.contains("101 entries; the limit is 100"), "{err}");
        paths.pop();
        let template = format!(
            "\"{}\"",
            keys[..MAX_INPUT_PATHS]
                .iter()
                .map(|k| format!("<{k}>"))
                .collect::<String>()
        );
        assert_eq!(
            render(&paths, &template, &order_event()),
            format!("\"{}\"", "1".repeat(100))
        );
    }

    #[test]
    fn unused_variables_are_allowed() {
        assert_eq!(
            render(
                &[("unused", "$.detail.nothing")],
                r#"{"a": 1}"#,
                &order_event()
            ),
            r#"{"a":1}"#
        );
    }

    #[test]
    fn output_is_always_json() {
        let paths = [
            ("note", "$.detail.note"),
            ("order", "$.detail.order"),
            ("missing", "$.nope"),
            ("items", "$.detail.items[*]"),
        ];
        let templates = [
            r#"{"a": <note>, "b": "<note> <order> <missing> <items>", "c": [<order>, <missing>]}"#,
            r#""<note> \"<order>\" <missing>""#,
            "<note> and <order> and <items> \\ \" ' { [",
            r#"[<items>, "<items>", <missing>]"#,
            "<missing>",
            r#"  "<note>"  "#,
        ];
        for template in templates {
            let out = render(&paths, template, &order_event());
            parsed(&out);
        }
    }

    // Target settings.

    #[test]
    fn targets_without_settings_deliver_the_event_detail() {
        let t = target("t1");
        assert_eq!(TargetInput::of(&t), Ok(TargetInput::Event));
        validate_target_input(&t).unwrap();
        assert_eq!(render_target_input(&t, &ec2_event(), &CTX), Ok(None));
    }

    #[test]
    fn constant_input_is_delivered_verbatim() {
        let mut t = target("t1");
        t.input = Some(r#"{ "fixed": [1, 2] }"#.to_string());
        validate_target_input(&t).unwrap();
        assert_eq!(
            render_target_input(&t, &ec2_event(), &CTX),
            Ok(Some(r#"{ "fixed": [1, 2] }"#.to_string()))
        );
        t.input = Some(r#""just a string""#.to_string());
        assert_eq!(
            render_target_input(&t, &ec2_event(), &CTX),
            Ok(Some(r#""just a string""#.to_string()))
        );
    }

    #[test]
    fn constant_input_must_be_json() {
        let mut t = target("t1");
        t.input = Some("not json".to_string());
        let err = validate_target_input(&t).unwrap_err().0;
        assert!(
            err.starts_with("target `t1`: Input is not valid JSON"),
            "{err}"
        );
        t.input = Some(format!("\"{}\"", "x".repeat(MAX_INPUT_LEN)));
        let err = validate_target_input(&t).unwrap_err().0;
        assert!(err.contains("the limit is 8192"), "{err}");
    }

    #[test]
    fn input_path_delivers_the_selected_value() {
        let mut t = target("t1");
        let cases = [
            (
                "$.detail",
                r#"{"instance-id":"i-0123456789","state":"RUNNING"}"#,
            ),
            ("$.detail.state", r#""RUNNING""#),
            (
                "$.resources[0]",
                r#""arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111""#,
            ),
            ("$.detail.*", r#"["i-0123456789","RUNNING"]"#),
            ("$.detail.nothing", "null"),
        ];
        for (path, expected) in cases {
            t.input_path = Some(path.to_string());
            validate_target_input(&t).unwrap();
            assert_eq!(
                render_target_input(&t, &ec2_event(), &CTX),
                Ok(Some(expected.to_string())),
                "{path}"
            );
        }
        t.input_path = Some("$..state".to_string());
        let err = validate_target_input(&t).unwrap_err().0;
        assert!(
            err.starts_with("target `t1`: InputPath `$..state`"),
            "{err}"
        );
    }

    #[test]
    fn input_transformer_target() {
        let mut t = target("t1");
        t.input_transformer = Some(transformer(&GUIDE_PATHS, r#"{"i": <instance>}"#));
        validate_target_input(&t).unwrap();
        assert_eq!(
            render_target_input(&t, &ec2_event(), &CTX),
            Ok(Some(r#"{"i":"i-0123456789"}"#.to_string()))
        );
        t.input_transformer = Some(transformer(&GUIDE_PATHS, r#"{"i": <nope>}"#));
        let err = validate_target_input(&t).unwrap_err().0;
        assert!(
            err.starts_with("target `t1`: InputTemplate contains invalid placeholder <nope>"),
            "{err}"
        );
    }

    #[test]
    fn at_most_one_input_setting() {
        let expected =
            "Only one of Input, InputPath, or InputTransformer must be provided for target t1.";
        let mut t = target("t1");
        t.input = Some("{}".to_string());
        t.input_path = Some("$.detail".to_string());
        assert_eq!(validate_target_input(&t).unwrap_err().0, expected);
        assert_eq!(
            render_target_input(&t, &ec2_event(), &CTX).unwrap_err().0,
            expected
        );
        t.input = None;
        t.input_transformer = Some(transformer(&[], r#""x""#));
        assert_eq!(validate_target_input(&t).unwrap_err().0, expected);
        t.input = Some("{}".to_string());
        t.input_path = None;
        assert_eq!(validate_target_input(&t).unwrap_err().0, expected);
    }

    #[test]
    fn transformer_serde_shape() {
        let t: InputTransformer =
            serde_json::from_value(json!({"input_template": "\"x\""})).unwrap();
        assert!(t.input_paths_map.is_empty());
        let t: InputTransformer = serde_json::from_value(json!({
            "input_paths_map": {"a": "$.source"},
            "input_template": "<a>"
        }))
        .unwrap();
        assert_eq!(t.input_paths_map["a"], "$.source");
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({"input_paths_map": {"a": "$.source"}, "input_template": "<a>"})
        );
    }

    #[test]
    fn errors_display_their_message() {
        let err = transformer(&[], "").validate().unwrap_err();
        assert_eq!(err.to_string(), "InputTemplate is empty");
        assert_eq!(err.message(), "InputTemplate is empty");
        let boxed: Box<dyn std::error::Error> = Box::new(err);
        assert_eq!(boxed.to_string(), "InputTemplate is empty");
    }
}
