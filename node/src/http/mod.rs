//! The client-facing HTTP API (axum): keys under `/v1/kv`, the cluster under `/v1/cluster`,
//! and `/healthz`, `/readyz`, `/metrics`. Every error is JSON with a stable code.

mod cluster;
mod debug;
mod direct;
mod error;
mod gate;
mod health;
mod kv;
mod params;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::routing::post;
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::service::Service;

pub type AppState = Arc<Service>;

/// The router with every route and layer; `gate` admits and counts its requests.
fn router(service: Arc<Service>, gate: gate::GateLayer) -> Router {
    // Room for the largest value plus nothing else: the body *is* the value.
    let body_limit = service.cfg.max_value_bytes;
    let mut router = Router::new();
    if service.cfg.unsafe_fault_injection {
        router = router
            .route("/v1/debug/corrupt", post(debug::corrupt).fallback(error::method_not_allowed))
            .route("/v1/debug/hold-apply", post(debug::hold_apply).fallback(error::method_not_allowed));
    }
    router
        .route("/v1/kv", get(kv::list).fallback(error::method_not_allowed))
        .route("/v1/kv/", axum::routing::any(kv::empty_key))
        .route(
            direct::KEY_ROUTE,
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
                .layer(gate)
                // A client that stops sending its body mid-way cannot hold a request open forever.
                .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(direct::BODY_TIMEOUT))
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(service)
}

/// Serve HTTP/1.1 on `listener` until `shutdown` resolves, then let open connections finish the
/// request they are on and close (keep-alive connections are drained).
pub async fn serve(
    service: Arc<Service>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gate = gate::GateLayer::new(service.metrics.clone(), service.cfg.max_in_flight_requests);
    let header_timeout = Duration::from_millis(service.cfg.http_header_timeout_ms);
    let node = direct::NodeService::new(router(service.clone(), gate.clone()), service, gate);
    // Every connection holds a receiver: `true` asks it to close; `closed()` resolves once all
    // of them are gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors, say: wait a little instead of spinning.
                    tracing::warn!("accepting an HTTP connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small responses must not wait for Nagle's algorithm.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        tokio::spawn(connection(tcp, node.clone(), header_timeout, stop_rx.clone()));
    }
    drop(listener);
    drop(stop_rx);
    stop_tx.send_replace(true);
    stop_tx.closed().await;
    Ok(())
}

/// One client connection, until the client closes it, or sends no complete request head within
/// `header_timeout` of its previous request (or of connecting), or, once `stop` turns true,
/// until the request in progress is answered.
async fn connection(
    tcp: TcpStream,
    node: direct::NodeService,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(tcp), node)
        .with_upgrades();
    let mut conn = pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::trace!("HTTP connection: {e}");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;
