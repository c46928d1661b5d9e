//! The node's replicas, and which of them may have work: the event loop's idle cost
//! follows the ranges that are doing something, not the ranges hosted.
//!
//! A replica is *active* unless it was set to rest: its Raft group is quiesced, it
//! has no Ready, nothing waits on it, and (a follower) its leader's node is live
//! (`Node::may_rest`). Every mutable access (`get_mut`, `values_mut`, `iter_mut`,
//! `insert`) makes a replica active again, since only a change through one can give
//! it work; so the loop looks for Readies (`Node::has_ready`, `flush_write`) and
//! ticks only active replicas. A resting group is not ticked: its tick count comes
//! from the node's `TickClock` (raft/quiesce.rs), so its lease and restart
//! stickiness run out exactly as if it were. What wakes a resting replica from
//! outside its own messages is the node's liveness (`Node::tick` marks the followers
//! of a node that went silent or was removed).
//!
//! ```text
//!  10,000 ranges, idle:   active = { }          per loop turn and tick: O(active)
//!  a put on r17:          get_mut(r17) -> active = { r17 } -> Ready, apply,
//!                         quiesce after a heartbeat round -> may_rest -> { }
//! ```

use std::collections::{btree_map, BTreeMap, BTreeSet};

use crate::node::replica::Replica;
use crate::raft::TickClock;
use crate::range::descriptor::RangeId;

pub struct Replicas {
    map: BTreeMap<RangeId, Replica>,
    /// Replicas that may have work (the module doc); a superset is always correct.
    active: BTreeSet<RangeId>,
    /// The node's tick count, which every replica's group reads while quiesced.
    clock: TickClock,
}

impl Replicas {
    /// Every replica starts active, on the node's `clock`.
    pub fn new(map: BTreeMap<RangeId, Replica>, clock: TickClock) -> Replicas {
        let mut replicas = Replicas { map: BTreeMap::new(), active: BTreeSet::new(), clock };
        for (range, replica) in map {
            replicas.insert(range, replica);
        }
        replicas
    }

    /// Adds (or replaces) a replica: active, on the node's clock.
    pub fn insert(&mut self, range: RangeId, mut replica: Replica) -> Option<Replica> {
        replica.raft.use_tick_clock(self.clock.clone());
        self.active.insert(range);
        self.map.insert(range, replica)
    }

    /// The replica of `range`, added by `make` (active, on the node's clock) if there
    /// is none; marked active either way.
    pub fn get_or_insert_with(
        &mut self,
        range: RangeId,
        make: impl FnOnce() -> Replica,
    ) -> &mut Replica {
        if !self.map.contains_key(&range) {
            self.insert(range, make());
        }
        self.active.insert(range);
        self.map.get_mut(&range).expect("inserted above")
    }

    /// The map itself, to read.
    pub fn map(&self) -> &BTreeMap<RangeId, Replica> {
        &self.map
    }

    pub fn remove(&mut self, range: &RangeId) -> Option<Replica> {
        self.active.remove(range);
        self.map.remove(range)
    }

    pub fn get(&self, range: &RangeId) -> Option<&Replica> {
        self.map.get(range)
    }

    /// The replica, marked active.
    pub fn get_mut(&mut self, range: &RangeId) -> Option<&mut Replica> {
        let replica = self.map.get_mut(range)?;
        self.active.insert(*range);
        Some(replica)
    }

    pub fn contains_key(&self, range: &RangeId) -> bool {
        self.map.contains_key(range)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn keys(&self) -> btree_map::Keys<'_, RangeId, Replica> {
        self.map.keys()
    }

    pub fn values(&self) -> btree_map::Values<'_, RangeId, Replica> {
        self.map.values()
    }

    pub fn iter(&self) -> btree_map::Iter<'_, RangeId, Replica> {
        self.map.iter()
    }

    /// Every replica, all marked active (a walk that changes them all; the loop's
    /// own walks touch only the replicas they change).
    pub fn values_mut(&mut self) -> btree_map::ValuesMut<'_, RangeId, Replica> {
        self.active.extend(self.map.keys().copied());
        self.map.values_mut()
    }

    /// As `values_mut`.
    pub fn iter_mut(&mut self) -> btree_map::IterMut<'_, RangeId, Replica> {
        self.active.extend(self.map.keys().copied());
        self.map.iter_mut()
    }

    /// The active replicas, in range order.
    pub fn active(&self) -> impl Iterator<Item = (RangeId, &Replica)> + '_ {
        self.active.iter().filter_map(|range| self.map.get(range).map(|r| (*range, r)))
    }

    /// The ids of the active replicas, in range order (to walk while changing them).
    pub fn active_ids(&self) -> Vec<RangeId> {
        self.active.iter().copied().collect()
    }

    /// How many replicas are active.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// Takes `range` out of the active set until it is changed again (the caller
    /// checked it may rest: `Node::may_rest`).
    pub fn rest(&mut self, range: RangeId) {
        self.active.remove(&range);
    }

    /// The node's tick clock.
    pub fn clock(&self) -> &TickClock {
        &self.clock
    }
}

impl<'a> IntoIterator for &'a Replicas {
    type Item = (&'a RangeId, &'a Replica);
    type IntoIter = btree_map::Iter<'a, RangeId, Replica>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut Replicas {
    type Item = (&'a RangeId, &'a mut Replica);
    type IntoIter = btree_map::IterMut<'a, RangeId, Replica>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}
