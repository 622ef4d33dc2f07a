//! `GET /metrics`: everything recorded through the `metrics` macros in this
//! process, in the Prometheus text format, plus gauges sampled at scrape time
//! (dead letters, queue backlogs, loaded plugins).
//!
//! The recorder is process-wide, so it is installed once, on the first router
//! built; tests that start several nodes in one process share it.

use super::NodeState;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the Prometheus recorder unless this process already did.
pub fn install() {
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new().install_recorder().map_err(|e| {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics will answer 503");
            e.to_string()
        })
    });
}

pub async fn render(State(node): NodeState) -> Response {
    if !node.config.metrics.prometheus {
        return (
            StatusCode::NOT_FOUND,
            "metrics are off: set [metrics] prometheus = true in the config file",
        )
            .into_response();
    }
    install();
    let handle = match HANDLE.get() {
        Some(Ok(h)) => h,
        Some(Err(e)) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "metrics are unavailable: the Prometheus recorder could not be installed: {e}"
                ),
            )
                .into_response();
        }
        None => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    metrics::gauge!("busbar_dead_letters").set(node.bus.dead_letter_count() as f64);
    for q in node.bus.queue_stats() {
        metrics::gauge!("busbar_queue_backlog", "queue" => q.queue.clone()).set(q.backlog as f64);
        metrics::gauge!("busbar_queue_in_flight", "queue" => q.queue.clone())
            .set(q.in_flight as f64);
        metrics::gauge!("busbar_queue_oldest_age_seconds", "queue" => q.queue)
            .set(q.oldest_age_ms as f64 / 1000.0);
    }
    let plugins = node.runtime.status();
    let loaded = plugins
        .iter()
        .filter(|p| node.runtime.is_loaded(&p.name))
        .count();
    metrics::gauge!("busbar_plugins_loaded").set(loaded as f64);
    let mut resp = handle.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
