//! `/metrics`: the node's `Telemetry` and the process's CPU and memory, in the
//! Prometheus text format (0.0.4), encoded by prometheus-client from a `Collector`
//! that reads the atomics at scrape time (nothing is recorded through the crate, so
//! the node's hot paths take no lock for it).
//!
//! Every label set is bounded: `op` (6 values) and `outcome` (5); no label names a
//! range, a key or a peer.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::node::telemetry::{HistogramSnapshot, Operation, Outcome, Readiness, Telemetry};

/// The Content-Type of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The registry a scrape encodes: the node's collector and the process's.
pub fn registry(telemetry: Arc<Telemetry>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(NodeCollector { telemetry }));
    registry.register_collector(Box::new(ProcessCollector));
    registry
}

/// The text of one scrape.
///
/// # Errors
/// Only if formatting fails (it writes to a String, so it does not).
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

#[derive(Debug)]
struct NodeCollector {
    telemetry: Arc<Telemetry>,
}

type Encoded = Result<(), std::fmt::Error>;

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Encoded {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge<V>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: V) -> Encoded
where
    V: prometheus_client::encoding::EncodeGaugeValue,
{
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

/// The exposition's buckets of `snapshot` (per bucket, the encoder sums them), its
/// bounds and sum divided by `scale` (1e6 for microseconds to seconds).
fn buckets(snapshot: &HistogramSnapshot, scale: f64) -> (f64, Vec<(f64, u64)>) {
    let mut previous = 0;
    let mut buckets = Vec::with_capacity(snapshot.cumulative.len());
    for (i, &cumulative) in snapshot.cumulative.iter().enumerate() {
        let bound = snapshot.bounds.get(i).map_or(f64::INFINITY, |&b| b as f64 / scale);
        buckets.push((bound, cumulative - previous));
        previous = cumulative;
    }
    (snapshot.sum as f64 / scale, buckets)
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    snapshot: &HistogramSnapshot,
    scale: f64,
) -> Encoded {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    let (sum, buckets) = buckets(snapshot, scale);
    metric.encode_histogram::<NoLabelSet>(sum, snapshot.count, &buckets, None)
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Encoded {
        let metrics = &self.telemetry.metrics;
        let load = |counter: &std::sync::atomic::AtomicU64| {
            counter.load(std::sync::atomic::Ordering::Relaxed)
        };
        let help = "Client requests answered by this node, by operation and outcome.";
        let mut family =
            encoder.encode_descriptor("rangedb_requests", help, None, MetricType::Counter)?;
        for operation in Operation::ALL {
            for outcome in Outcome::ALL {
                let labels = [("op", operation.name()), ("outcome", outcome.name())];
                let value = metrics.requests(operation, outcome);
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let help = "Time from a request's arrival to its answer, by operation.";
        let mut family = encoder.encode_descriptor(
            "rangedb_request_duration_seconds",
            help,
            None,
            MetricType::Histogram,
        )?;
        for operation in Operation::ALL {
            let snapshot = metrics.latency(operation);
            let (sum, buckets) = buckets(&snapshot, 1e6);
            let labels = [("op", operation.name())];
            let mut metric = family.encode_family(&labels)?;
            metric.encode_histogram::<NoLabelSet>(sum, snapshot.count, &buckets, None)?;
        }
        let e = &mut encoder;
        counter(
            e,
            "rangedb_raft_elections",
            "Campaigns started by this node's replicas.",
            load(&metrics.elections),
        )?;
        counter(
            e,
            "rangedb_raft_leader_changes",
            "Times a replica on this node learned of a new leader of its range.",
            load(&metrics.leader_changes),
        )?;
        counter(
            e,
            "rangedb_raft_proposals_dropped",
            "Writes Raft refused or that lost their leader before committing.",
            load(&metrics.proposals_dropped),
        )?;
        let commit = metrics.raft_commit.snapshot();
        let help = "Time from a write's proposal on the leader to its application there.";
        histogram(e, "rangedb_raft_commit_duration_seconds", help, &commit, 1e6)?;
        let fsync = metrics.wal_fsync.snapshot();
        let help = "Duration of the WAL's fsyncs (one per group commit).";
        histogram(e, "rangedb_wal_fsync_duration_seconds", help, &fsync, 1e6)?;
        let bytes = metrics.wal_batch_bytes.snapshot();
        let help = "Bytes of records per WAL batch (one write and fsync).";
        histogram(e, "rangedb_wal_batch_bytes", help, &bytes, 1.0)?;
        let entries = metrics.wal_batch_entries.snapshot();
        let help = "Raft entries (of every range) per WAL batch.";
        histogram(e, "rangedb_wal_batch_entries", help, &entries, 1.0)?;
        let help = "Bytes of records written to the WAL.";
        counter(e, "rangedb_wal_written_bytes", help, load(&metrics.wal_bytes))?;
        let help = "Snapshots this node started sending to a follower.";
        counter(e, "rangedb_snapshots_sent", help, load(&metrics.snapshots_sent))?;
        let help = "Snapshots received and installed by this node's replicas.";
        counter(e, "rangedb_snapshots_installed", help, load(&metrics.snapshots_installed))?;
        let help = "Snapshots this node took of its replicas (log compaction).";
        counter(e, "rangedb_snapshots_taken", help, load(&metrics.snapshots_taken))?;
        let help = "Range replicas hosted by this node.";
        gauge(e, "rangedb_ranges", help, load(&metrics.ranges_now))?;
        let help = "Ranges this node leads.";
        gauge(e, "rangedb_ranges_leading", help, load(&metrics.ranges_leading_now))?;
        let help = "Bytes of this node's replicas: last snapshot image plus the log since.";
        gauge(e, "rangedb_replica_bytes", help, load(&metrics.replica_bytes_now))?;
        let help = "Live keys in this node's replicas.";
        gauge(e, "rangedb_keys", help, load(&metrics.keys_now))?;
        let ready = u64::from(self.telemetry.readiness() == Readiness::Ready);
        let help = "1 when /ready answers 200.";
        gauge(e, "rangedb_ready", help, ready)
    }
}

/// CPU time, resident memory, open descriptors and threads of this process, from
/// /proc (Linux; elsewhere these metrics are left out).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Encoded {
        let Some(process) = ProcessStats::read() else {
            return Ok(());
        };
        let e = &mut encoder;
        let metric = e.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(process.cpu_seconds).encode(metric)?;
        let help = "Resident memory size in bytes.";
        gauge(e, "process_resident_memory_bytes", help, process.resident_bytes)?;
        gauge(e, "process_open_fds", "Open file descriptors.", process.open_fds)?;
        gauge(e, "process_threads", "OS threads.", process.threads)
    }
}

/// What /proc says about this process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub threads: u64,
}

impl ProcessStats {
    /// None where /proc/self is missing or unreadable.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) =
            unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
        let (ticks, page) = (u64::try_from(ticks).ok()?, u64::try_from(page).ok()?);
        parse(&stat, &statm, ticks, page, open_fds)
    }
}

/// `/proc/self/stat` and `/proc/self/statm` read: CPU ticks (utime + stime, fields
/// 14 and 15) at `ticks_per_second`, threads (field 20), resident pages (statm's
/// second field) of `page_bytes`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last ')'.
pub fn parse(
    stat: &str,
    statm: &str,
    ticks_per_second: u64,
    page_bytes: u64,
    open_fds: u64,
) -> Option<ProcessStats> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
    let (user, system, threads) = (field(14)?, field(15)?, field(20)?);
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    if ticks_per_second == 0 {
        return None;
    }
    Some(ProcessStats {
        cpu_seconds: (user + system) as f64 / ticks_per_second as f64,
        resident_bytes: resident_pages * page_bytes,
        open_fds,
        threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::telemetry::NodeMetrics;
    use std::time::Duration;

    #[test]
    fn proc_stat_is_read_after_the_command_name() {
        // A command name with a space and a parenthesis; utime 250, stime 150, 7 threads.
        let stat = "4242 (rangedb (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 150 0 0 \
                    20 0 7 0 12345 123456789 3000 18446744073709551615";
        let stats = parse(stat, "30000 2500 100 10 0 200 0\n", 100, 4096, 12).unwrap();
        assert_eq!(stats.cpu_seconds, 4.0);
        assert_eq!(stats.resident_bytes, 2500 * 4096);
        assert_eq!(stats.threads, 7);
        assert_eq!(stats.open_fds, 12);
        assert_eq!(parse("garbage", "1 2", 100, 4096, 0), None);
        assert_eq!(parse("1 (x) S 1 2", "1 2", 100, 4096, 0), None, "too few fields");
    }

    #[test]
    fn the_exposition_has_every_family_with_bounded_labels() {
        let telemetry = Arc::new(Telemetry::default());
        let metrics = &telemetry.metrics;
        metrics.record_request(Operation::Put, Outcome::Ok, Duration::from_millis(3));
        metrics.wal_fsync.observe_duration(Duration::from_micros(700));
        NodeMetrics::add(&metrics.elections, 2);
        let text = encode(&registry(Arc::clone(&telemetry))).unwrap();
        for line in [
            "# TYPE rangedb_requests_total counter",
            "rangedb_requests_total{op=\"put\",outcome=\"ok\"} 1",
            "rangedb_requests_total{op=\"get\",outcome=\"not_leader\"} 0",
            "rangedb_request_duration_seconds_bucket{op=\"put\",le=\"0.002\"} 0",
            "rangedb_request_duration_seconds_bucket{op=\"put\",le=\"0.005\"} 1",
            "rangedb_request_duration_seconds_count{op=\"put\"} 1",
            "rangedb_raft_elections_total 2",
            "rangedb_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 1",
            "rangedb_wal_fsync_duration_seconds_sum 0.0007",
            "rangedb_ready 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        let series = text.lines().filter(|l| l.starts_with("rangedb_requests_total{")).count();
        assert_eq!(series, Operation::ALL.len() * Outcome::ALL.len());
    }
}
