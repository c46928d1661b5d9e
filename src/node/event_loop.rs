//! The node's single event loop: every range replica hosted here is driven from it,
//! so one WAL fsync covers the Ready of every range (group commit) and one frame per
//! peer carries every range's messages.
//!
//! ```text
//!  events (peer batches, client requests, ticks)
//!     │ step / propose / read_index / tick
//!     ▼
//!  for each range: ready() ─► send `messages` now ─► WAL append (entries, hard state),
//!                             snapshot files ─► apply committed ─► answer, serve reads
//!  one fsync ─► send `persisted_messages` ─► advance ─► snapshot if due
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tracing::{error, warn};

use crate::env::Network;
use crate::logging::{Admit, RateLimiter};
use crate::node::liveness::Liveness;
use crate::node::members::{self, NodeChange, SharedMembers};
use crate::node::replica::{Replica, ReplyTo};
use crate::node::replicas::Replicas;
use crate::node::routes::Routes;
use crate::node::snapshotter::Snapshotter;
use crate::node::split::{AppliedSplit, PlannedSplit, SPLIT_SNAPSHOT_DELAY_TICKS};
use crate::node::telemetry::{EventKind, NodeMetrics, Readiness, Telemetry, READY_APPLY_LAG};
use crate::node::ticker::Ticker;
use crate::node::NodeError;
use crate::raft::{
    ConfChange, Message, MessageBody, NodeId, ReadMode, Ready, Role, Snapshot, SnapshotMeta,
    Storage, TickClock,
};
use crate::range::descriptor::{RangeId, DESCRIPTOR_PREFIX, RESERVED_END, RESERVED_PREFIX};
use crate::range::keys::{validate_key, validate_value};
use crate::range::kv::{Command, KvStore, WriteOp};
use crate::range::settings::{ClusterSettings, Setting};
use crate::range::txn::TxnOp;
use crate::storage::{SnapshotStore, StorageError, Wal, WalRecord};
use crate::wire::{
    Envelope, JoinInfo, NodeStatus, PeerBatch, RangeStatus, ReadConsistency, ReplicaOp, Request,
    Response,
};

/// `{n1,n2}`.
fn ids(nodes: &std::collections::BTreeSet<NodeId>) -> String {
    let list: Vec<String> = nodes.iter().map(ToString::to_string).collect();
    format!("{{{}}}", list.join(","))
}

/// Something for the loop to do.
pub enum Event {
    /// A peer opened a connection to us: it (re)started or its link came back.
    PeerConnected {
        from: NodeId,
        /// Where it listens, when it said (a member's hello).
        address: Option<String>,
    },
    Peer {
        from: NodeId,
        batch: PeerBatch,
    },
    Client {
        request: Request,
        reply: ReplyTo,
    },
}

/// Settings of the node's state machines.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// A range snapshots its state machine once this many entries applied since the
    /// last snapshot (the cluster setting `snapshot_entries`, else the flag below)...
    pub snapshot_entries: u64,
    /// ... and once their bytes reach this many times the last snapshot's size, so
    /// that a large state written slowly is not rewritten whole every
    /// `snapshot_entries` entries: snapshots write at most 1/ratio bytes per byte of
    /// log (0: by entries only).
    pub snapshot_log_ratio: u64,
    /// `--snapshot-entries`: `snapshot_entries` while the cluster has no setting.
    pub snapshot_entries_flag: u64,
    /// `--history-revisions`: written as the cluster setting `history_revisions` by
    /// the meta range's leader if the cluster has none (`Node::write_initial_settings`).
    pub initial_history_revisions: Option<u64>,
    pub leader_placement: LeaderPlacement,
}

/// Where the leaders of the ranges go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LeaderPlacement {
    /// Every range's leadership moves to the node that leads the meta range (when it
    /// holds a replica, is live and is caught up): one node proposes for every range,
    /// so one WAL fsync there covers a batch of every range's writes and each follower
    /// receives one stream. Measured on 3 nodes (BENCHMARKS.md): more puts per fsync
    /// and less CPU per put than leaders spread by elections. No node is preferred:
    /// leadership follows the meta range's, wherever elections put that one.
    #[default]
    Colocate,
    /// Leadership stays wherever elections put it.
    Elected,
}

/// WAL segments kept before the ranges holding the oldest one are snapshotted
/// whatever their size (`Node::snapshot_pinning_ranges`): 256 MB of 64 MB segments.
const WAL_SEGMENTS_KEPT: usize = 4;

/// `Node::publish_telemetry` walks every replica once per tick up to this many
/// replicas, and once every `replicas / TELEMETRY_WALK_REPLICAS` ticks beyond (so
/// 100,000 ranges are walked every 97 ticks: gauges and readiness 5 s old at most).
const TELEMETRY_WALK_REPLICAS: usize = 1024;

/// Ticks between two looks at every range led here for the lock janitor's list
/// (`Node::recheck_txn_ranges`).
const TXN_RANGES_RECHECK_TICKS: u64 = 20;

/// Ticks between two looks at where leaders are (`Node::place_leaders`).
const PLACEMENT_TICKS: u64 = 4;
/// A range hands its leadership over only to a follower this close to its log's end,
/// so that the transfer (which holds proposals until the target has the whole log)
/// is short, and never to one being probed, sent a snapshot or repairing.
const PLACEMENT_MAX_LAG: u64 = 256;

impl Tuning {
    /// Whether `replica` has applied enough since its last snapshot to take another.
    fn snapshot_due(&self, replica: &Replica) -> bool {
        let entries = replica.kv.applied().saturating_sub(replica.snapshot_index);
        let log_bytes_needed = replica.snapshot_bytes.saturating_mul(self.snapshot_log_ratio);
        entries >= self.snapshot_entries && replica.log_bytes >= log_bytes_needed
    }
}

/// A Ready cycle between its write and its sync (`Node::flush_write`).
pub struct Cycle {
    readies: Vec<(RangeId, Ready)>,
    /// Whether a record that must be durable was buffered: the sync is needed.
    pub wrote: bool,
}

pub struct Node {
    pub id: NodeId,
    /// Every member's client/peer address and identity, this node's included.
    pub members: SharedMembers,
    /// Every replica hosted here, and which may have work (replicas.rs).
    pub replicas: Replicas,
    /// The ranges whose replica here reported itself leader in its last Ready (the
    /// walks of leaders look only at these).
    pub(crate) leading: BTreeSet<RangeId>,
    /// Which local replica owns a key (routes.rs), rebuilt as spans change.
    pub table: Routes,
    pub wal: Wal,
    /// Writes snapshots in the background (snapshotter.rs).
    pub snapshots: Snapshotter,
    pub network: Arc<dyn Network>,
    pub tuning: Tuning,
    next_read_context: u64,
    /// Ticks performed since start (times out reads, measures peer silence).
    ticks: u64,
    /// When ticks fall due, by the node's clock.
    pub ticker: Ticker,
    /// Which peers were heard from lately; wakes quiesced ranges.
    liveness: Liveness,
    /// The cluster and the members' identities, for `status`.
    pub identity: Identity,
    /// Set when the node must stop (it was removed from the cluster); the run loop
    /// returns it.
    pub stop: Option<NodeError>,
    /// Removals applied in a joint configuration of this range, to take effect when
    /// it is left.
    pending_removals: BTreeMap<NodeId, RangeId>,
    /// Repeated events (a message dropped per peer batch) logged once per interval,
    /// then counted (`log_limited`); time is ticks times the tick interval.
    log_limiter: RateLimiter<&'static str>,
    /// Metrics and readiness for the operator (telemetry.rs).
    pub telemetry: Arc<Telemetry>,
    /// The leader each range last reported (counts leader changes).
    last_leaders: BTreeMap<RangeId, Option<NodeId>>,
    /// The runtime settings as this node's meta replica holds them (range/settings.rs).
    pub settings: ClusterSettings,
    /// Ranges led here that may not hold the settings' revision yet, and the
    /// settings revision they were listed for (`Node::propagate_settings`).
    pub(crate) settings_behind: BTreeSet<RangeId>,
    pub(crate) settings_listed: u64,
    /// Ranges whose state machine held a backup's freeze when last applied
    /// (`Node::expire_backups` looks only at these).
    pub(crate) frozen: BTreeSet<RangeId>,
    /// Ranges led here whose state machine holds locks or transaction records (a
    /// key in each), for the lock janitor beside this node (`Telemetry::txn_ranges`);
    /// and whether it changed since it was last published.
    txn_ranges: BTreeMap<RangeId, Vec<u8>>,
    txn_ranges_changed: bool,
    /// When this node (leading the meta range) last proposed the initial settings.
    pub(crate) initial_settings_proposed: Option<u64>,
    /// Images captured for backups, waiting to be fetched (backup.rs).
    pub(crate) backups: crate::node::backup::BackupStash,
    /// Splits the meta range planned that local replicas have not applied (split.rs).
    pub(crate) split_plans: BTreeMap<RangeId, PlannedSplit>,
    /// Splits applied this cycle whose new range has an empty replica here, replaced
    /// after the cycle (split.rs).
    deferred_splits: Vec<AppliedSplit>,
    /// Each range's writes and the clock (ms) at the last look for hot ranges.
    pub(crate) load_marks: BTreeMap<RangeId, (u64, u64)>,
    /// What the Raft groups of ranges created here are configured with.
    pub raft_seed: RaftSeed,
}

/// What a new range's Raft group on this node is configured from (`raft_config`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RaftSeed {
    pub cluster: u64,
    /// This start's incarnation (raft::Config::incarnation).
    pub incarnation: u64,
}

/// At most one line per kind of repeated event in this interval (then a count).
const LOG_LIMIT_INTERVAL_MS: u64 = 10_000;

/// Who this node is in its cluster (set by the boot sequence; tests leave it default).
#[derive(Clone, Default)]
pub struct Identity {
    pub cluster: u64,
    pub identity: u64,
    /// Range boundaries the cluster was created with (told to nodes that join).
    pub split_keys: Vec<Vec<u8>>,
    /// The voters every range was created with.
    pub founders: Vec<NodeId>,
    /// Persists the members (CLUSTER) after a change is applied.
    pub persist: Option<Arc<crate::node::server::RecordMembers>>,
}

impl Node {
    #[allow(clippy::too_many_arguments)] // Each is a distinct part the boot sequence built.
    pub fn new(
        id: NodeId,
        members: SharedMembers,
        replicas: BTreeMap<RangeId, Replica>,
        wal: Wal,
        snapshots: SnapshotStore,
        network: Arc<dyn Network>,
        tuning: Tuning,
        ticker: Ticker,
    ) -> Node {
        let peers: Vec<NodeId> =
            members::read(&members).current().map(|(peer, _)| peer).filter(|&p| p != id).collect();
        let liveness = Liveness::new(peers);
        let frozen = replicas.iter().filter(|(_, r)| r.kv.freeze().is_some()).map(|(id, _)| *id);
        let frozen = frozen.collect();
        let mut node = Node {
            id,
            members,
            table: Routes::new(&replicas),
            replicas: Replicas::new(replicas, TickClock::new()),
            leading: BTreeSet::new(),
            wal,
            snapshots: Snapshotter::new(id, snapshots),
            network,
            tuning,
            next_read_context: 1,
            ticks: 0,
            ticker,
            liveness,
            identity: Identity::default(),
            stop: None,
            pending_removals: BTreeMap::new(),
            log_limiter: RateLimiter::new(LOG_LIMIT_INTERVAL_MS),
            telemetry: Arc::new(Telemetry::default()),
            last_leaders: BTreeMap::new(),
            settings: ClusterSettings::default(),
            settings_behind: BTreeSet::new(),
            settings_listed: 0,
            frozen,
            txn_ranges: BTreeMap::new(),
            txn_ranges_changed: true,
            initial_settings_proposed: None,
            backups: Default::default(),
            split_plans: BTreeMap::new(),
            deferred_splits: Vec::new(),
            load_marks: BTreeMap::new(),
            raft_seed: RaftSeed::default(),
        };
        node.refresh_split_plans();
        // A restarted node reads the settings from its meta replica at once.
        node.refresh_settings();
        node
    }

    /// Ticks performed since start.
    pub(crate) fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Performs every tick the clock says is due (ticker.rs).
    pub fn catch_up_ticks(&mut self) {
        for _ in 0..self.ticker.take_due() {
            self.tick();
        }
        // Once every due tick is performed: a lease judged between two of them would
        // be judged on a stale tick count.
        #[cfg(madsim)]
        for (range, replica) in &self.replicas {
            sim_watch(self.id, *range, replica, &self.ticker);
        }
    }

    fn tick(&mut self) {
        self.ticks += 1;
        let now = self.ticks;
        // The tick count of every quiesced group that is not ticked (replicas.rs).
        self.replicas.clock().set(now);
        if self.stop.is_none() {
            if let Some(reason) = self.network.removed() {
                // Told by a member: our own log may never show it (the entries that
                // removed us are no longer replicated to us). Recorded, then stop.
                warn!(node = self.id.0, "{}: {reason}", self.id);
                let removed = NodeChange::Removed { node: self.id };
                self.stop = Some(match self.apply_node_change(&removed) {
                    Ok(_) => NodeError::Removed(self.id),
                    Err(error) => error,
                });
            }
        }
        let went_silent = self.liveness.expire_peers(now);
        if !went_silent.is_empty() {
            // A peer went silent: leaders run check-quorum again.
            let at_ms = self.ticker.wall_ms();
            for peer in &went_silent {
                self.telemetry.record_event(at_ms, EventKind::PeerDown { node: peer.0 });
            }
            self.wake_leaders();
            self.wake_followers_of(&went_silent);
        }
        // Only the active replicas: a resting one is quiesced with a live leader and
        // waits on nothing, so a tick would do nothing to it (replicas.rs).
        for range in self.replicas.active_ids() {
            let Some(replica) = self.replicas.get_mut(&range) else { continue };
            if !replica.is_leader() {
                let silent = replica.raft.leader().and_then(|l| self.liveness.silent_ticks(l, now));
                if let Some(silent) = silent {
                    replica.raft.wake_leader_silent(u32::try_from(silent).unwrap_or(u32::MAX));
                }
            }
            replica.raft.tick();
            replica.expire_reads(now);
        }
        if self.tuning.leader_placement == LeaderPlacement::Colocate && now % PLACEMENT_TICKS == 0 {
            self.place_leaders();
        }
        self.write_initial_settings();
        self.propagate_settings();
        self.propose_planned_splits();
        self.split_large_ranges();
        self.split_hot_ranges();
        self.expire_backups();
        if now % TXN_RANGES_RECHECK_TICKS == 0 {
            self.recheck_txn_ranges();
        }
        if std::mem::take(&mut self.txn_ranges_changed) {
            self.telemetry.set_txn_ranges(self.txn_ranges.values().cloned().collect());
        }
        self.publish_telemetry();
        for (kind, count) in self.log_limiter.take_summaries(self.elapsed_ms()) {
            let seconds = LOG_LIMIT_INTERVAL_MS / 1000;
            warn!(
                node = self.id.0,
                kind,
                suppressed = count,
                "{}: {kind}: {count} more in the last {seconds} s (not logged one by one)",
                self.id
            );
        }
    }

    /// Sets the gauges (ranges, bytes, keys) and the readiness: every hosted range
    /// has a known leader, does not repair, and has applied what it knows committed.
    /// A walk of every replica: on every tick up to `TELEMETRY_WALK_REPLICAS`
    /// replicas, less often beyond.
    fn publish_telemetry(&self) {
        let stride = (self.replicas.len() / TELEMETRY_WALK_REPLICAS).max(1) as u64;
        if self.ticks % stride != 0 {
            return;
        }
        let metrics = &self.telemetry.metrics;
        let (mut leading, mut bytes, mut keys) = (0, 0, 0);
        let mut problems = Vec::new();
        for (range, replica) in &self.replicas {
            leading += u64::from(replica.is_leader());
            bytes += replica.snapshot_bytes + replica.log_bytes;
            keys += replica.kv.len() as u64;
            let (committed, applied) = (replica.raft.committed(), replica.kv.applied());
            if replica.raft.repairing() {
                problems.push(format!("{range} is repairing damaged storage from its peers"));
            } else if replica.raft.leader().is_none() {
                problems.push(format!("{range} has no known leader"));
            } else if committed.saturating_sub(applied) > READY_APPLY_LAG {
                problems.push(format!(
                    "{range} has applied {applied} of {committed} committed entries"
                ));
            }
        }
        let store = |gauge: &std::sync::atomic::AtomicU64, value: u64| {
            gauge.store(value, std::sync::atomic::Ordering::Relaxed)
        };
        store(&metrics.ranges_now, self.replicas.len() as u64);
        store(&metrics.ranges_leading_now, leading);
        store(&metrics.replica_bytes_now, bytes);
        store(&metrics.keys_now, keys);
        let readiness = match problems.len() {
            0 => Readiness::Ready,
            1..=3 => Readiness::NotReady { reason: problems.join("; ") },
            n => Readiness::NotReady {
                reason: format!("{}; and {} more ranges", problems[..3].join("; "), n - 3),
            },
        };
        self.telemetry.set_readiness(readiness);
    }

    /// Milliseconds of ticks since the start (the rate limiter's time).
    fn elapsed_ms(&self) -> u64 {
        let interval_ms = u64::try_from(self.ticker.interval().as_millis()).unwrap_or(u64::MAX);
        self.ticks.saturating_mul(interval_ms.max(1))
    }

    /// Whether to log an occurrence of a repeated event of `kind` now, and how many
    /// went unlogged before it (`RateLimiter`).
    fn log_limited(&mut self, kind: &'static str) -> Option<u64> {
        match self.log_limiter.admit(kind, self.elapsed_ms()) {
            Admit::Log { suppressed } => Some(suppressed),
            Admit::Suppress => None,
        }
    }

    /// `LeaderPlacement::Colocate`: hands the leadership of every range this node
    /// leads to the meta range's leader, if that is another live node, holding a
    /// replica of the range and close to caught up.
    fn place_leaders(&mut self) {
        let meta = self.table.meta();
        let Some(target) = self.replicas.get(&meta).and_then(|r| r.raft.leader()) else {
            return;
        };
        if target == self.id || self.liveness.silent_ticks(target, self.ticks).is_some() {
            return;
        }
        // Only a leader has a follower lag: the ranges led here are enough.
        let handed: Vec<RangeId> = self
            .leading
            .iter()
            .filter(|&&range| range != meta)
            .filter(|range| {
                let lag = self.replicas.get(range).and_then(|r| r.raft.follower_lag(target));
                lag.is_some_and(|lag| lag <= PLACEMENT_MAX_LAG)
            })
            .copied()
            .collect();
        for range in handed {
            let Some(replica) = self.replicas.get_mut(&range) else { continue };
            #[cfg(madsim)]
            if replica.raft.transferring_to() != Some(target) {
                crate::env::sim_hooks::count_handoff();
            }
            replica.raft.transfer_leader(target);
        }
    }

    /// Wakes every quiesced range this node leads.
    fn wake_leaders(&mut self) {
        let quiet: Vec<RangeId> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.is_leader() && r.raft.is_quiescent())
            .map(|(range, _)| *range)
            .collect();
        for range in quiet {
            if let Some(replica) = self.replicas.get_mut(&range) {
                replica.raft.wake();
            }
        }
    }

    /// Makes the followers whose leader is one of `nodes` (gone silent, or removed)
    /// active, so that the next ticks wake them (`wake_leader_silent`) as they wake
    /// every follower of a silent leader.
    fn wake_followers_of(&mut self, nodes: &[NodeId]) {
        let followers: Vec<RangeId> = self
            .replicas
            .iter()
            .filter(|(_, r)| !r.is_leader() && r.raft.leader().is_some_and(|l| nodes.contains(&l)))
            .map(|(range, _)| *range)
            .collect();
        for range in followers {
            self.replicas.get_mut(&range);
        }
    }

    /// Lists (or unlists) `range` for the lock janitor beside this node.
    fn set_txn_range(&mut self, range: RangeId, key: Option<Vec<u8>>) {
        if self.txn_ranges.get(&range) != key.as_ref() {
            self.txn_ranges_changed = true;
            match key {
                Some(key) => self.txn_ranges.insert(range, key),
                None => self.txn_ranges.remove(&range),
            };
        }
    }

    /// Every `TXN_RANGES_RECHECK_TICKS`: the janitor's list again from the ranges led
    /// here and those listed, whatever changed them (a replica replaced by a split's,
    /// say, changes no Ready of its own).
    fn recheck_txn_ranges(&mut self) {
        let ranges: BTreeSet<RangeId> =
            self.leading.iter().chain(self.txn_ranges.keys()).copied().collect();
        for range in ranges {
            let key = self.replicas.get(&range).and_then(janitor_key);
            self.set_txn_range(range, key);
        }
    }

    /// Whether an active replica may rest (replicas.rs): no Ready, quiesced, nothing
    /// waiting, and a leader here or on a live node (a tick would do nothing to it).
    fn may_rest(replica: &Replica, liveness: &Liveness, now: u64) -> bool {
        replica.raft.is_quiescent()
            && replica.waits_on_nothing()
            && (replica.is_leader()
                || replica.raft.leader().is_some_and(|l| liveness.silent_ticks(l, now).is_none()))
    }

    pub fn handle(&mut self, event: Event) {
        match event {
            // A peer that restarted within the silence threshold was never counted as
            // gone, and may have lost its log (a repair discards it) while the ranges
            // we lead are quiesced believing it holds everything: a repairing replica
            // does not campaign, so without a heartbeat it would wait forever.
            Event::PeerConnected { from, address } => {
                // A member this node does not know yet (it has not applied the change
                // that added it): link back, so it can answer it; the member table
                // learns it from the log.
                if let Some(address) = address {
                    if !members::read(&self.members).addresses.contains_key(&from) {
                        self.network.add_peer(from, address);
                        self.liveness.add(from);
                    }
                }
                self.wake_leaders()
            }
            Event::Peer { from, batch } => self.handle_peer_batch(from, batch),
            Event::Client { request, reply } => self.handle_client(request, reply),
        }
    }

    fn handle_peer_batch(&mut self, from: NodeId, batch: PeerBatch) {
        if self.liveness.heard(from, self.ticks) {
            // A peer came back (or is heard from for the first time): the ranges we
            // lead send it heartbeats again, instead of waiting for it to campaign.
            let at_ms = self.ticker.wall_ms();
            self.telemetry.record_event(at_ms, EventKind::PeerUp { node: from.0 });
            self.wake_leaders();
        }
        for Envelope { range, message } in batch.envelopes {
            if message.from != from || message.to != self.id {
                if let Some(suppressed) = self.log_limited("misaddressed peer message") {
                    warn!(
                        node = self.id.0,
                        peer = from.0,
                        suppressed,
                        "{}: dropping message for {} from {} on the link from {from}",
                        self.id,
                        message.to,
                        message.from
                    );
                }
                continue;
            }
            if !self.replicas.contains_key(&range) && range.0 != 0 {
                self.create_uninitialized(range);
            }
            match self.replicas.get_mut(&range) {
                Some(replica) => {
                    #[cfg(madsim)]
                    let watch = SimWatch::before(&message, replica.raft.committed());
                    let stepped = replica.raft.step(message);
                    #[cfg(madsim)]
                    watch.after(self.id, range, replica, &self.ticker);
                    if let Err(error) = stepped {
                        if let Some(suppressed) = self.log_limited("peer message not stepped") {
                            warn!(
                                node = self.id.0,
                                range = range.0,
                                suppressed,
                                "{} {range}: step: {error}",
                                self.id
                            );
                        }
                    }
                }
                None => {
                    if let Some(suppressed) = self.log_limited("message for an unknown range") {
                        warn!(
                            node = self.id.0,
                            peer = from.0,
                            suppressed,
                            "{}: message for unknown range {range} from {from}",
                            self.id
                        );
                    }
                }
            }
        }
    }

    /// The redirect a non-leader replica of `range` answers with.
    pub(crate) fn not_leader(&self, range: RangeId) -> impl Fn(Option<NodeId>) -> Response + use<> {
        let members = Arc::clone(&self.members);
        move |leader| Response::NotLeader {
            range,
            leader,
            address: leader.and_then(|l| members::read(&members).addresses.get(&l).cloned()),
        }
    }

    fn handle_client(&mut self, request: Request, reply: ReplyTo) {
        // Writes move their key and value into the command (no copy).
        let request = match request {
            Request::Put { key, value, request_id } => {
                if let Err(error) = validate_key(&key).and_then(|()| validate_value(&value)) {
                    return reply.send(Response::Invalid { reason: error.to_string() });
                }
                let range = match self.route(&key) {
                    Ok(range) => range,
                    Err(response) => return reply.send(*response),
                };
                let op = WriteOp::Put { key, value };
                return self.propose(range, Command { request_id: Some(request_id), op }, reply);
            }
            Request::Delete { key, request_id } => {
                if let Err(error) = validate_key(&key) {
                    return reply.send(Response::Invalid { reason: error.to_string() });
                }
                let range = match self.route(&key) {
                    Ok(range) => range,
                    Err(response) => return reply.send(*response),
                };
                let op = WriteOp::Delete { key };
                return self.propose(range, Command { request_id: Some(request_id), op }, reply);
            }
            Request::ConfigSet { name, value, request_id } => {
                let checked = Setting::parse(&name)
                    .and_then(|setting| Ok((setting, setting.parse_value(&value)?)));
                let (setting, value) = match checked {
                    Ok(checked) => checked,
                    Err(error) => {
                        return reply.send(Response::Invalid { reason: error.to_string() })
                    }
                };
                let key = setting.key();
                let range = self.table.meta();
                let op = WriteOp::Put { key, value: Setting::encode(value) };
                return self.propose(range, Command { request_id: Some(request_id), op }, reply);
            }
            Request::Txn { key, op, request_id } => {
                if let Err(reason) = validate_key(&key) {
                    return reply.send(Response::Invalid { reason: reason.to_string() });
                }
                let range = match self.route(&key) {
                    Ok(range) => range,
                    Err(response) => return reply.send(*response),
                };
                if let Err(response) = self.check_txn_op(range, &op) {
                    return reply.send(*response);
                }
                return self.propose(range, Command { request_id, op: WriteOp::Txn(op) }, reply);
            }
            Request::Backup { key, op } => return self.backup_step(&key, op, reply),
            Request::BackupFetch { backup, range, offset } => {
                return reply.send(self.backup_fetch(backup, range, offset))
            }
            read => read,
        };
        match &request {
            Request::Put { .. }
            | Request::Delete { .. }
            | Request::Txn { .. }
            | Request::ConfigSet { .. }
            | Request::Backup { .. }
            | Request::BackupFetch { .. } => {
                unreachable!("writes returned above")
            }
            Request::MetaScan { start, end, .. } => {
                let within = |key: &[u8]| key >= RESERVED_PREFIX && key <= RESERVED_END;
                if !start.starts_with(RESERVED_PREFIX) || !within(end) {
                    let reason = "a meta scan reads keys under \"_/\" only".to_string();
                    return reply.send(Response::Invalid { reason });
                }
                self.read(RESERVED_PREFIX, ReadMode::ReadIndex, request, reply);
            }
            Request::TxnStatus { anchor: key, .. } | Request::TxnLocks { key, .. } => {
                let key = key.clone();
                self.read(&key, ReadMode::ReadIndex, request, reply);
            }
            Request::Get { key, consistency: ReadConsistency::Local, .. } => {
                let range = match self.route(key) {
                    Ok(range) => range,
                    Err(response) => return reply.send(*response),
                };
                let Some(replica) = self.replicas.get(&range) else {
                    return reply.send(self.not_leader(range)(None));
                };
                if replica.raft.repairing() {
                    let reason = format!("{range} is repairing damaged storage from its peers");
                    return reply.send(Response::Unavailable { reason });
                }
                reply.send(replica.read_now(&request));
            }
            Request::Get { key, consistency, .. } => {
                let key = key.clone();
                let mode = match consistency {
                    ReadConsistency::Lease => ReadMode::Lease,
                    _ => ReadMode::ReadIndex,
                };
                self.read(&key, mode, request, reply);
            }
            Request::Scan { start, end, .. } => {
                if end.as_ref().is_some_and(|end| end <= start) {
                    return reply.send(Response::Scan {
                        kvs: vec![],
                        resume: None,
                        read_revision: 0,
                        locks: vec![],
                    });
                }
                let start = start.clone();
                self.read(&start, ReadMode::ReadIndex, request, reply);
            }
            Request::RangeTable => reply.send(self.range_table()),
            Request::Status => reply.send(Response::Status(self.status())),
            Request::ChangeReplicas { range, op } => self.change_replicas(*range, op, reply),
            Request::Join { identity, address } => reply.send(self.join_info(*identity, address)),
            Request::Split { key } => {
                let key = key.clone();
                self.admin_split(&key, reply);
            }
        }
    }

    /// A `rangedb node add/remove/replace` step on one range (its leader proposes it).
    /// A step already done answers with the configuration at once, so a command that
    /// was interrupted can be run again.
    fn change_replicas(&mut self, range: RangeId, op: &ReplicaOp, reply: ReplyTo) {
        let not_leader = self.not_leader(range);
        let invalid = |reason: String| Response::Invalid { reason };
        let Some(replica) = self.replicas.get(&range) else {
            // Perhaps not yet: a range split off elsewhere reaches this node when it
            // applies the split, or by a snapshot from its leader.
            let reason = format!("{} holds no replica of {range} (yet); retry", self.id);
            return reply.send(Response::Unavailable { reason });
        };
        if !replica.is_leader() {
            return reply.send(not_leader(replica.raft.leader()));
        }
        let current = replica.raft.membership().clone();
        let (mut voters, mut learners) = (current.voters.clone(), current.learners.clone());
        let mut context = Vec::new();
        match op {
            ReplicaOp::AddLearner { node, address, identity } => {
                let members = members::read(&self.members);
                if members.removed.contains(node) {
                    return reply.send(invalid(format!(
                        "{node} was removed from the cluster; node ids are never reused"
                    )));
                }
                let elsewhere = members.identities.iter().find(|(id, i)| {
                    **i == *identity && *id != node && !members.removed.contains(id)
                });
                if let Some((other, _)) = elsewhere {
                    return reply.send(invalid(format!(
                        "the node with identity {identity:016x} is already {other}"
                    )));
                }
                let known = (members.addresses.get(node), members.identities.get(node));
                if known.0.is_some_and(|a| a != address) || known.1.is_some_and(|i| i != identity) {
                    return reply.send(invalid(format!(
                        "{node} is already the node at {} (identity {:016x})",
                        known.0.map_or("?", String::as_str),
                        known.1.copied().unwrap_or(0)
                    )));
                }
                let recorded = members.identities.get(node).copied();
                drop(members);
                // The meta range is the authority on who a node id is: it adds a node
                // first, and its entry records the id's address and identity on every
                // node. Another range adds only a node recorded so, which keeps two
                // commands racing for the same new id from giving it to two nodes.
                let meta = self.table.meta();
                if range != meta && recorded.is_none() {
                    return reply.send(Response::Unavailable {
                        reason: format!(
                            "{node} is not recorded on {} yet (the meta range adds it first)",
                            self.id
                        ),
                    });
                }
                if current.members().contains(node) {
                    // Done before (a command run again), for this very node: its
                    // identity is recorded once the change that added it is applied.
                    return reply.send(match recorded {
                        Some(known) if known == *identity => {
                            Response::Membership(replica.membership())
                        }
                        Some(_) => invalid(format!("{node} is already another node")),
                        None => Response::Unavailable {
                            reason: format!("the change adding {node} is not applied yet"),
                        },
                    });
                }
                learners.insert(*node);
                let change = NodeChange::Added {
                    node: *node,
                    address: address.clone(),
                    identity: *identity,
                };
                context = change.encode();
                // The leader replicates to the learner at once; the other nodes link to
                // it when they apply the entry.
                self.network.add_peer(*node, address.clone());
                self.liveness.add(*node);
            }
            ReplicaOp::Promote { node } => {
                if voters.contains(node) && !current.is_joint() {
                    return reply.send(Response::Membership(replica.membership()));
                }
                if !learners.remove(node) {
                    return reply.send(invalid(format!(
                        "{node} is not a learner of {range}: add it first (`rangedb node add`)"
                    )));
                }
                voters.insert(*node);
            }
            ReplicaOp::Remove { node, last } => {
                if !current.members().contains(node) {
                    return reply.send(Response::Membership(replica.membership()));
                }
                voters.remove(node);
                learners.remove(node);
                if voters.is_empty() {
                    return reply.send(invalid(format!(
                        "{node} is the last voter of {range}: a cluster cannot remove its last node"
                    )));
                }
                if *last {
                    context = NodeChange::Removed { node: *node }.encode();
                }
            }
            ReplicaOp::Replace { remove, add, last } => {
                if voters.contains(add) && !voters.contains(remove) && !current.is_joint() {
                    return reply.send(Response::Membership(replica.membership()));
                }
                if !learners.remove(add) {
                    return reply.send(invalid(format!(
                        "{add} is not a learner of {range}: add it first (`rangedb node add`)"
                    )));
                }
                voters.remove(remove);
                learners.remove(remove);
                voters.insert(*add);
                if *last {
                    context = NodeChange::Removed { node: *remove }.encode();
                }
            }
        }
        // A change the new voters cannot commit would leave the range joint and stuck:
        // refuse it while too few of them are up (at once, as etcd does: retrying
        // does not help until the operator brings them back).
        let now = self.ticks;
        let live: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|&v| v == self.id || self.liveness.silent_ticks(v, now).is_none())
            .collect();
        let needed = voters.len() / 2 + 1;
        let adds_voter = voters.iter().any(|v| !current.voters.contains(v));
        let drops_voter = current.voters.iter().any(|v| !voters.contains(v));
        if (adds_voter || drops_voter) && live.len() < needed {
            return reply.send(Response::Invalid {
                reason: format!(
                    "{range} would have voters {} of which {} are up; a majority ({needed}) \
                     must be up for the change to commit",
                    ids(&voters),
                    live.len()
                ),
            });
        }
        let replica = self.replicas.get_mut(&range).expect("looked up above");
        let change = ConfChange { voters, learners, context };
        replica.propose_conf_change(change, reply, not_leader);
    }

    /// The answer to a node started with `--join` asking whether it was added.
    fn join_info(&self, identity: u64, address: &str) -> Response {
        let members = members::read(&self.members);
        let node = members
            .current()
            .find(|(id, a)| a.as_str() == address && members.identities.get(id) == Some(&identity));
        let Some((node, _)) = node else {
            // Not added yet. A member with this address and another identity is the
            // node this one replaces (its data directory was lost).
            let hint = match members.by_address(address) {
                Some(old) => format!(
                    "{old} at {address} has another data directory identity: replace it \
                     with `rangedb node replace {} {address}`",
                    old.0
                ),
                None => format!("add it with `rangedb node add {address}`"),
            };
            return Response::Unavailable {
                reason: format!("{address} is not a member yet: {hint}"),
            };
        };
        Response::Joined(JoinInfo {
            cluster: self.identity.cluster,
            node,
            members: members
                .current()
                .map(|(id, a)| (id, a.clone(), members.identities.get(&id).copied().unwrap_or(0)))
                .collect(),
            removed: members.removed.iter().copied().collect(),
            founders: self.identity.founders.clone(),
            split_keys: self.identity.split_keys.clone(),
        })
    }

    /// A conf-change entry was applied: a change of the cluster's members in its
    /// context is applied to the member table, stored, and to the peer links.
    /// Returns true when this node itself was removed (it stops).
    pub(crate) fn apply_node_change(&mut self, change: &NodeChange) -> Result<bool, NodeError> {
        let mut members = members::write(&self.members);
        if !members.apply(change) {
            return Ok(false);
        }
        if let Some(persist) = &self.identity.persist {
            persist(&members).map_err(|reason| {
                NodeError::Storage(StorageError::Io {
                    op: "store cluster metadata",
                    path: "CLUSTER".into(),
                    source: std::io::Error::other(reason),
                })
            })?;
        }
        drop(members);
        match change {
            NodeChange::Added { node, address, .. } => {
                if *node != self.id {
                    self.network.add_peer(*node, address.clone());
                    self.liveness.add(*node);
                }
                Ok(false)
            }
            NodeChange::Removed { node } if *node == self.id => Ok(true),
            NodeChange::Removed { node } => {
                self.network.remove_peer(*node);
                self.liveness.remove(*node);
                self.wake_followers_of(&[*node]);
                Ok(false)
            }
        }
    }

    /// Checks a transaction step's keys: valid, and all in the range of `key` (spans
    /// clipped to it), so the range applying it holds every key it names.
    /// Checks a transaction step: its keys and values valid (else `Invalid`), and all
    /// in `range` (spans too), so the range applying it holds every key it names; a
    /// step grouped by a table from before a split gets `WrongRange` (the client's
    /// transaction starts again with a fresh table).
    fn check_txn_op(&self, range: RangeId, op: &TxnOp) -> Result<(), Box<Response>> {
        let invalid = |reason: String| Box::new(Response::Invalid { reason });
        let Some(replica) = self.replicas.get(&range) else {
            return Err(Box::new(self.not_leader(range)(None)));
        };
        if let TxnOp::Commit1pc { part } | TxnOp::Prepare { part, .. } = op {
            if part.is_empty() {
                return Err(invalid("a transaction step with no key".into()));
            }
            for key in part.keys() {
                validate_key(key).map_err(|e| invalid(e.to_string()))?;
            }
            for write in &part.writes {
                if let Some(value) = &write.value {
                    validate_value(value).map_err(|e| invalid(e.to_string()))?;
                }
            }
        }
        match replica.kv.span() {
            Some(span) if !op.within(span) => Err(Box::new(replica.wrong_range())),
            _ => Ok(()),
        }
    }

    pub(crate) fn propose(&mut self, range: RangeId, command: Command, reply: ReplyTo) {
        if let Some(refused) = self.refused_by_freeze(range, &command.op) {
            return reply.send(refused);
        }
        let not_leader = self.not_leader(range);
        let Some(replica) = self.replicas.get_mut(&range) else {
            return reply.send(not_leader(None));
        };
        replica.propose_write(command, reply, not_leader);
    }

    fn read(&mut self, key: &[u8], mode: ReadMode, request: Request, reply: ReplyTo) {
        // Raft's idea of time must be the clock's before it judges a lease: a leader
        // that stalled would otherwise still count ticks from before the stall.
        self.catch_up_ticks();
        let range = match self.route(key) {
            Ok(range) => range,
            Err(response) => return reply.send(*response),
        };
        let context = self.next_read_context;
        self.next_read_context += 1;
        let not_leader = self.not_leader(range);
        let Some(replica) = self.replicas.get_mut(&range) else {
            return reply.send(not_leader(None));
        };
        #[cfg(madsim)]
        let lease_reads = replica.raft.lease_reads();
        replica.start_read(context, mode, self.ticks, request, reply, not_leader);
        #[cfg(madsim)]
        crate::env::sim_hooks::count_lease_reads(replica.raft.lease_reads() - lease_reads);
    }

    /// Descriptors as stored under `_/range/` in the meta range, plus addresses.
    fn range_table(&self) -> Response {
        let meta = self.table.meta();
        let mut ranges = Vec::new();
        if let Some(replica) = self.replicas.get(&meta) {
            for kv in replica.scan_all(DESCRIPTOR_PREFIX, RESERVED_END) {
                match bincode::serde::decode_from_slice(&kv.value, bincode::config::standard()) {
                    Ok((descriptor, _)) => ranges.push(descriptor),
                    Err(error) => {
                        error!(
                            node = self.id.0,
                            "{}: undecodable descriptor at {:?}: {error}", self.id, kv.key
                        )
                    }
                }
            }
        }
        if ranges.is_empty() {
            ranges = self.replicas.values().map(|r| r.descriptor.clone()).collect();
        }
        // The meta range records spans; who holds each range is its configuration,
        // which this node's replica knows better (membership changes do not rewrite
        // the descriptors).
        for descriptor in &mut ranges {
            if let Some(replica) = self.replicas.get(&descriptor.id) {
                let members = replica.raft.membership().members();
                if replica.kv.span().is_some() && !members.is_empty() {
                    descriptor.replicas = members.into_iter().collect();
                }
            }
        }
        let addresses =
            members::read(&self.members).current().map(|(id, a)| (id, a.clone())).collect();
        Response::RangeTable { ranges, addresses }
    }

    pub fn status(&self) -> NodeStatus {
        let ranges = self
            .replicas
            .values()
            .map(|replica| {
                let status = replica.raft.status();
                RangeStatus {
                    descriptor: replica.descriptor.clone(),
                    role: if replica.raft.repairing() {
                        format!("{:?} (repairing)", status.role)
                    } else {
                        format!("{:?}", status.role)
                    },
                    leader: status.leader,
                    term: status.term,
                    commit: status.commit,
                    applied: replica.kv.applied(),
                    last_index: status.last_index,
                    voters: status.voters,
                    outgoing: status.outgoing,
                    learners: status.learners,
                    matched: replica.raft.matched(),
                    settings: replica.kv.settings(),
                    keys: replica.kv.len() as u64,
                    bytes: replica.kv.live_bytes(),
                }
            })
            .collect();
        let members = members::read(&self.members);
        let peers = members
            .current()
            .filter(|(id, _)| *id != self.id)
            .map(|(id, address)| (id, address.clone(), self.network.is_connected(id)))
            .collect();
        NodeStatus {
            node: self.id,
            address: members.addresses.get(&self.id).cloned().unwrap_or_default(),
            cluster: self.identity.cluster,
            identity: self.identity.identity,
            identities: members.identities.iter().map(|(id, identity)| (*id, *identity)).collect(),
            peers,
            removed: members.removed.iter().copied().collect(),
            ranges,
        }
    }

    /// Whether some range has a Ready to take (only an active one can).
    pub fn has_ready(&self) -> bool {
        self.replicas.active().any(|(_, replica)| replica.raft.has_ready())
    }

    /// Runs the Ready cycle for every range with work: persist with one fsync, send,
    /// apply, advance.
    pub fn flush(&mut self) -> Result<(), NodeError> {
        let cycle = self.flush_write()?;
        Ok(self.flush_sync(cycle)?)
    }

    /// The first half of a Ready cycle: takes every Ready, appends its records to the
    /// WAL, sends what may leave before they are durable (the leader's Appends),
    /// applies what is committed (`apply_ready`), and writes the records (one
    /// `write_at`) if any must be made durable by this cycle's fsync.
    ///
    /// # Errors
    /// A storage failure, or `NodeError::Unreadable` for a committed entry or snapshot
    /// this version cannot read: the node must stop (what is buffered may still be
    /// synced; nothing after the unreadable entry was applied).
    pub fn flush_write(&mut self) -> Result<Cycle, NodeError> {
        let mut readies: Vec<(RangeId, Ready)> = Vec::new();
        let mut send_now: BTreeMap<NodeId, Vec<Envelope>> = BTreeMap::new();
        let mut wrote = false;
        let mut resting = Vec::new();
        for range in self.replicas.active_ids() {
            let Some(replica) = self.replicas.get_mut(&range) else { continue };
            let range = &range;
            if !replica.raft.has_ready() {
                if Node::may_rest(replica, &self.liveness, self.ticks) {
                    resting.push(*range);
                }
                continue;
            }
            let mut ready = replica.raft.ready();
            #[cfg(madsim)]
            for message in ready.messages.iter().chain(&ready.persisted_messages) {
                if matches!(message.body, crate::raft::MessageBody::TimeoutNow) {
                    // The log before this cycle's own entries: it may have appended
                    // after the TimeoutNow (a joint configuration's leave entry).
                    let last = match ready.entries.first() {
                        Some(first) => {
                            let index = first.index - 1;
                            let term = replica.raft.log_term(index).ok().flatten();
                            (term.unwrap_or(0), index)
                        }
                        None => last_entry(&replica.raft),
                    };
                    let (id, to, term) = (self.id, message.to, message.term);
                    crate::env::sim_hooks::observe(|o| {
                        o.timeout_now_sent(id, *range, term, to, last)
                    });
                }
            }
            let mut messages = std::mem::take(&mut ready.messages);
            if replica.split_at_tick.is_some_and(|at| self.ticks < at + SPLIT_SNAPSHOT_DELAY_TICKS)
            {
                // A range just split off: its followers create it by applying the same
                // split; a snapshot now (to a replica still empty) would copy the whole
                // range for nothing. The core sends it again if the follower stays
                // silent.
                messages.retain(|m| !matches!(m.body, MessageBody::Snapshot { .. }));
            }
            outbox(&mut send_now, *range, messages);
            if let Some(snapshot) = &ready.snapshot {
                // The file first: once the marker is durable, recovery needs it.
                self.snapshots.save_now(*range, snapshot)?;
                replica.snapshot_index = snapshot.meta.index;
                let (index, term) = (snapshot.meta.index, snapshot.meta.term);
                self.wal.append(&WalRecord::SnapshotInstalled { range: *range, index, term })?;
                wrote = true;
            }
            if !ready.entries.is_empty() {
                let entries = ready.entries.clone();
                self.wal.append(&WalRecord::Entries { range: *range, entries })?;
                wrote = true;
            }
            if let Some(hard_state) = ready.hard_state {
                // Term and vote must be durable before anything that relies on them
                // leaves; a commit index need not be (etcd's MustSync): after a crash
                // the replica relearns it from the leader. A commit-only record rides
                // on the next fsync, so a Ready that only moved commit costs none.
                let durable = replica.raft.store().hard_state();
                let (term, vote) = (hard_state.term, hard_state.vote);
                if term > durable.term && vote == Some(self.id) {
                    // A campaign: a new term with a vote for itself.
                    NodeMetrics::add(&self.telemetry.metrics.elections, 1);
                    let at_ms = self.ticker.wall_ms();
                    let election = EventKind::Election { range: range.0, term };
                    self.telemetry.record_event(at_ms, election);
                }
                self.wal.append(&WalRecord::HardState { range: *range, hard_state })?;
                wrote |= term != durable.term || vote != durable.vote;
            }
            readies.push((*range, ready));
        }
        for range in resting {
            self.replicas.rest(range);
        }
        self.send(send_now);
        for (range, ready) in &readies {
            self.apply_ready(*range, ready)?;
        }
        if wrote {
            let metrics = &self.telemetry.metrics;
            let bytes = self.wal.buffered_bytes();
            let entries: usize = readies.iter().map(|(_, ready)| ready.entries.len()).sum();
            metrics.wal_batch_bytes.observe(bytes);
            metrics.wal_batch_entries.observe(entries as u64);
            NodeMetrics::add(&metrics.wal_bytes, bytes);
            // Written now, synced by `flush_sync`: a crash in between (the simulation
            // lets the fsync's time pass there) may keep, drop or tear this batch.
            self.wal.write()?;
        }
        Ok(Cycle { readies, wrote })
    }

    /// The second half: one fsync if anything must be durable, then the messages that
    /// depended on it, then advance and snapshots. The simulation lets time pass
    /// between the halves (`sim_hooks::fsync_latency`), as a real fsync takes.
    pub fn flush_sync(&mut self, cycle: Cycle) -> Result<(), StorageError> {
        let Cycle { mut readies, wrote } = cycle;
        if wrote {
            let started = tokio::time::Instant::now();
            self.wal.sync()?;
            self.telemetry.metrics.wal_fsync.observe_duration(started.elapsed());
        }
        // Hard states are durable only if this cycle synced (a commit-only one may
        // wait in the WAL buffer for the next sync).
        #[cfg(madsim)]
        for (range, ready) in readies.iter().filter(|_| wrote) {
            if let Some(hs) = ready.hard_state {
                let me = self.id;
                crate::env::sim_hooks::observe(|o| {
                    o.hard_state_synced(me, *range, hs.term, hs.commit);
                    o.vote_synced(me, *range, hs.term, hs.vote);
                });
            }
        }
        // Everything each Ready asked to persist is durable now: its dependent messages
        // may leave.
        let mut send_after: BTreeMap<NodeId, Vec<Envelope>> = BTreeMap::new();
        for (range, ready) in readies.iter_mut() {
            outbox(&mut send_after, *range, std::mem::take(&mut ready.persisted_messages));
        }
        self.send(send_after);
        for (range, ready) in readies {
            self.finish_ready(range, ready)?;
        }
        if !self.deferred_splits.is_empty() {
            for split in std::mem::take(&mut self.deferred_splits) {
                self.create_split_range(split)?;
            }
            self.rebuild_routes();
            self.refresh_split_plans();
        }
        self.collect_snapshots()?;
        self.snapshot_pinning_ranges();
        self.ping_idle_links();
        Ok(())
    }

    fn send(&mut self, outbox: BTreeMap<NodeId, Vec<Envelope>>) {
        for (to, envelopes) in outbox {
            assert_ne!(to, self.id, "{}: Raft addressed a message to its own node", self.id);
            let snapshots = envelopes
                .iter()
                .filter(|e| matches!(e.message.body, MessageBody::Snapshot { offset: 0, .. }))
                .count();
            NodeMetrics::add(&self.telemetry.metrics.snapshots_sent, snapshots as u64);
            self.network.send(to, envelopes);
            self.liveness.sent(to, self.ticks);
        }
    }

    /// An empty batch to every peer this node sent nothing for a while (liveness.rs).
    fn ping_idle_links(&mut self) {
        for peer in self.liveness.due_pings(self.ticks) {
            self.network.send(peer, Vec::new());
            self.liveness.sent(peer, self.ticks);
        }
    }

    /// Applies a Ready's snapshot and committed entries, answers the writes and reads
    /// they complete, and fails what a lost leadership strands.
    ///
    /// This runs before the cycle's fsync: a committed entry is durable on a majority
    /// already (a follower acknowledges, and a leader counts itself, only after its
    /// fsync), so neither its application nor its answer waits for this cycle's newer
    /// entries to reach this disk (etcd applies concurrently with persisting too). The
    /// core hands out only entries that are committed and already durable here
    /// (`RaftLog::applicable_index`), and snapshots are taken only after the sync
    /// (`finish_ready`).
    fn apply_ready(&mut self, range: RangeId, ready: &Ready) -> Result<(), NodeError> {
        let not_leader_lost =
            || Response::Unavailable { reason: "leadership changed; retry".into() };
        let replica = self.replicas.get_mut(&range).expect("ready came from this replica");
        if let Some(format) = replica.raft.unreadable_conf() {
            return Err(NodeError::Unreadable {
                range,
                what: "a membership change in the log".into(),
                reason: format!("entry format {format} is newer than this rangedb: upgrade it"),
            });
        }
        let mut node_changes = Vec::new();
        let mut splits: Vec<AppliedSplit> = Vec::new();
        if let Some(snapshot) = &ready.snapshot {
            // advance() needs the snapshot too: it replaces the group's stable log.
            restore_snapshot(replica, snapshot).map_err(|reason| NodeError::Unreadable {
                range,
                what: format!("the snapshot at index {}", snapshot.meta.index),
                reason,
            })?;
            NodeMetrics::add(&self.telemetry.metrics.snapshots_installed, 1);
            #[cfg(madsim)]
            {
                // The snapshot's settings were applied at some index its image covers.
                replica.sim_settings = replica.kv.settings();
            }
            #[cfg(madsim)]
            crate::env::sim_hooks::observe(|o| {
                o.snapshot_restored(self.id, range, snapshot.meta.index, snapshot.meta.term)
            });
        }
        for entry in &ready.committed_entries {
            // Before and after the entry: a change made outside the log shows at the
            // index it was made at, one the entry made at the entry's.
            #[cfg(madsim)]
            replica.sim_report_settings(self.id);
            let applied = replica.apply(entry).map_err(|error| NodeError::Unreadable {
                range,
                what: format!("committed entry {}", entry.index),
                reason: error.to_string(),
            })?;
            #[cfg(madsim)]
            let refused = applied.refused;
            splits.extend(applied.split);
            #[cfg(madsim)]
            replica.sim_report_settings(self.id);
            if entry.format == crate::raft::EntryFormat::CONF_CHANGE {
                let decoded = crate::raft::membership::decode_conf_change(entry);
                #[cfg(madsim)]
                if let Some((membership, _)) = &decoded {
                    crate::env::sim_hooks::observe(|o| {
                        o.conf_applied(self.id, range, entry.index, membership)
                    });
                }
                if let Some((membership, context)) = decoded {
                    // A removal takes effect once the configuration without the node is
                    // in force, not while a joint one still counts on it: a node that
                    // stopped there could leave the range without a quorum of its
                    // outgoing voters.
                    match NodeChange::decode(&context) {
                        Some(NodeChange::Removed { node })
                            if membership.members().contains(&node) =>
                        {
                            self.pending_removals.insert(node, range);
                        }
                        Some(change) => node_changes.push(change),
                        None => {}
                    }
                    let done: Vec<NodeId> = self
                        .pending_removals
                        .iter()
                        .filter(|(node, r)| **r == range && !membership.members().contains(node))
                        .map(|(node, _)| *node)
                        .collect();
                    for node in done {
                        self.pending_removals.remove(&node);
                        node_changes.push(NodeChange::Removed { node });
                    }
                }
            }
            // A membership change is reported with `conf_applied` (above); to the
            // checkers of commands it is a no-op, and so is a command the state machine
            // refused as a whole (a write routed before a split, a split not made).
            #[cfg(madsim)]
            let data: &[u8] = if entry.format == crate::raft::EntryFormat::CONF_CHANGE || refused {
                &[]
            } else {
                &entry.data
            };
            #[cfg(madsim)]
            crate::env::sim_hooks::observe(|o| {
                o.applied(self.id, range, entry.index, entry.term, data)
            });
        }
        for read in &ready.read_states {
            replica.confirm_read(read.context, read.index);
        }
        #[cfg(madsim)]
        if let Some(soft) = &ready.soft_state {
            let term = replica.raft.status().term;
            crate::env::sim_hooks::observe(|o| o.role_changed(self.id, range, term, soft.role));
            if soft.role == Role::Leader {
                let raft = &replica.raft;
                let log_term = |index| raft.log_term(index);
                crate::env::sim_hooks::observe(|o| {
                    o.became_leader(self.id, range, term, &log_term);
                    let committed = raft.membership_index() <= raft.committed();
                    o.leader_membership(self.id, range, term, raft.membership(), committed);
                });
            }
        }
        if let Some(soft) = &ready.soft_state {
            if soft.role == Role::Leader {
                self.leading.insert(range);
                self.settings_behind.insert(range);
            } else {
                self.leading.remove(&range);
            }
            let metrics = &self.telemetry.metrics;
            let previous = self.last_leaders.insert(range, soft.leader).flatten();
            if let Some(leader) = soft.leader.filter(|&leader| Some(leader) != previous) {
                NodeMetrics::add(&metrics.leader_changes, 1);
                let change = EventKind::LeaderChange {
                    range: range.0,
                    from: previous.map(|node| node.0),
                    to: leader.0,
                    term: replica.raft.status().term,
                };
                self.telemetry.record_event(self.ticker.wall_ms(), change);
            }
            if soft.role != Role::Leader {
                replica.fail_pending(not_leader_lost);
                #[cfg(madsim)]
                if !replica.raft.membership().is_voter(self.id) {
                    crate::env::sim_hooks::sometimes("replica left out of its configuration");
                }
            }
        }
        replica.serve_reads();
        if replica.kv.freeze().is_some() {
            self.frozen.insert(range);
        }
        if !ready.committed_entries.is_empty()
            || ready.snapshot.is_some()
            || ready.soft_state.is_some()
        {
            let key = janitor_key(replica);
            self.set_txn_range(range, key);
        }
        let spans_changed = !splits.is_empty() || ready.snapshot.is_some();
        for split in splits {
            if self.replicas.contains_key(&split.right) {
                // An empty replica of it is here, perhaps with a Ready of this cycle
                // outstanding: replaced once the cycle is done (`flush_sync`).
                self.deferred_splits.push(split);
            } else {
                self.create_split_range(split)?;
            }
        }
        if spans_changed {
            self.rebuild_routes();
        }
        let meta_applied = !ready.committed_entries.is_empty() || ready.snapshot.is_some();
        if meta_applied && range == self.table.meta() {
            self.refresh_settings();
        }
        if (meta_applied && range == self.table.meta()) || spans_changed {
            self.refresh_split_plans();
            self.propose_planned_splits();
        }
        for change in &node_changes {
            if self.apply_node_change(change)? {
                return Err(NodeError::Removed(self.id));
            }
        }
        Ok(())
    }

    /// After the sync: tells Raft everything in the Ready is done, then snapshots the
    /// range if it is due.
    fn finish_ready(&mut self, range: RangeId, ready: Ready) -> Result<(), StorageError> {
        let replica = self.replicas.get_mut(&range).expect("ready came from this replica");
        replica.raft.advance(ready);
        self.maybe_snapshot(range)
    }

    /// Starts a snapshot of a range whose log grew past `snapshot_entries`.
    fn maybe_snapshot(&mut self, range: RangeId) -> Result<(), StorageError> {
        let replica = self.replicas.get_mut(&range).expect("range exists");
        if self.tuning.snapshot_due(replica) {
            self.start_snapshot(range);
        }
        Ok(())
    }

    /// Snapshots the ranges that keep the WAL's oldest segment (and so every later
    /// one) from being released once the WAL holds more than `WAL_SEGMENTS_KEPT`
    /// segments: ranges that went quiet with fewer than `snapshot_entries` entries
    /// since their last snapshot, which no size rule would ever snapshot.
    fn snapshot_pinning_ranges(&mut self) {
        if self.wal.segment_count() <= WAL_SEGMENTS_KEPT {
            return;
        }
        let covered: BTreeMap<RangeId, u64> =
            self.replicas.iter().map(|(id, r)| (*id, r.snapshot_index)).collect();
        for (range, max) in self.wal.pinning(&covered, WAL_SEGMENTS_KEPT) {
            // Entries not applied yet cannot be covered yet: later.
            if self.replicas.get(&range).is_some_and(|r| r.kv.applied() >= max) {
                #[cfg(madsim)]
                crate::env::sim_hooks::sometimes("quiet range snapshotted to release the WAL");
                self.start_snapshot(range);
            }
        }
    }

    /// Starts a snapshot of `range` at its applied index, unless one is being
    /// written: a copy of its state machine, written in the background
    /// (snapshotter.rs).
    fn start_snapshot(&mut self, range: RangeId) {
        let Some(replica) = self.replicas.get_mut(&range) else { return };
        let applied = replica.kv.applied();
        if self.snapshots.writing(range) || applied <= replica.snapshot_index {
            return;
        }
        let store = replica.raft.store();
        let Ok(term) = store.term(applied) else { return };
        let Some(conf_state) = replica.raft.conf_state_at(applied) else {
            return; // A joint configuration: snapshot once it is left.
        };
        let meta = SnapshotMeta { index: applied, term, conf_state };
        // What is applied from now on counts towards the next one.
        replica.log_bytes = 0;
        self.snapshots.start(range, meta, replica.kv.clone());
    }

    /// Compacts the logs of the ranges whose snapshots are now durable, then releases
    /// the WAL segments no range needs any more.
    ///
    /// # Errors
    /// A snapshot that could not be written: a storage failure, the node stops.
    pub fn collect_snapshots(&mut self) -> Result<(), StorageError> {
        let finished = self.snapshots.finished();
        if finished.is_empty() {
            return Ok(());
        }
        for (range, written) in finished {
            let snapshot = written?;
            let Some(replica) = self.replicas.get_mut(&range) else { continue };
            let index = snapshot.meta.index;
            if index <= replica.snapshot_index {
                #[cfg(madsim)]
                crate::env::sim_hooks::sometimes("local snapshot finished after a newer install");
                continue; // A newer one was installed meanwhile.
            }
            #[cfg(madsim)]
            if replica.kv.applied() > index {
                crate::env::sim_hooks::sometimes("range applied on while its snapshot was written");
            }
            replica.snapshot_index = index;
            replica.snapshot_bytes = snapshot.data.len() as u64;
            NodeMetrics::add(&self.telemetry.metrics.snapshots_taken, 1);
            // What the log drops is freed off the loop.
            let compacted = replica.raft.compact(snapshot);
            if let Err(error) = compacted.map(|discarded| self.snapshots.discard(discarded)) {
                warn!(
                    node = self.id.0,
                    range = range.0,
                    "{} {range}: compact at {index}: {error}",
                    self.id
                );
            }
        }
        let covered: BTreeMap<RangeId, u64> =
            self.replicas.iter().map(|(id, r)| (*id, r.snapshot_index)).collect();
        self.wal.release(&covered)
    }

    /// Fails every waiting request (shutdown).
    pub fn fail_all(&mut self, reason: &str) {
        for replica in self.replicas.values_mut() {
            replica.fail_pending(|| Response::Unavailable { reason: reason.to_string() });
        }
    }
}

/// Replaces the state machine with a received snapshot's image. The image passed the
/// checksums of every chunk: one that does not decode was written by a rangedb whose
/// image format this one cannot read, and the error says so.
fn restore_snapshot(replica: &mut Replica, snapshot: &Snapshot) -> Result<(), String> {
    let kv = KvStore::restore(&snapshot.data).map_err(|error| error.to_string())?;
    replica.kv = kv;
    replica.snapshot_index = snapshot.meta.index;
    replica.snapshot_bytes = snapshot.data.len() as u64;
    replica.log_bytes = 0;
    Ok(())
}

/// The key the lock janitor beside this node visits `replica`'s range at, if it
/// should: led here, holding locks or records, not the meta range (whose locks are not
/// its business, as `RangeCache::data_range_keys`). From the span the state machine
/// holds (the descriptor may be refreshed from it only later in the cycle).
fn janitor_key(replica: &Replica) -> Option<Vec<u8>> {
    let (start, meta) = match replica.kv.span() {
        Some(span) => (&span.start, span.contains(RESERVED_PREFIX)),
        None => (&replica.descriptor.start, replica.descriptor.contains(RESERVED_PREFIX)),
    };
    let wanted = replica.is_leader() && !meta && !replica.kv.txn_outstanding(1).is_empty();
    wanted.then(|| if start.is_empty() { vec![0] } else { start.clone() })
}

fn outbox(outbox: &mut BTreeMap<NodeId, Vec<Envelope>>, range: RangeId, messages: Vec<Message>) {
    for message in messages {
        outbox.entry(message.to).or_default().push(Envelope { range, message });
    }
}

/// Reports a replica's leader lease to the simulation's lease check; `next_tick`:
/// when the node's next tick falls due (a lease that holds now holds until then).
#[cfg(madsim)]
fn sim_watch(id: crate::raft::NodeId, range: RangeId, replica: &Replica, ticker: &Ticker) {
    let raft = &replica.raft;
    // The next tick's time only for a lease holder: reading the clock per range and
    // per message was 4% of a simulated run.
    let held = (raft.role() == Role::Leader && raft.lease_holds())
        .then(|| (raft.term(), ticker.next_deadline()));
    crate::env::sim_hooks::lease(id, range, held, raft.membership());
}

/// A replica's last log entry: (term, index).
#[cfg(madsim)]
fn last_entry(raft: &crate::raft::RaftGroup) -> (crate::raft::Term, u64) {
    let index = raft.status().last_index;
    let term = match raft.log_term(index) {
        Ok(term) => term.unwrap_or(0),
        Err(_) => raft.status().term,
    };
    (term, index)
}

/// What the simulation's checkers watch around one message stepped into a replica:
/// a follower hearing from its leader, a campaign a TimeoutNow started, and the
/// replica's leader lease after it.
#[cfg(madsim)]
struct SimWatch {
    /// (from, term) of a message from a leader (it restarts a follower's election timer).
    from_leader: Option<(crate::raft::NodeId, crate::raft::Term)>,
    /// (from, term) of a TimeoutNow.
    timeout_now: Option<(crate::raft::NodeId, crate::raft::Term)>,
    /// The commit index an Append or Heartbeat vouches for, and the replica's
    /// commit index before it.
    vouched: Option<u64>,
    commit_before: u64,
}

#[cfg(madsim)]
impl SimWatch {
    fn before(message: &crate::raft::Message, commit_before: u64) -> SimWatch {
        use crate::raft::MessageBody;
        let sender = Some((message.from, message.term));
        let (from_leader, timeout_now) = match message.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Quiesce { .. }
            | MessageBody::Snapshot { .. } => (sender, None),
            MessageBody::TimeoutNow => (None, sender),
            _ => (None, None),
        };
        // Raft's rule (paper figure 2): a follower commits no further than the
        // leader's commit index and the last entry the message proved matching.
        let vouched = match &message.body {
            MessageBody::Append { prev_index, entries, commit, .. } => {
                Some((*commit).min(prev_index + entries.len() as u64))
            }
            MessageBody::Heartbeat { commit, .. } => Some(*commit),
            _ => None,
        };
        SimWatch { from_leader, timeout_now, vouched, commit_before }
    }

    fn after(self, id: crate::raft::NodeId, range: RangeId, replica: &Replica, ticker: &Ticker) {
        use crate::env::sim_hooks;
        let raft = &replica.raft;
        let term = raft.term();
        if let Some((from, sent_in)) = self.from_leader {
            if raft.role() == Role::Follower && raft.leader() == Some(from) && term == sent_in {
                sim_hooks::observe(|o| o.heard_leader(id, range, term, from));
            }
        }
        if let Some(vouched) = self.vouched {
            let (before, after) = (self.commit_before, raft.committed());
            sim_hooks::observe(|o| o.follower_commit(id, range, term, vouched, before, after));
        }
        if let Some((from, sent_in)) = self.timeout_now {
            if raft.role() == Role::Candidate && term == sent_in + 1 {
                let last = last_entry(raft);
                sim_hooks::observe(|o| o.transfer_campaign(id, range, from, sent_in, last));
            }
        }
        sim_watch(id, range, replica, ticker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{ConfState, Config, MemStorage, RaftGroup};
    use crate::range::descriptor::RangeDescriptor;
    use crate::range::kv::{Command, WriteOp, COMMAND_FORMAT};

    fn replica(snapshot_bytes: u64) -> Replica {
        let conf_state = ConfState { voters: vec![NodeId(1)], learners: vec![] };
        let store = MemStorage::new(conf_state);
        let raft = RaftGroup::new(Config::new(NodeId(1), 1), store).unwrap();
        let descriptor = RangeDescriptor {
            id: RangeId(1),
            start: vec![],
            end: None,
            generation: 0,
            replicas: vec![NodeId(1)],
        };
        Replica::new(descriptor, raft, KvStore::new(), 0, snapshot_bytes)
    }

    fn apply_puts(replica: &mut Replica, count: u64, value_bytes: usize) {
        for _ in 0..count {
            let index = replica.kv.applied() + 1;
            let op = WriteOp::Put { key: b"k".to_vec(), value: vec![7; value_bytes] };
            let data = bincode::serde::encode_to_vec(
                Command { request_id: None, op },
                bincode::config::standard(),
            )
            .unwrap();
            replica
                .apply(&crate::raft::Entry {
                    term: 1,
                    index,
                    format: COMMAND_FORMAT,
                    data: data.into(),
                })
                .unwrap();
        }
    }

    #[test]
    fn a_snapshot_is_due_after_enough_entries_and_enough_log_bytes() {
        let tuning = Tuning {
            snapshot_entries: 100,
            snapshot_log_ratio: 2,
            snapshot_entries_flag: 100,
            initial_history_revisions: None,
            leader_placement: LeaderPlacement::Colocate,
        };
        // No snapshot yet: by entries alone.
        let mut small = replica(0);
        apply_puts(&mut small, 99, 10);
        assert!(!tuning.snapshot_due(&small));
        apply_puts(&mut small, 1, 10);
        assert!(tuning.snapshot_due(&small));
        // A 1 MB image: 100 entries of ~20 bytes are not enough; 2 MB of log are.
        let mut large = replica(1 << 20);
        apply_puts(&mut large, 200, 10);
        assert!(!tuning.snapshot_due(&large));
        apply_puts(&mut large, 2, 1 << 20);
        assert!(tuning.snapshot_due(&large));
        // Ratio 0: by entries only.
        let by_entries = Tuning { snapshot_log_ratio: 0, ..tuning };
        assert!(!by_entries.snapshot_due(&replica(1 << 20)));
        let mut counted = replica(1 << 20);
        apply_puts(&mut counted, 100, 10);
        assert!(by_entries.snapshot_due(&counted));
    }
}
