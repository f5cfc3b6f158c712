//! Reads. `linearizable` (the default) reads are confirmed by the leader (read index or lease)
//! and served from its state machine; a follower forwards them in one hop. `stale` reads are
//! served by the receiving node from its own state, even with no quorum.

use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use ferrokv_proto::ReadRequest;
use openraft::ReadPolicy;
use openraft::error::LinearizableReadError;
use openraft::error::RaftError;
use serde::Deserialize;
use serde::Serialize;
use tokio::time::Instant;

use crate::codec;
use crate::command::now_ms;
use crate::config::ReadPolicyArg;
use crate::error::ApiError;
use crate::network::is_connect_error;
use crate::service::Core;
use crate::service::Service;
use crate::service::write::Retry;
use crate::service::write::Route;
use crate::service::write::decode_forward_reply;
use crate::state::KvRecord;
use crate::types::DATA_GROUP;

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

impl Service {
    pub async fn read(&self, query: ReadQuery, consistency: Consistency) -> Result<ReadOutcome, ApiError> {
        let core = self.core()?;
        if consistency == Consistency::Stale {
            return Ok(self.read_local(core, &query));
        }
        let deadline = Instant::now() + self.cfg.request_timeout();
        loop {
            match self.route(core) {
                Route::Local => {
                    if let Some(out) = self.read_as_leader(core, &query, deadline).await? {
                        return Ok(out);
                    }
                }
                Route::Remote(addr) => match self.forward_read(&addr, &query, deadline).await {
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

    /// Serve a forwarded linearizable read; `not_leader` when this node does not lead.
    pub async fn read_forwarded(&self, query: ReadQuery) -> Result<ReadOutcome, ApiError> {
        let core = self.core()?;
        let deadline = Instant::now() + self.cfg.request_timeout();
        self.read_as_leader(core, &query, deadline)
            .await?
            .ok_or_else(|| ApiError::unavailable("not_leader", "this node is not the leader"))
    }

    /// Confirm leadership, wait until the read index is applied, then read. `Ok(None)` when
    /// this node is not the leader.
    async fn read_as_leader(
        &self,
        core: &Core,
        query: &ReadQuery,
        deadline: Instant,
    ) -> Result<Option<ReadOutcome>, ApiError> {
        let policy = match self.cfg.read_policy {
            ReadPolicyArg::ReadIndex => ReadPolicy::ReadIndex,
            ReadPolicyArg::Lease => ReadPolicy::LeaseRead,
        };
        match tokio::time::timeout_at(deadline, core.raft.ensure_linearizable(policy)).await {
            Ok(Ok(_)) => Ok(Some(self.read_local(core, query))),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_)))) => Ok(None),
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e)))) => {
                Err(ApiError::no_quorum(format!("leadership could not be confirmed: {e}")))
            }
            Ok(Err(e)) => Err(ApiError::internal(e.to_string())),
            Err(_) => Err(ApiError::no_quorum("leadership could not be confirmed in time")),
        }
    }

    /// Read this node's own state machine.
    pub fn read_local(&self, core: &Core, query: &ReadQuery) -> ReadOutcome {
        let now = now_ms();
        core.sm.read(|sm| match query {
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
        })
    }

    async fn forward_read(&self, addr: &str, query: &ReadQuery, deadline: Instant) -> Result<ReadOutcome, Retry> {
        let bytes = codec::encode(query).map_err(|e| Retry::Fail(ApiError::internal(e.to_string())))?;
        let mut client = self.pool.kv(addr).map_err(|e| Retry::Fail(ApiError::internal(e.to_string())))?;
        self.metrics.forwarded.with_label_values(&["0", "read"]).inc();
        let call = client.read(ReadRequest { group_id: DATA_GROUP, query: Bytes::from(bytes) });
        match tokio::time::timeout_at(deadline, call).await {
            Err(_) => Err(Retry::Fail(ApiError::no_quorum("the leader did not confirm the read in time"))),
            // Reads change nothing, and the leader answers its own errors inside the reply: any
            // failed call (refused, reset, cut off mid-stream) is retried until the deadline.
            Ok(Err(status)) => {
                if !is_connect_error(&status) {
                    tracing::debug!("forwarding a read failed ({}); retrying", status.message());
                }
                Err(Retry::Again)
            }
            Ok(Ok(r)) => decode_forward_reply(r.into_inner()),
        }
    }
}
