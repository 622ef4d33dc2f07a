//! The web console at `/console`: static pages embedded in the binary (plain
//! HTML, CSS and JavaScript modules, no build step; the uPlot charting library
//! vendored under `assets/vendor/`), which read and change the node through
//! the `/v1` admin API with the token the user gives once per tab.
//!
//! The pages themselves hold no data, so they are served without a token; every
//! request they make for data carries the admin token as `X-Busbar-Token`
//! (no cookies, so no cross-site request can ride on a session). The console
//! adds two admin routes of its own:
//!
//! - `GET /v1/history[?after=MS]`: the last minutes of the node's figures
//!   ([`history`]), for the plots;
//! - `PUT /v1/plugins/{name}`: a `.wasm` upload into the plugins directory
//!   ([`upload`]).

pub mod history;
pub mod upload;

use super::errors::ApiError;
use crate::node::Node;
use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, put};
use axum::{Extension, Json};
use history::History;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// One embedded file: its name under `/console/assets/`, content type, bytes.
type Asset = (&'static str, &'static str, &'static [u8]);

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! asset {
    ($name:literal, $type:expr) => {
        ($name, $type, include_bytes!(concat!("assets/", $name)))
    };
}

const INDEX: &[u8] = include_bytes!("assets/index.html");

const ASSETS: &[Asset] = &[
    asset!("console.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("charts.js", JS),
    asset!("overview.js", JS),
    asset!("rules.js", JS),
    asset!("plugins.js", JS),
    asset!("targets.js", JS),
    asset!("dlq.js", JS),
    asset!("archive.js", JS),
    asset!("tail.js", JS),
    asset!("send.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("vendor/uPlot.iife.min.js", JS),
    asset!("vendor/uPlot.min.css", CSS),
];

/// The console's pages: `/console` (and anything under it the client-side
/// router owns) and its assets. `GET /` redirects here, see [`to_console`].
pub fn pages() -> Router<Arc<Node>> {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/assets/{*file}", get(asset))
}

/// The console's admin routes, merged into `/v1` (behind the admin token).
pub fn admin_routes(node: &Arc<Node>) -> Router<Arc<Node>> {
    Router::new()
        .route("/history", get(history))
        .route("/plugins/{name}", put(upload::put_plugin))
        .layer(Extension(History::start(node)))
}

/// `GET /`: a browser that opens the node's address lands on the console.
pub async fn to_console() -> Redirect {
    Redirect::to("/console")
}

/// Headers every console response carries: the pages may only load their own
/// scripts and talk to this node, and may not be framed by another site.
fn secured(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Small files on a local node: always revalidate, so an upgraded binary's
    // console is never mixed with a cached older module.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn index() -> Response {
    secured(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response())
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => {
            secured(([(header::CONTENT_TYPE, *content_type)], *bytes).into_response())
        }
        None => ApiError::not_found(format!("the console has no asset {file}")).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// Only samples taken after this Unix time in milliseconds.
    after: Option<i64>,
}

async fn history(
    Extension(history): Extension<Arc<History>>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = q
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("InvalidArgument", e.body_text()))?;
    Ok(Json(json!({
        "interval_ms": history::INTERVAL.as_millis() as u64,
        "samples": history.since(q.after),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    /// Every module the pages import is embedded: a missing one would be a
    /// blank page at run time, not a build error.
    #[test]
    fn every_imported_module_is_embedded() {
        let sources = ASSETS
            .iter()
            .filter(|(n, _, _)| n.ends_with(".js") && !n.starts_with("vendor/"));
        for (name, _, bytes) in sources {
            let text = std::str::from_utf8(bytes).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let module = line
                    .split(['\'', '"'])
                    .nth(1)
                    .and_then(|m| m.strip_prefix("./"))
                    .unwrap_or_else(|| panic!("{name}: unexpected import {line}"));
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == module),
                    "{name} imports {module}, which is not in ASSETS"
                );
            }
        }
        let index = std::str::from_utf8(INDEX).unwrap();
        for (name, _, _) in ASSETS.iter().filter(|(n, _, _)| *n != "favicon.svg") {
            let used = index.contains(&format!("assets/{name}"))
                || ASSETS.iter().any(|(_, _, b)| {
                    std::str::from_utf8(b).is_ok_and(|t| t.contains(&format!("./{name}")))
                });
            assert!(used, "{name} is embedded but nothing loads it");
        }
    }

    #[test]
    fn an_unknown_asset_is_a_404_naming_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let resp = rt.block_on(asset(Path("nope.js".into())));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}
