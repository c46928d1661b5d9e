//! Durable state of a node: the node-wide WAL, per-range snapshot files and the data
//! directory (lock, VERSION, cluster metadata). (STUB surface)

pub mod datadir;
pub mod snapshot;
pub mod wal;

use std::path::PathBuf;

pub use datadir::{ClusterMeta, DataDir};
pub use snapshot::SnapshotStore;
pub use wal::{RecoveredLog, Wal, WalOptions, WalRecord, WalRecovery};

/// Operating errors of the storage layer. Corruption names the file and offset.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("corrupt record in {path} at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error("data directory {path} is locked by another rangedb process")]
    Locked { path: PathBuf },
    #[error("data directory {path}: {reason}")]
    Format { path: PathBuf, reason: String },
}
