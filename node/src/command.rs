//! Commands: what a Raft log entry asks the state machine to do, and what it answers.
//!
//! Commands must apply deterministically on every replica, so anything that depends on time
//! (`now_ms`, TTL deadlines) is stamped into the command by the leader before it is proposed.

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

/// A precondition on the key's current state, checked when the command is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// No precondition.
    None,
    /// The key must exist with this mod revision (`If-Match: "<revision>"`).
    ModRevision(u64),
    /// The key must not exist (`If-None-Match: *`).
    Absent,
}

/// A state-machine command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create or replace a key.
    Put {
        key: String,
        value: Bytes,
        content_type: Option<String>,
        /// Time to live, as asked by the client.
        ttl_ms: Option<u64>,
        condition: Condition,
        /// The leader's wall clock when it proposed the command (ms since the Unix epoch).
        now_ms: u64,
    },
    /// Delete a key.
    Delete { key: String, condition: Condition, now_ms: u64 },
    /// Delete keys whose TTL ran out, each only if still at the given mod revision
    /// (a key rewritten since the leader decided keeps its new value).
    Expire { keys: Vec<(String, u64)> },
    /// Name the cluster. Only the first one applied takes effect.
    SetClusterId { id: String },
    /// Changes nothing; used to allocate a unique log index (e.g. a fresh Raft id).
    Noop,
    /// Changes nothing; every replica records its state digest at this log index, so the
    /// leader can compare replicas at the same point (anti-entropy).
    Checkpoint,
}

impl Command {
    /// Stamp the leader's clock into a command, just before it is proposed.
    pub fn stamp(&mut self, leader_now_ms: u64) {
        match self {
            Command::Put { now_ms, .. } | Command::Delete { now_ms, .. } => *now_ms = leader_now_ms,
            Command::Expire { .. } | Command::SetClusterId { .. } | Command::Noop | Command::Checkpoint => {}
        }
    }

    /// An upper estimate of the bytes the command takes encoded: lets an encoder size its
    /// buffer once instead of growing it field by field.
    pub fn encoded_len_hint(&self) -> usize {
        const FIXED: usize = 32; // tags, lengths, revisions, timestamps
        match self {
            Command::Put { key, value, content_type, .. } => {
                FIXED + key.len() + value.len() + content_type.as_ref().map_or(0, String::len)
            }
            Command::Delete { key, .. } => FIXED + key.len(),
            Command::Expire { keys } => FIXED + keys.iter().map(|(k, _)| k.len() + 16).sum::<usize>(),
            Command::SetClusterId { id } => FIXED + id.len(),
            Command::Noop | Command::Checkpoint => FIXED,
        }
    }

    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Put { .. } => "put",
            Command::Delete { .. } => "delete",
            Command::Expire { .. } => "expire",
            Command::SetClusterId { .. } => "set_cluster_id",
            Command::Noop => "noop",
            Command::Checkpoint => "checkpoint",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Put { key, value, .. } => write!(f, "put({key}, {} bytes)", value.len()),
            Command::Delete { key, .. } => write!(f, "delete({key})"),
            Command::Expire { keys } => write!(f, "expire({} keys)", keys.len()),
            Command::SetClusterId { id } => write!(f, "set_cluster_id({id})"),
            Command::Noop => write!(f, "noop"),
            Command::Checkpoint => write!(f, "checkpoint"),
        }
    }
}

/// The state machine's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// A put was applied.
    Put { created: bool, revision: u64, version: u64 },
    /// A delete removed the key.
    Deleted { revision: u64 },
    /// A delete found no key.
    NotFound,
    /// The precondition did not hold; nothing changed. Carries the key's current mod revision.
    ConditionFailed { current_revision: Option<u64> },
    /// A command with no particular answer (expire, cluster id, noop, membership, blank).
    Done,
    /// The state digest at a checkpoint's log index.
    Checkpoint { digest: crate::state::Digest },
}

/// Milliseconds since the Unix epoch on this node's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
