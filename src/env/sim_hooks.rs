//! Hooks through which the simulation watches and perturbs a running node.
//!
//! The call sites exist only under `--cfg madsim`; production builds compile them
//! out. State is per OS thread: madsim runs a whole simulated cluster on the thread
//! that calls `block_on`, and the sweep runs one seed per thread at a time.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::wire::Envelope;

use crate::raft::{NodeId, Role, Term};
use crate::range::descriptor::RangeId;

/// A replica's log lookup: the term at an index, `Ok(None)` past its end,
/// `Err(snapshot_index)` when compacted (`raft::RaftGroup::log_term`).
pub type LogTerm<'a> = &'a dyn Fn(u64) -> Result<Option<Term>, u64>;

/// Events a node reports to the simulation's checkers.
pub trait Observer {
    /// A replica applied the committed entry at `index` (empty `data`: a no-op, or a
    /// membership change, reported with `conf_applied`).
    fn applied(&mut self, node: NodeId, range: RangeId, index: u64, term: Term, data: &[u8]);
    /// A replica replaced its state machine with a snapshot at `index`.
    fn snapshot_restored(&mut self, node: NodeId, range: RangeId, index: u64, term: Term);
    /// The hard state of a replica is durable (reported after the WAL fsync).
    fn hard_state_synced(&mut self, node: NodeId, range: RangeId, term: Term, commit: u64);
    /// With `hard_state_synced`: the durable vote of that hard state, so a checker sees
    /// a replica vote twice (or forget its vote) within a term without relying on the
    /// core's own assertions.
    fn vote_synced(&mut self, node: NodeId, range: RangeId, term: Term, vote: Option<NodeId>) {
        let _ = (node, range, term, vote);
    }
    /// A replica's role changed; `term` is its current term.
    fn role_changed(&mut self, node: NodeId, range: RangeId, term: Term, role: Role);
    /// A replica became leader of `term`. `log_term(index)` is the term of its log's
    /// entry there (`raft::RaftGroup::log_term`), for the leader completeness check.
    fn became_leader(&mut self, node: NodeId, range: RangeId, term: Term, log_term: LogTerm<'_>) {
        let _ = (node, range, term, log_term);
    }
    /// A replica that just became leader of `term` uses `membership` (the latest
    /// configuration in its log); `committed`: whether that configuration's entry is
    /// at or below the replica's commit index (a replica left out of it may lead only
    /// while it is not: `raft::RaftGroup::membership_index`).
    fn leader_membership(
        &mut self,
        node: NodeId,
        range: RangeId,
        term: Term,
        membership: &crate::raft::Membership,
        committed: bool,
    ) {
        let _ = (node, range, term, membership, committed);
    }
    /// A follower of `term` stepped an Append or a Heartbeat from its leader whose
    /// message vouched for the follower's log up to `vouched` (an Append: the lesser of
    /// the leader's commit index and the last index it covered; a Heartbeat: its
    /// commit index, which the leader caps at what the follower holds); the follower's
    /// commit index went from `before` to `after`.
    fn follower_commit(
        &mut self,
        node: NodeId,
        range: RangeId,
        term: Term,
        vouched: u64,
        before: u64,
        after: u64,
    ) {
        let _ = (node, range, term, vouched, before, after);
    }
    /// A node recovered its replicas and is about to run them: each applies its log
    /// again from its snapshot.
    fn node_started(&mut self, node: NodeId) {
        let _ = node;
    }
    /// A replica applied the conf-change entry at `index`, installing `membership`.
    fn conf_applied(
        &mut self,
        node: NodeId,
        range: RangeId,
        index: u64,
        membership: &crate::raft::Membership,
    ) {
        let _ = (node, range, index, membership);
    }
    /// A follower of `term` heard from its leader `leader` (an Append, heartbeat,
    /// quiesce or snapshot message: it restarted its election timer).
    fn heard_leader(&mut self, node: NodeId, range: RangeId, term: Term, leader: NodeId) {
        let _ = (node, range, term, leader);
    }
    /// A leader of `term` would answer lease reads, under `membership`, until at
    /// least its next tick falls due at `until` (reported at every tick and message
    /// while it holds a lease); `None`: it holds none now (reported when it changes).
    fn lease_held(
        &mut self,
        node: NodeId,
        range: RangeId,
        held: Option<(Term, tokio::time::Instant)>,
        membership: &crate::raft::Membership,
    ) {
        let _ = (node, range, held, membership);
    }
    /// A leader of `term` sent TimeoutNow to `to`, its log then ending at
    /// (`last_term`, `last_index`).
    fn timeout_now_sent(
        &mut self,
        node: NodeId,
        range: RangeId,
        term: Term,
        to: NodeId,
        last: (Term, u64),
    ) {
        let _ = (node, range, term, to, last);
    }
    /// On TimeoutNow from `from` (leader of `term`), this replica campaigned with its
    /// log ending at (`last_term`, `last_index`).
    fn transfer_campaign(
        &mut self,
        node: NodeId,
        range: RangeId,
        from: NodeId,
        term: Term,
        last: (Term, u64),
    ) {
        let _ = (node, range, from, term, last);
    }
    /// At recovery a replica found its storage damaged and discarded its log: its
    /// durable state restarts at (`term`, `commit`) and it repairs from its peers.
    fn storage_damaged(&mut self, node: NodeId, range: RangeId, term: Term, commit: u64);
    /// A replica's state machine holds other settings than when last reported, first
    /// seen after it applied `index` (range/settings.rs): every replica of a range must
    /// change them at the same index (they come from the range's log).
    fn settings_applied(
        &mut self,
        node: NodeId,
        range: RangeId,
        index: u64,
        settings: crate::range::settings::RangeSettings,
    ) {
        let _ = (node, range, index, settings);
    }
    /// A node's replicas changed their spans (a split applied, a snapshot installed):
    /// every initialized replica's (range, span) on that node now.
    fn spans_changed(&mut self, node: NodeId, spans: &[(RangeId, crate::range::descriptor::Span)]) {
        let _ = (node, spans);
    }
    /// A node applied the cluster setting `snapshot_entries` written at meta revision
    /// `revision` (0: unset; `entries` is then its flag).
    fn node_settings(&mut self, node: NodeId, revision: u64, entries: u64) {
        let _ = (node, revision, entries);
    }
}

#[derive(Default)]
struct Hooks {
    observer: Option<Box<dyn Observer>>,
    /// Probability that the transport sends a peer batch twice.
    duplicate: f64,
    rng: u64,
    duplicated: u64,
    /// Reads answered from a leader lease.
    lease_reads: u64,
    /// Leadership transfers started by `Node::place_leaders`.
    handoffs: u64,
    /// Per link (from, to): a copy of an earlier batch, to be delivered again later.
    held: BTreeMap<(NodeId, NodeId), Vec<Envelope>>,
    /// How long a WAL fsync takes: (usual upper bound, rare stall) in microseconds.
    fsync_us: (u64, u64),
    /// Coverage markers reached: name -> times (see `sometimes`).
    markers: BTreeMap<&'static str, u64>,
    /// Nodes whose next fsyncs stall (`stall_fsyncs`), so a crash finds a written,
    /// unsynced batch.
    stalled_fsyncs: std::collections::BTreeSet<NodeId>,
    /// Set by the harness's watchdog when the seed ran past its wall-clock limit
    /// (`set_runaway_flag`): the next hook call panics, ending the run.
    runaway: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// The replicas' `max_size_per_msg`, if the simulation sets it (`max_append_bytes`).
    max_append_bytes: Option<u64>,
    /// One-way delays of peer links (from, to): the link's batches wait this long
    /// before they are written (`link_delay`).
    link_delays: BTreeMap<(NodeId, NodeId), std::time::Duration>,
    /// The last lease reported per replica (`lease`).
    leases: BTreeMap<(NodeId, RangeId), Option<(Term, tokio::time::Instant)>>,
}

thread_local! {
    static HOOKS: RefCell<Hooks> = RefCell::new(Hooks::default());
}

/// Installs `observer` for this thread (None removes it) and resets the knobs.
pub fn install(observer: Option<Box<dyn Observer>>, seed: u64) {
    HOOKS.with(|hooks| {
        *hooks.borrow_mut() = Hooks {
            observer,
            duplicate: 0.0,
            rng: seed,
            duplicated: 0,
            lease_reads: 0,
            handoffs: 0,
            held: BTreeMap::new(),
            fsync_us: (0, 0),
            markers: BTreeMap::new(),
            stalled_fsyncs: std::collections::BTreeSet::new(),
            runaway: None,
            max_append_bytes: None,
            link_delays: BTreeMap::new(),
            leases: BTreeMap::new(),
        };
    });
}

/// Sets the replicas' `max_size_per_msg` for the nodes started from now on this thread:
/// small, Appends carry one or a few entries (cut short, pipelined).
pub fn set_max_append_bytes(bytes: Option<u64>) {
    HOOKS.with(|hooks| hooks.borrow_mut().max_append_bytes = bytes);
}

/// The replicas' `max_size_per_msg` the simulation asked for, if any.
pub fn max_append_bytes() -> Option<u64> {
    HOOKS.with(|hooks| hooks.borrow().max_append_bytes)
}

/// Sets the one-way delays of peer links (from, to), replacing the earlier ones.
pub fn set_link_delays(delays: BTreeMap<(NodeId, NodeId), std::time::Duration>) {
    HOOKS.with(|hooks| hooks.borrow_mut().link_delays = delays);
}

/// How long the link from `from` to `to` holds a batch before writing it, if slowed:
/// one-way latency (a slow follower-to-leader direction), in order, as a slow link is.
pub fn link_delay(from: NodeId, to: NodeId) -> Option<std::time::Duration> {
    HOOKS.with(|hooks| hooks.borrow().link_delays.get(&(from, to)).copied())
}

/// The flag a watchdog sets when this thread's seed runs too long in wall-clock time
/// (a bug that floods the simulation with messages or entries). Every observed event
/// and peer batch checks it and panics once set, so the runaway seed fails instead
/// of running for hours and filling memory.
pub fn set_runaway_flag(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    HOOKS.with(|hooks| hooks.borrow_mut().runaway = Some(flag));
}

fn check_runaway(hooks: &Hooks) {
    let flag = hooks.runaway.as_ref();
    if flag.is_some_and(|flag| flag.load(std::sync::atomic::Ordering::Relaxed)) {
        panic!("runaway: the seed ran past its wall-clock limit (SIM_SEED_WALL_S)");
    }
}

/// A coverage marker (Antithesis's `sometimes`, FoundationDB's `TEST`): an event
/// worth reaching happened. The sweep counts each marker and fails when one it
/// declares (`sim/harness/coverage.rs`) never fires; call sites are `#[cfg(madsim)]`.
pub fn sometimes(name: &'static str) {
    HOOKS.with(|hooks| *hooks.borrow_mut().markers.entry(name).or_default() += 1);
}

/// The coverage markers reached so far on this thread.
pub fn markers() -> BTreeMap<&'static str, u64> {
    HOOKS.with(|hooks| hooks.borrow().markers.clone())
}

/// Makes `node`'s fsyncs stall (`stalled`) or not: the harness stalls a node, lets it
/// write a batch, and crashes it in the middle of its fsync.
pub fn stall_fsyncs(node: NodeId, stalled: bool) {
    HOOKS.with(|hooks| {
        let mut hooks = hooks.borrow_mut();
        if stalled {
            hooks.stalled_fsyncs.insert(node);
        } else {
            hooks.stalled_fsyncs.remove(&node);
        }
    });
}

/// Sets the duplication probability of peer batches.
pub fn set_duplicate(probability: f64) {
    HOOKS.with(|hooks| hooks.borrow_mut().duplicate = probability);
}

/// Peer batches duplicated so far on this thread.
pub fn duplicated() -> u64 {
    HOOKS.with(|hooks| hooks.borrow().duplicated)
}

/// Counts reads a leader answered from its lease.
pub fn count_lease_reads(reads: u64) {
    HOOKS.with(|hooks| hooks.borrow_mut().lease_reads += reads);
}

/// Counts leadership transfers a node started to colocate leaders.
pub fn count_handoff() {
    HOOKS.with(|hooks| hooks.borrow_mut().handoffs += 1);
}

/// Leadership transfers started to colocate leaders so far on this thread.
pub fn handoffs() -> u64 {
    HOOKS.with(|hooks| hooks.borrow().handoffs)
}

/// Reads answered from a leader lease so far on this thread.
pub fn lease_reads() -> u64 {
    HOOKS.with(|hooks| hooks.borrow().lease_reads)
}

/// The duplication fault, for a batch about to be queued on the link `from -> to`:
/// returns a batch to queue right after it. With the configured probability, half of
/// the time that is a copy of this batch, the other half an older batch held back
/// from this link (a stale replay: Raft must ignore it), and this one is held instead.
pub fn duplicate(from: NodeId, to: NodeId, batch: &[Envelope]) -> Option<Vec<Envelope>> {
    HOOKS.with(|hooks| {
        let mut hooks = hooks.borrow_mut();
        check_runaway(&hooks);
        if hooks.duplicate <= 0.0 {
            return None;
        }
        let mut draw = || {
            hooks.rng = hooks
                .rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (hooks.rng >> 11) as f64 / ((1u64 << 53) as f64)
        };
        let (yes, now) = (draw(), draw() < 0.5);
        if yes >= hooks.duplicate {
            return None;
        }
        hooks.duplicated += 1;
        if now {
            *hooks.markers.entry("peer batch sent twice").or_default() += 1;
            return Some(batch.to_vec());
        }
        let stale = hooks.held.insert((from, to), batch.to_vec());
        if stale.is_some() {
            *hooks.markers.entry("stale peer batch replayed").or_default() += 1;
        }
        stale
    })
}

/// Sets how long WAL fsyncs take: up to `usual_us`, and one in 50 up to `stall_us`.
pub fn set_fsync_latency(usual_us: u64, stall_us: u64) {
    HOOKS.with(|hooks| hooks.borrow_mut().fsync_us = (usual_us, stall_us));
}

/// How long the next WAL fsync takes (zero when not set). The node waits this long
/// between writing a batch and completing its sync, so a crash can fall in between,
/// as it can on a real disk: whatever was sent before the sync completes may then
/// refer to data the crash loses.
pub fn fsync_latency(node: NodeId) -> std::time::Duration {
    HOOKS.with(|hooks| {
        let mut hooks = hooks.borrow_mut();
        if hooks.stalled_fsyncs.contains(&node) {
            // Held until the harness crashes the node: its written batch is unsynced.
            return std::time::Duration::from_secs(10);
        }
        let (usual, stall) = hooks.fsync_us;
        if usual == 0 {
            return std::time::Duration::ZERO;
        }
        let mut draw = || {
            hooks.rng = hooks
                .rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            hooks.rng >> 11
        };
        let bound = if draw() % 50 == 0 { stall.max(usual) } else { usual };
        std::time::Duration::from_micros(1 + draw() % bound)
    })
}

/// Reports a replica's leader lease (`Observer::lease_held`) if it changed since the
/// last report.
pub fn lease(
    node: NodeId,
    range: RangeId,
    held: Option<(Term, tokio::time::Instant)>,
    membership: &crate::raft::Membership,
) {
    let changed = HOOKS.with(|hooks| {
        let mut hooks = hooks.borrow_mut();
        hooks.observer.is_some() && hooks.leases.insert((node, range), held) != Some(held)
    });
    if changed {
        observe(|o| o.lease_held(node, range, held, membership));
    }
}

/// Calls the observer, if one is installed.
pub fn observe(f: impl FnOnce(&mut dyn Observer)) {
    HOOKS.with(|hooks| {
        check_runaway(&hooks.borrow());
        if let Some(observer) = hooks.borrow_mut().observer.as_deref_mut() {
            f(observer);
        }
    });
}

thread_local! {
    /// Chance (per million) that a transaction's coordinator "dies" after preparing
    /// every participant, leaving its locks and pending record (`abandon_transaction`).
    static ABANDON_PER_MILLION: RefCell<(u64, u64)> = const { RefCell::new((0, 0)) };
}

/// Makes coordinators abandon `per_million` of their transactions once prepared;
/// `seed` drives the draws.
pub fn set_abandon(per_million: u64, seed: u64) {
    ABANDON_PER_MILLION.with(|cell| *cell.borrow_mut() = (per_million, seed));
}

/// Whether this coordinator dies now (see `set_abandon`).
pub fn abandon_transaction() -> bool {
    ABANDON_PER_MILLION.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 == 0 {
            return false;
        }
        cell.1 = crate::hash::splitmix64(cell.1);
        cell.1 % 1_000_000 < cell.0
    })
}
