//! Log replication (Raft paper 5.3, 5.4.2) with etcd-style flow control: the leader's
//! Appends and heartbeats, the follower's answers, and commit advancement.

use super::message::*;
use super::progress::ProgressState;
use super::{RaftGroup, Role};

impl RaftGroup {
    /// Leader: appends one entry of the current term; returns its index.
    pub(super) fn append_entry(&mut self, format: EntryFormat, data: bytes::Bytes) -> Index {
        assert_eq!(self.role, Role::Leader, "{}: only the leader appends", self.id);
        let entry = Entry { term: self.term, index: self.log.last_index() + 1, format, data };
        let entries = [entry];
        let index = self.log.append(&entries);
        if format.kind == EntryFormat::KIND_CONF_CHANGE {
            self.note_log_written(index, &entries);
        }
        index
    }

    /// Leader tick: heartbeats, check-quorum, transfer and snapshot timeouts.
    pub(super) fn tick_leader(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_tick {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.check_quorum_active() {
                // Thesis 6.2: a leader cut off from a quorum steps down.
                self.become_follower(self.term, None);
                return;
            }
        }
        self.tick_transfer();
        self.tick_snapshot_transfers();
        // On ticks that are multiples of heartbeat_tick, not counted from each group's
        // election: every group a node leads beats on the same tick, so the node sends
        // one frame per peer for all of them instead of one on every tick.
        if self.now() % u64::from(self.config.heartbeat_tick) == 0 {
            if self.config.quiesce && self.can_quiesce() {
                self.quiesce();
            } else {
                self.broadcast_heartbeat();
            }
        }
    }

    /// Whether a quorum was heard from since the last check; resets the marks.
    fn check_quorum_active(&mut self) -> bool {
        let id = self.id;
        let mut active = std::collections::BTreeSet::new();
        for (&peer, progress) in self.progress.iter_mut() {
            if peer == id || progress.recent_active {
                active.insert(peer);
            }
            progress.recent_active = peer == id;
        }
        self.configs.current().has_quorum(&active)
    }

    pub(super) fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().filter(|&p| p != self.id).collect();
        for peer in peers {
            self.maybe_send_append(peer, true);
        }
    }

    /// Leader: sends proposed entries that no Append carries yet to every follower,
    /// as many Appends as `max_size_per_msg` and the inflight window allow.
    pub(super) fn send_new_entries(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().filter(|&p| p != self.id).collect();
        for peer in peers {
            // Ends: each send advances the follower's `next` (replicate) or pauses it
            // (probe, snapshot), and an empty Append is never sent here.
            while self.maybe_send_append(peer, false) {
                if self.progress[&peer].state != ProgressState::Replicate {
                    break;
                }
            }
        }
    }

    /// Sends the next Append to `to` unless its progress is paused. Empty Appends
    /// (commit updates) only when `send_if_empty`. Returns whether one was sent.
    pub(super) fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let progress = &self.progress[&to];
        if progress.is_paused() {
            return false;
        }
        let next = progress.next;
        let prev_index = next - 1;
        let (prev_term, entries) = match (
            self.log.term(prev_index),
            self.log.entries_from(next, self.config.max_size_per_msg),
        ) {
            (Ok(term), Ok(entries)) => (term, entries),
            _ => {
                // The entries the follower needs are compacted (paper section 7).
                self.start_snapshot_transfer(to);
                return true;
            }
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let progress = self.progress.get_mut(&to).expect("progress checked above");
        match (progress.state, entries.last()) {
            (ProgressState::Replicate, Some(last)) => {
                progress.optimistic_update(last.index);
                progress.inflights.add(last.index);
            }
            (ProgressState::Probe, _) => progress.probe_sent = true,
            _ => {}
        }
        let commit = self.log.committed;
        self.send(to, MessageBody::Append { prev_index, prev_term, entries, commit });
        true
    }

    /// Follower: tells the leader our log matches its own up to `index`.
    fn send_append_accepted(&mut self, to: NodeId, index: Index) {
        let body =
            MessageBody::AppendResponse { reject: false, index, hint_index: 0, hint_term: 0 };
        self.send(to, body);
    }

    /// Follower: AppendEntries receiver (paper figure 2).
    pub(super) fn handle_append(&mut self, msg: &Message) {
        let MessageBody::Append { prev_index, prev_term, ref entries, commit } = msg.body else {
            unreachable!("not an Append: {:?}", msg.body);
        };
        if prev_index < self.log.committed {
            // Everything up to our commit index matches the leader's log already.
            self.send_append_accepted(msg.from, self.log.committed);
            return;
        }
        match self.log.maybe_append(prev_index, prev_term, entries) {
            Some((last_new, written_from)) => {
                if let Some(from) = written_from {
                    let written = &entries[(from - entries[0].index) as usize..];
                    self.note_log_written(from, written);
                }
                self.log.commit_to(commit.min(last_new));
                self.send_append_accepted(msg.from, last_new);
            }
            None => {
                // Fast backtracking: point the leader at our last entry whose term is
                // <= prev_term, skipping a whole divergent term per round trip.
                let (hint_index, hint_term) = self.log.find_conflict_by_term(prev_index, prev_term);
                let body = MessageBody::AppendResponse {
                    reject: true,
                    index: prev_index,
                    hint_index,
                    hint_term,
                };
                self.send(msg.from, body);
            }
        }
    }

    /// Leader: a follower's answer to an Append.
    pub(super) fn handle_append_response(&mut self, msg: &Message) {
        let MessageBody::AppendResponse { reject, index, hint_index, hint_term } = msg.body else {
            unreachable!("not an AppendResponse: {:?}", msg.body);
        };
        let from = msg.from;
        if reject {
            let mut next_probe = hint_index;
            if hint_term > 0 {
                next_probe = self.log.find_conflict_by_term(hint_index, hint_term).0;
            }
            let progress = self.progress.get_mut(&from).expect("leader tracks every voter");
            if progress.maybe_decrease_to(index, next_probe) {
                if progress.state == ProgressState::Replicate {
                    progress.become_probe();
                }
                self.maybe_send_append(from, true);
            }
            return;
        }
        let progress = self.progress.get_mut(&from).expect("leader tracks every voter");
        let was_paused = progress.is_paused();
        if !progress.maybe_update(index) {
            return;
        }
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Replicate => progress.inflights.free_to(index),
            ProgressState::Snapshot => {}
        }
        let committed = self.maybe_commit_and_broadcast();
        if self.role != Role::Leader || !self.progress.contains_key(&from) {
            // The commit completed a change: this leader left the group and stepped
            // down, or `from` did and is no longer replicated to.
            return;
        }
        if !committed && was_paused {
            self.maybe_send_append(from, true);
        }
        while self.maybe_send_append(from, false) {}
        self.maybe_send_timeout_now(from);
    }

    /// Leader: counts matches; commits only an entry of the current term (paper
    /// 5.4.2, figure 8). Broadcasts the new commit index. Returns whether it moved.
    pub(super) fn maybe_commit_and_broadcast(&mut self) -> bool {
        let quorum_match = self.quorum_of(|_, progress| Some(progress.matched)).unwrap_or(0);
        if !self.log.maybe_commit(quorum_match, self.term) {
            return false;
        }
        self.reads.release_waiting(self.log.committed);
        self.on_leader_commit();
        if self.role == Role::Leader {
            self.broadcast_append();
        }
        true
    }

    /// Leader: entries were persisted locally; they now count for commit.
    pub(super) fn on_leader_persisted(&mut self) {
        let persisted = self.log.persisted_index();
        let own = self.progress.get_mut(&self.id).expect("leader is a voter");
        if own.maybe_update(persisted) {
            self.maybe_commit_and_broadcast();
        }
    }

    /// Leader: a heartbeat round to every follower; its id rides in `context` and
    /// confirms leadership for reads (reads.rs).
    pub(super) fn broadcast_heartbeat(&mut self) {
        self.heartbeat_round += 1;
        let round = self.heartbeat_round;
        let now = self.now();
        self.round_send_ticks.insert(round, now);
        let horizon = now.saturating_sub(u64::from(self.config.election_tick));
        self.round_send_ticks.retain(|_, &mut tick| tick >= horizon);
        self.reads.start_round(round);
        let own = self.progress.get_mut(&self.id).expect("leader is a voter");
        own.acked_round = round;
        own.acked_send_tick = Some(now);
        let peers: Vec<NodeId> = self.progress.keys().copied().filter(|&p| p != self.id).collect();
        for peer in peers {
            let commit = self.progress[&peer].matched.min(self.log.committed);
            self.send(peer, MessageBody::Heartbeat { commit, context: round });
        }
        self.confirm_reads();
    }

    /// Follower: a heartbeat; commit is at most what the leader knows we hold.
    pub(super) fn handle_heartbeat(&mut self, from: NodeId, commit: Index, context: u64) {
        self.log.commit_to(commit.min(self.log.last_index()));
        let (tick, incarnation) = (self.now(), self.config.incarnation);
        self.send(from, MessageBody::HeartbeatResponse { context, tick, incarnation });
    }

    /// Leader: the follower is alive; resume probing, measure its tick rate and
    /// confirm reads.
    pub(super) fn handle_heartbeat_response(
        &mut self,
        from: NodeId,
        context: u64,
        follower_tick: u64,
        incarnation: u64,
    ) {
        let sent_tick = self.round_send_ticks.get(&context).copied();
        let tolerance = self.lease_rate_tolerance();
        let now = self.now();
        let progress = self.progress.get_mut(&from).expect("leader tracks every voter");
        if let Some(sent) = sent_tick {
            progress.tick_rate.observe(context, sent, now, follower_tick, incarnation, tolerance);
        }
        progress.probe_sent = false;
        if progress.state == ProgressState::Replicate && progress.inflights.full() {
            progress.inflights.free_first_one();
        }
        if context > progress.acked_round {
            progress.acked_round = context;
            progress.acked_send_tick = progress.acked_send_tick.max(sent_tick);
        }
        if self.progress[&from].matched < self.log.last_index() {
            self.maybe_send_append(from, true);
        }
        self.confirm_reads();
    }
}
