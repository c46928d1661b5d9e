//! ReadIndex bookkeeping on the leader (Raft thesis 6.4): a read is answered at the
//! commit index recorded when it arrived, once a heartbeat round sent after that
//! moment is acknowledged by a quorum (so no newer leader existed then).
//!
//! ```text
//!  read_index -> waiting_commit (no entry of this term committed yet)
//!             -> unsent (index recorded; joins the next heartbeat round)
//!             -> pending (round assigned) -> confirmed when a quorum acks >= round
//! ```

use std::collections::VecDeque;

use super::message::*;

/// One read request. `from` is `None` for a local read, else the follower to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub context: u64,
    pub from: Option<NodeId>,
    pub index: Index,
    pub round: u64,
}

#[derive(Clone, Debug, Default)]
pub struct ReadIndexQueue {
    waiting_commit: Vec<ReadRequest>,
    unsent: Vec<ReadRequest>,
    pending: VecDeque<ReadRequest>,
}

impl ReadIndexQueue {
    /// A read that must wait for the leader's first commit in its term.
    pub fn wait_for_commit(&mut self, context: u64, from: Option<NodeId>) {
        self.waiting_commit.push(ReadRequest { context, from, index: 0, round: 0 });
    }

    /// The leader committed in its term: waiting reads get `committed` as index.
    pub fn release_waiting(&mut self, committed: Index) {
        for mut request in self.waiting_commit.drain(..) {
            request.index = committed;
            self.unsent.push(request);
        }
    }

    /// A read at `index` that joins the next heartbeat round.
    pub fn add(&mut self, context: u64, from: Option<NodeId>, index: Index) {
        self.unsent.push(ReadRequest { context, from, index, round: 0 });
    }

    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// A heartbeat round `round` is being sent: unsent reads ride on it.
    pub fn start_round(&mut self, round: u64) {
        for mut request in self.unsent.drain(..) {
            request.round = round;
            self.pending.push_back(request);
        }
    }

    /// A quorum acknowledged every round up to `round`: those reads are confirmed.
    pub fn confirm(&mut self, round: u64) -> Vec<ReadRequest> {
        let mut confirmed = Vec::new();
        while self.pending.front().is_some_and(|r| r.round <= round) {
            confirmed.push(self.pending.pop_front().expect("front checked"));
        }
        confirmed
    }

    pub fn is_empty(&self) -> bool {
        self.waiting_commit.is_empty() && self.unsent.is_empty() && self.pending.is_empty()
    }

    /// Leadership lost: every read is dropped (the driver retries).
    pub fn clear(&mut self) {
        *self = ReadIndexQueue::default();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting_commit.len() + self.unsent.len() + self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_confirm_in_round_order() {
        let mut queue = ReadIndexQueue::default();
        queue.wait_for_commit(1, None);
        queue.add(2, Some(NodeId(2)), 5);
        queue.start_round(7);
        queue.release_waiting(6);
        queue.start_round(8);
        assert!(queue.confirm(6).is_empty());
        let first = queue.confirm(7);
        assert_eq!(
            first,
            vec![ReadRequest { context: 2, from: Some(NodeId(2)), index: 5, round: 7 }]
        );
        let second = queue.confirm(9);
        assert_eq!(second[0].index, 6);
        assert_eq!(queue.len(), 0);
    }
}
