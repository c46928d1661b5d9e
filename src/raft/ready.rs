//! `Ready`: everything the driver must persist, send and apply, and `advance`, the
//! driver's acknowledgement that it did. See the module docs of `raft` for the loop.

use super::message::*;
use super::{RaftGroup, Role};

/// Volatile state that changed; not persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: Option<NodeId>,
    pub role: Role,
}

/// A confirmed read: serve the read tagged `context` once applied >= `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub context: u64,
    pub index: Index,
}

/// What the driver must do next. Every field MUST be handled, in this order:
/// 1. send `messages` (they do not depend on this Ready being durable);
/// 2. persist `snapshot` (if any: also reset the state machine to it), then `entries`
///    (a run starting at index i replaces persisted entries >= i), then `hard_state`;
///    make them durable (fsync);
/// 3. send `persisted_messages` (they acknowledge or rely on durable state);
/// 4. apply `committed_entries` in order; serve `read_states` once applied >= index;
/// 5. `advance(ready)`. Do not call `ready()` again before that.
///
/// A Ready with no `snapshot`, `entries` or `hard_state` needs no fsync: its
/// `persisted_messages` may go at once. Nor does one whose `hard_state` differs from
/// the last only in `commit` (nothing sent relies on a durable commit index). `committed_entries` never include an entry
/// not yet written locally (committed, so durable on a majority); a `snapshot` comes with no `committed_entries` (the
/// entries after it come in later Readies).
#[derive(Debug, Default)]
pub struct Ready {
    /// Increases by one with each Ready of this group.
    pub number: u64,
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    /// Committed and locally durable entries, to apply in order.
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

impl RaftGroup {
    pub fn has_ready(&self) -> bool {
        if self.ready_outstanding {
            return false;
        }
        self.soft_state() != self.prev_soft_state
            || self.hard_state() != self.prev_hard_state
            || !self.log.unstable.next_entries().is_empty()
            || self.log.unstable.next_snapshot().is_some()
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.read_states.is_empty()
            || self.log.has_next_committed_entries()
            || (self.role == Role::Leader && self.reads.has_unsent())
    }

    /// Everything pending since the last Ready.
    ///
    /// # Panics
    /// If the previous Ready was not advanced.
    pub fn ready(&mut self) -> Ready {
        assert!(
            !self.ready_outstanding,
            "{}: ready() called again before advance() of Ready {}",
            self.id, self.ready_number
        );
        if std::mem::take(&mut self.append_pending) && self.role == Role::Leader {
            self.send_new_entries();
        }
        if self.role == Role::Leader && self.reads.has_unsent() {
            self.broadcast_heartbeat();
        }
        self.ready_number += 1;
        self.ready_outstanding = true;
        let soft_state = self.soft_state();
        let hard_state = self.hard_state();
        let ready = Ready {
            number: self.ready_number,
            soft_state: (soft_state != self.prev_soft_state).then_some(soft_state),
            hard_state: (hard_state != self.prev_hard_state).then_some(hard_state),
            entries: self.log.unstable.next_entries().to_vec(),
            snapshot: self.log.unstable.next_snapshot().cloned(),
            messages: std::mem::take(&mut self.messages),
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed_entries: self.log.next_committed_entries(u64::MAX),
            read_states: std::mem::take(&mut self.read_states),
        };
        self.prev_soft_state = soft_state;
        self.prev_hard_state = hard_state;
        self.log.unstable.accept_in_progress();
        if let Some(last) = ready.committed_entries.last() {
            self.log.applying = last.index;
        }
        ready
    }

    /// The driver made `ready` durable, sent its messages and applied its entries.
    ///
    /// # Panics
    /// If `ready` is not the outstanding Ready.
    pub fn advance(&mut self, ready: Ready) {
        let written = self.advance_written(ready);
        self.advance_durable(written);
    }

    /// The first half of `advance`, for a driver that does not sync every Ready: it
    /// sent `messages`, wrote (not necessarily synced) the Ready's records after every
    /// earlier Ready's, and applied its committed entries. The next `ready()` may be
    /// taken at once. Until `advance_durable` is called with what this returns, once
    /// a sync covered the records, they do not count as durable: a leader does not
    /// count itself for the entries (Raft thesis 10.2.1: it needs its own copy only
    /// where its followers' are not a majority), and the Ready's
    /// `persisted_messages` must not have been sent.
    ///
    /// # Panics
    /// If `ready` is not the outstanding Ready.
    pub fn advance_written(&mut self, ready: Ready) -> Written {
        assert!(self.ready_outstanding, "{}: advance() without ready()", self.id);
        assert_eq!(ready.number, self.ready_number, "{}: advance() of a stale Ready", self.id);
        self.ready_outstanding = false;
        if let Some(snapshot) = &ready.snapshot {
            let index = snapshot.meta.index;
            self.log.applied = self.log.applied.max(index);
            self.log.applying = self.log.applying.max(index);
        }
        if let Some(last) = ready.entries.last() {
            self.log.unstable.written_to(last.index, last.term);
        }
        if let Some(last) = ready.committed_entries.last() {
            self.log.applied = last.index;
        }
        self.debug_check_invariants();
        Written { snapshot: ready.snapshot, entries: ready.entries, hard_state: ready.hard_state }
    }

    /// The second half of `advance`: what `written` holds is durable. Calls come in
    /// the order of the Readies.
    pub fn advance_durable(&mut self, written: Written) {
        if let Some(snapshot) = written.snapshot {
            let index = snapshot.meta.index;
            self.voters = snapshot.meta.conf_state.voters.iter().copied().collect();
            self.log.store.apply_snapshot(snapshot);
            self.log.unstable.stable_snapshot_to(index);
        }
        if let Some(last) = written.entries.last() {
            self.log.store.append(&written.entries);
            self.log.unstable.stable_to(last.index, last.term);
        }
        if let Some(hard_state) = written.hard_state {
            self.log.store.set_hard_state(hard_state);
        }
        if self.role == Role::Leader {
            self.on_leader_persisted();
        }
        self.debug_check_invariants();
    }
}

/// What a Ready asked to persist, between `advance_written` and `advance_durable`.
#[derive(Debug, Default)]
pub struct Written {
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
}

impl Written {
    /// Whether it holds nothing to persist.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}
