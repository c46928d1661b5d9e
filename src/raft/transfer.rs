//! Leadership transfer (thesis 3.10): the leader stops taking proposals, brings the
//! target up to date, then sends TimeoutNow so it campaigns at once (skipping pre-vote
//! and leader stickiness via `Vote { transfer: true }`).

use super::message::*;
use super::{RaftGroup, Role};

impl RaftGroup {
    pub(super) fn start_transfer(&mut self, to: NodeId) {
        if self.role != Role::Leader || to == self.id || !self.membership().voters.contains(&to) {
            return;
        }
        if self.lead_transferee == Some(to) {
            return;
        }
        self.lead_transferee = Some(to);
        self.transfer_elapsed = 0;
        if !self.maybe_send_timeout_now(to) {
            self.maybe_send_append(to, true);
        }
    }

    /// Sends TimeoutNow if `to` is the transfer target and has the whole log.
    pub(super) fn maybe_send_timeout_now(&mut self, to: NodeId) -> bool {
        if self.lead_transferee != Some(to) || self.progress[&to].matched != self.log.last_index() {
            return false;
        }
        self.send(to, MessageBody::TimeoutNow);
        // Voters may now elect `to` despite stickiness, so acks of this term no longer
        // bound when another leader can appear: no lease for the rest of the term.
        self.lease_revoked = true;
        true
    }

    /// Aborts a transfer that has not completed within an election timeout.
    pub(super) fn tick_transfer(&mut self) {
        if self.lead_transferee.is_none() {
            return;
        }
        self.transfer_elapsed += 1;
        if self.transfer_elapsed >= self.config.election_tick {
            self.lead_transferee = None;
            self.transfer_elapsed = 0;
        }
    }
}
