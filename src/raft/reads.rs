//! Linearizable reads: ReadIndex (thesis 6.4) and leader leases (thesis 6.4.1).
//!
//! A lease starts when the leader SENT a heartbeat a quorum acknowledged: followers
//! that answered reset their election timer no earlier than that, and refuse votes
//! for `election_tick` of their own ticks after (leader stickiness; a restarted one
//! for `election_tick` ticks after its restart), so no other leader can exist before
//! `send tick + election_tick` follower ticks. The lease lasts
//! `L = election_tick - lease_drift_ticks` leader ticks.
//!
//! # The drift bound
//!
//! Only tick RATES matter, never clock offsets. Let `E = election_tick`, `T_l` and
//! `T_f` the real periods of the leader's and a follower's ticks, `t_s` the real time
//! the lease's heartbeat left. The leader uses the lease at real time `t` while
//! `now_tick < start + L`, i.e. fewer than `L` of its ticks fell in `(t_s, t]`, so
//! `t < t_s + L * T_l` (its ticks are performed on time: the node catches them up
//! to its clock before handing a read to Raft). A follower that received the
//! heartbeat at `t_r >= t_s` grants a vote only after `E` more ticks of its own; the
//! first may come just after `t_r`, so not before `t_r + (E - 1) * T_f`. A new leader
//! needs the vote of at least one member of the lease quorum, so the lease is safe if
//!
//! ```text
//!   L * T_l <= (E - 1) * T_f    <=>    r_f / r_l <= (E - 1) / (E - lease_drift_ticks)
//! ```
//!
//! with `r = 1 / T` the tick rates: 9/8 (followers at most 12.5% faster than the
//! leader) with the defaults E = 10, lease_drift_ticks = 2. Slower followers are
//! always safe. The drift guard enforces it: the leader measures each follower's rate
//! ratio from heartbeat responses (tick_rate.rs gives an upper bound that holds
//! whatever the network delays) and counts toward the lease quorum only followers
//! whose ratio is within the bound over a full window; the leader's own
//! acknowledgement always counts. Otherwise the read takes a heartbeat round.

use super::message::*;
use super::{RaftError, RaftGroup, ReadState, Role};

impl RaftGroup {
    /// A read from the local client (`from` None) or forwarded by a follower.
    /// `lease`: the reader accepts an answer from the lease (`ReadMode::Lease`).
    pub(super) fn handle_read_request(
        &mut self,
        context: u64,
        from: Option<NodeId>,
        lease: bool,
    ) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            let Some(leader) = self.leader_id else {
                return Err(RaftError::NotLeader { leader_hint: None });
            };
            if from.is_some() {
                return Ok(()); // Not ours to answer; the asker will retry.
            }
            self.send(leader, MessageBody::ReadIndex { context, lease });
            return Ok(());
        }
        if !self.committed_in_current_term() {
            // The commit index may lag the previous leader's until then (thesis 6.4).
            self.reads.wait_for_commit(context, from);
            return Ok(());
        }
        let index = self.log.committed;
        if self.configs.current().is_single_voter(self.id) {
            self.answer_read(context, from, index);
        } else if lease && self.lease_valid() {
            self.lease_reads += 1;
            self.answer_read(context, from, index);
        } else {
            self.reads.add(context, from, index);
        }
        Ok(())
    }

    pub(super) fn committed_in_current_term(&self) -> bool {
        self.log.term_or_zero(self.log.committed) == self.term
    }

    /// Whether the leader lease covers the current tick. Only acknowledgements from
    /// followers whose measured tick rate is within the drift bound count.
    pub(super) fn lease_valid(&self) -> bool {
        let transferring = self.lead_transferee.is_some() || self.lease_revoked;
        if !self.config.lease_read || self.role != Role::Leader || transferring {
            return false;
        }
        let sent = self.quorum_of(|peer, p| {
            let counts = peer == self.id || p.tick_rate.within();
            if counts {
                p.acked_send_tick
            } else {
                None
            }
        });
        let Some(start) = sent else {
            return false;
        };
        let length = u64::from(self.config.election_tick - self.config.lease_drift_ticks);
        self.now() < start + length
    }

    /// The largest follower-to-leader tick rate ratio the lease tolerates, as
    /// (numerator, denominator): `(E - 1) / (E - lease_drift_ticks)` (module doc).
    pub(super) fn lease_rate_tolerance(&self) -> (u64, u64) {
        let election = u64::from(self.config.election_tick);
        (election - 1, election - u64::from(self.config.lease_drift_ticks))
    }

    /// Answers every read whose heartbeat round a quorum acknowledged.
    pub(super) fn confirm_reads(&mut self) {
        let confirmed_round = self.quorum_of(|_, p| Some(p.acked_round)).unwrap_or(0);
        for request in self.reads.confirm(confirmed_round) {
            self.answer_read(request.context, request.from, request.index);
        }
    }

    fn answer_read(&mut self, context: u64, from: Option<NodeId>, index: Index) {
        match from {
            None => self.read_states.push(ReadState { context, index }),
            Some(peer) => {
                let body = MessageBody::ReadIndexResponse { context, index, reject: false };
                self.send(peer, body);
            }
        }
    }
}
