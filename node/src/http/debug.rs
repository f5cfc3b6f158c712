//! `/v1/debug/*`: fault injection for tests. Routed only with `--unsafe-fault-injection`.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use serde_json::json;

use super::ApiResult;
use super::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corrupt {
    key: String,
    value: String,
}

/// Overwrite a key on this replica only, bypassing Raft: the replica's state then differs from
/// the others', which anti-entropy must detect and repair.
pub async fn corrupt(
    State(state): State<AppState>,
    body: Result<Json<Corrupt>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let req = super::cluster::json_body(body)?;
    let core = state.core()?;
    tracing::warn!(key = %req.key, "fault injection: overwriting a key on this replica only");
    core.sm.overwrite_locally(&req.key, Bytes::from(req.value));
    let digest = core.sm.read(|sm| sm.kv.digest());
    Ok(Json(json!({ "key": req.key, "digest": digest.to_string() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldApply {
    held: bool,
}

/// Hold (or release) applying on this replica only: committed entries stay unapplied here, as
/// on a replica that lags behind, until released.
pub async fn hold_apply(
    State(state): State<AppState>,
    body: Result<Json<HoldApply>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let req = super::cluster::json_body(body)?;
    let core = state.core()?;
    tracing::warn!(held = req.held, "fault injection: holding applying on this replica");
    let applied = core.sm.hold_apply(req.held);
    Ok(Json(json!({ "held": req.held, "applied_index": applied })))
}
