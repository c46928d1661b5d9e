//! Range descriptors and key-to-range routing: a range's identity, span, generation
//! and replicas, the reserved meta keys that hold them, and the table that maps a key
//! to the range owning it.

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

    /// The span and generation (what a range's replicated state holds of it).
    pub fn span(&self) -> Span {
        Span { start: self.start.clone(), end: self.end.clone(), generation: self.generation }
    }
}

/// The part of a range's descriptor that is its replicated state (`kv::KvStore`):
/// the span `[start, end)` it owns and the generation every split (and merge) bumps.
/// The replicas are its Raft configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    #[serde(with = "crate::byte_serde::vec")]
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
    pub generation: u64,
}

impl Span {
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    /// Whether `key` may cut the span in two non-empty halves.
    pub fn splits_at(&self, key: &[u8]) -> bool {
        key > self.start.as_slice() && self.contains(key)
    }

    /// Whether the spans share a key.
    pub fn overlaps(&self, other: &Span) -> bool {
        let before =
            |end: &Option<Vec<u8>>, start: &[u8]| end.as_deref().is_some_and(|e| e <= start);
        !before(&self.end, &other.start) && !before(&other.end, &self.start)
    }

    pub fn descriptor(&self, id: RangeId, replicas: Vec<NodeId>) -> RangeDescriptor {
        RangeDescriptor {
            id,
            start: self.start.clone(),
            end: self.end.clone(),
            generation: self.generation,
            replicas,
        }
    }
}

/// The reserved prefix under which rangedb keeps its own data (range descriptors).
pub const RESERVED_PREFIX: &[u8] = b"_/";
/// Where range descriptors live: `_/range/<id as 16 hex digits>`.
pub const DESCRIPTOR_PREFIX: &[u8] = b"_/range/";
/// The key just after every reserved key: the meta range is `[_/, _0)`.
pub const RESERVED_END: &[u8] = b"_0";

/// The meta key of a range descriptor.
pub fn descriptor_key(id: RangeId) -> Vec<u8> {
    let mut key = DESCRIPTOR_PREFIX.to_vec();
    key.extend_from_slice(format!("{:016x}", id.0).as_bytes());
    key
}

/// Why a split-key list cannot describe a keyspace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitKeyError {
    #[error("split key is empty (the keyspace already starts at the empty key)")]
    Empty,
    #[error("split key {0:?} is inside the reserved prefix \"_/\"")]
    Reserved(String),
}

/// The descriptors of a new cluster: the user's split keys plus the boundaries of the
/// meta range `[_/, _0)`, sorted and deduplicated, numbered 1.. in key order, each
/// replicated on every node.
pub fn initial_descriptors(
    split_keys: &[Vec<u8>],
    replicas: &[NodeId],
) -> Result<Vec<RangeDescriptor>, SplitKeyError> {
    let mut bounds: Vec<Vec<u8>> = Vec::with_capacity(split_keys.len() + 2);
    for key in split_keys {
        if key.is_empty() {
            return Err(SplitKeyError::Empty);
        }
        if key.starts_with(RESERVED_PREFIX) {
            return Err(SplitKeyError::Reserved(String::from_utf8_lossy(key).into_owned()));
        }
        bounds.push(key.clone());
    }
    bounds.push(RESERVED_PREFIX.to_vec());
    bounds.push(RESERVED_END.to_vec());
    bounds.sort();
    bounds.dedup();
    Ok(tile(&bounds, replicas))
}

/// Descriptors `[..b0) [b0..b1) .. [bn..)` numbered 1.. in key order, generation 1.
/// `bounds` must be sorted, distinct and non-empty keys.
pub fn tile(bounds: &[Vec<u8>], replicas: &[NodeId]) -> Vec<RangeDescriptor> {
    std::iter::once(Vec::new())
        .chain(bounds.iter().cloned())
        .enumerate()
        .map(|(i, start)| RangeDescriptor {
            id: RangeId(i as u64 + 1),
            start,
            end: bounds.get(i).cloned(),
            generation: 1,
            replicas: replicas.to_vec(),
        })
        .collect()
}

/// Default split keys: besides the meta range, cut printable keys into four ranges.
pub fn default_split_keys() -> Vec<Vec<u8>> {
    ["8", "g", "p"].iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// Key-to-range routing over a complete, sorted, non-overlapping set of descriptors.
#[derive(Clone, Debug, Default)]
pub struct RangeTable {
    /// Sorted by `start`; consecutive spans touch; the first starts at "" and the
    /// last ends at None.
    ranges: Vec<RangeDescriptor>,
}

impl RangeTable {
    /// # Panics
    /// If the descriptors do not tile the keyspace (a bug in whoever built them).
    pub fn new(mut ranges: Vec<RangeDescriptor>) -> RangeTable {
        ranges.sort_by(|a, b| a.start.cmp(&b.start));
        assert!(!ranges.is_empty(), "a range table needs at least one range");
        assert!(ranges[0].start.is_empty(), "the first range must start at the empty key");
        for pair in ranges.windows(2) {
            assert_eq!(
                pair[0].end.as_deref(),
                Some(pair[1].start.as_slice()),
                "ranges {} and {} do not touch",
                pair[0].id,
                pair[1].id
            );
        }
        assert!(ranges.last().is_some_and(|r| r.end.is_none()), "the last range must be unbounded");
        RangeTable { ranges }
    }

    /// The range that owns `key`.
    pub fn lookup(&self, key: &[u8]) -> &RangeDescriptor {
        // The number of ranges whose start is <= key is at least 1 (the first starts
        // at the empty key), so the index below is in bounds.
        let count = self.ranges.partition_point(|r| r.start.as_slice() <= key);
        &self.ranges[count - 1]
    }

    pub fn ranges(&self) -> &[RangeDescriptor] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(splits: &[&str]) -> RangeTable {
        let keys: Vec<Vec<u8>> = splits.iter().map(|s| s.as_bytes().to_vec()).collect();
        RangeTable::new(initial_descriptors(&keys, &[NodeId(1)]).unwrap())
    }

    #[test]
    fn lookup_matches_linear_search() {
        let table = table(&["8", "g", "p", "zz"]);
        let keys: [&[u8]; 10] =
            [b"", b"\x00", b"0", b"8", b"_/range/1", b"_/", b"_0", b"g", b"zzz", b"\xff\xff"];
        for key in keys {
            let linear = table.ranges().iter().find(|r| r.contains(key)).unwrap();
            assert_eq!(table.lookup(key).id, linear.id, "key {key:?}");
        }
    }

    #[test]
    fn meta_range_is_its_own_range() {
        let table = table(&[]);
        assert_eq!(table.ranges().len(), 3);
        let meta = table.lookup(b"_/range/0000000000000001");
        assert_eq!(meta.start, RESERVED_PREFIX);
        assert_eq!(meta.end.as_deref(), Some(RESERVED_END));
    }

    #[test]
    fn reserved_and_empty_split_keys_are_rejected() {
        assert_eq!(initial_descriptors(&[b"".to_vec()], &[]), Err(SplitKeyError::Empty));
        assert!(matches!(
            initial_descriptors(&[b"_/x".to_vec()], &[]),
            Err(SplitKeyError::Reserved(_))
        ));
    }
}
