//! Which local replica owns a key: the node's routing table, rebuilt from its
//! replicas' spans (replicated state) whenever one changes.

use std::collections::{BTreeMap, BTreeSet};

use crate::node::replica::Replica;
use crate::range::descriptor::{RangeId, Span, RESERVED_PREFIX};

#[derive(Debug, Default)]
pub struct Routes {
    /// start -> (range, end), for every replica whose span is known. Spans of
    /// replicas on one node never overlap (the simulation checks it), but there may
    /// be gaps (a range whose split this node has not applied yet elsewhere).
    by_start: BTreeMap<Vec<u8>, (RangeId, Option<Vec<u8>>)>,
    /// The range holding `_/` (the meta range never splits).
    meta: RangeId,
    /// Replicas overlapping a newer generation's, serving nothing for now.
    held: BTreeSet<RangeId>,
}

impl Routes {
    pub fn new(replicas: &BTreeMap<RangeId, Replica>) -> Routes {
        let mut routes = Routes::default();
        routes.rebuild(replicas);
        routes
    }

    /// Routes to every replica whose span is known, newest generation first: a
    /// replica overlapping one of a newer generation (a range recovering from a
    /// snapshot older than its split, which it has not applied again yet, or one
    /// that has not applied a split whose new range it received by snapshot) is held
    /// back, serving nothing, until its own log moves it past the split.
    pub fn rebuild(&mut self, replicas: &BTreeMap<RangeId, Replica>) {
        self.by_start.clear();
        self.held.clear();
        let mut spans: Vec<(RangeId, &Span)> =
            replicas.iter().filter_map(|(id, r)| Some((*id, r.kv.span()?))).collect();
        spans.sort_by(|a, b| b.1.generation.cmp(&a.1.generation).then(a.0.cmp(&b.0)));
        let mut routed: Vec<&Span> = Vec::new();
        for (id, span) in spans {
            if routed.iter().any(|other| other.overlaps(span)) {
                self.held.insert(id);
                continue;
            }
            routed.push(span);
            self.by_start.insert(span.start.clone(), (id, span.end.clone()));
            if span.contains(RESERVED_PREFIX) {
                self.meta = id;
            }
        }
    }

    /// Whether `range`'s replica is held back (see `rebuild`).
    pub fn is_held(&self, range: RangeId) -> bool {
        self.held.contains(&range)
    }

    /// The local range whose span holds `key`.
    pub fn lookup(&self, key: &[u8]) -> Option<RangeId> {
        let below = (std::ops::Bound::Unbounded, std::ops::Bound::Included(key));
        let (_, (id, end)) = self.by_start.range::<[u8], _>(below).next_back()?;
        end.as_deref().is_none_or(|end| key < end).then_some(*id)
    }

    /// The meta range.
    pub fn meta(&self) -> RangeId {
        self.meta
    }
}
