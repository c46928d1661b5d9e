//! The peer protocol: the hello that opens every connection and the batches of Raft
//! messages that follow it.

use serde::{Deserialize, Serialize};

use crate::raft::{Message, NodeId};
use crate::range::descriptor::RangeId;

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
