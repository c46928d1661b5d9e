//! The node: one event loop driving every range replica hosted here.

pub mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::raft::NodeId;

/// How a `rangedb server` was asked to run.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub node_id: NodeId,
    /// Address to listen on for clients and peers.
    pub listen: String,
    /// Every member of the cluster including this node (id -> address). A single
    /// entry (this node) is a single-node cluster.
    pub peers: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    /// Range boundaries when the cluster is created (ignored on restart).
    pub split_keys: Option<Vec<Vec<u8>>>,
    /// Raft tick interval.
    pub tick_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: String, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Runs a server until `shutdown` resolves; then stops accepting, fails in-flight
/// requests, syncs the WAL and returns. (STUB)
pub async fn run_server(
    _config: ServerConfig,
    _shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    todo!()
}
