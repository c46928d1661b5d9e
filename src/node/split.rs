//! Splits on a node: the meta range plans them, the range's own log performs them,
//! and every replica that applies the split creates the new range's replica from the
//! right half of its state, with no data copied between nodes.
//!
//! ```text
//!  admin split KEY / a range over range_max_bytes (the meta range's leader decides)
//!     └─► meta range: PlanSplit{range, generation, key}
//!           applied: new id allocated, both descriptors at generation + 1
//!  every node, when its meta replica applies: plans = meta's descriptors ahead of
//!  the local replicas'  ──► the range's leader proposes Split{key, right, generation}
//!     (again every SPLIT_RETRY_TICKS until the range applied it: a lost proposal, a
//!      new leader, a restart all end here)
//!  each replica, applying Split at index I:
//!     left keeps [start, key), right = [key, end) from the same state at I,
//!     saved as its snapshot at I (durable before anything relies on it),
//!     Raft group at (I, term of I, the configuration at I); the leader's node
//!     campaigns for it at once
//! ```
//!
//! Correctness does not depend on the plan reaching the range: a write routed to
//! the left half before the split applies there after it and is refused
//! (`CommandResult::WrongRange`, the client refreshes its table); a read is answered
//! only by a replica whose span holds its key when it is served.

use std::collections::BTreeMap;

use tracing::{info, warn};

use crate::node::event_loop::Node;
use crate::node::replica::{Replica, ReplyTo};
use crate::raft::{ConfState, HardState, MemStorage, RaftGroup, Snapshot, SnapshotMeta, Storage};
use crate::range::descriptor::{RangeDescriptor, RangeId, Span};
use crate::range::kv::{Command, KvStore, WriteOp};
use crate::storage::wal::WalRecord;
use crate::storage::StorageError;
use crate::wire::Response;

/// Ticks before a leader proposes a planned split again that its range has not
/// applied (a proposal lost to a leadership change).
pub const SPLIT_RETRY_TICKS: u64 = 20;
/// Ticks after a split during which the new range sends no snapshot (its followers
/// are about to create it from their own replica of the left range).
pub const SPLIT_SNAPSHOT_DELAY_TICKS: u64 = 20;
/// Ticks between two looks at the ranges' sizes by the meta range's leader.
pub const SPLIT_CHECK_TICKS: u64 = 10;

/// A split the meta range planned that a local replica has not applied yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedSplit {
    pub key: Vec<u8>,
    pub right: RangeId,
    /// The range's generation before the split.
    pub generation: u64,
    /// When this node last proposed it (ticks).
    pub proposed_at: Option<u64>,
}

/// The part of a split the node finishes after its replica applied it.
pub struct AppliedSplit {
    pub left: RangeId,
    pub right: RangeId,
    pub kv: KvStore,
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
}

impl Node {
    /// The range this node routes `key` to: a local replica whose span holds it.
    pub(crate) fn route(&self, key: &[u8]) -> Result<RangeId, Box<Response>> {
        self.table.lookup(key).ok_or_else(|| {
            Box::new(Response::Unavailable {
                reason: format!(
                "{} holds no range for key {:?} right now (a split or a move is under way); retry",
                self.id,
                String::from_utf8_lossy(key)
            ),
            })
        })
    }

    /// Rebuilds the routing table from the replicas' spans (after a split applied or
    /// a snapshot installed).
    pub(crate) fn rebuild_routes(&mut self) {
        self.table.rebuild(self.replicas.map());
        // Only the replicas whose span moved (a mutable access wakes a replica).
        let moved: Vec<RangeId> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.kv.span().is_some_and(|span| *span != r.descriptor.span()))
            .map(|(id, _)| *id)
            .collect();
        for range in moved {
            if let Some(replica) = self.replicas.get_mut(&range) {
                replica.refresh_descriptor();
            }
        }
        #[cfg(madsim)]
        {
            let spans: Vec<(RangeId, Span)> = self
                .replicas
                .iter()
                .filter(|(id, _)| !self.table.is_held(**id))
                .filter_map(|(id, replica)| Some((*id, replica.kv.span()?.clone())))
                .collect();
            crate::env::sim_hooks::observe(|o| o.spans_changed(self.id, &spans));
        }
    }

    /// `rangedb admin split KEY`, at the meta range's leader: plans the split of the
    /// range holding `key` there; the range itself splits once its leader sees the plan.
    pub(crate) fn admin_split(&mut self, key: &[u8], reply: ReplyTo) {
        let meta = self.table.meta();
        let range = match self.route(key) {
            Ok(range) => range,
            Err(response) => return reply.send(*response),
        };
        if range == meta {
            let reason = "the meta range (keys under \"_/\") does not split".to_string();
            return reply.send(Response::Invalid { reason });
        }
        // Split there already (a command run again): both halves, at once.
        let starts_here = |r: &Replica| r.kv.span().is_some_and(|span| span.start == key);
        let ends_here =
            |r: &Replica| r.kv.span().is_some_and(|span| span.end.as_deref() == Some(key));
        if let Some(right) = self.replicas.get(&range).filter(|r| starts_here(r)) {
            if let Some(left) = self.replicas.values().find(|r| ends_here(r)) {
                let (left, right) =
                    (Box::new(left.descriptor.clone()), Box::new(right.descriptor.clone()));
                return reply.send(Response::Split { left, right });
            }
        }
        match self.split_plan_for(range, key) {
            Ok(command) => self.propose(meta, command, reply),
            Err(response) => reply.send(*response),
        }
    }

    /// The meta range's `PlanSplit` of `range` at `key`, if this node may plan it now:
    /// it leads the meta range, and its replica of `range` is at the generation the
    /// meta range records (an earlier plan not yet performed would be lost).
    fn split_plan_for(&self, range: RangeId, key: &[u8]) -> Result<Command, Box<Response>> {
        let meta = self.table.meta();
        let meta_replica = self.replicas.get(&meta).ok_or_else(|| {
            Box::new(Response::Unavailable {
                reason: format!("{} holds no replica of the meta range", self.id),
            })
        })?;
        if !meta_replica.is_leader() {
            return Err(Box::new(self.not_leader(meta)(meta_replica.raft.leader())));
        }
        let local = self.replicas.get(&range).and_then(|r| r.kv.span().cloned());
        let recorded = meta_replica.kv.descriptor(range);
        let (Some(local), Some(recorded)) = (local, recorded) else {
            return Err(Box::new(Response::Unavailable {
                reason: format!("{range} is not known here yet; retry"),
            }));
        };
        if local.generation != recorded.generation {
            return Err(Box::new(Response::Unavailable {
                reason: format!(
                    "{range} has not finished its previous split yet (generation {} here, {} \
                     planned); retry",
                    local.generation, recorded.generation
                ),
            }));
        }
        if !local.splits_at(key) {
            return Err(Box::new(Response::Invalid {
                reason: format!(
                    "{range} starts at {:?}: a split key must fall strictly inside it",
                    String::from_utf8_lossy(&local.start)
                ),
            }));
        }
        let op = WriteOp::PlanSplit { range, generation: recorded.generation, key: key.to_vec() };
        Ok(Command { request_id: None, op })
    }

    /// Recomputes the planned splits from this node's meta replica: every local range
    /// whose recorded descriptor is newer than its own and ends before it.
    pub(crate) fn refresh_split_plans(&mut self) {
        let Some(meta) = self.replicas.get(&self.table.meta()) else { return };
        let recorded: BTreeMap<RangeId, RangeDescriptor> =
            meta.kv.descriptors().into_iter().map(|d| (d.id, d)).collect();
        let by_start: BTreeMap<&[u8], RangeId> =
            recorded.values().map(|d| (d.start.as_slice(), d.id)).collect();
        let mut plans = BTreeMap::new();
        for (id, replica) in &self.replicas {
            let (Some(span), Some(planned)) = (replica.kv.span(), recorded.get(id)) else {
                continue;
            };
            if planned.generation <= span.generation || planned.end == span.end {
                continue;
            }
            let Some(key) = planned.end.clone() else { continue };
            let Some(&right) = by_start.get(key.as_slice()) else { continue };
            let proposed_at = self
                .split_plans
                .get(id)
                .filter(|old| old.key == key && old.right == right)
                .and_then(|old| old.proposed_at);
            let plan = PlannedSplit { key, right, generation: span.generation, proposed_at };
            plans.insert(*id, plan);
        }
        self.split_plans = plans;
    }

    /// Proposes every planned split of a range this node leads, unless proposed lately.
    pub(crate) fn propose_planned_splits(&mut self) {
        let now = self.ticks();
        for (range, plan) in self.split_plans.iter_mut() {
            // Looked at first, changed (made active, replicas.rs) only to propose.
            let leads = self.replicas.get(range).is_some_and(Replica::is_leader);
            if !leads || plan.proposed_at.is_some_and(|at| now < at + SPLIT_RETRY_TICKS) {
                continue;
            }
            let Some(replica) = self.replicas.get_mut(range) else { continue };
            let op = WriteOp::Split {
                key: plan.key.clone(),
                right: plan.right,
                generation: plan.generation,
            };
            if replica.propose_internal(&Command { request_id: None, op }) {
                plan.proposed_at = Some(now);
            }
        }
    }

    /// The meta range's leader plans a split of every range it holds whose live data
    /// passed `range_max_bytes`, at its middle key (one plan per look).
    pub(crate) fn split_large_ranges(&mut self) {
        let Some(max_bytes) = self.settings.range_max_bytes() else { return };
        if self.ticks() % SPLIT_CHECK_TICKS != 0 {
            return;
        }
        let meta = self.table.meta();
        if !self.replicas.get(&meta).is_some_and(Replica::is_leader) {
            return;
        }
        let candidate = self.replicas.iter().find_map(|(id, replica)| {
            let large = *id != meta
                && replica.kv.live_bytes() > max_bytes
                && !self.split_plans.contains_key(id);
            large.then(|| replica.kv.middle_key().map(|key| (*id, key))).flatten()
        });
        if let Some((range, key)) = candidate {
            self.propose_split_plan(range, &key, "range split by size planned");
        }
    }

    /// Proposes, as the meta range's leader, the plan to split `range` at `key` (if
    /// it may be planned now); `why` is the simulation's coverage marker.
    fn propose_split_plan(&mut self, range: RangeId, key: &[u8], why: &'static str) {
        let Ok(command) = self.split_plan_for(range, key) else { return };
        if let Some(replica) = self.replicas.get_mut(&self.table.meta()) {
            #[cfg(madsim)]
            crate::env::sim_hooks::sometimes(why);
            #[cfg(not(madsim))]
            let _ = why;
            replica.propose_internal(&command);
        }
    }

    /// A message for a range this node holds no replica of: a range split elsewhere
    /// whose split this node will not apply itself (its replica of the left range
    /// caught up by a snapshot taken after the split), or one a new node was added
    /// to. An empty replica is created (no span: it serves nothing, no configuration:
    /// it never campaigns) for its leader to send a snapshot to. Its term and vote are
    /// logged like any replica's, and recovered as such.
    pub(crate) fn create_uninitialized(&mut self, range: RangeId) -> &mut Replica {
        let seed = self.raft_seed;
        let config = crate::node::range_raft_config(self.id, seed.cluster, range, seed.incarnation);
        let store = MemStorage::new(ConfState::default());
        let raft = RaftGroup::new(config, store).expect("the node's Raft configuration is valid");
        let descriptor = RangeDescriptor {
            id: range,
            start: Vec::new(),
            end: None,
            generation: 0,
            replicas: Vec::new(),
        };
        #[cfg(madsim)]
        crate::env::sim_hooks::sometimes("replica created empty for a range split elsewhere");
        self.replicas.get_or_insert_with(range, || {
            Replica::new(descriptor, raft, KvStore::new_range(), 0, 0)
        })
    }

    /// The meta range's leader plans a split of a range whose replica here applied
    /// more than `range_max_writes_per_sec` writes per second since the last look, at
    /// the median of its recently written keys (one plan per look).
    pub(crate) fn split_hot_ranges(&mut self) {
        let max_rate = self.settings.range_max_writes_per_sec();
        if max_rate.is_none() || self.ticks() % SPLIT_CHECK_TICKS != 0 {
            return;
        }
        let now_ms = self.ticker.wall_ms();
        let meta = self.table.meta();
        if !self.replicas.get(&meta).is_some_and(Replica::is_leader) {
            self.load_marks.clear();
            return;
        }
        // Read only: a mutable walk would wake every resting replica (replicas.rs).
        let mut marks = BTreeMap::new();
        let mut candidate = None;
        for (id, replica) in self.replicas.iter() {
            marks.insert(*id, (replica.load.writes, now_ms));
            let Some(&(writes, at_ms)) = self.load_marks.get(id) else { continue };
            let elapsed_ms = now_ms.saturating_sub(at_ms);
            let skip = candidate.is_some() || *id == meta || elapsed_ms == 0;
            if skip || self.split_plans.contains_key(id) {
                continue;
            }
            let rate = (replica.load.writes - writes) * 1000 / elapsed_ms;
            if max_rate.is_some_and(|max| rate > max) {
                let inside =
                    |key: &Vec<u8>| replica.kv.span().is_some_and(|span| span.splits_at(key));
                candidate = replica.load.median_key().filter(inside).map(|key| (*id, key));
            }
        }
        self.load_marks = marks;
        if let Some((range, key)) = candidate {
            self.propose_split_plan(range, &key, "range split by load planned");
        }
    }

    /// Creates the new range of a split a local replica applied: its snapshot at the
    /// split's index saved first (so a restart finds it even once the left range's
    /// log is compacted past the split), then its Raft group. A range this node
    /// already holds (recovered from that snapshot, the split being applied again
    /// from the left range's log) is left as it is.
    pub(crate) fn create_split_range(&mut self, split: AppliedSplit) -> Result<(), StorageError> {
        let AppliedSplit { left, right, kv, index, term, conf_state } = split;
        // A replica of the new range here already: recovered from its own snapshot
        // (the split is applied again from the left range's log), or created by a
        // snapshot from its leader; both hold its state from the split on. One
        // created empty by a message from its leader (uninitialized) takes the state
        // from the split, keeping its term and vote.
        let kept = match self.replicas.get(&right) {
            Some(existing) if existing.kv.span().is_some() => return Ok(()),
            Some(existing) => Some(existing.raft.store().hard_state()),
            None => None,
        };
        if !conf_state.voters.contains(&self.id) && !conf_state.learners.contains(&self.id) {
            // This node was added to the left range after the split: the new range
            // has no replica here (the command adding the node adds it there too).
            info!(
                node = self.id.0,
                "{}: {left} split off {right}, which has no replica here", self.id
            );
            return Ok(());
        }
        let meta = SnapshotMeta { index, term, conf_state };
        let snapshot = Snapshot { meta, data: kv.snapshot() };
        self.snapshots.save_now(right, &snapshot)?;
        self.wal.append(&WalRecord::SnapshotInstalled { range: right, index, term })?;
        let bytes = snapshot.data.len() as u64;
        // A replica that lost its storage (a damaged snapshot) still repairs: it may
        // have acknowledged entries past the split it no longer holds, so it neither
        // votes nor campaigns until a leader of a later term replicated to it.
        let hard_state = match kept {
            Some(kept) if kept.term >= term => HardState { commit: index, ..kept },
            Some(kept) => {
                HardState { term, vote: None, commit: index, repair_term: kept.repair_term }
            }
            None => HardState { term, vote: None, commit: index, repair_term: 0 },
        };
        let store = MemStorage::recover(snapshot, hard_state, Vec::new())
            .expect("a log with no entries follows any snapshot");
        let seed = self.raft_seed;
        let config = crate::node::range_raft_config(self.id, seed.cluster, right, seed.incarnation);
        let raft = match RaftGroup::new(config, store) {
            Ok(mut raft) => {
                if kept.is_none() {
                    raft.created_fresh();
                }
                raft
            }
            Err(error) => {
                warn!(
                    node = self.id.0,
                    "{}: cannot start {right} split from {left}: {error}", self.id
                );
                return Ok(());
            }
        };
        let span = kv.span().cloned().unwrap_or(Span { start: vec![], end: None, generation: 0 });
        let descriptor = span.descriptor(right, Vec::new());
        let mut replica = Replica::new(descriptor, raft, kv, index, bytes);
        replica.split_at_tick = Some(self.ticks());
        if self.replicas.get(&left).is_some_and(Replica::is_leader) {
            // Its followers create it as they apply the same entry: an election now
            // instead of after a timeout.
            replica.raft.campaign();
        }
        info!(
            node = self.id.0,
            range = right.0,
            "{}: {left} split at {:?}: {right} created at index {index}",
            self.id,
            String::from_utf8_lossy(&span.start)
        );
        #[cfg(madsim)]
        crate::env::sim_hooks::sometimes("range split applied");
        self.replicas.insert(right, replica);
        Ok(())
    }
}
