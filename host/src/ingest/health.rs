//! Probes: `/healthz` says the process serves HTTP; `/readyz` says the node can
//! read its store, which is what accepting an event needs.

use super::NodeState;
use axum::extract::State;
use axum::http::StatusCode;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(node): NodeState) -> (StatusCode, String) {
    match node.bus.buses().await {
        Ok(_) => (StatusCode::OK, "ready".into()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store cannot be read: {e}"),
        ),
    }
}
