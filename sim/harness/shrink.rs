//! Shrinking a failing plan: take away what the failure does not need, keep each
//! change after which the run still fails with one of the checkers that saw the
//! original failure, until no single change keeps it failing or the budget of runs is
//! spent. Passes, in order:
//!
//! 1. the setup: 5 nodes to 3, a shorter fault phase, one client fewer, no write
//!    bursts, no lease reads;
//! 2. the faults: chunks of the schedule removed, halves first, then smaller chunks
//!    down to single faults (as in delta debugging);
//! 3. each remaining fault shortened to half its length;
//!
//! and again from the top while a pass changed something. Runs are deterministic and
//! candidates are tried in a fixed order, so shrinking is too: candidates run
//! `threads` at a time, the first failing one in order wins and the runs after it are
//! discarded and not counted, so the result does not depend on the thread count.
//! A fault keeps its id (`Step::id`), so the faults left mean what they meant.

use super::schedule::{Fault, Plan};

/// A change to try: the plan after it and what it took away.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub plan: Plan,
    pub what: String,
}

/// The result: the smallest failing plan found, the changes kept, the runs spent.
#[derive(Debug)]
pub struct Shrunk {
    pub plan: Plan,
    pub removed: Vec<String>,
    pub runs: u64,
    pub budget_spent: bool,
}

/// Does the run of a plan fail in the way we shrink for? Runs of one plan must give
/// one answer (the simulation is deterministic).
pub type Fails<'a> = &'a (dyn Fn(&Plan) -> bool + Sync);

struct Shrinker<'a> {
    plan: Plan,
    removed: Vec<String>,
    runs: u64,
    budget: u64,
    threads: usize,
    fails: Fails<'a>,
    /// Called with each change kept (to print it as it happens).
    on_kept: &'a (dyn Fn(&str) + Sync),
}

/// Shrinks `plan`, which fails, running at most `budget` candidates (counted as if
/// run one at a time).
pub fn shrink(
    plan: &Plan,
    budget: u64,
    threads: usize,
    fails: Fails<'_>,
    on_kept: &(dyn Fn(&str) + Sync),
) -> Shrunk {
    let mut shrinker = Shrinker {
        plan: plan.clone(),
        removed: Vec::new(),
        runs: 0,
        budget,
        threads: threads.max(1),
        fails,
        on_kept,
    };
    loop {
        let before = shrinker.removed.len();
        shrinker.setup_pass();
        shrinker.fault_pass();
        shrinker.shorten_pass();
        if shrinker.removed.len() == before || shrinker.spent() {
            break;
        }
    }
    Shrunk {
        budget_spent: shrinker.spent(),
        plan: shrinker.plan,
        removed: shrinker.removed,
        runs: shrinker.runs,
    }
}

impl Shrinker<'_> {
    fn spent(&self) -> bool {
        self.runs >= self.budget
    }

    /// Runs `candidates` in order (`threads` at a time) until one fails; keeps it and
    /// returns its position. Only the runs up to the kept one are counted.
    fn keep_first_failing(&mut self, candidates: &[Candidate]) -> Option<usize> {
        let mut at = 0;
        while at < candidates.len() && !self.spent() {
            let room = (self.budget - self.runs) as usize;
            let batch = &candidates[at..(at + self.threads.min(room)).min(candidates.len())];
            let verdicts: Vec<bool> = std::thread::scope(|scope| {
                let runs: Vec<_> = batch
                    .iter()
                    .map(|candidate| scope.spawn(|| (self.fails)(&candidate.plan)))
                    .collect();
                runs.into_iter().map(|run| run.join().expect("a shrink run panicked")).collect()
            });
            match verdicts.iter().position(|fails| *fails) {
                Some(first) => {
                    self.runs += first as u64 + 1;
                    let kept = &batch[first];
                    (self.on_kept)(&kept.what);
                    self.removed.push(kept.what.clone());
                    self.plan = kept.plan.clone();
                    return Some(at + first);
                }
                None => {
                    self.runs += batch.len() as u64;
                    at += batch.len();
                }
            }
        }
        None
    }

    /// Fewer nodes, a shorter fault phase, fewer clients, a plainer workload: each
    /// tried on the plan as it is when its turn comes.
    fn setup_pass(&mut self) {
        let changes: [fn(&Plan) -> Option<Candidate>; 5] =
            [fewer_nodes, shorter_fault_phase, fewer_clients, no_bursts, no_lease_reads];
        for change in changes {
            // The fault phase may halve more than once.
            while let Some(candidate) = change(&self.plan) {
                if self.keep_first_failing(&[candidate]).is_none() {
                    break;
                }
            }
        }
    }

    /// Chunks of the schedule removed, from halves down to single faults.
    fn fault_pass(&mut self) {
        let mut size = self.plan.steps.len().div_ceil(2).max(1);
        loop {
            let mut from = 0;
            while !self.spent() {
                let candidates: Vec<Candidate> = (from..self.plan.steps.len())
                    .step_by(size)
                    .map(|start| without_steps(&self.plan, start, size))
                    .collect();
                match self.keep_first_failing(&candidates) {
                    // The chunk at that place is gone; the next chunk moved into it.
                    Some(kept) => from += kept * size,
                    None => break,
                }
            }
            if size == 1 || self.spent() {
                break;
            }
            size = size.div_ceil(2);
        }
    }

    /// Each fault at half its length (faults of at least 200 ms).
    fn shorten_pass(&mut self) {
        let mut from = 0;
        while !self.spent() {
            let (places, candidates): (Vec<usize>, Vec<Candidate>) = (from..self.plan.steps.len())
                .filter_map(|i| shorter_step(&self.plan, i).map(|candidate| (i, candidate)))
                .unzip();
            let Some(kept) = self.keep_first_failing(&candidates) else { break };
            // Faults keep their places; go on after the one shortened.
            from = places[kept] + 1;
        }
    }
}

fn describe_steps(plan: &Plan, start: usize, size: usize) -> String {
    let steps = &plan.steps[start..(start + size).min(plan.steps.len())];
    let text: Vec<String> = steps
        .iter()
        .map(|s| format!("#{} {}..{} ms {}", s.id, s.start_ms, s.end_ms, s.fault))
        .collect();
    match steps.len() {
        1 => format!("fault {}", text[0]),
        n => format!("{n} faults: {}", text.join("; ")),
    }
}

fn without_steps(plan: &Plan, start: usize, size: usize) -> Candidate {
    let mut smaller = plan.clone();
    smaller.steps.drain(start..(start + size).min(plan.steps.len()));
    Candidate { what: describe_steps(plan, start, size), plan: smaller }
}

fn shorter_step(plan: &Plan, i: usize) -> Option<Candidate> {
    let step = &plan.steps[i];
    let length = step.end_ms - step.start_ms;
    if length < 200 {
        return None;
    }
    let mut shorter = plan.clone();
    shorter.steps[i].end_ms = step.start_ms + length / 2;
    let what = format!(
        "half of fault #{} {}: {}..{} ms now {}..{} ms",
        step.id,
        step.fault,
        step.start_ms,
        step.end_ms,
        step.start_ms,
        step.start_ms + length / 2
    );
    Some(Candidate { plan: shorter, what })
}

/// 5 nodes to 3: faults on n4 and n5 go, and they leave the partitions (a partition
/// left with one side goes too); not when two of the three disks would be damaged.
fn fewer_nodes(plan: &Plan) -> Option<Candidate> {
    if plan.nodes <= 3 {
        return None;
    }
    let keep = 3;
    let mut smaller = plan.clone();
    smaller.nodes = keep;
    smaller.steps.retain_mut(|step| match &mut step.fault {
        Fault::Partition { a, b, bridge } => {
            a.retain(|n| *n < keep);
            b.retain(|n| *n < keep);
            *bridge = bridge.filter(|n| *n < keep);
            !a.is_empty() && !b.is_empty()
        }
        Fault::OneWay { from, to } => *from < keep && *to < keep,
        Fault::Kill { node, .. }
        | Fault::Pause { node }
        | Fault::DiskEio { node, .. }
        | Fault::Wipe { node }
        | Fault::DiskRot { node }
        | Fault::RemoveNode { node }
        | Fault::ReplaceWiped { node }
        | Fault::ReplaceLive { node, .. }
        | Fault::ClockSkew { node, .. } => *node < keep,
        _ => true,
    });
    // The fault model: at most f of 2f + 1 disks damaged (wiped or rotting); beyond
    // it a failure is no bug.
    let mut damaged: Vec<usize> = smaller
        .steps
        .iter()
        .filter_map(|step| match step.fault {
            Fault::Wipe { node } | Fault::DiskRot { node } | Fault::ReplaceWiped { node } => {
                Some(node)
            }
            _ => None,
        })
        .collect();
    damaged.sort_unstable();
    damaged.dedup();
    if damaged.len() > (keep - 1) / 2 {
        return None;
    }
    let what = format!("nodes {} -> {keep} (and the faults only they had)", plan.nodes);
    Some(Candidate { plan: smaller, what })
}

/// The fault phase cut after the last fault ends (rounded up to 100 ms), or halved
/// (not below 500 ms); faults that started after it go and the others end with it.
fn shorter_fault_phase(plan: &Plan) -> Option<Candidate> {
    let last_end = plan.steps.iter().map(|s| s.end_ms).max().unwrap_or(0).div_ceil(100) * 100;
    let fault_ms = if last_end + 100 < plan.fault_ms {
        last_end.max(500)
    } else if plan.fault_ms >= 1_000 {
        plan.fault_ms / 2
    } else {
        return None;
    };
    if fault_ms >= plan.fault_ms {
        return None;
    }
    let mut shorter = plan.clone();
    shorter.fault_ms = fault_ms;
    shorter.steps.retain(|s| s.start_ms < fault_ms);
    for step in &mut shorter.steps {
        step.end_ms = step.end_ms.min(fault_ms);
    }
    let what = format!("fault phase {} ms -> {fault_ms} ms", plan.fault_ms);
    Some(Candidate { plan: shorter, what })
}

fn fewer_clients(plan: &Plan) -> Option<Candidate> {
    (plan.clients > 1).then(|| {
        let mut smaller = plan.clone();
        smaller.clients -= 1;
        Candidate {
            what: format!("clients {} -> {}", plan.clients, smaller.clients),
            plan: smaller,
        }
    })
}

fn no_bursts(plan: &Plan) -> Option<Candidate> {
    (plan.burst_writes > 0).then(|| {
        let mut plainer = plan.clone();
        plainer.burst_writes = 0;
        Candidate { what: format!("write bursts of {}", plan.burst_writes), plan: plainer }
    })
}

fn no_lease_reads(plan: &Plan) -> Option<Candidate> {
    (plan.lease_get_percent > 0).then(|| {
        let mut plainer = plan.clone();
        plainer.lease_get_percent = 0;
        let what = format!("lease reads ({}% of gets)", plan.lease_get_percent);
        Candidate { what, plan: plainer }
    })
}

/// Runs of one failing seed's shrinking, unless `SIM_SHRINK_RUNS` says otherwise.
const DEFAULT_RUNS: u64 = 120;
/// Failing seeds of a sweep that are shrunk (the first ones), unless
/// `SIM_SHRINK_SEEDS` says otherwise; every failing seed's plan is written.
const DEFAULT_SEEDS: u64 = 2;

/// After a sweep: writes every failing seed's plan to `target/sim-failures/`, and
/// shrinks the first few (`SIM_SHRINK_SEEDS`, 0 or `SIM_SHRINK=0` for none), each
/// within `SIM_SHRINK_RUNS` runs, printing what was removed and the replay command of
/// the shrunk plan. A candidate counts as failing when one of the checkers that saw
/// the original failure sees it fail (`SIM_SHRINK_ANY=1`: any failure).
pub fn failures(target: &str, failed: &[&super::run::SeedReport], threads: usize) {
    use super::plan;
    use super::sweep::env_u64;
    for report in failed {
        let path = plan::failure_path(report.plan.seed, report.plan.scenario, false);
        if plan::write(&report.plan, &path) {
            println!(
                "seed {}: plan written: {}",
                report.plan.seed,
                plan::replay_command(target, &path)
            );
        }
    }
    let off = std::env::var("SIM_SHRINK").is_ok_and(|v| v == "0");
    let seeds = if off { 0 } else { env_u64("SIM_SHRINK_SEEDS").unwrap_or(DEFAULT_SEEDS) };
    let runs = env_u64("SIM_SHRINK_RUNS").unwrap_or(DEFAULT_RUNS);
    for report in failed.iter().take(seeds as usize) {
        shrink_one(target, report, runs, threads);
    }
    if failed.len() as u64 > seeds && seeds > 0 {
        println!(
            "shrink: {} more failing seeds not shrunk (SIM_SHRINK_SEEDS={seeds}); shrink one \
             with SIM_SHRINK=1 SIM_PLAN=<its plan> cargo sim --test {target}",
            failed.len() as u64 - seeds
        );
    }
}

/// The checkers a failing run's violations come from.
fn checkers(report: &super::run::SeedReport) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = report.violations.iter().map(|v| v.checker).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Shrinks one failing seed's plan and writes the result beside its plan.
pub fn shrink_one(target: &str, report: &super::run::SeedReport, runs: u64, threads: usize) {
    use super::plan;
    use super::run::run_seed;
    let wanted = checkers(report);
    let any = std::env::var_os("SIM_SHRINK_ANY").is_some();
    let seed = report.plan.seed;
    let failing: std::sync::Mutex<Vec<(Plan, Vec<&'static str>)>> = Default::default();
    let fails = |candidate: &Plan| {
        let run = run_seed(candidate);
        let seen = checkers(&run);
        let fails = if any { !seen.is_empty() } else { seen.iter().any(|c| wanted.contains(c)) };
        if fails {
            failing.lock().expect("failing lock").push((candidate.clone(), seen));
        }
        fails
    };
    let on_kept = |what: &str| println!("shrink seed {seed}: removed {what}: still fails");
    println!(
        "shrink seed {seed}: {} faults, {} nodes, {} clients, fault phase {} ms; failing in {} \
         (budget {runs} runs)",
        report.plan.steps.len(),
        report.plan.nodes,
        report.plan.clients,
        report.plan.fault_ms,
        wanted.join(", ")
    );
    let shrunk = shrink(&report.plan, runs, threads, &fails, &on_kept);
    let path = plan::failure_path(seed, report.plan.scenario, true);
    plan::write(&shrunk.plan, &path);
    let seen = failing
        .into_inner()
        .expect("failing lock")
        .into_iter()
        .find(|(plan, _)| *plan == shrunk.plan)
        .map_or_else(|| wanted.clone(), |(_, seen)| seen);
    println!(
        "shrink seed {seed}: faults {} -> {}, nodes {} -> {}, clients {} -> {}, fault phase {} -> \
         {} ms; {} changes kept in {} runs{}; fails in {}\n{}\nreplay the shrunk plan: {}",
        report.plan.steps.len(),
        shrunk.plan.steps.len(),
        report.plan.nodes,
        shrunk.plan.nodes,
        report.plan.clients,
        shrunk.plan.clients,
        report.plan.fault_ms,
        shrunk.plan.fault_ms,
        shrunk.removed.len(),
        shrunk.runs,
        if shrunk.budget_spent { " (budget spent: SIM_SHRINK_RUNS)" } else { "" },
        seen.join(", "),
        shrunk.plan.describe().trim_end(),
        plan::replay_command(target, &path)
    );
}
