//! Rendering of [`ApiError`] as `{"error":{"code","message"}}`, and the JSON fallbacks for
//! unknown routes and wrong methods.

use axum::Json;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use serde_json::json;

use crate::error::ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        let mut resp = (status, body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        resp
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(404, "not_found", "no such endpoint; the API lives under /v1")
}

pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(405, "method_not_allowed", format!("{method} is not supported on this endpoint"))
}
