//! The in-memory ordered map of key → record, and how each command changes it.
//!
//! Every change is a pure function of (state, log index, command): replicas applying the same
//! log reach byte-identical states. Time enters only through `now_ms` stamped into commands by
//! the leader; reads pass their own clock to hide keys whose TTL already ran out.

use std::collections::BTreeSet;
use std::ops::Bound;

use bytes::Bytes;

use crate::command::Command;
use crate::command::CommandResult;
use crate::command::Condition;
use crate::state::digest::Digest;
use crate::state::digest::record_hash;
use crate::state::record::RecordRef;
use crate::state::record::Slot;

pub use crate::state::record::KvRecord;

/// A page of a prefix scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub items: Vec<(String, KvRecord)>,
    /// Pass as `after` to get the next page; `None` when the scan is complete.
    pub next_after: Option<String>,
}

/// The whole key-value state of one group.
#[derive(Debug, Clone, Default)]
pub struct KvState {
    /// Every key with its record, one packed allocation each, ordered by key.
    map: BTreeSet<Slot>,
    /// (deadline, key) of every key with a TTL, so expiry is found without a full scan.
    expiries: BTreeSet<(u64, String)>,
    cluster_id: Option<String>,
    /// Approximate bytes held by keys, values and metadata.
    approx_bytes: u64,
    /// Sum of every record's hash (see [`crate::state::digest`]).
    records_digest: Digest,
}

impl PartialEq for KvState {
    /// Same cluster id and the same records, byte for byte (slots alone compare by key).
    fn eq(&self, other: &Self) -> bool {
        self.cluster_id == other.cluster_id
            && self.map.len() == other.map.len()
            && self.map.iter().zip(&other.map).all(|(a, b)| a.bytes() == b.bytes())
    }
}

impl Eq for KvState {}

impl KvState {
    /// Apply one committed command at log index `revision`.
    pub fn apply(&mut self, revision: u64, cmd: &Command) -> CommandResult {
        match cmd {
            Command::Put { key, value, content_type, ttl_ms, condition, now_ms } => {
                // One decoding of the stored record serves the condition, the new record's
                // revisions and the bookkeeping it takes out of the state.
                let stored = self.record(key);
                let current = stored.filter(|r| !r.is_expired(*now_ms));
                if let Some(failed) = check(*condition, current) {
                    return failed;
                }
                let leaving = stored.as_ref().map(Bookkeeping::of);
                let (created, create_revision, version) = match current {
                    Some(rec) => (false, rec.create_revision, rec.version + 1),
                    None => (true, revision, 1),
                };
                let record = RecordRef {
                    key,
                    value,
                    content_type: content_type.as_deref(),
                    create_revision,
                    mod_revision: revision,
                    version,
                    expires_at_ms: ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
                };
                self.replace(&record, leaving);
                CommandResult::Put { created, revision, version }
            }
            Command::Delete { key, condition, now_ms } => {
                let current = self.live(key, *now_ms);
                if let Some(failed) = check(*condition, current) {
                    return failed;
                }
                if current.is_none() {
                    // An expired-but-not-yet-reaped key counts as absent; reap it now.
                    self.remove(key);
                    return CommandResult::NotFound;
                }
                self.remove(key);
                CommandResult::Deleted { revision }
            }
            Command::Expire { keys } => {
                for (key, mod_revision) in keys {
                    if self.record(key).is_some_and(|r| r.mod_revision == *mod_revision) {
                        self.remove(key);
                    }
                }
                CommandResult::Done
            }
            Command::SetClusterId { id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(id.clone());
                }
                CommandResult::Done
            }
            Command::Noop => CommandResult::Done,
            Command::Checkpoint => CommandResult::Checkpoint { digest: self.digest() },
        }
    }

    /// The fingerprint of the whole state (records and cluster id).
    pub fn digest(&self) -> Digest {
        self.records_digest.with_cluster_id(self.cluster_id.as_deref())
    }

    /// Replace a key's value on this replica only, keeping its revisions: the state then differs
    /// from every other replica's. Exists solely for fault-injection tests of anti-entropy.
    pub fn overwrite_locally(&mut self, key: &str, value: Bytes) {
        let record = match self.record(key) {
            Some(rec) => KvRecord { value, ..rec.to_record() },
            None => KvRecord {
                value,
                content_type: None,
                create_revision: 0,
                mod_revision: 0,
                version: 1,
                expires_at_ms: None,
            },
        };
        self.insert(&record.as_ref(key));
    }

    /// The record of a key that exists and has not expired at `now_ms`.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<RecordRef<'_>> {
        self.live(key, now_ms)
    }

    /// Up to `limit` live keys starting with `prefix`, strictly after `after`, in key order.
    pub fn scan(&self, prefix: &str, after: Option<&str>, limit: usize, now_ms: u64) -> ScanPage {
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.as_bytes()),
            _ => Bound::Included(prefix.as_bytes()),
        };
        let mut items = Vec::new();
        let mut more = false;
        for slot in self.map.range::<[u8], _>((start, Bound::Unbounded)) {
            let rec = slot.view();
            if !rec.key.starts_with(prefix) {
                break;
            }
            if rec.is_expired(now_ms) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push((rec.key.to_string(), rec.to_record()));
        }
        let next_after = if more { items.last().map(|(k, _)| k.clone()) } else { None };
        ScanPage { items, next_after }
    }

    /// Keys whose TTL ran out at `now_ms`, with their mod revision, oldest deadline first.
    pub fn expired(&self, now_ms: u64, max: usize) -> Vec<(String, u64)> {
        self.expiries
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .filter_map(|(_, k)| self.record(k).map(|r| (k.clone(), r.mod_revision)))
            .take(max)
            .collect()
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn approx_bytes(&self) -> u64 {
        self.approx_bytes
    }

    /// Every record in key order (digests, tests).
    pub fn iter(&self) -> impl Iterator<Item = RecordRef<'_>> {
        self.map.iter().map(Slot::view)
    }

    /// Every record in key order, packed (snapshots).
    pub(crate) fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.map.iter()
    }

    /// Rebuild a state from its parts (snapshot install); derived indexes are recomputed.
    pub fn from_parts(cluster_id: Option<String>, records: impl IntoIterator<Item = (String, KvRecord)>) -> Self {
        Self::from_slots(cluster_id, records.into_iter().map(|(k, r)| Slot::pack(&r.as_ref(&k))))
    }

    /// Rebuild a state from packed records; a key given twice keeps its last record.
    pub(crate) fn from_slots(cluster_id: Option<String>, slots: impl IntoIterator<Item = Slot>) -> Self {
        let mut state = KvState { cluster_id, ..KvState::default() };
        let slots: Vec<Slot> = slots.into_iter().collect();
        if slots.windows(2).all(|w| w[0].key() < w[1].key()) {
            // Already in key order (a snapshot): build the index in bulk, with full nodes.
            for slot in &slots {
                state.count(slot);
            }
            state.map = slots.into_iter().collect();
        } else {
            for slot in slots {
                state.insert_slot(slot);
            }
        }
        state
    }

    fn record(&self, key: &str) -> Option<RecordRef<'_>> {
        self.map.get(key.as_bytes()).map(Slot::view)
    }

    fn live(&self, key: &str, now_ms: u64) -> Option<RecordRef<'_>> {
        self.record(key).filter(|r| !r.is_expired(now_ms))
    }

    fn insert(&mut self, record: &RecordRef<'_>) {
        self.insert_slot(Slot::pack(record));
    }

    /// Put `record` in place of the stored record of its key, whose bookkeeping (`leaving`) the
    /// caller read from it just before.
    fn replace(&mut self, record: &RecordRef<'_>, leaving: Option<Bookkeeping>) {
        let entering = Bookkeeping::of(record);
        match (self.map.replace(Slot::pack(record)), leaving) {
            (Some(_), Some(leaving)) => self.subtract(leaving),
            (Some(old), None) => self.forget(&old),
            (None, _) => {}
        }
        self.add(entering);
    }

    fn insert_slot(&mut self, slot: Slot) {
        let entering = Bookkeeping::of(&slot.view());
        // One search of the map replaces the old record, if any, with the new one.
        if let Some(old) = self.map.replace(slot) {
            self.forget(&old);
        }
        // After `forget`: the old record's expiry entry may be the very one the new record adds.
        self.add(entering);
    }

    /// The bookkeeping of a record entering the map.
    fn count(&mut self, slot: &Slot) {
        self.add(Bookkeeping::of(&slot.view()));
    }

    fn add(&mut self, entering: Bookkeeping) {
        self.approx_bytes += entering.approx_bytes;
        self.records_digest.add(entering.hash);
        if let Some(expiry) = entering.expiry {
            self.expiries.insert(expiry);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.map.take(key.as_bytes()) {
            self.forget(&old);
        }
    }

    /// Undo the bookkeeping of a record that left the map.
    fn forget(&mut self, old: &Slot) {
        self.subtract(Bookkeeping::of(&old.view()));
    }

    fn subtract(&mut self, leaving: Bookkeeping) {
        self.approx_bytes = self.approx_bytes.saturating_sub(leaving.approx_bytes);
        self.records_digest.sub(leaving.hash);
        if let Some(expiry) = leaving.expiry {
            self.expiries.remove(&expiry);
        }
    }
}

/// What a record adds to the state's derived figures and indexes while it is in the map.
struct Bookkeeping {
    approx_bytes: u64,
    hash: u128,
    expiry: Option<(u64, String)>,
}

impl Bookkeeping {
    fn of(rec: &RecordRef<'_>) -> Self {
        Bookkeeping {
            approx_bytes: rec.approx_bytes(),
            hash: record_hash(rec),
            expiry: rec.expires_at_ms.map(|at| (at, rec.key.to_string())),
        }
    }
}

/// `Some(ConditionFailed)` when `condition` does not hold for the key's live record.
fn check(condition: Condition, current: Option<RecordRef<'_>>) -> Option<CommandResult> {
    let holds = match condition {
        Condition::None => true,
        Condition::Absent => current.is_none(),
        Condition::ModRevision(rev) => current.is_some_and(|r| r.mod_revision == rev),
    };
    (!holds).then(|| CommandResult::ConditionFailed { current_revision: current.map(|r| r.mod_revision) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, condition: Condition, ttl_ms: Option<u64>, now_ms: u64) -> Command {
        Command::Put {
            key: key.into(),
            value: Bytes::from(value.to_string()),
            content_type: None,
            ttl_ms,
            condition,
            now_ms,
        }
    }

    #[test]
    fn put_creates_then_replaces_with_revisions_and_versions() {
        let mut s = KvState::default();
        assert_eq!(
            s.apply(5, &put("a", "1", Condition::None, None, 0)),
            CommandResult::Put { created: true, revision: 5, version: 1 }
        );
        assert_eq!(
            s.apply(9, &put("a", "2", Condition::None, None, 0)),
            CommandResult::Put { created: false, revision: 9, version: 2 }
        );
        let rec = s.get("a", 0).unwrap();
        assert_eq!((rec.create_revision, rec.mod_revision, rec.version), (5, 9, 2));
        assert_eq!(rec.value, b"2");
    }

    #[test]
    fn compare_and_set_and_create_only() {
        let mut s = KvState::default();
        s.apply(1, &put("k", "v1", Condition::None, None, 0));
        assert_eq!(
            s.apply(2, &put("k", "v2", Condition::ModRevision(7), None, 0)),
            CommandResult::ConditionFailed { current_revision: Some(1) }
        );
        assert_eq!(s.get("k", 0).unwrap().value, b"v1");
        assert!(matches!(s.apply(3, &put("k", "v3", Condition::ModRevision(1), None, 0)), CommandResult::Put { .. }));
        assert_eq!(
            s.apply(4, &put("k", "x", Condition::Absent, None, 0)),
            CommandResult::ConditionFailed { current_revision: Some(3) }
        );
        assert!(matches!(
            s.apply(5, &put("new", "x", Condition::Absent, None, 0)),
            CommandResult::Put { created: true, .. }
        ));
        assert_eq!(
            s.apply(6, &put("missing", "x", Condition::ModRevision(1), None, 0)),
            CommandResult::ConditionFailed { current_revision: None }
        );
    }

    #[test]
    fn delete_with_and_without_condition() {
        let mut s = KvState::default();
        s.apply(1, &put("k", "v", Condition::None, None, 0));
        let del = |c| Command::Delete { key: "k".into(), condition: c, now_ms: 0 };
        assert!(matches!(s.apply(2, &del(Condition::ModRevision(9))), CommandResult::ConditionFailed { .. }));
        assert_eq!(s.apply(3, &del(Condition::ModRevision(1))), CommandResult::Deleted { revision: 3 });
        assert_eq!(s.apply(4, &del(Condition::None)), CommandResult::NotFound);
        assert!(s.is_empty());
        assert_eq!(s.approx_bytes(), 0);
    }

    #[test]
    fn ttl_hides_then_expire_removes_only_unchanged_keys() {
        let mut s = KvState::default();
        s.apply(1, &put("t", "v", Condition::None, Some(1000), 10_000));
        s.apply(2, &put("u", "v", Condition::None, Some(1000), 10_000));
        assert_eq!(s.get("t", 10_500).unwrap().ttl_seconds(10_500), Some(1));
        assert!(s.get("t", 11_000).is_none(), "expired keys are hidden from reads");
        assert_eq!(s.expired(11_000, 10), vec![("t".to_string(), 1), ("u".to_string(), 2)]);
        // "u" is rewritten before the expire command applies: it must survive.
        s.apply(3, &put("u", "w", Condition::None, None, 11_000));
        s.apply(4, &Command::Expire { keys: vec![("t".into(), 1), ("u".into(), 2)] });
        assert!(s.get("t", 0).is_none());
        assert_eq!(s.get("u", 99_999).unwrap().value, b"w");
        assert!(s.expired(u64::MAX, 10).is_empty());
    }

    #[test]
    fn expired_key_counts_as_absent_for_create_only() {
        let mut s = KvState::default();
        s.apply(1, &put("t", "v", Condition::None, Some(10), 0));
        assert!(matches!(
            s.apply(2, &put("t", "w", Condition::Absent, None, 10)),
            CommandResult::Put { created: true, version: 1, .. }
        ));
    }

    #[test]
    fn scan_paginates_by_prefix_in_key_order() {
        let mut s = KvState::default();
        for (i, k) in ["a/1", "a/2", "a/3", "b/1", "a/0"].iter().enumerate() {
            s.apply(i as u64 + 1, &put(k, "v", Condition::None, None, 0));
        }
        let p1 = s.scan("a/", None, 2, 0);
        assert_eq!(p1.items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), vec!["a/0", "a/1"]);
        assert_eq!(p1.next_after.as_deref(), Some("a/1"));
        let p2 = s.scan("a/", p1.next_after.as_deref(), 2, 0);
        assert_eq!(p2.items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), vec!["a/2", "a/3"]);
        assert_eq!(p2.next_after, None);
        assert_eq!(s.scan("", None, 100, 0).items.len(), 5);
        assert!(s.scan("zz", None, 10, 0).items.is_empty());
    }

    #[test]
    fn cluster_id_is_set_once() {
        let mut s = KvState::default();
        s.apply(1, &Command::SetClusterId { id: "one".into() });
        s.apply(2, &Command::SetClusterId { id: "two".into() });
        assert_eq!(s.cluster_id(), Some("one"));
    }

    #[test]
    fn digest_follows_every_change_and_matches_a_rebuild() {
        let mut s = KvState::default();
        let empty = s.digest();
        s.apply(1, &put("a", "1", Condition::None, None, 0));
        let one = s.digest();
        assert_ne!(one, empty);
        s.apply(2, &put("b", "2", Condition::None, Some(10), 0));
        s.apply(3, &put("a", "3", Condition::None, None, 0));
        s.apply(4, &Command::SetClusterId { id: "c".into() });
        let rebuilt =
            KvState::from_parts(s.cluster_id().map(String::from), s.iter().map(|r| (r.key.to_string(), r.to_record())));
        assert_eq!(rebuilt.digest(), s.digest());
        // The same writes in another order at other indexes are another state.
        let mut t = KvState::default();
        t.apply(1, &put("b", "2", Condition::None, Some(10), 0));
        t.apply(2, &put("a", "3", Condition::None, None, 0));
        assert_ne!(t.digest(), s.digest());
        s.apply(5, &Command::Delete { key: "b".into(), condition: Condition::None, now_ms: 0 });
        s.apply(6, &Command::Delete { key: "a".into(), condition: Condition::None, now_ms: 0 });
        assert_eq!(s.digest(), KvState::from_parts(Some("c".into()), []).digest(), "removal is exact");
    }

    #[test]
    fn checkpoint_reports_the_digest_and_local_overwrite_changes_it() {
        let mut s = KvState::default();
        s.apply(1, &put("a", "1", Condition::None, None, 0));
        let CommandResult::Checkpoint { digest } = s.apply(2, &Command::Checkpoint) else { panic!("no digest") };
        assert_eq!(digest, s.digest());
        let mut diverged = s.clone();
        diverged.overwrite_locally("a", Bytes::from_static(b"X"));
        assert_ne!(diverged.digest(), s.digest());
        assert_eq!(diverged.get("a", 0).unwrap().mod_revision, 1, "revisions are kept");
    }

    #[test]
    fn replacing_a_record_keeps_its_bookkeeping_exact() {
        let mut s = KvState::default();
        s.apply(1, &put("t", "v1", Condition::None, Some(50), 100));
        s.apply(2, &put("p", "long value", Condition::None, None, 0));
        // Same key, same deadline: the expiry entry the old record leaves is the one the new adds.
        s.overwrite_locally("t", Bytes::from_static(b"v2"));
        assert_eq!(s.expired(150, 10), vec![("t".to_string(), 1)]);
        // Same key, a new deadline and a shorter value.
        s.apply(3, &put("p", "s", Condition::None, Some(10), 100));
        assert_eq!(s.expired(110, 10), vec![("p".to_string(), 3)]);
        // A put over a record whose TTL ran out creates the key anew, and the expired record's
        // bookkeeping leaves with it.
        s.apply(6, &put("e", "old", Condition::None, Some(10), 0));
        let created = s.apply(7, &put("e", "new", Condition::None, None, 100));
        assert_eq!(created, CommandResult::Put { created: true, revision: 7, version: 1 });
        let rebuilt =
            KvState::from_parts(s.cluster_id().map(String::from), s.iter().map(|r| (r.key.to_string(), r.to_record())));
        assert_eq!(s.approx_bytes(), rebuilt.approx_bytes());
        assert_eq!(s.digest(), rebuilt.digest());
        assert_eq!(s.expired(u64::MAX, 10), rebuilt.expired(u64::MAX, 10));
        s.apply(4, &Command::Delete { key: "t".into(), condition: Condition::None, now_ms: 0 });
        s.apply(5, &Command::Delete { key: "p".into(), condition: Condition::None, now_ms: 0 });
        s.apply(8, &Command::Delete { key: "e".into(), condition: Condition::None, now_ms: 0 });
        assert_eq!((s.approx_bytes(), s.expired(u64::MAX, 10)), (0, vec![]));
    }

    #[test]
    fn from_parts_rebuilds_indexes() {
        let mut s = KvState::default();
        s.apply(1, &put("t", "v", Condition::None, Some(5), 0));
        s.apply(2, &put("p", "v", Condition::None, None, 0));
        let rebuilt =
            KvState::from_parts(s.cluster_id().map(String::from), s.iter().map(|r| (r.key.to_string(), r.to_record())));
        assert_eq!(rebuilt, s);
    }
}
