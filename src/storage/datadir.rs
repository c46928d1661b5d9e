//! The data directory: lock, VERSION, cluster metadata. (STUB)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::StorageError;
use crate::env::{DirLock, Disk};
use crate::raft::NodeId;

/// Fixed when the node first starts; later starts must agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub cluster_id: u64,
    pub node_id: NodeId,
    pub peers: BTreeMap<NodeId, String>,
    pub split_keys: Vec<Vec<u8>>,
}

pub struct DataDir {
    pub path: PathBuf,
    _lock: Box<dyn DirLock>,
}

impl DataDir {
    /// Creates the directory if needed, locks it, checks VERSION.
    pub fn open(_disk: Arc<dyn Disk>, _path: &Path) -> Result<DataDir, StorageError> {
        todo!()
    }
    pub fn load_meta(&self) -> Result<Option<ClusterMeta>, StorageError> {
        todo!()
    }
    /// Written once, atomically (temp, fsync, rename, dir fsync).
    pub fn store_meta(&self, _meta: &ClusterMeta) -> Result<(), StorageError> {
        todo!()
    }
    pub fn wal_dir(&self) -> PathBuf {
        self.path.join("wal")
    }
    pub fn snap_dir(&self) -> PathBuf {
        self.path.join("snap")
    }
}
