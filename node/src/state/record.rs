//! How one stored key is held in memory: key, metadata and value packed into a single
//! allocation (a [`Slot`]), so a key costs its bytes plus a few bytes of varint metadata and one
//! pointer in the ordered index, instead of a string, a shared buffer and a wide struct.
//!
//! Layout of a slot (all integers LEB128 varints):
//!
//! ```text
//! key_len key flags create_revision mod_revision version [ct_len ct] [expires_at_ms] value
//! ```
//!
//! `flags` bit 0: a content type follows; bit 1: an expiry deadline follows. The value is the
//! rest of the slot. The same bytes are what snapshots store, so a snapshot is the state as is.

use std::borrow::Borrow;
use std::cmp::Ordering;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

const HAS_CONTENT_TYPE: u8 = 1;
const HAS_EXPIRY: u8 = 2;

/// A stored record, owned (what scans and snapshot installs hand around).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRecord {
    pub value: Bytes,
    pub content_type: Option<String>,
    /// Revision of the write that created the key.
    pub create_revision: u64,
    /// Revision of the last write to the key.
    pub mod_revision: u64,
    /// Number of writes since the key was created (1 for a new key).
    pub version: u64,
    /// Deadline in ms since the Unix epoch (the leader's clock), if the key has a TTL.
    pub expires_at_ms: Option<u64>,
}

/// A stored record, borrowed from its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
    pub content_type: Option<&'a str>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    pub expires_at_ms: Option<u64>,
}

impl RecordRef<'_> {
    /// True when the key's TTL has run out at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// Remaining time to live in whole seconds (rounded up), if the key has a TTL.
    pub fn ttl_seconds(&self, now_ms: u64) -> Option<u64> {
        self.expires_at_ms.map(|at| at.saturating_sub(now_ms).div_ceil(1000))
    }

    /// Bytes counted for the `ferrokv_state_bytes` gauge: key, value, content type and a fixed
    /// allowance for metadata and indexing.
    pub fn approx_bytes(&self) -> u64 {
        (self.key.len() + self.value.len() + self.content_type.map_or(0, str::len) + 40) as u64
    }

    pub fn to_record(&self) -> KvRecord {
        KvRecord {
            value: Bytes::copy_from_slice(self.value),
            content_type: self.content_type.map(String::from),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

impl KvRecord {
    pub fn as_ref<'a>(&'a self, key: &'a str) -> RecordRef<'a> {
        RecordRef {
            key,
            value: &self.value,
            content_type: self.content_type.as_deref(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// Why bytes are not a valid slot (a damaged snapshot).
#[derive(Debug, thiserror::Error)]
#[error("malformed record: {0}")]
pub struct MalformedRecord(&'static str);

/// One key and its record in a single allocation. Ordered, compared and borrowed by key only,
/// so a `BTreeSet<Slot>` is a map from key to record that can be searched with `&[u8]`.
#[derive(Clone)]
pub struct Slot(Box<[u8]>);

impl Slot {
    pub fn pack(r: &RecordRef<'_>) -> Slot {
        // Exactly sized, so the boxed slice needs no shrinking reallocation.
        let len = varint_len(r.key.len() as u64)
            + r.key.len()
            + 1
            + varint_len(r.create_revision)
            + varint_len(r.mod_revision)
            + varint_len(r.version)
            + r.content_type.map_or(0, |ct| varint_len(ct.len() as u64) + ct.len())
            + r.expires_at_ms.map_or(0, varint_len)
            + r.value.len();
        let mut out = Vec::with_capacity(len);
        put_varint(&mut out, r.key.len() as u64);
        out.extend_from_slice(r.key.as_bytes());
        let flags = if r.content_type.is_some() { HAS_CONTENT_TYPE } else { 0 }
            | if r.expires_at_ms.is_some() { HAS_EXPIRY } else { 0 };
        out.push(flags);
        put_varint(&mut out, r.create_revision);
        put_varint(&mut out, r.mod_revision);
        put_varint(&mut out, r.version);
        if let Some(ct) = r.content_type {
            put_varint(&mut out, ct.len() as u64);
            out.extend_from_slice(ct.as_bytes());
        }
        if let Some(at) = r.expires_at_ms {
            put_varint(&mut out, at);
        }
        out.extend_from_slice(r.value);
        Slot(out.into_boxed_slice())
    }

    /// A slot from untrusted bytes (a snapshot), checked to decode completely.
    pub fn parse(bytes: &[u8]) -> Result<Slot, MalformedRecord> {
        decode(bytes)?;
        Ok(Slot(bytes.into()))
    }

    /// The packed bytes (what snapshots store).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key: what every comparison in the ordered index reads, so a key shorter than 128
    /// bytes (a one-byte length) skips the general varint decoding.
    pub fn key(&self) -> &[u8] {
        if let Some(&len) = self.0.first()
            && len < 0x80
        {
            return self.0.get(1..1 + usize::from(len)).unwrap_or(&[]);
        }
        let mut r = Reader(&self.0);
        let len = r.varint().unwrap_or(0);
        r.take(len).unwrap_or(&[])
    }

    pub fn view(&self) -> RecordRef<'_> {
        // A slot is only ever built by `pack` or by `parse`, which checked that it decodes.
        decode(&self.0).unwrap_or(RecordRef {
            key: "",
            value: &[],
            content_type: None,
            create_revision: 0,
            mod_revision: 0,
            version: 0,
            expires_at_ms: None,
        })
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.view().fmt(f)
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Slot {}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Slot {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(other.key())
    }
}

impl Borrow<[u8]> for Slot {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

fn decode(bytes: &[u8]) -> Result<RecordRef<'_>, MalformedRecord> {
    let mut r = Reader(bytes);
    let key_len = r.varint().ok_or(MalformedRecord("key length"))?;
    let key = r.take(key_len).ok_or(MalformedRecord("key"))?;
    let key = std::str::from_utf8(key).map_err(|_| MalformedRecord("key is not UTF-8"))?;
    let flags = r.take(1).and_then(|f| f.first().copied()).ok_or(MalformedRecord("flags"))?;
    if flags & !(HAS_CONTENT_TYPE | HAS_EXPIRY) != 0 {
        return Err(MalformedRecord("unknown flags"));
    }
    let create_revision = r.varint().ok_or(MalformedRecord("create revision"))?;
    let mod_revision = r.varint().ok_or(MalformedRecord("mod revision"))?;
    let version = r.varint().ok_or(MalformedRecord("version"))?;
    let content_type = if flags & HAS_CONTENT_TYPE != 0 {
        let len = r.varint().ok_or(MalformedRecord("content type length"))?;
        let ct = r.take(len).ok_or(MalformedRecord("content type"))?;
        Some(std::str::from_utf8(ct).map_err(|_| MalformedRecord("content type is not UTF-8"))?)
    } else {
        None
    };
    let expires_at_ms = if flags & HAS_EXPIRY != 0 { Some(r.varint().ok_or(MalformedRecord("expiry"))?) } else { None };
    Ok(RecordRef { key, value: r.0, content_type, create_revision, mod_revision, version, expires_at_ms })
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over bytes; every read is checked.
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for (i, b) in self.0.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Some(v);
            }
        }
        None
    }

    pub fn take(&mut self, len: u64) -> Option<&'a [u8]> {
        let len = usize::try_from(len).ok().filter(|&l| l <= self.0.len())?;
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(key: &'a str, value: &'a [u8]) -> RecordRef<'a> {
        RecordRef {
            key,
            value,
            content_type: None,
            create_revision: 3,
            mod_revision: 300,
            version: 2,
            expires_at_ms: None,
        }
    }

    #[test]
    fn slots_round_trip_every_field() {
        let plain = sample("k/1", b"value");
        let full = RecordRef {
            content_type: Some("text/plain"),
            expires_at_ms: Some(u64::MAX),
            create_revision: u64::MAX,
            ..sample("", b"")
        };
        let long_key = "k".repeat(200);
        for r in [plain, full, sample("ключ", &[0u8; 300]), sample(&long_key, b"v"), sample(&long_key[..127], b"")]
        {
            let slot = Slot::pack(&r);
            assert_eq!(slot.view(), r);
            assert_eq!(slot.key(), r.key.as_bytes());
            assert_eq!(Slot::parse(slot.bytes()).unwrap().view(), r);
        }
    }

    #[test]
    fn varint_lengths_match_encodings() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(Reader(&out).varint(), Some(v));
        }
    }

    #[test]
    fn a_small_record_costs_little_more_than_its_bytes() {
        let slot = Slot::pack(&sample("bench/000001", &[7u8; 100]));
        assert!(slot.bytes().len() <= 12 + 100 + 8, "{} bytes", slot.bytes().len());
    }

    #[test]
    fn damaged_bytes_are_rejected() {
        let good = Slot::pack(&RecordRef { content_type: Some("a/b"), ..sample("key", b"v") });
        let bytes = good.bytes();
        // Every truncation that cuts into the metadata fails; cutting the value is just a shorter value.
        let meta_end = bytes.len() - 1;
        for cut in 0..meta_end {
            assert!(Slot::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Slot::parse(&[1, 0xff, 0]).is_err(), "key not UTF-8");
        assert!(Slot::parse(&[0, 0x80, 1, 1, 1]).is_err(), "unknown flag");
        assert!(Slot::parse(&[0xff; 11]).is_err(), "overlong varint");
    }

    #[test]
    fn slots_order_and_compare_by_key_only() {
        let a = Slot::pack(&sample("a", b"2"));
        let a2 = Slot::pack(&sample("a", b"1"));
        let b = Slot::pack(&sample("b", b"0"));
        assert!(a < b);
        assert_eq!(a, a2);
        let set: std::collections::BTreeSet<Slot> = [b, a].into_iter().collect();
        assert!(set.contains(b"a".as_slice()));
        assert!(!set.contains(b"c".as_slice()));
    }
}
