//! Anti-entropy: replicas prove, periodically, that they hold the same state.
//!
//! The leader appends a `Checkpoint` entry to the log. Every replica, applying it, records its
//! state digest at that log index (`storage::state_machine`), so digests are compared at the same
//! point of the log whatever each replica's pace and whatever its clock says. The leader then asks
//! every member for its digest at that index (`Admin.Digest`) and compares:
//!
//! - equal: the replica is in sync (`ferrokv_replica_divergence{peer} 0`);
//! - different, and the leader's digest is shared by a majority of voters: the replica diverged.
//!   It is logged as an error, exported as `ferrokv_replica_divergence{peer} 1`, and (unless
//!   `--anti-entropy-repair false`) repaired: the replica fetches the leader's state
//!   (`Admin.FetchState`), rolls it forward with its own committed log up to its applied index,
//!   and swaps it in (`Admin.Repair`);
//! - the leader's digest is the odd one out (the other voters agree among themselves and form a
//!   majority): the leader hands leadership to one of them, whose next round repairs the old leader;
//! - no majority agrees on any digest: logged, nothing is repaired automatically.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytes::BytesMut;
use ferrokv_proto::DigestRequest;
use ferrokv_proto::FetchStateRequest;
use ferrokv_proto::RepairRequest;
use futures::StreamExt;
use futures::future::join_all;
use openraft::RaftLogReader;
use openraft::async_runtime::WatchReceiver as _;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::command::Command;
use crate::command::CommandResult;
use crate::error::ApiError;
use crate::service::Core;
use crate::service::Service;
use crate::state::Digest;
use crate::storage::snapshot;
use crate::types::DATA_GROUP;
use crate::types::Member;
use crate::types::RaftId;

/// How long a replica may take to apply a checkpoint before it counts as unavailable.
const DIGEST_WAIT: Duration = Duration::from_secs(3);
/// Bound on one repair (fetching the leader's state and swapping it in).
const REPAIR_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at catching the replica's applied index while it keeps applying.
const SWAP_ATTEMPTS: usize = 200;

/// What one member said about a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberDigest {
    pub node_id: u64,
    pub raft_id: RaftId,
    pub voter: bool,
    /// The member's digest at the checkpoint; `None` when it has not applied it in time, no
    /// longer remembers it, or could not be reached.
    pub digest: Option<String>,
    pub applied_index: Option<u64>,
    pub error: Option<String>,
}

/// One comparison of every member's state at a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Log index of the checkpoint.
    pub index: u64,
    /// The digest of whoever applied the checkpoint first (the leader, for the leader's rounds).
    pub digest: String,
    pub members: Vec<MemberDigest>,
    /// True when every member answered with the same digest.
    pub consistent: bool,
}

/// Run the leader's periodic rounds until `stop` flips to true.
pub async fn run(service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    let Some(period) = service.cfg.anti_entropy_interval() else { return };
    let Some(core) = service.wait_core(Duration::MAX).await.cloned() else { return };
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(period) => {}
        }
        if core.raft.metrics().borrow_watched().current_leader != Some(core.raft_id) {
            // Only the leader compares; a former leader must not keep reporting old results.
            service.metrics.replica_divergence.reset();
            continue;
        }
        if let Err(e) = round(&service, &core).await {
            tracing::debug!("anti-entropy round skipped: {e}");
        }
    }
}

/// One leader round: checkpoint, compare, and repair or step down if needed.
async fn round(service: &Service, core: &Core) -> Result<(), ApiError> {
    let (index, digest) = checkpoint(service, true).await?;
    let members = members(core);
    let answers = query_members(service, &members, index).await;
    let leader = members.get(&core.raft_id).map_or(0, |m| m.node_id);
    let metrics = &service.metrics;
    metrics.replica_divergence.reset();
    let mut diverged = Vec::new();
    let mut agreeing_voters = 0;
    let voters = answers.iter().filter(|a| a.voter).count();
    for a in &answers {
        let same = a.digest.as_deref() == Some(&digest.to_string());
        if a.raft_id != core.raft_id {
            let result = match &a.digest {
                Some(_) if same => "match",
                Some(_) => "diverged",
                None => "unavailable",
            };
            metrics.anti_entropy_checks.with_label_values(&["0", result]).inc();
            metrics
                .replica_divergence
                .with_label_values(&["0", &a.node_id.to_string()])
                .set(i64::from(result == "diverged"));
        }
        if same && a.voter {
            agreeing_voters += 1;
        }
        if a.digest.is_some() && !same {
            diverged.push(a.clone());
        }
    }
    if diverged.is_empty() {
        tracing::debug!(index, %digest, "replicas agree");
        return Ok(());
    }
    for d in &diverged {
        tracing::error!(
            index,
            leader_node = leader,
            leader_digest = %digest,
            node = d.node_id,
            digest = d.digest.as_deref().unwrap_or(""),
            "REPLICA DIVERGENCE: a replica's state differs from the leader's at the same log index"
        );
    }
    if 2 * agreeing_voters > voters {
        if !service.cfg.anti_entropy_repair {
            tracing::error!("automatic repair is off (--anti-entropy-repair false): repair by hand");
            return Ok(());
        }
        let me = service.me().grpc_addr;
        for d in &diverged {
            let Some(member) = members.get(&d.raft_id) else { continue };
            match ask_repair(service, &member.grpc_addr, &me).await {
                Ok((applied, digest)) => tracing::warn!(node = d.node_id, applied, %digest, "replica repaired"),
                Err(e) => tracing::error!(node = d.node_id, "repairing the replica failed: {e}"),
            }
        }
        return Ok(());
    }
    // Is the leader the odd one out? Then a majority of voters agrees on another digest.
    let mut counts: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for d in diverged.iter().filter(|d| d.voter) {
        counts.entry(d.digest.as_deref().unwrap_or("")).or_default().push(d.node_id);
    }
    if let Some((majority_digest, nodes)) = counts.into_iter().find(|(_, n)| 2 * n.len() > voters) {
        tracing::error!(
            %digest,
            majority_digest,
            "this leader's state differs from a majority of voters: handing leadership over to be repaired"
        );
        service.transfer_leadership_as_leader(core, nodes.first().copied()).await?;
    } else {
        tracing::error!("no majority of voters agrees on one digest: not repairing automatically");
    }
    Ok(())
}

/// Append a checkpoint through the leader and return its index and the digest of the replica
/// that applied it (the leader). `as_leader`: only if this node leads (no forwarding).
pub async fn checkpoint(service: &Service, as_leader: bool) -> Result<(u64, Digest), ApiError> {
    let outcome = if as_leader {
        service.write_as_leader(Command::Checkpoint).await?
    } else {
        service.write(Command::Checkpoint).await?
    };
    match outcome.result {
        CommandResult::Checkpoint { digest } => Ok((outcome.index, digest)),
        other => Err(ApiError::internal(format!("a checkpoint answered {other:?}"))),
    }
}

fn members(core: &Core) -> BTreeMap<RaftId, Member> {
    let m = core.raft.metrics().borrow_watched().clone();
    m.membership_config.membership().nodes().map(|(id, n)| (*id, n.clone())).collect()
}

/// Ask every member (this node included) for its digest at checkpoint `index`, concurrently.
async fn query_members(service: &Service, members: &BTreeMap<RaftId, Member>, index: u64) -> Vec<MemberDigest> {
    let voters: Vec<RaftId> = service.try_core().map_or_else(Vec::new, |core| {
        core.raft.metrics().borrow_watched().membership_config.membership().voter_ids().collect()
    });
    let calls = members.iter().map(|(raft_id, member)| {
        let voter = voters.contains(raft_id);
        async move {
            let mut answer = MemberDigest {
                node_id: member.node_id,
                raft_id: *raft_id,
                voter,
                digest: None,
                applied_index: None,
                error: None,
            };
            match ask_digest(service, &member.grpc_addr, index).await {
                Ok((applied, digest)) => {
                    answer.applied_index = Some(applied);
                    answer.digest = digest.map(|d| d.to_string());
                    if answer.digest.is_none() {
                        answer.error = Some(format!("checkpoint {index} not applied or no longer kept"));
                    }
                }
                Err(e) => answer.error = Some(e),
            }
            answer
        }
    });
    join_all(calls).await
}

async fn ask_digest(service: &Service, addr: &str, index: u64) -> Result<(u64, Option<Digest>), String> {
    let mut client = service.pool.admin(addr).map_err(|e| e.to_string())?;
    let req = DigestRequest { group_id: DATA_GROUP, index, wait_ms: DIGEST_WAIT.as_millis() as u32 };
    let call = tokio::time::timeout(DIGEST_WAIT + Duration::from_secs(2), client.digest(req));
    let reply = call.await.map_err(|_| "timed out".to_string())?.map_err(|s| s.message().to_string())?.into_inner();
    let digest = if reply.found { Digest::from_bytes(&reply.digest) } else { None };
    Ok((reply.applied_index, digest))
}

async fn ask_repair(service: &Service, addr: &str, leader_addr: &str) -> Result<(u64, Digest), ApiError> {
    let mut client = service.pool.admin(addr).map_err(|e| ApiError::internal(e.to_string()))?;
    let req = RepairRequest { group_id: DATA_GROUP, leader_grpc_addr: leader_addr.to_string() };
    let reply = tokio::time::timeout(REPAIR_TIMEOUT, client.repair(req))
        .await
        .map_err(|_| ApiError::unavailable("repair_timeout", "the replica did not finish its repair in time"))?
        .map_err(|s| ApiError::unavailable("repair_failed", s.message().to_string()))?
        .into_inner();
    let digest = Digest::from_bytes(&reply.digest).unwrap_or_default();
    Ok((reply.applied_index, digest))
}

impl Service {
    /// This replica's digest at checkpoint `index`, waiting up to `wait` for it to be applied.
    /// Answers the applied index and `None` when the checkpoint is not (or no longer) known.
    pub async fn digest_at(&self, index: u64, wait: Duration) -> Result<(u64, Option<Digest>), ApiError> {
        let core = self.core()?;
        let deadline = Instant::now() + wait.min(Duration::from_secs(30));
        loop {
            let (applied, digest) = core.sm.read(|sm| (sm.applied_index(), sm.checkpoint(index)));
            if applied >= index || Instant::now() >= deadline {
                return Ok((applied, digest));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Compare every member's state at a fresh checkpoint (any node; the checkpoint is written
    /// through the leader).
    pub async fn verify_replicas(&self) -> Result<Verification, ApiError> {
        let core = self.core()?;
        let (index, digest) = checkpoint(self, false).await?;
        // The checkpoint's digest is the same on every correct replica; report the local one
        // when this node applied it (it answered the write, so it did if it leads).
        let members = members(core);
        let answers = query_members(self, &members, index).await;
        let digest = digest.to_string();
        let consistent = answers.iter().all(|a| a.digest.as_deref() == Some(digest.as_str()));
        Ok(Verification { index, digest, members: answers, consistent })
    }

    /// Replace this replica's state with the leader's (fetched from `leader_addr`), rolled
    /// forward with this replica's own committed log to its applied index.
    pub async fn repair_from(&self, leader_addr: &str) -> Result<(u64, Digest), ApiError> {
        let core = self.core()?;
        let leader = core.raft.metrics().borrow_watched().current_leader;
        if leader == Some(core.raft_id) {
            return Err(ApiError::bad_request("is_leader", "the leader's state is the reference; it is not repaired"));
        }
        let (mut base_index, data) = fetch_state(self, leader_addr).await?;
        let mut base = snapshot::decode(&data).map_err(|e| ApiError::internal(e.to_string()))?;
        drop(data);
        let mut log = core.log.clone();
        for _ in 0..SWAP_ATTEMPTS {
            let applied = core.sm.read(|sm| sm.applied_index());
            if applied < base_index {
                // The leader's state is ahead of this replica: wait for the replica to catch up.
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            }
            if applied > base_index {
                let tail = log
                    .try_get_log_entries(base_index + 1..applied + 1)
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                if tail.len() as u64 != applied - base_index {
                    return Err(ApiError::unavailable(
                        "log_compacted",
                        "the log no longer holds the entries after the leader's state; try again",
                    ));
                }
                for entry in &tail {
                    if let openraft::EntryPayload::Normal(cmd) = &entry.payload {
                        base.apply(entry.log_id.index, cmd);
                    }
                }
                base_index = applied;
            }
            match core.sm.replace_state(base_index, base) {
                Ok(digest) => {
                    self.metrics.replica_repairs.with_label_values(&["0"]).inc();
                    tracing::warn!(applied = base_index, %digest, "replaced this replica's state with the leader's");
                    return Ok((base_index, digest));
                }
                Err(back) => base = back,
            }
        }
        Err(ApiError::unavailable("repair_busy", "the replica kept applying entries; try again"))
    }

    /// This node's state as snapshot data and the log index it was taken at.
    pub fn state_for_repair(&self) -> Result<(u64, Bytes), ApiError> {
        self.core()?.sm.encode_state().map_err(|e| ApiError::internal(e.to_string()))
    }
}

async fn fetch_state(service: &Service, addr: &str) -> Result<(u64, Bytes), ApiError> {
    let fail = |m: String| ApiError::unavailable("fetch_state_failed", m);
    let mut client = service.pool.admin(addr).map_err(|e| fail(e.to_string()))?;
    let deadline = Instant::now() + REPAIR_TIMEOUT;
    let call = client.fetch_state(FetchStateRequest { group_id: DATA_GROUP });
    let mut stream = tokio::time::timeout_at(deadline, call)
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|s| fail(s.message().to_string()))?
        .into_inner();
    let mut data = BytesMut::new();
    let mut index = None;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(fail("timed out".into())),
            Ok(None) => break,
            Ok(Some(chunk)) => chunk.map_err(|s| fail(s.message().to_string()))?,
        };
        if index.is_some_and(|i| i != chunk.index) {
            return Err(fail("the state changed index mid-stream".into()));
        }
        index = Some(chunk.index);
        data.extend_from_slice(&chunk.data);
    }
    let index = index.ok_or_else(|| fail("empty state stream".into()))?;
    Ok((index, data.freeze()))
}
