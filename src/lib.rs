//! rangedb: a replicated, range-partitioned key-value database on a hand-written Raft.
//!
//! # Layout
//! - `raft`: the sans-IO Raft core (step in, Ready out).
//! - `env`: the Disk, Network and Clock seams and their production implementations.
//! - `storage`: node-wide WAL, snapshot files, the data directory.
//! - `range`: range descriptors, routing and the KV state machine.
//! - `node`: the event loop that drives every replica, the wire protocol, the server.
//! - `client`: the client library the CLI uses.
//! - `cli_parse`: the parsers of the CLI's flag text.
//! - `fuzzing`: the bodies of the fuzz targets (also run by `cargo test`).

pub mod byte_serde;
pub mod cli_parse;
pub mod client;
pub mod env;
pub mod fuzzing;
pub mod node;
pub mod raft;
pub mod range;
pub mod storage;
