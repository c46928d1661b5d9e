//! Linearizable reads: ReadIndex (thesis 6.4) and leader leases (thesis 6.4.1).
//!
//! A lease starts when the leader SENT a heartbeat a quorum acknowledged: followers
//! that answered reset their election timer no earlier than that, and refuse votes
//! for `election_tick` after (leader stickiness), so no other leader can exist before
//! `send tick + election_tick`. `lease_drift_ticks` absorbs tick-rate drift.

use super::message::*;
use super::quorum;
use super::{RaftError, RaftGroup, ReadState, Role};

impl RaftGroup {
    /// A read from the local client (`from` None) or forwarded by a follower.
    pub(super) fn handle_read_request(
        &mut self,
        context: u64,
        from: Option<NodeId>,
    ) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            let Some(leader) = self.leader_id else {
                return Err(RaftError::NotLeader { leader_hint: None });
            };
            if from.is_some() {
                return Ok(()); // Not ours to answer; the asker will retry.
            }
            self.send(leader, MessageBody::ReadIndex { context });
            return Ok(());
        }
        if !self.committed_in_current_term() {
            // The commit index may lag the previous leader's until then (thesis 6.4).
            self.reads.wait_for_commit(context, from);
            return Ok(());
        }
        let index = self.log.committed;
        if self.lease_valid() || self.voters.len() == 1 {
            self.answer_read(context, from, index);
        } else {
            self.reads.add(context, from, index);
        }
        Ok(())
    }

    fn committed_in_current_term(&self) -> bool {
        self.log.term_or_zero(self.log.committed) == self.term
    }

    /// Whether the leader lease covers the current tick.
    pub(super) fn lease_valid(&self) -> bool {
        let transferring = self.lead_transferee.is_some() || self.lease_revoked;
        if !self.config.lease_read || self.role != Role::Leader || transferring {
            return false;
        }
        let sent: Vec<Option<u64>> = self.progress.values().map(|p| p.acked_send_tick).collect();
        let Some(start) = quorum::quorum_value(sent) else {
            return false;
        };
        let length = u64::from(self.config.election_tick - self.config.lease_drift_ticks);
        self.now_tick < start + length
    }

    /// Answers every read whose heartbeat round a quorum acknowledged.
    pub(super) fn confirm_reads(&mut self) {
        let rounds: Vec<Option<u64>> =
            self.progress.values().map(|p| Some(p.acked_round)).collect();
        let confirmed_round = quorum::quorum_value(rounds).unwrap_or(0);
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
