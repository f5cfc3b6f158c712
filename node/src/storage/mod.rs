//! Durable storage of a Raft group: the write-ahead log (log entries, vote, committed index)
//! and the state machine with its snapshots, both under the node's data directory.

mod log_store;
pub mod snapshot;
mod snapshot_file;
mod state_machine;

pub use log_store::FsyncPolicy;
pub use log_store::LogStore;
pub use snapshot_file::Incoming;
pub use snapshot_file::SnapshotFile;
pub use state_machine::SmData;
pub use state_machine::StateMachineStore;

#[cfg(test)]
mod conformance;
