//! The snapshot file, and [`SnapshotFile`]: the handle to snapshot data that Raft passes around.
//!
//! `snapshot.bin` is `[meta length u64 LE][encoded meta][snapshot data]`, written to a
//! temporary file, fsynced and renamed into place, so a crash leaves either the old snapshot
//! or the new one, never half of one. Nothing here holds a snapshot whole in memory: a
//! snapshot is encoded straight into its file (the checksum filled in at the end), a peer's
//! snapshot is written to an unlinked temporary file as it arrives, and snapshot data is sent
//! and loaded by reading its file piece by piece.

use std::fs;
use std::fs::File;
use std::io;
use std::io::BufWriter;
use std::io::Read;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::codec;
use crate::state::KvState;
use crate::storage::snapshot;
use crate::types::SnapshotMeta;

const FILE_NAME: &str = "snapshot.bin";
const WRITE_BUFFER: usize = 1024 * 1024;

/// Snapshot data in a file: the open file and where the data sits in it. Holding the file open
/// keeps the data readable after a newer snapshot has been renamed over `snapshot.bin` (or,
/// for a peer's snapshot, after its temporary file was unlinked). Cheap to clone.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    file: Arc<File>,
    start: u64,
    len: u64,
}

impl SnapshotFile {
    /// The data's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `max` bytes of the data from `offset` (fewer only at the end).
    pub fn read_chunk(&self, offset: u64, max: usize) -> io::Result<Bytes> {
        let n = usize::try_from(self.len.saturating_sub(offset)).unwrap_or(usize::MAX).min(max);
        let mut buf = vec![0u8; n];
        self.file.read_exact_at(&mut buf, self.start + offset)?;
        Ok(Bytes::from(buf))
    }

    /// A reader over the whole data (unbuffered: the decoders buffer).
    pub fn reader(&self) -> impl Read + use<> {
        Region { file: self.file.clone(), pos: self.start, end: self.start + self.len }
    }

    /// Decode the state this data holds.
    pub fn decode(&self) -> io::Result<KvState> {
        snapshot::decode_from(self.reader())
    }
}

struct Region {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for Region {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "snapshot file shorter than its data"));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Encode `kv` as the snapshot described by `meta` into a temporary file in `dir`; `publish`
/// then makes it the current snapshot. Only this part needs the state: a caller holding a lock
/// for a consistent cut can release it before the slow sync.
pub fn write_state(dir: &Path, meta: &SnapshotMeta, kv: &KvState) -> io::Result<Unpublished> {
    write_tmp(dir, meta, |file, out, start| {
        out.write_all(snapshot::MAGIC)?;
        out.write_all(&[0; 4])?;
        let crc = snapshot::write_body(kv, &mut *out)?;
        out.flush()?;
        file.write_all_at(&crc.to_le_bytes(), start + snapshot::CRC_OFFSET)
    })
}

/// Make `data` (a peer's snapshot) the current snapshot in `dir`, described by `meta`.
pub fn write_copy(dir: &Path, meta: &SnapshotMeta, data: &SnapshotFile) -> io::Result<SnapshotFile> {
    write_tmp(dir, meta, |_, out, _| {
        io::copy(&mut data.reader(), out)?;
        Ok(())
    })?
    .publish()
}

/// A snapshot written to its temporary file, not yet synced nor current.
pub struct Unpublished {
    dir: PathBuf,
    tmp: PathBuf,
    data: SnapshotFile,
}

impl Unpublished {
    /// Sync the snapshot and rename it to `snapshot.bin`; the handle to its data.
    pub fn publish(self) -> io::Result<SnapshotFile> {
        self.data.file.sync_all()?;
        fs::rename(&self.tmp, self.dir.join(FILE_NAME))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(self.data)
    }
}

/// Write `[meta length][meta]` and then what `fill` writes (given the file, a buffered writer
/// on it and the offset where the data starts) to a temporary file in `dir`.
fn write_tmp(
    dir: &Path,
    meta: &SnapshotMeta,
    fill: impl FnOnce(&File, &mut BufWriter<&File>, u64) -> io::Result<()>,
) -> io::Result<Unpublished> {
    let meta = codec::encode(meta)?;
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let file = File::options().read(true).write(true).create(true).truncate(true).open(&tmp)?;
    let start = 8 + meta.len() as u64;
    {
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, &file);
        out.write_all(&(meta.len() as u64).to_le_bytes())?;
        out.write_all(&meta)?;
        fill(&file, &mut out, start)?;
        out.flush()?;
    }
    let len = file.metadata()?.len().saturating_sub(start);
    let data = SnapshotFile { file: Arc::new(file), start, len };
    Ok(Unpublished { dir: dir.to_path_buf(), tmp, data })
}

/// The current snapshot in `dir`, if any, with its magic and checksum verified (not decoded).
pub fn read_current(dir: &Path) -> io::Result<Option<(SnapshotMeta, SnapshotFile)>> {
    let file = match File::open(dir.join(FILE_NAME)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let truncated = || snapshot::invalid("file truncated");
    let file_len = file.metadata()?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact_at(&mut len_bytes, 0).map_err(|_| truncated())?;
    let meta_len = u64::from_le_bytes(len_bytes);
    let start = meta_len.checked_add(8).filter(|&s| s <= file_len).ok_or_else(truncated)?;
    let mut meta = vec![0u8; usize::try_from(meta_len).map_err(|_| truncated())?];
    file.read_exact_at(&mut meta, 8)?;
    let meta: SnapshotMeta = codec::decode(&meta)?;
    let data = SnapshotFile { file: Arc::new(file), start, len: file_len - start };
    snapshot::verify_checksum(data.reader())?;
    Ok(Some((meta, data)))
}

/// A peer's snapshot being received: written to a temporary file that is unlinked at once, so
/// nothing is left behind whatever happens to the transfer or the process.
pub struct Incoming {
    file: Arc<File>,
    len: u64,
}

impl Incoming {
    pub fn create(dir: &Path) -> io::Result<Incoming> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{FILE_NAME}.incoming.{}.{n}", std::process::id()));
        let file = File::options().read(true).write(true).create_new(true).open(&path)?;
        fs::remove_file(&path)?;
        Ok(Incoming { file: Arc::new(file), len: 0 })
    }

    /// Append the next piece of data.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, self.len)?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// The data received, checked as decoding it would be (magic, checksum, records).
    pub fn finish(self) -> io::Result<SnapshotFile> {
        let data = SnapshotFile { file: self.file, start: 0, len: self.len };
        snapshot::verify_from(data.reader())?;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::command::Command;
    use crate::command::Condition;

    fn sample(keys: u64) -> KvState {
        let mut kv = KvState::default();
        kv.apply(1, &Command::SetClusterId { id: "c1".into() });
        for i in 0..keys {
            let put = Command::Put {
                key: format!("k/{i:06}"),
                value: Bytes::from(vec![i as u8; 100]),
                content_type: None,
                ttl_ms: None,
                condition: Condition::None,
                now_ms: 1,
            };
            kv.apply(i + 2, &put);
        }
        kv
    }

    #[test]
    fn a_written_snapshot_is_read_back_and_outlives_its_replacement() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_current(dir.path()).unwrap().is_none());
        let (kv, meta) = (sample(20_000), SnapshotMeta::default());
        let written = write_state(dir.path(), &meta, &kv).unwrap();
        assert!(read_current(dir.path()).unwrap().is_none(), "current before it was published");
        let data = written.publish().unwrap();
        // Bigger than one write buffer, and the same bytes as the in-memory encoding.
        assert!(data.len() > WRITE_BUFFER as u64);
        let whole = snapshot::encode(&kv).unwrap();
        assert_eq!(data.len(), whole.len() as u64);
        assert_eq!(data.read_chunk(0, usize::MAX).unwrap(), whole);
        assert_eq!(data.read_chunk(whole.len() as u64 - 5, 100).unwrap(), whole.slice(whole.len() - 5..));
        let (m, current) = read_current(dir.path()).unwrap().unwrap();
        assert_eq!(m, meta);
        assert_eq!(current.decode().unwrap(), kv);
        // A newer snapshot replaces the file; the handle given out earlier still reads the old data.
        write_state(dir.path(), &meta, &sample(3)).unwrap().publish().unwrap();
        assert_eq!(data.decode().unwrap(), kv);
        assert_eq!(read_current(dir.path()).unwrap().unwrap().1.decode().unwrap(), sample(3));
    }

    #[test]
    fn a_received_snapshot_is_checked_then_installed_as_current() {
        let dir = tempfile::tempdir().unwrap();
        let kv = sample(5_000);
        let whole = snapshot::encode(&kv).unwrap();
        let mut incoming = Incoming::create(dir.path()).unwrap();
        for piece in whole.chunks(4096) {
            incoming.append(piece).unwrap();
        }
        // The temporary file is already gone from the directory.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let data = incoming.finish().unwrap();
        let meta = SnapshotMeta::default();
        write_copy(dir.path(), &meta, &data).unwrap();
        assert_eq!(read_current(dir.path()).unwrap().unwrap().1.decode().unwrap(), kv);

        // Damaged or cut short in transit: refused.
        for bad in [whole.slice(..whole.len() - 1), Bytes::from([&whole[..100], &[0xff], &whole[101..]].concat())] {
            let mut incoming = Incoming::create(dir.path()).unwrap();
            incoming.append(&bad).unwrap();
            assert!(incoming.finish().is_err());
        }
    }

    #[test]
    fn a_damaged_snapshot_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_state(dir.path(), &SnapshotMeta::default(), &sample(100)).unwrap().publish().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut raw = fs::read(&path).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        fs::write(&path, &raw).unwrap();
        assert!(read_current(dir.path()).is_err());
        fs::write(&path, &raw[..4]).unwrap();
        assert!(read_current(dir.path()).is_err());
    }
}
