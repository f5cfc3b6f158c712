//! Start-up: decide this node's Raft identity and bring its Raft member up.
//!
//! - `node.json` in the data dir → restart under the stored identity.
//! - `--initial-members`, fresh dir → a new cluster is formed by its *seed*, the member with
//!   the lowest id: once a majority (all members, or a majority for 3 s) answers as fresh, the
//!   seed sends `Admin.Form` to every fresh member, each initializes the same membership with
//!   Raft id = node id (openraft accepts identical `initialize` calls), and so does the seed.
//!   Only the seed decides, so a majority always initializes together.
//! - A fresh node that instead finds the cluster already formed (it started late, or its data
//!   dir was wiped — the two cannot be told apart locally) never reuses its old Raft id: it
//!   joins under a fresh one and replaces its old self, so it cannot vote with forgotten state.
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
use ferrokv_proto::FormRequest;
use ferrokv_proto::StatusRequest;
use tokio::time::Instant;

use crate::membership::Identity;
use crate::membership::dir_has_content;
use crate::network::NetworkFactory;
use crate::service::Core;
use crate::service::Offer;
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
            bail!("{} belongs to node {}, not node {}", dir.display(), identity.node_id, cfg.node_id);
        }
        tracing::info!(raft_id = identity.raft_id, "restarting from the data directory");
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
        bail!("{} is not empty but has no node.json; refusing to start with unknown state", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let offers = service.await_offer();
    let offer = match cfg.initial_members.clone() {
        Some(members) => {
            if !members.0.contains_key(&cfg.node_id) {
                bail!("--initial-members does not list this node's id {}", cfg.node_id);
            }
            await_formation(&service, &members.0, offers).await?
        }
        None => {
            tokio::spawn(request_membership(service.clone()));
            tracing::info!("waiting to be added to the cluster");
            offers.await.context("offer channel closed")?
        }
    };
    accept(&service, offer).await
}

/// Act on an offer: form the new cluster, or start the Raft id the leader assigned.
async fn accept(service: &Arc<Service>, offer: Offer) -> anyhow::Result<()> {
    match offer {
        Offer::Form { members } => form_cluster(service, &members).await,
        Offer::Assign { raft_id, cluster_id } => {
            Identity { node_id: service.node_id(), raft_id }.store(&service.cfg.data_dir)?;
            let core = open_core(service, raft_id).await?;
            service.set_core(core);
            tracing::info!(raft_id, cluster_id, "assigned a Raft id; catching up");
            Ok(())
        }
    }
}

/// How long a fresh node that sees a formed cluster waits for a `Form` that may be in flight
/// before it concludes it was not part of the formation and asks to join.
const FORM_IN_FLIGHT: Duration = Duration::from_secs(5);

/// Wait for the cluster to form (seeding it when this node is the seed), or join it.
async fn await_formation(
    service: &Arc<Service>,
    members: &BTreeMap<u64, String>,
    mut offers: tokio::sync::oneshot::Receiver<Offer>,
) -> anyhow::Result<Offer> {
    let me = service.node_id();
    let seed = members.keys().next().copied().unwrap_or(me);
    let majority = members.len() / 2 + 1;
    let mut majority_since: Option<Instant> = None;
    let mut formed_since: Option<Instant> = None;
    let mut asked_to_join = false;
    loop {
        if let Ok(offer) = offers.try_recv() {
            return Ok(offer);
        }
        let probe = probe(service, members).await;
        if probe.initialized {
            let since = *formed_since.get_or_insert_with(Instant::now);
            if !asked_to_join && (me == seed || since.elapsed() >= FORM_IN_FLIGHT) {
                tracing::info!("the cluster already exists; asking to join it under a new Raft id");
                asked_to_join = true;
                tokio::spawn(request_membership(service.clone()));
            }
        } else if me == seed {
            let fresh = probe.fresh.len() + 1;
            if fresh >= majority {
                let since = *majority_since.get_or_insert_with(Instant::now);
                if fresh == members.len() || since.elapsed() >= FORMATION_GRACE {
                    seed_formation(service, members, &probe.fresh).await;
                    return Ok(Offer::Form { members: members.clone() });
                }
            } else {
                majority_since = None;
            }
        }
        tokio::select! {
            offer = &mut offers => return offer.context("offer channel closed"),
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

struct Probe {
    /// Some other member already belongs to a formed cluster.
    initialized: bool,
    /// Other members that answered and are fresh, with their gRPC addresses.
    fresh: Vec<(u64, String)>,
}

async fn probe(service: &Service, members: &BTreeMap<u64, String>) -> Probe {
    let me = service.node_id();
    let mut out = Probe { initialized: false, fresh: Vec::new() };
    for (id, addr) in members.iter().filter(|(id, _)| **id != me) {
        let Ok(mut client) = service.pool.admin(addr) else { continue };
        let call = client.status(StatusRequest { group_id: DATA_GROUP });
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
                } else if r.raft_id != 0 {
                    out.initialized = true;
                } else {
                    out.fresh.push((*id, addr.clone()));
                }
            }
            _ => tracing::debug!(peer = id, addr, "initial member not reachable yet"),
        }
    }
    out
}

/// As the seed: ask every fresh member to form the cluster.
async fn seed_formation(service: &Service, members: &BTreeMap<u64, String>, fresh: &[(u64, String)]) {
    tracing::info!(fresh = fresh.len() + 1, members = members.len(), "seeding a new cluster");
    let calls = fresh.iter().map(|(id, addr)| async move {
        let req = FormRequest {
            group_id: DATA_GROUP,
            seed_node_id: service.node_id(),
            members: members.clone().into_iter().collect(),
        };
        let result = match service.pool.admin(addr) {
            Ok(mut c) => tokio::time::timeout(Duration::from_secs(12), c.form(req)).await,
            Err(_) => return,
        };
        match result {
            Ok(Ok(_)) => tracing::info!(peer = id, "member formed"),
            Ok(Err(s)) => tracing::warn!(peer = id, "member refused to form: {}", s.message()),
            Err(_) => tracing::warn!(peer = id, "member did not answer the formation in time"),
        }
    });
    futures::future::join_all(calls).await;
}

/// Initialize the new cluster with Raft id = node id for every initial member.
async fn form_cluster(service: &Arc<Service>, members: &BTreeMap<u64, String>) -> anyhow::Result<()> {
    let me = service.me();
    Identity { node_id: me.node_id, raft_id: me.node_id }.store(&service.cfg.data_dir)?;
    let core = open_core(service, me.node_id).await?;
    let nodes: BTreeMap<RaftId, Member> = members
        .iter()
        .map(|(id, addr)| {
            // Peers' HTTP addresses are filled in later by the leader (maintenance.rs).
            let http_addr = if *id == me.node_id { me.http_addr.clone() } else { String::new() };
            (*id, Member { node_id: *id, grpc_addr: addr.clone(), http_addr })
        })
        .collect();
    match core.raft.initialize(nodes).await {
        Ok(()) => tracing::info!(members = members.len(), "initialized a new cluster"),
        Err(e) => tracing::info!("cluster already initialized: {e}"),
    }
    service.set_core(core);
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
    let client =
        reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(150)).build()?;
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

async fn request_via_peers(service: &Service, members: &BTreeMap<u64, String>, me: &Member) -> anyhow::Result<RaftId> {
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
    let log = LogStore::open(&cfg.data_dir.join("raft"), cfg.fsync).context("opening the Raft log")?;
    let sm = StateMachineStore::open(cfg.data_dir.join("sm")).context("opening the state machine")?;
    let config = Arc::new(cfg.raft_config().context("raft configuration")?);
    let network = NetworkFactory::new(service.pool.clone(), DATA_GROUP, cfg.replication_window as usize);
    let raft = Raft::new(raft_id, config, network, log.clone(), sm.clone()).await.context("starting Raft")?;
    // No wait for recovery here: the log store persists `committed`, so openraft re-applies
    // the committed tail on start-up and a restarted node never serves older state. Waiting
    // for a cluster commit instead would deadlock a whole-cluster restart, since this node's
    // gRPC service needs the core to take part in the election.
    Ok(Arc::new(Core::new(raft, raft_id, sm, log)))
}
