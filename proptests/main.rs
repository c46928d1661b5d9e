//! Property tests: real code against a naive model on generated input (STYLE 9).
//!
//! One test binary, one module per subject. Case counts are sized so the whole
//! suite takes about a minute in the debug profile; `PROPTEST_CASES=N` raises every
//! suite to N cases for a long run. A failing case is saved under
//! `proptests/regressions/<suite>.txt` and replayed first on every later run: commit it.
//!
//! Under `--cfg madsim` (`cargo sim`) this binary is empty: these tests need no
//! simulated runtime and run once, in `cargo test`.
#![allow(unexpected_cfgs)] // `madsim` is set by `cargo sim`, not declared here.
#![cfg(not(madsim))]

mod alloc_probe;
mod cli;
mod fuzz_corpus;
mod kv;
mod raft_core;
mod raft_log;
mod routing;
mod wal;
mod wire;

use proptest::test_runner::{Config, FileFailurePersistence};

#[global_allocator]
static PROBE: alloc_probe::Probe = alloc_probe::Probe;

/// The config of one suite: `default_cases` unless `PROPTEST_CASES` is set, failures
/// persisted to `proptests/regressions/<suite>.txt`.
pub fn config(suite: &'static str, default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default_cases);
    let path: &'static str = Box::leak(format!("proptests/regressions/{suite}.txt").into());
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(path))),
        ..Config::default()
    }
}
