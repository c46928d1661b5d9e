//! `step`: term rules common to every message (Raft paper 5.1), then dispatch by role.
//! Each message kind has its own `handle_*`.

use super::message::*;
use super::{RaftGroup, Role};

impl RaftGroup {
    pub(super) fn step_message(&mut self, msg: Message) {
        if msg.term > self.term && !self.step_higher_term(&msg) {
            return;
        }
        if msg.term < self.term {
            self.step_lower_term(&msg);
            return;
        }
        match msg.body {
            MessageBody::PreVote { .. } | MessageBody::Vote { .. } => {
                self.handle_vote_request(&msg)
            }
            _ => match self.role {
                Role::Leader => self.step_leader(msg),
                Role::Candidate | Role::PreCandidate => self.step_candidate(msg),
                Role::Follower => self.step_follower(msg),
            },
        }
    }

    /// A message from a higher term. Returns whether to go on processing it.
    fn step_higher_term(&mut self, msg: &Message) -> bool {
        match msg.body {
            MessageBody::PreVote { .. } | MessageBody::Vote { transfer: false, .. }
                if self.in_leader_lease() =>
            {
                // Leader stickiness: a live leader exists; ignore the disruption.
                return false;
            }
            // Pre-votes never change terms; a granted pre-vote carries our next term.
            MessageBody::PreVote { .. } => return true,
            MessageBody::PreVoteResponse { reject: false } => return true,
            _ => {}
        }
        let leader = match msg.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Quiesce { .. }
            | MessageBody::Snapshot { .. } => Some(msg.from),
            _ => None,
        };
        self.become_follower(msg.term, leader);
        true
    }

    /// A message from a stale term: tell stale leaders and pre-candidates our term.
    fn step_lower_term(&mut self, msg: &Message) {
        match msg.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Quiesce { .. } => {
                // With check-quorum or pre-vote a partitioned node may never bump the
                // stale leader's term by a vote; this answer makes it step down.
                let body = MessageBody::AppendResponse {
                    reject: true,
                    index: 0,
                    hint_index: 0,
                    hint_term: 0,
                };
                self.send(msg.from, body);
            }
            MessageBody::PreVote { .. } => {
                self.send(msg.from, MessageBody::PreVoteResponse { reject: true });
            }
            _ => {}
        }
    }

    fn step_leader(&mut self, msg: Message) {
        let Some(progress) = self.progress.get_mut(&msg.from) else {
            return; // Not a voter of this group: nothing it says counts.
        };
        progress.recent_active = true;
        match msg.body {
            MessageBody::AppendResponse { .. } => self.handle_append_response(&msg),
            MessageBody::HeartbeatResponse { context, tick, incarnation } => {
                self.handle_heartbeat_response(msg.from, context, tick, incarnation)
            }
            MessageBody::SnapshotResponse { .. } => self.handle_snapshot_response(&msg),
            MessageBody::ReadIndex { context, lease } => {
                let _ = self.handle_read_request(context, Some(msg.from), lease);
            }
            _ => {}
        }
    }

    fn step_candidate(&mut self, msg: Message) {
        match msg.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Quiesce { .. }
            | MessageBody::Snapshot { .. } => {
                // A leader exists in our term (paper 5.2): return to follower.
                self.become_follower(msg.term, Some(msg.from));
                self.step_follower(msg);
            }
            MessageBody::PreVoteResponse { .. } | MessageBody::VoteResponse { .. } => {
                self.handle_vote_response(&msg)
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, msg: Message) {
        match msg.body {
            MessageBody::Append { .. } => {
                self.heard_from_leader(msg.from);
                self.handle_append(&msg);
            }
            MessageBody::Heartbeat { commit, context } => {
                self.heard_from_leader(msg.from);
                self.handle_heartbeat(msg.from, commit, context);
            }
            MessageBody::Quiesce { commit } => {
                self.heard_from_leader(msg.from);
                self.handle_quiesce(msg.from, commit);
            }
            MessageBody::Snapshot { .. } => {
                self.heard_from_leader(msg.from);
                self.handle_snapshot(msg);
            }
            MessageBody::TimeoutNow => self.hup(true),
            MessageBody::ReadIndexResponse { context, index, reject: false } => {
                self.read_states.push(super::ReadState { context, index });
            }
            _ => {}
        }
    }

    fn heard_from_leader(&mut self, leader: NodeId) {
        self.election_elapsed = 0;
        self.leader_id = Some(leader);
    }
}
