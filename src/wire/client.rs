//! The client protocol: pipelined requests answered by id.

use serde::{Deserialize, Serialize};

use crate::raft::NodeId;
use crate::range::descriptor::{RangeDescriptor, RangeId};
use crate::range::kv::{Freeze, KeyValue, RequestId};
use crate::range::settings::RangeSettings;
use crate::range::txn::{LockInfo, TxnId, TxnOp, TxnResult};

/// Client frame: requests are pipelined on a connection and answered by `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    pub id: u64,
    pub request: Request,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResponse {
    pub id: u64,
    pub response: Response,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadConsistency {
    /// ReadIndex (or a valid leader lease): sees every write acknowledged before it.
    Linearizable,
    /// Leader lease only; falls back to ReadIndex when the lease is not valid.
    Lease,
    /// This node's replica as it is now, leader or not: may be stale (etcd's
    /// "serializable"). For inspecting replicas and for reads that can lag.
    Local,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Put {
        #[serde(with = "crate::byte_serde::vec")]
        key: Vec<u8>,
        #[serde(with = "crate::byte_serde::vec")]
        value: Vec<u8>,
        request_id: RequestId,
    },
    Delete {
        #[serde(with = "crate::byte_serde::vec")]
        key: Vec<u8>,
        request_id: RequestId,
    },
    /// `revision`: read as of that revision of the key's range (None: latest).
    Get {
        #[serde(with = "crate::byte_serde::vec")]
        key: Vec<u8>,
        revision: Option<u64>,
        consistency: ReadConsistency,
    },
    /// Scans `[start, end)` clipped to the range owning `start`; the client continues
    /// in the next range when `Response::Scan::resume` says so.
    Scan { start: Vec<u8>, end: Option<Vec<u8>>, limit: u64, revision: Option<u64> },
    /// The range descriptors this node knows (read from the `_/` meta keys).
    RangeTable,
    /// This node's view of every range replica it hosts.
    Status,
    /// Changes who holds replicas of `range` (sent to its leader; answered once the
    /// entry that makes the change is committed, `Response::Membership`).
    ChangeReplicas { range: RangeId, op: ReplicaOp },
    /// A node started with `--join` asks whether it was added (`rangedb node add`):
    /// `identity` is its data directory's, `address` where it listens.
    Join { identity: u64, address: String },
    /// A transaction step (`range::txn::TxnOp`) in the range of `key`, every key of
    /// which must be in that range. `request_id` deduplicates retried 1PC commits.
    Txn {
        #[serde(with = "crate::byte_serde::vec")]
        key: Vec<u8>,
        op: TxnOp,
        request_id: Option<RequestId>,
    },
    /// A transaction's record, read linearizably from the range of `anchor`.
    TxnStatus {
        #[serde(with = "crate::byte_serde::vec")]
        anchor: Vec<u8>,
        txn: TxnId,
    },
    /// The transactions holding locks or unresolved records in the range of `key`
    /// (at most `limit`), read linearizably: what the lock janitor looks at.
    TxnLocks {
        #[serde(with = "crate::byte_serde::vec")]
        key: Vec<u8>,
        limit: u32,
    },
    /// `rangedb admin config set`: writes the runtime setting `name` (range::settings)
    /// under `_/cluster/config/` in the meta range, through Raft; the node checks the
    /// name and value. Answered `Put` with the revision it applied at.
    ConfigSet { name: String, value: String, request_id: RequestId },
    /// `rangedb admin meta list`: rangedb's own keys in `[start, end)`, both under
    /// `_/`, read linearizably from the meta range (ordinary scans pass over it).
    /// Answered `Scan` (no resume: the meta range holds every such key).
    MetaScan {
        #[serde(with = "crate::byte_serde::vec")]
        start: Vec<u8>,
        #[serde(with = "crate::byte_serde::vec")]
        end: Vec<u8>,
        limit: u64,
    },
    /// A backup's step in the range of `key` (src/backup/; protocol 6).
    Backup {
        #[serde(with = "crate::byte_serde::vec")]
        key: Vec<u8>,
        op: BackupOp,
    },
    /// Bytes from `offset` of the image of `range` this node captured for `backup`
    /// (`BackupOp::Capture`), answered by `BackupChunk`; the last chunk lets it go.
    BackupFetch { backup: u64, range: RangeId, offset: u64 },
    /// `rangedb admin split KEY` (protocol 7): the meta range's leader plans the split
    /// of the range holding `key` at `key`, answered `Split` once planned; the range
    /// splits when its leader sees the plan.
    Split {
        #[serde(with = "crate::byte_serde::vec")]
        key: Vec<u8>,
    },
}

/// A backup's step in one range (its leader does it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupOp {
    /// Holds the range still through Raft (`WriteOp::Freeze`) for at most `hold_ms`;
    /// answered by `BackupFrozen` once applied.
    Freeze { backup: u64, hold_ms: u64 },
    /// Copies the range's state, which must be held for `backup`, in memory on this
    /// node (fetched with `BackupFetch`); answered by `BackupCaptured`.
    Capture { backup: u64 },
    /// Ends the freeze (`WriteOp::Unfreeze`); answered by `BackupUnfrozen`.
    Unfreeze { backup: u64 },
}

/// A range's state captured for a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    pub range: RangeId,
    /// The freeze it was captured under (its index is the backup's point in the log).
    pub freeze: Freeze,
    /// The applied index of the copy (>= the freeze's: no-ops may follow it).
    pub applied: u64,
    /// Live keys in the copy.
    pub keys: u64,
    /// The node holding the copy, where `BackupFetch` goes.
    pub address: String,
}

/// A change of one range's replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaOp {
    /// A new node receives the range's log; `address` and `identity` tell every node
    /// who it is.
    AddLearner { node: NodeId, address: String, identity: u64 },
    /// A learner becomes a voter (through a joint configuration).
    Promote { node: NodeId },
    /// The node holds no replica any more; `last`: it is the meta range's change, the
    /// last of a `node remove`, and the node leaves the cluster with it.
    Remove { node: NodeId, last: bool },
    /// In one joint change: `remove` stops voting, the learner `add` starts; `last`
    /// as for `Remove`.
    Replace { remove: NodeId, add: NodeId, last: bool },
}

/// One range's configuration as its leader has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeMembership {
    pub range: RangeId,
    pub voters: Vec<NodeId>,
    /// Non-empty while a change of voters is joint.
    pub outgoing: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeStatus {
    pub descriptor: RangeDescriptor,
    pub role: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub voters: Vec<NodeId>,
    /// Non-empty while a change of voters is joint: the voters before it.
    pub outgoing: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// On the leader: the log index each member holds (how far behind it is).
    pub matched: Vec<(NodeId, u64)>,
    /// The replica's settings as applied (`range::settings::RangeSettings`).
    pub settings: RangeSettings,
    /// Live keys and their bytes (keys plus newest values) at the applied index.
    pub keys: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinInfo {
    pub cluster: u64,
    pub node: NodeId,
    /// Every member: id, address, identity.
    pub members: Vec<(NodeId, String, u64)>,
    pub removed: Vec<NodeId>,
    pub founders: Vec<NodeId>,
    pub split_keys: Vec<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub address: String,
    /// The cluster, this node's data directory identity, and every member's identity
    /// as this node knows them (storage/datadir.rs).
    pub cluster: u64,
    pub identity: u64,
    pub identities: Vec<(NodeId, u64)>,
    /// Every peer with its address and whether the link is up.
    pub peers: Vec<(NodeId, String, bool)>,
    /// Members removed from the cluster.
    pub removed: Vec<NodeId>,
    pub ranges: Vec<RangeStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// `revision`: the range revision (Raft index) the write applied at.
    Put {
        revision: u64,
    },
    Delete {
        revision: u64,
        existed: bool,
    },
    /// `lock`: another transaction's write intent on the key; `kv` is the committed
    /// version, which the client may only return once it knows the intent's
    /// transaction had not committed (`client::txn`).
    Get {
        kv: Option<KeyValue>,
        read_revision: u64,
        lock: Option<LockInfo>,
    },
    /// `resume`: the key to continue from (the next range's start) when the scan was
    /// clipped at a range boundary and the limit not reached.
    Scan {
        kvs: Vec<KeyValue>,
        resume: Option<Vec<u8>>,
        read_revision: u64,
        /// Write intents of transactions in the part scanned (as `Get::lock`).
        locks: Vec<LockInfo>,
    },
    /// A put or delete found a transaction's lock on its key: nothing was done.
    Locked {
        lock: LockInfo,
    },
    Txn(TxnResult),
    TxnLocks {
        locks: Vec<LockInfo>,
    },
    RangeTable {
        ranges: Vec<RangeDescriptor>,
        addresses: Vec<(NodeId, String)>,
    },
    Status(NodeStatus),
    Membership(RangeMembership),
    /// The answer to `Join` for a node that was added: everything it needs to start.
    Joined(JoinInfo),
    /// The range is held for `freeze.backup` (`BackupOp::Freeze`).
    BackupFrozen {
        freeze: Freeze,
    },
    BackupCaptured(Captured),
    /// `held`: the backup's freeze was in force until this unfreeze (false: it had
    /// expired, so the ranges were not all held at one moment).
    BackupUnfrozen {
        held: bool,
    },
    /// Bytes of a captured image from the offset asked; `total` is its whole size.
    BackupChunk {
        total: u64,
        #[serde(with = "crate::byte_serde::vec")]
        data: Vec<u8>,
    },
    /// The range the request went to no longer owns its key (it split since the
    /// client or the node routed it): nothing was done; `descriptor` is the range's
    /// now. The client refreshes its table and retries (protocol 7).
    WrongRange {
        range: RangeId,
        descriptor: RangeDescriptor,
    },
    /// A split planned: the two descriptors (protocol 7).
    Split {
        left: Box<RangeDescriptor>,
        right: Box<RangeDescriptor>,
    },
    /// Ask `leader` (at `address`) instead; both None when no leader is known.
    NotLeader {
        range: RangeId,
        leader: Option<NodeId>,
        address: Option<String>,
    },
    /// The revision asked for is compacted away or in the future.
    RevisionUnavailable {
        revision: u64,
        first: u64,
        last: u64,
    },
    /// The request is malformed (reserved key, empty key, too large).
    Invalid {
        reason: String,
    },
    /// The node is shutting down or overloaded; retry elsewhere.
    Unavailable {
        reason: String,
    },
}
