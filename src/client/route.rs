//! The client's cache of the range table: which range owns a key, which nodes hold
//! it, where they listen, and which replica last acted as each range's leader.

use std::collections::BTreeMap;

use crate::raft::NodeId;
use crate::range::descriptor::{RangeDescriptor, RangeId};

/// Routing knowledge, refreshed from `Request::RangeTable` and corrected by
/// `Response::NotLeader` answers. Everything here is a hint: a stale entry costs a
/// redirect or a retry, never a wrong answer.
#[derive(Debug, Default)]
pub(crate) struct RangeCache {
    /// Sorted by `start`; spans do not overlap.
    ranges: Vec<RangeDescriptor>,
    addresses: BTreeMap<NodeId, String>,
    leaders: BTreeMap<RangeId, NodeId>,
    /// Set when an answer suggests the table is out of date.
    stale: bool,
    /// Whether any table has been loaded.
    loaded: bool,
}

impl RangeCache {
    /// Replaces the table; leader hints for ranges that still exist are kept.
    pub(crate) fn replace(
        &mut self,
        mut ranges: Vec<RangeDescriptor>,
        addresses: Vec<(NodeId, String)>,
    ) {
        ranges.sort_by(|a, b| a.start.cmp(&b.start));
        self.leaders.retain(|id, _| ranges.iter().any(|range| range.id == *id));
        self.ranges = ranges;
        self.addresses.extend(addresses);
        self.stale = false;
        self.loaded = true;
    }

    pub(crate) fn needs_refresh(&self) -> bool {
        self.stale || !self.loaded
    }

    pub(crate) fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// The range whose span contains `key`.
    pub(crate) fn lookup(&self, key: &[u8]) -> Option<&RangeDescriptor> {
        // The last range starting at or before `key` is the only candidate.
        let after = self.ranges.partition_point(|range| range.start.as_slice() <= key);
        let candidate = self.ranges.get(after.checked_sub(1)?)?;
        candidate.contains(key).then_some(candidate)
    }

    /// The table, sorted by `start`.
    pub(crate) fn ranges(&self) -> &[RangeDescriptor] {
        &self.ranges
    }

    /// Every known node address, in node id order.
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.addresses.values().cloned().collect()
    }

    fn node_at(&self, address: &str) -> Option<NodeId> {
        self.addresses.iter().find(|(_, known)| known.as_str() == address).map(|(id, _)| *id)
    }

    /// Where to send a request for `key`: the cached leader, else the `rotation`-th
    /// replica with a known address. None when the key's range or its replicas'
    /// addresses are unknown.
    pub(crate) fn target(&self, key: &[u8], rotation: usize) -> Option<String> {
        let range = self.lookup(key)?;
        if let Some(address) = self.leaders.get(&range.id).and_then(|id| self.addresses.get(id)) {
            return Some(address.clone());
        }
        let replicas: Vec<&String> =
            range.replicas.iter().filter_map(|id| self.addresses.get(id)).collect();
        if replicas.is_empty() {
            return None;
        }
        Some(replicas[rotation % replicas.len()].clone())
    }

    /// A node answered `NotLeader`: remember the leader it named, or forget the one we
    /// had when it named none.
    pub(crate) fn note_not_leader(
        &mut self,
        range: RangeId,
        leader: Option<NodeId>,
        address: Option<String>,
    ) {
        match (leader, address) {
            (Some(leader), Some(address)) => {
                self.leaders.insert(range, leader);
                self.addresses.insert(leader, address);
            }
            (Some(leader), None) if self.addresses.contains_key(&leader) => {
                self.leaders.insert(range, leader);
            }
            _ => {
                self.leaders.remove(&range);
            }
        }
        if !self.ranges.iter().any(|known| known.id == range) {
            self.stale = true;
        }
    }

    /// The node at `address` served a request for `key` as its range's leader.
    pub(crate) fn note_leader_at(&mut self, key: &[u8], address: &str) {
        let (Some(range), Some(node)) =
            (self.lookup(key).map(|range| range.id), self.node_at(address))
        else {
            return;
        };
        self.leaders.insert(range, node);
    }

    /// The node at `address` failed: stop treating it as any range's leader.
    pub(crate) fn forget_leader_at(&mut self, address: &str) {
        if let Some(node) = self.node_at(address) {
            self.leaders.retain(|_, leader| *leader != node);
        }
    }

    /// A key in each range that holds user data, for requests that go to every range
    /// (the lock janitor's): its start, or "\0" for the first range (the empty key
    /// routes nothing: the server refuses it, and `Client::finish` skips it).
    pub(crate) fn data_range_keys(&self) -> Vec<Vec<u8>> {
        let meta = crate::range::descriptor::RESERVED_PREFIX;
        let ranges = self.ranges.iter().filter(|range| !range.contains(meta));
        ranges
            .map(|range| if range.start.is_empty() { vec![0] } else { range.start.clone() })
            .collect()
    }

    /// The id of the range that owns `key`, if known.
    pub(crate) fn range_of(&self, key: &[u8]) -> Option<RangeId> {
        self.lookup(key).map(|range| range.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(id: u64, start: &[u8], end: Option<&[u8]>) -> RangeDescriptor {
        RangeDescriptor {
            id: RangeId(id),
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            generation: 1,
            replicas: vec![NodeId(1), NodeId(2)],
        }
    }

    #[test]
    fn client_route_lookup_and_leader_hints() {
        let mut cache = RangeCache::default();
        assert!(cache.needs_refresh());
        cache.replace(
            vec![range(2, b"m", None), range(1, b"", Some(b"m"))],
            vec![(NodeId(1), "a:1".into()), (NodeId(2), "b:2".into())],
        );
        assert!(!cache.needs_refresh());
        assert_eq!(cache.range_of(b""), Some(RangeId(1)));
        assert_eq!(cache.range_of(b"l\xff"), Some(RangeId(1)));
        assert_eq!(cache.range_of(b"m"), Some(RangeId(2)));
        assert_eq!(cache.range_of(b"zzz"), Some(RangeId(2)));
        assert_eq!(cache.target(b"a", 0).as_deref(), Some("a:1"));
        assert_eq!(cache.target(b"a", 1).as_deref(), Some("b:2"));

        cache.note_not_leader(RangeId(1), Some(NodeId(2)), Some("b:2".into()));
        assert_eq!(cache.target(b"a", 0).as_deref(), Some("b:2"));
        cache.forget_leader_at("b:2");
        assert_eq!(cache.target(b"a", 0).as_deref(), Some("a:1"));
        cache.note_leader_at(b"z", "a:1");
        assert_eq!(cache.target(b"z", 1).as_deref(), Some("a:1"));
        cache.note_not_leader(RangeId(2), None, None);
        assert_eq!(cache.target(b"z", 1).as_deref(), Some("b:2"));
        cache.note_not_leader(RangeId(9), None, None);
        assert!(cache.needs_refresh());
    }

    #[test]
    fn client_route_gap_is_unknown() {
        let mut cache = RangeCache::default();
        cache.replace(vec![range(1, b"b", Some(b"c"))], vec![]);
        assert_eq!(cache.range_of(b"a"), None);
        assert_eq!(cache.range_of(b"c"), None);
        assert_eq!(cache.range_of(b"b"), Some(RangeId(1)));
        assert_eq!(cache.target(b"b", 0), None);
    }
}
