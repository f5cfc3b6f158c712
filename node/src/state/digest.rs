//! The state digest: a 128-bit fingerprint of a replica's whole key-value state, kept up to date
//! on every change in O(1), so replicas can be compared without shipping or rescanning data.
//!
//! The digest is the wrapping sum of a 128-bit XXH3 hash of every record (key, value, content
//! type, revisions, version, deadline) plus a hash of the cluster id. A sum does not depend on the
//! order keys were written in, and removing a record subtracts exactly what inserting it added, so
//! two replicas that applied the same log to the same point hold equal digests, and a replica
//! whose state differs in any record (almost surely) does not.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;
use xxhash_rust::xxh3::Xxh3;

use super::RecordRef;

/// A state fingerprint. Printed as 32 hex digits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest(pub u128);

impl Digest {
    pub fn add(&mut self, h: u128) {
        self.0 = self.0.wrapping_add(h);
    }

    pub fn sub(&mut self, h: u128) {
        self.0 = self.0.wrapping_sub(h);
    }

    /// The digest combined with the cluster id (which lives outside the record map).
    pub fn with_cluster_id(self, cluster_id: Option<&str>) -> Digest {
        let mut h = Xxh3::new();
        h.update(b"cluster_id");
        field(&mut h, cluster_id.map(str::as_bytes));
        Digest(self.0.wrapping_add(h.digest128()))
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(b: &[u8]) -> Option<Digest> {
        <[u8; 16]>::try_from(b).ok().map(|a| Digest(u128::from_be_bytes(a)))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The hash of one record. Every field is length- or presence-prefixed so that no two
/// different records feed the hasher the same bytes.
pub fn record_hash(rec: &RecordRef<'_>) -> u128 {
    let mut h = Xxh3::new();
    field(&mut h, Some(rec.key.as_bytes()));
    field(&mut h, Some(rec.value));
    field(&mut h, rec.content_type.map(str::as_bytes));
    h.update(&rec.create_revision.to_le_bytes());
    h.update(&rec.mod_revision.to_le_bytes());
    h.update(&rec.version.to_le_bytes());
    match rec.expires_at_ms {
        Some(at) => {
            h.update(&[1]);
            h.update(&at.to_le_bytes());
        }
        None => h.update(&[0]),
    }
    h.digest128()
}

fn field(h: &mut Xxh3, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            h.update(&[1]);
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        }
        None => h.update(&[0]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(key: &'a str, value: &'a str, rev: u64) -> RecordRef<'a> {
        RecordRef {
            key,
            value: value.as_bytes(),
            content_type: None,
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            expires_at_ms: None,
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = rec("k", "v", 1);
        let h = record_hash(&base);
        assert_ne!(h, record_hash(&RecordRef { key: "k2", ..base }));
        assert_ne!(h, record_hash(&rec("k", "w", 1)));
        assert_ne!(h, record_hash(&RecordRef { content_type: Some(""), ..base }));
        assert_ne!(h, record_hash(&RecordRef { mod_revision: 2, ..base }));
        assert_ne!(h, record_hash(&RecordRef { create_revision: 2, ..base }));
        assert_ne!(h, record_hash(&RecordRef { version: 2, ..base }));
        assert_ne!(h, record_hash(&RecordRef { expires_at_ms: Some(0), ..base }));
        // Field boundaries are unambiguous: ("ab","c") differs from ("a","bc").
        assert_ne!(record_hash(&rec("ab", "c", 1)), record_hash(&rec("a", "bc", 1)));
    }

    #[test]
    fn sum_is_order_independent_and_removal_is_exact() {
        let (a, b) = (record_hash(&rec("a", "1", 1)), record_hash(&rec("b", "2", 2)));
        let (mut x, mut y) = (Digest::default(), Digest::default());
        x.add(a);
        x.add(b);
        y.add(b);
        y.add(a);
        assert_eq!(x, y);
        x.sub(a);
        x.sub(b);
        assert_eq!(x, Digest::default());
    }

    #[test]
    fn bytes_round_trip_and_cluster_id_counts() {
        let d = Digest(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(Digest::from_bytes(&d.to_bytes()), Some(d));
        assert_eq!(Digest::from_bytes(&[0; 3]), None);
        assert_eq!(d.to_string(), "0123456789abcdef0011223344556677");
        assert_ne!(d.with_cluster_id(None), d.with_cluster_id(Some("")));
    }
}
