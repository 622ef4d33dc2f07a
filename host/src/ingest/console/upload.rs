//! `PUT /v1/plugins/{name}`: a `.wasm` uploaded from the console (admin token)
//! becomes `NAME.wasm` in the plugins directory, and the runtime loads it the
//! way it loads any file dropped there: the same size bound, component check,
//! type check against the world and manifest, and a bad file never replaces a
//! good one. The answer is the plugin's status once that load has run: 200
//! when the uploaded version serves, 422 with the load error when it does not.
//!
//! The body is streamed to a hidden `.NAME.wasm.upload` file beside the
//! plugins (an extension the watcher ignores) and renamed into place, so the
//! watcher never sees a half-written plugin.

use super::super::errors::ApiError;
use super::super::{NodeState, limits::BodyError};
use axum::Json;
use axum::body::Body;
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// The largest upload, the same bound the runtime puts on a `.wasm` it reads.
pub const MAX_UPLOAD_BYTES: usize = 512 << 20;

pub async fn put_plugin(
    State(node): NodeState,
    Path(name): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !crate::runtime::valid_name(&name) {
        return Err(ApiError::bad_request(
            "InvalidArgument",
            format!(
                "plugin name {name:?} must be 1 to 64 letters, digits, '-' or '_' \
                 (it becomes the file name NAME.wasm)"
            ),
        ));
    }
    let dir = node.config.server.plugins_dir.clone();
    let part = dir.join(format!(".{name}.wasm.upload"));
    let hash = match write_upload(&part, body).await {
        Ok(h) => h,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    let target = dir.join(format!("{name}.wasm"));
    tokio::fs::rename(&part, &target).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalException",
            format!("could not move the upload to {}: {e}", target.display()),
        )
    })?;
    // Load it now rather than waiting for the watcher's debounce; loads of one
    // plugin are serialized, so the watcher's own turn later is a no-op.
    node.runtime.reconcile(&name).await;
    let status = node.runtime.status().into_iter().find(|p| p.name == name);
    let serving = status.as_ref().is_some_and(|s| {
        s.version.as_deref() == Some(&hash[..12]) && node.runtime.is_loaded(&name)
    });
    let body = json!(status);
    if serving {
        Ok((StatusCode::OK, Json(body)))
    } else {
        let why = status
            .as_ref()
            .and_then(|s| s.last_error.clone())
            .unwrap_or_else(|| "the plugin did not load".into());
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "InvalidPlugin",
            format!("{name}.wasm was saved but does not serve: {why}"),
        ))
    }
}

/// Streams `body` into `path`, refusing it past [`MAX_UPLOAD_BYTES`]; the
/// hex SHA-256 of what was written.
async fn write_upload(path: &std::path::Path, body: Body) -> Result<String, ApiError> {
    let io = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalException",
            format!("could not write {}: {e}", path.display()),
        )
    };
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut written = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::from(BodyError::Unreadable(e.to_string())))?;
        written += chunk.len();
        if written > MAX_UPLOAD_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLarge",
                format!("a plugin upload may be at most {MAX_UPLOAD_BYTES} bytes"),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
    }
    if written == 0 {
        return Err(ApiError::bad_request(
            "InvalidArgument",
            "the request body is empty: send the .wasm file's bytes",
        ));
    }
    file.sync_all().await.map_err(io)?;
    Ok(hex::encode(hasher.finalize()))
}
