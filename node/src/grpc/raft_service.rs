//! Raft RPCs from peers, handed to the local Raft after checking they are meant for it.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use ferrokv_proto::RaftReply;
use ferrokv_proto::RaftRequest;
use ferrokv_proto::SnapshotChunk;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use super::bad_payload;
use crate::codec;
use crate::service::Core;
use crate::service::Service;
use crate::storage::Incoming;
use crate::types::DATA_GROUP;
use crate::types::GroupId;
use crate::types::Raft;
use crate::types::RaftId;
use crate::types::Snapshot;
use crate::types::SnapshotMeta;
use crate::types::Vote;

pub struct RaftService {
    service: Arc<Service>,
}

impl RaftService {
    pub fn new(service: Arc<Service>) -> Self {
        RaftService { service }
    }

    /// The local core, if this request is addressed to it.
    fn core_for(&self, group: GroupId, target: RaftId) -> Result<&Arc<Core>, Status> {
        if group != DATA_GROUP {
            return Err(Status::not_found(format!("no Raft group {group} on this node")));
        }
        let core = self.service.try_core().ok_or_else(|| Status::unavailable("this node has no Raft member yet"))?;
        // A reused address must not deliver traffic meant for an older member to this one.
        if core.raft_id != target {
            return Err(Status::failed_precondition(format!(
                "this node runs Raft member {}, not {target}",
                core.raft_id
            )));
        }
        Ok(core)
    }
}

impl RaftService {
    /// Decode a unary Raft request, hand it to the addressed member, encode its answer.
    async fn handle<Req, Resp, E, F, Fut>(
        &self,
        req: Request<RaftRequest>,
        call: F,
    ) -> Result<Response<RaftReply>, Status>
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        E: std::fmt::Display,
        F: FnOnce(Raft, Req) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        let req = req.into_inner();
        let core = self.core_for(req.group_id, req.target)?;
        let rpc = codec::decode(&req.payload).map_err(bad_payload)?;
        let resp = call(core.raft.clone(), rpc).await.map_err(fatal)?;
        reply(&resp)
    }
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftReply>, Status> {
    let payload = codec::encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftReply { payload: Bytes::from(payload) }))
}

fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft stopped: {e}"))
}

#[tonic::async_trait]
impl ferrokv_proto::raft_server::Raft for RaftService {
    async fn append_entries(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.handle(req, |raft, rpc| async move { raft.append_entries(rpc).await }).await
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.handle(req, |raft, rpc| async move { raft.vote(rpc).await }).await
    }

    type StreamAppendStream = futures::stream::BoxStream<'static, Result<RaftReply, Status>>;

    async fn stream_append(
        &self,
        req: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let inbound = req.into_inner();
        // Answer at once, without waiting for a first request: the sender only starts sending
        // once the stream is open. Every request is checked as it arrives instead.
        let core =
            self.service.try_core().ok_or_else(|| Status::unavailable("this node has no Raft member yet"))?.clone();
        let raft_id = core.raft_id;
        // The first bad message (wrong group or target, undecodable) ends the input: answers
        // must stay one-to-one with requests, so nothing is skipped. Raft answers what came
        // before it and the stream closes; the leader then opens a new one.
        let decoded = inbound
            .map(move |r| match r {
                Ok(m) if m.group_id == DATA_GROUP && m.target == raft_id => codec::decode(&m.payload).ok(),
                _ => None,
            })
            .take_while(|r| futures::future::ready(r.is_some()))
            .filter_map(futures::future::ready);
        let replies = core.raft.stream_append(decoded).map(|result| match result {
            Ok(r) => codec::encode(&r)
                .map(|p| RaftReply { payload: Bytes::from(p) })
                .map_err(|e| Status::internal(e.to_string())),
            Err(e) => Err(fatal(e)),
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn pre_vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.handle(req, |raft, rpc| async move { raft.pre_vote(rpc).await }).await
    }

    async fn transfer_leader(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.handle(req, |raft, rpc| async move { raft.handle_transfer_leader(rpc).await }).await
    }

    async fn install_snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> Result<Response<RaftReply>, Status> {
        let mut stream = req.into_inner();
        let first = stream.next().await.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let core = self.core_for(first.group_id, first.target)?.clone();
        let (vote, meta): (Vote, SnapshotMeta) = codec::decode(&first.meta).map_err(bad_payload)?;
        // Written to a file as it arrives, never held whole in memory.
        let mut incoming = core.sm.incoming_snapshot().map_err(receiving)?;
        let mut piece = Some(first.data);
        while let Some(data) = piece {
            incoming = append(incoming, data).await?;
            piece = stream.next().await.transpose()?.map(|chunk| chunk.data);
        }
        // Validate before Raft sees it: a state-machine error on install would stop the node.
        let data = tokio::task::spawn_blocking(move || incoming.finish())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::invalid_argument(format!("rejected snapshot: {e}")))?;
        let resp = core.raft.install_full_snapshot(vote, Snapshot { meta, snapshot: data }).await.map_err(fatal)?;
        reply(&resp)
    }
}

/// Append a piece of a peer's snapshot, off the async runtime.
async fn append(mut incoming: Incoming, data: Bytes) -> Result<Incoming, Status> {
    tokio::task::spawn_blocking(move || incoming.append(&data).map(|()| incoming))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(receiving)
}

fn receiving(e: std::io::Error) -> Status {
    Status::internal(format!("receiving a snapshot: {e}"))
}
