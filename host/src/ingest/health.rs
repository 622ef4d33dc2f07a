//! Probes: `/healthz` says the process serves HTTP; `/readyz` says the plugins
//! found at start are loaded and the node can read its store. Events are
//! accepted before that (their deliveries wait for the plugin), so a load
//! balancer may route to a node that is healthy but not yet ready.

use super::NodeState;
use axum::extract::State;
use axum::http::StatusCode;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(node): NodeState) -> (StatusCode, String) {
    if !node
        .plugins_loaded
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: loading the plugins found at start ({} loaded so far); events are accepted and wait for their plugin",
                node.runtime.loaded_count()
            ),
        );
    }
    match node.bus.buses().await {
        Ok(_) => (StatusCode::OK, "ready".into()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store cannot be read: {e}"),
        ),
    }
}
