//! Reads. `linearizable` (the default) reads are confirmed by the leader (read index or lease).
//! The leader serves them from its state machine once it has applied the read index of a
//! confirmation of its leadership that began after they arrived (one confirmation shared by
//! the reads that wait for it, see `coalesce`). A follower asks the leader for the read index
//! (one call shared by the reads that arrived before it left, see `coalesce`), waits until it
//! has applied that far, and serves them from its own state machine; a follower that lags too
//! far behind forwards the read to the leader instead. `stale` reads are served by the
//! receiving node from its own state, even with no quorum.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrokv_proto::ForwardReply;
use ferrokv_proto::ReadIndexRequest;
use ferrokv_proto::ReadRequest;
use openraft::ReadPolicy;
use openraft::error::LinearizableReadError;
use openraft::error::RaftError;
use openraft::raft::linearizable_read::Linearizer;
use openraft::raft::linearizable_read::ReadLogId;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::codec;
use crate::command::now_ms;
use crate::config::ReadPolicyArg;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::network::PeerPool;
use crate::network::is_connect_error;
use crate::service::Core;
use crate::service::Service;
use crate::service::write::Retry;
use crate::service::write::Route;
use crate::service::write::decode_forward_reply;
use crate::state::KvRecord;
use crate::storage::SmData;
use crate::types::DATA_GROUP;
use crate::types::LogId;
use crate::types::Raft;
use crate::types::TypeConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    Linearizable,
    Stale,
}

impl FromStr for Consistency {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Self, ApiError> {
        match s {
            "linearizable" => Ok(Consistency::Linearizable),
            "stale" => Ok(Consistency::Stale),
            other => Err(ApiError::bad_request(
                "invalid_consistency",
                format!("consistency must be \"linearizable\" or \"stale\", not {other:?}"),
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadQuery {
    Get { key: String },
    Scan { prefix: String, after: Option<String>, limit: usize },
}

/// A record as returned to readers, with its remaining TTL computed by the serving node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    pub key: String,
    pub value: Bytes,
    pub content_type: Option<String>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    pub ttl_seconds: Option<u64>,
}

impl WireRecord {
    /// Takes the record as it is (scan pages are already copies): the value is not copied again.
    fn new(key: String, rec: KvRecord, now: u64) -> Self {
        let ttl_seconds = rec.as_ref(&key).ttl_seconds(now);
        WireRecord {
            key,
            value: rec.value,
            content_type: rec.content_type,
            create_revision: rec.create_revision,
            mod_revision: rec.mod_revision,
            version: rec.version,
            ttl_seconds,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadOutcome {
    Get(Option<WireRecord>),
    Scan { items: Vec<WireRecord>, next_after: Option<String> },
}

const LEADER_POLL: Duration = Duration::from_millis(25);

/// How long a follower waits to apply a read index before it forwards the read to the leader:
/// a follower that is this far behind is catching up (a snapshot, a restart) rather than a
/// heartbeat late.
const FOLLOWER_APPLY_WAIT: Duration = Duration::from_millis(300);

/// The outcome of one read-index call to the leader, shared by the reads waiting for it.
pub(super) type ReadIndexRound = Result<LogId, Retry>;

/// Read-index calls a follower keeps in flight to the leader. With one, a read that arrives
/// just after a call left waits for that call's whole round trip before its own call leaves;
/// with two, it waits for about half of it.
pub(super) const READ_INDEX_CALLS_IN_FLIGHT: usize = 2;

/// Confirmations of its leadership the leader keeps in flight for its reads and the followers'
/// read-index calls (each waits for a heartbeat round, openraft's ReadIndex). One: the reads
/// that arrive during a round all share the next one; a second round in flight made more
/// heartbeat rounds and fewer reads per second.
pub(super) const LEADERSHIP_CONFIRMATIONS_IN_FLIGHT: usize = 1;

impl Service {
    pub async fn read(&self, query: ReadQuery, consistency: Consistency) -> Result<ReadOutcome, ApiError> {
        let core = self.core()?;
        if consistency == Consistency::Stale {
            return Ok(self.read_local(core, &query));
        }
        let deadline = Instant::now() + self.cfg.request_timeout();
        loop {
            match core.leader_route() {
                Route::Local => match self.read_as_leader(core, &query, deadline).await {
                    Ok(out) => return Ok(out),
                    Err(Retry::Again) => {}
                    Err(Retry::Fail(e)) => return Err(e),
                },
                Route::Remote(addr) => match self.read_on_follower(core, &addr, &query, deadline).await {
                    Ok(out) => return Ok(out),
                    Err(Retry::Again) => {}
                    Err(Retry::Fail(e)) => return Err(e),
                },
                Route::Unknown => {}
            }
            if Instant::now() + LEADER_POLL >= deadline {
                return Err(ApiError::no_quorum("no leader could confirm a linearizable read in time"));
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// The read index for a follower's linearizable reads: leadership confirmed as for a read
    /// on the leader, and the log id the follower must apply before it reads. `not_leader`
    /// when this node does not lead.
    pub async fn read_index_as_leader(&self) -> Result<LogId, ApiError> {
        let core = self.core()?;
        let deadline = Instant::now() + self.cfg.request_timeout();
        self.leader_read_index(core, deadline).await.map_err(not_leader_or)
    }

    /// Serve a forwarded linearizable read; `not_leader` when this node does not lead.
    pub async fn read_forwarded(&self, query: ReadQuery) -> Result<ReadOutcome, ApiError> {
        let core = self.core()?;
        let deadline = Instant::now() + self.cfg.request_timeout();
        self.read_as_leader(core, &query, deadline).await.map_err(not_leader_or)
    }

    /// Confirm leadership, wait until the read index is applied, then read. `Retry::Again`
    /// when this node is not the leader.
    async fn read_as_leader(&self, core: &Core, query: &ReadQuery, deadline: Instant) -> Result<ReadOutcome, Retry> {
        let log_id = self.leader_read_index(core, deadline).await?;
        let wait = deadline.saturating_duration_since(Instant::now());
        self.read_at(core, log_id, query, wait)
            .await
            .map_err(Retry::Fail)?
            .ok_or_else(|| Retry::Fail(ApiError::no_quorum("the read index was not applied in time")))
    }

    /// The leader's read index, from a confirmation of its leadership that began after this
    /// call (one shared by the reads and the followers' read-index calls waiting for it, see
    /// `coalesce`). `Retry::Again` when this node is not the leader.
    async fn leader_read_index(&self, core: &Core, deadline: Instant) -> Result<LogId, Retry> {
        let confirm = {
            let (raft, policy, timeout) = (core.raft.clone(), self.read_policy(), self.cfg.request_timeout());
            move || confirm_leadership(raft.clone(), policy.clone(), timeout)
        };
        match tokio::time::timeout_at(deadline, core.leader_read_index.get(confirm)).await {
            Err(_) => Err(Retry::Fail(ApiError::no_quorum("leadership could not be confirmed in time"))),
            Ok(None) => Err(Retry::Fail(ApiError::internal("the confirmation of leadership ended without an answer"))),
            Ok(Some(round)) => round,
        }
    }

    fn read_policy(&self) -> ReadPolicy {
        match self.cfg.read_policy {
            ReadPolicyArg::ReadIndex => ReadPolicy::ReadIndex,
            ReadPolicyArg::Lease => ReadPolicy::LeaseRead,
        }
    }

    /// A linearizable read on a follower: get a read index from the leader (`leader` is its
    /// gRPC address) issued after this read arrived, apply up to it, read locally. A follower
    /// that cannot apply that far soon forwards the read to the leader.
    async fn read_on_follower(
        &self,
        core: &Arc<Core>,
        leader: &str,
        query: &ReadQuery,
        deadline: Instant,
    ) -> Result<ReadOutcome, Retry> {
        let fetch = {
            let (core, pool, metrics) = (core.clone(), self.pool.clone(), self.metrics.clone());
            let timeout = self.cfg.request_timeout();
            move || fetch_read_index(core.clone(), pool.clone(), metrics.clone(), timeout)
        };
        let log_id = match tokio::time::timeout_at(deadline, core.read_index.get(fetch)).await {
            Err(_) => return Err(Retry::Fail(ApiError::no_quorum("the leader did not confirm the read in time"))),
            // The call's task ended without an answer: ask again.
            Ok(None) => return Err(Retry::Again),
            Ok(Some(round)) => round?,
        };
        let wait = FOLLOWER_APPLY_WAIT.min(deadline.saturating_duration_since(Instant::now()));
        match self.read_at(core, log_id, query, wait).await.map_err(Retry::Fail)? {
            Some(out) => Ok(out),
            None => self.forward_read(leader, query, deadline).await,
        }
    }

    /// Serve `query` once this node has applied `log_id`, waiting for that up to `wait`;
    /// `None` if it did not get that far in time.
    async fn read_at(
        &self,
        core: &Core,
        log_id: LogId,
        query: &ReadQuery,
        wait: Duration,
    ) -> Result<Option<ReadOutcome>, ApiError> {
        // Usually applied already: checked under the state's lock, no waiting machinery.
        let applied = core.sm.read(|sm| (sm.applied_index() >= log_id.index).then(|| read_state(sm, query)));
        if applied.is_some() {
            return Ok(applied);
        }
        let linearizer = Linearizer::new(core.raft_id, ReadLogId::from_log_id(log_id), None);
        match linearizer.try_await_ready(&core.raft, Some(wait)).await {
            Ok(Ok(_)) => Ok(Some(self.read_local(core, query))),
            Ok(Err(_)) => Ok(None),
            Err(fatal) => Err(ApiError::internal(fatal.to_string())),
        }
    }

    /// Read this node's own state machine.
    pub fn read_local(&self, core: &Core, query: &ReadQuery) -> ReadOutcome {
        core.sm.read(|sm| read_state(sm, query))
    }

    async fn forward_read(&self, addr: &str, query: &ReadQuery, deadline: Instant) -> Result<ReadOutcome, Retry> {
        let bytes = codec::encode(query).map_err(|e| Retry::Fail(ApiError::internal(e.to_string())))?;
        let mut client = self.pool.kv(addr).map_err(|e| Retry::Fail(ApiError::internal(e.to_string())))?;
        self.metrics.forwarded.with_label_values(&["0", "read"]).inc();
        let call = client.read(ReadRequest { group_id: DATA_GROUP, query: Bytes::from(bytes) });
        leader_reply(call, deadline, "forwarding a read").await
    }
}

/// The answer to a read-only call to the leader (`what` names the call in logs). Reads change
/// nothing, and the leader answers its own errors inside the reply: any failed call (refused,
/// reset, cut off mid-stream) is retried until the deadline.
async fn leader_reply<T: DeserializeOwned>(
    call: impl Future<Output = Result<tonic::Response<ForwardReply>, tonic::Status>>,
    deadline: Instant,
    what: &str,
) -> Result<T, Retry> {
    match tokio::time::timeout_at(deadline, call).await {
        Err(_) => Err(Retry::Fail(ApiError::no_quorum("the leader did not confirm the read in time"))),
        Ok(Err(status)) => {
            if !is_connect_error(&status) {
                tracing::debug!("{what} failed ({}); retrying", status.message());
            }
            Err(Retry::Again)
        }
        Ok(Ok(r)) => decode_forward_reply(r.into_inner()),
    }
}

/// One read-index call to the leader, as far as this node knows where it is.
async fn fetch_read_index(core: Arc<Core>, pool: PeerPool, metrics: Arc<Metrics>, timeout: Duration) -> ReadIndexRound {
    let Route::Remote(addr) = core.leader_route() else {
        // No leader known, or this node leads now: the read goes round again.
        return Err(Retry::Again);
    };
    let mut client = pool.kv(&addr).map_err(|e| Retry::Fail(ApiError::internal(e.to_string())))?;
    metrics.forwarded.with_label_values(&["0", "read_index"]).inc();
    let call = client.read_index(ReadIndexRequest { group_id: DATA_GROUP });
    leader_reply(call, Instant::now() + timeout, "asking the leader for a read index").await
}

/// Confirm this node's leadership once (the call the coalescer shares): the read index, or
/// `Retry::Again` when another node leads.
async fn confirm_leadership(raft: Raft, policy: ReadPolicy, timeout: Duration) -> ReadIndexRound {
    match tokio::time::timeout(timeout, raft.get_read_linearizer(policy)).await {
        Ok(Ok(linearizer)) => Ok(*linearizer.read_log_id().log_id()),
        Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_)))) => Err(Retry::Again),
        Ok(Err(e)) => Err(Retry::Fail(linearizable_read_error(e))),
        Err(_) => Err(Retry::Fail(ApiError::no_quorum("leadership could not be confirmed in time"))),
    }
}

/// Answer `query` from a state machine.
fn read_state(sm: &SmData, query: &ReadQuery) -> ReadOutcome {
    let now = now_ms();
    match query {
        ReadQuery::Get { key } => {
            ReadOutcome::Get(sm.kv.get(key, now).map(|r| WireRecord::new(key.clone(), r.to_record(), now)))
        }
        ReadQuery::Scan { prefix, after, limit } => {
            let page = sm.kv.scan(prefix, after.as_deref(), *limit, now);
            ReadOutcome::Scan {
                items: page.items.into_iter().map(|(k, r)| WireRecord::new(k, r, now)).collect(),
                next_after: page.next_after,
            }
        }
    }
}

/// A call to this node as leader that found another node leading answers `not_leader`.
fn not_leader_or(retry: Retry) -> ApiError {
    match retry {
        Retry::Again => ApiError::unavailable("not_leader", "this node is not the leader"),
        Retry::Fail(e) => e,
    }
}

/// The API error for a failed confirmation of leadership.
fn linearizable_read_error(e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> ApiError {
    match e {
        RaftError::APIError(LinearizableReadError::QuorumNotEnough(e)) => {
            ApiError::no_quorum(format!("leadership could not be confirmed: {e}"))
        }
        e => ApiError::internal(e.to_string()),
    }
}
