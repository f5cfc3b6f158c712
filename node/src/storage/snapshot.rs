//! The snapshot data: what a snapshot holds and how it is checked.
//!
//! Snapshot data (what is stored in `snapshot.bin` and streamed to peers, see `snapshot_file`)
//! is `[magic 8][crc32 4][encoded body]`; the checksum lets a receiver reject a damaged stream
//! before handing it to Raft, because a state-machine error stops the node. Encoding writes to
//! any `Write` and decoding reads from any `Read`, a record at a time, so a snapshot of the
//! whole state never has to be held in memory next to the state itself.

use std::io;
use std::io::BufRead;
use std::io::BufReader;
use std::io::Read;
use std::io::Write;

use bytes::Bytes;

use crate::codec;
use crate::state::KvRecord;
use crate::state::KvState;
use crate::state::Slot;
use crate::state::record::put_varint;

pub(crate) const MAGIC: &[u8; 8] = b"FKVSNAP2";
/// The first layout (postcard of the cluster id and `(key, record)` pairs): still read, so a
/// node restarted on a newer binary loads the snapshot an older one wrote.
const MAGIC_V1: &[u8; 8] = b"FKVSNAP1";
/// Magic and checksum.
pub(crate) const HEADER_LEN: usize = 12;
/// Where the checksum sits in the data.
pub(crate) const CRC_OFFSET: u64 = 8;

#[derive(serde::Serialize, serde::Deserialize)]
struct BodyV1 {
    cluster_id: Option<String>,
    records: Vec<(String, KvRecord)>,
}

pub(crate) fn invalid(m: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("snapshot: {m}"))
}

/// The state as snapshot data, in memory (a replica repair ships it whole). Raft's snapshots
/// are written straight to their file instead (`snapshot_file`).
pub fn encode(kv: &KvState) -> io::Result<Bytes> {
    let body_len: usize = kv.slots().map(|s| s.bytes().len() + 3).sum::<usize>() + 16;
    let mut out = Vec::with_capacity(body_len + HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 4]);
    let crc = write_body(kv, &mut out)?;
    out[8..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(Bytes::from(out))
}

/// Write the body: the cluster id (varint length + 1, 0 for none) followed by every record's
/// packed bytes in key order, each prefixed by its varint length (the in-memory layout, so
/// encoding is a copy). Returns the body's CRC-32, which belongs in the header.
pub(crate) fn write_body(kv: &KvState, out: impl Write) -> io::Result<u32> {
    let mut out = Crc { inner: out, hasher: crc32fast::Hasher::new() };
    let mut len = Vec::with_capacity(10);
    match kv.cluster_id() {
        Some(id) => {
            put_varint(&mut len, id.len() as u64 + 1);
            out.write_all(&len)?;
            out.write_all(id.as_bytes())?;
        }
        None => out.write_all(&[0])?,
    }
    for slot in kv.slots() {
        len.clear();
        put_varint(&mut len, slot.bytes().len() as u64);
        out.write_all(&len)?;
        out.write_all(slot.bytes())?;
    }
    Ok(out.hasher.finalize())
}

pub fn decode(data: &[u8]) -> io::Result<KvState> {
    decode_from(data)
}

/// Decode snapshot data read from `r`, checking its checksum and record order.
pub fn decode_from(r: impl Read) -> io::Result<KvState> {
    let mut slots = Vec::new();
    match read_data(r, |slot| slots.push(slot))? {
        Layout::Current { cluster_id } => Ok(KvState::from_slots(cluster_id, slots)),
        Layout::V1(v1) => Ok(KvState::from_parts(v1.cluster_id, v1.records)),
    }
}

/// Check snapshot data read from `r` as decoding would, without keeping the records.
pub fn verify_from(r: impl Read) -> io::Result<()> {
    read_data(r, drop).map(|_| ())
}

/// Check the magic and checksum of data read from `r`, without parsing the records.
pub fn verify_checksum(r: impl Read) -> io::Result<()> {
    let mut r = BufReader::with_capacity(READ_BUFFER, r);
    let expected = read_header(&mut r)?.1;
    let mut body = Crc { inner: r, hasher: crc32fast::Hasher::new() };
    io::copy(&mut body, &mut io::sink())?;
    check_crc(body.hasher.finalize(), expected)
}

const READ_BUFFER: usize = 64 * 1024;

enum Layout {
    Current { cluster_id: Option<String> },
    V1(BodyV1),
}

/// Magic and expected checksum.
fn read_header(r: &mut impl Read) -> io::Result<([u8; 8], u32)> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header).map_err(|_| invalid("truncated header"))?;
    let magic: [u8; 8] = header[..8].try_into().map_err(|_| invalid("bad magic"))?;
    if &magic != MAGIC && &magic != MAGIC_V1 {
        return Err(invalid("bad magic"));
    }
    Ok((magic, u32::from_le_bytes([header[8], header[9], header[10], header[11]])))
}

fn check_crc(actual: u32, expected: u32) -> io::Result<()> {
    if actual == expected { Ok(()) } else { Err(invalid("checksum mismatch")) }
}

/// Read snapshot data, handing each record to `on_slot` in key order. The checksum is checked
/// at the end: a caller keeps nothing it was given unless this succeeds.
fn read_data(r: impl Read, mut on_slot: impl FnMut(Slot)) -> io::Result<Layout> {
    let mut r = BufReader::with_capacity(READ_BUFFER, r);
    let (magic, expected) = read_header(&mut r)?;
    let mut r = Crc { inner: r, hasher: crc32fast::Hasher::new() };
    if &magic == MAGIC_V1 {
        let mut body = Vec::new();
        r.read_to_end(&mut body)?;
        check_crc(r.hasher.finalize(), expected)?;
        return Ok(Layout::V1(codec::decode(&body)?));
    }
    let cluster_id = match read_varint(&mut r)?.ok_or_else(|| invalid("cluster id length"))? {
        0 => None,
        n => {
            let id = read_exactly(&mut r, n - 1, Vec::new()).map_err(|_| invalid("cluster id"))?;
            Some(String::from_utf8(id).map_err(|_| invalid("cluster id is not UTF-8"))?)
        }
    };
    let (mut buf, mut last_key) = (Vec::new(), None::<Vec<u8>>);
    while let Some(len) = read_varint(&mut r)? {
        buf = read_exactly(&mut r, len, buf).map_err(|_| invalid("record truncated"))?;
        let slot = Slot::parse(&buf).map_err(invalid)?;
        match &mut last_key {
            Some(last) if last.as_slice() >= slot.key() => return Err(invalid("records out of key order")),
            Some(last) => {
                last.clear();
                last.extend_from_slice(slot.key());
            }
            None => last_key = Some(slot.key().to_vec()),
        }
        on_slot(slot);
    }
    check_crc(r.hasher.finalize(), expected)?;
    Ok(Layout::Current { cluster_id })
}

/// A varint, or `None` at the very end of the data.
fn read_varint(r: &mut impl BufRead) -> io::Result<Option<u64>> {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = match r.fill_buf()?.first() {
            Some(&b) => b,
            None if i == 0 => return Ok(None),
            None => return Err(invalid("truncated length")),
        };
        r.consume(1);
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some(v));
        }
    }
    Err(invalid("overlong length"))
}

/// Exactly `len` bytes into `buf` (reused), growing it only as the bytes arrive, so a damaged
/// length cannot make it allocate more than the data holds.
fn read_exactly(r: &mut impl Read, len: u64, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    buf.clear();
    r.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 == len { Ok(buf) } else { Err(io::ErrorKind::UnexpectedEof.into()) }
}

/// A reader or writer that hashes what passes through it.
struct Crc<T> {
    inner: T,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Crc<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            self.hasher.update(&buf[..n.min(buf.len())]);
        }
        self.inner.consume(n);
    }
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

    /// A reader that hands out one byte per call, as a slow stream might.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(out)) => {
                    *out = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn data_read_a_byte_at_a_time_decodes_the_same() {
        let kv = sample();
        let data = encode(&kv).unwrap();
        assert_eq!(decode_from(Trickle(&data)).unwrap(), kv);
        verify_from(Trickle(&data)).unwrap();
        verify_checksum(Trickle(&data)).unwrap();
        assert!(verify_from(Trickle(&data[..data.len() - 1])).is_err());
    }

    #[test]
    fn a_damaged_record_length_is_refused_without_a_huge_allocation() {
        // The body claims a record of 2^62 bytes and ends at once.
        let mut body = vec![0u8];
        put_varint(&mut body, 1 << 62);
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        data.extend_from_slice(&body);
        assert!(decode(&data).is_err());
    }
}
