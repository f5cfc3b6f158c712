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

use crate::codec;
use crate::state::KvRecord;
use crate::state::KvState;
use crate::state::Slot;
use crate::state::record::Reader;
use crate::state::record::put_varint;
use crate::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"FKVSNAP2";
/// The first layout (postcard of the cluster id and `(key, record)` pairs): still read, so a
/// node restarted on a newer binary loads the snapshot an older one wrote.
const MAGIC_V1: &[u8; 8] = b"FKVSNAP1";

#[derive(serde::Serialize, serde::Deserialize)]
struct BodyV1 {
    cluster_id: Option<String>,
    records: Vec<(String, KvRecord)>,
}
const FILE_NAME: &str = "snapshot.bin";

fn invalid(m: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("snapshot: {m}"))
}

/// The state as snapshot data: magic, CRC-32 of the body, body. The body is the cluster id
/// (varint length + 1, 0 for none) followed by every record's packed bytes in key order, each
/// prefixed by its varint length: the in-memory layout, so encoding is a copy.
pub fn encode(kv: &KvState) -> io::Result<Bytes> {
    let body_len: usize = kv.slots().map(|s| s.bytes().len() + 3).sum::<usize>() + 16;
    let mut out = Vec::with_capacity(body_len + 12);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 4]);
    match kv.cluster_id() {
        Some(id) => {
            put_varint(&mut out, id.len() as u64 + 1);
            out.extend_from_slice(id.as_bytes());
        }
        None => put_varint(&mut out, 0),
    }
    for slot in kv.slots() {
        put_varint(&mut out, slot.bytes().len() as u64);
        out.extend_from_slice(slot.bytes());
    }
    let crc = crc32fast::hash(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(Bytes::from(out))
}

/// Check magic and checksum; the body on success.
fn verified_body(data: &[u8]) -> io::Result<&[u8]> {
    if data.len() < 12 || (&data[..8] != MAGIC && &data[..8] != MAGIC_V1) {
        return Err(invalid("bad magic"));
    }
    let crc = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    let body = &data[12..];
    if crc32fast::hash(body) != crc {
        return Err(invalid("checksum mismatch"));
    }
    Ok(body)
}

pub fn decode(data: &[u8]) -> io::Result<KvState> {
    let body = verified_body(data)?;
    if data.starts_with(MAGIC_V1) {
        let v1: BodyV1 = codec::decode(body)?;
        return Ok(KvState::from_parts(v1.cluster_id, v1.records));
    }
    let mut r = Reader(body);
    let cluster_id = match r.varint().ok_or_else(|| invalid("cluster id length"))? {
        0 => None,
        n => {
            let id = r.take(n - 1).ok_or_else(|| invalid("cluster id"))?;
            Some(std::str::from_utf8(id).map_err(|_| invalid("cluster id is not UTF-8"))?.to_string())
        }
    };
    let mut slots: Vec<Slot> = Vec::new();
    while !r.0.is_empty() {
        let len = r.varint().ok_or_else(|| invalid("record length"))?;
        let bytes = r.take(len).ok_or_else(|| invalid("record truncated"))?;
        let slot = Slot::parse(bytes).map_err(invalid)?;
        if slots.last().is_some_and(|prev| prev.key() >= slot.key()) {
            return Err(invalid("records out of key order"));
        }
        slots.push(slot);
    }
    Ok(KvState::from_slots(cluster_id, slots))
}

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
/// The persisted snapshot, if any, with its magic and checksum verified (not decoded).
pub fn read_file(dir: &Path) -> io::Result<Option<(SnapshotMeta, Bytes)>> {
    let raw = match fs::read(dir.join(FILE_NAME)) {
        Ok(raw) => Bytes::from(raw),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let truncated = || invalid("file truncated");
    let len_bytes: [u8; 8] = raw.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(truncated)?;
    let meta_len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| truncated())?;
    let meta_end = 8usize.checked_add(meta_len).filter(|&end| end <= raw.len()).ok_or_else(truncated)?;
    let meta: SnapshotMeta = codec::decode(&raw[8..meta_end])?;
    let data = raw.slice(meta_end..);
    verified_body(&data)?;
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
        // A body whose checksum is right but whose records are not in key order is refused.
        let a = crate::state::Slot::pack(&crate::state::RecordRef { key: "b", ..kv.iter().next().unwrap() });
        let b = crate::state::Slot::pack(&crate::state::RecordRef { key: "a", ..kv.iter().next().unwrap() });
        let mut body = vec![0u8];
        for slot in [a, b] {
            put_varint(&mut body, slot.bytes().len() as u64);
            body.extend_from_slice(slot.bytes());
        }
        let mut unordered = MAGIC.to_vec();
        unordered.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        unordered.extend_from_slice(&body);
        assert!(decode(&unordered).is_err());
    }

    #[test]
    fn first_layout_is_still_read() {
        let kv = sample();
        let v1 = BodyV1 {
            cluster_id: kv.cluster_id().map(String::from),
            records: kv.iter().map(|r| (r.key.to_string(), r.to_record())).collect(),
        };
        let body = codec::encode(&v1).unwrap();
        let mut data = MAGIC_V1.to_vec();
        data.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        data.extend_from_slice(&body);
        assert_eq!(decode(&data).unwrap(), kv);
        assert_eq!(decode(&data).unwrap().digest(), kv.digest());
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
