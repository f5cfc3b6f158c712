//! `/v1/kv`: get, put (with TTL, compare-and-set, create-only), delete, prefix scan.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::Response;
use base64::Engine;
use serde::Serialize;
use serde_json::Value;
use serde_json::json;

use super::ApiResult;
use super::AppState;
use super::params::MAX_TTL_SECONDS;
use super::params::Params;
use super::params::condition;
use crate::command::Command;
use crate::command::CommandResult;
use crate::error::ApiError;
use crate::service::Consistency;
use crate::service::ReadOutcome;
use crate::service::ReadQuery;
use crate::service::WireRecord;

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
const DEFAULT_LIST_LIMIT: u64 = 100;

fn check_key(state: &AppState, key: &str) -> ApiResult<()> {
    if key.is_empty() {
        return Err(ApiError::bad_request("empty_key", "the key must not be empty"));
    }
    let max = state.cfg.max_key_bytes;
    if key.len() > max {
        return Err(ApiError::bad_request(
            "key_too_large",
            format!("the key is {} bytes; the limit is {max}", key.len()),
        ));
    }
    Ok(())
}

pub async fn empty_key() -> ApiError {
    ApiError::bad_request("empty_key", "the key must not be empty")
}

pub async fn get_key(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let params = Params::new(q, &["consistency"])?;
    read_key(&state, key, params.consistency()?).await
}

pub async fn put_key(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let params = Params::new(q, &["ttl"])?;
    let ttl = params.number("ttl", "invalid_ttl", MAX_TTL_SECONDS)?;
    let value = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            value_too_large(&state)
        } else {
            ApiError::bad_request("invalid_body", e.body_text())
        }
    });
    write_key(&state, key, ttl, &headers, value).await
}

pub async fn delete_key(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    Params::new(q, &[])?;
    remove_key(&state, key, &headers).await
}

/// The error for a value over the configured limit.
pub(super) fn value_too_large(state: &AppState) -> ApiError {
    ApiError::new(413, "value_too_large", format!("the value exceeds the limit of {} bytes", state.cfg.max_value_bytes))
}

/// `GET /v1/kv/<key>` once the request is parsed: the value, its metadata in headers.
pub(super) async fn read_key(state: &AppState, key: String, consistency: Consistency) -> ApiResult<Response> {
    check_key(state, &key)?;
    let outcome = state.read(ReadQuery::Get { key: key.clone() }, consistency).await?;
    let ReadOutcome::Get(Some(rec)) = outcome else {
        return Err(ApiError::key_not_found(&key));
    };
    let mut headers = HeaderMap::new();
    let ct = rec.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(ct).unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE)),
    );
    headers.insert(header::ETAG, num_header(&format!("\"{}\"", rec.mod_revision)));
    headers.insert("x-ferrokv-version", num_header(&rec.version.to_string()));
    headers.insert("x-ferrokv-create-revision", num_header(&rec.create_revision.to_string()));
    headers.insert("x-ferrokv-mod-revision", num_header(&rec.mod_revision.to_string()));
    if let Some(ttl) = rec.ttl_seconds {
        headers.insert("x-ferrokv-ttl", num_header(&ttl.to_string()));
    }
    Ok((StatusCode::OK, headers, rec.value).into_response())
}

fn num_header(s: &str) -> HeaderValue {
    // Digits and quotes only: always a valid header value.
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("0"))
}

/// The answer to a successful PUT.
#[derive(Serialize)]
struct Written<'a> {
    key: &'a str,
    revision: u64,
    version: u64,
}

/// `PUT /v1/kv/<key>` once the request is parsed: `value` is the body, or why it could not be read.
pub(super) async fn write_key(
    state: &AppState,
    key: String,
    ttl: Option<u64>,
    headers: &HeaderMap,
    value: Result<Bytes, ApiError>,
) -> ApiResult<Response> {
    check_key(state, &key)?;
    let condition = condition(headers, true)?;
    // The body may be a slice of the connection's whole read buffer: stored as it is, a 100-byte
    // value would keep kilobytes alive for as long as the key lives. Store a copy of its own.
    let value = Bytes::copy_from_slice(&value?);
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("invalid_content_type", "Content-Type is not valid text"))?
                .to_string(),
        ),
    };
    let cmd =
        Command::Put { key: key.clone(), value, content_type, ttl_ms: ttl.map(|s| s * 1000), condition, now_ms: 0 };
    let outcome = state.write(cmd).await?;
    match outcome.result {
        CommandResult::Put { created, revision, version } => {
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            let mut resp = (status, Json(Written { key: &key, revision, version })).into_response();
            resp.headers_mut().insert(header::ETAG, num_header(&format!("\"{revision}\"")));
            Ok(resp)
        }
        CommandResult::ConditionFailed { current_revision } => Err(ApiError::condition_failed(current_revision)),
        other => Err(ApiError::internal(format!("unexpected result {other:?}"))),
    }
}

/// `DELETE /v1/kv/<key>` once the request is parsed.
pub(super) async fn remove_key(state: &AppState, key: String, headers: &HeaderMap) -> ApiResult<Response> {
    check_key(state, &key)?;
    let condition = condition(headers, false)?;
    let outcome = state.write(Command::Delete { key: key.clone(), condition, now_ms: 0 }).await?;
    match outcome.result {
        CommandResult::Deleted { .. } => Ok(StatusCode::NO_CONTENT.into_response()),
        CommandResult::NotFound => Err(ApiError::key_not_found(&key)),
        CommandResult::ConditionFailed { current_revision } => Err(ApiError::condition_failed(current_revision)),
        other => Err(ApiError::internal(format!("unexpected result {other:?}"))),
    }
}

pub async fn list(State(state): State<AppState>, Query(q): Query<HashMap<String, String>>) -> ApiResult<Json<Value>> {
    let params = Params::new(q, &["prefix", "limit", "after", "consistency"])?;
    let max = state.cfg.max_list_limit as u64;
    let limit = params.number("limit", "invalid_limit", max)?.unwrap_or(DEFAULT_LIST_LIMIT.min(max)) as usize;
    let prefix = params.str("prefix").unwrap_or_default().to_string();
    if prefix.len() > state.cfg.max_key_bytes {
        return Err(ApiError::bad_request("key_too_large", "the prefix is longer than the key limit"));
    }
    let after = params.str("after").map(String::from);
    let outcome = state.read(ReadQuery::Scan { prefix, after, limit }, params.consistency()?).await?;
    let ReadOutcome::Scan { items, next_after } = outcome else {
        return Err(ApiError::internal("unexpected read outcome"));
    };
    let items: Vec<Value> = items.iter().map(item_json).collect();
    Ok(Json(json!({ "items": items, "next_after": next_after })))
}

/// One scanned record as JSON: UTF-8 values inline, anything else base64.
fn item_json(r: &WireRecord) -> Value {
    let mut v = json!({
        "key": r.key,
        "revision": r.mod_revision,
        "create_revision": r.create_revision,
        "version": r.version,
        "ttl": r.ttl_seconds,
        "content_type": r.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE),
    });
    match std::str::from_utf8(&r.value) {
        Ok(s) => v["value"] = Value::String(s.to_string()),
        Err(_) => {
            v["value"] = Value::String(base64::engine::general_purpose::STANDARD.encode(&r.value));
            v["encoding"] = Value::String("base64".into());
        }
    }
    v
}
