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
/// not yet durable locally; a `snapshot` comes with no `committed_entries` (the
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
        assert!(self.ready_outstanding, "{}: advance() without ready()", self.id);
        assert_eq!(ready.number, self.ready_number, "{}: advance() of a stale Ready", self.id);
        self.ready_outstanding = false;
        if let Some(snapshot) = ready.snapshot {
            let index = snapshot.meta.index;
            self.log.store.apply_snapshot(snapshot);
            self.log.unstable.stable_snapshot_to(index);
            self.log.applied = self.log.applied.max(index);
            self.log.applying = self.log.applying.max(index);
        }
        if let Some(last) = ready.entries.last() {
            self.log.store.append(&ready.entries);
            self.log.unstable.stable_to(last.index, last.term);
        }
        if let Some(hard_state) = ready.hard_state {
            self.log.store.set_hard_state(hard_state);
        }
        if let Some(last) = ready.committed_entries.last() {
            self.log.applied = last.index;
        }
        if self.role == Role::Leader {
            self.on_leader_persisted();
        }
        self.debug_check_invariants();
    }
}
