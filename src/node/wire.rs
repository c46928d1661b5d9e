//! Everything that crosses a socket: the frame format, the connection hello, peer
//! batches and the client protocol.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload` where payload is bincode 2
//! (standard config) of one value. `len` is the payload length and is at most
//! `MAX_FRAME_BYTES`; a longer length, a bad checksum or an undecodable payload is
//! rejected and the connection dropped.

use serde::{Deserialize, Serialize};

use crate::raft::{Message, NodeId};
use crate::range::descriptor::{RangeDescriptor, RangeId};

/// Largest payload accepted on any connection (a snapshot chunk plus headroom).
pub const MAX_FRAME_BYTES: u32 = 16 << 20;

/// Protocol version in the hello; a mismatch is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// A Raft message addressed to one range's replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub range: RangeId,
    pub message: Message,
}

/// First frame on every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hello {
    Peer { version: u32, cluster: u64, from: NodeId },
    Client { version: u32 },
}

/// Every frame after a peer's hello: all messages for this peer from one flush.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerBatch {
    pub envelopes: Vec<Envelope>,
}

/// Identifies a client write so a retry is applied once. `client` is random per
/// client instance, `seq` increases per write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub seq: u64,
}

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
    Put { key: Vec<u8>, value: Vec<u8>, request_id: RequestId },
    Delete { key: Vec<u8>, request_id: RequestId },
    /// `revision`: read as of that revision of the key's range (None: latest).
    Get { key: Vec<u8>, revision: Option<u64>, consistency: ReadConsistency },
    /// Scans `[start, end)` clipped to the range owning `start`; the client continues
    /// in the next range when `Response::Scan::resume` says so.
    Scan { start: Vec<u8>, end: Option<Vec<u8>>, limit: u64, revision: Option<u64> },
    /// The range descriptors this node knows (read from the `_/` meta keys).
    RangeTable,
    /// This node's view of every range replica it hosts.
    Status,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision that wrote this version.
    pub revision: u64,
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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub address: String,
    /// Every peer with its address and whether the link is up.
    pub peers: Vec<(NodeId, String, bool)>,
    pub ranges: Vec<RangeStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// `revision`: the range revision (Raft index) the write applied at.
    Put { revision: u64 },
    Delete { revision: u64, existed: bool },
    Get { kv: Option<KeyValue>, read_revision: u64 },
    /// `resume`: the key to continue from (the next range's start) when the scan was
    /// clipped at a range boundary and the limit not reached.
    Scan { kvs: Vec<KeyValue>, resume: Option<Vec<u8>>, read_revision: u64 },
    RangeTable { ranges: Vec<RangeDescriptor>, addresses: Vec<(NodeId, String)> },
    Status(NodeStatus),
    /// Ask `leader` (at `address`) instead; both None when no leader is known.
    NotLeader { range: RangeId, leader: Option<NodeId>, address: Option<String> },
    /// The revision asked for is compacted away or in the future.
    RevisionUnavailable { revision: u64, first: u64, last: u64 },
    /// The request is malformed (reserved key, empty key, too large).
    Invalid { reason: String },
    /// The node is shutting down or overloaded; retry elsewhere.
    Unavailable { reason: String },
}

/// Why a frame was refused. Any of these closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLarge { len: u32, max: u32 },
    #[error("frame checksum mismatch (expected {expected:#010x}, got {actual:#010x})")]
    Checksum { expected: u32, actual: u32 },
    #[error("undecodable frame payload: {0}")]
    Decode(String),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes one value as a complete frame. (STUB)
pub fn encode_frame<T: Serialize>(_value: &T) -> Vec<u8> {
    todo!()
}

/// Decodes one frame from the front of `buf`: `Ok(None)` if `buf` holds only part of
/// a frame, else the value and the number of bytes consumed. Pure, for fuzzing. (STUB)
pub fn decode_frame<T: serde::de::DeserializeOwned>(
    _buf: &[u8],
) -> Result<Option<(T, usize)>, WireError> {
    todo!()
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames. (STUB)
pub async fn read_frame<T, R>(_reader: &mut R) -> Result<Option<T>, WireError>
where
    T: serde::de::DeserializeOwned,
    R: tokio::io::AsyncRead + Unpin,
{
    todo!()
}

/// Writes one frame (not flushed). (STUB)
pub async fn write_frame<T, W>(_writer: &mut W, _value: &T) -> Result<(), WireError>
where
    T: Serialize,
    W: tokio::io::AsyncWrite + Unpin,
{
    todo!()
}
