//! Error bodies. The native and admin surfaces answer
//! `{"error": {"code": "...", "message": "..."}}`; the EventBridge surface answers
//! AWS JSON 1.1 errors (`{"__type": "...", "message": "..."}`), which botocore
//! turns into the exception class named by `__type`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::event::EventError;
use crate::rules::RuleError;
use crate::rules::admin::ChangeError;

/// The content type of every AWS JSON 1.1 body, requests and responses alike.
pub const AMZ_JSON: &str = "application/x-amz-json-1.1";

/// An error of the native, CloudEvents or admin surface.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        ApiError::bad_request(e.code, e.message)
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Rule(RuleError::InvalidPattern(m)) => {
                ApiError::bad_request("InvalidEventPattern", m)
            }
            ChangeError::Rule(RuleError::Invalid(m)) => ApiError::bad_request("InvalidArgument", m),
            ChangeError::Rule(RuleError::NotFound(m)) => ApiError::not_found(m),
            ChangeError::Rule(RuleError::Conflict(m)) => {
                ApiError::new(StatusCode::CONFLICT, "Conflict", m)
            }
            ChangeError::Store(e) => ApiError::internal(e.to_string()),
        }
    }
}

impl From<crate::bus::BusError> for ApiError {
    fn from(e: crate::bus::BusError) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// An error of the EventBridge surface, in AWS JSON 1.1 form.
#[derive(Debug, Clone)]
pub struct AwsError {
    pub status: StatusCode,
    /// The exception name botocore raises, e.g. `ResourceNotFoundException`.
    pub kind: &'static str,
    pub message: String,
}

impl AwsError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        AwsError {
            status: StatusCode::BAD_REQUEST,
            kind,
            message: message.into(),
        }
    }
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationException", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFoundException", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        AwsError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "InternalException",
            message: message.into(),
        }
    }
}

impl AwsError {
    /// A refused token, as the exception botocore knows for it.
    pub fn denied(status: StatusCode, message: String) -> Self {
        AwsError {
            status,
            kind: if status == StatusCode::FORBIDDEN {
                "AccessDeniedException"
            } else {
                "UnrecognizedClientException"
            },
            message,
        }
    }
}

impl From<ChangeError> for AwsError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Rule(RuleError::InvalidPattern(m)) => {
                AwsError::new("InvalidEventPatternException", m)
            }
            ChangeError::Rule(RuleError::Invalid(m)) => AwsError::validation(m),
            ChangeError::Rule(RuleError::NotFound(m)) => AwsError::not_found(m),
            // Rules from the config file are managed outside the API, which is
            // what EventBridge says of rules another service owns.
            ChangeError::Rule(RuleError::Conflict(m)) if m.contains("config file") => {
                AwsError::new("ManagedRuleException", m)
            }
            ChangeError::Rule(RuleError::Conflict(m)) => AwsError::validation(m),
            ChangeError::Store(e) => AwsError::internal(e.to_string()),
        }
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let body = json!({"__type": self.kind, "message": self.message});
        let mut resp = (self.status, body.to_string()).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(AMZ_JSON));
        // botocore reads the code from this header first when it is present.
        if let Ok(v) = HeaderValue::from_str(self.kind) {
            headers.insert("x-amzn-errortype", v);
        }
        resp
    }
}
