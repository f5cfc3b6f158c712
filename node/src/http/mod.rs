//! The client-facing HTTP API (axum): keys under `/v1/kv`, the cluster under `/v1/cluster`,
//! and `/healthz`, `/readyz`, `/metrics`. Every error is JSON with a stable code.

mod cluster;
mod debug;
mod error;
mod gate;
mod health;
mod kv;
mod params;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::routing::post;
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::service::Service;

pub type AppState = Arc<Service>;

/// The router with every route and layer.
pub fn router(service: Arc<Service>) -> Router {
    // Room for the largest value plus nothing else: the body *is* the value.
    let body_limit = service.cfg.max_value_bytes;
    let max_in_flight = service.cfg.max_in_flight_requests;
    let mut router = Router::new();
    if service.cfg.unsafe_fault_injection {
        router = router.route("/v1/debug/corrupt", post(debug::corrupt).fallback(error::method_not_allowed));
    }
    router
        .route("/v1/kv", get(kv::list).fallback(error::method_not_allowed))
        .route("/v1/kv/", axum::routing::any(kv::empty_key))
        .route(
            "/v1/kv/{*key}",
            get(kv::get_key).put(kv::put_key).delete(kv::delete_key).fallback(error::method_not_allowed),
        )
        .route("/v1/cluster", get(cluster::status).fallback(error::method_not_allowed))
        .route("/v1/cluster/members", post(cluster::add_member).fallback(error::method_not_allowed))
        .route(
            "/v1/cluster/members/{id}",
            axum::routing::delete(cluster::remove_member).fallback(error::method_not_allowed),
        )
        .route("/v1/cluster/leader", post(cluster::transfer_leader).fallback(error::method_not_allowed))
        .route("/v1/cluster/verify", post(cluster::verify).fallback(error::method_not_allowed))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(error::not_found)
        // One `layer` call for the whole stack: axum boxes and clones every layer it is given
        // separately for each request.
        .layer(
            tower::ServiceBuilder::new()
                // Beyond `max_in_flight` requests the node answers 503 `overloaded` at once instead
                // of queueing without bound; every request is counted and timed by its route.
                .layer(gate::GateLayer::new(service.metrics.clone(), max_in_flight))
                // A client that stops sending its body mid-way cannot hold a request open forever.
                .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(Duration::from_secs(30)))
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(service)
}

/// Serve HTTP on `listener` until `shutdown` resolves (keep-alive connections are drained).
pub async fn serve(
    service: Arc<Service>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Small responses must not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, router(service)).with_graceful_shutdown(shutdown).await
}

type ApiResult<T> = Result<T, ApiError>;
