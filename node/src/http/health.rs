//! Liveness, readiness and the Prometheus endpoint.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::Response;
use openraft::async_runtime::WatchReceiver as _;
use serde_json::json;

use super::AppState;
use crate::error::ApiError;

/// Alive: the process serves HTTP.
pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready: a member of the cluster that knows a leader and has applied what it knows committed.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match ready(&state) {
        Ok(()) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(e) => e.into_response(),
    }
}

fn ready(state: &AppState) -> Result<(), ApiError> {
    let core = state.core()?;
    let m = core.raft.metrics().borrow_watched().clone();
    if m.membership_config.membership().get_node(&core.raft_id).is_none() {
        return Err(ApiError::not_ready("not a member of the cluster (yet)"));
    }
    if m.current_leader.is_none() {
        return Err(ApiError::not_ready("no leader known"));
    }
    let committed = m.local_committed.map_or(0, |l| l.index);
    let applied = m.last_applied.map_or(0, |l| l.index);
    if applied < committed {
        return Err(ApiError::not_ready(format!("catching up: applied {applied} of {committed}")));
    }
    Ok(())
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render(&state) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
