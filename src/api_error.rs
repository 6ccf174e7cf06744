//! The admin API's one error answer, whichever module fails (a handler, the local or
//! the Raft pool writer, a cluster endpoint): `{"error": "...", "code": "..."}` with a
//! fitting status, as the contract says; the CLI prints `error` as its one line.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unknown_backend(name: &str) -> ApiError {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_backend",
            format!("unknown backend '{name}'"),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut r = (
            status,
            Json(json!({ "error": self.message, "code": self.code })),
        )
            .into_response();
        let headers = r.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme the client should use.
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            // No quorum or a member still starting: worth a retry soon.
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}
