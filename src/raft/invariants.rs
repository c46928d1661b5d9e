//! Whole-state checks run after every input in debug builds (DESIGN section 8).

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
        let (id, term) = (self.id, self.term);
        let log = &self.log;
        assert!(
            log.committed >= self.checked_commit,
            "{id} t{term}: commit decreased {} -> {}",
            self.checked_commit,
            log.committed
        );
        assert!(
            log.applied <= log.applying,
            "{id} t{term}: applied {} > applying {}",
            log.applied,
            log.applying
        );
        assert!(
            log.applying <= log.committed,
            "{id} t{term}: applying {} > commit {}",
            log.applying,
            log.committed
        );
        assert!(
            log.committed <= log.last_index(),
            "{id} t{term}: commit {} > last {}",
            log.committed,
            log.last_index()
        );
        assert!(
            log.first_index() <= log.last_index() + 1,
            "{id} t{term}: first {} > last+1",
            log.first_index()
        );
        let durable = log.store.hard_state();
        assert!(
            durable.term <= term,
            "{id} t{term}: durable term {} ahead",
            durable.term
        );
        if durable.term == term && durable.vote.is_some() {
            assert_eq!(
                durable.vote, self.vote,
                "{id} t{term}: vote changed within a term"
            );
        }
        match self.role {
            Role::Leader => {
                assert_eq!(
                    self.leader_id,
                    Some(id),
                    "{id} t{term}: leader does not know itself"
                );
                assert_eq!(
                    self.vote,
                    Some(id),
                    "{id} t{term}: leader did not vote for itself"
                );
                let own = &self.progress[&id];
                assert!(
                    own.matched <= log.persisted_index(),
                    "{id} t{term}: own match beyond persisted"
                );
            }
            Role::Candidate => assert_eq!(self.vote, Some(id), "{id} t{term}: candidate vote"),
            Role::Follower | Role::PreCandidate => {
                assert!(
                    self.progress.is_empty(),
                    "{id} t{term}: non-leader keeps progress"
                )
            }
        }
        self.checked_commit = log.committed;
    }
}
