//! Durable state of a node: the node-wide WAL, per-range snapshot files and the data
//! directory (lock, VERSION, cluster metadata).
//!
//! ```text
//!   node event loop ──append/sync──▶ Wal (wal/<seq>.wal, all ranges)
//!                   ──save/load───▶ SnapshotStore (snap/<range>-<index>.snap)
//!                   ──open────────▶ DataDir (LOCK, VERSION, META)
//! ```
//! Everything goes through `crate::env::Disk`, so the simulation's crash-lossy disk
//! exercises exactly this code.

pub mod datadir;
pub mod snapshot;
pub mod wal;

use std::path::{Path, PathBuf};

use crate::env::Disk;

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

/// Builds a `map_err` closure that wraps an io::Error with the operation and path.
pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io { op, path, source }
}

/// Reads a whole (small) file.
pub(crate) fn read_whole(disk: &dyn Disk, path: &Path) -> Result<Vec<u8>, StorageError> {
    let file = disk.open(path, false).map_err(io_err("open", path))?;
    let len = file.len().map_err(io_err("stat", path))?;
    let len = usize::try_from(len).expect("file size fits in memory");
    let mut bytes = vec![0u8; len];
    let read = file.read_at(0, &mut bytes).map_err(io_err("read", path))?;
    bytes.truncate(read);
    Ok(bytes)
}

/// Replaces `dir/name` with `bytes` atomically: writes `dir/name.tmp`, fsyncs it,
/// renames it over `name`, fsyncs `dir`.
pub(crate) fn write_atomic(
    disk: &dyn Disk,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), StorageError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    let mut file = disk.open(&tmp, true).map_err(io_err("create", &tmp))?;
    // A stale temp file from a crash may be longer than what we write now.
    file.set_len(0).map_err(io_err("truncate", &tmp))?;
    file.write_at(0, bytes).map_err(io_err("write", &tmp))?;
    file.sync().map_err(io_err("sync", &tmp))?;
    drop(file);
    disk.rename(&tmp, &target).map_err(io_err("rename", &tmp))?;
    disk.sync_dir(dir).map_err(io_err("sync directory", dir))?;
    Ok(())
}
