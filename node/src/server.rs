//! `ferrokv serve`: bind the listeners, start the gRPC and HTTP servers, bring up the Raft
//! member (bootstrap), run background duties, and stop cleanly.
//!
//! Stopping (SIGTERM/Ctrl-C): a leader first hands leadership to the most caught-up voter so
//! the cluster does not wait an election timeout, then Raft stops, the log is flushed and the
//! servers drain. Every step is bounded so the process exits within a few seconds.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::anti_entropy;
use crate::bootstrap;
use crate::config::ServeArgs;
use crate::grpc;
use crate::http;
use crate::maintenance;
use crate::metrics::Metrics;
use crate::service::Service;

pub async fn run(cfg: ServeArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let service = Service::new(cfg.clone(), Arc::new(Metrics::new()?));
    let http_listener =
        TcpListener::bind(cfg.http_addr).await.with_context(|| format!("binding HTTP {}", cfg.http_addr))?;
    let grpc_listener =
        TcpListener::bind(cfg.grpc_addr).await.with_context(|| format!("binding gRPC {}", cfg.grpc_addr))?;
    tracing::info!(node_id = cfg.node_id, http = %cfg.http_addr, grpc = %cfg.grpc_addr, data_dir = %cfg.data_dir.display(), "ferrokv node starting");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let grpc = tokio::spawn(grpc::serve(service.clone(), grpc_listener, stopped(stop_rx.clone())));
    let http = tokio::spawn(http::serve(service.clone(), http_listener, stopped(stop_rx.clone())));
    let maint = tokio::spawn(maintenance::run(service.clone(), stop_rx.clone()));
    let anti_entropy = tokio::spawn(anti_entropy::run(service.clone(), stop_rx.clone()));
    let mut boot = tokio::spawn(bootstrap::start(service.clone()));

    tokio::pin!(shutdown);
    let mut booting = true;
    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            r = &mut boot, if booting => {
                booting = false;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(e.context("start-up failed")),
                    Err(e) => break Err(anyhow::anyhow!("start-up task failed: {e}")),
                }
            }
        }
    };
    tracing::info!("stopping");
    if booting {
        boot.abort();
    }
    stop(&service).await;
    stop_tx.send_replace(true);
    let grace = Duration::from_secs(3);
    let _ = tokio::time::timeout(grace, grpc).await;
    let _ = tokio::time::timeout(grace, http).await;
    let _ = tokio::time::timeout(grace, maint).await;
    let _ = tokio::time::timeout(grace, anti_entropy).await;
    tracing::info!("stopped");
    outcome
}

/// Hand off leadership, stop Raft, flush the log.
async fn stop(service: &Service) {
    let Some(core) = service.try_core() else {
        return;
    };
    if core.raft.is_leader() {
        match tokio::time::timeout(Duration::from_secs(3), service.transfer_leadership_as_leader(core, None)).await {
            Ok(Ok(to)) => tracing::info!(?to, "handed leadership over"),
            Ok(Err(e)) => tracing::warn!("leadership transfer failed: {e}"),
            Err(_) => tracing::warn!("leadership transfer timed out"),
        }
    }
    if tokio::time::timeout(Duration::from_secs(5), core.raft.shutdown()).await.is_err() {
        tracing::warn!("raft did not stop in time");
    }
    // close() blocks until the queue is on disk: keep it off the async workers.
    let log = core.log.clone();
    let _ = tokio::task::spawn_blocking(move || log.close()).await;
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
