//! Start-up: decide this node's Raft identity and bring its Raft member up.
//!
//! - `node.json` in the data dir → restart under the stored identity.
//! - `--initial-members`, fresh dir → probe the other initial members. If any of them already
//!   belongs to a formed cluster, this node was wiped (or started late): it joins that cluster
//!   under a fresh Raft id and replaces its old self. Otherwise, once every member (or, after a
//!   grace period, a majority) answers as uninitialized, all of them initialize the same
//!   membership with Raft id = node id — openraft accepts identical `initialize` calls.
//! - `--join URL`, fresh dir → ask the cluster (over HTTP) to add this node.
//! - neither → wait for an operator's `POST /v1/cluster/members` naming this node.
//!
//! Joining works the same in every case: the leader allocates a Raft id and hands it to this
//! node over `Admin.Assign`; this node persists it, starts its member, and the leader adds it
//! as a learner, waits for it to catch up, then promotes it to voter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use ferrokv_proto::AddMemberRequest;
use ferrokv_proto::StatusRequest;
use tokio::time::Instant;

use crate::membership::Identity;
use crate::membership::dir_has_content;
use crate::network::NetworkFactory;
use crate::service::Core;
use crate::service::Service;
use crate::storage::LogStore;
use crate::storage::StateMachineStore;
use crate::types::DATA_GROUP;
use crate::types::Member;
use crate::types::Raft;
use crate::types::RaftId;

/// How long to wait for every initial member before forming with a bare majority.
const FORMATION_GRACE: Duration = Duration::from_secs(3);
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Bring up this node's Raft member and install it in `service`.
pub async fn start(service: Arc<Service>) -> anyhow::Result<()> {
    let cfg = service.cfg.clone();
    let dir = cfg.data_dir.clone();
    if let Some(identity) = Identity::load(&dir)? {
        if identity.node_id != cfg.node_id {
            bail!(
                "{} belongs to node {}, not node {}",
                dir.display(),
                identity.node_id,
                cfg.node_id
            );
        }
        tracing::info!(
            raft_id = identity.raft_id,
            "restarting from the data directory"
        );
        let core = open_core(&service, identity.raft_id).await?;
        let pristine = !core.raft.is_initialized().await.unwrap_or(true);
        service.set_core(core);
        if pristine {
            // Stopped after its identity was assigned but before the leader added it: ask again.
            tokio::spawn(request_membership(service.clone()));
        }
        return Ok(());
    }
    if dir_has_content(&dir)? {
        bail!(
            "{} is not empty but has no node.json; refusing to start with unknown state",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(members) = cfg.initial_members.clone() {
        if !members.0.contains_key(&cfg.node_id) {
            bail!(
                "--initial-members does not list this node's id {}",
                cfg.node_id
            );
        }
        match probe_initial_members(&service, &members.0).await {
            Formation::Form => return form_cluster(&service, &members.0).await,
            Formation::Join => {}
        }
    }
    join(service).await
}

enum Formation {
    Form,
    Join,
}

/// Ask the other initial members whether a cluster already exists.
async fn probe_initial_members(service: &Service, members: &BTreeMap<u64, String>) -> Formation {
    let me = service.node_id();
    let majority = members.len() / 2 + 1;
    let mut majority_since: Option<Instant> = None;
    loop {
        let mut fresh = 1; // this node
        for (id, addr) in members.iter().filter(|(id, _)| **id != me) {
            let Ok(mut client) = service.pool.admin(addr) else {
                continue;
            };
            let call = client.status(StatusRequest {
                group_id: DATA_GROUP,
            });
            match tokio::time::timeout(Duration::from_secs(1), call).await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    if r.node_id != *id {
                        tracing::warn!(
                            addr,
                            expected = id,
                            found = r.node_id,
                            "initial member answers with another node id"
                        );
                    } else if r.initialized {
                        tracing::info!(peer = id, "a cluster already exists; joining it");
                        return Formation::Join;
                    } else {
                        fresh += 1;
                    }
                }
                _ => tracing::debug!(peer = id, addr, "initial member not reachable yet"),
            }
        }
        if fresh == members.len() {
            return Formation::Form;
        }
        if fresh >= majority {
            let since = *majority_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= FORMATION_GRACE {
                return Formation::Form;
            }
        } else {
            majority_since = None;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

async fn form_cluster(
    service: &Arc<Service>,
    members: &BTreeMap<u64, String>,
) -> anyhow::Result<()> {
    let me = service.me();
    Identity {
        node_id: me.node_id,
        raft_id: me.node_id,
    }
    .store(&service.cfg.data_dir)?;
    let core = open_core(service, me.node_id).await?;
    let nodes: BTreeMap<RaftId, Member> = members
        .iter()
        .map(|(id, addr)| {
            // Peers' HTTP addresses are filled in later by the leader (maintenance.rs).
            let http_addr = if *id == me.node_id {
                me.http_addr.clone()
            } else {
                String::new()
            };
            (
                *id,
                Member {
                    node_id: *id,
                    grpc_addr: addr.clone(),
                    http_addr,
                },
            )
        })
        .collect();
    match core.raft.initialize(nodes).await {
        Ok(()) => tracing::info!(members = members.len(), "initialized a new cluster"),
        Err(e) => tracing::info!("cluster already initialized: {e}"),
    }
    service.set_core(core);
    Ok(())
}

/// Wait for the leader to assign a Raft id, asking for it when we know whom to ask.
async fn join(service: Arc<Service>) -> anyhow::Result<()> {
    let assignment = service.await_assignment();
    let asking = tokio::spawn(request_membership(service.clone()));
    tracing::info!("waiting to be added to the cluster");
    let a = assignment.await.context("assignment channel closed")?;
    Identity {
        node_id: service.node_id(),
        raft_id: a.raft_id,
    }
    .store(&service.cfg.data_dir)?;
    let core = open_core(&service, a.raft_id).await?;
    service.set_core(core);
    tracing::info!(
        raft_id = a.raft_id,
        cluster_id = a.cluster_id,
        "assigned a Raft id; catching up"
    );
    // The request keeps running until the leader has promoted us (or gives up and retries).
    drop(asking);
    Ok(())
}

/// Ask the cluster to add this node, retrying until it succeeds. Uses `--join` (HTTP) or the
/// initial members (gRPC); with neither, an operator adds the node.
async fn request_membership(service: Arc<Service>) {
    let me = service.me();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = if let Some(url) = service.cfg.join.clone() {
            request_via_http(&url, &me).await
        } else if let Some(members) = service.cfg.initial_members.clone() {
            request_via_peers(&service, &members.0, &me).await
        } else {
            return;
        };
        match result {
            Ok(raft_id) => {
                tracing::info!(raft_id, "the cluster added this node");
                return;
            }
            Err(e) => tracing::warn!(attempt, "joining the cluster failed, retrying: {e:#}"),
        }
        tokio::time::sleep(Duration::from_secs(1).min(Duration::from_millis(200) * attempt)).await;
    }
}

async fn request_via_http(url: &str, me: &Member) -> anyhow::Result<RaftId> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(150))
        .build()?;
    let resp = client
        .post(format!("{}/v1/cluster/members", url.trim_end_matches('/')))
        .json(&serde_json::json!({ "node_id": me.node_id, "grpc_addr": me.grpc_addr, "http_addr": me.http_addr }))
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{status}: {body}");
    }
    body["raft_id"].as_u64().context("reply without raft_id")
}

async fn request_via_peers(
    service: &Service,
    members: &BTreeMap<u64, String>,
    me: &Member,
) -> anyhow::Result<RaftId> {
    let mut last = anyhow::anyhow!("no other initial member");
    for (_, addr) in members.iter().filter(|(id, _)| **id != me.node_id) {
        let mut client = service.pool.admin(addr)?;
        let req = AddMemberRequest {
            group_id: DATA_GROUP,
            node_id: me.node_id,
            grpc_addr: me.grpc_addr.clone(),
            http_addr: me.http_addr.clone(),
            forwarded: false,
        };
        match tokio::time::timeout(Duration::from_secs(150), client.add_member(req)).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                match r.error {
                    None => return Ok(r.raft_id),
                    Some(e) => last = anyhow::anyhow!("{}: {}", e.code, e.message),
                }
            }
            Ok(Err(s)) => last = anyhow::anyhow!("{addr}: {}", s.message()),
            Err(_) => last = anyhow::anyhow!("{addr}: timed out"),
        }
    }
    Err(last)
}

/// Open storage and start the Raft member `raft_id`.
async fn open_core(service: &Service, raft_id: RaftId) -> anyhow::Result<Arc<Core>> {
    let cfg = &service.cfg;
    let log =
        LogStore::open(&cfg.data_dir.join("raft"), cfg.fsync).context("opening the Raft log")?;
    let sm =
        StateMachineStore::open(cfg.data_dir.join("sm")).context("opening the state machine")?;
    let config = Arc::new(cfg.raft_config().context("raft configuration")?);
    let network = NetworkFactory::new(service.pool.clone(), DATA_GROUP);
    let raft = Raft::new(raft_id, config, network, log.clone(), sm.clone())
        .await
        .context("starting Raft")?;
    // No wait for recovery here: the log store persists `committed`, so openraft re-applies
    // the committed tail on start-up and a restarted node never serves older state. Waiting
    // for a cluster commit instead would deadlock a whole-cluster restart, since this node's
    // gRPC service needs the core to take part in the election.
    Ok(Arc::new(Core {
        raft,
        raft_id,
        sm,
        log,
    }))
}
