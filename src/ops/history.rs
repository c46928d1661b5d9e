//! The last minutes of a node's figures for the status page: a task samples the
//! node's `Telemetry` once a second into a ring of `SAMPLES_KEPT` samples (five
//! minutes; older ones dropped, nothing per range, so memory is bounded), served as
//! `GET /v1/metrics/history`, and the node's recent events as `GET /v1/events`.
//!
//! ```text
//!  Telemetry (atomics) ──every 1 s──► History (ring of Sample) ──► /v1/metrics/history
//!  Telemetry (event ring) ─────────────────────────────────────► /v1/events
//! ```
//!
//! Rates and latency quantiles are of each second alone: the difference of two
//! readings of the counters and histograms.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};

use crate::env::{Clock, RealClock};
use crate::node::telemetry::{
    EventKind, HistogramSnapshot, NodeEvent, Operation, Outcome, Telemetry,
};

/// The version of the JSON of `/v1/metrics/history` and `/v1/events`.
pub const VERSION: u64 = 1;
/// Samples kept: five minutes at one a second.
pub const SAMPLES_KEPT: usize = 300;
/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The operations whose requests count as load (not `Admin`: the status page's own
/// polling would show as load).
const DATA_OPERATIONS: [Operation; 5] =
    [Operation::Get, Operation::Put, Operation::Delete, Operation::Scan, Operation::Txn];

/// One second of a node's work.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Wall clock at the end of the second, ms since the epoch.
    pub at_ms: u64,
    /// Requests answered in the second, per operation in `DATA_OPERATIONS` order.
    pub requests: [u64; 5],
    /// Of those, the ones not answered `ok` (redirects and locks included).
    pub errors: u64,
    /// Latency quantiles of the data requests answered in the second, ms (None: none).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The 99th percentile of Raft commit latency in the second, ms.
    pub commit_p99_ms: Option<f64>,
    pub ranges: u64,
    pub ranges_leading: u64,
    pub keys: u64,
    pub replica_bytes: u64,
}

/// Cumulative readings the next sample is the difference from.
#[derive(Clone, Debug)]
struct Reading {
    requests: [u64; 5],
    errors: u64,
    latency: Vec<u64>,
    commit: Vec<u64>,
}

fn read(telemetry: &Telemetry) -> (Reading, &'static [u64]) {
    let metrics = &telemetry.metrics;
    let mut requests = [0; 5];
    let mut errors = 0;
    let mut latency: Vec<u64> = Vec::new();
    let mut bounds: &'static [u64] = &[];
    for (i, operation) in DATA_OPERATIONS.into_iter().enumerate() {
        for outcome in Outcome::ALL {
            let count = metrics.requests(operation, outcome);
            requests[i] += count;
            if outcome != Outcome::Ok {
                errors += count;
            }
        }
        let HistogramSnapshot { bounds: b, cumulative, .. } = metrics.latency(operation);
        bounds = b;
        if latency.is_empty() {
            latency = cumulative;
        } else {
            for (total, value) in latency.iter_mut().zip(cumulative) {
                *total += value;
            }
        }
    }
    let commit = metrics.raft_commit.snapshot().cumulative;
    (Reading { requests, errors, latency, commit }, bounds)
}

/// The `q` quantile (0..=1) of the observations between two cumulative readings of a
/// histogram with `bounds` (µs), in ms, interpolated linearly within its bucket as
/// Prometheus' `histogram_quantile` does; None without observations. Past the last
/// bound it answers the last bound.
pub fn quantile_ms(bounds: &[u64], before: &[u64], after: &[u64], q: f64) -> Option<f64> {
    let counts: Vec<u64> = after
        .iter()
        .zip(before.iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total = *counts.last()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    for (i, &cumulative) in counts.iter().enumerate() {
        if cumulative as f64 >= rank {
            let Some(&upper) = bounds.get(i) else { break };
            let lower = if i == 0 { 0 } else { bounds[i - 1] };
            let below = if i == 0 { 0 } else { counts[i - 1] };
            let in_bucket = cumulative - below;
            let fraction =
                if in_bucket == 0 { 1.0 } else { (rank - below as f64) / in_bucket as f64 };
            let micros = lower as f64 + (upper - lower) as f64 * fraction.clamp(0.0, 1.0);
            return Some(micros / 1000.0);
        }
    }
    bounds.last().map(|&last| last as f64 / 1000.0)
}

/// The ring of samples.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Keeps `sample`, dropping the oldest past `SAMPLES_KEPT`.
    pub fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() >= SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// `GET /v1/metrics/history`'s body.
    pub fn to_json(&self) -> Value {
        let names: Vec<&str> = DATA_OPERATIONS.iter().map(|op| op.name()).collect();
        let samples: Vec<Value> = self
            .samples()
            .iter()
            .map(|s| {
                let requests: serde_json::Map<String, Value> = names
                    .iter()
                    .zip(s.requests)
                    .map(|(n, c)| ((*n).to_string(), json!(c)))
                    .collect();
                json!({
                    "at_ms": s.at_ms,
                    "requests": requests,
                    "requests_total": s.requests.iter().sum::<u64>(),
                    "errors": s.errors,
                    "latency_p50_ms": s.p50_ms,
                    "latency_p99_ms": s.p99_ms,
                    "commit_p99_ms": s.commit_p99_ms,
                    "ranges": s.ranges,
                    "ranges_leading": s.ranges_leading,
                    "keys": s.keys,
                    "replica_bytes": s.replica_bytes,
                })
            })
            .collect();
        json!({
            "version": VERSION,
            "interval_ms": INTERVAL.as_millis() as u64,
            "kept": SAMPLES_KEPT,
            "samples": samples,
        })
    }
}

/// Samples `telemetry` into `history` every `INTERVAL`, until the task is dropped.
pub async fn sample(telemetry: Arc<Telemetry>, history: Arc<History>) {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticks.tick().await;
    let (mut previous, _) = read(&telemetry);
    loop {
        ticks.tick().await;
        let (now, bounds) = read(&telemetry);
        let metrics = &telemetry.metrics;
        let load = |counter: &std::sync::atomic::AtomicU64| {
            counter.load(std::sync::atomic::Ordering::Relaxed)
        };
        let mut requests = [0; 5];
        for (i, count) in requests.iter_mut().enumerate() {
            *count = now.requests[i].saturating_sub(previous.requests[i]);
        }
        let commit_bounds = metrics.raft_commit.snapshot().bounds;
        history.push(Sample {
            at_ms: RealClock.wall_ms(),
            requests,
            errors: now.errors.saturating_sub(previous.errors),
            p50_ms: quantile_ms(bounds, &previous.latency, &now.latency, 0.5),
            p99_ms: quantile_ms(bounds, &previous.latency, &now.latency, 0.99),
            commit_p99_ms: quantile_ms(commit_bounds, &previous.commit, &now.commit, 0.99),
            ranges: load(&metrics.ranges_now),
            ranges_leading: load(&metrics.ranges_leading_now),
            keys: load(&metrics.keys_now),
            replica_bytes: load(&metrics.replica_bytes_now),
        });
        previous = now;
    }
}

/// `GET /v1/events`' body: the node's kept events, oldest first.
pub fn events_json(events: &[NodeEvent]) -> Value {
    let events: Vec<Value> = events
        .iter()
        .map(|event| {
            let mut value = match &event.kind {
                EventKind::Election { range, term } => {
                    json!({"kind": "election", "range": range, "term": term})
                }
                EventKind::LeaderChange { range, from, to, term } => json!({
                    "kind": "leader_change", "range": range, "from": from, "to": to, "term": term,
                }),
                EventKind::PeerUp { node } => json!({"kind": "peer_up", "node": node}),
                EventKind::PeerDown { node } => json!({"kind": "peer_down", "node": node}),
            };
            value["seq"] = json!(event.seq);
            value["at_ms"] = json!(event.at_ms);
            value
        })
        .collect();
    json!({"version": VERSION, "events": events})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_of_the_difference_and_interpolated_within_the_bucket() {
        let bounds = [1_000, 2_000, 4_000];
        // Before: 5 under 1 ms. After: 5 more under 1 ms, and 10 in 1..2 ms.
        let before = [5, 5, 5, 5];
        let after = [10, 20, 20, 20];
        let median = quantile_ms(&bounds, &before, &after, 0.5).unwrap();
        assert!((median - 1.25).abs() < 1e-9, "{median}");
        assert_eq!(quantile_ms(&bounds, &before, &after, 0.25), Some(0.75));
        assert_eq!(quantile_ms(&bounds, &after, &after, 0.5), None, "nothing in between");
        // Past the last bound: the last bound.
        assert_eq!(quantile_ms(&bounds, &[0, 0, 0, 0], &[0, 0, 0, 3], 0.99), Some(4.0));
    }

    #[test]
    fn the_history_keeps_the_newest_samples() {
        let history = History::default();
        for i in 0..(SAMPLES_KEPT as u64 + 5) {
            history.push(Sample {
                at_ms: i,
                requests: [i, 0, 0, 0, 0],
                errors: 0,
                p50_ms: None,
                p99_ms: Some(1.5),
                commit_p99_ms: None,
                ranges: 6,
                ranges_leading: 6,
                keys: 0,
                replica_bytes: 0,
            });
        }
        let json = history.to_json();
        let samples = json["samples"].as_array().unwrap();
        assert_eq!(samples.len(), SAMPLES_KEPT);
        assert_eq!(samples[0]["at_ms"], 5);
        assert_eq!(samples[0]["requests"]["get"], 5);
        assert_eq!(samples[0]["requests_total"], 5);
        assert_eq!(samples[0]["latency_p99_ms"], 1.5);
        assert!(samples[0]["latency_p50_ms"].is_null());
        assert_eq!(json["version"], VERSION);
    }

    #[test]
    fn events_are_tagged_by_kind() {
        let telemetry = Telemetry::default();
        telemetry.record_event(7, EventKind::LeaderChange { range: 2, from: None, to: 3, term: 4 });
        telemetry.record_event(8, EventKind::PeerDown { node: 2 });
        let json = events_json(&telemetry.events());
        let events = json["events"].as_array().unwrap();
        assert_eq!(events[0]["kind"], "leader_change");
        assert!(events[0]["from"].is_null());
        assert_eq!((events[0]["to"].clone(), events[0]["seq"].clone()), (json!(3), json!(1)));
        assert_eq!(events[1]["kind"], "peer_down");
        assert_eq!(events[1]["at_ms"], 8);
    }
}
