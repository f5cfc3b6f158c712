//! The node's request handling, shared by the HTTP API and the gRPC services: routing writes
//! and linearizable reads to the group leader, local reads, and cluster administration.
//!
//! A node exists before it has a Raft identity (while it waits to be added to a cluster), so
//! the Raft parts live in [`Core`], set once by the bootstrap.

mod admin;
mod coalesce;
mod read;
mod write;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::Duration;

pub use admin::ClusterView;
pub use admin::MemberView;
pub use read::Consistency;
pub use read::ReadOutcome;
pub use read::ReadQuery;
pub use read::WireRecord;
use tokio::sync::oneshot;
use tokio::sync::watch;
pub use write::WriteOutcome;

use crate::config::ServeArgs;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::network::PeerPool;
use crate::storage::LogStore;
use crate::storage::StateMachineStore;
use crate::types::Member;
use crate::types::Raft;
use crate::types::RaftId;
use coalesce::Coalescer;
use openraft::async_runtime::WatchReceiver as _;
use read::LEADERSHIP_CONFIRMATIONS_IN_FLIGHT;
use read::READ_INDEX_CALLS_IN_FLIGHT;
use read::ReadIndexRound;
use write::Route;

/// The Raft side of a node, present once the node has a Raft identity.
pub struct Core {
    pub raft: Raft,
    pub raft_id: RaftId,
    pub sm: StateMachineStore,
    pub log: LogStore,
    /// Read-index calls to the leader, shared by this follower's linearizable reads.
    read_index: Arc<Coalescer<ReadIndexRound>>,
    /// Confirmations of this node's leadership, shared by its linearizable reads, the reads
    /// forwarded to it and the followers' read-index calls while it leads.
    leader_read_index: Arc<Coalescer<ReadIndexRound>>,
}

impl Core {
    pub fn new(raft: Raft, raft_id: RaftId, sm: StateMachineStore, log: LogStore) -> Self {
        Core {
            raft,
            raft_id,
            sm,
            log,
            read_index: Arc::new(Coalescer::new(READ_INDEX_CALLS_IN_FLIGHT)),
            leader_read_index: Arc::new(Coalescer::new(LEADERSHIP_CONFIRMATIONS_IN_FLIGHT)),
        }
    }

    /// Where the group leader is, as far as this node knows.
    fn leader_route(&self) -> Route {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        match m.current_leader {
            Some(l) if l == self.raft_id => Route::Local,
            Some(l) => match m.membership_config.membership().get_node(&l) {
                Some(member) => Route::Remote(member.grpc_addr.clone()),
                None => Route::Unknown,
            },
            None => Route::Unknown,
        }
    }
}

/// What a node without a Raft member can be told to do by its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// The leader allocated this Raft id for the node (`Admin.Assign`).
    Assign { raft_id: RaftId, cluster_id: String },
    /// The seed of a new cluster asks it to initialize with these members (`Admin.Form`).
    Form { members: std::collections::BTreeMap<u64, String> },
}

pub struct Service {
    pub cfg: Arc<ServeArgs>,
    pub pool: PeerPool,
    pub metrics: Arc<Metrics>,
    core: OnceLock<Arc<Core>>,
    core_set: watch::Sender<bool>,
    /// Where `Assign`/`Form` calls reach a bootstrap that waits for one.
    offer_tx: Mutex<Option<oneshot::Sender<Offer>>>,
    /// Serializes membership changes made through this node.
    pub(crate) admin_lock: tokio::sync::Mutex<()>,
}

impl Service {
    pub fn new(cfg: Arc<ServeArgs>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Service {
            cfg,
            pool: PeerPool::new(),
            metrics,
            core: OnceLock::new(),
            core_set: watch::channel(false).0,
            offer_tx: Mutex::new(None),
            admin_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn node_id(&self) -> u64 {
        self.cfg.node_id
    }

    /// This node as a member record.
    pub fn me(&self) -> Member {
        Member {
            node_id: self.cfg.node_id,
            grpc_addr: self.cfg.advertised_grpc(),
            http_addr: self.cfg.advertised_http(),
        }
    }

    pub fn core(&self) -> Result<&Arc<Core>, ApiError> {
        self.core.get().ok_or_else(|| ApiError::not_ready("this node has not joined a cluster yet"))
    }

    pub fn try_core(&self) -> Option<&Arc<Core>> {
        self.core.get()
    }

    /// Install the Raft core (once).
    pub fn set_core(&self, core: Arc<Core>) {
        if self.core.set(core).is_ok() {
            self.core_set.send_replace(true);
        }
    }

    /// Wait until the core is installed, up to `timeout`.
    pub async fn wait_core(&self, timeout: Duration) -> Option<&Arc<Core>> {
        let mut rx = self.core_set.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|set| *set)).await;
        self.core.get()
    }

    /// Arm the hand-off: the returned receiver gets the first `Assign` or `Form` offer.
    pub fn await_offer(&self) -> oneshot::Receiver<Offer> {
        let (tx, rx) = oneshot::channel();
        *self.offer_tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Deliver an offer to a waiting bootstrap. False when nothing was waiting.
    pub fn deliver_offer(&self, offer: Offer) -> bool {
        let tx = self.offer_tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        tx.is_some_and(|tx| tx.send(offer).is_ok())
    }
}
