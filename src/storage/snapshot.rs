//! Snapshot files, one current per range.
//!
//! A snapshot of range `r` at index `i` lives in `<r:016x>-<i:016x>.snap`:
//! ```text
//! "RDBSNAP1" | payload len: u64 LE | crc32(payload): u32 LE | payload = bincode(Snapshot)
//! ```
//! Files are written to `<name>.tmp`, fsynced, renamed and the directory fsynced, so a
//! `.snap` name only ever refers to a complete file; `.tmp` leftovers of a crash are
//! removed by `open`. Hex names sort by (range, index), so the newest snapshot of a
//! range is the last of its names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{io_err, read_whole, write_atomic, StorageError};
use crate::env::Disk;
use crate::raft::{Index, Snapshot};
use crate::range::descriptor::RangeId;

const MAGIC: &[u8; 8] = b"RDBSNAP1";
/// magic (8) + payload length (8) + crc32 (4).
const HEADER_BYTES: usize = 20;
const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".tmp";

/// The snapshot directory of a node.
pub struct SnapshotStore {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
}

/// Parses `<range:016x>-<index:016x>.snap`; None for any other name.
fn parse_name(name: &str) -> Option<(RangeId, Index)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (range, index) = stem.split_once('-')?;
    if range.len() != 16 || index.len() != 16 {
        return None;
    }
    let range = u64::from_str_radix(range, 16).ok()?;
    let index = u64::from_str_radix(index, 16).ok()?;
    Some((RangeId(range), index))
}

fn file_name(range: RangeId, index: Index) -> String {
    format!("{:016x}-{:016x}{SUFFIX}", range.0, index)
}

/// Frames a snapshot for its file.
fn encode(snapshot: &Snapshot) -> Vec<u8> {
    // The payload is encoded straight after a placeholder header (one copy of the
    // state machine image, not two), then the header is filled in.
    let mut bytes = Vec::with_capacity(HEADER_BYTES + snapshot.data.len() + 256);
    bytes.resize(HEADER_BYTES, 0);
    bincode::serde::encode_into_std_write(snapshot, &mut bytes, bincode::config::standard())
        .expect("Snapshot always encodes into memory");
    let payload_len = (bytes.len() - HEADER_BYTES) as u64;
    let crc = crc32fast::hash(&bytes[HEADER_BYTES..]);
    bytes[0..8].copy_from_slice(MAGIC);
    bytes[8..16].copy_from_slice(&payload_len.to_le_bytes());
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Checks and decodes a snapshot file's bytes; the error is the reason.
fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!("file of {} bytes is shorter than the header", bytes.len()));
    }
    if &bytes[0..8] != MAGIC {
        return Err("bad magic".to_string());
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("slice of 8"));
    let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("slice of 4"));
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() as u64 != len {
        return Err(format!("payload is {} bytes, header says {len}", payload.len()));
    }
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".to_string());
    }
    let (snapshot, used) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .map_err(|e| format!("undecodable: {e}"))?;
    if used != payload.len() {
        return Err(format!("{} trailing bytes after the snapshot", payload.len() - used));
    }
    Ok(snapshot)
}

impl SnapshotStore {
    /// Opens the directory (creating it) and removes temporary files a crash left.
    ///
    /// # Errors
    /// `Io` when listing or removing fails.
    pub fn open(disk: Arc<dyn Disk>, dir: &Path) -> Result<SnapshotStore, StorageError> {
        disk.create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let names = disk.list(dir).map_err(io_err("list", dir))?;
        let mut removed = false;
        for name in names.iter().filter(|name| name.ends_with(TMP_SUFFIX)) {
            let path = dir.join(name);
            disk.remove_file(&path).map_err(io_err("remove", &path))?;
            removed = true;
        }
        if removed {
            disk.sync_dir(dir).map_err(io_err("sync directory", dir))?;
        }
        Ok(SnapshotStore { disk, dir: dir.to_path_buf() })
    }

    /// Writes to a temporary name, fsyncs, renames, fsyncs the directory; then
    /// removes the range's older snapshots.
    ///
    /// # Errors
    /// `Io` when a file operation fails; the previous snapshot then stays current.
    pub fn save(&mut self, range: RangeId, snapshot: &Snapshot) -> Result<(), StorageError> {
        let index = snapshot.meta.index;
        let name = file_name(range, index);
        write_atomic(&*self.disk, &self.dir, &name, &encode(snapshot))?;
        // The new file is durable, so older ones are garbage now.
        let mut removed = false;
        for (old_index, old_name) in self.list_range(range)? {
            if old_index < index {
                let path = self.dir.join(&old_name);
                self.disk.remove_file(&path).map_err(io_err("remove", &path))?;
                removed = true;
            }
        }
        if removed {
            self.disk.sync_dir(&self.dir).map_err(io_err("sync directory", &self.dir))?;
        }
        Ok(())
    }

    /// The newest snapshot of `range`, None if it has none.
    ///
    /// A corrupt newest file is an error rather than a reason to fall back to an
    /// older file: the WAL may already have released the entries between the older
    /// snapshot and the newest one, so the fallback would silently lose committed
    /// writes. (Older files are deleted after a save anyway, so one rarely exists.)
    ///
    /// # Errors
    /// `Corrupt` naming the file when it fails its checks; `Io` otherwise.
    pub fn load(&self, range: RangeId) -> Result<Option<Snapshot>, StorageError> {
        let Some((index, name)) = self.list_range(range)?.pop() else {
            return Ok(None);
        };
        let path = self.dir.join(&name);
        let bytes = read_whole(&*self.disk, &path)?;
        let snapshot = decode(&bytes).map_err(|reason| StorageError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason,
        })?;
        if snapshot.meta.index != index {
            let reason = format!("holds index {}, name says {index}", snapshot.meta.index);
            return Err(StorageError::Corrupt { path, offset: 0, reason });
        }
        Ok(Some(snapshot))
    }

    /// Renames a damaged snapshot file to `*.damaged` (kept for inspection, ignored by
    /// `load`), durably. Returns the new path.
    ///
    /// # Errors
    /// `Io` when the rename or the directory fsync fails.
    pub fn quarantine(&self, path: &Path) -> Result<PathBuf, StorageError> {
        let mut to = path.to_path_buf().into_os_string();
        to.push(".damaged");
        let to = PathBuf::from(to);
        self.disk.rename(path, &to).map_err(io_err("rename", path))?;
        self.disk.sync_dir(&self.dir).map_err(io_err("sync directory", &self.dir))?;
        Ok(to)
    }

    /// Every range that has at least one snapshot file, ascending.
    ///
    /// # Errors
    /// `Io` when the directory cannot be listed.
    pub fn ranges(&self) -> Result<Vec<RangeId>, StorageError> {
        let mut ranges: Vec<RangeId> =
            self.list()?.into_iter().map(|(range, _, _)| range).collect();
        ranges.dedup();
        Ok(ranges)
    }

    /// All snapshot files, sorted by (range, index).
    fn list(&self) -> Result<Vec<(RangeId, Index, String)>, StorageError> {
        let names = self.disk.list(&self.dir).map_err(io_err("list", &self.dir))?;
        let mut files: Vec<_> = names
            .into_iter()
            .filter_map(|name| parse_name(&name).map(|(range, index)| (range, index, name)))
            .collect();
        files.sort();
        Ok(files)
    }

    /// The snapshot files of `range`, oldest first.
    fn list_range(&self, range: RangeId) -> Result<Vec<(Index, String)>, StorageError> {
        let files = self.list()?.into_iter();
        Ok(files.filter(|(r, _, _)| *r == range).map(|(_, index, name)| (index, name)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::real_disk::RealDisk;
    use crate::raft::{ConfState, NodeId, SnapshotMeta};

    fn snapshot(index: Index, data: &[u8]) -> Snapshot {
        let conf_state = ConfState { voters: vec![NodeId(1), NodeId(2)], learners: vec![] };
        Snapshot { meta: SnapshotMeta { index, term: 3, conf_state }, data: data.to_vec() }
    }

    #[test]
    fn file_is_magic_length_checksum_then_the_bincode_snapshot() {
        let snapshot = snapshot(42, &[9; 1000]);
        let payload =
            bincode::serde::encode_to_vec(&snapshot, bincode::config::standard()).unwrap();
        let mut expected = MAGIC.to_vec();
        expected.extend((payload.len() as u64).to_le_bytes());
        expected.extend(crc32fast::hash(&payload).to_le_bytes());
        expected.extend(&payload);
        assert_eq!(encode(&snapshot), expected);
        assert_eq!(decode(&expected).unwrap(), snapshot);
    }

    fn open(dir: &Path) -> SnapshotStore {
        SnapshotStore::open(Arc::new(RealDisk), dir).unwrap()
    }

    #[test]
    fn save_load_round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        assert_eq!(store.load(RangeId(1)).unwrap(), None);
        store.save(RangeId(1), &snapshot(10, b"ten")).unwrap();
        store.save(RangeId(2), &snapshot(5, b"five")).unwrap();
        assert_eq!(store.load(RangeId(1)).unwrap(), Some(snapshot(10, b"ten")));
        store.save(RangeId(1), &snapshot(20, b"twenty")).unwrap();
        let store = open(dir.path());
        assert_eq!(store.load(RangeId(1)).unwrap(), Some(snapshot(20, b"twenty")));
        assert_eq!(store.load(RangeId(2)).unwrap(), Some(snapshot(5, b"five")));
        assert_eq!(store.ranges().unwrap(), vec![RangeId(1), RangeId(2)]);
        let names = RealDisk.list(dir.path()).unwrap();
        assert_eq!(names, vec![file_name(RangeId(1), 20), file_name(RangeId(2), 5)]);
    }

    #[test]
    fn corrupt_newest_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store.save(RangeId(7), &snapshot(3, b"payload")).unwrap();
        let path = dir.path().join(file_name(RangeId(7), 3));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        match store.load(RangeId(7)) {
            Err(StorageError::Corrupt { path: bad, reason, .. }) => {
                assert_eq!(bad, path);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn stray_tmp_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(format!("{}{TMP_SUFFIX}", file_name(RangeId(1), 9)));
        std::fs::write(&tmp, b"half a snapshot").unwrap();
        let store = open(dir.path());
        assert!(!tmp.exists());
        assert_eq!(store.load(RangeId(1)).unwrap(), None);
        assert!(store.ranges().unwrap().is_empty());
    }
}
