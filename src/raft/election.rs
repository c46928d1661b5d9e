//! Leader election (Raft paper 5.2, 5.4.1; thesis 9.6 pre-vote, 6.2 check-quorum):
//! role transitions, campaigns, and vote requests and responses.

use super::message::*;
use super::progress::Progress;
use super::quorum::VoteResult;
use super::{RaftGroup, Role};

impl RaftGroup {
    pub(super) fn randomize_election_timeout(&mut self) {
        let base = u64::from(self.config.election_tick);
        self.randomized_election_timeout = self.rng.range(base, 2 * base) as u32;
    }

    /// Follower and candidate tick: campaign when the election timeout passes.
    pub(super) fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        // A replica that may not campaign (a learner, a node its configuration left out)
        // keeps counting, so its leader lease runs out and it grants votes to the
        // voters that need it (its own configuration may lag theirs).
        if self.election_elapsed >= self.randomized_election_timeout && self.promotable() {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    /// Starts an election: pre-vote first when enabled, unless a leadership transfer
    /// asked for it (`transfer`).
    pub(super) fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        if self.config.pre_vote && !transfer {
            self.campaign_pre_vote();
        } else {
            self.campaign_vote(transfer);
        }
    }

    /// Common to every role change: clears per-role state; a new term clears the vote.
    fn reset(&mut self, term: Term) {
        if term != self.term {
            assert!(term > self.term, "{}: term going back from {} to {term}", self.id, self.term);
            self.term = term;
            self.vote = None;
        }
        self.leader_id = None;
        self.election_elapsed = 0;
        self.randomize_election_timeout();
        self.leave_quiet();
        self.lead_transferee = None;
        self.transfer_elapsed = 0;
        self.lease_revoked = false;
        self.votes.clear();
        self.progress.clear();
        self.reads.clear();
        self.round_send_ticks.clear();
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader_id = leader;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "{}: leader cannot pre-campaign", self.id);
        // A pre-candidate keeps its term and vote (thesis 9.6).
        self.votes.clear();
        self.leader_id = None;
        self.election_elapsed = 0;
        self.randomize_election_timeout();
        self.role = Role::PreCandidate;
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "{}: leader cannot campaign", self.id);
        self.reset(self.term + 1);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    pub(super) fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate, "{}: only a candidate becomes leader", self.id);
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader_id = Some(self.id);
        let next = self.log.last_index() + 1;
        let mut members = self.configs.current().members();
        members.insert(self.id);
        for member in members {
            self.progress.insert(member, Progress::new(next, self.config.max_inflight_msgs));
        }
        let persisted = self.log.persisted_index();
        let own = self.progress.get_mut(&self.id).expect("leader is a voter");
        own.matched = persisted;
        own.next = next;
        // A no-op entry of the new term lets earlier entries commit (paper 5.4.2, 8).
        self.append_entry(EntryFormat::NOOP, bytes::Bytes::new());
        if !self.maybe_commit_and_broadcast() && self.role == Role::Leader {
            self.broadcast_append();
        }
    }

    fn campaign_pre_vote(&mut self) {
        self.become_pre_candidate();
        self.request_votes(true, false);
    }

    fn campaign_vote(&mut self, transfer: bool) {
        self.become_candidate();
        self.request_votes(false, transfer);
    }

    /// Votes for itself and asks every other voter.
    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        if self.record_vote(self.id, true) {
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let voters = self.configs.current().all_voters();
        let peers: Vec<NodeId> = voters.into_iter().filter(|&v| v != self.id).collect();
        for peer in peers {
            if pre_vote {
                let body = MessageBody::PreVote { last_index, last_term };
                self.send_in_term(peer, self.term + 1, body);
            } else {
                self.send(peer, MessageBody::Vote { last_index, last_term, transfer });
            }
        }
    }

    /// Records a vote and acts on the tally. Returns true if the election ended.
    fn record_vote(&mut self, from: NodeId, granted: bool) -> bool {
        self.votes.entry(from).or_insert(granted);
        match self.configs.current().vote_result(&self.votes) {
            VoteResult::Pending => false,
            VoteResult::Won if self.role == Role::PreCandidate => {
                self.campaign_vote(false);
                true
            }
            VoteResult::Won => {
                self.become_leader();
                true
            }
            VoteResult::Lost => {
                self.become_follower(self.term, None);
                true
            }
        }
    }

    /// Whether this replica heard from a live leader within the election timeout, so
    /// it refuses to help depose it (thesis 4.2.3; also what makes leases safe).
    pub(super) fn in_leader_lease(&self) -> bool {
        let heard = self.leader_id.is_some() && self.election_elapsed < self.config.election_tick;
        // A restarted replica may have acked a lease holder just before it went down.
        let restarting = self.now() < self.restart_sticky_ticks;
        self.config.check_quorum && (heard || restarting)
    }

    /// PreVote and Vote requests whose term is not below ours (paper figure 2,
    /// RequestVote receiver rules; thesis 9.6 for pre-vote).
    pub(super) fn handle_vote_request(&mut self, msg: &Message) {
        let (last_index, last_term, pre_vote) = match msg.body {
            MessageBody::PreVote { last_index, last_term } => (last_index, last_term, true),
            MessageBody::Vote { last_index, last_term, .. } => (last_index, last_term, false),
            _ => unreachable!("not a vote request: {:?}", msg.body),
        };
        let can_vote = self.vote == Some(msg.from)
            || (self.vote.is_none() && self.leader_id.is_none())
            || (pre_vote && msg.term > self.term);
        let grant = can_vote && !self.repairing() && self.log.is_up_to_date(last_index, last_term);
        if pre_vote {
            let term = if grant { msg.term } else { self.term };
            self.send_in_term(msg.from, term, MessageBody::PreVoteResponse { reject: !grant });
            return;
        }
        if grant {
            self.election_elapsed = 0;
            self.vote = Some(msg.from);
        }
        self.send(msg.from, MessageBody::VoteResponse { reject: !grant });
    }

    /// A (pre-)vote response in our current (or, for pre-vote, next) term.
    pub(super) fn handle_vote_response(&mut self, msg: &Message) {
        let reject = match msg.body {
            MessageBody::PreVoteResponse { reject } if self.role == Role::PreCandidate => reject,
            MessageBody::VoteResponse { reject } if self.role == Role::Candidate => reject,
            _ => return,
        };
        self.record_vote(msg.from, !reject);
    }
}
