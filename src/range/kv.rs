//! The per-range state machine: key -> versions. (STUB)

use serde::{Deserialize, Serialize};

use crate::node::wire::{KeyValue, RequestId};

/// A write as replicated in a Raft entry's data (bincode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub request_id: Option<RequestId>,
    pub op: WriteOp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// What applying a command produced; cached per client for deduplication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Put { revision: u64 },
    Delete { revision: u64, existed: bool },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("revision {revision} unavailable (have {first}..={last})")]
pub struct RevisionUnavailable {
    pub revision: u64,
    pub first: u64,
    pub last: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable state machine snapshot: {0}")]
pub struct SnapshotDecodeError(pub String);

/// Revisions are the range's Raft indexes.
#[derive(Clone, Debug, Default)]
pub struct KvStore {}

impl KvStore {
    pub fn new() -> KvStore {
        KvStore {}
    }
    /// Applies the entry at `index` (> applied). Empty/no-op entries go through
    /// `apply_noop`.
    pub fn apply(&mut self, _index: u64, _command: &Command) -> CommandResult {
        todo!()
    }
    pub fn bootstrap(_index: u64, _items: Vec<(Vec<u8>, Vec<u8>)>) -> KvStore {
        todo!()
    }
    pub fn apply_noop(&mut self, _index: u64) {
        todo!()
    }
    pub fn applied(&self) -> u64 {
        todo!()
    }
    pub fn get(&self, _key: &[u8], _revision: Option<u64>) -> Result<Option<KeyValue>, RevisionUnavailable> {
        todo!()
    }
    /// Live keys in `[start, end)` at `revision`, at most `limit` (0 = no limit).
    pub fn scan(
        &self,
        _start: &[u8],
        _end: Option<&[u8]>,
        _limit: u64,
        _revision: Option<u64>,
    ) -> Result<Vec<KeyValue>, RevisionUnavailable> {
        todo!()
    }
    pub fn snapshot(&self) -> Vec<u8> {
        todo!()
    }
    pub fn restore(_data: &[u8]) -> Result<KvStore, SnapshotDecodeError> {
        todo!()
    }
}
