//! The data directory: lock, VERSION, cluster metadata.
//!
//! # Layout
//! ```text
//! <data>/LOCK          fs2 exclusive lock held while the node runs
//! <data>/VERSION       "rangedb-data 1\n"; any other content is refused
//! <data>/META          crc32 u32 LE | len u32 LE | bincode(ClusterMeta)
//! <data>/wal/          WAL segments (see wal.rs)
//! <data>/snap/         snapshot files (see snapshot.rs)
//! ```

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{io_err, read_whole, write_atomic, StorageError};
use crate::env::{DirLock, Disk};
use crate::raft::NodeId;

/// The exact content of the VERSION file of the on-disk format this code writes.
pub const VERSION_CONTENT: &str = "rangedb-data 1\n";
const VERSION_FILE: &str = "VERSION";
const META_FILE: &str = "META";
/// Size of the META header: crc32 then payload length, both u32 LE.
const META_HEADER_BYTES: usize = 8;

/// Fixed when the node first starts; later starts must agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub cluster_id: u64,
    pub node_id: NodeId,
    pub peers: BTreeMap<NodeId, String>,
    pub split_keys: Vec<Vec<u8>>,
}

/// An open, locked data directory. The lock is held as long as this value lives.
pub struct DataDir {
    pub path: PathBuf,
    disk: Arc<dyn Disk>,
    _lock: Box<dyn DirLock>,
}

impl DataDir {
    /// Creates the directory if needed, locks it, checks (or writes) VERSION and
    /// creates the `wal/` and `snap/` subdirectories.
    ///
    /// # Errors
    /// `Locked` when another rangedb process holds the directory, `Format` when
    /// VERSION is not this format's, `Io` otherwise.
    pub fn open(disk: Arc<dyn Disk>, path: &Path) -> Result<DataDir, StorageError> {
        disk.create_dir_all(path).map_err(io_err("create directory", path))?;
        let lock = match disk.lock_dir(path) {
            Ok(lock) => lock,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(StorageError::Locked { path: path.to_path_buf() });
            }
            Err(e) => {
                return Err(StorageError::Io { op: "lock", path: path.to_path_buf(), source: e })
            }
        };
        let data_dir = DataDir { path: path.to_path_buf(), disk, _lock: lock };
        data_dir.check_version()?;
        for sub in [data_dir.wal_dir(), data_dir.snap_dir()] {
            data_dir.disk.create_dir_all(&sub).map_err(io_err("create directory", &sub))?;
        }
        data_dir.disk.sync_dir(path).map_err(io_err("sync directory", path))?;
        Ok(data_dir)
    }

    /// Writes VERSION into a fresh directory or checks the existing one.
    fn check_version(&self) -> Result<(), StorageError> {
        let version_path = self.path.join(VERSION_FILE);
        if !self.disk.exists(&version_path) {
            return write_atomic(&*self.disk, &self.path, VERSION_FILE, VERSION_CONTENT.as_bytes());
        }
        let content = read_whole(&*self.disk, &version_path)?;
        if content != VERSION_CONTENT.as_bytes() {
            let found = String::from_utf8_lossy(&content);
            return Err(StorageError::Format {
                path: self.path.clone(),
                reason: format!(
                    "VERSION is {:?}, this rangedb only reads {:?}",
                    found.trim_end(),
                    VERSION_CONTENT.trim_end()
                ),
            });
        }
        Ok(())
    }

    /// The cluster metadata, or None if the node never stored it.
    ///
    /// # Errors
    /// `Corrupt` when the file fails its checksum or does not decode.
    pub fn load_meta(&self) -> Result<Option<ClusterMeta>, StorageError> {
        let path = self.path.join(META_FILE);
        if !self.disk.exists(&path) {
            return Ok(None);
        }
        let bytes = read_whole(&*self.disk, &path)?;
        let corrupt = |reason: &str| StorageError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason: reason.to_string(),
        };
        if bytes.len() < META_HEADER_BYTES {
            return Err(corrupt("file shorter than its header"));
        }
        let crc = u32::from_le_bytes(bytes[0..4].try_into().expect("slice of 4"));
        let len = u32::from_le_bytes(bytes[4..8].try_into().expect("slice of 4")) as u64;
        let payload = &bytes[META_HEADER_BYTES..];
        if payload.len() as u64 != len {
            return Err(corrupt("length does not match the header"));
        }
        if crc32fast::hash(payload) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        let (meta, _) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
            .map_err(|e| corrupt(&format!("undecodable: {e}")))?;
        Ok(Some(meta))
    }

    /// Written once, atomically (temp, fsync, rename, dir fsync).
    ///
    /// # Errors
    /// `Io` when a file operation fails.
    pub fn store_meta(&self, meta: &ClusterMeta) -> Result<(), StorageError> {
        let payload = bincode::serde::encode_to_vec(meta, bincode::config::standard())
            .expect("ClusterMeta always encodes");
        let len = u32::try_from(payload.len()).expect("cluster metadata is far below 4 GiB");
        let mut bytes = Vec::with_capacity(META_HEADER_BYTES + payload.len());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&payload);
        write_atomic(&*self.disk, &self.path, META_FILE, &bytes)
    }

    /// The WAL segment directory.
    pub fn wal_dir(&self) -> PathBuf {
        self.path.join("wal")
    }

    /// The snapshot directory.
    pub fn snap_dir(&self) -> PathBuf {
        self.path.join("snap")
    }

    /// The disk this directory lives on.
    pub fn disk(&self) -> Arc<dyn Disk> {
        self.disk.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::real_disk::RealDisk;

    fn disk() -> Arc<dyn Disk> {
        Arc::new(RealDisk)
    }

    fn sample_meta() -> ClusterMeta {
        let mut peers = BTreeMap::new();
        peers.insert(NodeId(1), "127.0.0.1:7001".to_string());
        peers.insert(NodeId(2), "127.0.0.1:7002".to_string());
        ClusterMeta { cluster_id: 42, node_id: NodeId(1), peers, split_keys: vec![b"m".to_vec()] }
    }

    #[test]
    fn second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(disk(), dir.path()).unwrap();
        let err = DataDir::open(disk(), dir.path()).err().expect("second open must fail");
        assert!(matches!(err, StorageError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("locked by another rangedb process"), "{err}");
        drop(first);
        DataDir::open(disk(), dir.path()).expect("reopen after the first is dropped");
    }

    #[test]
    fn creates_layout_and_rejects_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = DataDir::open(disk(), dir.path()).unwrap();
        assert!(data_dir.wal_dir().is_dir());
        assert!(data_dir.snap_dir().is_dir());
        drop(data_dir);
        std::fs::write(dir.path().join(VERSION_FILE), "rangedb-data 2\n").unwrap();
        let err = DataDir::open(disk(), dir.path()).err().expect("version mismatch");
        assert!(matches!(err, StorageError::Format { .. }), "{err}");
        assert!(err.to_string().contains("rangedb-data 2"), "{err}");
    }

    #[test]
    fn meta_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = DataDir::open(disk(), dir.path()).unwrap();
        assert_eq!(data_dir.load_meta().unwrap(), None);
        data_dir.store_meta(&sample_meta()).unwrap();
        assert_eq!(data_dir.load_meta().unwrap(), Some(sample_meta()));
        drop(data_dir);
        let data_dir = DataDir::open(disk(), dir.path()).unwrap();
        assert_eq!(data_dir.load_meta().unwrap(), Some(sample_meta()));
        let meta_path = dir.path().join(META_FILE);
        let mut bytes = std::fs::read(&meta_path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&meta_path, bytes).unwrap();
        let err = data_dir.load_meta().expect_err("corrupt meta");
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    }
}
