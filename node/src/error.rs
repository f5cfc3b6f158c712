//! The one error type every client-facing path returns, with its stable code and HTTP status.
//! The HTTP layer renders it as `{"error":{"code","message"}}`; the forwarding RPC carries it
//! unchanged, so a request answered by the leader fails the same way as one answered locally.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ApiError {
    pub status: u16,
    /// Stable snake_case code clients can match on.
    pub code: String,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError { status, code: code.to_string(), message: message.into() }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn key_not_found(key: &str) -> Self {
        Self::new(404, "key_not_found", format!("key {key:?} does not exist"))
    }

    pub fn condition_failed(current_revision: Option<u64>) -> Self {
        let msg = match current_revision {
            Some(rev) => format!("precondition failed; the key's current revision is {rev}"),
            None => "precondition failed; the key does not exist".to_string(),
        };
        Self::new(412, "condition_failed", msg)
    }

    pub fn no_quorum(message: impl Into<String>) -> Self {
        Self::new(503, "no_quorum", message)
    }

    pub fn not_ready(message: impl Into<String>) -> Self {
        Self::new(503, "not_ready", message)
    }

    pub fn unavailable(code: &str, message: impl Into<String>) -> Self {
        Self::new(503, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }
}

impl From<ApiError> for ferrokv_proto::ApiError {
    fn from(e: ApiError) -> Self {
        ferrokv_proto::ApiError { http_status: e.status.into(), code: e.code, message: e.message }
    }
}

impl From<ferrokv_proto::ApiError> for ApiError {
    fn from(e: ferrokv_proto::ApiError) -> Self {
        ApiError { status: u16::try_from(e.http_status).unwrap_or(500), code: e.code, message: e.message }
    }
}
