//! The core's read view of its durable log. (STUB)

use super::message::*;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("index {0} is compacted")]
    Compacted(Index),
    #[error("index {0} is not available")]
    Unavailable(Index),
}

/// What the core reads of its persisted log.
pub trait Storage {
    fn hard_state(&self) -> HardState;
    fn conf_state(&self) -> ConfState;
    fn first_index(&self) -> Index;
    fn last_index(&self) -> Index;
    fn term(&self, index: Index) -> Result<Term, StorageError>;
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    fn snapshot(&self) -> Snapshot;
}

/// In-memory persisted log of one range, rebuilt from the WAL and snapshot at start.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {}

impl MemStorage {
    /// A fresh group whose log is empty with membership `conf_state`.
    pub fn new(_conf_state: ConfState) -> MemStorage {
        MemStorage {}
    }
    /// A recovered group: latest snapshot (if any), hard state, entries after it.
    pub fn recover(
        _snapshot: Snapshot,
        _hard_state: HardState,
        _entries: Vec<Entry>,
    ) -> Result<MemStorage, StorageError> {
        Ok(MemStorage {})
    }
}

impl Storage for MemStorage {
    fn hard_state(&self) -> HardState {
        todo!()
    }
    fn conf_state(&self) -> ConfState {
        todo!()
    }
    fn first_index(&self) -> Index {
        todo!()
    }
    fn last_index(&self) -> Index {
        todo!()
    }
    fn term(&self, _index: Index) -> Result<Term, StorageError> {
        todo!()
    }
    fn entries(&self, _low: Index, _high: Index, _max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        todo!()
    }
    fn snapshot(&self) -> Snapshot {
        todo!()
    }
}
