//! Snapshot files, one current per range. (STUB)

use std::path::Path;
use std::sync::Arc;

use super::StorageError;
use crate::env::Disk;
use crate::raft::Snapshot;
use crate::range::descriptor::RangeId;

pub struct SnapshotStore {}

impl SnapshotStore {
    pub fn open(_disk: Arc<dyn Disk>, _dir: &Path) -> Result<SnapshotStore, StorageError> {
        todo!()
    }
    /// Writes to a temporary name, fsyncs, renames, fsyncs the directory; then
    /// removes the range's older snapshots.
    pub fn save(&mut self, _range: RangeId, _snapshot: &Snapshot) -> Result<(), StorageError> {
        todo!()
    }
    /// The newest valid snapshot of `range`.
    pub fn load(&self, _range: RangeId) -> Result<Option<Snapshot>, StorageError> {
        todo!()
    }
}
