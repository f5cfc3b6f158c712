//! Inbound inter-node traffic: the tonic services (Raft, forwarded client requests, admin).

mod admin_service;
mod kv_service;
mod raft_service;

use std::sync::Arc;

use ferrokv_proto::admin_server::AdminServer;
use ferrokv_proto::kv_server::KvServer;
use ferrokv_proto::raft_server::RaftServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::network::peers::MAX_GRPC_MESSAGE;
use crate::service::Service;

/// Serve the gRPC services on `listener` until `shutdown` resolves.
pub async fn serve(
    service: Arc<Service>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let raft = RaftServer::new(raft_service::RaftService::new(service.clone()))
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let kv = KvServer::new(kv_service::KvService::new(service.clone()))
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let admin = AdminServer::new(admin_service::AdminService::new(service));
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(raft)
        .add_service(kv)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}

/// Accepted connections with Nagle's algorithm off. Tonic sets `TCP_NODELAY` only on listeners
/// it binds itself; without it small Raft replies wait for the peer's delayed ACK (~40 ms).
fn incoming(listener: TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// Map a decode failure of an internal payload to a gRPC status.
fn bad_payload(e: crate::codec::CodecError) -> tonic::Status {
    tonic::Status::invalid_argument(format!("undecodable payload: {e}"))
}
