//! The sans-IO Raft core. (STUB: public surface only; the implementation replaces it.)
//!
//! Driver loop (the node does this for every range, one WAL fsync for all):
//! 1. `tick()` on every tick, `step(msg)` for every message, `propose`/`read_index`
//!    for clients;
//! 2. if `has_ready()`: `let rd = ready()`; send `rd.messages` at once; persist
//!    `rd.snapshot`, `rd.entries`, `rd.hard_state`; fsync; then send
//!    `rd.persisted_messages`; apply `rd.committed_entries`; serve `rd.read_states`
//!    once applied; `advance(rd)`.

pub mod message;
pub mod storage;

pub use message::*;
pub use storage::{MemStorage, Storage, StorageError};

/// Errors a caller can act on. A failed call does not change the group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("proposal dropped (leadership transfer in progress)")]
    ProposalDropped,
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
    /// Serve reads from a leader lease instead of a heartbeat round.
    pub lease_read: bool,
    /// Ticks subtracted from the election timeout to bound clock drift for leases.
    pub lease_drift_ticks: u32,
    /// Seed for election jitter.
    pub seed: u64,
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
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile state that changed; not persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: Option<NodeId>,
    pub role: Role,
}

/// A confirmed read: serve the read tagged `context` once applied >= `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub context: u64,
    pub index: Index,
}

/// What the driver must do next. See the module docs for the order.
#[derive(Debug, Default)]
pub struct Ready {
    pub number: u64,
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
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
}

/// One member of one Raft group.
pub struct RaftGroup {
    _config: Config,
    _store: MemStorage,
}

impl RaftGroup {
    pub fn new(config: Config, store: MemStorage) -> Result<RaftGroup, RaftError> {
        Ok(RaftGroup { _config: config, _store: store })
    }
    pub fn tick(&mut self) {
        todo!()
    }
    pub fn step(&mut self, _msg: Message) -> Result<(), RaftError> {
        todo!()
    }
    /// Appends `data` to the leader's log; returns the index it will commit at.
    pub fn propose(&mut self, _data: Vec<u8>) -> Result<Index, RaftError> {
        todo!()
    }
    /// Starts a linearizable read; the answer arrives as a `ReadState` with `context`.
    pub fn read_index(&mut self, _context: u64) -> Result<(), RaftError> {
        todo!()
    }
    pub fn transfer_leader(&mut self, _to: NodeId) {
        todo!()
    }
    /// Starts an election now (used to elect a single-node group without waiting).
    pub fn campaign(&mut self) {
        todo!()
    }
    pub fn has_ready(&self) -> bool {
        todo!()
    }
    pub fn ready(&mut self) -> Ready {
        todo!()
    }
    pub fn advance(&mut self, _ready: Ready) {
        todo!()
    }
    /// The driver wrote a state machine snapshot at `snapshot.meta.index` (<= applied);
    /// drop log entries up to it and serve it to lagging followers.
    pub fn compact(&mut self, _snapshot: Snapshot) -> Result<(), RaftError> {
        todo!()
    }
    pub fn status(&self) -> Status {
        todo!()
    }
    pub fn leader(&self) -> Option<NodeId> {
        todo!()
    }
    pub fn role(&self) -> Role {
        todo!()
    }
    /// Idle (leader with every follower caught up, or follower with a live leader):
    /// the node may stop ticking it. (Quiescence is a later issue; may return false.)
    pub fn is_quiescent(&self) -> bool {
        false
    }
    pub fn store(&self) -> &MemStorage {
        &self._store
    }
}
