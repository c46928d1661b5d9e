//! `Progress`: the leader's view of one follower (Raft paper nextIndex/matchIndex),
//! with flow control states as in etcd's tracker:
//! - Probe: one Append in flight until a response or heartbeat response;
//! - Replicate: pipelined, `next` advanced optimistically, bounded by `Inflights`;
//! - Snapshot: a snapshot transfer is in progress; no Appends.

use super::inflights::Inflights;
use super::message::*;
use super::tick_rate::TickRate;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot,
}

/// A snapshot being sent in chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotTransfer {
    pub index: Index,
    /// Bytes acknowledged by the follower.
    pub acked: u64,
    /// Bytes sent so far (acked <= sent).
    pub sent: u64,
    /// The chunk with `done` was sent (sent == total length).
    pub all_sent: bool,
    /// Ticks since the follower last acknowledged a chunk.
    pub idle_ticks: u32,
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known replicated (and durable) on the follower.
    pub matched: Index,
    /// Next index to send; matched < next.
    pub next: Index,
    pub state: ProgressState,
    /// Probe state: an Append is in flight, wait for its answer.
    pub probe_sent: bool,
    pub inflights: Inflights,
    pub snapshot: Option<SnapshotTransfer>,
    /// Heard from since the last check-quorum.
    pub recent_active: bool,
    /// Highest heartbeat round the follower acknowledged (0: none this term).
    pub acked_round: u64,
    /// Leader tick at which that acknowledged heartbeat was sent (lease start).
    pub acked_send_tick: Option<u64>,
    /// The follower's tick rate relative to ours (the lease drift guard).
    pub tick_rate: TickRate,
}

impl Progress {
    pub fn new(next: Index, max_inflight: usize) -> Progress {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_inflight),
            snapshot: None,
            recent_active: true,
            acked_round: 0,
            acked_send_tick: None,
            tick_rate: TickRate::default(),
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.state = state;
        self.probe_sent = false;
        self.snapshot = None;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        let after_snapshot = self.snapshot.map(|s| s.index);
        self.reset_state(ProgressState::Probe);
        self.next = match after_snapshot {
            Some(index) => self.matched.max(index) + 1,
            None => self.matched + 1,
        };
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    pub fn become_snapshot(&mut self, index: Index) {
        self.reset_state(ProgressState::Snapshot);
        self.snapshot =
            Some(SnapshotTransfer { index, acked: 0, sent: 0, all_sent: false, idle_ticks: 0 });
    }

    /// The follower acknowledged entries up to `index`. Returns whether it was news.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        updated
    }

    /// Replicate state: entries up to `last` were just sent.
    pub fn optimistic_update(&mut self, last: Index) {
        self.next = last + 1;
    }

    /// The follower rejected an Append at `rejected`; `match_hint` is the highest index
    /// that may match. Returns false if the rejection is stale.
    pub fn maybe_decrease_to(&mut self, rejected: Index, match_hint: Index) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next == 0 || self.next - 1 != rejected {
            return false;
        }
        self.next = rejected.min(match_hint + 1).max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    /// Whether no Append may be sent now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_decreases_only_for_the_outstanding_probe() {
        let mut progress = Progress::new(10, 4);
        progress.probe_sent = true;
        assert!(!progress.maybe_decrease_to(5, 3), "stale rejection");
        assert!(progress.maybe_decrease_to(9, 3));
        assert_eq!(progress.next, 4);
        assert!(!progress.is_paused());
    }

    #[test]
    fn replicate_pauses_when_inflights_full() {
        let mut progress = Progress::new(1, 2);
        progress.become_replicate();
        for last in [1, 2] {
            progress.optimistic_update(last);
            progress.inflights.add(last);
        }
        assert!(progress.is_paused());
        assert!(progress.maybe_update(1));
        progress.inflights.free_to(1);
        assert!(!progress.is_paused());
        assert_eq!(progress.next, 3);
    }
}
