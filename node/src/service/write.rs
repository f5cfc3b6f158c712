//! Writes: proposed through the local Raft when this node leads, otherwise forwarded over
//! gRPC to the leader in one hop. Bounded by the request timeout: with no leader (no quorum)
//! the caller gets 503 `no_quorum` instead of waiting forever.

use std::time::Duration;

use bytes::Bytes;
use ferrokv_proto::WriteRequest;
use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use serde::Deserialize;
use serde::Serialize;
use tokio::time::Instant;

use crate::codec;
use crate::command::Command;
use crate::command::CommandResult;
use crate::command::now_ms;
use crate::error::ApiError;
use crate::network::is_connect_error;
use crate::service::Core;
use crate::service::Service;
use crate::types::DATA_GROUP;

/// What a committed write answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// Log index of the write (the global revision).
    pub index: u64,
    pub result: CommandResult,
}

/// How long to wait between looks for a leader.
const LEADER_POLL: Duration = Duration::from_millis(25);

/// Where a request should go now.
pub(super) enum Route {
    Local,
    Remote(String),
    Unknown,
}

impl Service {
    /// Commit `cmd` through the group leader, wherever it is.
    pub async fn write(&self, cmd: Command) -> Result<WriteOutcome, ApiError> {
        let deadline = Instant::now() + self.cfg.request_timeout();
        self.write_until(cmd, deadline, true).await
    }

    /// Commit `cmd` only if this node leads (a forwarded write must not hop again).
    pub async fn write_as_leader(&self, cmd: Command) -> Result<WriteOutcome, ApiError> {
        let deadline = Instant::now() + self.cfg.request_timeout();
        self.write_until(cmd, deadline, false).await
    }

    async fn write_until(&self, cmd: Command, deadline: Instant, may_forward: bool) -> Result<WriteOutcome, ApiError> {
        let core = self.core()?;
        loop {
            match core.leader_route() {
                Route::Local => {
                    // `None`: leadership moved before the proposal, so route again.
                    if let Some(outcome) = self.propose(core, cmd.clone(), deadline).await? {
                        return Ok(outcome);
                    }
                }
                Route::Remote(addr) if may_forward => {
                    match self.forward_write(&addr, &cmd, deadline).await {
                        Ok(outcome) => return Ok(outcome),
                        // The leader we knew is gone or moved on: look again.
                        Err(Retry::Again) => {}
                        Err(Retry::Fail(e)) => return Err(e),
                    }
                }
                Route::Remote(_) | Route::Unknown if !may_forward => {
                    return Err(ApiError::unavailable("not_leader", "this node is not the leader"));
                }
                Route::Remote(_) | Route::Unknown => {}
            }
            if Instant::now() + LEADER_POLL >= deadline {
                return Err(ApiError::no_quorum("no leader could commit the write in time; it was not applied"));
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// Propose on the local Raft. `Ok(None)`: this node turned out not to lead (nothing was
    /// proposed), so the caller may route again.
    async fn propose(
        &self,
        core: &Core,
        mut cmd: Command,
        deadline: Instant,
    ) -> Result<Option<WriteOutcome>, ApiError> {
        // The leader's clock decides TTL deadlines and expiry, so all replicas agree.
        cmd.stamp(now_ms());
        let kind = cmd.kind();
        self.metrics.proposals.with_label_values(&["0", kind]).inc();
        let res = tokio::time::timeout_at(deadline, core.raft.client_write(cmd)).await;
        let fail = |reason: &str| self.metrics.proposal_failures.with_label_values(&["0", reason]).inc();
        match res {
            Ok(Ok(resp)) => Ok(Some(WriteOutcome { index: resp.log_id.index, result: resp.data })),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Ok(None),
            Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                fail("discarded");
                Err(ApiError::unavailable(
                    "write_outcome_unknown",
                    "leadership changed before the write committed; it may or may not have been applied",
                ))
            }
            Ok(Err(e)) => {
                fail("error");
                Err(ApiError::internal(e.to_string()))
            }
            Err(_) => {
                fail("timeout");
                Err(ApiError::no_quorum(
                    "the write was not committed in time (no quorum?); it may still be applied later",
                ))
            }
        }
    }

    async fn forward_write(&self, addr: &str, cmd: &Command, deadline: Instant) -> Result<WriteOutcome, Retry> {
        let command = codec::encode(cmd).map_err(|e| Retry::Fail(ApiError::internal(e.to_string())))?;
        let mut client = self.pool.kv(addr).map_err(|e| Retry::Fail(ApiError::internal(e.to_string())))?;
        self.metrics.forwarded.with_label_values(&["0", "write"]).inc();
        let call = client.write(WriteRequest { group_id: DATA_GROUP, command: Bytes::from(command) });
        let reply = match tokio::time::timeout_at(deadline, call).await {
            Err(_) => {
                return Err(Retry::Fail(ApiError::no_quorum(
                    "the leader did not answer in time; the write may or may not have been applied",
                )));
            }
            Ok(Err(status)) if is_connect_error(&status) => return Err(Retry::Again),
            Ok(Err(status)) => {
                return Err(Retry::Fail(ApiError::unavailable(
                    "leader_unreachable",
                    format!(
                        "forwarding to the leader failed ({}); the write may or may not have been applied",
                        status.message()
                    ),
                )));
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        decode_forward_reply(reply)
    }
}

#[derive(Clone)]
pub(super) enum Retry {
    Again,
    Fail(ApiError),
}

/// Unpack a forwarded reply; a `not_leader` answer means nothing was done there: retry.
pub(super) fn decode_forward_reply<T: serde::de::DeserializeOwned>(
    reply: ferrokv_proto::ForwardReply,
) -> Result<T, Retry> {
    if let Some(err) = reply.error {
        let err = ApiError::from(err);
        return Err(if err.code == "not_leader" { Retry::Again } else { Retry::Fail(err) });
    }
    codec::decode(&reply.outcome).map_err(|e| Retry::Fail(ApiError::internal(format!("bad reply from leader: {e}"))))
}
