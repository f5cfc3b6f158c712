//! One lazily connected gRPC channel per peer address, shared by Raft replication, request
//! forwarding and admin calls (HTTP/2 multiplexes them over one connection).
//!
//! Channels connect lazily: a peer's host name (e.g. StatefulSet DNS) is resolved when a call
//! is made, and re-resolved on reconnect, so a name that does not resolve yet at start-up is
//! simply retried.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use ferrokv_proto::admin_client::AdminClient;
use ferrokv_proto::kv_client::KvClient;
use ferrokv_proto::raft_client::RaftClient;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

/// Largest gRPC message accepted or sent (log batches, snapshot chunks are smaller).
pub const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;

#[derive(Clone, Default)]
pub struct PeerPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerPool {
    pub fn new() -> Self {
        Self::default()
    }

    /// The channel to `addr` (`host:port`), created on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let ch = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    pub fn raft(&self, addr: &str) -> Result<RaftClient<Channel>, tonic::transport::Error> {
        Ok(RaftClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE))
    }

    pub fn kv(&self, addr: &str) -> Result<KvClient<Channel>, tonic::transport::Error> {
        Ok(KvClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE))
    }

    pub fn admin(&self, addr: &str) -> Result<AdminClient<Channel>, tonic::transport::Error> {
        Ok(AdminClient::new(self.channel(addr)?))
    }
}

/// True when a failed call certainly never reached the peer (the connection could not be
/// made, or it closed while the request still waited to be sent: hyper reports that as
/// "canceled"), so it is safe to retry even a non-idempotent request elsewhere.
pub fn is_connect_error(status: &tonic::Status) -> bool {
    // tonic turns hyper's "canceled" (the request was still queued for a connection that
    // closed) into CANCELLED with hyper's message; a stream the server reset arrives as
    // CANCELLED too, but with an "h2 protocol error" message, and may have been processed.
    if status.code() == tonic::Code::Cancelled {
        return status.message().starts_with("operation was canceled");
    }
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source = status.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable) {
                return true;
            }
        }
        let text = err.to_string();
        if text.contains("tcp connect error") || text.contains("dns error") || text.contains("client error (Connect)") {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_that_never_left_count_as_connect_errors() {
        // What tonic makes of hyper's "canceled": the request never left the queue.
        assert!(is_connect_error(&tonic::Status::cancelled("operation was canceled: connection closed")));
        // A stream reset by the server: it may have been processed.
        assert!(!is_connect_error(&tonic::Status::cancelled("h2 protocol error: stream reset")));
        assert!(!is_connect_error(&tonic::Status::unavailable("error reading a body from connection")));
        assert!(!is_connect_error(&tonic::Status::internal("operation was canceled")));
    }
}
