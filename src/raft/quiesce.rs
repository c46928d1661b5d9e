//! Quiescence of idle groups (CockroachDB's quiesced ranges; etcd's `TickQuiesced`):
//! a leader whose followers all hold its whole log, committed and applied, sends one
//! `Quiesce` instead of its next heartbeat and stops ticking; a follower that holds
//! everything it says stops ticking too. A node with many idle ranges then sends
//! nothing per range.
//!
//! ```text
//!  leader tick: idle? ── Quiesce{commit} ──► follower: committed == commit? ── quiesce
//!                 │                                     └─ no: HeartbeatResponse (wakes
//!              quiesced                                     the leader, retry later)
//!  wake: any message but Quiesce, propose, read_index, transfer, campaign; and the
//!        driver's `wake` / `wake_leader_silent` from node-level liveness
//! ```
//!
//! A quiesced group still counts `now_tick` (leases and restart stickiness keep their
//! meaning: no heartbeat is acked, so a lease runs out) but not `election_elapsed`:
//! a quiesced follower keeps treating its leader as live and refuses to depose it,
//! and a quiesced leader runs no check-quorum. Noticing a dead or cut-off peer is the
//! driver's job (`Config::quiesce` is for drivers that do it): it wakes a follower
//! whose leader's node went silent with `wake_leader_silent(ticks)`, which counts the
//! silence as election time, exactly as if the follower had ticked without hearing
//! from the leader (its last contact with this group is no later than its last
//! contact with that node), and it wakes a leader when a peer goes silent or comes
//! back, so check-quorum runs and a returning peer gets heartbeats.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::message::*;
use super::progress::ProgressState;
use super::{RaftGroup, Role};

/// A tick count a driver keeps for all its groups (`RaftGroup::use_tick_clock`): a
/// quiesced group that reads it need not be ticked at all, so a node's idle ranges
/// cost nothing per tick. The driver sets it before it ticks the awake groups; a
/// quiesced group's `now_tick` is then its value when it went quiet plus the ticks of
/// this clock since (what ticking it every time would have counted).
#[derive(Clone, Debug, Default)]
pub struct TickClock(Arc<AtomicU64>);

impl TickClock {
    pub fn new() -> TickClock {
        TickClock::default()
    }

    /// The driver's tick count (it only grows).
    pub fn set(&self, ticks: u64) {
        self.0.store(ticks, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl RaftGroup {
    /// Leader: nothing is in flight and nothing is waiting, every follower was heard
    /// from since the last check-quorum and holds the whole log, which is committed
    /// (so an entry of this term is) and applied.
    pub(super) fn can_quiesce(&self) -> bool {
        let last = self.log.last_index();
        self.role == Role::Leader
            && self.lead_transferee.is_none()
            && self.log.committed == last
            && self.log.applied == last
            && self.log.persisted_index() == last
            && self.reads.is_empty()
            && self.read_states.is_empty()
            && self.progress.iter().all(|(&peer, progress)| {
                peer == self.id
                    || (progress.matched == last
                        && progress.recent_active
                        && progress.state == ProgressState::Replicate
                        && progress.snapshot.is_none())
            })
    }

    /// Leader: tells every follower to go idle, and goes idle.
    pub(super) fn quiesce(&mut self) {
        let commit = self.log.committed;
        let peers: Vec<NodeId> = self.progress.keys().copied().filter(|&p| p != self.id).collect();
        for peer in peers {
            self.send(peer, MessageBody::Quiesce { commit });
        }
        self.go_quiet();
    }

    /// Follower: the leader is going idle at `commit`. Go idle too if this replica
    /// has every committed entry; otherwise say so, which wakes the leader.
    pub(super) fn handle_quiesce(&mut self, from: NodeId, commit: Index) {
        self.log.commit_to(commit.min(self.log.last_index()));
        if self.config.quiesce && self.log.committed == commit && self.leader_id == Some(from) {
            self.go_quiet();
        } else {
            let (tick, incarnation) = (self.now(), self.config.incarnation);
            self.send(from, MessageBody::HeartbeatResponse { context: 0, tick, incarnation });
        }
    }

    /// Leaves quiescence. A woken leader counts check-quorum from now and may quiesce
    /// again only after hearing from every follower (so a leader woken because a peer
    /// went silent steps down if it cannot reach a quorum, instead of going idle).
    pub fn wake(&mut self) {
        if !self.quiesced {
            return;
        }
        self.leave_quiet();
        if self.role == Role::Leader {
            self.election_elapsed = 0;
            let id = self.id;
            for (&peer, progress) in self.progress.iter_mut() {
                progress.recent_active = peer == id;
            }
        }
    }

    /// The driver has heard nothing from this replica's leader's node for
    /// `silent_ticks`: wake a quiesced follower and count the silence as election
    /// time, up to `election_tick` (past it the follower no longer defends the leader;
    /// the randomized rest of its timeout still spreads the campaigns). An awake
    /// follower counts it too: one woken by a message, say the pre-vote of a peer
    /// that noticed the silence a tick earlier, would otherwise reject that pre-vote
    /// and defend the dead leader for a whole election timeout more.
    pub fn wake_leader_silent(&mut self, silent_ticks: u32) {
        if self.role != Role::Follower {
            return;
        }
        self.leave_quiet();
        let counted = silent_ticks.min(self.config.election_tick);
        self.election_elapsed = self.election_elapsed.max(counted);
    }
}

impl RaftGroup {
    /// This group's tick count: what `tick` counted, plus, while quiesced with a
    /// driver's `TickClock`, the clock's ticks since it went quiet.
    pub(super) fn now(&self) -> u64 {
        match &self.tick_clock {
            Some(clock) if self.quiesced => {
                self.now_tick + clock.get().saturating_sub(self.quiesced_at)
            }
            _ => self.now_tick,
        }
    }

    /// Goes idle (a no-op if it is): from now on the clock counts its ticks.
    fn go_quiet(&mut self) {
        if self.quiesced {
            return;
        }
        self.quiesced = true;
        self.quiesced_at = self.tick_clock.as_ref().map_or(0, TickClock::get);
    }

    /// Leaves idleness, keeping the ticks counted meanwhile.
    pub(super) fn leave_quiet(&mut self) {
        if self.quiesced {
            self.now_tick = self.now();
            self.quiesced = false;
        }
    }

    /// Counts this group's ticks from `clock` while it is quiesced: the driver then
    /// needs to tick only the groups that are not (`is_quiescent`), and sets the
    /// clock to its tick count before it ticks them.
    pub fn use_tick_clock(&mut self, clock: TickClock) {
        self.now_tick = self.now();
        self.quiesced_at = clock.get();
        self.tick_clock = Some(clock);
    }
}
