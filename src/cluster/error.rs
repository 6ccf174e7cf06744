//! Errors of cluster operations, with the HTTP status and code the admin API answers.

use serde::{Deserialize, Serialize};

/// Why a pool write or membership change did not happen. Serializable so that a
/// leader's answer to a forwarded call reaches the client unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum ClusterError {
    /// No leader, or the leader cannot reach a majority: pool writes are impossible.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// A membership change is still being committed.
    #[error("a membership change is in progress: {0}")]
    ChangeInProgress(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A new member did not catch up in time (it stays a learner; retry to promote).
    #[error("{0}")]
    Timeout(String),
    /// The Raft thread has not started (yet), or stopped on a fatal error.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
}

impl ClusterError {
    pub fn status(&self) -> u16 {
        match self {
            ClusterError::NoQuorum(_) | ClusterError::Unavailable(_) => 503,
            ClusterError::ChangeInProgress(_) | ClusterError::Conflict(_) => 409,
            ClusterError::BadRequest(_) => 400,
            ClusterError::NotFound(_) => 404,
            ClusterError::Timeout(_) => 504,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ClusterError::NoQuorum(_) => "no_quorum",
            ClusterError::ChangeInProgress(_) => "change_in_progress",
            ClusterError::BadRequest(_) => "bad_request",
            ClusterError::NotFound(_) => "not_found",
            ClusterError::Conflict(_) => "conflict",
            ClusterError::Unavailable(_) => "cluster_unavailable",
            ClusterError::Timeout(_) => "timeout",
        }
    }
}

impl From<ClusterError> for crate::api_error::ApiError {
    fn from(e: ClusterError) -> Self {
        let status = axum::http::StatusCode::from_u16(e.status())
            .unwrap_or(axum::http::StatusCode::SERVICE_UNAVAILABLE);
        crate::api_error::ApiError::new(status, e.code(), e.to_string())
    }
}
