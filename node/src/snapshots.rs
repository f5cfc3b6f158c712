//! When a node builds a snapshot (which also lets it drop the log before it).
//!
//! A snapshot writes out every key, so its cost grows with the state, while the log it replaces
//! grows with the writes. A fixed number of entries between snapshots therefore costs little for
//! a small state and dominates for a large one: with a million keys, one snapshot per 10 000
//! writes meant encoding the whole state every quarter second under load, and loading a million
//! keys took a third longer than with no snapshots at all. So a snapshot is due once the entries
//! applied since the last one reach `--snapshot-every` or a sixteenth of the keys held, whichever
//! is more: every write then pays for at most about sixteen keys' worth of snapshot, and the log
//! kept in memory between snapshots stays within a sixteenth of the state's entries (a few
//! percent of the memory the state itself takes).
//!
//! Each node decides for itself (openraft's own policy is off); openraft ignores a request
//! while a snapshot is being built.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver as _;
use tokio::sync::watch;

use crate::service::Core;

/// How often a node looks whether a snapshot is due.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The log may grow to this fraction (1 / KEYS_PER_LOG_ENTRY) of the number of keys held.
const KEYS_PER_LOG_ENTRY: u64 = 16;

/// Whether a snapshot is due, `applied` entries in, the last snapshot at `snapshot`, with `keys`
/// keys held and at least `min_entries` entries between snapshots.
pub fn due(applied: u64, snapshot: u64, keys: u64, min_entries: u64) -> bool {
    applied.saturating_sub(snapshot) >= min_entries.max(keys / KEYS_PER_LOG_ENTRY).max(1)
}

/// Ask for a snapshot whenever one is due, until `stop` flips to true.
pub async fn run(core: Arc<Core>, min_entries: u64, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let (applied, snapshot) = {
            let m = core.raft.metrics();
            let m = m.borrow_watched();
            (m.last_applied.map_or(0, |l| l.index), m.snapshot.map_or(0, |l| l.index))
        };
        let keys = core.sm.read(|sm| sm.kv.len() as u64);
        if due(applied, snapshot, keys, min_entries)
            && let Err(e) = core.raft.trigger().snapshot().await
        {
            tracing::warn!("asking for a snapshot: {e}");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_after_the_minimum_for_a_small_state() {
        assert!(!due(10_999, 1_000, 5_000, 10_000));
        assert!(due(11_000, 1_000, 5_000, 10_000));
    }

    #[test]
    fn a_large_state_waits_for_a_sixteenth_of_its_keys() {
        let keys = 1_000_000;
        assert!(!due(62_499, 0, keys, 10_000));
        assert!(due(62_500, 0, keys, 10_000));
    }

    #[test]
    fn nothing_applied_since_the_last_snapshot_is_never_due() {
        assert!(!due(500, 500, 0, 0));
        assert!(!due(400, 500, 0, 0));
    }
}
