//! What the node tells its operator: counters and histograms of its work (plain
//! atomics, so recording costs no lock and pulls in no metrics crate: the HTTP
//! listener in `crate::ops` turns them into Prometheus text), and whether it is ready
//! to serve (`Readiness`, for `/ready`).
//!
//! ```text
//!  event loop ──► NodeMetrics (atomics) ◄── ReplyTo::send (requests, latency)
//!      │ every tick                 │
//!      ▼                            ▼ scrape
//!  Readiness (mutex) ◄────────── /ready, /metrics  (ops/, not in the simulated build)
//! ```
//!
//! Label sets are bounded by construction: operation and outcome are small enums, and
//! nothing is labelled by range or key.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::wire::{Request, Response};

/// The kind of a client request, a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Get,
    Put,
    Delete,
    Scan,
    /// Every transaction step (prepare, commit, resolve, status, locks).
    Txn,
    /// Status, range table, membership changes, join.
    Admin,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Operation::Get,
        Operation::Put,
        Operation::Delete,
        Operation::Scan,
        Operation::Txn,
        Operation::Admin,
    ];

    pub fn of(request: &Request) -> Operation {
        match request {
            Request::Get { .. } => Operation::Get,
            Request::Put { .. } => Operation::Put,
            Request::Delete { .. } => Operation::Delete,
            Request::Scan { .. } => Operation::Scan,
            Request::Txn { .. } | Request::TxnStatus { .. } | Request::TxnLocks { .. } => {
                Operation::Txn
            }
            Request::RangeTable
            | Request::Status
            | Request::ChangeReplicas { .. }
            | Request::Join { .. }
            | Request::ConfigSet { .. }
            | Request::MetaScan { .. }
            | Request::Backup { .. }
            | Request::BackupFetch { .. }
            | Request::Split { .. } => Operation::Admin,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Put => "put",
            Operation::Delete => "delete",
            Operation::Scan => "scan",
            Operation::Txn => "txn",
            Operation::Admin => "admin",
        }
    }
}

/// How a request ended, a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    /// Redirected to the range's leader.
    NotLeader,
    /// A key is held by a transaction.
    Locked,
    /// Refused for good (bad input, a revision no longer kept).
    Invalid,
    /// Could not be served now (no quorum, leadership changed, shutting down).
    Unavailable,
}

impl Outcome {
    pub const ALL: [Outcome; 5] =
        [Outcome::Ok, Outcome::NotLeader, Outcome::Locked, Outcome::Invalid, Outcome::Unavailable];

    pub fn of(response: &Response) -> Outcome {
        match response {
            Response::NotLeader { .. } => Outcome::NotLeader,
            Response::Locked { .. } => Outcome::Locked,
            Response::Invalid { .. } | Response::RevisionUnavailable { .. } => Outcome::Invalid,
            Response::Unavailable { .. } => Outcome::Unavailable,
            _ => Outcome::Ok,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotLeader => "not_leader",
            Outcome::Locked => "locked",
            Outcome::Invalid => "invalid",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// A histogram over fixed bucket bounds (integers in the recorded unit: microseconds,
/// bytes, entries), lock-free. Buckets count the observations at most their bound
/// (not cumulative; the exposition sums them).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One per bound, then one for larger observations.
    buckets: Vec<AtomicU64>,
    sum: AtomicU64,
    count: AtomicU64,
}

/// A histogram's state at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [u64],
    /// Cumulative: observations at most each bound, then all of them (+Inf).
    pub cumulative: Vec<u64>,
    pub sum: u64,
    pub count: u64,
}

impl Histogram {
    /// # Panics
    /// If `bounds` is not strictly increasing.
    pub fn new(bounds: &'static [u64]) -> Histogram {
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds must increase");
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, duration: Duration) {
        self.observe(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|bucket| {
                total += bucket.load(Ordering::Relaxed);
                total
            })
            .collect();
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            sum: self.sum.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// Request latency bounds, microseconds: 250 µs to 10 s.
pub const LATENCY_BOUNDS_US: &[u64] = &[
    250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000,
    2_000_000, 5_000_000, 10_000_000,
];
/// WAL fsync latency bounds, microseconds: 50 µs to 2 s.
pub const FSYNC_BOUNDS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_000_000,
];
/// WAL batch size bounds, bytes: 256 B to 16 MiB.
pub const BATCH_BYTES_BOUNDS: &[u64] =
    &[256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20];
/// WAL batch size bounds, Raft entries (of every range) per fsync.
pub const BATCH_ENTRIES_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// Counters and histograms of one node. Counters only grow; the `*_now` values are
/// gauges the event loop sets every tick.
#[derive(Debug)]
pub struct NodeMetrics {
    /// `[operation][outcome]`, in `Operation::ALL` and `Outcome::ALL` order.
    requests: Vec<Vec<AtomicU64>>,
    /// Per operation, from the request's arrival to its answer.
    latency: Vec<Histogram>,
    /// Campaigns this node's replicas started (a new term with a vote for itself).
    pub elections: AtomicU64,
    /// A replica learned of a new leader of its range.
    pub leader_changes: AtomicU64,
    /// Writes refused by Raft (a leadership transfer in progress, a full queue),
    /// failed because the leadership was lost before they committed, or whose index
    /// another leader's entry took.
    pub proposals_dropped: AtomicU64,
    /// From a write's proposal on the leader to its entry's application there
    /// (committed by a quorum, including the fsyncs).
    pub raft_commit: Histogram,
    pub wal_fsync: Histogram,
    pub wal_batch_bytes: Histogram,
    pub wal_batch_entries: Histogram,
    pub wal_bytes: AtomicU64,
    /// Snapshots this node started sending to a follower (first chunks).
    pub snapshots_sent: AtomicU64,
    /// Snapshots received and installed by this node's replicas.
    pub snapshots_installed: AtomicU64,
    /// Snapshots this node took of its own replicas (log compaction).
    pub snapshots_taken: AtomicU64,
    pub ranges_now: AtomicU64,
    pub ranges_leading_now: AtomicU64,
    /// Bytes of this node's replicas: each one's last snapshot image plus the log
    /// applied since.
    pub replica_bytes_now: AtomicU64,
    /// Live keys in this node's replicas.
    pub keys_now: AtomicU64,
}

impl Default for NodeMetrics {
    fn default() -> NodeMetrics {
        let counters = || Outcome::ALL.iter().map(|_| AtomicU64::new(0)).collect();
        NodeMetrics {
            requests: Operation::ALL.iter().map(|_| counters()).collect(),
            latency: Operation::ALL.iter().map(|_| Histogram::new(LATENCY_BOUNDS_US)).collect(),
            elections: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            proposals_dropped: AtomicU64::new(0),
            raft_commit: Histogram::new(LATENCY_BOUNDS_US),
            wal_fsync: Histogram::new(FSYNC_BOUNDS_US),
            wal_batch_bytes: Histogram::new(BATCH_BYTES_BOUNDS),
            wal_batch_entries: Histogram::new(BATCH_ENTRIES_BOUNDS),
            wal_bytes: AtomicU64::new(0),
            snapshots_sent: AtomicU64::new(0),
            snapshots_installed: AtomicU64::new(0),
            snapshots_taken: AtomicU64::new(0),
            ranges_now: AtomicU64::new(0),
            ranges_leading_now: AtomicU64::new(0),
            replica_bytes_now: AtomicU64::new(0),
            keys_now: AtomicU64::new(0),
        }
    }
}

impl NodeMetrics {
    /// A request answered after `elapsed`.
    pub fn record_request(&self, operation: Operation, outcome: Outcome, elapsed: Duration) {
        let (op, out) = (operation as usize, outcome as usize);
        self.requests[op][out].fetch_add(1, Ordering::Relaxed);
        self.latency[op].observe_duration(elapsed);
    }

    pub fn requests(&self, operation: Operation, outcome: Outcome) -> u64 {
        self.requests[operation as usize][outcome as usize].load(Ordering::Relaxed)
    }

    pub fn latency(&self, operation: Operation) -> HistogramSnapshot {
        self.latency[operation as usize].snapshot()
    }

    pub fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }
}

/// Whether the node should get traffic (`/ready`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Recovering its replicas, founding or joining its cluster.
    Starting,
    /// Every hosted range has a known leader, none repairs, and each has applied what
    /// it knows is committed (within `READY_APPLY_LAG` entries).
    Ready,
    NotReady {
        reason: String,
    },
    /// Shut down, or stopped by an error.
    Stopped,
}

/// A range whose applied index trails its commit index by more than this is not
/// caught up (the lag `rangedb node add` accepts of a learner, `CAUGHT_UP_LAG`).
pub const READY_APPLY_LAG: u64 = 64;

/// Events a node keeps for its operator (the status page, `GET /v1/events`): the
/// newest `EVENTS_KEPT`, older ones dropped, so memory stays bounded however many
/// ranges or elections there are.
pub const EVENTS_KEPT: usize = 256;

/// Something that happened on a node, as it saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A replica of `range` on this node campaigned in `term`.
    Election { range: u64, term: u64 },
    /// A replica of `range` on this node learned of a new leader (`from`: the one it
    /// knew before, if any).
    LeaderChange { range: u64, from: Option<u64>, to: u64, term: u64 },
    /// A peer was heard from after a silence (or for the first time).
    PeerUp { node: u64 },
    /// A peer went silent for an election timeout.
    PeerDown { node: u64 },
}

/// One kept event: `seq` counts every event the node recorded (gaps in what is kept
/// show how many were dropped); `at_ms` is the node's wall clock, ms since the epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    pub seq: u64,
    pub at_ms: u64,
    pub kind: EventKind,
}

#[derive(Debug, Default)]
struct EventRing {
    recorded: u64,
    events: VecDeque<NodeEvent>,
}

/// A node's metrics, readiness and recent events, shared by its event loop and its
/// observers.
#[derive(Debug)]
pub struct Telemetry {
    pub metrics: NodeMetrics,
    readiness: Mutex<Readiness>,
    events: Mutex<EventRing>,
    /// A key in each range this node leads whose state machine holds locks or
    /// transaction records, once the node runs: the ranges the lock janitor next to
    /// it visits (`client::run_node_janitor`).
    txn_ranges: Mutex<Option<Vec<Vec<u8>>>>,
}

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry {
            metrics: NodeMetrics::default(),
            readiness: Mutex::new(Readiness::Starting),
            events: Mutex::new(EventRing::default()),
            txn_ranges: Mutex::new(None),
        }
    }
}

impl Telemetry {
    /// The ranges with transaction state this node leads (None: the node is not
    /// running yet).
    pub fn txn_ranges(&self) -> Option<Vec<Vec<u8>>> {
        self.txn_ranges.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn set_txn_ranges(&self, keys: Vec<Vec<u8>>) {
        *self.txn_ranges.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(keys);
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn set_readiness(&self, readiness: Readiness) {
        let mut current = self.readiness.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current != readiness {
            *current = readiness;
        }
    }

    /// Keeps `kind`, stamped `at_ms`, dropping the oldest event past `EVENTS_KEPT`.
    pub fn record_event(&self, at_ms: u64, kind: EventKind) {
        let mut ring = self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.recorded += 1;
        let seq = ring.recorded;
        if ring.events.len() >= EVENTS_KEPT {
            ring.events.pop_front();
        }
        ring.events.push_back(NodeEvent { seq, at_ms, kind });
    }

    /// The kept events, oldest first.
    pub fn events(&self) -> Vec<NodeEvent> {
        let ring = self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_observation_in_the_first_bucket_that_holds_it() {
        let histogram = Histogram::new(&[10, 100, 1000]);
        for value in [0, 10, 11, 100, 5000, 7] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        // <= 10: 0, 10, 7; <= 100: 11, 100; <= 1000: none; +Inf: 5000.
        assert_eq!(snapshot.cumulative, vec![3, 5, 5, 6]);
        assert_eq!(snapshot.count, 6);
        assert_eq!(snapshot.sum, 5128);
    }

    #[test]
    fn requests_are_counted_by_operation_and_outcome() {
        let metrics = NodeMetrics::default();
        metrics.record_request(Operation::Put, Outcome::Ok, Duration::from_micros(300));
        metrics.record_request(Operation::Put, Outcome::NotLeader, Duration::from_micros(100));
        metrics.record_request(Operation::Get, Outcome::Ok, Duration::from_secs(20));
        assert_eq!(metrics.requests(Operation::Put, Outcome::Ok), 1);
        assert_eq!(metrics.requests(Operation::Put, Outcome::NotLeader), 1);
        assert_eq!(metrics.requests(Operation::Get, Outcome::Unavailable), 0);
        let put = metrics.latency(Operation::Put);
        assert_eq!((put.count, put.sum), (2, 400));
        assert_eq!(put.cumulative[0], 1, "100 µs is within the first bound (250 µs)");
        let get = metrics.latency(Operation::Get);
        assert_eq!(get.cumulative[LATENCY_BOUNDS_US.len() - 1], 0);
        assert_eq!(get.cumulative[LATENCY_BOUNDS_US.len()], 1, "20 s is past the last bound");
    }

    #[test]
    fn the_event_ring_keeps_the_newest_events_and_numbers_all() {
        let telemetry = Telemetry::default();
        let total = EVENTS_KEPT as u64 + 10;
        for i in 1..=total {
            telemetry.record_event(i * 1000, EventKind::PeerUp { node: i });
        }
        let events = telemetry.events();
        assert_eq!(events.len(), EVENTS_KEPT);
        assert_eq!(events[0].seq, 11, "the 10 oldest were dropped");
        assert_eq!(events[0].kind, EventKind::PeerUp { node: 11 });
        let last = events.last().map(|event| (event.seq, event.at_ms));
        assert_eq!(last, Some((total, total * 1000)));
    }
}
