//! The replicated key-value state: pure, deterministic, no I/O. `storage::StateMachineStore`
//! feeds it committed commands and serves reads from it.

mod digest;
mod kv;
pub(crate) mod record;

pub use digest::Digest;
pub use kv::KvRecord;
pub use kv::KvState;
pub use kv::ScanPage;
pub use record::RecordRef;
pub(crate) use record::Slot;
