//! `POST /events`: busbar's own JSON. The body is one event object or an array
//! of them, in the EventBridge envelope's field names (`source`, `detail-type`,
//! `detail` as a JSON object, optional `id`, `time`, `account`, `region`,
//! `resources`, `event-bus-name`). The reply has one entry per input, in order:
//! `{"id": ...}` for an accepted event, `{"error_code", "error_message"}` for a
//! refused one. A CloudEvents content type (or a `ce-specversion` header) hands
//! the request to [`super::cloudevents`].

use super::auth::Scope;
use super::errors::ApiError;
use super::limits::{check_entries, read_body};
use super::{NodeState, Surface, authorize, batch_response, cloudevents, publish_entries};
use crate::event::{EventInput, parse_json_bytes};
use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub async fn handle(
    state: NodeState,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if cloudevents::is_cloudevents(&headers) {
        return cloudevents::handle(state, RawQuery(query), headers, body).await;
    }
    match publish(state, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn publish(
    axum::extract::State(node): NodeState,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&node, &headers, Scope::Publish)?;
    let limits = &node.config.limits;
    let bytes = read_body(&headers, body, limits.max_body_bytes).await?;
    let value = parse_json_bytes(&bytes, limits.max_depth)?;
    let items = match value {
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        other => {
            return Err(ApiError::bad_request(
                "InvalidArgument",
                format!(
                    "body must be an event object or an array of events, got {}",
                    crate::event::json_kind(&other)
                ),
            ));
        }
    };
    check_entries(items.len(), limits.max_entries_per_request)?;
    let entries = items
        .into_iter()
        .map(|v| EventInput::from_json(v)?.into_client_event(&node.event_limits))
        .collect();
    let outcomes = publish_entries(&node, Surface::Native, entries).await;
    Ok(batch_response(&outcomes))
}
