//! The sans-IO Raft core: one `RaftGroup` per replica of a range.
//!
//! Driver loop (the node does this for every range, one WAL fsync for all):
//! 1. `tick()` on every tick, `step(msg)` for every message, `propose`/`read_index`
//!    for clients;
//! 2. if `has_ready()`: `let rd = ready()`; send `rd.messages` at once; persist
//!    `rd.snapshot`, `rd.entries`, `rd.hard_state`; fsync; then send
//!    `rd.persisted_messages`; apply `rd.committed_entries`; serve `rd.read_states`
//!    once applied; `advance(rd)`.
//!
//! ```text
//!  tick/step/propose/read_index ──> RaftGroup ──ready()──> Ready ──driver──> advance()
//!                                   election.rs  replication.rs  snapshot.rs  reads.rs
//!                                   log.rs = MemStorage (durable) + Unstable (tail)
//! ```
//!
//! The core owns no socket, file, clock, thread or ambient randomness: time is ticks
//! and election jitter comes from `Config::seed`.

mod election;
mod inflights;
mod invariants;
mod log;
pub mod membership;
pub mod message;
mod progress;
mod quiesce;
mod quorum;
mod read_index;
mod reads;
mod ready;
mod replication;
mod rng;
mod snapshot;
mod step;
pub mod storage;
mod tick_rate;
mod transfer;
mod unstable;

#[cfg(test)]
mod test_network;

/// The log's internals, for the model-based tests in `proptests/`; not an API.
#[doc(hidden)]
pub mod testing {
    pub use super::log::RaftLog;
    pub use super::unstable::Unstable;
}

#[cfg(test)]
mod election_test;
#[cfg(test)]
mod learner_test;
#[cfg(test)]
mod membership_test;
#[cfg(test)]
mod quiesce_test;
#[cfg(test)]
mod read_index_test;
#[cfg(test)]
mod repair_test;
#[cfg(test)]
mod replication_test;
#[cfg(test)]
mod safety_test;
#[cfg(test)]
mod snapshot_test;

use std::collections::BTreeMap;

pub use membership::{ConfChange, Membership};
pub use message::*;
pub use quiesce::TickClock;
pub use ready::{ReadState, Ready, SoftState};
pub use storage::{Discarded, MemStorage, Storage, StorageError};

use log::RaftLog;
use membership::Configs;
use progress::{Progress, ProgressState};
use read_index::ReadIndexQueue;
use rng::Rng;
use snapshot::SnapshotAssembly;

/// Errors a caller can act on. A failed call does not change the group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("proposal dropped (leadership transfer in progress)")]
    ProposalDropped,
    #[error("membership change refused: {0}")]
    ConfChangeRefused(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// Static configuration of one group member.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// Base election timeout in ticks; the effective one is random in [e, 2e).
    pub election_tick: u32,
    pub heartbeat_tick: u32,
    /// Max Append messages in flight per follower in replicate state.
    pub max_inflight_msgs: usize,
    /// Max bytes of entries in one Append.
    pub max_size_per_msg: u64,
    /// Snapshot chunk size in bytes.
    pub snapshot_chunk_size: u64,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Leader leases are kept, and reads that ask for one (`ReadMode::Lease`) are
    /// served from it while it is valid instead of waiting for a heartbeat round.
    pub lease_read: bool,
    /// Ticks subtracted from the election timeout to bound clock drift for leases:
    /// a lease tolerates followers ticking up to `(election_tick - 1) /
    /// (election_tick - lease_drift_ticks)` times as fast as the leader (reads.rs).
    pub lease_drift_ticks: u32,
    /// Seed for election jitter.
    pub seed: u64,
    /// Identifies this run of the replica (a new value at every restart); sent with
    /// heartbeat responses so the leader knows when a follower's tick count restarted.
    pub incarnation: u64,
    /// An idle group stops ticking and heartbeating (quiesce.rs). Only for a driver
    /// that watches its peers' liveness and calls `wake`/`wake_leader_silent`: a
    /// quiesced follower does not notice a dead leader by itself.
    pub quiesce: bool,
}

impl Config {
    pub fn new(id: NodeId, seed: u64) -> Config {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            max_inflight_msgs: 256,
            max_size_per_msg: 1 << 20,
            snapshot_chunk_size: 1 << 20,
            pre_vote: true,
            check_quorum: true,
            lease_read: false,
            lease_drift_ticks: 2,
            seed,
            incarnation: 0,
            quiesce: false,
        }
    }

    /// # Errors
    /// `InvalidConfig` when a field is out of range.
    pub fn validate(&self) -> Result<(), RaftError> {
        let invalid = |what: &str| Err(RaftError::InvalidConfig(what.to_string()));
        if self.id.0 == 0 {
            return invalid("id must not be 0");
        }
        if self.heartbeat_tick == 0 || self.election_tick <= self.heartbeat_tick {
            return invalid("need 0 < heartbeat_tick < election_tick");
        }
        if self.max_inflight_msgs == 0 || self.snapshot_chunk_size == 0 {
            return invalid("max_inflight_msgs and snapshot_chunk_size must be positive");
        }
        if self.lease_read && (!self.check_quorum || self.lease_drift_ticks >= self.election_tick) {
            return invalid("lease_read needs check_quorum and lease_drift_ticks < election_tick");
        }
        Ok(())
    }
}

/// How a read may be confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Always a heartbeat round a quorum acknowledges (ReadIndex, thesis 6.4).
    ReadIndex,
    /// From the leader lease when it is valid (no round trip), else as `ReadIndex`.
    /// Safe as long as clock rates stay within the drift bound the lease tolerates;
    /// the leader refuses the lease when it measures them outside it (tick_rate.rs).
    Lease,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// A snapshot of the group for `rangedb status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub applied: Index,
    pub last_index: Index,
    pub first_index: Index,
    pub voters: Vec<NodeId>,
    /// Non-empty while a change of voters is in its joint phase: the voters before it.
    pub outgoing: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// One member of one Raft group.
pub struct RaftGroup {
    config: Config,
    id: NodeId,
    /// Current term and vote (durable once the Ready carrying them is advanced).
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader_id: Option<NodeId>,
    log: RaftLog,
    /// The configurations in the log; the latest is in force (membership.rs).
    /// Learners are replicated to, never counted: no vote, no quorum, no campaign.
    configs: Configs,
    /// A conf-change entry in the log this version cannot read: the replica stops
    /// campaigning and voting, and the driver stops the node.
    unreadable_conf: Option<EntryFormat>,
    /// Leader only: one entry per member (itself included).
    progress: BTreeMap<NodeId, Progress>,
    /// (Pre-)candidate only: votes received in this election.
    votes: BTreeMap<NodeId, bool>,
    /// Ticks since the last election timeout reset (leader: since last quorum check).
    election_elapsed: u32,
    /// In [election_tick, 2 * election_tick), redrawn at every role change.
    randomized_election_timeout: u32,
    rng: Rng,
    /// Ticks since creation; the lease clock.
    now_tick: u64,
    /// A replica restarted with a nonzero term refuses (pre-)votes until this tick, as
    /// if it had just heard from a leader: it may have acked a lease before the crash.
    restart_sticky_ticks: u64,
    /// Leader only: the voter leadership is being transferred to, and for how long.
    lead_transferee: Option<NodeId>,
    transfer_elapsed: u32,
    /// Leader only: a TimeoutNow was sent this term, so leases are unsafe until the
    /// next term.
    lease_revoked: bool,
    /// Durable: see `HardState::repair_term` and `repairing`.
    repair_term: Term,
    /// Leader only: the last heartbeat round sent, and the tick each recent one left.
    heartbeat_round: u64,
    round_send_ticks: BTreeMap<u64, u64>,
    reads: ReadIndexQueue,
    /// Reads answered from the lease so far (for the simulation's statistics).
    lease_reads: u64,
    /// Follower only: a snapshot being received in chunks.
    incoming_snapshot: Option<SnapshotAssembly>,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
    /// What the last Ready reported, to report only changes.
    prev_soft_state: SoftState,
    prev_hard_state: HardState,
    ready_number: u64,
    /// A Ready was handed out and not yet advanced.
    ready_outstanding: bool,
    /// Leader only: entries were proposed since the last `ready()`; it sends them in
    /// one Append per follower, so a burst of proposals costs one message, not one
    /// per proposal.
    append_pending: bool,
    /// Idle: ticks only advance `now_tick` (quiesce.rs).
    quiesced: bool,
    /// The driver's tick count, if it keeps one (`use_tick_clock`), and its value
    /// when this group went quiet.
    tick_clock: Option<quiesce::TickClock>,
    quiesced_at: u64,
    /// Debug only: the commit index at the last invariant check.
    checked_commit: Index,
}

impl RaftGroup {
    /// Builds a replica from its durable state: term, vote and commit from the hard
    /// state (commit clamped to the log), applied = snapshot index.
    ///
    /// # Errors
    /// `InvalidConfig` for a bad config. A replica that is not (yet) a voter, e.g.
    /// created empty to receive a snapshot, is allowed: it never campaigns, and it
    /// takes the voters of the first snapshot it restores.
    pub fn new(config: Config, store: MemStorage) -> Result<RaftGroup, RaftError> {
        config.validate()?;
        let hard_state = store.hard_state();
        let (configs, unreadable_conf) = membership::configs_from_store(&store);
        let log = RaftLog::new(store);
        let restarted = hard_state.term > 0;
        let restart_sticky_ticks = if restarted { u64::from(config.election_tick) } else { 0 };
        let mut group = RaftGroup {
            id: config.id,
            rng: Rng::new(config.seed),
            randomized_election_timeout: config.election_tick,
            config,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader_id: None,
            checked_commit: log.committed,
            log,
            configs,
            unreadable_conf,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            now_tick: 0,
            restart_sticky_ticks,
            lead_transferee: None,
            transfer_elapsed: 0,
            lease_revoked: false,
            repair_term: hard_state.repair_term,
            heartbeat_round: 0,
            round_send_ticks: BTreeMap::new(),
            reads: ReadIndexQueue::default(),
            lease_reads: 0,
            incoming_snapshot: None,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            prev_soft_state: SoftState { leader: None, role: Role::Follower },
            prev_hard_state: hard_state,
            ready_number: 0,
            ready_outstanding: false,
            append_pending: false,
            quiesced: false,
            tick_clock: None,
            quiesced_at: 0,
        };
        group.randomize_election_timeout();
        Ok(group)
    }

    /// Advances logical time by one tick: elections on followers, heartbeats,
    /// check-quorum and transfer timeouts on the leader.
    pub fn tick(&mut self) {
        if self.quiesced {
            // With a driver's clock, the clock counts this tick (`now`).
            if self.tick_clock.is_none() {
                self.now_tick += 1;
            }
            return;
        }
        self.now_tick += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
        self.debug_check_invariants();
    }

    /// Feeds one message from a peer.
    ///
    /// # Errors
    /// None today; kept for messages the core may refuse in future.
    pub fn step(&mut self, msg: Message) -> Result<(), RaftError> {
        assert_eq!(msg.to, self.id, "message for {} stepped into {}", msg.to, self.id);
        if self.quiesced && !matches!(msg.body, MessageBody::Quiesce { .. }) {
            self.wake();
        }
        self.step_message(msg);
        self.maybe_finish_repair();
        self.debug_check_invariants();
        Ok(())
    }

    /// Appends `data`, encoded in `format`, to the leader's log; returns the index it
    /// will commit at.
    ///
    /// # Errors
    /// `NotLeader` on a non-leader; `ProposalDropped` during a leadership transfer.
    pub fn propose(
        &mut self,
        format: EntryFormat,
        data: impl Into<bytes::Bytes>,
    ) -> Result<Index, RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader { leader_hint: self.leader_id });
        }
        if self.lead_transferee.is_some() {
            return Err(RaftError::ProposalDropped);
        }
        self.wake();
        let index = self.append_entry(format, data.into());
        // The Appends leave with the next Ready (the entries must be in it anyway).
        self.append_pending = true;
        self.debug_check_invariants();
        Ok(index)
    }

    /// Starts a linearizable read; the answer arrives as a `ReadState` with `context`.
    /// `mode` says whether the leader lease may confirm it.
    ///
    /// # Errors
    /// `NotLeader { leader_hint: None }` when no leader is known.
    pub fn read_index(&mut self, context: u64, mode: ReadMode) -> Result<(), RaftError> {
        self.wake();
        self.handle_read_request(context, None, mode == ReadMode::Lease)
    }

    /// Reads answered from the leader lease since this group was created.
    pub fn lease_reads(&self) -> u64 {
        self.lease_reads
    }

    /// Leader only: hands leadership to voter `to` once it is caught up. Proposals
    /// are dropped meanwhile; aborted after `election_tick` ticks.
    pub fn transfer_leader(&mut self, to: NodeId) {
        self.wake();
        self.start_transfer(to);
        self.debug_check_invariants();
    }

    /// Starts an election now (used to elect a single-node group without waiting).
    /// A group created with a term it never ran in (a range split off at its split
    /// entry's term): it is not a restarted replica, so it does not refuse votes for
    /// an election timeout (it acknowledged no leader's heartbeats before).
    pub fn created_fresh(&mut self) {
        self.restart_sticky_ticks = 0;
    }

    pub fn campaign(&mut self) {
        self.wake();
        self.hup(false);
        self.debug_check_invariants();
    }

    /// The durable state of this replica as of the last `advance`.
    pub fn store(&self) -> &MemStorage {
        &self.log.store
    }

    /// Drops log entries up to `snapshot.meta.index` (<= applied); the snapshot is
    /// kept and served to lagging followers. Returns what was dropped, for the
    /// caller to free (`Discarded`).
    ///
    /// # Errors
    /// `Storage(Compacted)` if the log is already compacted past it; `InvalidConfig`
    /// if the snapshot's configuration is not the log's at its index (see
    /// `conf_state_at`).
    /// # Panics
    /// If the snapshot is beyond the applied index or its term disagrees with the log.
    pub fn compact(&mut self, snapshot: Snapshot) -> Result<Discarded, RaftError> {
        let index = snapshot.meta.index;
        assert!(
            index <= self.log.applied,
            "{}: compact at {index} beyond applied {}",
            self.id,
            self.log.applied
        );
        if index + 1 < self.log.store.first_index() {
            return Err(StorageError::Compacted(index).into());
        }
        match self.conf_state_at(index) {
            Some(conf_state) if conf_state == snapshot.meta.conf_state => {}
            expected => {
                return Err(RaftError::InvalidConfig(format!(
                    "snapshot at {index} has configuration {:?}, the log {expected:?} \
                     (a joint configuration is never snapshotted)",
                    snapshot.meta.conf_state
                )))
            }
        }
        let discarded = self.log.store.compact(snapshot);
        self.configs.compact_to(index);
        Ok(discarded)
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            leader: self.leader_id,
            commit: self.log.committed,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            first_index: self.log.first_index(),
            voters: self.membership().voters.iter().copied().collect(),
            outgoing: self.membership().outgoing.iter().copied().collect(),
            learners: self.membership().learners.iter().copied().collect(),
        }
    }

    /// The commit index (`status()` without building the voter list).
    pub fn committed(&self) -> Index {
        self.log.committed
    }

    /// The current term (`status()` without building the voter list).
    pub fn term(&self) -> Term {
        self.term
    }

    /// The term of this replica's log entry at `index`: `Ok(None)` past the end of the
    /// log, `Err(snapshot_index)` when compacted into the snapshot at that index (for
    /// checkers outside the core, e.g. the simulation's leader completeness check).
    pub fn log_term(&self, index: Index) -> Result<Option<Term>, Index> {
        if index > self.log.last_index() {
            return Ok(None);
        }
        self.log.term(index).map(Some).map_err(|_| self.log.first_index() - 1)
    }

    /// Whether this leader would answer a lease read now (for checkers outside the
    /// core: the simulation's lease check).
    pub fn lease_holds(&self) -> bool {
        self.lease_valid()
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader_id
    }

    /// Leader only: the voter leadership is being handed to, if a transfer runs.
    pub fn transferring_to(&self) -> Option<NodeId> {
        self.lead_transferee
    }

    /// Leader only: how many entries voter `to` lacks of this leader's log, if it is
    /// replicating normally (None on a follower, for an unknown node, or while the
    /// follower is probed or sent a snapshot: its log may be anywhere).
    pub fn follower_lag(&self, to: NodeId) -> Option<u64> {
        if self.role != Role::Leader {
            return None;
        }
        let progress = self.progress.get(&to)?;
        (progress.state == ProgressState::Replicate)
            .then(|| self.log.last_index().saturating_sub(progress.matched))
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Leader only: the index each member (itself included) is known to hold; empty on
    /// a follower.
    pub fn matched(&self) -> Vec<(NodeId, Index)> {
        self.progress.iter().map(|(&node, progress)| (node, progress.matched)).collect()
    }

    /// Idle (quiesce.rs): a tick only advances the lease clock, and the group sends
    /// nothing until a message, a proposal, a read or `wake` wakes it.
    pub fn is_quiescent(&self) -> bool {
        self.quiesced
    }

    fn soft_state(&self) -> SoftState {
        SoftState { leader: self.leader_id, role: self.role }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
            repair_term: self.repair_term,
        }
    }

    /// Whether this replica is repairing damaged storage and must not vote or campaign.
    ///
    /// Its storage lost entries it may have acknowledged in terms up to `repair_term`
    /// (the node bumped its term past that one when it found the damage). Were it to
    /// vote, a candidate lacking an entry committed with its lost acknowledgement could
    /// win. Abstaining keeps every election since the damage to quorums of intact
    /// replicas, which hold every committed entry; so a leader of a term above
    /// `repair_term` holds them all, and once our log holds an entry of such a term it
    /// matches that leader's log up to there (log matching): from then on we vote as
    /// any replica whose log was overwritten by a leader. Acknowledgements while
    /// repairing are safe to count: they are for entries we durably hold.
    pub fn repairing(&self) -> bool {
        self.repair_term > 0 && self.log.last_term() <= self.repair_term
    }

    /// Ends a repair once the log holds an entry of a term above `repair_term`; the
    /// cleared hard state is persisted with (after) that entry in the same Ready.
    fn maybe_finish_repair(&mut self) {
        if self.repair_term > 0 && !self.repairing() {
            self.repair_term = 0;
        }
    }

    /// The largest value a quorum of the configuration reaches, one value per voter
    /// from its progress (leader only; joint: both majorities). Learners have progress
    /// (they are replicated to) but are never counted toward a quorum.
    fn quorum_of<T: Ord + Copy>(
        &self,
        value: impl Fn(NodeId, &Progress) -> Option<T>,
    ) -> Option<T> {
        self.configs.current().quorum_value(|voter| {
            self.progress.get(&voter).and_then(|progress| value(voter, progress))
        })
    }

    /// Queues a message in the current term.
    fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_in_term(to, term, body);
    }

    /// Queues a message. Anything whose meaning relies on durable term, vote or log
    /// (vote requests and grants, acks of entries or snapshots) waits for persistence.
    fn send_in_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let msg = Message { from: self.id, to, term, body };
        if needs_persistence(&msg.body) {
            self.persisted_messages.push(msg);
        } else {
            self.messages.push(msg);
        }
    }
}

/// Whether a message may only leave once the Ready it was produced with is durable.
///
/// Waits: `Vote` (the candidate's self-vote and term), `VoteResponse` and
/// `PreVoteResponse` (a grant promises the vote and the log it compared), and
/// `AppendResponse`/`SnapshotResponse` (they acknowledge entries or a snapshot, which
/// the leader counts toward commit; a reject carries a term we may have just adopted).
/// Sent at once: the leader's traffic (its term was durable before it won), `PreVote`
/// (changes nothing durable), `HeartbeatResponse` (claims no log or vote: a follower
/// that forgets the term cannot help elect another leader in it, whose voters already
/// voted durably), `TimeoutNow`, `ReadIndex`/`ReadIndexResponse` and `Quiesce`.
fn needs_persistence(body: &MessageBody) -> bool {
    match body {
        MessageBody::Vote { .. }
        | MessageBody::VoteResponse { .. }
        | MessageBody::PreVoteResponse { .. }
        | MessageBody::AppendResponse { .. }
        | MessageBody::SnapshotResponse { .. } => true,
        MessageBody::PreVote { .. }
        | MessageBody::Append { .. }
        | MessageBody::Heartbeat { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::Snapshot { .. }
        | MessageBody::TimeoutNow
        | MessageBody::ReadIndex { .. }
        | MessageBody::ReadIndexResponse { .. }
        | MessageBody::Quiesce { .. } => false,
    }
}
