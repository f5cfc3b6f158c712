//! The replicated key-value state: pure, deterministic, no I/O. `storage::StateMachineStore`
//! feeds it committed commands and serves reads from it.

mod kv;

pub use kv::KvRecord;
pub use kv::KvState;
pub use kv::ScanPage;
