//! The Raft state machine: applies committed commands to the in-memory [`KvState`], builds and
//! installs snapshots, and serves local reads.
//!
//! The state is guarded by a `std::sync::RwLock`, not an async lock: every critical section is
//! short and never awaits, and reads from HTTP handlers must not queue behind the Raft task.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::Stream;
use futures::StreamExt;
use openraft::EntryPayload;
use openraft::RaftSnapshotBuilder;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;

use crate::command::CommandResult;
use crate::state::Digest;
use crate::state::KvState;
use crate::storage::Incoming;
use crate::storage::snapshot;
use crate::storage::snapshot_file;
use crate::types::LogId;
use crate::types::Snapshot;
use crate::types::SnapshotData;
use crate::types::SnapshotMeta;
use crate::types::StoredMembership;
use crate::types::TypeConfig;

/// How many checkpoint digests a replica remembers.
const CHECKPOINTS_KEPT: usize = 64;

/// Everything the state machine holds.
#[derive(Debug, Default)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub kv: KvState,
    /// (log index, state digest) of the latest applied checkpoints, oldest first.
    pub checkpoints: VecDeque<(u64, Digest)>,
}

impl SmData {
    pub fn applied_index(&self) -> u64 {
        self.last_applied.map_or(0, |l| l.index)
    }

    /// The digest this replica recorded when it applied the checkpoint at `index`.
    pub fn checkpoint(&self, index: u64) -> Option<Digest> {
        self.checkpoints.iter().find(|(i, _)| *i == index).map(|(_, d)| *d)
    }
}

#[derive(Debug, Default)]
pub struct SmCounters {
    pub snapshots_built: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub snapshot_bytes: AtomicU64,
}

struct Inner {
    data: RwLock<SmData>,
    /// Holds `snapshot.bin`, the one current snapshot. Its data is never held whole in memory:
    /// it is written, sent and loaded a piece at a time (see `snapshot_file`).
    dir: PathBuf,
    counters: SmCounters,
    /// While true, applying waits (fault injection: a replica that lags behind in applying).
    apply_held: tokio::sync::watch::Sender<bool>,
}

/// Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

impl StateMachineStore {
    /// Open the state machine in `dir`, restoring the last persisted snapshot. Openraft then
    /// re-applies the committed log tail on top of it.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let mut data = SmData::default();
        if let Some((meta, snapshot)) = snapshot_file::read_current(&dir)? {
            data = SmData {
                last_applied: meta.last_log_id,
                last_membership: meta.last_membership.clone(),
                kv: snapshot.decode()?,
                checkpoints: VecDeque::new(),
            };
            tracing::info!(last_log_id = ?meta.last_log_id, keys = data.kv.len(), "restored snapshot");
        }
        Ok(StateMachineStore {
            inner: Arc::new(Inner {
                data: RwLock::new(data),
                dir,
                counters: SmCounters::default(),
                apply_held: tokio::sync::watch::Sender::new(false),
            }),
        })
    }

    /// Run `f` on the current state (a consistent view; keep it short).
    pub fn read<R>(&self, f: impl FnOnce(&SmData) -> R) -> R {
        f(&self.read_guard())
    }

    /// The state as snapshot data in memory, with the log index it was taken at (a consistent
    /// cut).
    pub fn encode_state(&self) -> io::Result<(u64, Bytes)> {
        let sm = self.read_guard();
        Ok((sm.applied_index(), snapshot::encode(&sm.kv)?))
    }

    /// Overwrite a key on this replica only (fault injection; see `--unsafe-fault-injection`).
    pub fn overwrite_locally(&self, key: &str, value: bytes::Bytes) {
        self.write_guard().kv.overwrite_locally(key, value);
    }

    /// Hold (or release) applying on this replica only (fault injection; see
    /// `--unsafe-fault-injection`): committed entries wait, unapplied, until released, as on a
    /// replica that lags behind. Returns this replica's applied index.
    pub fn hold_apply(&self, held: bool) -> u64 {
        self.inner.apply_held.send_replace(held);
        self.read(SmData::applied_index)
    }

    /// Wait while applying is held.
    async fn apply_released(&self) {
        if *self.inner.apply_held.borrow() {
            let mut held = self.inner.apply_held.subscribe();
            // The sender lives as long as this store: the wait ends only on a release.
            let _ = held.wait_for(|held| !held).await;
        }
    }

    /// Replace the key-value state with `state`, which must be the state at log index `at_index`
    /// (e.g. another replica's, rolled forward with this replica's log). Raft's own bookkeeping
    /// (applied index, membership) stays, so this only happens when `at_index` is exactly this
    /// replica's applied index; otherwise `state` is handed back unchanged.
    #[allow(clippy::result_large_err)]
    pub fn replace_state(&self, at_index: u64, state: KvState) -> Result<Digest, KvState> {
        let mut sm = self.write_guard();
        if sm.applied_index() != at_index {
            return Err(state);
        }
        let digest = state.digest();
        sm.kv = state;
        sm.checkpoints.clear();
        Ok(digest)
    }

    pub fn counters(&self) -> &SmCounters {
        &self.inner.counters
    }

    fn read_guard(&self) -> RwLockReadGuard<'_, SmData> {
        // A panic while holding the lock cannot leave SmData half-updated in a way readers
        // could misinterpret (each apply step is a single assignment), so poisoning is ignored.
        self.inner.data.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_guard(&self) -> RwLockWriteGuard<'_, SmData> {
        self.inner.data.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A peer's snapshot, to be received into a temporary file in this store's directory.
    pub fn incoming_snapshot(&self) -> io::Result<Incoming> {
        Incoming::create(&self.inner.dir)
    }

    /// Write the current state as a snapshot: a consistent cut, so applies wait while the
    /// state is written to the file, but not while it is synced.
    fn write_snapshot(&self) -> io::Result<(SnapshotMeta, SnapshotData)> {
        let (meta, written) = {
            let sm = self.read_guard();
            let meta = SnapshotMeta { last_log_id: sm.last_applied, last_membership: sm.last_membership.clone() };
            let written = snapshot_file::write_state(&self.inner.dir, &meta, &sm.kv)?;
            (meta, written)
        };
        Ok((meta, written.publish()?))
    }
}

/// Run blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let store = self.clone();
        let (meta, data) = blocking(move || store.write_snapshot()).await?;
        self.inner.counters.snapshot_bytes.store(data.len(), Ordering::Relaxed);
        self.inner.counters.snapshots_built.fetch_add(1, Ordering::Relaxed);
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "built snapshot");
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let sm = self.read_guard();
        Ok((sm.last_applied, sm.last_membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        self.apply_released().await;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let index = entry.log_id.index;
            let result = {
                let mut sm = self.write_guard();
                sm.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => CommandResult::Done,
                    EntryPayload::Normal(cmd) => {
                        let result = sm.kv.apply(index, &cmd);
                        if let CommandResult::Checkpoint { digest } = result {
                            if sm.checkpoints.len() == CHECKPOINTS_KEPT {
                                sm.checkpoints.pop_front();
                            }
                            sm.checkpoints.push_back((index, digest));
                        }
                        result
                    }
                    EntryPayload::Membership(m) => {
                        sm.last_membership = StoredMembership::new(Some(entry.log_id), m);
                        CommandResult::Done
                    }
                }
            };
            if let Some(r) = responder {
                r.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, data: SnapshotData) -> Result<(), io::Error> {
        let (dir, written, bytes) = (self.inner.dir.clone(), meta.clone(), data.len());
        let kv = blocking(move || {
            let kv = data.decode()?;
            snapshot_file::write_copy(&dir, &written, &data)?;
            Ok(kv)
        })
        .await?;
        {
            let mut sm = self.write_guard();
            *sm = SmData {
                last_applied: meta.last_log_id,
                last_membership: meta.last_membership.clone(),
                kv,
                checkpoints: VecDeque::new(),
            };
        }
        self.inner.counters.snapshot_bytes.store(bytes, Ordering::Relaxed);
        self.inner.counters.snapshots_installed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(last_log_id = ?meta.last_log_id, bytes, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let dir = self.inner.dir.clone();
        let current = blocking(move || snapshot_file::read_current(&dir)).await?;
        Ok(current.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}
