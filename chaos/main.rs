//! `cargo sim --test chaos`: named fault scenarios, then every seed in the corpus
//! (`chaos/seeds`: one line per seed that ever failed, naming the bug it found).
//!
//! `SIM_SEEDS=N` seeds per scenario (default 4); `SIM_SEED=S SIM_SCENARIO=name`
//! replays one. Outside `--cfg madsim` this target is a stub, like sim/.

#[cfg(madsim)]
#[path = "../sim/harness/mod.rs"]
mod harness;

#[cfg(madsim)]
fn main() {
    use harness::schedule::Scenario;
    use harness::sweep::{
        check_determinism, env_u64, quiet_node_logs, replay_from_env, scenario_from_env, sweep, Job,
    };

    // The nodes' logs (tracing events), timestamped with simulated time.
    rangedb::logging::install_simulation(harness::sweep::node_log_level());
    if replay_from_env("chaos") {
        return;
    }
    quiet_node_logs("target/sim/chaos-nodes.log");
    let per = env_u64("SIM_SEEDS").unwrap_or(4);
    // SIM_SCENARIO without SIM_SEED: sweep only that scenario (and skip the corpus).
    let only = scenario_from_env();
    let mut jobs = Vec::new();
    for scenario in Scenario::NAMED.into_iter().filter(|s| only.is_none_or(|o| o == *s)) {
        for seed in 1..=per {
            jobs.push(Job { seed, scenario, note: None });
        }
    }
    let corpus = if only.is_some() { "" } else { include_str!("seeds") };
    for (n, raw) in corpus.lines().enumerate() {
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        // `<seed> <scenario> <what it found>`
        let mut parts = text.splitn(3, char::is_whitespace);
        let seed = parts.next().and_then(|s| s.parse().ok());
        let scenario = parts.next().and_then(Scenario::parse);
        let (Some(seed), Some(scenario)) = (seed, scenario) else {
            panic!("chaos/seeds line {}: expected `<seed> <scenario> <bug>`: {raw}", n + 1);
        };
        let note = parts.next().unwrap_or("").trim().to_string();
        jobs.push(Job { seed, scenario, note: Some(format!("corpus: {note}")) });
    }
    let totals = sweep("chaos", jobs);
    // As in sim/: one job in 5 replayed alone must give the sweep's trace.
    let deterministic = check_determinism(&totals, 5);
    if !totals.failed.is_empty() || !deterministic {
        std::process::exit(1);
    }
}

#[cfg(not(madsim))]
fn main() {
    println!("chaos: skipped: the scenarios run only under `cargo sim` (--cfg madsim)");
}
