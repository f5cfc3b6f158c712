//! Raft identities of nodes.
//!
//! A node keeps its operator-facing `--node-id` for life, but the Raft member id (one id per
//! log) is never reused: openraft requires that a node starting from an empty log never takes
//! an id a voter once had, or it could replay an old membership and form a second quorum.
//!
//! - Members of the initial cluster use their node id as Raft id.
//! - Every node added later — a new node, or a node whose data dir was wiped — gets a Raft id
//!   allocated by the cluster's own log: `JOINED_ID_BASE + index` of a no-op entry. Log
//!   indexes never repeat, so neither do these ids, and they cannot collide with node ids,
//!   which are below `JOINED_ID_BASE`.
//!
//! The identity is stored in `<data-dir>/node.json`. A data dir that has it is a restart.

use std::fs;
use std::io;
use std::io::Write;
use std::path::Path;

use serde::Deserialize;
use serde::Serialize;

use crate::types::RaftId;

/// Raft ids at or above this value were allocated by the log; node ids stay below it.
pub const JOINED_ID_BASE: u64 = 1 << 32;

const FILE: &str = "node.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: u64,
    pub raft_id: RaftId,
}

impl Identity {
    pub fn load(dir: &Path) -> io::Result<Option<Identity>> {
        match fs::read(dir.join(FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{FILE}: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write atomically (temp file, fsync, rename, fsync dir).
    pub fn store(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{FILE}.tmp"));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).map_err(io::Error::other)?)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, dir.join(FILE))?;
        fs::File::open(dir)?.sync_all()
    }
}

/// True when `dir` holds anything (a data dir with content is never bootstrapped afresh).
pub fn dir_has_content(dir: &Path) -> io::Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_some()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Identity::load(dir.path()).unwrap(), None);
        assert!(!dir_has_content(dir.path()).unwrap());
        let id = Identity { node_id: 3, raft_id: JOINED_ID_BASE + 17 };
        id.store(dir.path()).unwrap();
        assert_eq!(Identity::load(dir.path()).unwrap(), Some(id));
        assert!(dir_has_content(dir.path()).unwrap());
    }
}
