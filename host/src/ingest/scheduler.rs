//! The Amazon EventBridge Scheduler API (restJson1), so `aws scheduler ...
//! --endpoint-url` and boto3's `scheduler` client work against busbar:
//!
//! | Route | Operation |
//! |---|---|
//! | `POST`, `GET`, `PUT`, `DELETE /schedules/{Name}` | CreateSchedule, GetSchedule, UpdateSchedule, DeleteSchedule (`?groupName=`) |
//! | `GET /schedules` | ListSchedules (`ScheduleGroup`, `NamePrefix`, `State`, `MaxResults`, `NextToken`) |
//! | `POST`, `GET`, `DELETE /schedule-groups/{Name}` | CreateScheduleGroup, GetScheduleGroup, DeleteScheduleGroup |
//! | `GET /schedule-groups` | ListScheduleGroups (`NamePrefix`, `MaxResults`, `NextToken`) |
//!
//! Every operation needs the admin token. A target `Arn` of an event bus
//! (`arn:aws:events:REGION:ACCOUNT:event-bus/NAME`) puts an event on that bus
//! (EventBridgeParameters give its Source and DetailType, `Input` its detail);
//! any other `Arn` names a plugin as rule targets do (`busbar:plugin:NAME`, a
//! Lambda function ARN, or `NAME`), which receives a `Scheduled Event` from
//! `aws.scheduler` whose detail is the `Input`. Errors are AWS errors: the
//! exception in `x-amzn-errortype` and the body, 400, 404 or 409.

use super::aws::{decode_token, page, plugin_of_arn};
use super::errors::AwsError;
use super::limits::read_body;
use super::{NodeState, authorize};
use crate::event::{json_kind, parse_json_bytes};
use crate::node::Node;
use crate::rules::RetryPolicy;
use crate::schedule::api::{
    DEFAULT_GROUP, GroupDef, ScheduleDef, ScheduleTarget, TargetKind, check_name, group_arn,
};
use crate::schedule::expr::{Dialect, Expression, zone};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

type Result<T, E = AwsError> = std::result::Result<T, E>;

pub fn router() -> Router<Arc<Node>> {
    Router::new()
        .route("/schedules", get(list_schedules))
        .route(
            "/schedules/{name}",
            get(get_schedule)
                .post(create_schedule)
                .put(update_schedule)
                .delete(delete_schedule),
        )
        .route("/schedule-groups", get(list_groups))
        .route(
            "/schedule-groups/{name}",
            get(get_group).post(create_group).delete(delete_group),
        )
}

type Params = Query<HashMap<String, String>>;

fn answer(r: Result<Value>) -> Response {
    match r {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn status(mut e: AwsError, status: StatusCode) -> AwsError {
    e.status = status;
    e
}

fn not_found(message: String) -> AwsError {
    status(AwsError::not_found(message), StatusCode::NOT_FOUND)
}

fn conflict(message: String) -> AwsError {
    status(
        AwsError::new("ConflictException", message),
        StatusCode::CONFLICT,
    )
}

fn store_failed(e: impl std::fmt::Display) -> AwsError {
    AwsError::internal(format!("the schedule store failed: {e}"))
}

/// A query parameter by its name in any letter case (`groupName`, `GroupName`).
fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn admin(node: &Node, headers: &HeaderMap) -> Result<()> {
    authorize(node, headers, super::auth::Scope::Admin)
        .map_err(|e| AwsError::denied(e.status, e.message))
}

async fn body_map(node: &Node, headers: &HeaderMap, body: Body) -> Result<Map<String, Value>> {
    let bytes = read_body(headers, body, node.config.limits.max_body_bytes)
        .await
        .map_err(|e| AwsError::validation(e.message()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match parse_json_bytes(&bytes, node.config.limits.max_depth)
        .map_err(|e| AwsError::validation(e.message))?
    {
        Value::Object(m) => Ok(m),
        other => Err(AwsError::validation(format!(
            "the request body must be a JSON object, got {}",
            json_kind(&other)
        ))),
    }
}

fn region(headers: &HeaderMap) -> String {
    super::auth::sigv4_region(headers).unwrap_or_else(|| crate::event::DEFAULT_REGION.into())
}

/// Runs a blocking store call (the kv seam blocks) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AwsError::internal(e.to_string()))?
}

/// Applies the stored definitions on this node now, rather than at the next
/// look at the revision counter.
async fn refresh(node: &Arc<Node>) -> Result<()> {
    node.refresh_schedules().await.map_err(store_failed)
}

fn group_exists(node: &Node, group: &str) -> Result<()> {
    if group == DEFAULT_GROUP {
        return Ok(());
    }
    match node.schedules.store.group(group).map_err(store_failed)? {
        Some(_) => Ok(()),
        None => Err(not_found(format!("Schedule group {group} does not exist."))),
    }
}

// ---- Reading a schedule from a request ----

fn str_of(m: &mut Map<String, Value>, at: &str, key: &str) -> Result<Option<String>> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(AwsError::validation(format!(
            "{at}{key} must be a string, got {}",
            json_kind(&other)
        ))),
    }
}

fn object_of(
    m: &mut Map<String, Value>,
    at: &str,
    key: &str,
) -> Result<Option<Map<String, Value>>> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(AwsError::validation(format!(
            "{at}{key} must be a structure, got {}",
            json_kind(&other)
        ))),
    }
}

fn int_of(m: &mut Map<String, Value>, at: &str, key: &str) -> Result<Option<i64>> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
        Some(other) => Err(AwsError::validation(format!(
            "{at}{key} must be an integer, got {other}"
        ))),
    }
}

/// A timestamp as botocore sends it (epoch seconds) or as RFC 3339 text.
fn date_of(m: &mut Map<String, Value>, key: &str) -> Result<Option<i64>> {
    let bad = |v: &Value| {
        AwsError::validation(format!(
            "{key} must be epoch seconds or an RFC 3339 timestamp, got {v}"
        ))
    };
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let secs = n
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| bad(&Value::Number(n.clone())))?;
            Ok(Some((secs * 1000.0).round() as i64))
        }
        Some(Value::String(s)) => match s.parse::<f64>() {
            Ok(secs) => Ok(Some((secs * 1000.0).round() as i64)),
            Err(_) => crate::event::parse_time(&s)
                .map(|t| Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
                .map_err(|_| bad(&Value::String(s.clone()))),
        },
        Some(other) => Err(bad(&other)),
    }
}

fn required<T>(v: Option<T>, member: &str) -> Result<T> {
    v.ok_or_else(|| {
        AwsError::validation(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

/// The bus an EventBridge target ARN names, if it names one.
fn bus_of_arn(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    let (_, bus) = rest.split_once(":event-bus/")?;
    rest.contains(":events:").then_some(bus)
}

fn parse_target(node: &Node, mut t: Map<String, Value>) -> Result<ScheduleTarget> {
    let at = "Target.";
    let arn = required(str_of(&mut t, at, "Arn")?, "target.arn")?;
    let role_arn = str_of(&mut t, at, "RoleArn")?;
    let input = str_of(&mut t, at, "Input")?;
    let input_value = match &input {
        None => None,
        Some(text) => Some(
            parse_json_bytes(text.as_bytes(), node.config.limits.max_depth).map_err(|e| {
                AwsError::validation(format!(
                    "Target.Input must be valid JSON text: {}",
                    e.message
                ))
            })?,
        ),
    };
    let params = object_of(&mut t, at, "EventBridgeParameters")?;
    let kind = match bus_of_arn(&arn) {
        Some(bus) => {
            let mut p = params.ok_or_else(|| {
                AwsError::validation(
                    "Target.EventBridgeParameters (DetailType and Source) is required for an event bus target",
                )
            })?;
            let at = "Target.EventBridgeParameters.";
            let detail_type = required(
                str_of(&mut p, at, "DetailType")?,
                "target.eventBridgeParameters.detailType",
            )?;
            let source = required(
                str_of(&mut p, at, "Source")?,
                "target.eventBridgeParameters.source",
            )?;
            if crate::event::is_reserved_source(&source) {
                return Err(AwsError::validation(format!(
                    "Target.EventBridgeParameters.Source {source:?} is reserved for busbar's own events"
                )));
            }
            if !node.rules.has_bus(bus) {
                return Err(not_found(format!("Event bus {bus} does not exist.")));
            }
            if let Some(v) = &input_value
                && !v.is_object()
            {
                return Err(AwsError::validation(format!(
                    "Target.Input of an event bus target is the event's detail and must be a JSON object, got {}",
                    json_kind(v)
                )));
            }
            TargetKind::Bus {
                bus: bus.to_string(),
                source,
                detail_type,
            }
        }
        None => {
            if params.is_some() {
                return Err(AwsError::validation(
                    "Target.EventBridgeParameters applies only to an event bus target (arn:aws:events:REGION:ACCOUNT:event-bus/NAME)",
                ));
            }
            let plugin = plugin_of_arn(&arn).ok_or_else(|| {
                AwsError::validation(format!(
                    "Target.Arn {arn:?} names neither an event bus nor a plugin; use arn:aws:events:REGION:ACCOUNT:event-bus/NAME, busbar:plugin:NAME, a Lambda function ARN or NAME"
                ))
            })?;
            TargetKind::Plugin { plugin }
        }
    };
    let mut retry = RetryPolicy::default();
    if let Some(mut r) = object_of(&mut t, at, "RetryPolicy")? {
        let at = "Target.RetryPolicy.";
        if let Some(n) = int_of(&mut r, at, "MaximumRetryAttempts")? {
            retry.max_retry_attempts = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(n) = int_of(&mut r, at, "MaximumEventAgeInSeconds")? {
            retry.max_event_age_secs = u64::try_from(n).unwrap_or(0);
        }
        retry
            .validate()
            .map_err(|e| AwsError::validation(format!("Target.RetryPolicy: {e}")))?;
    }
    let dead_letter_arn = object_of(&mut t, at, "DeadLetterConfig")?
        .map(|mut d| str_of(&mut d, "Target.DeadLetterConfig.", "Arn"))
        .transpose()?
        .map(|a| a.unwrap_or_else(|| "busbar:dlq".into()));
    Ok(ScheduleTarget {
        arn,
        role_arn,
        input,
        kind,
        retry,
        dead_letter_arn,
    })
}

/// A CreateSchedule or UpdateSchedule request as a definition.
fn parse_schedule(
    node: &Node,
    name: &str,
    region: String,
    mut m: Map<String, Value>,
    created_ms: Option<i64>,
) -> Result<ScheduleDef> {
    check_name("name", name).map_err(AwsError::validation)?;
    let group = str_of(&mut m, "", "GroupName")?.unwrap_or_else(|| DEFAULT_GROUP.into());
    check_name("groupName", &group).map_err(AwsError::validation)?;
    let expression = required(
        str_of(&mut m, "", "ScheduleExpression")?,
        "scheduleExpression",
    )?;
    Expression::parse(&expression, Dialect::Scheduler)
        .map_err(|e| AwsError::validation(e.message))?;
    let timezone = str_of(&mut m, "", "ScheduleExpressionTimezone")?;
    zone(timezone.as_deref()).map_err(AwsError::validation)?;
    let start_ms = date_of(&mut m, "StartDate")?;
    let end_ms = date_of(&mut m, "EndDate")?;
    if let (Some(s), Some(e)) = (start_ms, end_ms)
        && e <= s
    {
        return Err(AwsError::validation(
            "The EndDate you specify must come after the StartDate.",
        ));
    }
    let mut window = required(
        object_of(&mut m, "", "FlexibleTimeWindow")?,
        "flexibleTimeWindow",
    )?;
    let mode = required(
        str_of(&mut window, "FlexibleTimeWindow.", "Mode")?,
        "flexibleTimeWindow.mode",
    )?;
    let minutes = int_of(&mut window, "FlexibleTimeWindow.", "MaximumWindowInMinutes")?;
    let window_minutes = match (mode.as_str(), minutes) {
        ("OFF", None) => None,
        ("OFF", Some(_)) => {
            return Err(AwsError::validation(
                "FlexibleTimeWindow.MaximumWindowInMinutes is only for Mode FLEXIBLE",
            ));
        }
        ("FLEXIBLE", Some(n)) if (1..=1440).contains(&n) => Some(n as u32),
        ("FLEXIBLE", _) => {
            return Err(AwsError::validation(
                "FlexibleTimeWindow.MaximumWindowInMinutes must be between 1 and 1440 when Mode is FLEXIBLE",
            ));
        }
        (other, _) => {
            return Err(AwsError::validation(format!(
                "1 validation error detected: Value '{other}' at 'flexibleTimeWindow.mode' failed to satisfy constraint: Member must satisfy enum value set: [OFF, FLEXIBLE]"
            )));
        }
    };
    let enabled = match str_of(&mut m, "", "State")?.as_deref() {
        None | Some("ENABLED") => true,
        Some("DISABLED") => false,
        Some(other) => {
            return Err(AwsError::validation(format!(
                "1 validation error detected: Value '{other}' at 'state' failed to satisfy constraint: Member must satisfy enum value set: [ENABLED, DISABLED]"
            )));
        }
    };
    let delete_after_completion = match str_of(&mut m, "", "ActionAfterCompletion")?.as_deref() {
        None | Some("NONE") => false,
        Some("DELETE") => true,
        Some(other) => {
            return Err(AwsError::validation(format!(
                "1 validation error detected: Value '{other}' at 'actionAfterCompletion' failed to satisfy constraint: Member must satisfy enum value set: [NONE, DELETE]"
            )));
        }
    };
    let description = str_of(&mut m, "", "Description")?;
    let target = parse_target(node, required(object_of(&mut m, "", "Target")?, "target")?)?;
    let now = node.clock.now_ms();
    Ok(ScheduleDef {
        name: name.to_string(),
        group,
        expression,
        timezone,
        start_ms,
        end_ms,
        window_minutes,
        enabled,
        description,
        delete_after_completion,
        target,
        created_ms: created_ms.unwrap_or(now),
        modified_ms: now,
        region,
    })
}

// ---- Writing a schedule in a response ----

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn schedule_json(d: &ScheduleDef) -> Value {
    let mut target = json!({
        "Arn": d.target.arn,
        "RetryPolicy": {
            "MaximumRetryAttempts": d.target.retry.max_retry_attempts,
            "MaximumEventAgeInSeconds": d.target.retry.max_event_age_secs,
        },
    });
    if let Some(r) = &d.target.role_arn {
        target["RoleArn"] = json!(r);
    }
    if let Some(i) = &d.target.input {
        target["Input"] = json!(i);
    }
    if let TargetKind::Bus {
        source,
        detail_type,
        ..
    } = &d.target.kind
    {
        target["EventBridgeParameters"] = json!({"Source": source, "DetailType": detail_type});
    }
    if let Some(a) = &d.target.dead_letter_arn {
        target["DeadLetterConfig"] = json!({"Arn": a});
    }
    let mut v = json!({
        "Arn": d.arn(),
        "Name": d.name,
        "GroupName": d.group,
        "ScheduleExpression": d.expression,
        "ScheduleExpressionTimezone": d.timezone.as_deref().unwrap_or("UTC"),
        "State": if d.enabled { "ENABLED" } else { "DISABLED" },
        "ActionAfterCompletion": if d.delete_after_completion { "DELETE" } else { "NONE" },
        "FlexibleTimeWindow": match d.window_minutes {
            None => json!({"Mode": "OFF"}),
            Some(n) => json!({"Mode": "FLEXIBLE", "MaximumWindowInMinutes": n}),
        },
        "CreationDate": secs(d.created_ms),
        "LastModificationDate": secs(d.modified_ms),
        "Target": target,
    });
    if let Some(s) = d.start_ms {
        v["StartDate"] = json!(secs(s));
    }
    if let Some(e) = d.end_ms {
        v["EndDate"] = json!(secs(e));
    }
    if let Some(desc) = &d.description {
        v["Description"] = json!(desc);
    }
    v
}

// ---- Schedules ----

async fn create_schedule(
    State(node): NodeState,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(put_schedule(node, name, headers, body, false).await)
}

async fn update_schedule(
    State(node): NodeState,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(put_schedule(node, name, headers, body, true).await)
}

async fn put_schedule(
    node: Arc<Node>,
    name: String,
    headers: HeaderMap,
    body: Body,
    update: bool,
) -> Result<Value> {
    admin(&node, &headers)?;
    let mut m = body_map(&node, &headers, body).await?;
    m.remove("ClientToken");
    m.remove("KmsKeyArn");
    let group = match m.get("GroupName") {
        Some(Value::String(g)) if !g.is_empty() => g.clone(),
        _ => DEFAULT_GROUP.to_string(),
    };
    let n = node.clone();
    let (g, nm) = (group.clone(), name.clone());
    let existing = blocking(move || {
        group_exists(&n, &g)?;
        n.schedules.store.schedule(&g, &nm).map_err(store_failed)
    })
    .await?;
    let created = match (&existing, update) {
        (Some(_), false) => return Err(conflict(format!("Schedule {name} already exists."))),
        (None, true) => return Err(not_found(format!("Schedule {name} does not exist."))),
        (e, _) => e.as_ref().map(|d| d.created_ms),
    };
    let def = parse_schedule(&node, &name, region(&headers), m, created)?;
    let arn = def.arn();
    let n = node.clone();
    blocking(move || n.schedules.store.put_schedule(&def).map_err(store_failed)).await?;
    refresh(&node).await?;
    Ok(json!({"ScheduleArn": arn}))
}

async fn get_schedule(
    State(node): NodeState,
    Path(name): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            admin(&node, &headers)?;
            let group = param(&q, "groupName").unwrap_or(DEFAULT_GROUP).to_string();
            let n = node.clone();
            let def = blocking(move || {
                n.schedules
                    .store
                    .schedule(&group, &name)
                    .map(|d| (d, name))
                    .map_err(store_failed)
            })
            .await?;
            match def {
                (Some(d), _) => Ok(schedule_json(&d)),
                (None, name) => Err(not_found(format!("Schedule {name} does not exist."))),
            }
        }
        .await,
    )
}

async fn delete_schedule(
    State(node): NodeState,
    Path(name): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            admin(&node, &headers)?;
            let group = param(&q, "groupName").unwrap_or(DEFAULT_GROUP).to_string();
            let n = node.clone();
            let nm = name.clone();
            let existed = blocking(move || {
                n.schedules
                    .store
                    .delete_schedule(&group, &nm)
                    .map_err(store_failed)
            })
            .await?;
            if !existed {
                return Err(not_found(format!("Schedule {name} does not exist.")));
            }
            refresh(&node).await?;
            Ok(json!({}))
        }
        .await,
    )
}

fn max_results(q: &HashMap<String, String>) -> Result<usize> {
    match param(q, "MaxResults") {
        None => Ok(100),
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(AwsError::validation(format!(
                "1 validation error detected: Value '{t}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 100"
            ))),
        },
    }
}

async fn list_schedules(State(node): NodeState, Query(q): Params, headers: HeaderMap) -> Response {
    answer(
        async {
            admin(&node, &headers)?;
            let limit = max_results(&q)?;
            let token = param(&q, "NextToken").map(decode_token).transpose()?;
            let group = param(&q, "ScheduleGroup").or_else(|| param(&q, "GroupName"));
            let prefix = param(&q, "NamePrefix").unwrap_or_default();
            let state = param(&q, "State");
            if let Some(s) = state
                && s != "ENABLED"
                && s != "DISABLED"
            {
                return Err(AwsError::validation(format!(
                    "1 validation error detected: Value '{s}' at 'state' failed to satisfy constraint: Member must satisfy enum value set: [ENABLED, DISABLED]"
                )));
            }
            let items: Vec<(String, Value)> = node
                .schedules
                .all()
                .iter()
                .filter(|d| group.is_none_or(|g| d.group == g))
                .filter(|d| d.name.starts_with(prefix))
                .filter(|d| state.is_none_or(|s| (s == "ENABLED") == d.enabled))
                .map(|d| {
                    let v = json!({
                        "Arn": d.arn(), "Name": d.name, "GroupName": d.group,
                        "State": if d.enabled { "ENABLED" } else { "DISABLED" },
                        "CreationDate": secs(d.created_ms),
                        "LastModificationDate": secs(d.modified_ms),
                        "Target": {"Arn": d.target.arn},
                    });
                    (format!("{}/{}", d.group, d.name), v)
                })
                .collect();
            let (items, next) = page(items, token.as_deref(), limit);
            let mut v = json!({"Schedules": items});
            if let Some(t) = next {
                v["NextToken"] = json!(t);
            }
            Ok(v)
        }
        .await,
    )
}

// ---- Groups ----

fn group_json(g: &GroupDef) -> Value {
    json!({
        "Arn": group_arn(&g.region, &g.name),
        "Name": g.name,
        "State": "ACTIVE",
        "CreationDate": secs(g.created_ms),
        "LastModificationDate": secs(g.created_ms),
    })
}

fn default_group(region: String) -> GroupDef {
    GroupDef {
        name: DEFAULT_GROUP.into(),
        created_ms: 0,
        region,
    }
}

async fn create_group(
    State(node): NodeState,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            admin(&node, &headers)?;
            check_name("name", &name).map_err(AwsError::validation)?;
            let def = GroupDef {
                name: name.clone(),
                created_ms: node.clock.now_ms(),
                region: region(&headers),
            };
            let arn = group_arn(&def.region, &name);
            let n = node.clone();
            blocking(move || {
                if name == DEFAULT_GROUP
                    || n.schedules
                        .store
                        .group(&name)
                        .map_err(store_failed)?
                        .is_some()
                {
                    return Err(conflict(format!("Schedule group {name} already exists.")));
                }
                n.schedules.store.put_group(&def).map_err(store_failed)
            })
            .await?;
            Ok(json!({"ScheduleGroupArn": arn}))
        }
        .await,
    )
}

async fn get_group(
    State(node): NodeState,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            admin(&node, &headers)?;
            if name == DEFAULT_GROUP {
                return Ok(group_json(&default_group(region(&headers))));
            }
            let n = node.clone();
            let nm = name.clone();
            match blocking(move || n.schedules.store.group(&nm).map_err(store_failed)).await? {
                Some(g) => Ok(group_json(&g)),
                None => Err(not_found(format!("Schedule group {name} does not exist."))),
            }
        }
        .await,
    )
}

/// Deletes a group and, as AWS does, every schedule in it.
async fn delete_group(
    State(node): NodeState,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            admin(&node, &headers)?;
            if name == DEFAULT_GROUP {
                return Err(AwsError::validation(
                    "The default schedule group cannot be deleted.",
                ));
            }
            let n = node.clone();
            let nm = name.clone();
            blocking(move || {
                if n.schedules
                    .store
                    .group(&nm)
                    .map_err(store_failed)?
                    .is_none()
                {
                    return Err(not_found(format!("Schedule group {nm} does not exist.")));
                }
                for d in n.schedules.all().iter().filter(|d| d.group == nm) {
                    n.schedules
                        .store
                        .delete_schedule(&d.group, &d.name)
                        .map_err(store_failed)?;
                }
                n.schedules.store.delete_group(&nm).map_err(store_failed)
            })
            .await?;
            refresh(&node).await?;
            Ok(json!({}))
        }
        .await,
    )
}

async fn list_groups(State(node): NodeState, Query(q): Params, headers: HeaderMap) -> Response {
    answer(
        async {
            admin(&node, &headers)?;
            let limit = max_results(&q)?;
            let token = param(&q, "NextToken").map(decode_token).transpose()?;
            let prefix = param(&q, "NamePrefix").unwrap_or_default().to_string();
            let n = node.clone();
            let mut groups =
                blocking(move || n.schedules.store.groups().map_err(store_failed)).await?;
            groups.push(default_group(region(&headers)));
            groups.sort_by(|a, b| a.name.cmp(&b.name));
            let items: Vec<(String, Value)> = groups
                .iter()
                .filter(|g| g.name.starts_with(&prefix))
                .map(|g| (g.name.clone(), group_json(g)))
                .collect();
            let (items, next) = page(items, token.as_deref(), limit);
            let mut v = json!({"ScheduleGroups": items});
            if let Some(t) = next {
                v["NextToken"] = json!(t);
            }
            Ok(v)
        }
        .await,
    )
}
