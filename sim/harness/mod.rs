//! The deterministic simulation harness shared by `sim/` (the seed sweep) and
//! `chaos/` (named scenarios and the seed corpus).
//!
//! ```text
//!  seed ─► Plan (topology, knobs, fault schedule) ─► madsim Runtime(seed)
//!            servers: the production node (run_node) on SimDisk, over simulated TCP
//!            clients: the production client library, recording a History
//!            supervisor: applies the schedule, then heals and checks liveness
//!  ─► checkers: raft_safety (online), witness, linearizability, durability, liveness
//!  ─► one line per seed; on failure: replay command, schedule, Raft events, history
//! ```

#[cfg(not(madsim))]
compile_error!(
    "the simulation harness runs only under madsim: use `cargo sim` (cargo test with \
     --cfg madsim), not `cargo test`"
);

pub mod admin;
pub mod backup;
pub mod bank;
pub mod checkers;
pub mod cluster;
pub mod coverage;
pub mod history;
pub mod lists;
pub mod plan;
pub mod run;
pub mod schedule;
pub mod shrink;
pub mod splits;
pub mod sweep;
pub mod timeline;
pub mod workload;

/// FNV-1a 64 (`rangedb::hash`): trace hashes.
pub use rangedb::hash::Fnv64 as Fnv;

/// splitmix64: the harness's own PRNG, so that a plan can be drawn and printed
/// before the runtime starts.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0xa076_1d64_78bd_642f)
    }
    pub fn next_u64(&mut self) -> u64 {
        rangedb::hash::splitmix64_next(&mut self.0)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// Simulated time since the start of the run, in milliseconds.
pub fn now_ms(start: tokio::time::Instant) -> u64 {
    tokio::time::Instant::now().duration_since(start).as_millis() as u64
}
