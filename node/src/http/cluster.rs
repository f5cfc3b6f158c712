//! `/v1/cluster`: the cluster view and the admin calls (add/remove members, move leadership,
//! verify that replicas agree).

use axum::Json;
use axum::extract::Path;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::Deserialize;
use serde_json::Value;
use serde_json::json;

use super::ApiResult;
use super::AppState;
use crate::anti_entropy::Verification;
use crate::error::ApiError;
use crate::service::ClusterView;
use crate::types::Member;

pub async fn status(State(state): State<AppState>) -> ApiResult<Json<ClusterView>> {
    Ok(Json(state.cluster_view()?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    node_id: u64,
    grpc_addr: String,
    #[serde(default)]
    http_addr: String,
}

pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    body.map(|Json(v)| v).map_err(|e| ApiError::bad_request("invalid_json", e.body_text()))
}

pub async fn add_member(
    State(state): State<AppState>,
    body: Result<Json<AddMember>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let req = json_body(body)?;
    if req.node_id == 0 || req.node_id >= crate::membership::JOINED_ID_BASE {
        return Err(ApiError::bad_request("invalid_node_id", "node_id must be from 1 to 2^32-1"));
    }
    if !req.grpc_addr.contains(':') {
        return Err(ApiError::bad_request("invalid_address", "grpc_addr must be host:port"));
    }
    let member = Member { node_id: req.node_id, grpc_addr: req.grpc_addr, http_addr: req.http_addr };
    let raft_id = state.add_member(member).await?;
    Ok(Json(json!({ "node_id": req.node_id, "raft_id": raft_id })))
}

pub async fn remove_member(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let node_id: u64 =
        id.parse().map_err(|_| ApiError::bad_request("invalid_node_id", format!("{id:?} is not a node id")))?;
    state.remove_member(node_id).await?;
    Ok(Json(json!({ "removed": node_id })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TransferLeader {
    node_id: Option<u64>,
}

pub async fn transfer_leader(
    State(state): State<AppState>,
    body: Result<Json<TransferLeader>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    // An empty body means "any other voter".
    let req = match body {
        Err(JsonRejection::MissingJsonContentType(_)) => TransferLeader::default(),
        other => json_body(other)?,
    };
    let leader = state.transfer_leadership(req.node_id).await?;
    Ok(Json(json!({ "leader_id": leader })))
}

/// Compare every member's state digest at a fresh checkpoint. 200 with `consistent: false`
/// when they differ (the report is the answer either way).
pub async fn verify(State(state): State<AppState>) -> ApiResult<Json<Verification>> {
    Ok(Json(state.verify_replicas().await?))
}
