//! The HTTP surfaces: native JSON, the EventBridge API (AWS JSON 1.1),
//! CloudEvents, the admin API under /v1, metrics and health.

use crate::node::Node;
use std::sync::Arc;

/// Serves every HTTP surface of `node` on `listener` until the process ends.
pub async fn serve(node: Arc<Node>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let _ = node;
    let _ = listener;
    anyhow::bail!("HTTP surfaces are not built yet")
}
