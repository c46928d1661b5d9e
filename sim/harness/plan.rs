//! A plan as a file: the text form of `schedule::Plan`, written for every failing
//! seed (`target/sim-failures/seed-N.plan`, and its shrunk form) and replayed with
//! `SIM_PLAN=FILE cargo sim --test sim`.
//!
//! One setting per line, then one line per fault; `#` starts a comment. A person may
//! delete or edit lines (a fault, a node count) and replay the result:
//!
//! ```text
//! seed 42
//! scenario swarm
//! nodes 3
//! ...
//! # fault <id> <start ms> <end ms> <kind> [field=value ...]; nodes are n1..nN
//! fault 0 120 900 partition a=n1,n2 b=n3
//! fault 1 400 1200 crash_restart node=n2
//! ```
//!
//! A fault's `id` is its place in the schedule as drawn (`Step::id`): the run's own
//! draws for it (which range's leader it isolates, a crash mid-fsync or not) follow
//! the id, so a fault means the same thing in a plan that lost the faults before it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rangedb::node::LeaderPlacement;

use super::schedule::{Fault, Plan, Scenario, Step};

/// Where failing seeds' plans are written (relative to the package root, where
/// cargo runs tests).
pub const FAILURES_DIR: &str = "target/sim-failures";

/// The plan file of a failing seed; `shrunk` for its shrunk form.
pub fn failure_path(seed: u64, scenario: Scenario, shrunk: bool) -> PathBuf {
    let scenario = match scenario {
        Scenario::Swarm => String::new(),
        other => format!("-{}", other.name()),
    };
    let suffix = if shrunk { ".shrunk" } else { "" };
    Path::new(FAILURES_DIR).join(format!("seed-{seed}{scenario}{suffix}.plan"))
}

/// The command that replays a plan file.
pub fn replay_command(target: &str, path: &Path) -> String {
    format!("SIM_PLAN={} cargo sim --test {target}", path.display())
}

/// Writes `plan` to `path` (creating its directory); an error is printed, not fatal:
/// the failure report has the seed's replay command too.
pub fn write(plan: &Plan, path: &Path) -> bool {
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, to_text(plan)));
    if let Err(error) = &written {
        println!("could not write the plan to {}: {error}", path.display());
    }
    written.is_ok()
}

/// The plan named by `SIM_PLAN`, if set.
///
/// # Panics
/// On a file that cannot be read or parsed (a usage error of the person replaying).
pub fn from_env() -> Option<(Plan, PathBuf)> {
    let path = PathBuf::from(std::env::var_os("SIM_PLAN")?);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("SIM_PLAN={}: {error}", path.display()));
    let plan = parse(&text).unwrap_or_else(|error| panic!("SIM_PLAN={}: {error}", path.display()));
    Some((plan, path))
}

fn node(i: usize) -> String {
    format!("n{}", i + 1)
}

fn nodes(set: &[usize]) -> String {
    set.iter().map(|i| node(*i)).collect::<Vec<_>>().join(",")
}

/// The plan's text form; `parse` reads it back to an equal plan.
pub fn to_text(plan: &Plan) -> String {
    let mut out = String::new();
    let replay = "SIM_PLAN=<this file> cargo sim --test sim";
    let _ = writeln!(out, "# A rangedb simulation plan (sim/harness/plan.rs). Replay: {replay}");
    let _ = writeln!(out, "seed {}", plan.seed);
    let _ = writeln!(out, "scenario {}", plan.scenario.name());
    let _ = writeln!(out, "nodes {}", plan.nodes);
    let _ = writeln!(out, "clients {}", plan.clients);
    let _ = writeln!(out, "snapshot_entries {}", plan.snapshot_entries);
    let history = match plan.history_revisions {
        u64::MAX => "all".to_string(),
        n => n.to_string(),
    };
    let _ = writeln!(out, "history_revisions {history}");
    let placement = match plan.leader_placement {
        LeaderPlacement::Colocate => "colocate",
        LeaderPlacement::Elected => "elected",
    };
    let _ = writeln!(out, "leader_placement {placement}");
    let _ = writeln!(out, "tick_ms {}", plan.tick_ms);
    let _ = writeln!(out, "client_attempt_ms {}", plan.client_attempt_ms);
    let _ = writeln!(out, "lease_get_percent {}", plan.lease_get_percent);
    let _ = writeln!(out, "burst_writes {}", plan.burst_writes);
    let _ = writeln!(out, "burst_percent {}", plan.burst_percent);
    let _ = writeln!(out, "fsync_us {} {}", plan.fsync_us.0, plan.fsync_us.1);
    let _ = writeln!(out, "fault_ms {}", plan.fault_ms);
    let _ = writeln!(out, "intensity {}", plan.intensity);
    let _ = writeln!(out, "spares {}", plan.spares);
    let _ = writeln!(out, "operators {}", plan.operators);
    let _ = writeln!(out, "max_append_bytes {}", plan.max_append_bytes);
    let _ = writeln!(
        out,
        "# fault <id> <start ms> <end ms> <kind> [field=value ...]; nodes are n1..n{}",
        plan.nodes
    );
    for step in &plan.steps {
        let _ = writeln!(
            out,
            "fault {} {} {} {}   # {}",
            step.id,
            step.start_ms,
            step.end_ms,
            fault_text(&step.fault),
            step.fault
        );
    }
    out
}

/// A fault's kind and fields, as `parse_fault` reads them.
pub fn fault_text(fault: &Fault) -> String {
    match fault {
        Fault::Partition { a, b, bridge } => {
            let bridge = bridge.map(|n| format!(" bridge={}", node(n))).unwrap_or_default();
            format!("partition a={} b={}{bridge}", nodes(a), nodes(b))
        }
        Fault::IsolateLeader => "isolate_leader".into(),
        Fault::IsolateLeaderPair => "isolate_leader_pair".into(),
        Fault::OneWay { from, to } => format!("one_way_link from={} to={}", node(*from), node(*to)),
        Fault::Loss { rate } => format!("packet_loss rate={rate}"),
        Fault::Delay { max_ms } => format!("delay max_ms={max_ms}"),
        Fault::SlowToLeader { ms } => format!("slow_to_leader ms={ms}"),
        Fault::Duplicate { probability } => format!("duplication probability={probability}"),
        Fault::Kill { node: n, crash: true } => format!("crash_restart node={}", node(*n)),
        Fault::Kill { node: n, crash: false } => format!("clean_restart node={}", node(*n)),
        Fault::Pause { node: n } => format!("pause node={}", node(*n)),
        Fault::PauseLeader => "pause_leader".into(),
        Fault::DiskEio { node: n, probability } => {
            format!("fsync_eio node={} probability={probability}", node(*n))
        }
        Fault::Wipe { node: n } => format!("disk_wiped node={}", node(*n)),
        Fault::DiskRot { node: n } => format!("disk_rot node={}", node(*n)),
        Fault::ClockSkew { node: n, skew_ms, drift_ppm } => {
            format!("clock node={} skew_ms={skew_ms} drift_ppm={drift_ppm}", node(*n))
        }
        Fault::LeaderClockDrift { drift_ppm } => {
            format!("leader_clock_drift drift_ppm={drift_ppm}")
        }
        Fault::PartitionSlowLeader => "partition_slow_leader".into(),
        Fault::MuteSlowedLeader => "mute_slowed_leader".into(),
        Fault::AddNode { spare } => format!("node_add spare={spare}"),
        Fault::RemoveNode { node: n } => format!("node_remove node={}", node(*n)),
        Fault::RemoveLeader => "node_remove_leader".into(),
        Fault::ReplaceWiped { node: n } => format!("node_replace_wiped node={}", node(*n)),
        Fault::ReplaceLive { node: n, spare } => {
            format!("node_replace_live node={} spare={spare}", node(*n))
        }
    }
}

/// Reads a plan's text form. Every setting is required; faults may be none.
///
/// # Errors
/// The line number and what is wrong with it.
pub fn parse(text: &str) -> Result<Plan, String> {
    let mut settings: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    let mut faults: Vec<(usize, &str)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (key, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if key == "fault" {
            faults.push((n + 1, rest.trim()));
        } else if settings.insert(key, (n + 1, rest.trim())).is_some() {
            return Err(format!("line {}: `{key}` given twice", n + 1));
        }
    }
    let mut take = |key: &str| -> Result<(usize, &str), String> {
        settings.remove(key).ok_or_else(|| format!("the setting `{key}` is missing"))
    };
    let number = |(line, value): (usize, &str)| -> Result<u64, String> {
        value.parse().map_err(|_| format!("line {line}: `{value}` is not a number"))
    };
    let seed = number(take("seed")?)?;
    let (line, name) = take("scenario")?;
    let scenario =
        Scenario::parse(name).ok_or_else(|| format!("line {line}: unknown scenario `{name}`"))?;
    let node_count = number(take("nodes")?)? as usize;
    if node_count == 0 || node_count > 9 {
        return Err(format!("nodes {node_count}: 1 to 9 nodes"));
    }
    let clients = number(take("clients")?)? as usize;
    let snapshot_entries = number(take("snapshot_entries")?)?;
    let history_revisions = match take("history_revisions")? {
        (_, "all") => u64::MAX,
        other => number(other)?,
    };
    let leader_placement = match take("leader_placement")? {
        (_, "colocate") => LeaderPlacement::Colocate,
        (_, "elected") => LeaderPlacement::Elected,
        (line, other) => return Err(format!("line {line}: leader_placement `{other}`")),
    };
    let tick_ms = number(take("tick_ms")?)?;
    let client_attempt_ms = number(take("client_attempt_ms")?)?;
    let lease_get_percent = number(take("lease_get_percent")?)?;
    let burst_writes = number(take("burst_writes")?)?;
    let burst_percent = number(take("burst_percent")?)?;
    let (line, fsync) = take("fsync_us")?;
    let fsync_us = match fsync.split_whitespace().collect::<Vec<_>>()[..] {
        [usual, stall] => (number((line, usual))?, number((line, stall))?),
        _ => return Err(format!("line {line}: fsync_us takes two numbers")),
    };
    let fault_ms = number(take("fault_ms")?)?;
    let (line, intensity) = take("intensity")?;
    let intensity =
        intensity.parse().map_err(|_| format!("line {line}: `{intensity}` is not a number"))?;
    let spares = match settings.remove("spares") {
        Some(value) => number(value)? as usize,
        None => 0, // Plans written before membership changes.
    };
    let operators = match settings.remove("operators") {
        Some(value) => number(value)? as usize,
        None => 1,
    };
    let max_append_bytes = match settings.remove("max_append_bytes") {
        Some(value) => number(value)?,
        None => super::schedule::PRODUCTION_APPEND_BYTES, // Plans written before it.
    };
    if let Some((key, (line, _))) = settings.into_iter().next() {
        return Err(format!("line {line}: unknown setting `{key}`"));
    }
    let mut steps = Vec::new();
    for (line, text) in faults {
        let step = parse_step(text, node_count + spares)
            .map_err(|error| format!("line {line}: {error}"))?;
        steps.push(step);
    }
    Ok(Plan {
        seed,
        scenario,
        nodes: node_count,
        clients,
        snapshot_entries,
        history_revisions,
        leader_placement,
        tick_ms,
        client_attempt_ms,
        lease_get_percent,
        burst_writes,
        burst_percent,
        fsync_us,
        fault_ms,
        intensity,
        spares,
        operators,
        max_append_bytes,
        steps,
    })
}

/// `<id> <start ms> <end ms> <kind> [field=value ...]`
fn parse_step(text: &str, node_count: usize) -> Result<Step, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let [id, start, end, kind, fields @ ..] = &words[..] else {
        return Err("expected `fault <id> <start ms> <end ms> <kind> [field=value ...]`".into());
    };
    let number = |word: &str| -> Result<u64, String> {
        word.parse().map_err(|_| format!("`{word}` is not a number"))
    };
    let (start_ms, end_ms) = (number(start)?, number(end)?);
    if start_ms >= end_ms {
        return Err(format!("a fault must end after it starts ({start_ms} .. {end_ms})"));
    }
    let mut map: BTreeMap<&str, &str> = BTreeMap::new();
    for field in fields {
        let (key, value) =
            field.split_once('=').ok_or_else(|| format!("`{field}` is not field=value"))?;
        map.insert(key, value);
    }
    let fault = Fields { map, node_count }.fault(kind)?;
    Ok(Step { id: number(id)? as usize, start_ms, end_ms, fault })
}

/// A fault line's fields; each is taken once, and one left over is an error.
struct Fields<'a> {
    map: BTreeMap<&'a str, &'a str>,
    node_count: usize,
}

impl Fields<'_> {
    fn fault(mut self, kind: &str) -> Result<Fault, String> {
        let fault = match kind {
            "partition" | "partition_bridge" => Fault::Partition {
                a: self.nodes("a")?,
                b: self.nodes("b")?,
                bridge: self.map.contains_key("bridge").then(|| self.node("bridge")).transpose()?,
            },
            "isolate_leader" => Fault::IsolateLeader,
            "isolate_leader_pair" => Fault::IsolateLeaderPair,
            "one_way_link" => Fault::OneWay { from: self.node("from")?, to: self.node("to")? },
            "packet_loss" => Fault::Loss { rate: self.float("rate")? },
            "delay" => Fault::Delay { max_ms: self.int("max_ms")? as u64 },
            "slow_to_leader" => Fault::SlowToLeader { ms: self.int("ms")? as u64 },
            "duplication" => Fault::Duplicate { probability: self.float("probability")? },
            "crash_restart" => Fault::Kill { node: self.node("node")?, crash: true },
            "clean_restart" => Fault::Kill { node: self.node("node")?, crash: false },
            "pause" => Fault::Pause { node: self.node("node")? },
            "pause_leader" => Fault::PauseLeader,
            "fsync_eio" => {
                Fault::DiskEio { node: self.node("node")?, probability: self.float("probability")? }
            }
            "disk_wiped" => Fault::Wipe { node: self.node("node")? },
            "disk_rot" => Fault::DiskRot { node: self.node("node")? },
            "clock" => Fault::ClockSkew {
                node: self.node("node")?,
                skew_ms: self.int("skew_ms")?,
                drift_ppm: self.int("drift_ppm")?,
            },
            "leader_clock_drift" => Fault::LeaderClockDrift { drift_ppm: self.int("drift_ppm")? },
            "partition_slow_leader" => Fault::PartitionSlowLeader,
            "mute_slowed_leader" => Fault::MuteSlowedLeader,
            "node_add" => Fault::AddNode { spare: self.int("spare")? as usize },
            "node_remove" => Fault::RemoveNode { node: self.node("node")? },
            "node_remove_leader" => Fault::RemoveLeader,
            "node_replace_wiped" => Fault::ReplaceWiped { node: self.node("node")? },
            "node_replace_live" => {
                Fault::ReplaceLive { node: self.node("node")?, spare: self.int("spare")? as usize }
            }
            other => return Err(format!("unknown fault kind `{other}`")),
        };
        if let Some(key) = self.map.keys().next() {
            return Err(format!("unknown field `{key}` for {kind}"));
        }
        Ok(fault)
    }

    fn take(&mut self, key: &str) -> Result<&str, String> {
        self.map.remove(key).ok_or_else(|| format!("missing field `{key}`"))
    }

    fn node(&mut self, key: &str) -> Result<usize, String> {
        let count = self.node_count;
        let text = self.take(key)?;
        let n: Option<usize> = text.strip_prefix('n').and_then(|n| n.parse().ok());
        match n {
            Some(n) if (1..=count).contains(&n) => Ok(n - 1),
            _ => Err(format!("`{text}` is not a node of this plan (n1..n{count})")),
        }
    }

    fn nodes(&mut self, key: &str) -> Result<Vec<usize>, String> {
        let count = self.node_count;
        let text = self.take(key)?.to_string();
        let mut set = Vec::new();
        for name in text.split(',') {
            let mut one = Fields { map: BTreeMap::from([("n", name)]), node_count: count };
            set.push(one.node("n")?);
        }
        Ok(set)
    }

    fn int(&mut self, key: &str) -> Result<i64, String> {
        let text = self.take(key)?;
        text.parse().map_err(|_| format!("{key}=`{text}` is not a whole number"))
    }

    fn float(&mut self, key: &str) -> Result<f64, String> {
        let text = self.take(key)?;
        text.parse().map_err(|_| format!("{key}=`{text}` is not a number"))
    }
}
