//! Request limits shared by every surface: the body size (413 above
//! `limits.max_body_bytes`) and the number of entries in one request.

use super::errors::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};

/// Why a body could not be read.
#[derive(Debug, Clone)]
pub enum BodyError {
    TooLarge { limit: usize },
    Unreadable(String),
}

impl BodyError {
    pub fn message(&self) -> String {
        match self {
            BodyError::TooLarge { limit } => {
                format!("request body is larger than limits.max_body_bytes ({limit} bytes)")
            }
            BodyError::Unreadable(e) => format!("could not read the request body: {e}"),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLarge",
                e.message(),
            ),
            BodyError::Unreadable(_) => ApiError::bad_request("BadRequest", e.message()),
        }
    }
}

/// Reads a whole body, refusing it as soon as it passes `limit` bytes: up front
/// when Content-Length says so, otherwise while streaming.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        let over =
            std::iter::successors(Some(&*inner as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .any(|e| e.is::<http_body_util::LengthLimitError>());
        if over {
            BodyError::TooLarge { limit }
        } else {
            BodyError::Unreadable(inner.to_string())
        }
    })
}

/// Refuses a batch longer than `limits.max_entries_per_request`.
pub fn check_entries(n: usize, limit: usize) -> Result<(), ApiError> {
    if n > limit {
        return Err(ApiError::bad_request(
            "TooManyEntries",
            format!("request has {n} entries; limits.max_entries_per_request is {limit}"),
        ));
    }
    if n == 0 {
        return Err(ApiError::bad_request(
            "InvalidArgument",
            "request has no entries; send an event object or a non-empty array",
        ));
    }
    Ok(())
}
