//! The node-wide write-ahead log. (STUB)

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::StorageError;
use crate::env::Disk;
use crate::raft::{Entry, HardState, Index};
use crate::range::descriptor::RangeId;

/// One WAL record. Entries starting at index i replace any entries >= i of that range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalRecord {
    Entries { range: RangeId, entries: Vec<Entry> },
    HardState { range: RangeId, hard_state: HardState },
}

#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Size segments are preallocated to; a segment rolls over when full.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { segment_bytes: 64 << 20 }
    }
}

/// What replay found for one range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredLog {
    pub hard_state: Option<HardState>,
    /// Contiguous entries, after applying every overwrite in log order.
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug, Default)]
pub struct WalRecovery {
    pub ranges: BTreeMap<RangeId, RecoveredLog>,
}

pub struct Wal {}

impl Wal {
    /// Opens (creating if empty) the WAL in `dir` and replays it.
    pub fn open(
        _disk: Arc<dyn Disk>,
        _dir: &Path,
        _options: WalOptions,
    ) -> Result<(Wal, WalRecovery), StorageError> {
        todo!()
    }
    /// Buffers a record; durable only after `sync`.
    pub fn append(&mut self, _record: &WalRecord) -> Result<(), StorageError> {
        todo!()
    }
    /// Writes buffered records and fsyncs once.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        todo!()
    }
    /// Deletes whole segments every record of which is covered by the given durable
    /// snapshot indexes (entries at or below) or superseded (hard states).
    pub fn release(&mut self, _snapshots: &BTreeMap<RangeId, Index>) -> Result<(), StorageError> {
        todo!()
    }
}
