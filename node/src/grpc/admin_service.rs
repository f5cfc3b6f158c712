//! Admin RPCs: status probes, membership changes run on the leader, identity assignment.

use std::sync::Arc;
use std::time::Duration;

use ferrokv_proto::AddMemberReply;
use ferrokv_proto::AddMemberRequest;
use ferrokv_proto::AssignReply;
use ferrokv_proto::AssignRequest;
use ferrokv_proto::DigestReply;
use ferrokv_proto::DigestRequest;
use ferrokv_proto::FetchStateRequest;
use ferrokv_proto::FormReply;
use ferrokv_proto::FormRequest;
use ferrokv_proto::ForwardReply;
use ferrokv_proto::RemoveMemberRequest;
use ferrokv_proto::RepairReply;
use ferrokv_proto::RepairRequest;
use ferrokv_proto::StateChunk;
use ferrokv_proto::StatusReply;
use ferrokv_proto::StatusRequest;
use ferrokv_proto::TransferLeadershipRequest;
use openraft::async_runtime::WatchReceiver as _;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::kv_service::forward_reply;
use crate::error::ApiError;
use crate::service::Offer;
use crate::service::Service;
use crate::types::Member;

pub struct AdminService {
    service: Arc<Service>,
}

impl AdminService {
    pub fn new(service: Arc<Service>) -> Self {
        AdminService { service }
    }
}

/// State chunks streamed to a replica being repaired (as big as snapshot chunks).
const STATE_CHUNK: usize = 1024 * 1024;

type StateStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<StateChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ferrokv_proto::admin_server::Admin for AdminService {
    type FetchStateStream = StateStream;

    async fn digest(&self, req: Request<DigestRequest>) -> Result<Response<DigestReply>, Status> {
        let req = req.into_inner();
        let wait = Duration::from_millis(req.wait_ms.into());
        let (applied_index, digest) = self.service.digest_at(req.index, wait).await.map_err(ApiError::into_status)?;
        Ok(Response::new(DigestReply {
            applied_index,
            found: digest.is_some(),
            digest: digest.map(|d| d.to_bytes().to_vec()).unwrap_or_default().into(),
        }))
    }

    async fn fetch_state(&self, _req: Request<FetchStateRequest>) -> Result<Response<StateStream>, Status> {
        let service = self.service.clone();
        let (index, data) = tokio::task::spawn_blocking(move || service.state_for_repair())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(ApiError::into_status)?;
        let chunks: Vec<Result<StateChunk, Status>> = (0..data.len().div_ceil(STATE_CHUNK).max(1))
            .map(|i| {
                let end = ((i + 1) * STATE_CHUNK).min(data.len());
                Ok(StateChunk { index, data: data.slice(i * STATE_CHUNK..end) })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn repair(&self, req: Request<RepairRequest>) -> Result<Response<RepairReply>, Status> {
        let req = req.into_inner();
        let (applied_index, digest) =
            self.service.repair_from(&req.leader_grpc_addr).await.map_err(ApiError::into_status)?;
        Ok(Response::new(RepairReply { applied_index, digest: digest.to_bytes().to_vec().into() }))
    }

    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let s = &self.service;
        let me = s.me();
        let mut reply =
            StatusReply { node_id: me.node_id, grpc_addr: me.grpc_addr, http_addr: me.http_addr, ..Default::default() };
        if let Some(core) = s.try_core() {
            let m = core.raft.metrics().borrow_watched().clone();
            reply.raft_id = core.raft_id;
            // Initialized: this member has a vote or a log, i.e. it belongs to a formed cluster.
            reply.initialized = m.last_log_index.is_some() || m.current_term > 0;
            reply.leader_raft_id = m.current_leader.unwrap_or(0);
            reply.term = m.current_term;
            reply.applied_index = m.last_applied.map_or(0, |l| l.index);
            reply.cluster_id = core.sm.read(|sm| sm.kv.cluster_id().unwrap_or_default().to_string());
        }
        Ok(Response::new(reply))
    }

    async fn add_member(&self, req: Request<AddMemberRequest>) -> Result<Response<AddMemberReply>, Status> {
        let req = req.into_inner();
        let member = Member { node_id: req.node_id, grpc_addr: req.grpc_addr, http_addr: req.http_addr };
        let result = match self.service.core() {
            // One hop only: a forwarded request is served here or fails with not_leader.
            Ok(core) if req.forwarded => self.service.add_member_as_leader(core, member).await,
            Ok(_) => self.service.add_member(member).await,
            Err(e) => Err(e),
        };
        Ok(Response::new(match result {
            Ok(raft_id) => AddMemberReply { raft_id, error: None },
            Err(e) => AddMemberReply { raft_id: 0, error: Some(e.into()) },
        }))
    }

    async fn remove_member(&self, req: Request<RemoveMemberRequest>) -> Result<Response<ForwardReply>, Status> {
        let node_id = req.into_inner().node_id;
        let result = match self.service.core() {
            Ok(core) => self.service.remove_member_as_leader(core, node_id).await,
            Err(e) => Err(e),
        };
        forward_reply(result)
    }

    async fn transfer_leadership(
        &self,
        req: Request<TransferLeadershipRequest>,
    ) -> Result<Response<ForwardReply>, Status> {
        let to = Some(req.into_inner().to_node_id).filter(|&n| n != 0);
        let result = match self.service.core() {
            Ok(core) => self.service.transfer_leadership_as_leader(core, to).await,
            Err(e) => Err(e),
        };
        forward_reply(result)
    }

    async fn form(&self, req: Request<FormRequest>) -> Result<Response<FormReply>, Status> {
        self.form_inner(req.into_inner()).await.map(|()| Response::new(FormReply {}))
    }

    async fn assign(&self, req: Request<AssignRequest>) -> Result<Response<AssignReply>, Status> {
        let req = req.into_inner();
        let s = &self.service;
        if req.node_id != s.node_id() {
            return Err(Status::failed_precondition(format!("this is node {}, not node {}", s.node_id(), req.node_id)));
        }
        // Already running a member: an earlier assignment wins, so a retried add is idempotent.
        if let Some(core) = s.try_core() {
            return Ok(Response::new(AssignReply { raft_id: core.raft_id }));
        }
        let offer = Offer::Assign { raft_id: req.raft_id, cluster_id: req.cluster_id };
        if !s.deliver_offer(offer) {
            return Err(ApiError::not_ready("this node is not waiting to be added").into_status());
        }
        match s.wait_core(Duration::from_secs(10)).await {
            Some(core) => Ok(Response::new(AssignReply { raft_id: core.raft_id })),
            None => Err(Status::unavailable("the node did not start its Raft member in time")),
        }
    }
}

impl AdminService {
    async fn form_inner(&self, req: FormRequest) -> Result<(), Status> {
        let s = &self.service;
        let members: std::collections::BTreeMap<u64, String> = req.members.into_iter().collect();
        let mine = s.cfg.initial_members.as_ref().map(|m| &m.0);
        if mine != Some(&members) {
            return Err(Status::failed_precondition(format!(
                "node {} was started with other --initial-members than seed {}",
                s.node_id(),
                req.seed_node_id
            )));
        }
        if s.try_core().is_some() {
            // Already formed (a retried Form): nothing to do.
            return Ok(());
        }
        if !s.deliver_offer(Offer::Form { members }) {
            return Err(Status::failed_precondition("this node is not waiting to form a cluster"));
        }
        match s.wait_core(Duration::from_secs(10)).await {
            Some(_) => Ok(()),
            None => Err(Status::unavailable("the node did not start its Raft member in time")),
        }
    }
}

impl ApiError {
    pub fn into_status(self) -> Status {
        Status::unavailable(format!("{}: {}", self.code, self.message))
    }
}
