//! Client requests forwarded by other nodes; served only if this node leads (no second hop).

use std::sync::Arc;

use bytes::Bytes;
use ferrokv_proto::ForwardReply;
use ferrokv_proto::ReadIndexRequest;
use ferrokv_proto::ReadRequest;
use ferrokv_proto::WriteRequest;
use serde::Serialize;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::bad_payload;
use crate::codec;
use crate::command::Command;
use crate::error::ApiError;
use crate::service::ReadQuery;
use crate::service::Service;

pub struct KvService {
    service: Arc<Service>,
}

impl KvService {
    pub fn new(service: Arc<Service>) -> Self {
        KvService { service }
    }
}

/// Pack a result the way the forwarding node unpacks it.
pub(super) fn forward_reply<T: Serialize>(result: Result<T, ApiError>) -> Result<Response<ForwardReply>, Status> {
    let reply = match result {
        Ok(v) => ForwardReply {
            outcome: Bytes::from(codec::encode(&v).map_err(|e| Status::internal(e.to_string()))?),
            error: None,
        },
        Err(e) => ForwardReply { outcome: Bytes::new(), error: Some(e.into()) },
    };
    Ok(Response::new(reply))
}

#[tonic::async_trait]
impl ferrokv_proto::kv_server::Kv for KvService {
    async fn write(&self, req: Request<WriteRequest>) -> Result<Response<ForwardReply>, Status> {
        let cmd: Command = codec::decode(&req.into_inner().command).map_err(bad_payload)?;
        forward_reply(self.service.write_as_leader(cmd).await)
    }

    async fn read(&self, req: Request<ReadRequest>) -> Result<Response<ForwardReply>, Status> {
        let query: ReadQuery = codec::decode(&req.into_inner().query).map_err(bad_payload)?;
        forward_reply(self.service.read_forwarded(query).await)
    }

    async fn read_index(&self, _req: Request<ReadIndexRequest>) -> Result<Response<ForwardReply>, Status> {
        forward_reply(self.service.read_index_as_leader().await)
    }
}
