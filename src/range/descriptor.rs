//! Range descriptors and key-to-range routing. (STUB types; routing implemented later.)

use serde::{Deserialize, Serialize};

use crate::raft::NodeId;

/// A range's identity; never reused.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct RangeId(pub u64);

impl std::fmt::Display for RangeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// The span `[start, end)` of the keyspace a range owns, its replicas, and a
/// generation that every split or merge will bump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeDescriptor {
    pub id: RangeId,
    pub start: Vec<u8>,
    /// `None` is the end of the keyspace.
    pub end: Option<Vec<u8>>,
    pub generation: u64,
    pub replicas: Vec<NodeId>,
}

impl RangeDescriptor {
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }
}
