//! `cargo sim --test sim_tools`: tests of the simulator's own tools: plan files
//! (`harness/plan.rs`), shrinking (`harness/shrink.rs`) and the timeline page
//! (`harness/timeline.rs`). Outside `--cfg madsim` this target is empty.

#![cfg(madsim)]

#[allow(dead_code)] // The sweep's parts that these tests do not use.
#[path = "harness/mod.rs"]
mod harness;

use harness::checkers::Violation;
use harness::plan;
use harness::run::{run_seed, SeedReport};
use harness::schedule::{Fault, Plan, Scenario, Step};
use harness::shrink;
use harness::timeline;

/// Every drawn plan, of every scenario, reads back from its text as the same plan.
#[test]
fn plan_text_round_trips() {
    let scenarios = std::iter::once(Scenario::Swarm).chain(Scenario::NAMED);
    for scenario in scenarios {
        for seed in 1..=150 {
            let drawn = Plan::draw(seed, scenario);
            let text = plan::to_text(&drawn);
            let read = plan::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(read, drawn, "seed {seed} {}:\n{text}", scenario.name());
        }
    }
}

/// A plan file a person edited wrongly is refused with the line and the reason.
#[test]
fn plan_errors_name_the_line() {
    let text = plan::to_text(&Plan::draw(7, Scenario::Swarm));
    let cases = [
        ("fault 0 10 20 crash_restart node=n9", "not a node of this plan"),
        ("fault 0 10 20 meteor_strike", "unknown fault kind"),
        ("fault 0 30 20 pause node=n1", "must end after it starts"),
        ("fault 0 10 20 delay max_ms=5 extra=1", "unknown field `extra`"),
        ("flux_capacitor 1", "unknown setting"),
    ];
    for (line, expected) in cases {
        let edited = format!("{text}{line}\n");
        let error = plan::parse(&edited).expect_err(line);
        let line_number = edited.lines().count();
        assert!(error.contains(expected), "{line}: {error}");
        assert!(error.contains(&format!("line {line_number}")), "{line}: {error}");
    }
    let without_nodes: String =
        text.lines().filter(|l| !l.starts_with("nodes ")).map(|l| format!("{l}\n")).collect();
    assert!(plan::parse(&without_nodes).expect_err("no nodes").contains("`nodes` is missing"));
}

fn step(id: usize, start_ms: u64, end_ms: u64, fault: Fault) -> Step {
    Step { id, start_ms, end_ms, fault }
}

/// A plan with many faults of which one matters.
fn noisy_plan() -> Plan {
    let mut plan = Plan::draw(11, Scenario::Swarm);
    plan.nodes = 5;
    plan.clients = 3;
    plan.burst_writes = 10;
    plan.steps = vec![
        step(0, 100, 900, Fault::Delay { max_ms: 50 }),
        step(1, 200, 2_000, Fault::Partition { a: vec![0, 4], b: vec![1, 2, 3], bridge: None }),
        step(2, 300, 700, Fault::Pause { node: 3 }),
        step(3, 1_000, 2_600, Fault::Kill { node: 1, crash: true }),
        step(4, 1_200, 1_500, Fault::Loss { rate: 0.1 }),
        step(5, 2_000, 3_000, Fault::IsolateLeader),
        step(6, 2_500, 4_000, Fault::DiskEio { node: 4, probability: 0.05 }),
        step(7, 3_000, 5_000, Fault::Duplicate { probability: 0.2 }),
        step(8, 4_000, 5_500, Fault::Pause { node: 2 }),
    ];
    plan
}

/// "Fails" while the crash of n2 (fault #3) is in the plan and lasts 400 ms or more.
fn fails_with_the_crash(plan: &Plan) -> bool {
    plan.steps.iter().any(|s| {
        s.id == 3 && s.end_ms - s.start_ms >= 400 && s.fault == Fault::Kill { node: 1, crash: true }
    })
}

/// Shrinking keeps only what the failure needs, and the same plan comes out whatever
/// the number of threads.
#[test]
fn shrinking_keeps_what_the_failure_needs() {
    let plan = noisy_plan();
    assert!(fails_with_the_crash(&plan));
    let quiet = |_: &str| {};
    let one = shrink::shrink(&plan, 500, 1, &fails_with_the_crash, &quiet);
    assert!(!one.budget_spent, "{one:?}");
    assert_eq!(one.plan.steps.len(), 1, "{:?}", one.plan.steps);
    let kept = &one.plan.steps[0];
    assert_eq!((kept.id, kept.start_ms), (3, 1_000));
    // Halved while it still fails: 1600 -> 800 -> 400 ms.
    assert_eq!(kept.end_ms, 1_400);
    assert_eq!((one.plan.nodes, one.plan.clients, one.plan.burst_writes), (3, 1, 0));
    assert!(one.plan.fault_ms <= 1_500, "fault phase {}", one.plan.fault_ms);
    assert!(fails_with_the_crash(&one.plan));
    for threads in [2, 3] {
        let other = shrink::shrink(&plan, 500, threads, &fails_with_the_crash, &quiet);
        assert_eq!(other.plan, one.plan, "threads {threads}");
        assert_eq!(other.removed, one.removed, "threads {threads}");
        assert_eq!(other.runs, one.runs, "threads {threads}");
    }
    // A budget stops it early, and says so.
    let short = shrink::shrink(&plan, 3, 2, &fails_with_the_crash, &quiet);
    assert!(short.budget_spent && short.runs == 3, "{short:?}");
    assert!(fails_with_the_crash(&short.plan));
}

/// A real run's page: a lane per node with roles, the faults, the operations, the
/// node that was down; nothing marked as a violation.
#[test]
fn timeline_page_of_a_run() {
    let mut plan = Plan::draw(5, Scenario::Swarm);
    plan.nodes = 3;
    plan.fault_ms = 2_500;
    plan.steps = vec![
        step(0, 300, 1_200, Fault::Kill { node: 2, crash: true }),
        step(1, 1_500, 2_200, Fault::IsolateLeader),
    ];
    timeline::enable();
    let report = run_seed(&plan);
    assert!(report.ok(), "{:?}", report.violations);
    let recording = timeline::take().expect("the run recorded a timeline");
    let page = timeline::render(&plan, &report, &recording);
    let count = |needle: &str| page.matches(needle).count();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<svg"));
    // Self-contained: nothing to fetch.
    assert!(!page.contains("https://") && !page.contains("src=") && !page.contains("href="));
    let mut clients: Vec<u64> = recording.history.iter().map(|op| op.client).collect();
    clients.dedup();
    clients.sort_unstable();
    clients.dedup();
    assert_eq!(
        count("class=\"label lane\""),
        plan.nodes + clients.len(),
        "a lane per node and client"
    );
    for node in ["n1", "n2", "n3"] {
        assert!(page.contains(&format!(">{node}</text>")), "no lane for {node}");
    }
    assert!(count("class=\"role leader\"") >= 1, "no leader drawn");
    assert!(count("class=\"role follower\"") >= 3);
    assert_eq!(count("class=\"faultbar fault-step\""), 2);
    assert!(count("class=\"down\"") >= 1, "the crashed node is not shown down");
    assert!(page.contains("n3 down (crash)"));
    assert_eq!(count("class=\"op "), report.ops, "one bar per operation");
    assert!(page.contains(">c1</text>") && page.contains(">probe</text>"));
    assert_eq!(count("class=\"violation\""), 0);
    assert!(page.contains("no violation"));
}

/// A failing report's page marks each finding: a line, and for a history finding a
/// band over its window.
#[test]
fn timeline_marks_violations() {
    let plan = Plan::draw(5, Scenario::Swarm);
    let violation = |checker, focus| Violation {
        checker,
        message: format!("{checker} found <something>"),
        evidence: Vec::new(),
        focus,
    };
    let report = SeedReport {
        plan: plan.clone(),
        sim_ms: 9_000,
        ops: 0,
        unknown: 0,
        faults: Default::default(),
        trace: 0,
        violations: vec![
            violation("raft_safety", None),
            violation("witness", Some((b"a".to_vec(), 2_000, 2_600))),
        ],
        inconclusive: 0,
        markers: Default::default(),
        recovery_ms: None,
    };
    let recording = timeline::Recording {
        safety_violations_ms: vec![4_321],
        last_ms: 9_000,
        ..Default::default()
    };
    let page = timeline::render(&plan, &report, &recording);
    assert_eq!(page.matches("class=\"violation\"").count(), 2);
    assert_eq!(page.matches("class=\"violationband\"").count(), 1);
    assert!(page.contains("raft_safety at 4321 ms: raft_safety found &lt;something&gt;"));
    assert!(page.contains("witness at 2600 ms"));
    assert!(page.contains("FAILED"));
}

/// Shrinking stays inside the fault model: 5 nodes do not become 3 when two disks
/// would then be damaged (a wiped one and a rotting one), whatever the run says.
#[test]
fn shrinking_keeps_the_fault_model() {
    let mut plan = Plan::draw(12, Scenario::Swarm);
    plan.nodes = 5;
    plan.steps = vec![
        step(0, 500, 501, Fault::Wipe { node: 0 }),
        step(1, 1_000, 1_300, Fault::DiskRot { node: 1 }),
        step(2, 1_500, 2_000, Fault::Pause { node: 4 }),
    ];
    let both = |plan: &Plan| {
        plan.steps.iter().any(|s| matches!(s.fault, Fault::Wipe { .. }))
            && plan.steps.iter().any(|s| matches!(s.fault, Fault::DiskRot { .. }))
    };
    let shrunk = shrink::shrink(&plan, 200, 2, &both, &|_| {});
    assert_eq!(shrunk.plan.nodes, 5, "{:?}", shrunk.removed);
    let ids: Vec<usize> = shrunk.plan.steps.iter().map(|s| s.id).collect();
    assert_eq!(ids, [0, 1]);
}

/// The lease check's quorum (raft_safety): a majority of the voters, and of the
/// outgoing voters too while a change is joint, the leader included.
#[test]
fn lease_check_counts_a_quorum_of_each_configuration() {
    use harness::checkers::raft_safety::lease_quorum_holds;
    use rangedb::raft::{Membership, NodeId};
    let set = |ids: &[u64]| ids.iter().map(|id| NodeId(*id)).collect();
    let simple = Membership { voters: set(&[1, 2, 3]), outgoing: set(&[]), learners: set(&[4]) };
    let defenders = |ids: &'static [u64]| move |v: NodeId| ids.contains(&v.0);
    assert!(!lease_quorum_holds(&simple, defenders(&[1])));
    assert!(!lease_quorum_holds(&simple, defenders(&[1, 4])), "a learner does not count");
    assert!(lease_quorum_holds(&simple, defenders(&[1, 3])));
    let joint =
        Membership { voters: set(&[1, 2, 3]), outgoing: set(&[1, 4, 5]), learners: set(&[]) };
    assert!(!lease_quorum_holds(&joint, defenders(&[1, 2])), "the outgoing voters have 1 of 3");
    assert!(lease_quorum_holds(&joint, defenders(&[1, 2, 4])));
}

/// The lease check's stickiness: 9 ticks of 20 ms at the +2% drift bound after the
/// follower last heard from the leader (or restarted), and not a microsecond more.
#[test]
fn lease_check_stickiness_lasts_nine_fast_ticks() {
    use harness::checkers::raft_safety::{sticky_until, STICKY_AT_LEAST_US};
    assert_eq!(STICKY_AT_LEAST_US, 176_470);
    assert!(sticky_until(Some(1_000), None, 1_000 + STICKY_AT_LEAST_US));
    assert!(!sticky_until(Some(1_000), None, 1_001 + STICKY_AT_LEAST_US));
    assert!(sticky_until(Some(1_000), Some(90_000), 200_000), "a restart counts too");
    assert!(!sticky_until(None, None, 0));
    // The correct lease (8 leader ticks from the heartbeat's send, the leader's clock
    // up to 2% slow) ends before that; the mutant's whole election timeout does not.
    let correct_until = 8 * 20_000 * 1_000_000 / (1_000_000 - 20_000);
    assert!(sticky_until(Some(0), None, correct_until));
    assert!(!sticky_until(Some(0), None, 10 * 20_000));
}

/// The handoff check: the target's last entry (term, index) at its campaign must be
/// at least the leader's when it sent TimeoutNow.
#[test]
fn handoff_check_wants_the_whole_log() {
    use harness::checkers::raft_safety::handoff_target_caught_up;
    assert!(handoff_target_caught_up((2, 69), (2, 69)));
    assert!(handoff_target_caught_up((2, 69), (2, 70)));
    assert!(!handoff_target_caught_up((2, 69), (2, 68)));
    assert!(!handoff_target_caught_up((3, 10), (2, 99)));
}

/// The slow-answers class cuts the leader it slowed: every `mute_slowed_leader` lies
/// within a `slow_to_leader` (the run resolves the muted node from it).
#[test]
fn slow_answers_mute_lies_within_the_slowdown() {
    let mut muted = 0;
    for seed in 1..=300 {
        let plan = Plan::draw(seed, Scenario::Swarm);
        for mute in plan.steps.iter().filter(|s| s.fault == Fault::MuteSlowedLeader) {
            muted += 1;
            let within = plan.steps.iter().any(|s| {
                matches!(s.fault, Fault::SlowToLeader { .. })
                    && s.start_ms < mute.start_ms
                    && s.end_ms >= mute.end_ms
            });
            assert!(within, "seed {seed}: {mute:?} outside any slowdown");
        }
    }
    assert!(muted > 20, "the class is on in about one seed in eight: {muted} mutes");
}

fn put(invoke_ms: u64, complete_ms: u64, value: &[u8]) -> harness::history::Op {
    use harness::history::{Call, Op, Outcome};
    let call = Call::Put { key: b"k".to_vec(), value: value.to_vec(), seq: invoke_ms };
    Op { client: invoke_ms, call, invoke_ms, complete_ms, outcome: Outcome::Put { revision: 1 } }
}

fn get(invoke_ms: u64, complete_ms: u64, seen: Option<&[u8]>) -> harness::history::Op {
    use harness::history::{Call, Op, Outcome};
    let call = Call::Get { key: b"k".to_vec(), lease: false };
    let outcome = Outcome::Get(seen.map(|v| (v.to_vec(), 1)));
    Op { client: 1000 + invoke_ms, call, invoke_ms, complete_ms, outcome }
}

/// The linearizability search (fingerprinted memo) accepts concurrent operations in
/// either order, refuses a stale read after a completed write, and handles a history
/// longer than one 64-bit word of its done set.
#[test]
fn linearizability_search_tells_stale_reads_from_concurrent_ones() {
    use harness::checkers::linearizability::check;
    // a and b overlap: reading either last is fine, reading the older after a newer
    // one was read is not (b, then a, then b again would need two writes of b).
    let concurrent = vec![put(0, 10, b"a"), put(1, 11, b"b"), get(12, 13, Some(b"a"))];
    assert!(check(&concurrent).0.is_empty());
    let stale = vec![put(0, 10, b"a"), put(20, 30, b"b"), get(40, 41, Some(b"a"))];
    let (violations, _) = check(&stale);
    assert_eq!(violations.len(), 1, "a read of a after b was written and acknowledged");
    assert_eq!(violations[0].checker, "linearizability");
    // 150 rounds of a write and a read overlapping the next write: linearizable; then
    // one read of a value two writes back.
    let mut long = Vec::new();
    for round in 0..150u64 {
        let value = round.to_string().into_bytes();
        long.push(put(round * 10, round * 10 + 6, &value));
        long.push(get(round * 10 + 7, round * 10 + 12, Some(&value)));
    }
    assert!(check(&long).0.is_empty());
    long.push(get(1600, 1601, Some(b"148")));
    assert_eq!(check(&long).0.len(), 1, "{:?}", check(&long).0);
    // Forty concurrent writes and a read of one of them after all completed: every
    // order of the thirty-nine nobody read is the same (blind writes), so the search
    // is conclusive, and a read of a value never written is still refused.
    let mut burst: Vec<_> =
        (0..40u64).map(|i| put(i, 100 + i, format!("v{i}").as_bytes())).collect();
    burst.push(get(200, 201, Some(b"v17")));
    let (violations, summary) = check(&burst);
    assert!(violations.is_empty() && summary.inconclusive == 0, "{violations:?}");
    *burst.last_mut().unwrap() = get(200, 201, Some(b"v99"));
    assert_eq!(check(&burst).0.len(), 1);
}
