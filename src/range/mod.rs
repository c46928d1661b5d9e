//! Ranges: descriptors, routing and the per-range KV state machine.

pub mod descriptor;
pub mod keys;
pub mod kv;
pub mod settings;
pub mod txn;
