//! Sweeps: seeds on two worker threads (each seed in its own madsim runtime, on an
//! OS thread of its own), one line per seed, a closing table, on failure everything
//! needed to replay it, and the determinism check across seeds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::run::{run_seed, SeedReport};
use super::schedule::{Plan, Scenario};

/// One seed to run; `note` is printed with it (the corpus names its bug).
#[derive(Clone, Debug)]
pub struct Job {
    pub seed: u64,
    pub scenario: Scenario,
    pub note: Option<String>,
}

/// The scenario named by `SIM_SCENARIO`, if set.
///
/// # Panics
/// On a name that is not a scenario (a usage error of the person replaying).
pub fn scenario_from_env() -> Option<Scenario> {
    let name = std::env::var("SIM_SCENARIO").ok()?;
    Some(Scenario::parse(&name).unwrap_or_else(|| panic!("unknown scenario {name}")))
}

/// With `SIM_PLAN` (a plan file, `plan.rs`) or `SIM_SEED` set, replays that one plan
/// or seed (scenario from `SIM_SCENARIO`, else the swarm) with its schedule and
/// result, exiting 1 on a failure; returns whether it did. `SIM_TIMELINE=FILE.html`
/// also writes the run's timeline (`timeline.rs`); `SIM_SHRINK=1` shrinks a failure.
pub fn replay_from_env(target: &str) -> bool {
    let (plan, replay) = if let Some((plan, path)) = super::plan::from_env() {
        (plan, super::plan::replay_command(target, &path))
    } else if let Some(seed) = env_u64("SIM_SEED") {
        let scenario = scenario_from_env().unwrap_or(Scenario::Swarm);
        (Plan::draw(seed, scenario), replay_command(target, &Job { seed, scenario, note: None }))
    } else {
        return false;
    };
    println!("{}", plan.describe());
    let timeline = super::timeline::enable_from_env();
    let report = run_seed(&plan);
    println!("{}", line(&report, None));
    if let Some(path) = timeline {
        super::timeline::write(&path, &report);
    }
    if !report.ok() {
        println!("{}", failure_report(&replay, &report));
        if std::env::var("SIM_SHRINK").is_ok_and(|v| v == "1") {
            super::shrink::failures(target, &[&report], threads());
        }
        std::process::exit(1);
    }
    true
}

pub fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.parse() {
        Ok(value) => Some(value),
        Err(_) => panic!("{name}={text:?} is not a number"),
    }
}

/// Worker threads: 2 by default (the CI machine has two cores), SIM_THREADS to change.
pub fn threads() -> usize {
    env_u64("SIM_THREADS").map_or(2, |n| n.max(1) as usize)
}

/// The exact command that replays one seed.
pub fn replay_command(target: &str, job: &Job) -> String {
    match job.scenario {
        Scenario::Swarm => format!("SIM_SEED={} cargo sim --test {target}", job.seed),
        other => {
            format!("SIM_SEED={} SIM_SCENARIO={} cargo sim --test {target}", job.seed, other.name())
        }
    }
}

/// Sends the nodes' own stderr chatter (connection errors, start and stop lines) to
/// a log file during sweeps, so the per-seed lines stay readable.
/// The nodes' log level: INFO when replaying one seed or plan (`SIM_SEED`,
/// `SIM_PLAN`) or asked for (`SIM_NODE_LOGS=1`, into the sweep's log file); off in a
/// sweep otherwise, where nobody reads them (a failure prints its replay command):
/// madsim gives every task a tracing span entered at each poll, and keeping those
/// spans was about 3% of a sweep's time.
pub fn node_log_level() -> rangedb::logging::LevelFilter {
    let wanted = ["SIM_SEED", "SIM_PLAN", "SIM_NODE_LOGS"];
    if wanted.iter().any(|name| std::env::var_os(name).is_some()) {
        rangedb::logging::LevelFilter::INFO
    } else {
        rangedb::logging::LevelFilter::OFF
    }
}

pub fn quiet_node_logs(path: &str) {
    use std::os::fd::AsRawFd;
    if let Ok(file) = std::fs::File::create(path) {
        // SAFETY: dup2 on valid descriptors; replaces this process's stderr.
        unsafe {
            libc::dup2(file.as_raw_fd(), 2);
        }
        std::mem::forget(file);
    }
}

pub fn line(report: &SeedReport, note: Option<&str>) -> String {
    format!(
        "seed {:>6} {:<38} n={} sim {:>6.1}s ops {:>4} (unknown {:>2}) faults {:>3} trace {:016x} {}{}",
        report.plan.seed,
        report.plan.scenario.name(),
        report.plan.nodes,
        report.sim_ms as f64 / 1000.0,
        report.ops,
        report.unknown,
        report.fault_count(),
        report.trace,
        if report.ok() { "ok" } else { "FAILED" },
        note.map(|n| format!("  [{n}]")).unwrap_or_default()
    )
}

/// A failure's report; `replay` is the command that replays it.
pub fn failure_report(replay: &str, report: &SeedReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("\n==== seed {} FAILED ====\n", report.plan.seed));
    out.push_str(&format!("replay: {replay}\n"));
    out.push_str(&report.plan.describe());
    for violation in &report.violations {
        out.push_str(&format!("[{}] {}\n", violation.checker, violation.message));
        for line in violation.evidence.iter().take(60) {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

pub struct Totals {
    pub failed: Vec<(Job, u64)>,
    /// Every seed's trace hash, in job order.
    pub traces: Vec<(Job, u64)>,
    /// Coverage markers: name -> (seeds that reached it, times in all).
    #[allow(dead_code)] // chaos/ shares the harness and prints, not enforces, them
    pub markers: BTreeMap<String, (u64, u64)>,
}

/// The coverage check of a full sweep: every declared marker fired at least once.
/// Prints and returns the ones that did not.
#[allow(dead_code)] // chaos/ shares the harness and does not enforce coverage
pub fn check_coverage(totals: &Totals) -> Vec<&'static str> {
    let missing: Vec<&'static str> = super::coverage::DECLARED
        .iter()
        .copied()
        .filter(|name| !totals.markers.contains_key(*name))
        .collect();
    for name in &missing {
        println!("FAILED: coverage: marker \"{name}\" never fired in the sweep");
    }
    missing
}

/// Runs `plan` on an OS thread of its own, created for it, whatever `run_seed` does:
/// nothing that ran before can have left state on that thread.
pub fn run_alone(plan: &Plan) -> SeedReport {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name(format!("alone-{}", plan.seed))
            .stack_size(8 << 20)
            .spawn_scoped(scope, || run_seed(plan))
            .expect("spawn a seed's thread")
            .join()
            .expect("a seed's thread panicked outside the simulation")
    })
}

/// Determinism across seeds: replays every `every`-th job of a finished sweep alone,
/// each on a new thread (still `threads()` at a time), and returns the jobs whose
/// trace differs from the one the sweep printed, with both traces. A seed's run must
/// be a function of the seed alone, not of the seeds that ran before it or beside it,
/// or a failure found in a sweep may not replay with its printed command.
pub fn determinism(traces: &[(Job, u64)], every: usize) -> Vec<(Job, u64, u64)> {
    let sample: Vec<&(Job, u64)> = traces.iter().step_by(every.max(1)).collect();
    let next = AtomicUsize::new(0);
    let differ = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads().min(sample.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((job, in_sweep)) = sample.get(i) else { break };
                let alone = run_alone(&Plan::draw(job.seed, job.scenario)).trace;
                if alone != *in_sweep {
                    differ.lock().expect("differ lock").push((job.clone(), *in_sweep, alone));
                }
            });
        }
    });
    let mut differ = differ.into_inner().expect("differ lock");
    differ.sort_by_key(|(job, _, _)| job.seed);
    println!(
        "determinism: {} of {} seeds (one in {} of the sweep) replayed alone on a new thread; {} differ",
        sample.len(),
        traces.len(),
        every.max(1),
        differ.len()
    );
    differ
}

/// The determinism check after a sweep, as `cargo sim` runs it: one job in
/// `SIM_DETERMINISM_EVERY` (default `every`; 0 or `SIM_SKIP_DETERMINISM` skips it)
/// replayed alone; prints the jobs that differ and returns whether none did.
pub fn check_determinism(totals: &Totals, every: u64) -> bool {
    let every = env_u64("SIM_DETERMINISM_EVERY").unwrap_or(every);
    if std::env::var_os("SIM_SKIP_DETERMINISM").is_some() || every == 0 {
        return true;
    }
    let differ = determinism(&totals.traces, every as usize);
    for (job, in_sweep, alone) in &differ {
        println!(
            "FAILED: determinism: seed {} ({}) gave trace {in_sweep:016x} in the sweep and \
             {alone:016x} alone",
            job.seed,
            job.scenario.name()
        );
    }
    if !differ.is_empty() {
        let seeds: Vec<String> = differ.iter().map(|(job, _, _)| job.seed.to_string()).collect();
        println!("FAILED: determinism: seeds {} depend on what ran before them", seeds.join(" "));
    }
    differ.is_empty()
}

/// Runs `jobs` on the worker threads and prints the lines and the closing table.
pub fn sweep(target: &str, jobs: Vec<Job>) -> Totals {
    let workers = threads().min(jobs.len().max(1));
    sweep_from(target, &|i| jobs.get(i).cloned(), None, workers)
}

/// A long run (`SIM_MINUTES`): swarm seeds from `base` on, on `workers` threads, until
/// `duration` has passed; only failures print their lines, and a progress line with an
/// estimate comes every 30 s; then the usual closing table.
#[allow(dead_code)] // chaos/ shares the harness; only sim/ runs long.
pub fn sweep_for(target: &str, base: u64, duration: Duration, workers: usize) -> Totals {
    let job = |i: usize| Some(Job { seed: base + i as u64, scenario: Scenario::Swarm, note: None });
    sweep_from(target, &job, Some(duration), workers)
}

/// Worker threads for a long run: every core (`SIM_THREADS` to change).
#[allow(dead_code)] // As `sweep_for`.
pub fn long_run_threads() -> usize {
    env_u64("SIM_THREADS").map_or_else(
        || std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
        |n| n.max(1) as usize,
    )
}

fn sweep_from(
    target: &str,
    jobs: &(dyn Fn(usize) -> Option<Job> + Sync),
    duration: Option<Duration>,
    workers: usize,
) -> Totals {
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<(usize, Job, SeedReport)>> = Mutex::new(Vec::new());
    let print = Mutex::new(started);
    let done = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    // SIM_FAIL_FAST: stop handing out seeds after the first failure.
    let fail_fast = std::env::var_os("SIM_FAIL_FAST").is_some();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                if stop.load(Ordering::Relaxed) || duration.is_some_and(|d| started.elapsed() >= d)
                {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs(i) else { break };
                let plan = Plan::draw(job.seed, job.scenario);
                let report = run_seed(&plan);
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                {
                    let mut last_progress = print.lock().expect("print lock");
                    if duration.is_none() || !report.ok() {
                        println!("{}", line(&report, job.note.as_deref()));
                    }
                    if !report.ok() {
                        failures.fetch_add(1, Ordering::Relaxed);
                        println!("{}", failure_report(&replay_command(target, &job), &report));
                        if fail_fast {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    if let Some(duration) = duration {
                        if last_progress.elapsed() >= Duration::from_secs(30) {
                            *last_progress = Instant::now();
                            let elapsed = started.elapsed().as_secs_f64();
                            let estimate = finished as f64 * duration.as_secs_f64() / elapsed;
                            println!(
                                "progress: {:.1} of {:.1} min, {finished} seeds, {} failed, \
                                 about {estimate:.0} seeds by the end",
                                elapsed / 60.0,
                                duration.as_secs_f64() / 60.0,
                                failures.load(Ordering::Relaxed)
                            );
                        }
                    }
                }
                reports.lock().expect("reports lock").push((i, job, report));
            });
        }
    });
    let wall = started.elapsed();
    let mut reports = reports.into_inner().expect("reports lock");
    // Job order, whichever thread ran what.
    reports.sort_by_key(|(i, _, _)| *i);
    let reports: Vec<(Job, SeedReport)> =
        reports.into_iter().map(|(_, job, report)| (job, report)).collect();
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let (mut ops, mut sim_ms, mut unknown, mut inconclusive) = (0usize, 0u64, 0usize, 0usize);
    let mut failed = Vec::new();
    let mut traces: Vec<(Job, u64)> = Vec::new();
    let mut markers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut recoveries: Vec<(u64, u64)> = Vec::new();
    for (job, report) in &reports {
        recoveries.extend(report.recovery_ms.map(|ms| (ms, job.seed)));
        traces.push((job.clone(), report.trace));
        for (name, times) in &report.markers {
            let entry = markers.entry(name.clone()).or_default();
            entry.0 += 1;
            entry.1 += times;
        }
        for (kind, count) in &report.faults {
            *faults.entry(kind.clone()).or_default() += count;
        }
        ops += report.ops;
        unknown += report.unknown;
        sim_ms += report.sim_ms;
        inconclusive += report.inconclusive;
        if !report.ok() {
            failed.push((job.clone(), report.trace));
        }
    }
    let hours = sim_ms as f64 / 3_600_000.0;
    let minutes = wall.as_secs_f64() / 60.0;
    println!("\n---- {target}: closing table ----");
    println!("seeds                 {}", reports.len());
    println!("failed                {}", failed.len());
    println!("operations checked    {ops} (unknown outcome {unknown}; lin. searches inconclusive {inconclusive})");
    println!("simulated time        {:.3} h ({:.0} s)", hours, sim_ms as f64 / 1000.0);
    println!("wall time             {:.1} s on {workers} threads", wall.as_secs_f64());
    println!("seeds per minute      {:.1}", reports.len() as f64 / minutes.max(1e-9));
    println!("sim-time speedup      {:.1}x", sim_ms as f64 / 1000.0 / wall.as_secs_f64().max(1e-9));
    recoveries.sort_unstable();
    if let Some(&(max, seed)) = recoveries.last() {
        let at = |q: f64| recoveries[((recoveries.len() - 1) as f64 * q) as usize].0;
        println!(
            "recovery after heal   p50 {} ms, p99 {} ms, max {max} ms (seed {seed}) over {} seeds",
            at(0.5),
            at(0.99),
            recoveries.len()
        );
    }
    println!("faults injected by kind:");
    for (kind, count) in faults.iter().filter(|(k, _)| !super::run::is_effect(k)) {
        println!("  {kind:<34} {count}");
    }
    for (kind, count) in faults.iter().filter(|(k, _)| super::run::is_effect(k)) {
        println!("  {kind:<34} {count}");
    }
    println!("coverage markers (seeds reached / times):");
    let declared = super::coverage::DECLARED;
    let known = super::coverage::KNOWN_UNREACHED;
    let names: std::collections::BTreeSet<&str> = declared
        .iter()
        .copied()
        .chain(known.iter().map(|(name, _)| *name))
        .chain(markers.keys().map(String::as_str))
        .collect();
    for name in names {
        let (seeds, times) = markers.get(name).copied().unwrap_or_default();
        let unreached = known.iter().find(|(n, _)| *n == name).map(|(_, why)| *why);
        let flag = match (declared.contains(&name), unreached, seeds) {
            (true, _, 0) => "  NEVER".to_string(),
            (true, _, _) => String::new(),
            (false, Some(why), 0) => format!("  never, known: {why}"),
            (false, Some(_), _) => "  reached: move it to DECLARED".to_string(),
            (false, None, _) => "  (not declared in coverage.rs)".to_string(),
        };
        println!("  {name:<58} {seeds:>5} / {times:<7}{flag}");
    }
    // Every failing seed's plan written, the first ones shrunk (shrink.rs).
    let failed_reports: Vec<&SeedReport> =
        reports.iter().filter(|(_, r)| !r.ok()).map(|(_, r)| r).collect();
    super::shrink::failures(target, &failed_reports, workers);
    for (job, _) in &failed {
        println!("FAILED: {}", replay_command(target, job));
    }
    // The plain summary line test-result readers look for.
    println!("{target}: {} passed, {} failed", reports.len() - failed.len(), failed.len());
    Totals { failed, traces, markers }
}
