//! rangedb: a replicated, range-partitioned key-value database on a hand-written Raft.
//!
//! # Layout
//! - `raft`: the sans-IO Raft core (step in, Ready out).
//! - `env`: the Disk, Network and Clock seams and their production implementations.
//! - `storage`: node-wide WAL, snapshot files, the data directory.
//! - `range`: range descriptors, routing and the KV state machine.
//! - `wire`: the frame format, the peer and the client protocol.
//! - `node`: the event loop that drives every replica, the server.
//! - `client`: the client library the CLI uses.
//! - `backup`: consistent backups of a cluster and new clusters restored from them.
//! - `ops`: the operator's HTTP listener (health, readiness, Prometheus metrics); not
//!   in the simulated build.
//! - `hash`: FNV-1a and splitmix64 (stable across runs).
//! - `logging`: the server's structured logs (tracing) and their rate limiter.
//! - `cli_parse`: the parsers of the CLI's flag text.
//! - `cli_backup`: `rangedb admin backup create|restore` (progress and summary).
//! - `cli_table`: the CLI's aligned text tables.
//! - `cli_txn`: `rangedb txn` in etcdctl's transaction syntax (parse, run, print).
//! - `fuzzing`: the bodies of the fuzz targets (also run by `cargo test`); only with
//!   the `fuzzing` feature, which the server's build does not have.

pub mod backup;
pub mod byte_serde;
pub mod cli_backup;
pub mod cli_parse;
pub mod cli_table;
pub mod cli_txn;
pub mod client;
pub mod env;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod hash;
pub mod logging;
pub mod node;
// The HTTP listener needs the real tokio runtime: not in the simulated build.
#[cfg(not(madsim))]
pub mod ops;
pub mod raft;
pub mod range;
pub mod storage;
pub mod wire;
