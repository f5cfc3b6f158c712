//! Background duties of a node: count leader changes, and — while leading — expire keys whose
//! TTL ran out, name the cluster, and fill in members' HTTP addresses.
//!
//! Expiry is decided here, on the leader, and replicated as an `Expire` command: every replica
//! deletes the same keys at the same log index, whatever its own clock says.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use ferrokv_proto::StatusRequest;
use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver as _;
use openraft::vote::RaftLeaderId as _;
use tokio::runtime::RuntimeFlavor;
use tokio::sync::watch;

use crate::command::Command;
use crate::command::now_ms;
use crate::service::Core;
use crate::service::Service;
use crate::snapshots;
use crate::types::DATA_GROUP;
use crate::types::Member;
use crate::types::RaftId;

const TICK: Duration = Duration::from_millis(200);
/// Keys expired per command, so one expiry burst cannot make a huge log entry.
const EXPIRE_BATCH: usize = 1000;

/// Run until `stop` flips to true.
pub async fn run(service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    let Some(core) = service.wait_core(Duration::MAX).await.cloned() else {
        return;
    };
    tokio::spawn(follow_role(core.clone(), stop.clone()));
    tokio::spawn(snapshots::run(core.clone(), service.cfg.snapshot_every, stop.clone()));
    let mut leader = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        let m = core.raft.metrics().borrow_watched().clone();
        if m.current_leader != leader {
            if leader.is_some() || m.current_leader.is_some() {
                service.metrics.leader_changes.with_label_values(&["0"]).inc();
            }
            leader = m.current_leader;
            tracing::info!(term = m.current_term, leader = ?leader, "leader changed");
        }
        if leader != Some(core.raft_id) {
            continue;
        }
        expire_keys(&service, &core).await;
        name_cluster(&service, &core).await;
        let members: BTreeMap<RaftId, Member> =
            m.membership_config.membership().nodes().map(|(id, n)| (*id, n.clone())).collect();
        fill_http_addresses(&service, &core, members).await;
    }
}

/// Follow this node's role. Log every term in which it becomes leader, as it happens (`became
/// leader term=…`): the record fault tests use to check that no two nodes led in the same term.
/// And keep the log store's caller writes on while this node follows, if its runtime is a
/// single thread: a follower then syncs its log on that thread and answers the leader without
/// waking the WAL thread and being woken by it. A leader keeps its thread for the clients and
/// the replication that runs while its own log is synced.
///
/// It watches the server metrics (vote, role, leader, membership), which change only when the
/// role may have: the full metrics change with every write, and waking this task for each of
/// them was a measurable share of a write's work.
async fn follow_role(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let one_thread = tokio::runtime::Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread;
    let mut rx = core.raft.server_metrics();
    let mut logged_term = None;
    loop {
        let (term, leads) = {
            let m = rx.borrow_watched();
            (m.vote.leader_id().term(), m.current_leader == Some(core.raft_id) && m.state.is_leader())
        };
        core.log.set_caller_writes(one_thread && !leads);
        if leads && logged_term != Some(term) {
            logged_term = Some(term);
            tracing::info!(term, raft_id = core.raft_id, "became leader");
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

async fn expire_keys(service: &Service, core: &Core) {
    let keys = core.sm.read(|sm| sm.kv.expired(now_ms(), EXPIRE_BATCH));
    if keys.is_empty() {
        return;
    }
    let n = keys.len() as u64;
    match service.write_as_leader(Command::Expire { keys }).await {
        Ok(_) => service.metrics.expired_keys.with_label_values(&["0"]).inc_by(n),
        Err(e) => tracing::debug!("expiring keys failed: {e}"),
    }
}

async fn name_cluster(service: &Service, core: &Core) {
    if core.sm.read(|sm| sm.kv.cluster_id().is_some()) {
        return;
    }
    // 128 random bits from the std hasher's per-process random keys: no extra dependency.
    let (a, b) = (RandomState::new().hash_one(now_ms()), RandomState::new().hash_one(core.raft_id));
    let id = format!("{a:016x}{b:016x}");
    if let Err(e) = service.write_as_leader(Command::SetClusterId { id }).await {
        tracing::debug!("naming the cluster failed: {e}");
    }
}

/// Members of the initial cluster are known only by gRPC address; ask each for its HTTP one.
async fn fill_http_addresses(service: &Service, core: &Core, members: BTreeMap<RaftId, Member>) {
    let mut updates = BTreeMap::new();
    for (id, member) in members.into_iter().filter(|(_, m)| m.http_addr.is_empty()) {
        let Ok(mut client) = service.pool.admin(&member.grpc_addr) else {
            continue;
        };
        let call = client.status(StatusRequest { group_id: DATA_GROUP });
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(300), call).await {
            let r = r.into_inner();
            if r.node_id == member.node_id && r.raft_id == id && !r.http_addr.is_empty() {
                updates.insert(id, Member { http_addr: r.http_addr, ..member });
            }
        }
    }
    if updates.is_empty() {
        return;
    }
    // Never wait behind a membership change (a join may hold the lock while a new member
    // catches up): TTL expiry shares this loop. The next tick tries again.
    let Ok(_serial) = service.admin_lock.try_lock() else { return };
    if let Err(e) = core.raft.change_membership(ChangeMembers::SetNodes(updates), true).await {
        tracing::debug!("recording members' HTTP addresses failed: {e}");
    }
}
