//! Cluster administration: the cluster view, adding and removing members, moving leadership.
//! Changes run on the leader; other nodes forward them over gRPC.

use openraft::async_runtime::WatchReceiver as _;
use std::collections::BTreeSet;
use std::time::Duration;

use ferrokv_proto::AddMemberRequest;
use ferrokv_proto::AssignRequest;
use ferrokv_proto::RemoveMemberRequest;
use ferrokv_proto::TransferLeadershipRequest;
use openraft::ChangeMembers;
use serde::Serialize;
use tokio::time::Instant;

use crate::command::Command;
use crate::error::ApiError;
use crate::membership::JOINED_ID_BASE;
use crate::service::Core;
use crate::service::Service;
use crate::service::write::Route;
use crate::types::DATA_GROUP;
use crate::types::Member;
use crate::types::RaftId;

/// How long a new member may take to catch up (snapshot + log) before `add` gives up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub id: u64,
    pub raft_id: RaftId,
    pub grpc_addr: String,
    pub http_addr: String,
    pub role: &'static str,
    pub is_leader: bool,
    /// Last log index known replicated to the member (known on the leader only).
    pub matched_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub cluster_id: Option<String>,
    /// The node answering.
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub members: Vec<MemberView>,
}

impl Service {
    /// This node's view of the cluster.
    pub fn cluster_view(&self) -> Result<ClusterView, ApiError> {
        let core = self.core()?;
        let m = core.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(raft_id, member)| MemberView {
                id: member.node_id,
                raft_id: *raft_id,
                grpc_addr: member.grpc_addr.clone(),
                http_addr: member.http_addr.clone(),
                role: if voters.contains(raft_id) { "voter" } else { "learner" },
                is_leader: m.current_leader == Some(*raft_id),
                matched_index: m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(raft_id).cloned())
                    .map(|l| l.map_or(0, |l| l.index)),
            })
            .collect();
        let leader_id = m.current_leader.and_then(|l| membership.get_node(&l)).map(|n| n.node_id);
        Ok(ClusterView {
            cluster_id: core.sm.read(|sm| sm.kv.cluster_id().map(String::from)),
            node_id: self.node_id(),
            leader_id,
            term: m.current_term,
            commit_index: m.local_committed.map_or(0, |l| l.index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            members,
        })
    }

    /// Add a node to the cluster as a voter (learner first, promoted once caught up). A node id
    /// that is already a member under an older Raft id (its data was wiped) is replaced.
    pub async fn add_member(&self, member: Member) -> Result<RaftId, ApiError> {
        let core = self.core()?;
        match core.leader_route() {
            Route::Local => self.add_member_as_leader(core, member).await,
            Route::Remote(addr) => {
                let mut client = self.pool.admin(&addr).map_err(|e| ApiError::internal(e.to_string()))?;
                let req = AddMemberRequest {
                    group_id: DATA_GROUP,
                    node_id: member.node_id,
                    grpc_addr: member.grpc_addr,
                    http_addr: member.http_addr,
                    forwarded: true,
                };
                let reply = client
                    .add_member(req)
                    .await
                    .map_err(|s| ApiError::unavailable("leader_unreachable", s.message().to_string()))?
                    .into_inner();
                match reply.error {
                    Some(e) => Err(e.into()),
                    None => Ok(reply.raft_id),
                }
            }
            Route::Unknown => Err(ApiError::no_quorum("no leader is known; try again")),
        }
    }

    pub async fn add_member_as_leader(&self, core: &Core, member: Member) -> Result<RaftId, ApiError> {
        let _serial = self.admin_lock.lock().await;
        if !matches!(core.leader_route(), Route::Local) {
            return Err(ApiError::unavailable("not_leader", "this node is not the leader"));
        }
        // Allocate a never-used Raft id from the log (see membership.rs).
        let alloc = self.write_as_leader(Command::Noop).await?;
        let proposed = JOINED_ID_BASE + alloc.index;
        let cluster_id = core.sm.read(|sm| sm.kv.cluster_id().unwrap_or_default().to_string());
        let mut admin =
            self.pool.admin(&member.grpc_addr).map_err(|e| ApiError::bad_request("invalid_address", e.to_string()))?;
        let assign = AssignRequest { group_id: DATA_GROUP, node_id: member.node_id, raft_id: proposed, cluster_id };
        let raft_id = tokio::time::timeout(Duration::from_secs(10), admin.assign(assign))
            .await
            .map_err(|_| ApiError::unavailable("member_unreachable", "the new node did not answer in time"))?
            .map_err(|s| {
                ApiError::unavailable(
                    "member_unreachable",
                    format!("the new node refused or is unreachable: {}", s.message()),
                )
            })?
            .into_inner()
            .raft_id;
        tracing::info!(node_id = member.node_id, raft_id, "adding member as learner");
        tokio::time::timeout(CATCH_UP_TIMEOUT, core.raft.add_learner(raft_id, member.clone(), true))
            .await
            .map_err(|_| ApiError::unavailable("catch_up_timeout", "the new member did not catch up in time"))?
            .map_err(|e| ApiError::unavailable("membership_change_failed", e.to_string()))?;
        // Promote, replacing any older Raft ids of the same node (a wiped node's old self).
        let m = core.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let stale: BTreeSet<RaftId> = membership
            .nodes()
            .filter(|(id, n)| n.node_id == member.node_id && **id != raft_id)
            .map(|(id, _)| *id)
            .collect();
        let mut voters: BTreeSet<RaftId> = membership.voter_ids().filter(|id| !stale.contains(id)).collect();
        voters.insert(raft_id);
        core.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
            .await
            .map_err(|e| ApiError::unavailable("membership_change_failed", e.to_string()))?;
        if !stale.is_empty() {
            tracing::info!(node_id = member.node_id, ?stale, "removed the node's previous Raft ids");
            let _ = core.raft.change_membership(ChangeMembers::RemoveNodes(stale), false).await;
        }
        tracing::info!(node_id = member.node_id, raft_id, "member promoted to voter");
        Ok(raft_id)
    }

    /// Remove every Raft member of node `node_id`.
    pub async fn remove_member(&self, node_id: u64) -> Result<(), ApiError> {
        let core = self.core()?;
        match core.leader_route() {
            Route::Local => self.remove_member_as_leader(core, node_id).await,
            Route::Remote(addr) => {
                let mut client = self.pool.admin(&addr).map_err(|e| ApiError::internal(e.to_string()))?;
                let reply = client
                    .remove_member(RemoveMemberRequest { group_id: DATA_GROUP, node_id })
                    .await
                    .map_err(|s| ApiError::unavailable("leader_unreachable", s.message().to_string()))?
                    .into_inner();
                reply.error.map_or(Ok(()), |e| Err(e.into()))
            }
            Route::Unknown => Err(ApiError::no_quorum("no leader is known; try again")),
        }
    }

    pub async fn remove_member_as_leader(&self, core: &Core, node_id: u64) -> Result<(), ApiError> {
        let _serial = self.admin_lock.lock().await;
        if !matches!(core.leader_route(), Route::Local) {
            return Err(ApiError::unavailable("not_leader", "this node is not the leader"));
        }
        let m = core.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let ids: BTreeSet<RaftId> =
            membership.nodes().filter(|(_, n)| n.node_id == node_id).map(|(id, _)| *id).collect();
        if ids.is_empty() {
            return Err(ApiError::new(404, "member_not_found", format!("node {node_id} is not a member")));
        }
        let voters: BTreeSet<RaftId> = membership.voter_ids().filter(|id| !ids.contains(id)).collect();
        if voters.is_empty() {
            return Err(ApiError::bad_request("last_voter", "cannot remove the last voter"));
        }
        core.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
            .await
            .map_err(|e| ApiError::unavailable("membership_change_failed", e.to_string()))?;
        // Voters removed above may remain as learners in some paths: drop the node entirely.
        let left: BTreeSet<RaftId> = {
            let m = core.raft.metrics().borrow_watched().clone();
            m.membership_config.membership().nodes().filter(|(_, n)| n.node_id == node_id).map(|(id, _)| *id).collect()
        };
        if !left.is_empty() {
            core.raft
                .change_membership(ChangeMembers::RemoveNodes(left), false)
                .await
                .map_err(|e| ApiError::unavailable("membership_change_failed", e.to_string()))?;
        }
        tracing::info!(node_id, "member removed");
        Ok(())
    }

    /// Hand leadership to node `to` (or the most caught-up other voter) and wait for it.
    pub async fn transfer_leadership(&self, to: Option<u64>) -> Result<Option<u64>, ApiError> {
        let core = self.core()?;
        match core.leader_route() {
            Route::Local => self.transfer_leadership_as_leader(core, to).await,
            Route::Remote(addr) => {
                let mut client = self.pool.admin(&addr).map_err(|e| ApiError::internal(e.to_string()))?;
                let req = TransferLeadershipRequest { group_id: DATA_GROUP, to_node_id: to.unwrap_or(0) };
                let reply = client
                    .transfer_leadership(req)
                    .await
                    .map_err(|s| ApiError::unavailable("leader_unreachable", s.message().to_string()))?
                    .into_inner();
                if let Some(e) = reply.error {
                    return Err(e.into());
                }
                Ok(crate::codec::decode(&reply.outcome).map_err(|e| ApiError::internal(e.to_string()))?)
            }
            Route::Unknown => Err(ApiError::no_quorum("no leader is known; try again")),
        }
    }

    pub async fn transfer_leadership_as_leader(&self, core: &Core, to: Option<u64>) -> Result<Option<u64>, ApiError> {
        let m = core.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(core.raft_id) {
            return Err(ApiError::unavailable("not_leader", "this node is not the leader"));
        }
        let membership = m.membership_config.membership();
        let target =
            match to {
                Some(node_id) => membership
                    .voter_ids()
                    .find(|id| membership.get_node(id).is_some_and(|n| n.node_id == node_id))
                    .ok_or_else(|| ApiError::new(404, "member_not_found", format!("node {node_id} is not a voter")))?,
                None => {
                    let matched = |id: &RaftId| {
                        m.replication.as_ref().and_then(|r| r.get(id).cloned()).flatten().map_or(0, |l| l.index)
                    };
                    membership.voter_ids().filter(|id| *id != core.raft_id).max_by_key(matched).ok_or_else(|| {
                        ApiError::bad_request("no_other_voter", "there is no other voter to take over")
                    })?
                }
            };
        if target == core.raft_id {
            return Ok(Some(self.node_id()));
        }
        core.raft.trigger().transfer_leader(target).await.map_err(|e| ApiError::internal(e.to_string()))?;
        let deadline = Instant::now() + self.cfg.request_timeout();
        let mut rx = core.raft.metrics();
        loop {
            let leader = rx.borrow_watched().current_leader;
            if leader.is_some_and(|l| l != core.raft_id) {
                return Ok(leader.and_then(|l| membership.get_node(&l)).map(|n| n.node_id));
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(ApiError::unavailable("transfer_timeout", "leadership did not move in time"));
            }
        }
    }
}
