//! The data directory: lock, version, this directory's identity, cluster metadata.
//!
//! # Layout (version 2)
//! ```text
//! <data>/LOCK          fs2 exclusive lock held while the node runs
//! <data>/VERSION       "rangedb-data 2\n"
//! <data>/IDENTITY      "rangedb-identity <16 hex digits>\n": random, drawn when the
//!                      directory is first used; a wiped directory gets a new one
//! <data>/CLUSTER       crc32 u32 LE | len u32 LE | bincode(StoredCluster)
//! <data>/wal/          WAL segments (see wal.rs)
//! <data>/snap/         snapshot files (see snapshot.rs)
//! ```
//!
//! # Versions
//! A directory of a version this code does not know is refused, naming it. Version 1
//! (rangedb before identities and entry formats) is upgraded in place when opened:
//! IDENTITY is drawn, its `META` becomes `CLUSTER` (the members' identities unknown,
//! learned from their first connection), VERSION is rewritten, `META` removed. Each
//! step is atomic and the sequence is redone from the start after a crash, since
//! VERSION changes last. Its WAL records are read as they are (wal.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{io_err, read_whole, write_atomic, StorageError};
use crate::env::{random_u64, DirLock, Disk};
use crate::raft::NodeId;

/// The data directory version this code writes.
pub const DATA_VERSION: u32 = 2;
const VERSION_FILE: &str = "VERSION";
const IDENTITY_FILE: &str = "IDENTITY";
const CLUSTER_FILE: &str = "CLUSTER";
/// Version 1's cluster metadata, replaced by `CLUSTER` in version 2.
const META_V1_FILE: &str = "META";
/// Size of the CLUSTER (and version-1 META) header: crc32 then payload length.
const META_HEADER_BYTES: usize = 8;

/// The cluster this node belongs to: fixed when the node creates or joins it, except
/// the members, which change with `rangedb node add/remove` (applied from the meta
/// range's conf-change entries, node/members.rs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// Random, drawn by the node that created the cluster (in a cluster upgraded from
    /// version 1: the hash of its first flags).
    pub cluster_id: u64,
    pub node_id: NodeId,
    /// Every member's address, this node included.
    pub peers: BTreeMap<NodeId, String>,
    /// Every member's data directory identity as the cluster recorded it; a peer
    /// connecting with another one is refused. Absent: not known yet (a cluster
    /// upgraded from version 1 learns each from the member's first connection).
    pub identities: BTreeMap<NodeId, u64>,
    pub split_keys: Vec<Vec<u8>>,
    /// The voters every range was created with: the configuration at index 0 of
    /// every range's log, which a node that joins later starts its replicas from.
    pub founders: Vec<NodeId>,
    /// Members removed from the cluster: refused if they connect; their ids are
    /// never given again.
    pub removed: BTreeSet<NodeId>,
}

/// The CLUSTER file's payload: a variant per layout, so a later version can add one
/// and still read this. V3 added `founders` and `removed` (membership changes); a
/// rangedb that only knows V2 refuses V3 as undecodable.
#[derive(Serialize, Deserialize)]
enum StoredCluster {
    V2(ClusterMetaV2),
    V3(ClusterMeta),
}

/// CLUSTER version 2: before membership changes, the members were the founders.
#[derive(Serialize, Deserialize)]
struct ClusterMetaV2 {
    cluster_id: u64,
    node_id: NodeId,
    peers: BTreeMap<NodeId, String>,
    identities: BTreeMap<NodeId, u64>,
    split_keys: Vec<Vec<u8>>,
}

impl From<ClusterMetaV2> for ClusterMeta {
    fn from(v2: ClusterMetaV2) -> ClusterMeta {
        ClusterMeta {
            cluster_id: v2.cluster_id,
            node_id: v2.node_id,
            founders: v2.peers.keys().copied().collect(),
            peers: v2.peers,
            identities: v2.identities,
            split_keys: v2.split_keys,
            removed: BTreeSet::new(),
        }
    }
}

/// Version 1's META payload.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct ClusterMetaV1 {
    cluster_id: u64,
    node_id: NodeId,
    peers: BTreeMap<NodeId, String>,
    split_keys: Vec<Vec<u8>>,
}

/// An open, locked data directory. The lock is held as long as this value lives.
pub struct DataDir {
    pub path: PathBuf,
    disk: Arc<dyn Disk>,
    identity: u64,
    /// Set when `open` upgraded the directory from this version.
    pub upgraded_from: Option<u32>,
    _lock: Box<dyn DirLock>,
}

impl DataDir {
    /// Creates the directory if needed, locks it, checks VERSION (writing it into a
    /// fresh directory, upgrading an older one), reads or draws IDENTITY and creates
    /// the `wal/` and `snap/` subdirectories.
    ///
    /// # Errors
    /// `Locked` when another rangedb process holds the directory, `Format` when
    /// VERSION or IDENTITY is not one this code reads, `Corrupt` for a damaged
    /// version-1 META being upgraded, `Io` otherwise.
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
        let mut data_dir = DataDir {
            path: path.to_path_buf(),
            disk,
            identity: 0,
            upgraded_from: None,
            _lock: lock,
        };
        let version = data_dir.read_version()?;
        data_dir.identity = data_dir.load_or_draw_identity()?;
        match version {
            None => data_dir.write_version()?,
            Some(1) => {
                data_dir.upgrade_from_v1()?;
                data_dir.upgraded_from = Some(1);
            }
            Some(_) => {}
        }
        for sub in [data_dir.wal_dir(), data_dir.snap_dir()] {
            data_dir.disk.create_dir_all(&sub).map_err(io_err("create directory", &sub))?;
        }
        data_dir.disk.sync_dir(path).map_err(io_err("sync directory", path))?;
        Ok(data_dir)
    }

    fn format_error(&self, reason: String) -> StorageError {
        StorageError::Format { path: self.path.clone(), reason }
    }

    /// The directory's version: None for a fresh directory.
    fn read_version(&self) -> Result<Option<u32>, StorageError> {
        let version_path = self.path.join(VERSION_FILE);
        if !self.disk.exists(&version_path) {
            return Ok(None);
        }
        let content = read_whole(&*self.disk, &version_path)?;
        let text = String::from_utf8_lossy(&content);
        let version = text
            .strip_prefix("rangedb-data ")
            .and_then(|rest| rest.strip_suffix('\n'))
            .and_then(|number| number.parse::<u32>().ok());
        match version {
            Some(version @ 1..=DATA_VERSION) => Ok(Some(version)),
            Some(version) => Err(self.format_error(format!(
                "data directory version {version} was written by a newer rangedb; this one \
                 reads versions 1 to {DATA_VERSION}: run the newer rangedb on it"
            ))),
            None => Err(self.format_error(format!(
                "VERSION is {:?}, not a rangedb data directory version",
                text.trim_end()
            ))),
        }
    }

    fn write_version(&self) -> Result<(), StorageError> {
        let content = format!("rangedb-data {DATA_VERSION}\n");
        write_atomic(&*self.disk, &self.path, VERSION_FILE, content.as_bytes())
    }

    /// IDENTITY, drawn and written (atomically) if the directory has none yet.
    fn load_or_draw_identity(&self) -> Result<u64, StorageError> {
        let path = self.path.join(IDENTITY_FILE);
        if self.disk.exists(&path) {
            let content = read_whole(&*self.disk, &path)?;
            let text = String::from_utf8_lossy(&content);
            let identity = text
                .strip_prefix("rangedb-identity ")
                .and_then(|rest| rest.strip_suffix('\n'))
                .filter(|hex| hex.len() == 16)
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            return identity.ok_or_else(|| {
                self.format_error(format!("IDENTITY is {:?}, not an identity", text.trim_end()))
            });
        }
        // Never 0: 0 stands for "unknown" in the members' identities.
        let identity = random_u64().max(1);
        let content = format!("rangedb-identity {identity:016x}\n");
        write_atomic(&*self.disk, &self.path, IDENTITY_FILE, content.as_bytes())?;
        Ok(identity)
    }

    /// Version 1 -> 2: META becomes CLUSTER, then VERSION, then META goes.
    fn upgrade_from_v1(&self) -> Result<(), StorageError> {
        let meta_path = self.path.join(META_V1_FILE);
        if self.disk.exists(&meta_path) {
            let payload = self.read_checked(&meta_path)?;
            let (old, _): (ClusterMetaV1, usize) =
                bincode::serde::decode_from_slice(&payload, bincode::config::standard())
                    .map_err(|e| corrupt(&meta_path, &format!("undecodable: {e}")))?;
            let meta = ClusterMeta {
                cluster_id: old.cluster_id,
                node_id: old.node_id,
                identities: BTreeMap::from([(old.node_id, self.identity)]),
                founders: old.peers.keys().copied().collect(),
                peers: old.peers,
                split_keys: old.split_keys,
                removed: BTreeSet::new(),
            };
            self.store_meta(&meta)?;
        }
        self.write_version()?;
        if self.disk.exists(&meta_path) {
            self.disk.remove_file(&meta_path).map_err(io_err("remove", &meta_path))?;
            self.disk.sync_dir(&self.path).map_err(io_err("sync directory", &self.path))?;
        }
        Ok(())
    }

    /// This data directory's identity (never 0).
    pub fn identity(&self) -> u64 {
        self.identity
    }

    /// Reads a `crc | len | payload` file and returns the checked payload.
    fn read_checked(&self, path: &Path) -> Result<Vec<u8>, StorageError> {
        let bytes = read_whole(&*self.disk, path)?;
        if bytes.len() < META_HEADER_BYTES {
            return Err(corrupt(path, "file shorter than its header"));
        }
        let crc = u32::from_le_bytes(bytes[0..4].try_into().expect("slice of 4"));
        let len = u32::from_le_bytes(bytes[4..8].try_into().expect("slice of 4")) as u64;
        let payload = &bytes[META_HEADER_BYTES..];
        if payload.len() as u64 != len {
            return Err(corrupt(path, "length does not match the header"));
        }
        if crc32fast::hash(payload) != crc {
            return Err(corrupt(path, "checksum mismatch"));
        }
        Ok(payload.to_vec())
    }

    /// The cluster metadata, or None if the node does not belong to a cluster yet.
    ///
    /// # Errors
    /// `Corrupt` when the file fails its checksum or does not decode.
    pub fn load_meta(&self) -> Result<Option<ClusterMeta>, StorageError> {
        let path = self.path.join(CLUSTER_FILE);
        if !self.disk.exists(&path) {
            return Ok(None);
        }
        let payload = self.read_checked(&path)?;
        let (stored, used): (StoredCluster, usize) =
            bincode::serde::decode_from_slice(&payload, bincode::config::standard())
                .map_err(|e| corrupt(&path, &format!("undecodable: {e}")))?;
        if used != payload.len() {
            return Err(corrupt(&path, "trailing bytes"));
        }
        Ok(Some(match stored {
            StoredCluster::V2(v2) => v2.into(),
            StoredCluster::V3(meta) => meta,
        }))
    }

    /// Replaces the cluster metadata atomically (temp, fsync, rename, dir fsync).
    ///
    /// # Errors
    /// `Io` when a file operation fails.
    pub fn store_meta(&self, meta: &ClusterMeta) -> Result<(), StorageError> {
        let stored = StoredCluster::V3(meta.clone());
        let payload = bincode::serde::encode_to_vec(&stored, bincode::config::standard())
            .expect("ClusterMeta always encodes");
        let len = u32::try_from(payload.len()).expect("cluster metadata is far below 4 GiB");
        let mut bytes = Vec::with_capacity(META_HEADER_BYTES + payload.len());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&payload);
        write_atomic(&*self.disk, &self.path, CLUSTER_FILE, &bytes)
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

fn corrupt(path: &Path, reason: &str) -> StorageError {
    StorageError::Corrupt { path: path.to_path_buf(), offset: 0, reason: reason.to_string() }
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
        ClusterMeta {
            cluster_id: 42,
            node_id: NodeId(1),
            peers,
            identities: BTreeMap::from([(NodeId(1), 7), (NodeId(2), 9)]),
            split_keys: vec![b"m".to_vec()],
            founders: vec![NodeId(1), NodeId(2)],
            removed: BTreeSet::new(),
        }
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
    fn creates_layout_keeps_identity_and_rejects_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = DataDir::open(disk(), dir.path()).unwrap();
        assert!(data_dir.wal_dir().is_dir());
        assert!(data_dir.snap_dir().is_dir());
        let identity = data_dir.identity();
        assert_ne!(identity, 0);
        drop(data_dir);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(VERSION_FILE)).unwrap(),
            "rangedb-data 2\n"
        );
        let again = DataDir::open(disk(), dir.path()).unwrap();
        assert_eq!(again.identity(), identity, "the identity is drawn once");
        drop(again);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(DataDir::open(disk(), other.path()).unwrap().identity(), identity);

        std::fs::write(dir.path().join(VERSION_FILE), "rangedb-data 3\n").unwrap();
        let err = DataDir::open(disk(), dir.path()).err().expect("newer version");
        assert!(matches!(err, StorageError::Format { .. }), "{err}");
        assert!(err.to_string().contains("version 3 was written by a newer rangedb"), "{err}");
        std::fs::write(dir.path().join(VERSION_FILE), "hello\n").unwrap();
        let err = DataDir::open(disk(), dir.path()).err().expect("not a version");
        assert!(err.to_string().contains("not a rangedb data directory version"), "{err}");
        std::fs::write(dir.path().join(VERSION_FILE), "rangedb-data 2\n").unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), "rangedb-identity xyz\n").unwrap();
        let err = DataDir::open(disk(), dir.path()).err().expect("bad identity");
        assert!(err.to_string().contains("IDENTITY is"), "{err}");
    }

    #[test]
    fn version_1_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let peers = sample_meta().peers;
        let v1 = ClusterMetaV1 {
            cluster_id: 42,
            node_id: NodeId(1),
            peers: peers.clone(),
            split_keys: vec![],
        };
        let payload = bincode::serde::encode_to_vec(&v1, bincode::config::standard()).unwrap();
        let mut bytes = crc32fast::hash(&payload).to_le_bytes().to_vec();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&payload);
        std::fs::write(dir.path().join(META_V1_FILE), bytes).unwrap();
        std::fs::write(dir.path().join(VERSION_FILE), "rangedb-data 1\n").unwrap();

        let data_dir = DataDir::open(disk(), dir.path()).unwrap();
        assert_eq!(data_dir.upgraded_from, Some(1));
        let meta = data_dir.load_meta().unwrap().expect("upgraded metadata");
        assert_eq!((meta.cluster_id, meta.node_id, &meta.peers), (42, NodeId(1), &peers));
        assert_eq!(meta.identities, BTreeMap::from([(NodeId(1), data_dir.identity())]));
        assert!(!dir.path().join(META_V1_FILE).exists(), "the old file is removed");
        drop(data_dir);
        let data_dir = DataDir::open(disk(), dir.path()).unwrap();
        assert_eq!(data_dir.upgraded_from, None, "upgraded once");
        assert_eq!(data_dir.load_meta().unwrap(), Some(meta));
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
        let meta_path = dir.path().join(CLUSTER_FILE);
        let mut bytes = std::fs::read(&meta_path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&meta_path, bytes).unwrap();
        let err = data_dir.load_meta().expect_err("corrupt meta");
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    }
}
