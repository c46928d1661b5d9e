//! The peer protocol: the hello that opens every connection and the batches of Raft
//! messages that follow it.

use serde::{Deserialize, Serialize};

use super::{PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};
use crate::raft::{Message, NodeId};
use crate::range::descriptor::RangeId;

/// A Raft message addressed to one range's replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub range: RangeId,
    pub message: Message,
}

/// First frame on every connection, answered by a `HelloReply`. Its layout is the
/// same in every protocol version from 3 on (`HelloRole` may only gain variants), so
/// any two versions can find the highest they both speak.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub min_version: u32,
    pub max_version: u32,
    pub role: HelloRole,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloRole {
    /// A peer's one-way link for Raft messages. `identity` is its data directory's
    /// (storage/datadir.rs); `cluster` 0 means its data directory belongs to no
    /// cluster yet: it asks to be told the cluster it was founded with (the reply's
    /// `cluster` and `identities`). `founding` digests the flags a cluster is created
    /// with (`--peers`, `--split-keys`), so founders started with different ones are
    /// told so instead of forming a cluster that disagrees on its ranges.
    Peer {
        cluster: u64,
        from: NodeId,
        identity: u64,
        founding: u64,
    },
    Client,
    /// A member's one-way link for Raft messages (protocol 4 on; founders still say
    /// `Peer` while founding). `address` is where it listens: a member that has not
    /// applied the change that added it yet (it missed it, and the new member may be
    /// the leader that would tell it) still accepts it and links back.
    Member {
        cluster: u64,
        from: NodeId,
        identity: u64,
        address: String,
    },
}

/// The acceptor's answer to a `Hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Frames after this are in protocol `version`. `cluster` is the acceptor's (0:
    /// it belongs to none yet, the dialer tries again later), `node` and `identity`
    /// who it is, so a peer checks it reached the member it dialed; a peer that asked
    /// with cluster 0 also gets every member's identity.
    Accepted {
        version: u32,
        cluster: u64,
        node: NodeId,
        identity: u64,
        identities: Vec<(NodeId, u64)>,
    },
    /// The connection is closed. `permanent`: retrying cannot help (another cluster,
    /// another identity, no common protocol version); otherwise it may (the node is
    /// starting).
    Refused { reason: String, permanent: bool },
    /// The dialing peer was removed from the cluster (`rangedb node remove`): it
    /// stops for good. (A removed node may not learn it from its own log: its last
    /// entries are no longer replicated to it.)
    Removed { reason: String },
}

/// The hello of protocol versions 1 and 2, recognised only to refuse it by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LegacyHello {
    Peer { version: u32, cluster: u64, from: NodeId },
    Client { version: u32 },
}

impl Hello {
    /// This node's hello: every version it speaks.
    pub fn new(role: HelloRole) -> Hello {
        Hello { min_version: PROTOCOL_VERSION_MIN, max_version: PROTOCOL_VERSION, role }
    }

    /// The highest version both this node and the hello's sender speak.
    ///
    /// # Errors
    /// The reason, when their ranges do not meet.
    pub fn negotiate(&self) -> Result<u32, String> {
        let version = self.max_version.min(PROTOCOL_VERSION);
        if version < self.min_version.max(PROTOCOL_VERSION_MIN) {
            return Err(format!(
                "no common protocol version: it speaks {} to {}, this node \
                 {PROTOCOL_VERSION_MIN} to {PROTOCOL_VERSION}",
                self.min_version, self.max_version
            ));
        }
        Ok(version)
    }
}

/// Every frame after a peer's hello: all messages for this peer from one flush.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerBatch {
    pub envelopes: Vec<Envelope>,
}
