//! Whole-state checks run after every input in debug builds (DESIGN section 8):
//! commit never decreases; applied <= committed <= last index; the durable term and
//! vote never run ahead of or contradict the in-memory ones; role-specific state.
//! (A leader never truncating its own log is asserted in `RaftLog::append`.)

use super::storage::Storage;
use super::{RaftGroup, Role};

impl RaftGroup {
    pub(super) fn debug_check_invariants(&mut self) {
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// # Panics
    /// If any invariant is broken; the message names the node, term and values.
    pub(super) fn check_invariants(&mut self) {
        self.check_log_invariants();
        self.check_role_invariants();
        self.checked_commit = self.log.committed;
    }

    fn check_log_invariants(&self) {
        let (id, term, log) = (self.id, self.term, &self.log);
        let (applied, applying, committed) = (log.applied, log.applying, log.committed);
        let last = log.last_index();
        let before = self.checked_commit;
        assert!(committed >= before, "{id} t{term}: commit decreased {before} -> {committed}");
        assert!(applied <= applying, "{id} t{term}: applied {applied} > applying {applying}");
        assert!(applying <= committed, "{id} t{term}: applying {applying} > commit {committed}");
        assert!(committed <= last, "{id} t{term}: commit {committed} > last index {last}");
        let first = log.first_index();
        assert!(first <= last + 1, "{id} t{term}: first index {first} > last index {last} + 1");
        assert!(committed + 1 >= first, "{id} t{term}: commit {committed} below snapshot");
        let durable = log.store.hard_state();
        assert!(durable.term <= term, "{id} t{term}: durable term {} ahead", durable.term);
        if durable.term == term && durable.vote.is_some() {
            assert_eq!(durable.vote, self.vote, "{id} t{term}: vote changed within a term");
        }
    }

    fn check_role_invariants(&self) {
        let (id, term) = (self.id, self.term);
        match self.role {
            Role::Leader => {
                assert_eq!(self.leader_id, Some(id), "{id} t{term}: leader does not know itself");
                assert_eq!(self.vote, Some(id), "{id} t{term}: leader did not vote for itself");
                let own = self.progress[&id].matched;
                let persisted = self.log.persisted_index();
                assert!(own <= persisted, "{id} t{term}: own match {own} > persisted {persisted}");
            }
            Role::Candidate => assert_eq!(self.vote, Some(id), "{id} t{term}: candidate vote"),
            Role::Follower | Role::PreCandidate => {
                assert!(self.progress.is_empty(), "{id} t{term}: non-leader keeps progress");
                assert_ne!(self.leader_id, Some(id), "{id} t{term}: non-leader names itself");
            }
        }
    }
}
