//! The durable Raft log: vote, log entries, committed id and purge point, kept in memory and
//! persisted in one append-only write-ahead file.
//!
//! # On-disk format
//!
//! The directory holds a single file, `raft.wal`, that is only ever appended to (except when it
//! is rewritten whole by compaction, see below). It is a sequence of records:
//!
//! ```text
//! [u32 LE payload_len][u32 LE crc32(payload)][payload]
//! payload = [u8 format_version = 1] ++ postcard(Record)
//! Record  = Entry(Entry) | Vote(Vote) | Committed(Option<LogId>)
//!         | TruncateAfter(Option<LogId>) | Purge(LogId)
//! ```
//!
//! openraft's serde derives are not a stable on-disk format by themselves; the leading version
//! byte makes the encoding ours, so a future change of the record layout can be told apart from
//! corruption. A record with a valid checksum but an unknown version refuses to open
//! (`InvalidData`) instead of being guessed at.
//!
//! The file is a redo log: on open every record is replayed in order into memory (a map of live
//! entries, the vote, the committed id and the last purged id). Any prefix of the record
//! sequence is a state the log really went through, which is what makes a torn tail safe to cut.
//!
//! The file is kept up to [`PREALLOCATE_BYTES`] longer than its records, filled with written
//! (and synced) zeros, and records are written into that space. An fdatasync after a write that
//! grows a file must also commit the new size through the file system journal, and so must one
//! after a first write into blocks that were only allocated (`fallocate`); one after a write
//! over zeros already on disk only flushes the data, which took about 100 instead of 150–200 µs
//! per sync on ext4 here. Replay ends at an all-zero header when everything after it is zero
//! too.
//!
//! # Crash recovery
//!
//! A crash in the middle of a write leaves a torn tail: an incomplete header, an incomplete
//! payload, a payload whose CRC does not match (zero-filled blocks included), or a zero header
//! with non-zero bytes somewhere after it (a later block of the batch reached the disk, the
//! first did not). Replay stops at the first such record, logs a warning, truncates the file to
//! the end of the last good record (dropping the preallocated space with it) and fsyncs it, so
//! later appends start on a clean boundary and no stray bytes lie ahead of them. Nothing
//! acknowledged is lost by this: a record is acknowledged only after the fsync that covers it,
//! and a torn record was by definition never covered by one.
//!
//! Damage is only tolerated at the tail. If a record fails its checksum but the record right
//! after it is intact, the damage is in the middle of the file (bit rot, a foreign write) and
//! truncating there would silently drop acknowledged data, so open fails with `InvalidData`
//! naming the offset. This check is best-effort both ways: a corrupted *length* field loses the
//! record boundary and cannot be told apart from a torn tail, and a crash can (rarely) produce
//! the refused pattern if the disk persisted a later block of the last, unsynced batch but not an
//! earlier one; an operator then truncates the file at the reported offset.
//!
//! # Write path and guarantees
//!
//! Writes go through one dedicated writer thread, fed by a channel, in submission order:
//!
//! - The in-memory state is updated by the caller *before* the record is queued (appends are
//!   readable as soon as `append` returns, as openraft requires), while holding the state lock,
//!   so memory order and file order are the same.
//! - The writer takes one request, drains every request already queued, writes them all, then
//!   issues one `fdatasync` ([`FsyncPolicy::Always`]) and completes them in order. Concurrent
//!   writers therefore share fsyncs (group commit).
//! - `append` returns at once; its [`IOFlushed`] callback fires once the entries are durable.
//!   `save_vote`, `truncate_after` and `purge` wait until their record is durable. `save_committed`
//!   only changes memory: the committed id is written after the records of the next request,
//!   by the writer thread once the queue has been quiet for 10 ms, or at close. A crash may lose
//!   the latest one, which only means re-applying less after a restart (openraft allows not
//!   persisting it at all, and a restarted node never resumes a leadership in place: it learns
//!   the commit index from an election in a new term).
//! - The vote becomes visible to readers only once it is durable (the writer thread publishes it).
//! - Vote and log records share the queue, so they are never reordered (an openraft requirement).
//! - After any I/O error of the writer the store is poisoned: the failing requests and every later
//!   call get an error. A half-written batch is never followed by further writes, so the damage
//!   stays a torn tail that the next open cuts off.
//!
//! One exception saves two thread wake-ups per replication round on a follower. With
//! [`LogStore::set_caller_writes`] on, a caller submitting an append while the
//! writer thread has nothing queued and is not writing writes the record (and fsyncs) itself, on
//! its own thread, under the same `Writer` and with the same guarantees; anything queued or in
//! progress sends it through the queue as usual, so the order is unchanged. The node turns it on
//! for followers whose runtime is a single thread: such a follower has nothing else to do while
//! its log is synced but wait for the sync, and the leader sends it the next entries only once it
//! answered (`network::window`).
//!
//! With [`FsyncPolicy::Never`] records are handed to the OS (before they are acknowledged) but
//! never fsynced: a process crash loses nothing acknowledged, a machine crash may lose the tail.
//!
//! # Compaction
//!
//! Purged and truncated entries stay in the file. When, after a purge or truncation, the file
//! is larger than [`LogStoreOptions::compact_min_bytes`] and more than
//! [`LogStoreOptions::compact_ratio`] times the bytes of the live entries, the writer thread
//! rewrites it: `raft.wal.tmp` gets the vote, the last purged id, the committed id and every
//! live entry; it is fsynced, renamed over `raft.wal`, and the directory is fsynced. The
//! snapshot is taken from memory, which may be ahead of the file (requests still queued); it
//! then stands for those requests, which are completed without writing their records again (the
//! `Writer` type explains why re-writing them would be unsafe). Compaction always fsyncs, whatever the
//! policy: a rename of a half-written file over the log would lose all of it, not just a tail.
//! The replaced file is cut down and closed by a short-lived thread of its own, a few MB at a
//! time: freeing tens of MB at once held up the writer (and every fdatasync) for 40–65 ms.
//!
//! The directory is locked (advisory `flock`, Unix) while a store is open, so a second open of
//! the same log fails instead of interleaving two writers.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Debug;
use std::fs;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::BufReader;
use std::io::BufWriter;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::io::Write;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::OnceLock;
use std::sync::PoisonError;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::Instant;

use openraft::OptionalSend;
use openraft::storage::IOFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogReader;
use openraft::storage::RaftLogStorage;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::types::Entry;
use crate::types::LogId;
use crate::types::TypeConfig;
use crate::types::Vote;
use crate::types::entry_len_hint;

/// Name of the write-ahead file inside the log directory.
const WAL_FILE: &str = "raft.wal";
/// Name of the file a compaction writes before renaming it over [`WAL_FILE`].
const WAL_TMP_FILE: &str = "raft.wal.tmp";
/// Version byte that starts every record payload.
const FORMAT_VERSION: u8 = 1;
/// `[u32 payload_len][u32 crc32]`.
const HEADER_LEN: u64 = 8;
/// Compaction writes the new file in chunks of about this size.
const COMPACTION_CHUNK: usize = 1 << 20;
/// One read for replication returns at most this many bytes of entries (as stored; always at
/// least one entry). An AppendEntries request then stays far below the 64 MiB gRPC message
/// limit even when openraft asks for its 512 entries and every value is of the largest size.
const REPLICATION_READ_BYTES: u64 = 16 << 20;

/// When the writer thread makes records durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` after every batch of writes, before acknowledging it.
    Always,
    /// Never fsync (tests, benchmarks, throw-away clusters): a machine crash may lose the tail.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Never => "never",
        })
    }
}

/// Error of [`FsyncPolicy::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fsync policy {0:?}: expected \"always\" or \"never\"")]
pub struct ParseFsyncPolicyError(String);

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("always") {
            Ok(FsyncPolicy::Always)
        } else if s.eq_ignore_ascii_case("never") {
            Ok(FsyncPolicy::Never)
        } else {
            Err(ParseFsyncPolicyError(s.to_string()))
        }
    }
}

/// Tunables of a [`LogStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogStoreOptions {
    /// When records are fsynced.
    pub fsync: FsyncPolicy,
    /// The WAL is never rewritten while it is at most this many bytes.
    pub compact_min_bytes: u64,
    /// The WAL is rewritten when it is more than this many times the bytes of the live entries
    /// (and above `compact_min_bytes`).
    pub compact_ratio: u64,
    /// A committed id that no request has carried is written by the writer thread once the
    /// queue has been quiet this long, so an idle node does not keep an old one on disk.
    pub committed_written_within: Duration,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions {
            fsync: FsyncPolicy::Always,
            compact_min_bytes: 64 << 20,
            compact_ratio: 4,
            committed_written_within: Duration::from_millis(10),
        }
    }
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Live (not purged, not truncated) entries.
    pub entries: u64,
    /// Current size of `raft.wal`.
    pub wal_bytes: u64,
    /// fsyncs issued by the writer since open (batches and compactions).
    pub fsyncs: u64,
}

/// One WAL record, as decoded. [`RecordRef`] is its borrowed twin for encoding: the variants
/// must stay in the same order with the same contents (postcard encodes `&T` exactly like `T`).
#[derive(Debug, Deserialize)]
enum Record {
    Entry(Entry),
    Vote(Vote),
    Committed(Option<LogId>),
    TruncateAfter(Option<LogId>),
    Purge(LogId),
}

/// Encoding side of [`Record`]: borrowing avoids cloning every entry just to serialize it.
#[derive(Debug, Serialize)]
enum RecordRef<'a> {
    Entry(&'a Entry),
    Vote(&'a Vote),
    Committed(&'a Option<LogId>),
    TruncateAfter(&'a Option<LogId>),
    Purge(&'a LogId),
}

impl RecordRef<'_> {
    /// About how many bytes the record's payload takes encoded.
    fn encoded_len_hint(&self) -> usize {
        match self {
            RecordRef::Entry(entry) => entry_len_hint(entry),
            RecordRef::Vote(_) | RecordRef::Committed(_) | RecordRef::TruncateAfter(_) | RecordRef::Purge(_) => 32,
        }
    }
}

/// Append one framed record to `out`; returns its size on disk (header included).
fn encode_record(record: &RecordRef<'_>, out: &mut Vec<u8>) -> io::Result<u64> {
    let start = out.len();
    // One allocation for the record instead of a doubling for every few fields.
    out.reserve(HEADER_LEN as usize + 1 + record.encoded_len_hint());
    out.extend_from_slice(&[0u8; HEADER_LEN as usize]);
    out.push(FORMAT_VERSION);
    if let Err(e) = postcard::to_io(record, &mut *out) {
        out.truncate(start);
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("cannot encode WAL record: {e}")));
    }
    let payload_start = start + HEADER_LEN as usize;
    let Ok(payload_len) = u32::try_from(out.len() - payload_start) else {
        let len = out.len() - payload_start;
        out.truncate(start);
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("WAL record too large: {len} bytes")));
    };
    let crc = crc32fast::hash(&out[payload_start..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..payload_start].copy_from_slice(&crc.to_le_bytes());
    Ok((out.len() - start) as u64)
}

/// Decode a payload whose checksum already matched.
fn decode_payload(payload: &[u8]) -> io::Result<Record> {
    let Some((&version, body)) = payload.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "empty WAL record"));
    };
    if version != FORMAT_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unsupported WAL record format version {version} (this build reads version {FORMAT_VERSION})"),
        ));
    }
    let (record, rest) = postcard::take_from_bytes::<Record>(body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("undecodable WAL record: {e}")))?;
    if !rest.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WAL record has {} trailing bytes", rest.len()),
        ));
    }
    Ok(record)
}

/// Lock a mutex, ignoring poisoning. Every critical section in this module only does map and
/// field updates that cannot panic halfway through, so a poisoned lock carries consistent data;
/// failing every later call because some unrelated panic happened under the lock would be worse.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn copy_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "raft log store is closed")
}

/// Make a directory entry change (create, rename) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened as files elsewhere; renames are durable by other means.
        let _ = dir;
        Ok(())
    }
}

/// Take an exclusive advisory lock on `dir`, so that a second `open` of the same log (in this
/// process or another) fails instead of corrupting it. Where directories cannot be locked
/// (non-Unix, some network file systems) this is skipped with a warning.
fn lock_dir(dir: &Path) -> io::Result<Option<File>> {
    #[cfg(unix)]
    {
        let handle = File::open(dir)?;
        match handle.try_lock() {
            Ok(()) => Ok(Some(handle)),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("raft log directory {} is already in use", dir.display()),
            )),
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot lock the raft log directory; continuing unlocked");
                Ok(None)
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(None)
    }
}

/// A live entry and the size of its record, for the compaction accounting.
#[derive(Debug, Clone)]
struct Stored {
    entry: Entry,
    size: u64,
}

/// The log as the caller sees it.
#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<u64, Stored>,
    /// Sum of `Stored::size` over `entries`.
    live_bytes: u64,
    /// The durable vote: what readers see.
    vote: Option<Vote>,
    /// The last vote submitted, durable or not: what a compaction writes (see [`Writer`]).
    pending_vote: Option<Vote>,
    committed: Option<LogId>,
    /// `committed` changed since it was last queued for writing (see `save_committed`).
    committed_unsaved: bool,
    last_purged: Option<LogId>,
    /// Sequence number of the last request queued. Assigned under this lock together with the
    /// memory change, so a snapshot of this state is exactly "requests up to `last_seq`".
    last_seq: u64,
}

impl State {
    fn insert(&mut self, entry: Entry, size: u64) {
        let index = entry.log_id.index;
        // An entry at or below the purge point is dead on arrival. openraft never appends one;
        // ignoring it (in memory and on replay alike) keeps the log free of holes regardless.
        if self.last_purged.as_ref().is_some_and(|p| index <= p.index) {
            return;
        }
        if let Some(old) = self.entries.insert(index, Stored { entry, size }) {
            self.live_bytes = self.live_bytes.saturating_sub(old.size);
        }
        self.live_bytes += size;
    }

    fn truncate_after(&mut self, last: Option<&LogId>) {
        let removed = match last {
            None => std::mem::take(&mut self.entries),
            Some(id) => match id.index.checked_add(1) {
                Some(first_removed) => self.entries.split_off(&first_removed),
                None => BTreeMap::new(),
            },
        };
        self.forget(removed);
    }

    fn purge(&mut self, upto: &LogId) {
        if self.last_purged.as_ref().is_some_and(|p| p.index >= upto.index) {
            return;
        }
        self.last_purged = Some(*upto);
        let removed = match upto.index.checked_add(1) {
            Some(first_kept) => {
                let kept = self.entries.split_off(&first_kept);
                std::mem::replace(&mut self.entries, kept)
            }
            None => std::mem::take(&mut self.entries),
        };
        self.forget(removed);
    }

    fn forget(&mut self, removed: BTreeMap<u64, Stored>) {
        let bytes: u64 = removed.values().map(|s| s.size).sum();
        self.live_bytes = self.live_bytes.saturating_sub(bytes);
    }

    fn apply(&mut self, record: Record, size: u64) {
        match record {
            Record::Entry(entry) => self.insert(entry, size),
            Record::Vote(vote) => {
                self.vote = Some(vote);
                self.pending_vote = Some(vote);
            }
            Record::Committed(committed) => self.committed = committed,
            Record::TruncateAfter(last) => self.truncate_after(last.as_ref()),
            Record::Purge(upto) => self.purge(&upto),
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    fn last_log_id(&self) -> Option<LogId> {
        match self.entries.last_key_value() {
            Some((_, stored)) => Some(stored.entry.log_id),
            None => self.last_purged,
        }
    }
}

/// State shared between the handles and the writer thread, outside the state lock.
#[derive(Debug, Default)]
struct Shared {
    /// Set once, by the writer, on its first I/O error: (kind, message).
    poison: OnceLock<(io::ErrorKind, String)>,
    entries: AtomicU64,
    wal_bytes: AtomicU64,
    /// Requests sent to the writer thread and not yet completed by it.
    queued: AtomicU64,
    /// Whether callers may write their own appends when the writer thread is idle.
    caller_writes: AtomicBool,
    fsyncs: AtomicU64,
    /// Test hook: fail the next batch as if the disk had.
    #[cfg(test)]
    fail_next_batch: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn poison_error(&self) -> Option<io::Error> {
        self.poison.get().map(|(kind, message)| {
            io::Error::new(*kind, format!("raft log store failed by an earlier I/O error: {message}"))
        })
    }
}

/// How a request is acknowledged once the writer is done with it.
enum Completion {
    /// Nobody waits (`save_committed`).
    None,
    /// openraft's append callback.
    Flushed(IOFlushed<TypeConfig>),
    /// A caller awaiting durability (`save_vote`, `truncate_after`, `purge`).
    Wait(oneshot::Sender<io::Result<()>>),
}

impl Completion {
    fn complete(self, result: io::Result<()>) {
        match self {
            Completion::None => {}
            Completion::Flushed(callback) => callback.io_completed(result),
            Completion::Wait(tx) => {
                // The waiter may have been cancelled; nothing to tell then.
                let _ = tx.send(result);
            }
        }
    }
}

/// One unit of work for the writer thread.
struct Request {
    /// Position in submission order, from [`State::next_seq`].
    seq: u64,
    /// Framed records to append, possibly none (an empty append still completes in order).
    bytes: Vec<u8>,
    done: Completion,
    /// A vote to publish to readers once it is durable.
    vote: Option<Vote>,
    /// Whether this request can shrink the live data (purge, truncate): check compaction after.
    may_compact: bool,
}

enum Msg {
    Write(Request),
    /// Test hook: the writer blocks until the gate is released (sent to or dropped).
    #[cfg(test)]
    Pause(mpsc::Receiver<()>),
}

impl Msg {
    fn fail(self, error: io::Error) {
        match self {
            Msg::Write(request) => request.done.complete(Err(error)),
            #[cfg(test)]
            Msg::Pause(_) => {}
        }
    }
}

/// The durable Raft log store. Cheap to clone: clones share one state and one writer thread,
/// which stops when the last clone is dropped (or at [`LogStore::close`]).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.inner.dir).field("stats", &self.stats()).finish()
    }
}

struct Inner {
    dir: PathBuf,
    /// The in-memory log. A std mutex, not an async one: critical sections are short, never
    /// span an `.await`, and the writer thread (not a tokio task) must take it too.
    state: Arc<Mutex<State>>,
    shared: Arc<Shared>,
    /// `None` once closed. A std channel because the consumer is a plain thread that blocks.
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The file and its bookkeeping: the writer thread's, and a caller's while it writes its
    /// own request (see [`LogStore::set_caller_writes`]).
    output: Arc<Mutex<Writer>>,
    /// Holds an exclusive lock on the directory while the store is open (released by `close`,
    /// after the writer thread is joined): two writers on one WAL would interleave records.
    dir_lock: Mutex<Option<File>>,
}

impl State {
    /// The request writing a committed id not written yet, if there is one (nobody waits for
    /// it); from now on the id counts as written.
    fn take_unsaved_committed(&mut self) -> io::Result<Option<Request>> {
        if !self.committed_unsaved {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        encode_record(&RecordRef::Committed(&self.committed), &mut bytes)?;
        self.committed_unsaved = false;
        let seq = self.next_seq();
        Ok(Some(Request { seq, bytes, done: Completion::None, vote: None, may_compact: false }))
    }
}

impl Inner {
    /// Close the queue and wait for the writer to finish what was queued before.
    fn close(&self) {
        self.queue_unsaved_committed();
        drop(lock(&self.tx).take());
        // Held while joining so that a concurrent `close` returns only once the writer is done.
        let mut writer = lock(&self.writer);
        if let Some(handle) = writer.take()
            && handle.join().is_err()
        {
            tracing::error!(dir = %self.dir.display(), "raft log writer thread panicked");
        }
        // Only now that nothing writes any more may another store open the directory.
        drop(lock(&self.dir_lock).take());
    }
}

impl Inner {
    /// Queue the committed id if it was not written yet, so that a clean close keeps it.
    fn queue_unsaved_committed(&self) {
        let mut state = lock(&self.state);
        let Ok(Some(request)) = state.take_unsaved_committed() else {
            return;
        };
        let tx = lock(&self.tx);
        if let Some(tx) = tx.as_ref() {
            self.shared.queued.fetch_add(1, Ordering::SeqCst);
            if tx.send(Msg::Write(request)).is_err() {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

impl LogStore {
    /// Open (or create) the log in `dir` with default options and the given fsync policy.
    pub fn open(dir: &Path, fsync: FsyncPolicy) -> io::Result<LogStore> {
        Self::open_with_options(dir, LogStoreOptions { fsync, ..LogStoreOptions::default() })
    }

    /// Open (or create) the log in `dir`: replay `raft.wal`, cut off a torn tail, start the
    /// writer thread.
    pub fn open_with_options(dir: &Path, options: LogStoreOptions) -> io::Result<LogStore> {
        if !dir.try_exists()? {
            fs::create_dir_all(dir)?;
            // Make the new directory's own name durable.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let dir_lock = lock_dir(dir)?;
        let wal_path = dir.join(WAL_FILE);
        let tmp_path = dir.join(WAL_TMP_FILE);

        // A leftover temp file is a compaction that crashed before its rename: `raft.wal` is
        // still the complete log.
        match fs::remove_file(&tmp_path) {
            Ok(()) => {
                tracing::warn!(path = %tmp_path.display(), "removed unfinished WAL compaction")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }

        let existed = wal_path.try_exists()?;
        let Recovered { state, end: wal_bytes, len: file_len } = recover(&wal_path)?;
        if !existed {
            sync_dir(dir)?;
        }
        // Not in append mode: appends go right after the last record, into the preallocated
        // zeros, not after them.
        let mut file = OpenOptions::new().write(true).open(&wal_path)?;
        file.seek(SeekFrom::Start(wal_bytes))?;

        let shared = Arc::new(Shared::default());
        shared.entries.store(state.entries.len() as u64, Ordering::Relaxed);
        shared.wal_bytes.store(wal_bytes, Ordering::Relaxed);
        let state = Arc::new(Mutex::new(state));

        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            dir: dir.to_path_buf(),
            file: BufWriter::new(file),
            options,
            state: state.clone(),
            shared: shared.clone(),
            covered_seq: 0,
            compact_floor: 0,
            allocated: file_len,
        };
        let output = Arc::new(Mutex::new(writer));
        let thread_output = output.clone();
        let thread_shared = shared.clone();
        let (thread_state, quiet) = (state.clone(), options.committed_written_within);
        let handle = std::thread::Builder::new()
            .name("raft-wal".to_string())
            .spawn(move || Writer::run(&thread_output, &thread_shared, &thread_state, quiet, rx))?;

        Ok(LogStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                state,
                shared,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                output,
                dir_lock: Mutex::new(dir_lock),
            }),
        })
    }

    /// Counters for metrics.
    pub fn stats(&self) -> LogStats {
        let shared = &self.inner.shared;
        LogStats {
            entries: shared.entries.load(Ordering::Relaxed),
            wal_bytes: shared.wal_bytes.load(Ordering::Relaxed),
            fsyncs: shared.fsyncs.load(Ordering::Relaxed),
        }
    }

    /// Write out everything queued, stop the writer thread, wait for it and release the
    /// directory lock. Later calls fail. Blocks the calling thread until the queue is written
    /// (use `spawn_blocking` if that matters). Idempotent; dropping the last clone does the same.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Let callers write an append or a committed id themselves, on their own thread, when the
    /// writer thread has nothing queued and is not writing (module docs, "Write path"). The
    /// caller then blocks for the write and its fsync: for a thread with nothing else to do
    /// meanwhile, not for one that must keep serving.
    pub fn set_caller_writes(&self, on: bool) {
        self.inner.shared.caller_writes.store(on, Ordering::Relaxed);
    }

    fn check_usable(&self) -> io::Result<()> {
        match self.inner.shared.poison_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Queue a write for the writer thread. Takes the state lock guard: the caller changes
    /// memory and queues the record in one critical section, so that queue order equals the
    /// order of the in-memory changes even with several clones writing concurrently, and the
    /// sequence number assigned here identifies exactly which changes a snapshot of memory
    /// includes. On failure the request's completion gets the error.
    fn submit(
        &self,
        state: &mut State,
        mut bytes: Vec<u8>,
        done: Completion,
        vote: Option<Vote>,
        may_compact: bool,
    ) -> io::Result<()> {
        // A committed id not written yet goes along, after this request's records: it never
        // names an entry that they remove (committed entries are never truncated).
        if state.committed_unsaved {
            if let Err(e) = encode_record(&RecordRef::Committed(&state.committed), &mut bytes) {
                done.complete(Err(copy_error(&e)));
                return Err(e);
            }
            state.committed_unsaved = false;
        }
        let seq = state.next_seq();
        let request = Request { seq, bytes, done, vote, may_compact };
        match self.write_here(request) {
            Ok(()) => Ok(()),
            Err(request) => self.send(Msg::Write(request)),
        }
    }

    /// Write `request` on this thread if callers may and the writer thread is idle; otherwise
    /// hand it back for the queue. Called under the state lock, so no other request can be
    /// submitted meanwhile: with nothing queued, this one is next in file order.
    fn write_here(&self, request: Request) -> Result<(), Request> {
        let shared = &self.inner.shared;
        // Votes are published by the writer thread; purges and truncations may compact.
        if !shared.caller_writes.load(Ordering::Relaxed) || request.vote.is_some() || request.may_compact {
            return Err(request);
        }
        // Held through the write, so that `close` cannot finish (and release the directory)
        // while this thread still writes.
        let tx = lock(&self.inner.tx);
        if tx.is_none() || shared.queued.load(Ordering::SeqCst) != 0 {
            return Err(request);
        }
        // Busy: the writer thread holds it for a batch it took before this request existed.
        let Ok(mut output) = self.inner.output.try_lock() else {
            return Err(request);
        };
        output.commit(vec![request]);
        Ok(())
    }

    fn send(&self, msg: Msg) -> io::Result<()> {
        let tx = lock(&self.inner.tx);
        let Some(tx) = tx.as_ref() else {
            msg.fail(closed_error());
            return Err(closed_error());
        };
        self.inner.shared.queued.fetch_add(1, Ordering::SeqCst);
        if let Err(mpsc::SendError(msg)) = tx.send(msg) {
            msg.fail(closed_error());
            return Err(closed_error());
        }
        Ok(())
    }

    fn update_entry_count(&self, state: &State) {
        self.inner.shared.entries.store(state.entries.len() as u64, Ordering::Relaxed);
    }

    /// Wait for a request queued with [`Completion::Wait`].
    async fn wait(rx: oneshot::Receiver<io::Result<()>>) -> io::Result<()> {
        match rx.await {
            Ok(result) => result,
            // The writer dropped the request without answering: it is gone.
            Err(_) => Err(closed_error()),
        }
    }

    /// Test hook: block the writer thread until the returned gate is sent to or dropped.
    #[cfg(test)]
    fn pause_writer(&self) -> mpsc::Sender<()> {
        let (gate_tx, gate_rx) = mpsc::channel();
        self.send(Msg::Pause(gate_rx)).ok();
        gate_tx
    }

    async fn append_inner<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry>,
    {
        if let Err(e) = self.check_usable() {
            callback.io_completed(Err(copy_error(&e)));
            return Err(e);
        }
        // Encode outside the lock: it is the expensive part.
        let mut bytes = Vec::new();
        let mut staged = Vec::new();
        for entry in entries {
            match encode_record(&RecordRef::Entry(&entry), &mut bytes) {
                Ok(size) => staged.push((entry, size)),
                Err(e) => {
                    callback.io_completed(Err(copy_error(&e)));
                    return Err(e);
                }
            }
        }
        let mut state = self.state();
        for (entry, size) in staged {
            state.insert(entry, size);
        }
        self.update_entry_count(&state);
        self.submit(&mut state, bytes, Completion::Flushed(callback), None, false)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB>(&mut self, range: RB) -> Result<Vec<Entry>, io::Error>
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        self.check_usable()?;
        // `BTreeMap::range` panics on inverted ranges; those simply contain nothing.
        if !range_may_be_non_empty(&range) {
            return Ok(Vec::new());
        }
        let state = self.state();
        Ok(state.entries.range(range).map(|(_, stored)| stored.entry.clone()).collect())
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        self.check_usable()?;
        if !range_may_be_non_empty(&(start..end)) {
            return Ok(Vec::new());
        }
        Ok(read_limited(&self.state().entries, start, end, REPLICATION_READ_BYTES))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.check_usable()?;
        Ok(self.state().vote)
    }
}

/// The entries of `[start, end)` from the first on, while their stored sizes add up to at most
/// `max_bytes`; the first entry is always included, so a non-empty range gives a non-empty read.
fn read_limited(entries: &BTreeMap<u64, Stored>, start: u64, end: u64, max_bytes: u64) -> Vec<Entry> {
    let mut bytes = 0u64;
    let mut out = Vec::new();
    for stored in entries.range(start..end).map(|(_, stored)| stored) {
        bytes = bytes.saturating_add(stored.size);
        if bytes > max_bytes && !out.is_empty() {
            break;
        }
        out.push(stored.entry.clone());
    }
    out
}

/// Whether `range` can contain an index at all (false for inverted or empty ranges).
fn range_may_be_non_empty<R: RangeBounds<u64>>(range: &R) -> bool {
    match (range.start_bound(), range.end_bound()) {
        (Bound::Included(s), Bound::Included(e)) => s <= e,
        (Bound::Included(s), Bound::Excluded(e)) | (Bound::Excluded(s), Bound::Included(e)) => s < e,
        (Bound::Excluded(s), Bound::Excluded(e)) => s.checked_add(1).is_some_and(|first| first < *e),
        (Bound::Excluded(s), Bound::Unbounded) => *s < u64::MAX,
        (Bound::Unbounded, Bound::Excluded(e)) => *e > 0,
        _ => true,
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        self.check_usable()?;
        let state = self.state();
        Ok(LogState { last_purged_log_id: state.last_purged, last_log_id: state.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.check_usable()?;
        let mut bytes = Vec::new();
        encode_record(&RecordRef::Vote(vote), &mut bytes)?;
        let (tx, rx) = oneshot::channel();
        {
            // Readers keep seeing the old vote: the writer publishes this one once it is
            // durable, so a reader never sees a vote that a crash could take back.
            let mut state = self.state();
            state.pending_vote = Some(*vote);
            self.submit(&mut state, bytes, Completion::Wait(tx), Some(*vote), false)?;
        }
        Self::wait(rx).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.check_usable()?;
        let mut state = self.state();
        state.committed = committed;
        // Not written on its own: it goes with the next record written, after a quiet spell of
        // the writer thread (`committed_written_within`), or at close. Losing
        // the latest committed id in a crash only means re-applying less on restart
        // (openraft's contract for this method), and a record of its own cost the leader a
        // wake-up of the writer thread between a commit and the answer to the client.
        state.committed_unsaved = true;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.check_usable()?;
        Ok(self.state().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_inner(entries, callback).await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.check_usable()?;
        let mut bytes = Vec::new();
        encode_record(&RecordRef::TruncateAfter(&last_log_id), &mut bytes)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.state();
            state.truncate_after(last_log_id.as_ref());
            self.update_entry_count(&state);
            self.submit(&mut state, bytes, Completion::Wait(tx), None, true)?;
        }
        Self::wait(rx).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.check_usable()?;
        let mut bytes = Vec::new();
        encode_record(&RecordRef::Purge(&log_id), &mut bytes)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.state();
            state.purge(&log_id);
            self.update_entry_count(&state);
            self.submit(&mut state, bytes, Completion::Wait(tx), None, true)?;
        }
        Self::wait(rx).await
    }
}

/// Where replay left the file.
struct Recovered {
    state: State,
    /// Bytes of intact records: where the next record goes.
    end: u64,
    /// Length of the file; from `end` on it holds preallocated zeros.
    len: u64,
}

/// Replay the WAL at `path` (created if missing) into a fresh state; cut off a torn tail.
fn recover(path: &Path) -> io::Result<Recovered> {
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 16, &file);
    let mut state = State::default();
    let mut pos = 0u64;
    let mut payload = Vec::new();

    let torn = loop {
        if pos == file_len {
            break None;
        }
        match read_record(&mut reader, file_len - pos, &mut payload)? {
            RawRecord::Good(size) => {
                let record = decode_payload(&payload).map_err(|e| {
                    io::Error::new(e.kind(), format!("{}: record at offset {pos}: {e}", path.display()))
                })?;
                state.apply(record, size);
                pos += size;
            }
            RawRecord::Torn(reason) => break Some(reason),
            RawRecord::Zeros => {
                // The preallocated part of the file begins here, unless a crash left a record
                // whose first block never reached the disk ahead of later ones.
                if rest_is_zero(&mut reader, file_len - pos - HEADER_LEN)? {
                    break None;
                }
                break Some("zero-filled header before non-zero bytes");
            }
            RawRecord::BadChecksum => {
                // Is this the crash point, or damage in the middle of acknowledged data? If
                // the next record is intact, the log went on after this one.
                let rest = file_len - pos - HEADER_LEN - payload.len() as u64;
                if rest > 0 && matches!(read_record(&mut reader, rest, &mut payload)?, RawRecord::Good(_)) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: record at offset {pos} fails its checksum but is followed by intact records; \
                             refusing to drop acknowledged data",
                            path.display()
                        ),
                    ));
                }
                break Some("checksum mismatch");
            }
        }
    };
    drop(reader);

    if let Some(reason) = torn {
        tracing::warn!(
            path = %path.display(),
            offset = pos,
            dropped_bytes = file_len - pos,
            reason,
            "torn record at the end of the raft WAL (crash during a write); truncating it"
        );
        file.set_len(pos)?;
        file.sync_all()?;
        return Ok(Recovered { state, end: pos, len: pos });
    }
    Ok(Recovered { state, end: pos, len: file_len })
}

/// Whether the next `remaining` bytes of `reader` are all zero.
fn rest_is_zero(reader: &mut impl Read, remaining: u64) -> io::Result<bool> {
    let mut chunk = vec![0u8; 1 << 16];
    let mut left = remaining;
    while left > 0 {
        let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        reader.read_exact(&mut chunk[..n])?;
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

enum RawRecord {
    /// A record whose checksum matches; the payload is in the buffer. Carries its size on disk.
    Good(u64),
    /// The record is cut short (or is a zero-filled block): the file ends mid-write.
    Torn(&'static str),
    /// A complete record whose payload does not match its checksum.
    BadChecksum,
    /// An all-zero header: the preallocated end of the file (or a tear, if anything follows).
    Zeros,
}

/// Read one record from `reader`, which has `remaining` bytes left in the file.
fn read_record(reader: &mut impl Read, remaining: u64, payload: &mut Vec<u8>) -> io::Result<RawRecord> {
    if remaining < HEADER_LEN {
        return Ok(RawRecord::Torn("incomplete record header"));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    reader.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 {
        // Every payload has at least the version byte; a zero length is a zero-filled block:
        // the preallocated space after the last record, or what a file extended by a crashing
        // write can read back as.
        if crc == 0 {
            return Ok(RawRecord::Zeros);
        }
        return Ok(RawRecord::Torn("zero-length record"));
    }
    if u64::from(len) > remaining - HEADER_LEN {
        return Ok(RawRecord::Torn("incomplete record payload"));
    }
    payload.resize(len as usize, 0);
    reader.read_exact(payload)?;
    if crc32fast::hash(payload) != crc {
        return Ok(RawRecord::BadChecksum);
    }
    Ok(RawRecord::Good(HEADER_LEN + u64::from(len)))
}

/// What a compaction writes: the in-memory state right after request `covers` was queued.
struct CompactionSnapshot {
    covers: u64,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    entries: Vec<Entry>,
}

/// The writer thread. It owns the file; nothing else writes to it.
///
/// Why a dedicated OS thread rather than a tokio task: fsync blocks for milliseconds, and a
/// thread that only ever blocks on the channel or the disk keeps that off the async workers
/// without going through `spawn_blocking` per write. One writer also gives a total order on
/// records for free, and is where group commit happens.
///
/// Compaction and queued requests: the rewrite snapshots *memory*, which already includes the
/// requests still waiting in the channel (callers change memory before queuing). The snapshot
/// therefore stands for every request up to the last sequence number queued when it was taken
/// (`covered_seq`); once it is durable those requests are complete, and their records are *not*
/// written again. Appending them after the snapshot would be wrong even though each record is an
/// idempotent assignment: a crash in the middle of that re-play would recover a mix of newer
/// snapshot entries and older re-played ones (e.g. entries of a truncated term in front of the
/// new term's later entries), a log that never existed.
struct Writer {
    dir: PathBuf,
    file: BufWriter<File>,
    options: LogStoreOptions,
    state: Arc<Mutex<State>>,
    shared: Arc<Shared>,
    /// Requests up to this sequence number are in the file through a compaction snapshot.
    covered_seq: u64,
    /// No compaction is attempted below this size (raised after a failed attempt so that a
    /// persistent failure is not retried after every batch).
    compact_floor: u64,
    /// Length of the file. From the end of the last record (`shared.wal_bytes`, which only
    /// this thread changes) to here it is preallocated (zeros).
    allocated: u64,
}

impl Writer {
    /// The writer thread: batches from the queue, and after `quiet` without any, the committed
    /// id no request carried.
    fn run(output: &Mutex<Writer>, shared: &Shared, state: &Mutex<State>, quiet: Duration, rx: mpsc::Receiver<Msg>) {
        loop {
            // Disconnected only once every sender is gone and the queue is empty, so
            // everything submitted before `close`/drop is still written.
            let first = match rx.recv_timeout(quiet) {
                Ok(msg) => msg,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    Self::write_unsaved_committed(output, shared, state);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Vec::new();
            let mut next = Some(first);
            // Group commit: whatever queued up while the previous batch was being written and
            // fsynced goes out together and shares the next fsync.
            while let Some(msg) = next {
                match msg {
                    Msg::Write(request) => batch.push(request),
                    #[cfg(test)]
                    Msg::Pause(gate) => {
                        // A pause ends the batch, so tests can place batch boundaries. The pause
                        // itself stays queued until the gate opens.
                        Self::commit_queued(output, shared, std::mem::take(&mut batch));
                        let _ = gate.recv();
                        shared.queued.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                next = rx.try_recv().ok();
            }
            Self::commit_queued(output, shared, batch);
        }
        // Every batch was flushed as it was committed; nothing is left in the buffer.
    }

    /// After a quiet spell, write the committed id that no request carried (see
    /// `save_committed`). Counted as queued from its sequence number on, so that a caller
    /// submitting meanwhile goes through the queue, behind it.
    fn write_unsaved_committed(output: &Mutex<Writer>, shared: &Shared, state: &Mutex<State>) {
        let request = {
            let mut state = lock(state);
            let Ok(Some(request)) = state.take_unsaved_committed() else {
                return;
            };
            shared.queued.fetch_add(1, Ordering::SeqCst);
            request
        };
        Self::commit_queued(output, shared, vec![request]);
    }

    /// Commit a batch taken from the queue; only then (completions sent) is it no longer queued.
    fn commit_queued(output: &Mutex<Writer>, shared: &Shared, batch: Vec<Request>) {
        let taken = batch.len() as u64;
        lock(output).commit(batch);
        shared.queued.fetch_sub(taken, Ordering::SeqCst);
    }

    fn commit(&mut self, batch: Vec<Request>) {
        if batch.is_empty() {
            return;
        }
        match self.write_batch(&batch) {
            Ok(()) => {
                // Publish durable votes before completing, so that `save_vote` returning
                // implies `read_vote` sees it.
                if batch.iter().any(|r| r.vote.is_some()) {
                    let mut state = lock(&self.state);
                    for vote in batch.iter().filter_map(|r| r.vote) {
                        state.vote = Some(vote);
                    }
                }
                let may_compact = batch.iter().any(|r| r.may_compact);
                // In submission order: openraft requires completions not to go backwards.
                for request in batch {
                    request.done.complete(Ok(()));
                }
                if may_compact {
                    self.maybe_compact();
                }
            }
            Err(e) => {
                if self.shared.poison.set((e.kind(), e.to_string())).is_ok() {
                    tracing::error!(dir = %self.dir.display(), error = %e, "raft WAL write failed; log store is now unusable");
                }
                for request in batch {
                    request.done.complete(Err(copy_error(&e)));
                }
            }
        }
    }

    fn write_batch(&mut self, batch: &[Request]) -> io::Result<()> {
        // Once a write failed the file may end in a partial batch; never write after it, so
        // the damage stays a torn tail that the next open cuts off.
        if let Some(e) = self.shared.poison_error() {
            return Err(e);
        }
        #[cfg(test)]
        if self.shared.fail_next_batch.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("injected write failure"));
        }
        let covered = self.covered_seq;
        let new = || batch.iter().filter(move |r| r.seq > covered);
        let written: u64 = new().map(|r| r.bytes.len() as u64).sum();
        if written == 0 {
            // Nothing new (empty appends, or requests covered by a compaction snapshot):
            // everything they stand for is already durable.
            return Ok(());
        }
        self.reserve(written)?;
        for request in new() {
            self.file.write_all(&request.bytes)?;
        }
        self.file.flush()?;
        self.shared.wal_bytes.fetch_add(written, Ordering::Relaxed);
        // A batch of nothing but committed ids needs no fsync: nobody waits for it, losing it
        // only means re-applying less after a crash, and the next durable batch covers it.
        let durable_wanted = batch.iter().any(|r| !matches!(r.done, Completion::None));
        if self.options.fsync == FsyncPolicy::Always && durable_wanted {
            self.file.get_ref().sync_data()?;
            self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Make sure the next `bytes` land inside the file's current length: an fdatasync after a
    /// write that grows the file must also commit the new size to the journal, one after a
    /// write into preallocated space only flushes the data.
    fn reserve(&mut self, bytes: u64) -> io::Result<()> {
        let needed = self.shared.wal_bytes.load(Ordering::Relaxed) + bytes;
        if needed <= self.allocated {
            return Ok(());
        }
        let target = needed + PREALLOCATE_BYTES;
        preallocate(self.file.get_ref(), self.allocated, target, self.options.fsync)?;
        self.allocated = target;
        Ok(())
    }

    fn maybe_compact(&mut self) {
        let wal_bytes = self.shared.wal_bytes.load(Ordering::Relaxed);
        if wal_bytes <= self.options.compact_min_bytes || wal_bytes < self.compact_floor {
            return;
        }
        let started = Instant::now();
        let snapshot = {
            let mut state = lock(&self.state);
            if wal_bytes <= state.live_bytes.saturating_mul(self.options.compact_ratio) {
                return;
            }
            // The rewrite writes the committed id: it needs no record of its own any more.
            state.committed_unsaved = false;
            // Cloning under the lock blocks callers for a moment; writing the file does not.
            CompactionSnapshot {
                covers: state.last_seq,
                vote: state.pending_vote,
                committed: state.committed,
                last_purged: state.last_purged,
                entries: state.entries.values().map(|s| s.entry.clone()).collect(),
            }
        };
        let tmp_path = self.dir.join(WAL_TMP_FILE);
        let wal_path = self.dir.join(WAL_FILE);

        // Up to and including the rename, a failure leaves `raft.wal` whole and in use: give up
        // on this compaction only.
        let (file, size) = match write_compacted(&tmp_path, &snapshot).and_then(|(file, size)| {
            fs::rename(&tmp_path, &wal_path)?;
            Ok((file, size))
        }) {
            Ok(written) => written,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "raft WAL compaction failed; keeping the old file");
                if let Err(e) = fs::remove_file(&tmp_path)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %tmp_path.display(), error = %e, "cannot remove WAL temp file");
                }
                self.compact_floor = wal_bytes.saturating_mul(2);
                return;
            }
        };
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        // From here on appends go to the new file; if its name were not durable a crash could
        // bring back the old file without them, so a failed directory fsync is fatal.
        let old = std::mem::replace(&mut self.file, BufWriter::new(file));
        close_in_background(old);
        self.allocated = size;
        self.shared.wal_bytes.store(size, Ordering::Relaxed);
        if let Err(e) = sync_dir(&self.dir) {
            tracing::error!(dir = %self.dir.display(), error = %e, "cannot fsync the log directory after WAL compaction");
            let _ = self.shared.poison.set((e.kind(), format!("fsync of the log directory failed: {e}")));
            return;
        }
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.covered_seq = snapshot.covers;
        self.compact_floor = 0;
        tracing::info!(
            dir = %self.dir.display(),
            before_bytes = wal_bytes,
            after_bytes = size,
            entries = snapshot.entries.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "compacted raft WAL"
        );
    }
}

/// How far ahead of the last record the file is extended with zeros at a time.
const PREALLOCATE_BYTES: u64 = 4 << 20;

/// Extend `file` from `from` to `to` bytes with written zeros, and make them durable (unless
/// the policy is never to sync). The
/// blocks are really written, not just allocated: ext4 marks `fallocate`d blocks unwritten, and
/// the first write into each one changes its extent, which the next fdatasync must commit
/// through the journal; into written zeros an fdatasync only flushes data (on a virtio disk
/// here about 100 instead of 150 µs per sync, and a quarter less CPU). A full disk shows up
/// here rather than in the middle of a batch. Written in one go, this costs a few ms per 4 MiB
/// once, against the syncs of every batch that lands in them.
fn preallocate(file: &File, from: u64, to: u64, fsync: FsyncPolicy) -> io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = from;
    while at < to {
        let len = usize::try_from(to - at).map_or(ZEROS.len(), |left| left.min(ZEROS.len()));
        file.write_all_at(&ZEROS[..len], at)?;
        at += len as u64;
    }
    match fsync {
        FsyncPolicy::Always => file.sync_data(),
        FsyncPolicy::Never => Ok(()),
    }
}

/// How much of a replaced WAL file is freed at a time, and the pause between steps.
const RELEASE_STEP_BYTES: u64 = 4 << 20;
const RELEASE_STEP_PAUSE: Duration = Duration::from_millis(5);

/// Close the replaced WAL file on a thread of its own. The rename unlinked it, so closing it
/// frees all its blocks: for a file of tens of MB that took 40–65 ms on ext4, and on the writer
/// thread no append could be written (or acknowledged) meanwhile. Even off that thread, freeing
/// them in one go makes a journal commit that the next fdatasyncs wait for, so the file is
/// first cut down a few MB at a time.
fn close_in_background(old: BufWriter<File>) {
    let release = move || {
        // Nothing in the buffer matters any more: the file is no longer part of the log.
        let (file, _) = old.into_parts();
        let mut len = file.metadata().map_or(0, |m| m.len());
        while len > 0 {
            len = len.saturating_sub(RELEASE_STEP_BYTES);
            if file.set_len(len).is_err() {
                break;
            }
            std::thread::sleep(RELEASE_STEP_PAUSE);
        }
    };
    // Spawning fails only when the system is out of threads; the closure, and the file with
    // it, is then dropped right here, which is merely slower.
    if let Err(e) = std::thread::Builder::new().name("raft-wal-close".to_string()).spawn(release) {
        tracing::warn!(error = %e, "cannot start a thread to close the old WAL file; closing it inline");
    }
}

/// Write the compacted log to `tmp_path` and fsync it. Returns the open file (positioned at its
/// end, ready for appends) and its size.
fn write_compacted(tmp_path: &Path, snapshot: &CompactionSnapshot) -> io::Result<(File, u64)> {
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(tmp_path)?;
    let mut writer = BufWriter::new(file);
    let mut buf = Vec::new();
    let mut size = 0u64;
    // The purge point first: replay drops entries at or below it, so it must come before any
    // entry that would otherwise be taken for live.
    if let Some(vote) = &snapshot.vote {
        size += encode_record(&RecordRef::Vote(vote), &mut buf)?;
    }
    if let Some(last_purged) = &snapshot.last_purged {
        size += encode_record(&RecordRef::Purge(last_purged), &mut buf)?;
    }
    if snapshot.committed.is_some() {
        size += encode_record(&RecordRef::Committed(&snapshot.committed), &mut buf)?;
    }
    for entry in &snapshot.entries {
        size += encode_record(&RecordRef::Entry(entry), &mut buf)?;
        if buf.len() >= COMPACTION_CHUNK {
            writer.write_all(&buf)?;
            buf.clear();
        }
    }
    writer.write_all(&buf)?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((file, size))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::EntryPayload;
    use openraft::testing::log_id;
    use openraft::type_config::TypeConfigExt;

    use super::*;
    use crate::command::Command;
    use crate::test_support::wait_until;
    use crate::types::Member;
    use crate::types::Membership;

    fn lid(term: u64, index: u64) -> LogId {
        log_id::<TypeConfig>(term, 1, index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry { log_id: lid(term, index), payload: EntryPayload::Normal(Command::Noop) }
    }

    fn put_entry(term: u64, index: u64, value_len: usize) -> Entry {
        Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Normal(Command::Put {
                key: format!("key-{index}"),
                value: bytes::Bytes::from(vec![index as u8; value_len]),
                content_type: Some("text/plain".to_string()),
                ttl_ms: None,
                condition: crate::command::Condition::None,
                now_ms: 1_700_000_000_000 + index,
            }),
        }
    }

    fn membership_entry(term: u64, index: u64) -> Entry {
        let members: BTreeSet<u64> = [1, 2].into_iter().collect();
        let nodes: BTreeMap<u64, Member> = [1u64, 2]
            .into_iter()
            .map(|id| (id, Member { node_id: id, grpc_addr: format!("10.0.0.{id}:7000"), http_addr: String::new() }))
            .collect();
        let membership = Membership::new(vec![members], nodes).unwrap();
        Entry { log_id: lid(term, index), payload: EntryPayload::Membership(membership) }
    }

    #[test]
    fn a_record_fits_the_buffer_its_size_hint_reserves() {
        let big_term = u64::MAX / 3;
        let entries = [
            entry(1, 1),
            entry(big_term, u64::MAX - 1),
            put_entry(1, 2, 0),
            put_entry(big_term, u64::MAX - 1, 256),
            put_entry(7, 1 << 40, 64 * 1024),
            membership_entry(3, 9),
        ];
        for e in &entries {
            let record = RecordRef::Entry(e);
            let mut out = Vec::new();
            let size = encode_record(&record, &mut out).unwrap();
            assert!(
                size as usize <= HEADER_LEN as usize + 1 + record.encoded_len_hint(),
                "{:?}: {size} bytes, hint {}",
                e.log_id,
                record.encoded_len_hint()
            );
        }
    }

    /// Append and wait for durability.
    async fn append(store: &mut LogStore, entries: Vec<Entry>) {
        let (tx, rx) = TypeConfig::oneshot();
        store.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx.await.unwrap().unwrap();
    }

    /// Everything observable through the openraft traits.
    #[derive(Debug, Clone, PartialEq)]
    struct Observed {
        entries: Vec<Entry>,
        vote: Option<Vote>,
        committed: Option<LogId>,
        log_state: LogState<TypeConfig>,
    }

    async fn observe(store: &mut LogStore) -> Observed {
        Observed {
            entries: store.try_get_log_entries(..).await.unwrap(),
            vote: store.read_vote().await.unwrap(),
            committed: store.read_committed().await.unwrap(),
            log_state: store.get_log_state().await.unwrap(),
        }
    }

    fn wal(dir: &Path) -> PathBuf {
        dir.join(WAL_FILE)
    }

    /// Offsets at which each record of a WAL file ends (the preallocated zeros after the last
    /// record are no records).
    fn record_ends(path: &Path) -> Vec<u64> {
        let data = fs::read(path).unwrap();
        let mut ends = Vec::new();
        let mut pos = 0usize;
        while pos + 8 <= data.len() {
            let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            pos += 8 + len;
            assert!(pos <= data.len(), "record_ends: file is torn");
            ends.push(pos as u64);
        }
        ends
    }

    /// The records of a WAL file, without the preallocated zeros after them.
    fn records_bytes(path: &Path) -> Vec<u8> {
        let mut data = fs::read(path).unwrap();
        data.truncate(record_ends(path).last().map_or(0, |&end| end as usize));
        data
    }

    fn decode_file(path: &Path) -> Vec<Record> {
        let data = fs::read(path).unwrap();
        let mut records = Vec::new();
        let mut start = 0usize;
        for end in record_ends(path) {
            records.push(decode_payload(&data[start + 8..end as usize]).unwrap());
            start = end as usize;
        }
        records
    }

    #[test]
    fn fsync_policy_parses() {
        assert_eq!("always".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Always);
        assert_eq!("Never".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Never);
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
        assert_eq!(FsyncPolicy::Never.to_string().parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Never);
    }

    #[test]
    fn record_ref_and_record_encode_the_same() {
        let e = membership_entry(3, 7);
        let vote = Vote::new_committed(4, 2);
        let id = Some(lid(2, 9));
        let purged = lid(1, 1);
        let cases: Vec<RecordRef<'_>> = vec![
            RecordRef::Entry(&e),
            RecordRef::Vote(&vote),
            RecordRef::Committed(&id),
            RecordRef::Committed(&None),
            RecordRef::TruncateAfter(&id),
            RecordRef::TruncateAfter(&None),
            RecordRef::Purge(&purged),
        ];
        for case in cases {
            let mut buf = Vec::new();
            let size = encode_record(&case, &mut buf).unwrap();
            assert_eq!(size as usize, buf.len());
            let decoded = decode_payload(&buf[8..]).unwrap();
            assert_eq!(format!("{case:?}"), format!("{decoded:?}"));
        }
    }

    #[tokio::test]
    async fn reopen_recovers_the_same_state() {
        reopen_recovers(false).await;
    }

    /// The same history with caller writes on: appends and committed ids written by the caller,
    /// votes, truncations and purges by the writer thread, interleaved.
    #[tokio::test]
    async fn reopen_recovers_what_callers_wrote() {
        reopen_recovers(true).await;
    }

    async fn reopen_recovers(caller_writes: bool) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        store.set_caller_writes(caller_writes);
        assert_eq!(observe(&mut store).await.log_state, LogState::default());

        store.save_vote(&Vote::new(1, 1)).await.unwrap();
        append(&mut store, (1..=10).map(|i| entry(1, i)).collect()).await;
        append(&mut store, vec![membership_entry(1, 11), put_entry(1, 12, 100)]).await;
        store.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        // A conflicting suffix is replaced by a new leader's entries.
        store.truncate_after(Some(lid(1, 8))).await.unwrap();
        append(&mut store, (9..=15).map(|i| put_entry(2, i, 10)).collect()).await;
        store.save_committed(Some(lid(2, 12))).await.unwrap();
        store.purge(lid(1, 4)).await.unwrap();

        let before = observe(&mut store).await;
        assert_eq!(before.entries.first().unwrap().log_id, lid(1, 5));
        assert_eq!(before.entries.last().unwrap().log_id, lid(2, 15));
        assert_eq!(before.entries.len(), 11);
        assert_eq!(before.vote, Some(Vote::new_committed(2, 1)));
        assert_eq!(before.committed, Some(lid(2, 12)));
        assert_eq!(before.log_state.last_purged_log_id, Some(lid(1, 4)));
        assert_eq!(before.log_state.last_log_id, Some(lid(2, 15)));
        assert_eq!(store.stats().entries, 11);
        let size = store.stats().wal_bytes;
        drop(store);

        assert_eq!(records_bytes(&wal(dir.path())).len() as u64, size);
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(observe(&mut store).await, before);
        assert_eq!(store.stats().entries, 11);
        assert_eq!(store.stats().wal_bytes, size);

        // Purging everything: the last log id falls back to the purge point.
        store.purge(lid(2, 15)).await.unwrap();
        store.truncate_after(None).await.unwrap();
        let before = observe(&mut store).await;
        assert!(before.entries.is_empty());
        assert_eq!(before.log_state.last_log_id, Some(lid(2, 15)));
        store.close();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(observe(&mut store).await, before);
    }

    #[tokio::test]
    async fn replication_reads_are_bounded_in_bytes_but_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        append(&mut store, (1..=6).map(|i| put_entry(1, i, 1000)).collect()).await;
        let indexes = |v: Vec<Entry>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        {
            let state = store.state();
            let size = state.entries.values().next().unwrap().size;
            // Room for two and a half entries: two are returned, in order from `start`.
            assert_eq!(indexes(read_limited(&state.entries, 2, 7, size * 5 / 2)), vec![2, 3]);
            // An entry larger than the whole budget still goes, alone: the read is never empty.
            assert_eq!(indexes(read_limited(&state.entries, 4, 7, 1)), vec![4]);
            // A budget above the range's size returns all of it and nothing past `end`.
            assert_eq!(indexes(read_limited(&state.entries, 1, 4, u64::MAX)), vec![1, 2, 3]);
            assert!(read_limited(&state.entries, 7, 9, u64::MAX).is_empty());
        }
        // Through the trait: small entries are not limited, an empty range reads nothing.
        assert_eq!(indexes(store.limited_get_log_entries(1, 7).await.unwrap()), vec![1, 2, 3, 4, 5, 6]);
        assert!(store.limited_get_log_entries(5, 5).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn entries_are_readable_before_the_callback() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        let gate = store.pause_writer();
        let (tx, mut rx) = TypeConfig::oneshot();
        store.append(vec![entry(1, 1), entry(1, 2)], IOFlushed::signal(tx)).await.unwrap();
        let mut reader = store.get_log_reader().await;
        assert_eq!(reader.try_get_log_entries(1..3).await.unwrap().len(), 2);
        assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(lid(1, 2)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(rx.try_recv().is_err(), "completed while the writer was paused");
        drop(gate);
        rx.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn odd_ranges_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        append(&mut store, (1..=5).map(|i| entry(1, i)).collect()).await;
        #[allow(clippy::reversed_empty_ranges)]
        {
            assert!(store.try_get_log_entries(4..2).await.unwrap().is_empty());
            assert!(store.try_get_log_entries(3..3).await.unwrap().is_empty());
        }
        assert!(store.try_get_log_entries((Bound::Excluded(3), Bound::Excluded(3))).await.unwrap().is_empty());
        assert!(store.try_get_log_entries((Bound::Excluded(3), Bound::Excluded(4))).await.unwrap().is_empty());
        assert_eq!(store.try_get_log_entries((Bound::Excluded(3), Bound::Excluded(5))).await.unwrap().len(), 1);
        assert_eq!(store.try_get_log_entries(..=2).await.unwrap().len(), 2);
        assert_eq!(store.try_get_log_entries(4..).await.unwrap().len(), 2);
        assert!(store.try_get_log_entries(..0).await.unwrap().is_empty());
        assert!(store.try_get_log_entries((Bound::Excluded(u64::MAX), Bound::Unbounded)).await.unwrap().is_empty());
    }

    /// Write 20 entries, a vote and a committed id; returns the state and the record ends.
    async fn write_sample(dir: &Path) -> (Observed, Vec<u64>) {
        let mut store = LogStore::open(dir, FsyncPolicy::Always).unwrap();
        store.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        append(&mut store, (1..=19).map(|i| put_entry(1, i, 30)).collect()).await;
        store.save_committed(Some(lid(1, 19))).await.unwrap();
        // An empty append writes the committed id (it goes with the next request).
        append(&mut store, vec![]).await;
        append(&mut store, vec![put_entry(1, 20, 30)]).await;
        let observed = observe(&mut store).await;
        drop(store);
        (observed, record_ends(&wal(dir)))
    }

    /// After recovery the store accepts appends, and they survive another reopen.
    async fn check_appendable(dir: &Path, mut expected: Observed) {
        let mut store = LogStore::open(dir, FsyncPolicy::Always).unwrap();
        let next = expected.log_state.last_log_id.as_ref().map_or(1, |l| l.index + 1);
        let e = put_entry(1, next, 5);
        append(&mut store, vec![e.clone()]).await;
        drop(store);
        expected.entries.push(e.clone());
        expected.log_state.last_log_id = Some(e.log_id);
        let mut store = LogStore::open(dir, FsyncPolicy::Always).unwrap();
        assert_eq!(observe(&mut store).await, expected);
    }

    #[tokio::test]
    async fn torn_tail_is_cut_off() {
        let origin = tempfile::tempdir().unwrap();
        let (full, ends) = write_sample(origin.path()).await;
        let data = records_bytes(&wal(origin.path()));
        let last_len = ends[ends.len() - 1] - ends[ends.len() - 2];
        let good_len = ends[ends.len() - 2];

        // The state without the last record (entry 20).
        let mut without_last = full.clone();
        let last = without_last.entries.pop().unwrap();
        assert_eq!(last.log_id.index, 20);
        without_last.log_state.last_log_id = Some(lid(1, 19));

        for chop in [1, 2, 5, 8, 9, last_len / 2, last_len - 9, last_len - 8, last_len - 1] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(wal(dir.path()), &data[..data.len() - chop as usize]).unwrap();
            let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
            assert_eq!(observe(&mut store).await, without_last, "chop {chop}");
            assert_eq!(fs::metadata(wal(dir.path())).unwrap().len(), good_len, "chop {chop}");
            assert_eq!(store.stats().wal_bytes, good_len);
            drop(store);
            check_appendable(dir.path(), observe_fresh(dir.path()).await).await;
        }

        // Chopping exactly one record is no tear at all.
        let dir = tempfile::tempdir().unwrap();
        fs::write(wal(dir.path()), &data[..good_len as usize]).unwrap();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(observe(&mut store).await, without_last);
    }

    async fn observe_fresh(dir: &Path) -> Observed {
        let mut store = LogStore::open(dir, FsyncPolicy::Never).unwrap();
        observe(&mut store).await
    }

    #[tokio::test]
    async fn garbage_tail_is_cut_off() {
        let origin = tempfile::tempdir().unwrap();
        let (full, _) = write_sample(origin.path()).await;
        let data = records_bytes(&wal(origin.path()));

        // xorshift: deterministic pseudo-random bytes without a dependency.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut garbage = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        };
        let mut tails: Vec<Vec<u8>> = [1, 3, 7, 8, 9, 16, 100, 1000, 5000].into_iter().map(&mut garbage).collect();
        // A zero-filled block, as left by a crash after the file grew but before data landed.
        tails.push(vec![0; 4096]);
        // A plausible header claiming a small payload, with a wrong checksum.
        let mut fake = 20u32.to_le_bytes().to_vec();
        fake.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        fake.extend(garbage(20));
        tails.push(fake);

        for (i, tail) in tails.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = data.clone();
            bytes.extend_from_slice(tail);
            fs::write(wal(dir.path()), &bytes).unwrap();
            let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
            assert_eq!(observe(&mut store).await, full, "tail #{i}");
            assert_eq!(store.stats().wal_bytes, data.len() as u64, "tail #{i}");
            // Zeros alone are preallocated space and stay; anything else is cut off.
            let kept = if tail.iter().all(|&b| b == 0) { bytes.len() } else { data.len() };
            assert_eq!(fs::metadata(wal(dir.path())).unwrap().len(), kept as u64, "tail #{i}");
            drop(store);
            check_appendable(dir.path(), full.clone()).await;
        }
    }

    #[tokio::test]
    async fn appends_go_into_preallocated_space() {
        let dir = tempfile::tempdir().unwrap();
        let (full, ends) = write_sample(dir.path()).await;
        let records_len = *ends.last().unwrap();
        let file_len = fs::metadata(wal(dir.path())).unwrap().len();
        assert!(file_len >= PREALLOCATE_BYTES && file_len > records_len, "{file_len} vs {records_len}");
        assert!(fs::read(wal(dir.path())).unwrap()[records_len as usize..].iter().all(|&b| b == 0));

        // Reopening keeps the space, and the next records go right after the last one.
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(observe(&mut store).await, full);
        assert_eq!(store.stats().wal_bytes, records_len);
        append(&mut store, vec![put_entry(1, 21, 30)]).await;
        drop(store);
        assert_eq!(fs::metadata(wal(dir.path())).unwrap().len(), file_len);
        let after = record_ends(&wal(dir.path()));
        assert_eq!(after.len(), ends.len() + 1);
        assert_eq!(after[..ends.len()], ends[..]);

        // Running past the end allocates more.
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        let big = usize::try_from(PREALLOCATE_BYTES).unwrap() / 4;
        append(&mut store, (22..=26).map(|i| put_entry(1, i, big)).collect()).await;
        let expected = observe(&mut store).await;
        let written = store.stats().wal_bytes;
        drop(store);
        assert!(written > file_len);
        assert!(fs::metadata(wal(dir.path())).unwrap().len() >= written + PREALLOCATE_BYTES);
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(observe(&mut store).await, expected);
    }

    #[tokio::test]
    async fn bytes_after_a_zero_header_are_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (full, ends) = write_sample(dir.path()).await;
        let records_len = *ends.last().unwrap();
        // A crash can persist a later block of a batch but not its first one: a zero header,
        // then part of a record further on.
        let mut file = OpenOptions::new().write(true).open(wal(dir.path())).unwrap();
        file.seek(SeekFrom::Start(records_len + 512)).unwrap();
        file.write_all(&[0xab; 100]).unwrap();
        drop(file);

        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(observe(&mut store).await, full);
        drop(store);
        // Cut off, so that no later append can end up right in front of the stray bytes.
        assert_eq!(fs::metadata(wal(dir.path())).unwrap().len(), records_len);
        check_appendable(dir.path(), full).await;
    }

    #[tokio::test]
    async fn corruption_in_the_middle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, ends) = write_sample(dir.path()).await;
        let mut data = fs::read(wal(dir.path())).unwrap();
        // Flip a payload byte of the 5th record.
        let at = ends[4] as usize + 8 + 3;
        data[at] ^= 0x40;
        fs::write(wal(dir.path()), &data).unwrap();
        let err = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // The file is left alone for an operator to look at.
        assert_eq!(fs::read(wal(dir.path())).unwrap(), data);
    }

    #[tokio::test]
    async fn unknown_format_version_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        append(&mut store, vec![entry(1, 1)]).await;
        drop(store);

        let mut payload = Vec::new();
        encode_record(&RecordRef::Entry(&entry(1, 2)), &mut payload).unwrap();
        let mut payload = payload.split_off(8);
        payload[0] = 2;
        let mut record = (payload.len() as u32).to_le_bytes().to_vec();
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let mut file = OpenOptions::new().write(true).open(wal(dir.path())).unwrap();
        file.seek(SeekFrom::Start(records_bytes(&wal(dir.path())).len() as u64)).unwrap();
        file.write_all(&record).unwrap();
        drop(file);

        let err = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    /// Wait for all receivers, checking that they complete in index order: scanning from the
    /// highest index down, once one is seen complete every lower one must be complete too.
    async fn await_in_order(mut receivers: Vec<tokio::sync::oneshot::Receiver<io::Result<()>>>) {
        let mut resolved = vec![false; receivers.len()];
        while resolved.iter().any(|r| !r) {
            let mut higher_done = None;
            for k in (0..receivers.len()).rev() {
                if !resolved[k] {
                    match receivers[k].try_recv() {
                        Ok(result) => {
                            result.unwrap();
                            resolved[k] = true;
                        }
                        Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                            if let Some(h) = higher_done {
                                panic!("completion {h} arrived before completion {k}");
                            }
                        }
                        Err(e) => panic!("callback {k} dropped: {e}"),
                    }
                }
                if resolved[k] && higher_done.is_none() {
                    higher_done = Some(k);
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Start an append; returns the receiver of its completion.
    async fn submit_append(store: &mut LogStore, entry: Entry) -> tokio::sync::oneshot::Receiver<io::Result<()>> {
        let (tx, rx) = TypeConfig::oneshot();
        store.append(vec![entry], IOFlushed::signal(tx)).await.unwrap();
        rx
    }

    fn queued(store: &LogStore) -> u64 {
        store.inner.shared.queued.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_caller_writes_and_syncs_its_own_append_when_the_writer_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open_with_options(dir.path(), never_when_quiet()).unwrap();
        store.set_caller_writes(true);
        let fsyncs = store.stats().fsyncs;
        let mut done = submit_append(&mut store, put_entry(1, 1, 50)).await;
        // Durable by the time `append` returned: the caller wrote and synced it.
        done.try_recv().expect("append completed before append returned").unwrap();
        assert_eq!(store.stats().fsyncs, fsyncs + 1);
        store.save_committed(Some(lid(1, 1))).await.unwrap();
        assert_eq!(decode_file(&wal(dir.path())).len(), 1, "a committed id has no record of its own");
        let mut done = submit_append(&mut store, put_entry(1, 2, 50)).await;
        done.try_recv().expect("append completed before append returned").unwrap();
        let records = decode_file(&wal(dir.path()));
        assert_eq!(records.len(), 3, "the committed id follows the next append");
        assert!(matches!(records[2], Record::Committed(Some(id)) if id == lid(1, 1)));
        assert_eq!(queued(&store), 0, "nothing went through the writer thread");

        // Off again: appends go through the writer thread.
        store.set_caller_writes(false);
        let gate = store.pause_writer();
        let mut queued_append = submit_append(&mut store, put_entry(1, 3, 50)).await;
        assert!(queued_append.try_recv().is_err(), "completed while the writer was paused");
        drop(gate);
        await_in_order(vec![queued_append]).await;
    }

    #[tokio::test]
    async fn a_committed_id_is_written_with_the_next_request_or_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open_with_options(dir.path(), never_when_quiet()).unwrap();
        append(&mut store, (1..=3).map(|i| put_entry(1, i, 10)).collect()).await;
        store.save_committed(Some(lid(1, 2))).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(lid(1, 2)));
        // A crash now loses the committed id, and nothing else.
        let crashed = tempfile::tempdir().unwrap();
        fs::copy(wal(dir.path()), wal(crashed.path())).unwrap();
        let lost = observe_fresh(crashed.path()).await;
        assert_eq!((lost.committed, lost.entries.len()), (None, 3));

        store.save_committed(Some(lid(1, 3))).await.unwrap();
        drop(store);
        assert_eq!(observe_fresh(dir.path()).await.committed, Some(lid(1, 3)), "written at close");
        let records = decode_file(&wal(dir.path()));
        assert_eq!(records.iter().filter(|r| matches!(r, Record::Committed(_))).count(), 1);
    }

    /// Options under which the writer never writes a committed id for being quiet.
    fn never_when_quiet() -> LogStoreOptions {
        LogStoreOptions { committed_written_within: Duration::from_secs(3600), ..LogStoreOptions::default() }
    }

    #[tokio::test]
    async fn an_idle_writer_writes_the_committed_id_no_request_carried() {
        let dir = tempfile::tempdir().unwrap();
        let options =
            LogStoreOptions { committed_written_within: Duration::from_millis(5), ..LogStoreOptions::default() };
        let mut store = LogStore::open_with_options(dir.path(), options).unwrap();
        append(&mut store, (1..=3).map(|i| put_entry(1, i, 10)).collect()).await;
        store.save_committed(Some(lid(1, 3))).await.unwrap();
        // A crash after the writer's quiet spell keeps the committed id. The file is read as a
        // restart would (a copy, recovered), since the writer may be mid-record meanwhile.
        // Bounded wait: up to 5 s for a write due after 5 ms.
        let mut recovered = None;
        for _ in 0..1000 {
            let crashed = tempfile::tempdir().unwrap();
            fs::copy(wal(dir.path()), wal(crashed.path())).unwrap();
            recovered = observe_fresh(crashed.path()).await.committed;
            if recovered == Some(lid(1, 3)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(recovered, Some(lid(1, 3)), "the committed id was not written while the writer was idle");
        drop(store);
    }

    #[tokio::test]
    async fn caller_writes_wait_behind_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        store.set_caller_writes(true);
        let gate = store.pause_writer();
        let mut receivers = Vec::new();
        for i in 1..=3 {
            receivers.push(submit_append(&mut store, put_entry(1, i, 50)).await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        for rx in &mut receivers {
            assert!(rx.try_recv().is_err(), "written ahead of the queue");
        }
        assert_eq!(queued(&store), 4, "three appends behind the pause");
        drop(gate);
        await_in_order(receivers).await;
        wait_until("the queue drained", || queued(&store) == 0).await;

        // The queue is empty again: the next append is the caller's own.
        let mut own = submit_append(&mut store, put_entry(1, 4, 50)).await;
        own.try_recv().expect("written by the caller").unwrap();
        let indexes: Vec<u64> = decode_file(&wal(dir.path()))
            .into_iter()
            .filter_map(|r| match r {
                Record::Entry(e) => Some(e.log_id.index),
                _ => None,
            })
            .collect();
        assert_eq!(indexes, vec![1, 2, 3, 4]);
        store.close();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(observe(&mut store).await.entries.len(), 4);
    }

    #[tokio::test]
    async fn group_commit_completes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        let fsyncs_before = store.stats().fsyncs;
        let mut receivers = Vec::new();

        // First half while the writer runs freely: batches form however the timing falls.
        for i in 1..=100 {
            receivers.push(submit_append(&mut store, put_entry(1, i, 50)).await);
        }
        // Second half while the writer is held: all of it is queued when it wakes up, so it must
        // go out as one batch with one fsync, whatever the speed of the disk.
        let gate = store.pause_writer();
        for i in 101..=200 {
            receivers.push(submit_append(&mut store, put_entry(1, i, 50)).await);
        }
        // A vote queued behind the appends is durable only after all of them.
        let mut voter = store.clone();
        let vote = tokio::spawn(async move { voter.save_vote(&Vote::new(2, 1)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!vote.is_finished(), "vote completed while the writer was paused");
        assert_eq!(store.read_vote().await.unwrap(), None, "vote visible before it is durable");
        drop(gate);
        vote.await.unwrap().unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        await_in_order(receivers).await;

        let fsyncs = store.stats().fsyncs - fsyncs_before;
        assert!((1..=101).contains(&fsyncs), "{fsyncs} fsyncs for 200 appends and a vote");

        drop(store);
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        let entries = store.try_get_log_entries(..).await.unwrap();
        assert_eq!(entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), (1..=200).collect::<Vec<_>>());
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appenders_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        let tasks = 8u64;
        let per_task = 100u64;
        let mut handles = Vec::new();
        for t in 0..tasks {
            let mut store = store.clone();
            handles.push(tokio::spawn(async move {
                let mut receivers = Vec::new();
                for i in 0..per_task {
                    let (tx, rx) = TypeConfig::oneshot();
                    let index = t * per_task + i + 1;
                    store.append(vec![put_entry(1, index, 20)], IOFlushed::signal(tx)).await.unwrap();
                    receivers.push(rx);
                    if i % 10 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                // Each task's own appends complete in its submission order too.
                await_in_order(receivers).await;
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        let stats = store.stats();
        assert_eq!(stats.entries, tasks * per_task);
        assert!(stats.fsyncs <= tasks * per_task);
        drop(store);

        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        let entries = store.try_get_log_entries(..).await.unwrap();
        assert_eq!(
            entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            (1..=tasks * per_task).collect::<Vec<_>>()
        );
        assert_eq!(entries[41], put_entry(1, 42, 20));
    }

    #[tokio::test]
    async fn fsync_never_does_not_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        append(&mut store, (1..=10).map(|i| entry(1, i)).collect()).await;
        store.save_vote(&Vote::new(1, 1)).await.unwrap();
        assert_eq!(store.stats().fsyncs, 0);
        drop(store);
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap().len(), 10);
    }

    #[tokio::test]
    async fn compaction_keeps_only_live_data() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogStoreOptions {
            fsync: FsyncPolicy::Always,
            compact_min_bytes: 1024,
            compact_ratio: 2,
            ..LogStoreOptions::default()
        };
        let mut store = LogStore::open_with_options(dir.path(), options).unwrap();
        store.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        append(&mut store, (1..=100).map(|i| put_entry(1, i, 100)).collect()).await;
        store.save_committed(Some(lid(1, 95))).await.unwrap();

        // A small purge leaves most of the data live: no rewrite. (The purge waits, and the
        // committed record queued before it is written by then.)
        store.purge(lid(1, 10)).await.unwrap();
        assert_eq!(decode_file(&wal(dir.path())).len(), 103);
        let big = store.stats().wal_bytes;

        // Truncation and purge leave 10 live entries out of 100: rewrite.
        store.truncate_after(Some(lid(1, 98))).await.unwrap();
        store.purge(lid(1, 88)).await.unwrap();
        // The rewrite runs on the writer thread right after the purge is acknowledged; an empty
        // append is queued behind it and completes once it is done.
        append(&mut store, vec![]).await;
        let expected = observe(&mut store).await;
        assert_eq!(expected.entries.len(), 10);

        let records = decode_file(&wal(dir.path()));
        // Vote, purge point, committed, then the 10 live entries and nothing else.
        assert_eq!(records.len(), 13, "{records:?}");
        assert!(matches!(&records[0], Record::Vote(v) if *v == Vote::new_committed(3, 1)));
        assert!(matches!(&records[1], Record::Purge(p) if *p == lid(1, 88)));
        assert!(matches!(&records[2], Record::Committed(c) if *c == Some(lid(1, 95))));
        let indexes: Vec<u64> = records[3..]
            .iter()
            .map(|r| match r {
                Record::Entry(e) => e.log_id.index,
                other => panic!("unexpected record {other:?}"),
            })
            .collect();
        assert_eq!(indexes, (89..=98).collect::<Vec<_>>());
        let size = records_bytes(&wal(dir.path())).len() as u64;
        assert!(size < big / 5, "{size} vs {big}");
        assert_eq!(store.stats().wal_bytes, size);
        assert!(!dir.path().join(WAL_TMP_FILE).exists());

        // Appends after the rewrite go to the new file.
        append(&mut store, vec![put_entry(4, 99, 10)]).await;
        let mut expected = expected;
        expected.entries.push(put_entry(4, 99, 10));
        expected.log_state.last_log_id = Some(lid(4, 99));
        assert_eq!(observe(&mut store).await, expected);
        drop(store);

        let mut store = LogStore::open_with_options(dir.path(), options).unwrap();
        assert_eq!(observe(&mut store).await, expected);
        assert_eq!(store.stats().wal_bytes, records_bytes(&wal(dir.path())).len() as u64);
    }

    #[test]
    fn a_replaced_file_is_released_in_steps_off_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replaced.wal");
        let file = File::create(&path).unwrap();
        file.set_len(3 * RELEASE_STEP_BYTES + 1).unwrap();
        close_in_background(BufWriter::new(file));
        // The release runs on its own thread: 4 steps with a short pause each.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::metadata(&path).unwrap().len() > 0 {
            assert!(Instant::now() < deadline, "the file was not cut down to nothing");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[tokio::test]
    async fn compaction_covers_queued_writes() {
        // The rewrite snapshots memory, which is ahead of the file while writes are queued. The
        // snapshot must stand for those writes (they are not written again), and a crash right
        // after the rewrite must recover exactly the snapshot.
        let dir = tempfile::tempdir().unwrap();
        let options = LogStoreOptions {
            fsync: FsyncPolicy::Always,
            compact_min_bytes: 0,
            compact_ratio: 1,
            ..LogStoreOptions::default()
        };
        let mut store = LogStore::open_with_options(dir.path(), options).unwrap();
        store.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        append(&mut store, (1..=50).map(|i| put_entry(1, i, 100)).collect()).await;

        // Batch boundaries: [purge 40] | gate | [everything else].
        let gate1 = store.pause_writer();
        let mut purger = store.clone();
        let purge = tokio::spawn(async move { purger.purge(lid(1, 40)).await });
        wait_until("purge in memory", || store.stats().entries == 10).await;
        let gate2 = store.pause_writer();

        // Queued behind the purge: appends, a new leader's vote, a conflicting truncation and
        // the new leader's entries, a second purge.
        let rx1 = submit_append(&mut store, put_entry(1, 51, 100)).await;
        let rx2 = submit_append(&mut store, put_entry(1, 52, 100)).await;
        let mut voter = store.clone();
        let vote = tokio::spawn(async move { voter.save_vote(&Vote::new_committed(2, 2)).await });
        wait_until("vote queued", || lock(&store.inner.state).pending_vote == Some(Vote::new_committed(2, 2))).await;
        let mut truncater = store.clone();
        let truncate = tokio::spawn(async move { truncater.truncate_after(Some(lid(1, 45))).await });
        wait_until("truncate in memory", || store.stats().entries == 5).await;
        let mut receivers = Vec::new();
        for i in 46..=60 {
            receivers.push(submit_append(&mut store, put_entry(2, i, 100)).await);
        }
        let mut purger = store.clone();
        let purge2 = tokio::spawn(async move { purger.purge(lid(1, 42)).await });
        wait_until("second purge in memory", || store.stats().entries == 18).await;
        store.save_committed(Some(lid(1, 44))).await.unwrap();

        let before = store.stats().wal_bytes;
        drop(gate1);
        purge.await.unwrap().unwrap();
        wait_until("compaction", || store.stats().wal_bytes < before).await;
        // The writer now waits at gate2 with all the later requests still queued. Crash here:
        let compacted = fs::read(wal(dir.path())).unwrap();
        assert!(!decode_file(&wal(dir.path())).iter().any(|r| matches!(r, Record::TruncateAfter(_))));

        drop(gate2);
        for rx in [rx1, rx2].into_iter().chain(receivers) {
            rx.await.unwrap().unwrap();
        }
        vote.await.unwrap().unwrap();
        truncate.await.unwrap().unwrap();
        purge2.await.unwrap().unwrap();
        append(&mut store, vec![]).await;
        // The queued requests were completed by the snapshot, not written again.
        assert_eq!(fs::read(wal(dir.path())).unwrap(), compacted);

        let expected = observe(&mut store).await;
        let ids: Vec<LogId> = expected.entries.iter().map(|e| e.log_id).collect();
        let want: Vec<LogId> = (43..=45).map(|i| lid(1, i)).chain((46..=60).map(|i| lid(2, i))).collect();
        assert_eq!(ids, want);
        assert_eq!(expected.vote, Some(Vote::new_committed(2, 2)));
        assert_eq!(expected.committed, Some(lid(1, 44)));
        assert_eq!(expected.log_state.last_purged_log_id, Some(lid(1, 42)));

        let crashed = tempfile::tempdir().unwrap();
        fs::write(wal(crashed.path()), &compacted).unwrap();
        let mut recovered = LogStore::open_with_options(crashed.path(), options).unwrap();
        assert_eq!(observe(&mut recovered).await, expected);

        // Writes after the compaction land after the snapshot.
        append(&mut store, vec![put_entry(2, 61, 10)]).await;
        let mut expected = expected;
        expected.entries.push(put_entry(2, 61, 10));
        expected.log_state.last_log_id = Some(lid(2, 61));
        drop(store);
        let mut store = LogStore::open_with_options(dir.path(), options).unwrap();
        assert_eq!(observe(&mut store).await, expected);
    }

    #[tokio::test]
    async fn write_failure_poisons_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        append(&mut store, vec![entry(1, 1)]).await;
        store.save_vote(&Vote::new(1, 1)).await.unwrap();

        store.inner.shared.fail_next_batch.store(true, Ordering::SeqCst);
        let (tx, rx) = TypeConfig::oneshot();
        store.append(vec![entry(1, 2)], IOFlushed::signal(tx)).await.unwrap();
        assert!(rx.await.unwrap().is_err());

        assert!(store.save_vote(&Vote::new(2, 1)).await.is_err());
        assert!(store.get_log_state().await.is_err());
        assert!(store.try_get_log_entries(..).await.is_err());
        assert!(store.purge(lid(1, 1)).await.is_err());
        let (tx, rx) = TypeConfig::oneshot();
        assert!(store.append(vec![entry(1, 3)], IOFlushed::signal(tx)).await.is_err());
        assert!(rx.await.unwrap().is_err());
        drop(store);

        // Nothing after the failure reached the file.
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), vec![entry(1, 1)]);
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
    }

    #[tokio::test]
    async fn close_is_idempotent_and_final() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        let (tx, rx) = TypeConfig::oneshot();
        store.append(vec![entry(1, 1)], IOFlushed::signal(tx)).await.unwrap();
        let clone = store.clone();
        store.close();
        clone.close();
        // What was queued before close was written and acknowledged.
        rx.await.unwrap().unwrap();
        assert!(store.save_vote(&Vote::new(1, 1)).await.is_err());
        let (tx, rx) = TypeConfig::oneshot();
        assert!(store.append(vec![entry(1, 2)], IOFlushed::signal(tx)).await.is_err());
        assert!(rx.await.unwrap().is_err());
        drop(store);
        drop(clone);
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), vec![entry(1, 1)]);
    }

    #[tokio::test]
    async fn second_open_of_the_same_dir_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        let err = LogStore::open(dir.path(), FsyncPolicy::Never).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        drop(store);
        LogStore::open(dir.path(), FsyncPolicy::Never).unwrap();
    }

    #[tokio::test]
    async fn open_creates_missing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b");
        let mut store = LogStore::open(&path, FsyncPolicy::Always).unwrap();
        append(&mut store, vec![entry(1, 1)]).await;
        drop(store);
        let mut store = LogStore::open(&path, FsyncPolicy::Always).unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), vec![entry(1, 1)]);
    }

    #[tokio::test]
    async fn leftover_compaction_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        append(&mut store, vec![entry(1, 1)]).await;
        drop(store);
        fs::write(dir.path().join(WAL_TMP_FILE), b"half a compaction").unwrap();
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), vec![entry(1, 1)]);
        assert!(!dir.path().join(WAL_TMP_FILE).exists());
    }

    /// openraft's own conformance suite for log stores, run against [`LogStore`]. The suite
    /// needs a state machine too; this minimal one only tracks what the suite checks.
    mod openraft_suite {
        use futures::StreamExt;
        use openraft::storage::EntryResponder;
        use openraft::storage::RaftSnapshotBuilder;
        use openraft::storage::RaftStateMachine;
        use openraft::testing::log::StoreBuilder;
        use openraft::testing::log::Suite;

        use super::*;
        use crate::command::CommandResult;
        use crate::types::SnapshotMeta;
        use crate::types::StoredMembership;

        type UnitSnapshot = openraft::alias::SnapshotOf<TypeConfig, ()>;

        #[derive(Default)]
        struct SmState {
            last_applied: Option<LogId>,
            membership: StoredMembership,
            snapshot: Option<SnapshotMeta>,
        }

        #[derive(Clone, Default)]
        struct TestSm(Arc<Mutex<SmState>>);

        impl RaftSnapshotBuilder<TypeConfig> for TestSm {
            type SnapshotData = ();

            async fn build_snapshot(&mut self) -> Result<UnitSnapshot, io::Error> {
                let mut sm = lock(&self.0);
                let meta = SnapshotMeta { last_log_id: sm.last_applied, last_membership: sm.membership.clone() };
                sm.snapshot = Some(meta.clone());
                Ok(UnitSnapshot { meta, snapshot: () })
            }
        }

        impl RaftStateMachine<TypeConfig> for TestSm {
            type SnapshotData = ();
            type SnapshotBuilder = TestSm;

            async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
                let sm = lock(&self.0);
                Ok((sm.last_applied, sm.membership.clone()))
            }

            async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
            where
                Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
            {
                while let Some(item) = entries.next().await {
                    let (entry, responder) = item?;
                    {
                        let mut sm = lock(&self.0);
                        sm.last_applied = Some(entry.log_id);
                        if let EntryPayload::Membership(m) = &entry.payload {
                            sm.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        }
                    }
                    if let Some(responder) = responder {
                        responder.send(CommandResult::Done);
                    }
                }
                Ok(())
            }

            async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
                self.clone()
            }

            async fn install_snapshot(&mut self, meta: &SnapshotMeta, _snapshot: ()) -> Result<(), io::Error> {
                let mut sm = lock(&self.0);
                sm.last_applied = meta.last_log_id;
                sm.membership = meta.last_membership.clone();
                sm.snapshot = Some(meta.clone());
                Ok(())
            }

            async fn get_current_snapshot(&mut self) -> Result<Option<UnitSnapshot>, io::Error> {
                Ok(lock(&self.0).snapshot.clone().map(|meta| UnitSnapshot { meta, snapshot: () }))
            }
        }

        /// Options, and whether callers write their own appends.
        struct Builder(LogStoreOptions, bool);

        impl StoreBuilder<TypeConfig, LogStore, TestSm, tempfile::TempDir> for Builder {
            async fn build(&self) -> Result<(tempfile::TempDir, LogStore, TestSm), openraft::StorageError<TypeConfig>> {
                let dir = tempfile::tempdir().unwrap();
                let store = LogStore::open_with_options(dir.path(), self.0).unwrap();
                store.set_caller_writes(self.1);
                Ok((dir, store, TestSm::default()))
            }
        }

        #[tokio::test]
        async fn suite_passes() {
            Suite::<TypeConfig, LogStore, TestSm, Builder, tempfile::TempDir>::test_all(Builder(
                LogStoreOptions::default(),
                false,
            ))
            .await
            .unwrap();
        }

        #[tokio::test]
        async fn suite_passes_with_caller_writes() {
            Suite::<TypeConfig, LogStore, TestSm, Builder, tempfile::TempDir>::test_all(Builder(
                LogStoreOptions::default(),
                true,
            ))
            .await
            .unwrap();
        }

        #[tokio::test]
        async fn suite_passes_while_compacting_all_the_time() {
            let options = LogStoreOptions {
                fsync: FsyncPolicy::Never,
                compact_min_bytes: 0,
                compact_ratio: 1,
                ..LogStoreOptions::default()
            };
            for caller_writes in [false, true] {
                Suite::<TypeConfig, LogStore, TestSm, Builder, tempfile::TempDir>::test_all(Builder(
                    options,
                    caller_writes,
                ))
                .await
                .unwrap();
            }
        }
    }
}
