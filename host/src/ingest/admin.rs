//! The admin JSON API under `/v1` (admin token). Errors are
//! `{"error": {"code", "message"}}` with 400, 401, 403, 404, 409 or 500.
//!
//! - `GET /v1/plugins`: the plugin runtime's status of every plugin.
//! - `GET /v1/rules[?bus=&prefix=]`, `GET|PUT|DELETE /v1/rules/{bus}/{name}`.
//!   `PUT` takes `{"pattern": <object or JSON text>, "state"?, "description"?, "targets"?}`, or `"schedule": "rate(5 minutes)"` instead of `pattern`;
//!   without `targets` the rule keeps the targets it has.
//! - `GET /v1/buses`, `GET|PUT|DELETE /v1/buses/{name}` (`PUT` body: `{"description"?}`).
//! - `GET /v1/targets`: every target's queue, worker pool and delivery statistics.
//! - `GET /v1/schedules[?prefix=&after=&limit=]`: every schedule the node runs, with
//!   its next and last fire, last outcome and missed fires, ordered by id.
//! - `GET /v1/dlq[?after=ID&limit=N]`, `GET|DELETE /v1/dlq/{id}`, `DELETE /v1/dlq`
//!   (purge all), `POST /v1/dlq/redrive` (`{"ids": [..]}`, or `{}` for all).
//! - `POST /v1/replays`, `GET /v1/replays`, `GET /v1/replays/{name}`.
//! - `GET /v1/archive?pattern=&since=&until=&bus=&limit=&cursor=`: archived events,
//!   oldest first; `since`/`until` (RFC 3339, inclusive) are on the time busbar
//!   received each event; `limit` defaults to 100, at most 10,000. Each answer reads
//!   a bounded part of the archive ([`crate::bus::ScanBudget`]); when it stops before
//!   the end it carries `"next"`, an opaque cursor: the same query with
//!   `cursor=<next>` goes on from there.
//! - `GET /v1/tail[?pattern=]`: Server-Sent Events (see [`super::tail`]).

use super::auth::Scope;
use super::errors::ApiError;
use super::limits::read_body;
use super::{NodeState, authorize};
use crate::bus::{ArchiveCursor, ArchiveFilter, ArchiveQuery};
use crate::event::parse_json_bytes;
use crate::node::Node;
use crate::pattern::Pattern;
use crate::publish::replay::ReplayRequest;
use crate::rules::{Rule, RuleOrigin, RuleState, Target};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;

/// Default and largest page of `/v1/archive` and `/v1/dlq`.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 10_000;

type Result<T, E = ApiError> = std::result::Result<T, E>;

pub fn router() -> Router<Arc<Node>> {
    Router::new()
        .route("/plugins", get(plugins))
        .route("/rules", get(list_rules))
        .route(
            "/rules/{bus}/{name}",
            get(get_rule).put(put_rule).delete(delete_rule),
        )
        .route("/buses", get(list_buses))
        .route(
            "/buses/{name}",
            get(get_bus).put(put_bus).delete(delete_bus),
        )
        .route("/targets", get(targets))
        .route("/schedules", get(list_schedules))
        .route("/dlq", get(list_dlq).delete(purge_dlq))
        .route("/dlq/redrive", post(redrive))
        .route("/dlq/{id}", get(get_dead_letter).delete(delete_dead_letter))
        .route("/replays", get(list_replays).post(start_replay))
        .route("/replays/{name}", get(get_replay))
        .route("/archive", get(archive))
        .route("/tail", get(tail))
}

/// Every `/v1` route needs the admin token when one is configured.
pub async fn require_admin(State(node): NodeState, req: Request, next: Next) -> Response {
    match authorize(&node, req.headers(), Scope::Admin) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request("InvalidArgument", e.body_text()))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T> {
    p.map(|Path(t)| t)
        .map_err(|e| ApiError::bad_request("InvalidArgument", e.body_text()))
}

/// Reads a JSON body (an empty body reads as `{}`), with the same size and
/// depth limits as ingest and serde's message naming the field on a mismatch.
async fn json_body<T: DeserializeOwned>(node: &Node, headers: &HeaderMap, body: Body) -> Result<T> {
    let limits = &node.config.limits;
    let bytes = read_body(headers, body, limits.max_body_bytes).await?;
    let value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_json_bytes(&bytes, limits.max_depth)?
    };
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("InvalidArgument", format!("request body: {e}")))
}

fn page_limit(limit: Option<usize>) -> Result<usize> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(ApiError::bad_request(
            "InvalidArgument",
            "limit must be at least 1",
        )),
        Some(n) if n > MAX_LIMIT => Err(ApiError::bad_request(
            "InvalidArgument",
            format!("limit {n} is over the maximum of {MAX_LIMIT}"),
        )),
        Some(n) => Ok(n),
    }
}

async fn plugins(State(node): NodeState) -> Json<Value> {
    Json(json!(node.runtime.status()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesQuery {
    bus: Option<String>,
    prefix: Option<String>,
}

async fn list_rules(
    State(node): NodeState,
    q: Result<Query<RulesQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let q = query(q)?;
    let snapshot = node.rules.snapshot();
    let rules: Vec<&Rule> = snapshot
        .rules
        .values()
        .filter(|r| q.bus.as_ref().is_none_or(|b| &r.bus == b))
        .filter(|r| {
            q.prefix
                .as_ref()
                .is_none_or(|p| r.name.starts_with(p.as_str()))
        })
        .collect();
    Ok(Json(json!({"rules": rules})))
}

fn rule_not_found(bus: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("Rule {name} does not exist on EventBus {bus}."))
}

async fn get_rule(
    State(node): NodeState,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Rule>> {
    let (bus, name) = path(p)?;
    node.rules
        .get(&bus, &name)
        .map(Json)
        .ok_or_else(|| rule_not_found(&bus, &name))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutRuleBody {
    #[serde(default)]
    pattern: Option<Value>,
    /// `rate(...)` or `cron(...)`: a scheduled rule instead of a pattern.
    #[serde(default)]
    schedule: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    targets: Option<Vec<Target>>,
}

/// `ENABLED`/`DISABLED` in any case.
pub fn parse_state(text: &str) -> Option<RuleState> {
    match text.to_ascii_uppercase().as_str() {
        "ENABLED" => Some(RuleState::Enabled),
        "DISABLED" => Some(RuleState::Disabled),
        _ => None,
    }
}

async fn put_rule(
    State(node): NodeState,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Rule>> {
    let (bus, name) = path(p)?;
    let body: PutRuleBody = json_body(&node, &headers, body).await?;
    let pattern = match body.pattern {
        None if body.schedule.is_some() => String::new(),
        None => {
            return Err(ApiError::bad_request(
                "InvalidArgument",
                "a rule needs a pattern or a schedule",
            ));
        }
        Some(Value::String(text)) => text,
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(other) => {
            return Err(ApiError::bad_request(
                "InvalidEventPattern",
                format!(
                    "pattern must be a JSON object or JSON text, got {}",
                    crate::event::json_kind(&other)
                ),
            ));
        }
    };
    let state = match body.state.as_deref() {
        None => RuleState::Enabled,
        Some(s) => parse_state(s).ok_or_else(|| {
            ApiError::bad_request(
                "InvalidArgument",
                format!("state {s:?} must be ENABLED or DISABLED"),
            )
        })?,
    };
    let keep_targets = body.targets.is_none();
    let rule = Rule {
        name,
        bus,
        pattern,
        schedule: body.schedule,
        region: None,
        state,
        description: body.description,
        targets: body.targets.unwrap_or_default(),
        origin: RuleOrigin::Api,
    };
    Ok(Json(node.admin.put_rule(rule, keep_targets).await?))
}

async fn delete_rule(
    State(node): NodeState,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode> {
    let (bus, name) = path(p)?;
    node.admin.delete_rule(&bus, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct SchedulesQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_schedules(
    State(node): NodeState,
    q: Result<Query<SchedulesQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let schedules = node
        .scheduler
        .list(&q.prefix, q.after.as_deref(), limit)
        .await;
    Ok(Json(json!({"schedules": schedules})))
}

async fn list_buses(State(node): NodeState) -> Json<Value> {
    let snapshot = node.rules.snapshot();
    let buses: Vec<_> = snapshot.buses.values().collect();
    Json(json!({"buses": buses}))
}

async fn get_bus(
    State(node): NodeState,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let name = path(p)?;
    let snapshot = node.rules.snapshot();
    snapshot
        .buses
        .get(&name)
        .map(|b| Json(json!(b)))
        .ok_or_else(|| ApiError::not_found(format!("Event bus {name} does not exist.")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBusBody {
    #[serde(default)]
    description: Option<String>,
}

async fn put_bus(
    State(node): NodeState,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>)> {
    let name = path(p)?;
    let body: PutBusBody = json_body(&node, &headers, body).await?;
    let info = node.admin.create_bus(&name, body.description).await?;
    Ok((StatusCode::CREATED, Json(json!(info))))
}

async fn delete_bus(
    State(node): NodeState,
    p: Result<Path<String>, PathRejection>,
) -> Result<StatusCode> {
    let name = path(p)?;
    node.admin.delete_bus(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn targets(State(node): NodeState) -> Json<Value> {
    Json(json!({"targets": node.dispatcher.targets()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DlqQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn list_dlq(
    State(node): NodeState,
    q: Result<Query<DlqQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let letters = node.bus.dead_letters(q.after.unwrap_or(0), limit).await?;
    Ok(Json(json!({"dead_letters": letters})))
}

fn dead_letter_id(p: Result<Path<String>, PathRejection>) -> Result<u64> {
    let id = path(p)?;
    id.parse().map_err(|_| {
        ApiError::bad_request(
            "InvalidArgument",
            format!("dead letter id {id:?} must be a number (the id field of a dead letter)"),
        )
    })
}

async fn get_dead_letter(
    State(node): NodeState,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let id = dead_letter_id(p)?;
    match node.bus.dead_letter(id).await? {
        Some(dl) => Ok(Json(json!(dl))),
        None => Err(ApiError::not_found(format!(
            "dead letter {id} does not exist"
        ))),
    }
}

async fn delete_dead_letter(
    State(node): NodeState,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let id = dead_letter_id(p)?;
    match node.bus.purge_dead_letters(Some(&[id])).await? {
        0 => Err(ApiError::not_found(format!(
            "dead letter {id} does not exist"
        ))),
        n => Ok(Json(json!({"purged": n}))),
    }
}

async fn purge_dlq(State(node): NodeState) -> Result<Json<Value>> {
    let n = node.bus.purge_dead_letters(None).await?;
    Ok(Json(json!({"purged": n})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    #[serde(default)]
    ids: Option<Vec<u64>>,
}

async fn redrive(State(node): NodeState, headers: HeaderMap, body: Body) -> Result<Json<Value>> {
    let body: RedriveBody = json_body(&node, &headers, body).await?;
    let n = node.bus.redrive(body.ids.as_deref()).await?;
    Ok(Json(json!({"redriven": n})))
}

async fn list_replays(State(node): NodeState) -> Json<Value> {
    Json(json!({"replays": node.replays.list()}))
}

async fn get_replay(
    State(node): NodeState,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let name = path(p)?;
    node.replays
        .get(&name)
        .map(|r| Json(json!(r)))
        .ok_or_else(|| ApiError::not_found(format!("replay {name} does not exist")))
}

async fn start_replay(
    State(node): NodeState,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>)> {
    let req: ReplayRequest = json_body(&node, &headers, body).await?;
    // The conditions with their own status are checked here; the rest of the
    // request is checked by the replay itself (400).
    if node.replays.get(&req.name).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("replay {} already exists", req.name),
        ));
    }
    let bus = req.bus.as_deref().unwrap_or(crate::event::DEFAULT_BUS);
    if !node.rules.has_bus(bus) {
        return Err(ApiError::not_found(format!(
            "Event bus {bus} does not exist."
        )));
    }
    for r in req.rules.iter().flatten() {
        if node.rules.get(bus, r).is_none() {
            return Err(rule_not_found(bus, r));
        }
    }
    let status = node
        .replays
        .start(req)
        .map_err(|m| ApiError::bad_request("InvalidArgument", m))?;
    Ok((StatusCode::ACCEPTED, Json(json!(status))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveParams {
    pattern: Option<String>,
    since: Option<String>,
    until: Option<String>,
    bus: Option<String>,
    limit: Option<usize>,
    /// The `next` of the previous page.
    cursor: Option<String>,
}

/// Parses a pattern given to an admin route, with the same message as a rule's.
fn parse_pattern(node: &Node, text: &str) -> Result<Pattern> {
    Pattern::parse_with(text, node.rules.limits()).map_err(|e| {
        ApiError::bad_request(
            "InvalidEventPattern",
            format!("Event pattern is not valid. Reason: {e}"),
        )
    })
}

fn time_ms(name: &str, text: Option<&str>) -> Result<Option<i64>> {
    text.map(|t| {
        crate::event::parse_time(t)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .map_err(|e| {
                ApiError::bad_request(
                    "InvalidArgument",
                    format!("{name} {t:?} is not an RFC 3339 time: {e}"),
                )
            })
    })
    .transpose()
}

async fn archive(
    State(node): NodeState,
    q: Result<Query<ArchiveParams>, QueryRejection>,
) -> Result<Json<Value>> {
    let q = query(q)?;
    let pattern = q
        .pattern
        .as_deref()
        .map(|p| parse_pattern(&node, p))
        .transpose()?;
    let since_ms = time_ms("since", q.since.as_deref())?;
    let until_ms = time_ms("until", q.until.as_deref())?;
    if let (Some(s), Some(u)) = (since_ms, until_ms)
        && u < s
    {
        return Err(ApiError::bad_request(
            "InvalidArgument",
            "until is before since",
        ));
    }
    let limit = page_limit(q.limit)?;
    let after = q
        .cursor
        .as_deref()
        .map(ArchiveCursor::decode)
        .transpose()
        .map_err(|m| ApiError::bad_request("InvalidArgument", m))?;
    // The pattern runs on the stored bytes, as the router's matcher does: no JSON
    // tree is built for the events it turns away.
    let matcher = pattern.map(|p| crate::pattern::Matcher::new([((), p)]));
    let bus = q.bus;
    let filter: ArchiveFilter = Arc::new(move |e: &crate::event::Event, json: &[u8]| {
        bus.as_ref().is_none_or(|b| &e.bus == b)
            && matcher
                .as_ref()
                .is_none_or(|m| m.matches_json(json).is_ok_and(|keys| !keys.is_empty()))
    });
    let page = node
        .bus
        .archive(ArchiveQuery {
            since_ms,
            until_ms,
            after,
            ..ArchiveQuery::new(limit, filter)
        })
        .await?;
    let mut body = json!({"events": page.events});
    if let Some(next) = page.next {
        body["next"] = json!(next.encode());
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TailQuery {
    pattern: Option<String>,
}

async fn tail(
    State(node): NodeState,
    q: Result<Query<TailQuery>, QueryRejection>,
) -> Result<Response> {
    let q = query(q)?;
    let pattern = q
        .pattern
        .as_deref()
        .map(|p| parse_pattern(&node, p))
        .transpose()?;
    Ok(super::tail::stream(node.tail.subscribe(), pattern).into_response())
}
