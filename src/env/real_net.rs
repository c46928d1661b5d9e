//! Production peer links over tokio TCP. (STUB)

use std::collections::BTreeMap;

use crate::node::wire::Envelope;
use crate::raft::NodeId;

use super::Network;

/// One outgoing link per peer, each a task that connects (with backoff), sends the
/// hello and then one frame per `send` call.
pub struct TcpNetwork {}

impl TcpNetwork {
    /// Must be called inside a tokio runtime: spawns one task per peer.
    pub fn new(_me: NodeId, _cluster: u64, _peers: BTreeMap<NodeId, String>) -> TcpNetwork {
        TcpNetwork {}
    }
}

impl Network for TcpNetwork {
    fn send(&self, _to: NodeId, _batch: Vec<Envelope>) {
        todo!()
    }
    fn is_connected(&self, _to: NodeId) -> bool {
        todo!()
    }
}
