//! The read-index floor of a leadership that survives a restart.
//!
//! A node whose stored vote names itself as leader comes back, after a restart, as the leader
//! of that same term, without an election. openraft then takes the first entry of that term
//! (already in the log) as its blank entry, so the read index it gives out is the larger of
//! that entry and the committed id this node read back from its log store. That committed id
//! may be older than what was acknowledged before the restart (the log store does not sync
//! each commit), and a read index built on it could miss an acknowledged write.
//!
//! Every write acknowledged in that term is in the log this node restarted with (a leader only
//! appends to its own log in its term), so a read index of that leadership is raised to the
//! last entry of that log: the read then waits until the leader has committed and applied it,
//! which it cannot do without a majority. Leaderships won by an election append a blank entry
//! after the whole log and are not affected.

use openraft::vote::RaftLeaderId as _;

use crate::types::LogId;
use crate::types::RaftId;
use crate::types::Vote;

/// A leadership this node may resume on start-up, and the last entry of its log then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumedLeadership {
    last_log_id: LogId,
}

impl ResumedLeadership {
    /// What `raft_id` may resume, given the vote and the last log id it starts with: nothing
    /// when the vote names another node or the log is empty.
    pub fn at_startup(raft_id: RaftId, vote: Option<&Vote>, last_log_id: Option<LogId>) -> Option<Self> {
        let vote = vote?;
        let last_log_id = last_log_id?;
        let leader = vote.leader_id();
        // Only a leader's own entries can follow its first entry of the term; a log whose
        // last entry is of another leadership has no entry of this one to reuse.
        (*leader.node_id() == raft_id && *last_log_id.committed_leader_id() == leader.to_committed())
            .then_some(ResumedLeadership { last_log_id })
    }

    /// The read index to serve with, for a read index `read` that openraft gave: raised to the
    /// log this node restarted with when `read` belongs to the resumed leadership.
    pub fn floor(resumed: Option<&Self>, read: LogId) -> LogId {
        match resumed {
            Some(r) if read.committed_leader_id() == r.last_log_id.committed_leader_id() && read < r.last_log_id => {
                r.last_log_id
            }
            _ => read,
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderIdExt as _;

    use super::*;

    fn lid(term: u64, node: RaftId, index: u64) -> LogId {
        LogId::new(openraft::alias::LeaderIdOf::<crate::types::TypeConfig>::new_committed(term, node), index)
    }

    #[test]
    fn a_restarted_leader_reads_at_least_up_to_its_last_entry() {
        let vote = Vote::new_committed(3, 7);
        let resumed = ResumedLeadership::at_startup(7, Some(&vote), Some(lid(3, 7, 40)));
        assert!(resumed.is_some());
        // openraft's read index is the reused first entry of term 3 (or an older committed id).
        assert_eq!(ResumedLeadership::floor(resumed.as_ref(), lid(3, 7, 31)), lid(3, 7, 40));
        // Once the leader has committed past the restart log, its own read index stands.
        assert_eq!(ResumedLeadership::floor(resumed.as_ref(), lid(3, 7, 45)), lid(3, 7, 45));
    }

    #[test]
    fn a_later_leadership_is_not_raised() {
        let vote = Vote::new_committed(3, 7);
        let resumed = ResumedLeadership::at_startup(7, Some(&vote), Some(lid(3, 7, 40)));
        // Term 5, won by an election after the restart: its blank entry follows the whole log.
        assert_eq!(ResumedLeadership::floor(resumed.as_ref(), lid(5, 7, 12)), lid(5, 7, 12));
    }

    #[test]
    fn nothing_is_resumed_without_an_own_leadership_in_the_log() {
        // The vote names another node.
        assert_eq!(ResumedLeadership::at_startup(7, Some(&Vote::new_committed(3, 2)), Some(lid(3, 2, 40))), None);
        // The node voted for itself but has no entry of that term: an election will follow.
        assert_eq!(ResumedLeadership::at_startup(7, Some(&Vote::new(4, 7)), Some(lid(3, 2, 40))), None);
        // No vote or no log at all.
        assert_eq!(ResumedLeadership::at_startup(7, None, Some(lid(3, 7, 40))), None);
        assert_eq!(ResumedLeadership::at_startup(7, Some(&Vote::new_committed(3, 7)), None), None);
        assert_eq!(ResumedLeadership::floor(None, lid(3, 7, 1)), lid(3, 7, 1));
    }
}
