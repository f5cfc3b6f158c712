//! Snapshot encoding and the snapshot file.
//!
//! The snapshot data (what is streamed to peers) is `[magic 8][crc32 4][encoded body]`; the
//! checksum lets a receiver reject a damaged stream before handing it to Raft, because a
//! state-machine error stops the node. The file on disk (`snapshot.bin`) is the encoded meta
//! followed by the same data, written to a temporary file, fsynced and renamed into place,
//! so a crash leaves either the old snapshot or the new one, never half of one.

use std::fs;
use std::io;
use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

use crate::codec;
use crate::state::KvRecord;
use crate::state::KvState;
use crate::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"FKVSNAP1";
const FILE_NAME: &str = "snapshot.bin";

#[derive(Serialize)]
struct BodyRef<'a> {
    cluster_id: Option<&'a str>,
    records: Records<'a>,
}

/// Serializes the map without copying it into a Vec first.
struct Records<'a>(&'a KvState);

impl Serialize for Records<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

#[derive(Deserialize)]
struct Body {
    cluster_id: Option<String>,
    records: Vec<(String, KvRecord)>,
}

/// Encode the state machine as snapshot data.
pub fn encode(kv: &KvState) -> io::Result<Bytes> {
    let body = codec::encode(&BodyRef { cluster_id: kv.cluster_id(), records: Records(kv) })?;
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(Bytes::from(out))
}

/// Check and decode snapshot data.
pub fn decode(data: &[u8]) -> io::Result<KvState> {
    let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot: {m}"));
    if data.len() < 12 || &data[..8] != MAGIC {
        return Err(invalid("bad magic"));
    }
    let crc = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    let body = &data[12..];
    if crc32fast::hash(body) != crc {
        return Err(invalid("checksum mismatch"));
    }
    let body: Body = codec::decode(body)?;
    Ok(KvState::from_parts(body.cluster_id, body.records))
}

/// Persist a snapshot atomically in `dir`.
pub fn write_file(dir: &Path, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
    let meta = codec::encode(meta)?;
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&(meta.len() as u64).to_le_bytes())?;
        f.write_all(&meta)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(FILE_NAME))?;
    fs::File::open(dir)?.sync_all()
}

/// Load the persisted snapshot, if any, verifying its data.
pub fn read_file(dir: &Path) -> io::Result<Option<(SnapshotMeta, Bytes)>> {
    let raw = match fs::read(dir.join(FILE_NAME)) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "snapshot file truncated");
    let len_bytes: [u8; 8] = raw.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(invalid)?;
    let meta_len = u64::from_le_bytes(len_bytes) as usize;
    let meta_end = 8usize.checked_add(meta_len).filter(|&end| end <= raw.len()).ok_or_else(invalid)?;
    let meta: SnapshotMeta = codec::decode(&raw[8..meta_end])?;
    let data = Bytes::copy_from_slice(&raw[meta_end..]);
    decode(&data)?;
    Ok(Some((meta, data)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::command::Condition;

    fn sample() -> KvState {
        let mut kv = KvState::default();
        kv.apply(1, &Command::SetClusterId { id: "c1".into() });
        for i in 0..50u64 {
            kv.apply(
                i + 2,
                &Command::Put {
                    key: format!("k/{i}"),
                    value: Bytes::from(vec![i as u8; 10]),
                    content_type: Some("application/octet-stream".into()),
                    ttl_ms: (i % 3 == 0).then_some(60_000),
                    condition: Condition::None,
                    now_ms: 1,
                },
            );
        }
        kv
    }

    #[test]
    fn data_round_trips_and_rejects_damage() {
        let kv = sample();
        let data = encode(&kv).unwrap();
        assert_eq!(decode(&data).unwrap(), kv);
        let mut damaged = data.to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        assert!(decode(&damaged).is_err());
        assert!(decode(&data[..5]).is_err());
    }

    #[test]
    fn file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_file(dir.path()).unwrap().is_none());
        let kv = sample();
        let data = encode(&kv).unwrap();
        let meta = SnapshotMeta::default();
        write_file(dir.path(), &meta, &data).unwrap();
        let (m, d) = read_file(dir.path()).unwrap().unwrap();
        assert_eq!(m, meta);
        assert_eq!(decode(&d).unwrap(), kv);
    }
}
