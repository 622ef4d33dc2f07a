//! The HTTP surfaces, one axum router on hyper:
//!
//! | Route | Surface | Token |
//! |---|---|---|
//! | `POST /events` | native JSON ([`native`]); CloudEvents when the content type or `ce-specversion` says so | publish |
//! | `POST /` + `X-Amz-Target: AWSEvents.<Op>` | the EventBridge API, AWS JSON 1.1 ([`aws`]) | publish for PutEvents, admin for the rest |
//! | `POST /cloudevents` | CloudEvents 1.0 structured, binary and batch ([`cloudevents`]) | publish |
//! | `/schedules*`, `/schedule-groups*` | the EventBridge Scheduler API, restJson1 ([`scheduler`]) | admin |
//! | `/v1/*` | the admin JSON API ([`admin`]), including `GET /v1/tail` (SSE, [`tail`]) | admin |
//! | `GET /metrics`, `GET /healthz`, `GET /readyz` | Prometheus text and probes ([`metrics`], [`health`]) | none |
//! | `GET /console` (and `GET /` redirecting there) | the web console's pages ([`console`]); their data comes from `/v1` | none (the pages ask for the admin token) |
//!
//! Every publishing surface turns its input into [`Event`]s the same way and
//! hands them to [`Node::publish`], so an event is acknowledged only once it is
//! durable, and a batch fails entry by entry, never as a whole, once it parsed.

pub mod admin;
pub mod auth;
pub mod aws;
pub mod cloudevents;
pub mod console;
pub mod errors;
pub mod health;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod native;
pub mod scheduler;
pub mod tail;

use crate::event::{Event, EventError};
use crate::node::Node;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use errors::ApiError;
use std::future::Future;
use std::sync::Arc;

/// Serves every HTTP surface of `node` on `listener` until Ctrl-C or SIGTERM,
/// then lets requests in flight finish and closes the bus.
pub async fn serve(node: Arc<Node>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    serve_with_shutdown(node, listener, shutdown_signal()).await
}

/// How long requests still open at shutdown (a `tail` stream, a slow upload)
/// may take before their connections are closed.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// [`serve`] until `signal` completes (tests pass their own), within the
/// connection bound and timeouts of `[server]` (see [`listener`]). Requests in
/// flight then get [`SHUTDOWN_GRACE`] to finish.
pub async fn serve_with_shutdown(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    warn_if_exposed(&node.config.server, addr);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signal.await;
        let _ = stop.send(true);
    });
    let bounds = listener::Bounds::from_config(&node.config.server);
    listener::serve(listener, router(node.clone()), bounds, stopped).await;
    node.scheduler.stop();
    node.bus.close();
    Ok(())
}

/// Says loudly when what the listener exposes is open to more than intended.
fn warn_if_exposed(server: &crate::config::ServerConfig, addr: std::net::SocketAddr) {
    let open: Vec<&str> = [
        (server.publish_token.is_none(), "publishing"),
        (
            server.admin_token.is_none() && server.publish_token.is_none(),
            "the admin API (/v1, rule changes)",
        ),
    ]
    .into_iter()
    .filter_map(|(open, what)| open.then_some(what))
    .collect();
    if !addr.ip().is_loopback() && !open.is_empty() {
        tracing::warn!(
            %addr,
            "serving beyond this machine with no token for {}: anyone who can reach {addr} \
             may use it; set server.publish_token and server.admin_token \
             (BUSBAR_PUBLISH_TOKEN, BUSBAR_ADMIN_TOKEN)",
            open.join(" and ")
        );
    }
    if server.publish_token.is_some() && server.admin_token.is_none() {
        tracing::warn!(
            "server.publish_token is set but server.admin_token is not: the publish token \
             also grants the admin API (/v1, rule changes); set server.admin_token to keep \
             publishers out of it"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// The whole HTTP API of `node` as one router.
pub fn router(node: Arc<Node>) -> Router {
    // Without a recorder the `metrics` macros cost next to nothing: that is what
    // `prometheus = false` buys (see the observability benchmark).
    if node.config.metrics.prometheus {
        metrics::install();
    }
    let admin = admin::router()
        .merge(console::admin_routes(&node))
        .route_layer(middleware::from_fn_with_state(
            node.clone(),
            admin::require_admin,
        ));
    Router::new()
        .route("/", post(aws::handle).get(console::to_console))
        .merge(console::pages())
        .route("/events", post(native::handle))
        .route("/cloudevents", post(cloudevents::handle))
        .route("/metrics", get(metrics::render))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(scheduler::router())
        .nest("/v1", admin)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn(count_errors))
        .with_state(node)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route for {method} {}; see the routes in the busbar README",
        uri.path()
    ))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{} does not accept {method}", uri.path()),
    )
}

/// Counts failed requests by surface and status for `/metrics`.
async fn count_errors(req: Request, next: Next) -> Response {
    let surface = surface_of(req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        ::metrics::counter!(
            "busbar_http_errors_total",
            "surface" => surface,
            "status" => status.as_u16().to_string()
        )
        .increment(1);
    }
    resp
}

fn surface_of(path: &str) -> &'static str {
    match path {
        "/" => "aws",
        "/events" => "native",
        "/cloudevents" => "cloudevents",
        p if p.starts_with("/v1") => "admin",
        p if p.starts_with("/schedule") => "scheduler",
        _ => "other",
    }
}

/// Which surface an event came in through (the `surface` metrics label).
#[derive(Debug, Clone, Copy)]
pub enum Surface {
    Native,
    Aws,
    CloudEvents,
}

impl Surface {
    fn label(self) -> &'static str {
        match self {
            Surface::Native => "native",
            Surface::Aws => "aws",
            Surface::CloudEvents => "cloudevents",
        }
    }
}

/// How one entry of a publish request ended.
#[derive(Debug, Clone)]
pub enum EntryOutcome {
    Accepted { id: String },
    Failed { code: &'static str, message: String },
}

impl EntryOutcome {
    pub fn is_throttled(&self) -> bool {
        matches!(self, EntryOutcome::Failed { code, .. } if *code == "ThrottlingException")
    }
}

/// Publishes the entries that validated and reports every entry, in order.
pub async fn publish_entries(
    node: &Node,
    surface: Surface,
    entries: Vec<Result<Event, EventError>>,
) -> Vec<EntryOutcome> {
    let mut outcomes: Vec<Option<EntryOutcome>> = vec![None; entries.len()];
    let mut events = Vec::new();
    let mut slots = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        match entry {
            Ok(e) => {
                slots.push(i);
                events.push(e);
            }
            Err(e) => {
                outcomes[i] = Some(EntryOutcome::Failed {
                    code: e.code,
                    message: e.message,
                })
            }
        }
    }
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    // One span per event, open until its commit: the root of the event's trace.
    let spans: Vec<tracing::Span> = events
        .iter_mut()
        .map(|e| crate::telemetry::publish_span(e, surface.label()))
        .collect();
    let results = if events.is_empty() {
        Vec::new()
    } else {
        node.publisher.publish(events, &Default::default()).await
    };
    for (span, result) in spans.iter().zip(&results) {
        if let Ok(rules) = result {
            crate::telemetry::record_rules(span, rules);
        }
    }
    drop(spans);
    for ((slot, id), result) in slots.into_iter().zip(ids).zip(results) {
        outcomes[slot] = Some(match result {
            Ok(_rules) => EntryOutcome::Accepted { id },
            Err(e) => EntryOutcome::Failed {
                code: e.code(),
                message: e.message().to_string(),
            },
        });
    }
    let outcomes: Vec<EntryOutcome> = outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| EntryOutcome::Failed {
                code: "InternalException",
                message: "the store returned no result for this entry".into(),
            })
        })
        .collect();
    for o in &outcomes {
        let outcome = match o {
            EntryOutcome::Accepted { .. } => "accepted",
            o if o.is_throttled() => "throttled",
            _ => "rejected",
        };
        ::metrics::counter!(
            "busbar_ingest_events_total",
            "surface" => surface.label(),
            "outcome" => outcome
        )
        .increment(1);
    }
    outcomes
}

/// The native and CloudEvents reply: `{"failed": N, "entries": [...]}`, 200, or
/// 429 when every entry was throttled (the caller should back off and retry).
pub fn batch_response(outcomes: &[EntryOutcome]) -> Response {
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o, EntryOutcome::Failed { .. }))
        .count();
    let entries: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| match o {
            EntryOutcome::Accepted { id } => serde_json::json!({"id": id}),
            EntryOutcome::Failed { code, message } => {
                serde_json::json!({"error_code": code, "error_message": message})
            }
        })
        .collect();
    let all_throttled = !outcomes.is_empty() && outcomes.iter().all(EntryOutcome::is_throttled);
    let status = if all_throttled {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::OK
    };
    (
        status,
        axum::Json(serde_json::json!({"failed": failed, "entries": entries})),
    )
        .into_response()
}

/// Refuses a request whose token does not allow `scope`, as a native/admin error.
pub fn authorize(
    node: &Node,
    headers: &axum::http::HeaderMap,
    scope: auth::Scope,
) -> Result<(), ApiError> {
    auth::check(&node.config.server, headers, scope).map_err(|d| {
        let code = if d.status == StatusCode::FORBIDDEN {
            "Forbidden"
        } else {
            "Unauthorized"
        };
        ApiError::new(d.status, code, d.message)
    })
}

/// `State` of every handler.
pub type NodeState = State<Arc<Node>>;
