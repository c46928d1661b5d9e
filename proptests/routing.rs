//! Key-to-range routing (`RangeTable::lookup`) against a linear search over the
//! descriptors, with the empty key, keys at every boundary and maximal keys.

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

use rangedb::raft::NodeId;
use rangedb::range::descriptor::{initial_descriptors, tile, RangeDescriptor, RangeId, RangeTable};

/// Split keys drawn from a small alphabet so that boundaries, their prefixes and
/// their neighbours collide often; includes 0x00 and 0xff.
fn key() -> impl Strategy<Value = Vec<u8>> {
    vec(prop_oneof![Just(0u8), Just(b'_'), Just(b'/'), Just(b'a'), Just(0xff)], 0..4)
}

/// A tiling of the keyspace from sorted distinct non-empty boundaries.
fn tiling(bounds: &[Vec<u8>]) -> Vec<RangeDescriptor> {
    tile(bounds, &[NodeId(1)])
}

fn linear(ranges: &[RangeDescriptor], key: &[u8]) -> RangeId {
    let owners: Vec<_> = ranges.iter().filter(|r| r.contains(key)).collect();
    assert_eq!(owners.len(), 1, "key {key:?} owned by {} ranges", owners.len());
    owners[0].id
}

/// Keys worth asking about: the probes, every boundary, and each boundary's
/// neighbours (one byte shorter, a 0x00 and a 0xff appended).
fn probes(bounds: &[Vec<u8>], extra: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut keys = extra;
    keys.push(Vec::new());
    keys.push(vec![0xff; 64]);
    for bound in bounds {
        keys.push(bound.clone());
        keys.push(bound[..bound.len() - 1].to_vec());
        keys.push([bound.as_slice(), &[0]].concat());
        keys.push([bound.as_slice(), &[0xff]].concat());
    }
    keys
}

proptest! {
    #![proptest_config(crate::config("routing", 512))]

    #[test]
    fn lookup_matches_linear_search(
        bounds in btree_set(key().prop_filter("non-empty", |k| !k.is_empty()), 0..8),
        extra in vec(key(), 0..16),
        shuffle in any::<u64>(),
    ) {
        let bounds: Vec<Vec<u8>> = bounds.into_iter().collect();
        let mut ranges = tiling(&bounds);
        // The table sorts what it is given.
        let len = ranges.len();
        ranges.rotate_left((shuffle % len as u64) as usize);
        let table = RangeTable::new(ranges);
        for key in probes(&bounds, extra) {
            prop_assert_eq!(table.lookup(&key).id, linear(table.ranges(), &key), "key {:?}", key);
        }
    }

    /// The cluster's initial descriptors (user split keys plus the meta range) tile
    /// the keyspace and route like a linear search.
    #[test]
    fn initial_descriptors_route_like_linear_search(
        splits in vec(key().prop_filter("non-empty", |k| !k.is_empty()), 0..6),
        extra in vec(key(), 0..16),
    ) {
        let Ok(ranges) = initial_descriptors(&splits, &[NodeId(1)]) else {
            prop_assert!(splits.iter().any(|k| k.starts_with(b"_/")));
            return Ok(());
        };
        let bounds: Vec<Vec<u8>> = ranges.iter().filter_map(|r| r.end.clone()).collect();
        let table = RangeTable::new(ranges);
        for key in probes(&bounds, extra) {
            prop_assert_eq!(table.lookup(&key).id, linear(table.ranges(), &key));
        }
    }
}
