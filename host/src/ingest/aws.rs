//! The Amazon EventBridge API over AWS JSON 1.1: `POST /` with
//! `X-Amz-Target: AWSEvents.<Operation>`, so the awscli and boto3 work against
//! busbar with `--endpoint-url` / `endpoint_url=`. Field names, response shapes
//! and error types (`{"__type": "...", "message": "..."}`, HTTP 400) are the
//! EventBridge API reference's. Request signatures are not checked (see
//! [`super::auth`] for how tokens ride along with a SigV4 client).
//!
//! Operations: PutEvents, PutRule, DescribeRule, ListRules, DeleteRule,
//! EnableRule, DisableRule, PutTargets, RemoveTargets, ListTargetsByRule,
//! TestEventPattern, CreateEventBus, DeleteEventBus, ListEventBuses,
//! DescribeEventBus. PutEvents needs the publish token, the others the admin token.
//!
//! How busbar reads the EventBridge shapes:
//! - A target's `Arn` names the plugin that receives the events:
//!   `busbar:plugin:NAME`, a Lambda function ARN `arn:aws:lambda:REGION:ACCOUNT:function:NAME`,
//!   or a bare `NAME`. ListTargetsByRule answers `busbar:plugin:NAME`.
//! - `DeadLetterConfig` (any `Arn`) turns the target's dead-letter queue on; without
//!   it, deliveries that exhaust their retries are dropped, as in EventBridge.
//!   ListTargetsByRule shows `{"Arn": "busbar:dlq"}` for such targets.
//! - ARNs use the region of the request's SigV4 credential scope (the `--region`
//!   the client was given), or `local`, and the account `000000000000`; events
//!   published through PutEvents carry that region too.
//! - DeleteRule of a rule that does not exist succeeds, as EventBridge's does;
//!   so does DeleteEventBus of a bus that does not exist.

use super::auth::{self, Scope};
use super::errors::{AMZ_JSON, AwsError};
use super::limits::{BodyError, read_body};
use super::{EntryOutcome, NodeState, Surface, publish_entries};
use crate::event::{
    DEFAULT_ACCOUNT, DEFAULT_BUS, DEFAULT_REGION, Event, EventError, EventInput, entry_size,
    json_kind, parse_json_bytes, validate_bus_name,
};
use crate::node::Node;
use crate::pattern::Pattern;
use crate::rules::{BusInfo, InputTransformer, RetryPolicy, Rule, RuleOrigin, RuleState, Target};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// PutEvents takes at most this many entries (EventBridge's fixed limit).
pub const MAX_PUT_EVENTS_ENTRIES: usize = 10;
/// A rule has at most this many targets (EventBridge's limit).
pub const MAX_TARGETS_PER_RULE: usize = 5;
/// The largest page of the List* operations.
pub const MAX_PAGE: usize = 100;

type Result<T, E = AwsError> = std::result::Result<T, E>;

const OPERATIONS: &[&str] = &[
    "PutEvents",
    "PutRule",
    "DescribeRule",
    "ListRules",
    "DeleteRule",
    "EnableRule",
    "DisableRule",
    "PutTargets",
    "RemoveTargets",
    "ListTargetsByRule",
    "TestEventPattern",
    "CreateEventBus",
    "DeleteEventBus",
    "ListEventBuses",
    "DescribeEventBus",
];

pub async fn handle(State(node): NodeState, headers: HeaderMap, body: Body) -> Response {
    let mut resp = match call(&node, &headers, body).await {
        Ok(value) => {
            let mut r = (StatusCode::OK, value.to_string()).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(AMZ_JSON));
            r
        }
        Err(e) => e.into_response(),
    };
    // botocore puts this in ResponseMetadata.RequestId.
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

/// The context an operation runs in.
struct Ctx<'a> {
    node: &'a Node,
    region: String,
}

impl Ctx<'_> {
    fn bus_arn(&self, bus: &str) -> String {
        format!(
            "arn:aws:events:{}:{DEFAULT_ACCOUNT}:event-bus/{bus}",
            self.region
        )
    }

    /// `rule/NAME` on the default bus, `rule/BUS/NAME` on others, as EventBridge writes it.
    fn rule_arn(&self, bus: &str, name: &str) -> String {
        crate::rules::rule_arn(&self.region, bus, name)
    }
}

async fn call(node: &Node, headers: &HeaderMap, body: Body) -> Result<Value> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            AwsError::new(
                "UnknownOperationException",
                "missing X-Amz-Target header: the EventBridge API at POST / needs X-Amz-Target: AWSEvents.<Operation>",
            )
        })?;
    let op = target
        .strip_prefix("AWSEvents.")
        .filter(|op| OPERATIONS.contains(op))
        .ok_or_else(|| {
            AwsError::new(
                "UnknownOperationException",
                format!(
                    "unknown operation {target:?}; busbar implements AWSEvents.{}",
                    OPERATIONS.join(", AWSEvents.")
                ),
            )
        })?;
    let scope = if op == "PutEvents" {
        Scope::Publish
    } else {
        Scope::Admin
    };
    auth::check(&node.config.server, headers, scope)
        .map_err(|d| AwsError::denied(d.status, d.message))?;
    let bytes = read_body(headers, body, node.config.limits.max_body_bytes)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { .. } => AwsError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                kind: "RequestEntityTooLargeException",
                message: e.message(),
            },
            BodyError::Unreadable(_) => AwsError::new("SerializationException", e.message()),
        })?;
    let value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_json_bytes(&bytes, node.config.limits.max_depth)
            .map_err(|e| AwsError::new("SerializationException", e.message))?
    };
    let Value::Object(map) = value else {
        return Err(AwsError::new(
            "SerializationException",
            format!(
                "the request body must be a JSON object, got {}",
                json_kind(&value)
            ),
        ));
    };
    let mut p = Params::new(map, String::new());
    let ctx = Ctx {
        node,
        region: auth::sigv4_region(headers).unwrap_or_else(|| DEFAULT_REGION.to_string()),
    };
    match op {
        "PutEvents" => put_events(&ctx, &mut p).await,
        "PutRule" => put_rule(&ctx, &mut p).await,
        "DescribeRule" => describe_rule(&ctx, &mut p),
        "ListRules" => list_rules(&ctx, &mut p),
        "DeleteRule" => delete_rule(&ctx, &mut p).await,
        "EnableRule" => set_state(&ctx, &mut p, RuleState::Enabled).await,
        "DisableRule" => set_state(&ctx, &mut p, RuleState::Disabled).await,
        "PutTargets" => put_targets(&ctx, &mut p).await,
        "RemoveTargets" => remove_targets(&ctx, &mut p).await,
        "ListTargetsByRule" => list_targets(&ctx, &mut p),
        "TestEventPattern" => test_event_pattern(&ctx, &mut p),
        "CreateEventBus" => create_event_bus(&ctx, &mut p).await,
        "DeleteEventBus" => delete_event_bus(&ctx, &mut p).await,
        "ListEventBuses" => list_event_buses(&ctx, &mut p),
        "DescribeEventBus" => describe_event_bus(&ctx, &mut p),
        _ => unreachable!("checked against OPERATIONS"),
    }
}

/// The members of one request structure, read by name with errors that say
/// which member (with its path, e.g. `Targets[1].RetryPolicy`) is wrong.
struct Params {
    map: Map<String, Value>,
    at: String,
}

fn type_error(field: &str, want: &str, got: &Value) -> AwsError {
    AwsError::new(
        "SerializationException",
        format!("{field} must be {want}, got {}", json_kind(got)),
    )
}

impl Params {
    fn new(map: Map<String, Value>, at: String) -> Self {
        Params { map, at }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.at)
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn str(&mut self, key: &str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(type_error(&self.name(key), "a string", &other)),
        }
    }

    fn req_str(&mut self, key: &str) -> Result<String> {
        match self.str(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(AwsError::validation(format!(
                "1 validation error detected: {} is required and must not be empty",
                self.name(key)
            ))),
        }
    }

    fn int(&mut self, key: &str) -> Result<Option<i64>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
            Some(other) => Err(type_error(&self.name(key), "an integer", &other)),
        }
    }

    fn list(&mut self, key: &str) -> Result<Option<Vec<Value>>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(type_error(&self.name(key), "a list", &other)),
        }
    }

    fn str_list(&mut self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(items) = self.list(key)? else {
            return Ok(None);
        };
        let name = self.name(key);
        items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                other => Err(type_error(&format!("{name}[{i}]"), "a string", &other)),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn object(&mut self, key: &str) -> Result<Option<Params>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Params::new(m, format!("{}.", self.name(key))))),
            Some(other) => Err(type_error(&self.name(key), "a structure", &other)),
        }
    }

    /// `EventBusName` (a name or an ARN), `default` when absent.
    fn bus(&mut self, key: &str) -> Result<String> {
        match self.str(key)? {
            None => Ok(DEFAULT_BUS.to_string()),
            Some(b) => validate_bus_name(&b)
                .map_err(|e| AwsError::validation(format!("{}: {}", self.name(key), e.message))),
        }
    }

    /// `Limit` of a List* operation: 1 to [`MAX_PAGE`], [`MAX_PAGE`] when absent.
    fn limit(&mut self) -> Result<usize> {
        match self.int("Limit")? {
            None => Ok(MAX_PAGE),
            Some(n) if (1..=MAX_PAGE as i64).contains(&n) => Ok(n as usize),
            Some(n) => Err(AwsError::validation(format!(
                "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value between 1 and {MAX_PAGE}"
            ))),
        }
    }
}

/// Paging tokens are opaque to clients: the last name returned, base64-encoded.
fn next_token(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes())
}

fn read_token(p: &mut Params) -> Result<Option<String>> {
    p.str("NextToken")?.map(|t| decode_token(&t)).transpose()
}

/// The last name a paging token stands for.
pub(super) fn decode_token(token: &str) -> Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| AwsError::validation("The NextToken provided is not valid."))
}

/// One page of `items` (sorted by key) after `token`.
pub(super) fn page<T>(
    items: Vec<(String, T)>,
    token: Option<&str>,
    limit: usize,
) -> (Vec<T>, Option<String>) {
    let mut rest: Vec<(String, T)> = items
        .into_iter()
        .filter(|(k, _)| token.is_none_or(|t| k.as_str() > t))
        .collect();
    let more = rest.len() > limit;
    rest.truncate(limit);
    let token = if more {
        rest.last().map(|(k, _)| next_token(k))
    } else {
        None
    };
    (rest.into_iter().map(|(_, v)| v).collect(), token)
}

fn with_token(mut body: Value, token: Option<String>) -> Value {
    if let Some(t) = token {
        body["NextToken"] = Value::String(t);
    }
    body
}

// ---- PutEvents ----

async fn put_events(ctx: &Ctx<'_>, p: &mut Params) -> Result<Value> {
    let entries = p.list("Entries")?.ok_or_else(|| {
        AwsError::validation(
            "1 validation error detected: Value null at 'entries' failed to satisfy constraint: Member must not be null",
        )
    })?;
    if entries.is_empty() || entries.len() > MAX_PUT_EVENTS_ENTRIES {
        return Err(AwsError::validation(format!(
            "1 validation error detected: Value at 'entries' failed to satisfy constraint: Member must have length between 1 and {MAX_PUT_EVENTS_ENTRIES} (got {} entries)",
            entries.len()
        )));
    }
    // EventBridge bounds the request as a whole by the entry limit: ten
    // entries just under it each are refused together, before any is published.
    let limit = ctx.node.event_limits.max_entry_bytes;
    let mut total = 0usize;
    let events: Vec<std::result::Result<Event, EventError>> = entries
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let raw = raw_entry_size(&v);
            let event = entry_event(ctx, i, v);
            // An entry that did not become an event still counts, at its raw size:
            // an oversized one fails the request, as it does in EventBridge.
            total += event.as_ref().map_or(raw, entry_size);
            event
        })
        .collect();
    if total > limit {
        return Err(AwsError::validation(format!(
            "Total size of the entries in the request is over the limit: {total} bytes; the limit is {limit} bytes (limits.max_entry_bytes, which bounds the entries of one PutEvents request together); send fewer or smaller entries per request"
        )));
    }
    let outcomes = publish_entries(ctx.node, Surface::Aws, events).await;
    if outcomes.iter().all(EntryOutcome::is_throttled) {
        // A whole-request ThrottlingException is what botocore retries with backoff.
        return Err(AwsError::new(
            "ThrottlingException",
            match &outcomes[0] {
                EntryOutcome::Failed { message, .. } => message.clone(),
                EntryOutcome::Accepted { .. } => String::new(),
            },
        ));
    }
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o, EntryOutcome::Failed { .. }))
        .count();
    let entries: Vec<Value> = outcomes
        .into_iter()
        .map(|o| match o {
            EntryOutcome::Accepted { id } => json!({"EventId": id}),
            EntryOutcome::Failed { code, message } => {
                json!({"ErrorCode": code, "ErrorMessage": message})
            }
        })
        .collect();
    Ok(json!({"FailedEntryCount": failed, "Entries": entries}))
}

/// One PutEvents entry as an event; errors name the entry and its member.
fn entry_event(ctx: &Ctx<'_>, i: usize, v: Value) -> std::result::Result<Event, EventError> {
    let Value::Object(map) = v else {
        return Err(EventError::invalid(format!(
            "Entries[{i}] must be a structure, got {}",
            json_kind(&v)
        )));
    };
    let mut e = Params::new(map, format!("Entries[{i}]."));
    let invalid = |err: AwsError| EventError::invalid(err.message);
    let source = e.str("Source").map_err(invalid)?;
    let detail_type = e.str("DetailType").map_err(invalid)?;
    let resources = e
        .str_list("Resources")
        .map_err(invalid)?
        .unwrap_or_default();
    let bus = e.str("EventBusName").map_err(invalid)?;
    let time = match e.take("Time") {
        None => None,
        Some(t) => Some(entry_time(&t).ok_or_else(|| {
            EventError::invalid(format!(
                "Entries[{i}].Time must be epoch seconds or an RFC 3339 timestamp, got {t}"
            ))
        })?),
    };
    let detail = match e.take("Detail") {
        None => None,
        Some(Value::String(text)) => Some(
            parse_json_bytes(text.as_bytes(), ctx.node.config.limits.max_depth).map_err(|err| {
                EventError {
                    code: "MalformedDetail",
                    message: format!("Entries[{i}].Detail is not valid JSON: {}", err.message),
                }
            })?,
        ),
        Some(other) => {
            return Err(EventError::invalid(format!(
                "Entries[{i}].Detail must be a string holding a JSON object, got {}",
                json_kind(&other)
            )));
        }
    };
    for (field, missing) in [
        ("Source", source.is_none()),
        ("DetailType", detail_type.is_none()),
        ("Detail", detail.is_none()),
    ] {
        if missing {
            return Err(EventError::invalid(format!(
                "Entries[{i}].{field} is required"
            )));
        }
    }
    if let Some(d) = &detail
        && !d.is_object()
    {
        return Err(EventError {
            code: "MalformedDetail",
            message: format!(
                "Entries[{i}].Detail must be a JSON object, got {}",
                json_kind(d)
            ),
        });
    }
    // TraceHeader has no meaning here; anything else is a typo worth naming.
    e.map.remove("TraceHeader");
    if let Some(k) = e.map.keys().next() {
        return Err(EventError::invalid(format!(
            "Entries[{i}] has an unknown member {k:?}; expected Source, DetailType, Detail, Resources, Time, EventBusName or TraceHeader"
        )));
    }
    EventInput {
        source,
        detail_type,
        detail,
        time,
        resources,
        bus,
        region: Some(ctx.region.clone()),
        ..Default::default()
    }
    .into_client_event(&ctx.node.event_limits)
    .map_err(|err| EventError {
        // EventBridge's own code for a source the caller may not publish.
        code: match err.code {
            "ReservedSource" => "NotAuthorizedForSourceException",
            code => code,
        },
        message: format!("Entries[{i}]: {}", member_named(err.message)),
    })
}

/// An envelope error as the PutEvents caller knows the field: by its member
/// name (`DetailType`, not `detail-type`).
fn member_named(message: String) -> String {
    const MEMBERS: [(&str, &str); 4] = [
        ("detail-type ", "DetailType "),
        ("source ", "Source "),
        ("resources", "Resources"),
        ("time ", "Time "),
    ];
    for (field, member) in MEMBERS {
        if let Some(rest) = message.strip_prefix(field) {
            return format!("{member}{rest}");
        }
    }
    message
}

/// The size of a PutEvents entry as it arrived, for one that could not be
/// read as an event: the UTF-8 bytes of every string and number in it (the
/// `Detail` text as sent), plus the 14 bytes EventBridge charges for `Time`.
fn raw_entry_size(entry: &Value) -> usize {
    let mut size = 0;
    let mut stack = vec![entry];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => size += s.len(),
            Value::Number(n) => size += n.to_string().len(),
            Value::Array(items) => stack.extend(items),
            Value::Object(members) => stack.extend(members.values()),
            Value::Bool(_) | Value::Null => {}
        }
    }
    if entry.get("Time").is_some() {
        size += 14;
    }
    size
}

/// `Time` as botocore sends it (epoch seconds, a number) or as a string
/// (epoch seconds or RFC 3339), as RFC 3339 text.
fn entry_time(t: &Value) -> Option<String> {
    let epoch = match t {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(f) => f,
            Err(_) => return Some(s.clone()),
        },
        _ => return None,
    };
    if !epoch.is_finite() {
        return None;
    }
    let t = time::OffsetDateTime::from_unix_timestamp(epoch.floor() as i64).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

// ---- Rules ----

fn state_text(s: RuleState) -> &'static str {
    match s {
        RuleState::Enabled => "ENABLED",
        RuleState::Disabled => "DISABLED",
    }
}

fn rule_json(ctx: &Ctx<'_>, r: &Rule) -> Value {
    let mut v = json!({
        "Name": r.name,
        "Arn": ctx.rule_arn(&r.bus, &r.name),
        "State": state_text(r.state),
        "EventBusName": r.bus,
    });
    match &r.schedule {
        Some(s) => v["ScheduleExpression"] = Value::String(s.clone()),
        None => v["EventPattern"] = Value::String(r.pattern.clone()),
    }
    if let Some(d) = &r.description {
        v["Description"] = Value::String(d.clone());
    }
    match r.origin {
        RuleOrigin::Config => v["ManagedBy"] = Value::String("busbar config file".into()),
        RuleOrigin::Schedule => v["ManagedBy"] = Value::String("scheduler.amazonaws.com".into()),
        RuleOrigin::Api => {}
    }
    v
}

fn require_bus(ctx: &Ctx<'_>, bus: &str) -> Result<()> {
    if ctx.node.rules.has_bus(bus) {
        Ok(())
    } else {
        Err(AwsError::not_found(format!(
            "Event bus {bus} does not exist."
        )))
    }
}

fn find_rule(ctx: &Ctx<'_>, bus: &str, name: &str) -> Result<Rule> {
    require_bus(ctx, bus)?;
    ctx.node.rules.get(bus, name).ok_or_else(|| {
        AwsError::not_found(format!("Rule {name} does not exist on EventBus {bus}."))
    })
}

async fn put_rule(ctx: &Ctx<'_>, p: &mut Params) -> Result<Value> {
    let name = p.req_str("Name")?;
    let bus = p.bus("EventBusName")?;
    let schedule = p.str("ScheduleExpression")?.filter(|s| !s.is_empty());
    let pattern = match (p.str("EventPattern")?, &schedule) {
        (Some(_), Some(_)) => {
            return Err(AwsError::validation(
                "Parameter(s) EventPattern and ScheduleExpression cannot be used together; a rule has a pattern or a schedule.",
            ));
        }
        (None, None) => {
            return Err(AwsError::validation(
                "Parameter(s) EventPattern or ScheduleExpression must be specified.",
            ));
        }
        (pattern, _) => pattern.unwrap_or_default(),
    };
    let state = match p.str("State")?.as_deref() {
        None | Some("ENABLED") | Some("ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS") => {
            RuleState::Enabled
        }
        Some("DISABLED") => RuleState::Disabled,
        Some(other) => {
            return Err(AwsError::validation(format!(
                "1 validation error detected: Value '{other}' at 'state' failed to satisfy constraint: Member must satisfy enum value set: [ENABLED, DISABLED]"
            )));
        }
    };
    let description = p.str("Description")?;
    require_bus(ctx, &bus)?;
    let rule = Rule {
        name,
        bus,
        pattern,
        region: schedule.as_ref().map(|_| ctx.region.clone()),
        schedule,
        state,
        description,
        targets: Vec::new(),
        origin: RuleOrigin::Api,
    };
    let stored = ctx.node.admin.put_rule(rule, true).await?;
    Ok(json!({"RuleArn": ctx.rule_arn(&stored.bus, &stored.name)}))
}

fn describe_rule(ctx: &Ctx<'_>, p: &mut Params) -> Result<Value> {
    let name = p.req_str("Name")?;
    let bus = p.bus("EventBusName")?;
    let rule = find_rule(ctx, &bus, &name)?;
    let mut v = rule_json(ctx, &rule);
    v["CreatedBy"] = Value::String(DEFAULT_ACCOUNT.into());
    Ok(v)
}

fn list_rules(ctx: &Ctx<'_>, p: &mut Params) -> Result<Value> {
    let prefix = p.str("NamePrefix")?.unwrap_or_default();
    let bus = p.bus("EventBusName")?;
    let limit = p.limit()?;
    let token = read_token(p)?;
    require_bus(ctx, &bus)?;
    let snapshot = ctx.node.rules.snapshot();
    let rules: Vec<(String, Value)> = snapshot
        .rules
        .values()
        .filter(|r| r.bus == bus && r.name.starts_with(&prefix))
        .map(|r| (r.name.clone(), rule_json(ctx, r)))
        .collect();
    let (rules, token) = page(rules, token.as_deref(), limit);
    Ok(with_token(json!({"Rules": rules}), token))
}

async fn delete_rule(ctx: &Ctx<'_>, p: &mut Params) -> Result<Value> {
    let name = p.req_str("Name")?;
    let bus = p.bus("EventBusName")?;
    require_bus(ctx, &bus)?;
    if ctx.node.rules.get(&bus, &name).is_none() {
        return Ok(json!({}));
    }
    ctx.node.admin.delete_rule(&bus, &name).await?;
    Ok(json!({}))
}

async fn set_state(ctx: &Ctx<'_>, p: &mut Params, state: RuleState) -> Result<Value> {
    let name = p.req_str("Name")?;
    let bus = p.bus("EventBusName")?;
    find_rule(ctx, &bus, &name)?;
    ctx.node.admin.set_rule_state(&bus, &name, state).await?;
    Ok(json!({}))
}

// ---- Targets ----

/// The plugin a target `Arn` names (see the module docs for the accepted forms).
pub fn plugin_of_arn(arn: &str) -> Option<String> {
    let name = if let Some(n) = arn.strip_prefix("busbar:plugin:") {
        n
    } else if arn.starts_with("arn:") {
        let (_, rest) = arn.split_once(":function:")?;
        // A qualifier (version or alias) follows the name after a colon.
        rest.split(':').next()?
    } else {
        arn
    };
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    valid.then(|| name.to_string())
}

/// One member of `Targets` as a busbar target.
fn parse_target(i: usize, v: Value) -> Result<Target> {
    let Value::Object(map) = v else {
        return Err(type_error(&format!("Targets[{i}]"), "a structure", &v));
    };
    let mut t = Params::new(map, format!("Targets[{i}]."));
    let id = t.req_str("Id")?;
    let arn = t.req_str("Arn")?;
    let plugin = plugin_of_arn(&arn).ok_or_else(|| {
        AwsError::validation(format!(
            "Targets[{i}].Arn {arn:?} does not name a plugin; use busbar:plugin:NAME, arn:aws:lambda:REGION:ACCOUNT:function:NAME or NAME"
        ))
    })?;
    let input = t.str("Input")?;
    if let Some(text) = &input
        && serde_json::from_str::<Value>(text).is_err()
    {
        return Err(AwsError::validation(format!(
            "Targets[{i}].Input must be valid JSON text"
        )));
    }
    let input_path = t.str("InputPath")?;
    let input_transformer = match t.object("InputTransformer")? {
        None => None,
        Some(mut x) => {
            let template = x.req_str("InputTemplate")?;
            let mut paths = BTreeMap::new();
            if let Some(m) = x.object("InputPathsMap")? {
                for (k, v) in m.map {
                    match v {
                        Value::String(s) => {
                            paths.insert(k, s);
                        }
                        other => {
                            return Err(type_error(
                                &format!("Targets[{i}].InputTransformer.InputPathsMap.{k}"),
                                "a string",
                                &other,
                            ));
                        }
                    }
                }
            }
            Some(InputTransformer {
                input_paths_map: paths,
                input_template: template,
            })
        }
    };
    let given = [
        input.is_some(),
        input_path.is_some(),
        input_transformer.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(AwsError::validation(format!(
            "Targets[{i}] may have only one of Input, InputPath and InputTransformer"
        )));
    }
    let mut retry = RetryPolicy::default();
    if let Some(mut r) = t.object("RetryPolicy")? {
        if let Some(n) = r.int("MaximumRetryAttempts")? {
            retry.max_retry_attempts = u32::try_from(n).map_err(|_| {
                AwsError::validation(format!(
                    "Targets[{i}].RetryPolicy.MaximumRetryAttempts must be between 0 and 185, got {n}"
                ))
            })?;
        }
        if let Some(n) = r.int("MaximumEventAgeInSeconds")? {
            retry.max_event_age_secs = u64::try_from(n).map_err(|_| {
                AwsError::validation(format!(
                    "Targets[{i}].RetryPolicy.MaximumEventAgeInSeconds must be between 60 and 86400, got {n}"
                ))
            })?;
        }
    }
    retry
        .validate()
        .map_err(|e| AwsError::validation(format!("Targets[{i}].RetryPolicy: {e}")))?;
    let dead_letter = t.object("DeadLetterConfig")?.is_some();
    Ok(Target {
        id,
        plugin,
        input,
        input_path,
        input_transformer,
        retry,
        dead_letter,
    })
}

fn failed_entry(id: &str, e: &AwsError) -> Value {
    json!({"TargetId": id, "ErrorCode": e.kind, "ErrorMessage": e.message})
}

fn target_id_of(v: &Value) -> String {
    v.get("Id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

async fn put_targets(ctx: &Ctx<'_>, p: &mut Params) -> Result<Value> {
    let name = p.req_str("Rule")?;
    let bus = p.bus("EventBusName")?;
    let targets = p
        .list("Targets")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            AwsError::validation(
                "1 validation error detected: Targets is required and must not be empty",
            )
        })?;
    let rule = find_rule(ctx, &bus, &name)?;
    let mut failed = Vec::new();
    let mut accepted: Vec<Target> = Vec::new();
    for (i, v) in targets.into_iter().enumerate() {
        let id = target_id_of(&v);
        let checked = parse_target(i, v).and_then(|t| {
            // Checks the target the way the rule set will, one target at a time,
            // so one bad target does not sink the others.
            let alone = Rule {
                targets: vec![t.clone()],
                ..rule.clone()
            };
            ctx.node
                .rules
                .validate(&alone)
                .map_err(|e| AwsError::validation(e.to_string()))?;
            if accepted.iter().any(|a| a.id == t.id) {
                return Err(AwsError::validation(format!(
                    "Targets[{i}].Id {:?} appears twice in this request",
                    t.id
                )));
            }
            Ok(t)
        });
        match checked {
            Ok(t) => accepted.push(t),
            Err(e) => failed.push(failed_entry(&id, &e)),
        }
    }
    let total = rule.targets.len()
        + accepted
            .iter()
            .filter(|t| !rule.targets.iter().any(|o| o.id == t.id))
            .count();
    if total > MAX_TARGETS_PER_RULE {
        return Err(AwsError::new(
            "LimitExceededException",
            format!(
                "The requested resource exceeds the maximum number allowed: rule {name} would have {total} targets; the limit is {MAX_TARGETS_PER_RULE}"
            ),
        ));
    }
    if !accepted.is_empty() {
        ctx.node.admin.put_targets(&bus, &name, accepted).await?;
    }
    Ok(json!({"FailedEntryCount": failed.len(), "FailedEntries": failed}))
}

async fn remove_targets(ctx: &Ctx<'_>, p: &mut Params) -> Result<Value> {
    let name = p.req_str("Rule")?;
    let bus = p.bus("EventBusName")?;
    let ids = p
        .str_list("Ids")?
        .filter(|i| !i.is_empty())
        .ok_or_else(|| {
            AwsError::validation(
                "1 validation error detected: Ids is required and must not be empty",
            )
        })?;
    let rule = find_rule(ctx, &bus, &name)?;
    let (present, missing): (Vec<String>, Vec<String>) = ids
        .into_iter()
        .partition(|id| rule.targets.iter().any(|t| &t.id == id));
    if !present.is_empty() {
        ctx.node.admin.remove_targets(&bus, &name, &present).await?;
    }
    let failed: Vec<Value> = missing
        .iter()
        .map(|id| {
            failed_entry(
                id,
                &AwsError::not_found(format!("Rule {name} has no target with Id {id}.")),
            )
        })
        .collect();
    Ok(json!({"FailedEntryCount": failed.len(), "FailedEntries": failed}))
}

fn target_json(t: &Target) -> Value {
    let mut v = json!({
        "Id": t.id,
        "Arn": format!("busbar:plugin:{}", t.plugin),
        "RetryPolicy": {
            "MaximumRetryAttempts": t.retry.max_retry_attempts,
            "MaximumEventAgeInSeconds": t.retry.max_event_age_secs,
        },
    });
    if let Some(i) = &t.input {
        v["Input"] = Value::String(i.clone());
    }
    if let Some(i) = &t.input_path {
        v["InputPath"] = Value::String(i.clone());
    }
    if let Some(x) = &t.input_transformer {
        v["InputTransformer"] = json!({
            "InputPathsMap": x.input_paths_map,
            "InputTemplate": x.input_template,
        });
    }
    if t.dead_letter {
        v["DeadLetterConfig"] = json!({"Arn": "busbar:dlq"});
    }
    v
}

fn list_targets(ctx: &Ctx<'_>, p: &mut Params) -> Result<Value> {
    let name = p.req_str("Rule")?;
    let bus = p.bus("EventBusName")?;
    let limit = p.limit()?;
    let token = read_token(p)?;
    let rule = find_rule(ctx, &bus, &name)?;
    let mut targets: Vec<(String, Value)> = rule
        .targets
        .iter()
        .map(|t| (t.id.clone(), target_json(t)))
        .collect();
    targets.sort_by(|a, b| a.0.cmp(&b.0));
    let (targets, token) = page(targets, token.as_deref(), limit);
    Ok(with_token(json!({"Targets": targets}), token))
}

fn test_event_pattern(ctx: &Ctx<'_>, p: &mut Params) -> Result<Value> {
    let pattern = p.req_str("EventPattern")?;
    let event = p.req_str("Event")?;
    let pattern = Pattern::parse_with(&pattern, ctx.node.rules.limits()).map_err(|e| {
        AwsError::new(
            "InvalidEventPatternException",
            format!("Event pattern is not valid. Reason: {e}"),
        )
    })?;
    let event =
        parse_json_bytes(event.as_bytes(), ctx.node.config.limits.max_depth).map_err(|e| {
            AwsError::validation(format!("Parameter Event is not valid: {}", e.message))
        })?;
    if !event.is_object() {
        return Err(AwsError::validation(format!(
            "Parameter Event is not valid: it must be a JSON object, got {}",
            json_kind(&event)
        )));
    }
    Ok(json!({"Result": pattern.matches(&event)}))
}

// ---- Buses ----

fn epoch_secs(rfc3339: &str) -> f64 {
    crate::event::parse_time(rfc3339)
        .map(|t| t.unix_timestamp() as f64)
        .unwrap_or(0.0)
}

fn bus_json(ctx: &Ctx<'_>, b: &BusInfo) -> Value {
    let created = epoch_secs(&b.created);
    let mut v = json!({
        "Name": b.name,
        "Arn": ctx.bus_arn(&b.name),
        "CreationTime": created,
        "LastModifiedTime": created,
    });
    if let Some(d) = &b.description {
        v["Description"] = Value::String(d.clone());
    }
    v
}

async fn create_event_bus(ctx: &Ctx<'_>, p: &mut Params) -> Result<Value> {
    let name = p.req_str("Name")?;
    if p.str("EventSourceName")?.is_some() {
        return Err(AwsError::validation(
            "EventSourceName is not supported: busbar has no partner event sources",
        ));
    }
    let description = p.str("Description")?;
    let name = validate_bus_name(&name).map_err(|e| AwsError::validation(e.message))?;
    if ctx.node.rules.has_bus(&name) {
        return Err(AwsError::new(
            "ResourceAlreadyExistsException",
            format!("Event bus {name} already exists."),
        ));
    }
    let info = ctx.node.admin.create_bus(&name, description).await?;
    Ok(json!({"EventBusArn": ctx.bus_arn(&info.name)}))
}

async fn delete_event_bus(ctx: &Ctx<'_>, p: &mut Params) -> Result<Value> {
    let name = p.req_str("Name")?;
    let name = validate_bus_name(&name).map_err(|e| AwsError::validation(e.message))?;
    if name != DEFAULT_BUS && !ctx.node.rules.has_bus(&name) {
        return Ok(json!({}));
    }
    ctx.node.admin.delete_bus(&name).await?;
    Ok(json!({}))
}

fn list_event_buses(ctx: &Ctx<'_>, p: &mut Params) -> Result<Value> {
    let prefix = p.str("NamePrefix")?.unwrap_or_default();
    let limit = p.limit()?;
    let token = read_token(p)?;
    let snapshot = ctx.node.rules.snapshot();
    let buses: Vec<(String, Value)> = snapshot
        .buses
        .values()
        .filter(|b| b.name.starts_with(&prefix))
        .map(|b| (b.name.clone(), bus_json(ctx, b)))
        .collect();
    let (buses, token) = page(buses, token.as_deref(), limit);
    Ok(with_token(json!({"EventBuses": buses}), token))
}

fn describe_event_bus(ctx: &Ctx<'_>, p: &mut Params) -> Result<Value> {
    let name = p.bus("Name")?;
    let snapshot = ctx.node.rules.snapshot();
    snapshot
        .buses
        .get(&name)
        .map(|b| bus_json(ctx, b))
        .ok_or_else(|| AwsError::not_found(format!("Event bus {name} does not exist.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_arns_name_plugins() {
        assert_eq!(
            plugin_of_arn("busbar:plugin:payment-check").as_deref(),
            Some("payment-check")
        );
        assert_eq!(
            plugin_of_arn("arn:aws:lambda:us-east-1:123456789012:function:rewards").as_deref(),
            Some("rewards")
        );
        assert_eq!(
            plugin_of_arn("arn:aws:lambda:us-east-1:123456789012:function:rewards:PROD").as_deref(),
            Some("rewards")
        );
        assert_eq!(
            plugin_of_arn("notification").as_deref(),
            Some("notification")
        );
        assert_eq!(
            plugin_of_arn("arn:aws:sqs:us-east-1:123456789012:queue"),
            None
        );
        assert_eq!(plugin_of_arn("a/b"), None);
    }

    #[test]
    fn times_from_botocore_and_strings() {
        assert_eq!(
            entry_time(&json!(0)).as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        assert_eq!(
            entry_time(&json!(1700000000.5)).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(
            entry_time(&json!("1700000000")).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(
            entry_time(&json!("2024-01-01T00:00:00Z")).as_deref(),
            Some("2024-01-01T00:00:00Z")
        );
        assert_eq!(entry_time(&json!(true)), None);
    }

    #[test]
    fn paging_resumes_after_the_token() {
        let items: Vec<(String, u32)> = (0..5).map(|i| (format!("r{i}"), i)).collect();
        let (first, token) = page(items.clone(), None, 2);
        assert_eq!(first, vec![0, 1]);
        let token = token.unwrap();
        let last = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .unwrap(),
        )
        .unwrap();
        let (second, token) = page(items.clone(), Some(&last), 2);
        assert_eq!(second, vec![2, 3]);
        assert!(token.is_some());
        let (all, token) = page(items, None, 100);
        assert_eq!(all.len(), 5);
        assert!(token.is_none());
    }
}
