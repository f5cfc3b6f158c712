//! The openraft type parameters, declared once. Nothing else in the crate spells them out.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use crate::command::Command;
use crate::command::CommandResult;

/// Identity of one Raft member (one log). Never reused: a node whose data directory is wiped
/// comes back under a fresh Raft id (see `membership.rs`), while its operator-facing
/// `--node-id` stays the same.
pub type RaftId = u64;

/// Raft group id. The single-shard cluster has exactly one data group, [`DATA_GROUP`]; every
/// inter-node message and metric carries the id so shards can be added without a format change.
pub type GroupId = u64;

/// The one data group of a single-shard cluster.
pub const DATA_GROUP: GroupId = 0;

/// What the cluster knows of one member: stored in the Raft membership config, so it is
/// replicated and survives restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The operator-facing node id (`--node-id`), stable across wipes.
    pub node_id: u64,
    /// Address peers use for gRPC (Raft, forwarding, admin).
    pub grpc_addr: String,
    /// Address clients use for HTTP; empty until the member has reported it.
    pub http_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} (grpc {}, http {})", self.node_id, self.grpc_addr, self.http_addr)
    }
}

openraft::declare_raft_types!(
    /// The Raft type configuration of every ferrokv group.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = RaftId,
        Node = Member,
);

/// Snapshot payload: the encoded state machine in a file (see `storage::snapshot_file`). Cheap
/// to clone.
pub type SnapshotData = crate::storage::SnapshotFile;

pub type Raft = openraft::Raft<TypeConfig, crate::storage::StateMachineStore>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type Membership = openraft::Membership<RaftId, Member>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;

/// About how many bytes an entry takes encoded (its log id, its payload): lets an encoder size
/// its buffer once instead of growing it field by field.
pub fn entry_len_hint(entry: &Entry) -> usize {
    const LOG_ID: usize = 24;
    LOG_ID
        + match &entry.payload {
            openraft::EntryPayload::Normal(cmd) => cmd.encoded_len_hint(),
            openraft::EntryPayload::Membership(_) | openraft::EntryPayload::Blank => 256,
        }
}
