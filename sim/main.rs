//! `cargo sim --test sim`: the seed sweep of the deterministic simulation.
//!
//! `SIM_SEEDS=N` seeds (default below), `SIM_SEED=S` replays one seed (with the
//! nodes' logs), `SIM_SEED_BASE=B` moves the sweep's first seed, `SIM_THREADS=T`.
//!
//! This target only simulates under `--cfg madsim`. Plain `cargo test` must build
//! every test target, so outside madsim it compiles to a stub that says so; the
//! harness itself (`sim/harness`) refuses to compile outside madsim.

#[cfg(madsim)]
mod harness;

/// Default sweep size; with chaos/'s scenarios and corpus the default `cargo sim`
/// covers at least 500 seeds.
#[cfg(madsim)]
const DEFAULT_SEEDS: u64 = 470;

#[cfg(madsim)]
fn main() {
    use harness::schedule::{Plan, Scenario};
    use harness::sweep::{env_u64, quiet_node_logs, replay_from_env, sweep, Job};

    if replay_from_env("sim") {
        return;
    }
    quiet_node_logs("target/sim/sim-nodes.log");
    // Determinism: the same seed twice gives the same trace hash.
    let seeds: &[u64] =
        if std::env::var_os("SIM_SKIP_DETERMINISM").is_some() { &[] } else { &[1, 2] };
    for &seed in seeds {
        let plan = Plan::draw(seed, Scenario::Swarm);
        let first = harness::run::run_seed(&plan).trace;
        let second = harness::run::run_seed(&plan).trace;
        println!("determinism: seed {seed} trace {first:016x} then {second:016x}");
        if first != second {
            println!("FAILED: seed {seed} is not deterministic");
            std::process::exit(1);
        }
    }
    let count = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let base = env_u64("SIM_SEED_BASE").unwrap_or(1);
    let jobs = (base..base + count)
        .map(|seed| Job { seed, scenario: Scenario::Swarm, note: None })
        .collect();
    let totals = sweep("sim", jobs);
    if !totals.failed.is_empty() {
        std::process::exit(1);
    }
}

#[cfg(not(madsim))]
fn main() {
    println!("sim: skipped: the simulation runs only under `cargo sim` (--cfg madsim)");
}
