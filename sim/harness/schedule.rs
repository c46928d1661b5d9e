//! A seed's plan: topology, workload knobs and the fault schedule, drawn from the
//! seed before the run starts and printed in readable form.

use std::fmt;

use super::Rng;
use rangedb::node::LeaderPlacement;

/// Named scenarios; `Swarm` draws everything at random (the default sweep).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Swarm,
    LeaderIsolated,
    RollingRestart,
    MajorityCrash,
    ClockSkew,
    FlappingDuplication,
    DiskEio,
    LeaderPaused,
    ElectionStorm,
    FollowerDiskRots,
    StaleLogElection,
    MembershipChurn,
}

impl Scenario {
    pub const NAMED: [Scenario; 11] = [
        Scenario::LeaderIsolated,
        Scenario::RollingRestart,
        Scenario::MajorityCrash,
        Scenario::ClockSkew,
        Scenario::FlappingDuplication,
        Scenario::DiskEio,
        Scenario::LeaderPaused,
        Scenario::ElectionStorm,
        Scenario::FollowerDiskRots,
        Scenario::StaleLogElection,
        Scenario::MembershipChurn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Swarm => "swarm",
            Scenario::LeaderIsolated => "leader_isolated_clients_both_sides",
            Scenario::RollingRestart => "rolling_crash_restart_every_node",
            Scenario::MajorityCrash => "majority_crash_loses_unsynced_writes",
            Scenario::ClockSkew => "clock_skew_within_and_beyond_bound",
            Scenario::FlappingDuplication => "flapping_links_with_duplication",
            Scenario::DiskEio => "fsync_eio_stops_the_node",
            Scenario::LeaderPaused => "leader_paused_then_resumes",
            Scenario::ElectionStorm => "election_storm_short_crashes_slow_links",
            Scenario::FollowerDiskRots => "follower_disk_rots_and_is_repaired",
            Scenario::StaleLogElection => "stale_long_log_meets_newer_short_logs",
            Scenario::MembershipChurn => "membership_changes_under_partitions",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        std::iter::once(Scenario::Swarm).chain(Scenario::NAMED).find(|s| s.name() == name)
    }
}

/// One fault; each lasts from its start to its end in the schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Server nodes in `a` cannot reach those in `b` and back; `bridge` (in neither)
    /// sees both sides.
    Partition { a: Vec<usize>, b: Vec<usize>, bridge: Option<usize> },
    /// The leader of a range (chosen when the fault starts) is cut from the other
    /// servers and from every client but the first.
    IsolateLeader,
    /// The leader of a range and the next node (a minority of 5) are cut from the
    /// other servers and from every client but the first: both grow a stale suffix.
    IsolateLeaderPair,
    /// Messages from `from` to `to` do not get through (TCP stalls); the reverse do.
    OneWay { from: usize, to: usize },
    /// Packet loss on every link (madsim's TCP turns it into delay and stalls).
    Loss { rate: f64 },
    /// Latency of every packet up to `max_ms` (reorders across connections).
    Delay { max_ms: u64 },
    /// Peer batches are sent twice with this probability (transport hook).
    Duplicate { probability: f64 },
    /// The node is killed; `crash`: power loss (SimDisk drops unsynced data), else a
    /// clean shutdown first. It restarts when the fault ends.
    Kill { node: usize, crash: bool },
    /// The node is paused (all its tasks stop) and resumed at the end.
    Pause { node: usize },
    /// The leader of a range (chosen when the fault starts) stalls like a long GC
    /// pause while clients keep going, then resumes believing it still leads.
    PauseLeader,
    /// fsync fails with this probability on the node's disk.
    DiskEio { node: usize, probability: f64 },
    /// The node loses power and its data directory is wiped (a replaced disk); it
    /// restarts at once with the same flags. The members must refuse it as its old
    /// self: it never runs a replica again in this run (`Safety::node_wiped`).
    Wipe { node: usize },
    /// The node loses power, one bit of its synced data flips (see `Cluster::rot`),
    /// and it restarts when the fault ends: it must catch the damage by checksum, stop
    /// voting and serving the ranges concerned, and repair them from its peers.
    DiskRot { node: usize },
    /// The node's clock: wall time off by `skew_ms`, running `drift_ppm` parts per
    /// million fast (negative: slow), which moves its Raft ticks and so its leases.
    /// Within `DRIFT_BOUND_PPM` except in the clock scenario.
    ClockSkew { node: usize, skew_ms: i64, drift_ppm: i64 },
    /// The clock of the leader of a range (chosen when the fault starts) drifts by
    /// `drift_ppm`, far beyond the bound.
    LeaderClockDrift { drift_ppm: i64 },
    /// Every link into the leader of a range (chosen when the fault starts) is slowed by
    /// `ms` one way: its followers' answers (heartbeat acks) arrive late, its own
    /// messages on time.
    SlowToLeader { ms: u64 },
    /// The node an active LeaderClockDrift slowed is cut from the other servers;
    /// every client still reaches every node, so clients on both sides read.
    PartitionSlowLeader,
    /// The node an active SlowToLeader slowed stops reaching the other servers; they
    /// still reach it (their slowed answers keep arriving), and every client reaches
    /// every node.
    MuteSlowedLeader,
    /// `rangedb node add` of spare server `spare` (started with --join, waiting):
    /// learner on every range, caught up, promoted.
    AddNode { spare: usize },
    /// `rangedb node remove` of founder `node` (skipped while 3 members or fewer
    /// remain: fewer would leave no room for the fault model's damaged disk).
    RemoveNode { node: usize },
    /// `rangedb node remove` of the node leading a range (chosen when it starts): it
    /// steps down and hands its leadership over.
    RemoveLeader,
    /// The node loses power and its data directory is wiped; it restarts with --join
    /// and `rangedb node replace` puts it in its old self's place under a new id.
    ReplaceWiped { node: usize },
    /// `rangedb node replace` of live founder `node` by spare server `spare`: the
    /// spare catches up, then one joint change per range swaps the two voters.
    ReplaceLive { node: usize, spare: usize },
}

/// The swarm's switches (swarm testing: each seed turns whole fault classes and
/// operation kinds on or off, so that combinations only a named scenario reached occur
/// in the sweep), from a stream of their own. `shape` takes at most one pattern that
/// fixes the topology; the other patterns combine freely with it and with the random
/// faults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Classes {
    pub shape: Shape,
    /// `leader_paused_then_resumes`' pattern.
    pub leader_pauses: bool,
    /// `election_storm_short_crashes_slow_links`' pattern.
    pub election_storm: bool,
    /// Slow answers to a leader, then that leader's own messages cut while clients
    /// read from leases (`slow_answers_then_leader_cut_off`). It was drawn but off
    /// before the lease check: with IsolateLeader as its cut (both ways) and answers
    /// slowed 60 to 190 ms (the drift guard then refuses the lease) it caught neither
    /// lease-timing mutant in 2,000 seeds.
    pub slow_answers: bool,
    /// `clock_skew_within_and_beyond_bound`'s clocks (instead of clocks within the
    /// bound), its lease reads and its impatient clients.
    pub clock_beyond_bound: bool,
    /// Gets answered from a leader lease: none, half or all.
    pub lease_get_percent: u64,
    /// Appends cut short (one or a few entries each) in a quarter of the seeds.
    pub max_append_bytes: u64,
}

/// The production `max_size_per_msg` of a replica's Appends.
pub const PRODUCTION_APPEND_BYTES: u64 = 1 << 20;

/// A pattern that fixes the number of nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Plain,
    /// `stale_long_log_meets_newer_short_logs`' pattern, on 5 nodes.
    StaleLogs,
    /// The first part of `follower_disk_rots_and_is_repaired`, on 3 nodes.
    RotAfterLag,
    /// The first part of `membership_changes_under_partitions`, on 3 nodes and a spare.
    Swap,
}

impl Classes {
    fn with_slow_answers(mut self, on: bool) -> Classes {
        self.slow_answers = on;
        self
    }

    /// Each pattern in about one seed in eight.
    pub fn draw(seed: u64) -> Classes {
        let mut rng = Rng::new(seed ^ 0x0c1a_55e5_0000);
        let shape = match rng.below(8) {
            0 => Shape::StaleLogs,
            1 => Shape::RotAfterLag,
            2 => Shape::Swap,
            _ => Shape::Plain,
        };
        Classes {
            shape,
            leader_pauses: rng.chance(0.125),
            election_storm: rng.chance(0.125),
            clock_beyond_bound: rng.chance(0.125),
            lease_get_percent: [0, 50, 50, 100][rng.below(4) as usize],
            slow_answers: false,
            max_append_bytes: if rng.chance(0.25) {
                rng.between(1, 256)
            } else {
                PRODUCTION_APPEND_BYTES
            },
        }
        .with_slow_answers(rng.chance(0.125))
    }
}

/// The drift the sweep gives nodes' clocks: at most 2% fast or slow each, so two
/// clocks differ by at most ~4% in rate, inside the 12.5% the Raft lease tolerates
/// (src/raft/reads.rs) with room for the drift guard's measurement error.
pub const DRIFT_BOUND_PPM: i64 = 20_000;

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Partition { bridge: Some(_), .. } => "partition_bridge",
            Fault::Partition { .. } => "partition",
            Fault::IsolateLeader => "isolate_leader",
            Fault::IsolateLeaderPair => "isolate_leader_pair",
            Fault::OneWay { .. } => "one_way_link",
            Fault::Loss { .. } => "packet_loss",
            Fault::Delay { .. } => "delay",
            Fault::SlowToLeader { .. } => "slow_to_leader",
            Fault::Duplicate { .. } => "duplication",
            Fault::Kill { crash: true, .. } => "crash_restart",
            Fault::Kill { crash: false, .. } => "clean_restart",
            Fault::Pause { .. } => "pause",
            Fault::PauseLeader => "pause_leader",
            Fault::DiskEio { .. } => "fsync_eio",
            Fault::DiskRot { .. } => "disk_rot",
            Fault::Wipe { .. } => "disk_wiped",
            Fault::ClockSkew { drift_ppm, .. } if drift_ppm.abs() > DRIFT_BOUND_PPM => {
                "clock_drift_beyond_bound"
            }
            Fault::ClockSkew { .. } => "clock_skew_drift",
            Fault::LeaderClockDrift { .. } => "leader_clock_drift_beyond_bound",
            Fault::PartitionSlowLeader => "partition_slow_leader",
            Fault::MuteSlowedLeader => "mute_slowed_leader",
            Fault::AddNode { .. } => "node_add",
            Fault::RemoveNode { .. } => "node_remove",
            Fault::RemoveLeader => "node_remove_leader",
            Fault::ReplaceWiped { .. } => "node_replace_wiped",
            Fault::ReplaceLive { .. } => "node_replace_live",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |i: &usize| format!("n{}", i + 1);
        let set = |v: &Vec<usize>| v.iter().map(n).collect::<Vec<_>>().join(",");
        match self {
            Fault::Partition { a, b, bridge } => {
                write!(f, "partition {{{}}} | {{{}}}", set(a), set(b))?;
                if let Some(bridge) = bridge {
                    write!(f, " bridged by {}", n(bridge))?;
                }
                Ok(())
            }
            Fault::IsolateLeaderPair => {
                write!(f, "isolate the leader of a range and the next node (clients on both sides)")
            }
            Fault::IsolateLeader => {
                write!(f, "isolate the leader of a range (clients on both sides)")
            }
            Fault::OneWay { from, to } => write!(f, "one-way: {} -/-> {}", n(from), n(to)),
            Fault::Loss { rate } => write!(f, "packet loss {:.0}%", rate * 100.0),
            Fault::Delay { max_ms } => write!(f, "latency 1..{max_ms} ms"),
            Fault::SlowToLeader { ms } => {
                write!(f, "links into the leader of a range slowed {ms} ms (one way)")
            }
            Fault::Duplicate { probability } => {
                write!(f, "duplicate peer batches {:.0}%", probability * 100.0)
            }
            Fault::Kill { node, crash: true } => {
                write!(f, "crash {} (lose unsynced), then restart", n(node))
            }
            Fault::Kill { node, crash: false } => {
                write!(f, "stop {} cleanly, then restart", n(node))
            }
            Fault::Pause { node } => write!(f, "pause {}", n(node)),
            Fault::PauseLeader => write!(f, "pause the leader of a range (GC stall)"),
            Fault::DiskEio { node, probability } => {
                write!(f, "fsync EIO on {} p={:.2}", n(node), probability)
            }
            Fault::DiskRot { node } => {
                write!(f, "crash {}, flip a bit of its synced data, then restart", n(node))
            }
            Fault::Wipe { node } => {
                write!(
                    f,
                    "crash {}, wipe its data directory, restart it with the same flags",
                    n(node)
                )
            }
            Fault::ClockSkew { node, skew_ms, drift_ppm } => {
                write!(f, "clock of {} skew {skew_ms} ms drift {drift_ppm} ppm", n(node))
            }
            Fault::LeaderClockDrift { drift_ppm } => {
                write!(f, "clock of the leader of a range drifts {drift_ppm} ppm")
            }
            Fault::MuteSlowedLeader => {
                write!(f, "the slowed leader's messages to the other servers stop (one way)")
            }
            Fault::PartitionSlowLeader => {
                write!(f, "partition the slowed leader from the other servers (not clients)")
            }
            Fault::AddNode { spare } => write!(f, "rangedb node add spare {spare}"),
            Fault::RemoveNode { node } => write!(f, "rangedb node remove {}", n(node)),
            Fault::RemoveLeader => write!(f, "rangedb node remove <the leader of a range>"),
            Fault::ReplaceLive { node, spare } => {
                write!(f, "rangedb node replace {} by spare {spare}", n(node))
            }
            Fault::ReplaceWiped { node } => write!(
                f,
                "crash {}, wipe its data directory, restart it with --join, rangedb node replace",
                n(node)
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The step's place in the drawn schedule, kept when a shrunk plan drops others:
    /// the run's own draws for this step (which range's leader, a crash mid-fsync or
    /// not, which bit rots) depend on it, not on the step's place in a shrunk plan.
    pub id: usize,
    pub start_ms: u64,
    pub end_ms: u64,
    pub fault: Fault,
}

/// Everything a seed decides.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub seed: u64,
    pub scenario: Scenario,
    pub nodes: usize,
    pub clients: usize,
    pub snapshot_entries: u64,
    /// Revisions of history each range keeps (u64::MAX: all).
    pub history_revisions: u64,
    pub leader_placement: LeaderPlacement,
    pub tick_ms: u64,
    /// The workload clients' deadline for one attempt at one node.
    pub client_attempt_ms: u64,
    /// Percentage of the workload's gets that may be answered from a leader lease.
    pub lease_get_percent: u64,
    /// Puts a client sends at once now and then (0: never), in this percentage of its
    /// operations.
    pub burst_writes: u64,
    pub burst_percent: u64,
    /// How long a WAL fsync takes, in microseconds: usually up to the first, one in 50
    /// up to the second. A crash can fall between a batch's write and its sync.
    pub fsync_us: (u64, u64),
    /// Length of the fault phase; the heal phase follows.
    pub fault_ms: u64,
    /// 0 (gentle) .. 1 (brutal).
    pub intensity: f64,
    /// Servers beyond `nodes`, started with --join, that `AddNode` adds.
    pub spares: usize,
    /// Membership commands that may run at once (two operators: the leaders must
    /// refuse a change while another is in flight).
    pub operators: usize,
    /// The replicas' `max_size_per_msg` (production: 1 MiB): small, an Append carries
    /// one or a few entries, so Appends are cut short and pipelined.
    pub max_append_bytes: u64,
    pub steps: Vec<Step>,
}

/// A seed's fsync latency, from a stream of its own so no other draw moves: fast
/// (NVMe, 50 us) to slow (a busy SATA disk, 2 ms), with stalls up to 5-40 ms.
fn fsync_latency(seed: u64) -> (u64, u64) {
    let mut rng = Rng::new(seed ^ 0xf5_7c_0f_f5_7c);
    (rng.between(50, 2_000), rng.between(5_000, 40_000))
}

impl Plan {
    /// Membership changes in a third of the swarm seeds: one or two spare servers
    /// added, founders or a leader removed, a wiped node replaced, at random times
    /// (overlapping changes included: the leaders must refuse the second while one is
    /// in flight). The damaged-disk budget (one disk of three, two of five) is shared
    /// with rot and wipe faults: one node is replaced (again and again, if drawn
    /// more than once), the rotting one if one rots, and none when a node is wiped.
    fn membership(&mut self, rng: &mut Rng, rot_node: Option<usize>, wiped: bool) {
        if !rng.chance(0.35) {
            return;
        }
        self.spares = rng.between(1, 2) as usize;
        let mut spares = 0..self.spares;
        let replaced = rot_node.unwrap_or(rng.below(self.nodes as u64) as usize);
        for _ in 0..rng.between(2, 4) {
            let at = rng.between(300, self.fault_ms - 1_500);
            let fault = match rng.below(5) {
                0 | 1 => match spares.next() {
                    Some(spare) => Fault::AddNode { spare },
                    None => Fault::RemoveLeader,
                },
                2 => Fault::RemoveNode { node: rng.below(self.nodes as u64) as usize },
                3 => Fault::RemoveLeader,
                _ if wiped => continue,
                _ => Fault::ReplaceWiped { node: replaced },
            };
            self.add(at, at + 1, fault);
        }
        self.operators = if rng.chance(0.5) { 2 } else { 1 };
    }

    pub fn draw(seed: u64, scenario: Scenario) -> Plan {
        let mut rng = Rng::new(seed);
        let nodes = if rng.chance(0.7) { 3 } else { 5 };
        let intensity = rng.unit();
        let fault_ms = 6_000;
        let mut plan = Plan {
            seed,
            scenario,
            nodes,
            clients: rng.between(2, 3) as usize,
            snapshot_entries: [10, 30, 100][rng.below(3) as usize],
            // From a stream of its own, so that adding it kept every other draw.
            history_revisions: [0, 3, 50, u64::MAX]
                [Rng::new(seed ^ 0x4157_0e1e_5000).below(4) as usize],
            // The default two times in three; a stream of its own, like the above.
            leader_placement: if Rng::new(seed ^ 0x1ead_e4c0_10ca).below(3) < 2 {
                LeaderPlacement::Colocate
            } else {
                LeaderPlacement::Elected
            },
            tick_ms: 20,
            client_attempt_ms: 800,
            lease_get_percent: 50,
            // A fifth of the seeds, from a stream of its own like the above.
            burst_writes: {
                let mut bursts = Rng::new(seed ^ 0x0000_b0a5_7000);
                if bursts.chance(0.2) {
                    bursts.between(5, 30)
                } else {
                    0
                }
            },
            burst_percent: 8,
            fsync_us: fsync_latency(seed),
            fault_ms,
            intensity,
            spares: 0,
            operators: 1,
            max_append_bytes: PRODUCTION_APPEND_BYTES,
            steps: Vec::new(),
        };
        match scenario {
            Scenario::Swarm => {
                let classes = Classes::draw(seed);
                plan.lease_get_percent = classes.lease_get_percent;
                plan.max_append_bytes = classes.max_append_bytes;
                if classes.shape == Shape::StaleLogs {
                    plan.nodes = 5;
                } else if classes.shape != Shape::Plain {
                    plan.nodes = 3;
                }
                plan.swarm(&mut rng);
                let mut rot_node = plan.patterns(&classes, &mut Rng::new(seed ^ 0x5ba7_7e54_0000));
                // From a stream of its own, so the other faults stay as they were.
                let mut clocks = Rng::new(seed ^ 0xc10c_c10c_c10c_c10c);
                if classes.clock_beyond_bound {
                    plan.clock_scenario(&mut clocks);
                } else {
                    plan.clocks(&mut clocks);
                }
                // Drawn apart so that adding it kept every other draw of the seed.
                let mut rot = Rng::new(seed ^ 0x000b_170f_d15c);
                if rot_node.is_none() && rot.chance(0.25) {
                    let node = rot.below(plan.nodes as u64) as usize;
                    rot_node = Some(node);
                    for _ in 0..rot.between(1, 3) {
                        let start = rot.below(fault_ms - 500);
                        plan.add(start, start + rot.between(100, 600), Fault::DiskRot { node });
                    }
                }
                // One node's disk wiped in some seeds (it stays out: there is no
                // membership change to replace it yet), from a stream of its own. The
                // fault model is at most f damaged disks of 2f + 1: on 3 nodes the
                // wiped one is the one that rots, if one does (a wiped node and a
                // repairing one leave no quorum of intact replicas to elect a leader).
                let mut wipe = Rng::new(seed ^ 0x0000_5ca1_ab1e);
                if wipe.chance(0.15) {
                    let drawn = wipe.below(plan.nodes as u64) as usize;
                    let node = if plan.nodes == 3 { rot_node.unwrap_or(drawn) } else { drawn };
                    let start = wipe.between(500, fault_ms - 500);
                    plan.add(start, start + 1, Fault::Wipe { node });
                }
                let wiped = plan.steps.iter().any(|s| matches!(s.fault, Fault::Wipe { .. }));
                if classes.shape != Shape::Swap {
                    plan.membership(&mut Rng::new(seed ^ 0x6d65_6d62_6572), rot_node, wiped);
                }
            }
            Scenario::LeaderIsolated => {
                plan.add(800, 2_500, Fault::IsolateLeader);
                plan.add(3_600, 5_400, Fault::IsolateLeader);
            }
            Scenario::RollingRestart => {
                let slot = fault_ms / plan.nodes as u64;
                for node in 0..plan.nodes {
                    let start = node as u64 * slot + 200;
                    let crash = rng.chance(0.7);
                    plan.add(start, start + slot * 6 / 10, Fault::Kill { node, crash });
                }
            }
            Scenario::MajorityCrash => {
                let majority = plan.nodes / 2 + 1;
                for round in 0..2u64 {
                    let at = 1_500 + round * 2_500;
                    let first = rng.below(plan.nodes as u64) as usize;
                    for k in 0..majority {
                        let node = (first + k) % plan.nodes;
                        plan.add(at, at + 600 + rng.below(400), Fault::Kill { node, crash: true });
                    }
                }
            }
            Scenario::ClockSkew => plan.clock_scenario(&mut rng),
            Scenario::FlappingDuplication => {
                plan.add(0, fault_ms, Fault::Duplicate { probability: 0.3 });
                let mut at = 200;
                while at < fault_ms - 300 {
                    let from = rng.below(plan.nodes as u64) as usize;
                    let to = (from + 1 + rng.below(plan.nodes as u64 - 1) as usize) % plan.nodes;
                    let len = rng.between(100, 400);
                    plan.add(at, at + len, Fault::OneWay { from, to });
                    if rng.chance(0.5) {
                        plan.add(at, at + len, Fault::OneWay { from: to, to: from });
                    }
                    at += len + rng.between(50, 300);
                }
            }
            Scenario::LeaderPaused => plan.leader_pauses(&mut rng),
            Scenario::ElectionStorm => {
                plan.nodes = 5;
                plan.election_storm(&mut rng);
            }
            Scenario::MembershipChurn => {
                // Joint configurations under partitions: members added, removed
                // (the leader too) and replaced by two operators while the servers,
                // spares included, are split this way and that every few hundred ms
                // and writes arrive in bursts; a quorum counted in one configuration
                // only, or a second change while one is in flight, shows as two
                // leaders or a lost write here.
                plan.nodes = 3;
                plan.spares = 2;
                plan.operators = 2;
                plan.burst_writes = 20;
                plan.burst_percent = 30;
                let servers = plan.nodes + plan.spares;
                let (a, b) = plan.swap_under_flipping_partitions(&mut rng);
                let wiped = if rng.chance(0.5) { a } else { b };
                let steps = [
                    Fault::ReplaceWiped { node: wiped },
                    Fault::AddNode { spare: 1 },
                    Fault::RemoveLeader,
                    Fault::RemoveLeader,
                ];
                let mut at = 3_400;
                for fault in steps {
                    plan.add(at, at + 1, fault);
                    at += rng.between(300, 600);
                }
                let mut at = 3_400;
                while at < fault_ms - 400 {
                    let a: Vec<usize> = (0..servers).filter(|_| rng.chance(0.5)).collect();
                    let b: Vec<usize> = (0..servers).filter(|n| !a.contains(n)).collect();
                    let len = rng.between(150, 500);
                    if !a.is_empty() && !b.is_empty() {
                        plan.add(at, at + len, Fault::Partition { a, b, bridge: None });
                    }
                    at += len + rng.between(100, 400);
                }
            }
            Scenario::StaleLogElection => {
                plan.nodes = 5;
                plan.burst_writes = 40;
                plan.burst_percent = 40;
                plan.stale_logs(&mut rng);
            }
            Scenario::FollowerDiskRots => {
                plan.nodes = 3;
                let rotting = plan.rot_after_lag(&mut rng);
                let mut at = 4_500;
                while at < fault_ms - 400 {
                    let down = rng.between(100, 400);
                    plan.add(at, at + down, Fault::DiskRot { node: rotting });
                    at += down + rng.between(300, 700);
                }
            }
            Scenario::DiskEio => {
                for _ in 0..2 {
                    let node = rng.below(plan.nodes as u64) as usize;
                    let start = rng.between(300, 3_000);
                    let fault = Fault::DiskEio { node, probability: 0.02 + rng.unit() * 0.1 };
                    plan.add(start, start + rng.between(1_000, 2_500), fault);
                }
            }
        }
        plan.steps.sort_by_key(|s| (s.start_ms, s.end_ms));
        for (id, step) in plan.steps.iter_mut().enumerate() {
            step.id = id;
        }
        plan
    }

    /// The swarm's compound fault classes (the named scenarios' patterns) that
    /// `classes` switched on, drawn from `rng`; returns the rotting node if the
    /// rot-after-lag shape chose one (the seed's one damaged disk).
    fn patterns(&mut self, classes: &Classes, rng: &mut Rng) -> Option<usize> {
        let mut rotting = None;
        match classes.shape {
            Shape::Plain => {}
            Shape::StaleLogs => {
                self.burst_writes = 40;
                self.burst_percent = 40;
                self.stale_logs(rng);
            }
            Shape::RotAfterLag => rotting = Some(self.rot_after_lag(rng)),
            Shape::Swap => {
                self.spares = 1;
                self.operators = 2;
                self.burst_writes = 20;
                self.burst_percent = 30;
                self.swap_under_flipping_partitions(rng);
            }
        }
        if classes.leader_pauses {
            self.leader_pauses(rng);
        }
        if classes.election_storm {
            self.election_storm(rng);
        }
        if classes.slow_answers {
            self.slow_answers_then_leader_cut_off(rng);
        }
        rotting
    }

    /// Lease timing: the answers to a range's leader arrive late (one-way latency of
    /// 25 to 60 ms: more than a tick, less than what makes the drift guard refuse the
    /// lease), then that leader's own messages to the other servers stop while their
    /// late answers still arrive, and every get may use a lease. The followers stop
    /// hearing it at once, so their refusal to elect another leader runs out 9 ticks
    /// later; a lease counted from when an answer arrived, or as long as the election
    /// timeout, outlives it (the lease check in raft_safety sees it; a client read on
    /// the old leader may be stale).
    fn slow_answers_then_leader_cut_off(&mut self, rng: &mut Rng) {
        self.lease_get_percent = 100;
        self.client_attempt_ms = 250;
        // A lease needs the drift guard's full window first (100 ticks, 2 s, of
        // heartbeats since the leader was elected).
        let mut at = rng.between(2_200, 3_200);
        while at < self.fault_ms - 1_200 {
            let slow = rng.between(400, 1_000);
            self.add(at, at + slow + 900, Fault::SlowToLeader { ms: rng.between(25, 60) });
            self.add(at + slow, at + slow + rng.between(500, 900), Fault::MuteSlowedLeader);
            at += slow + 2_500;
        }
    }

    /// A range's leader paused (a GC stall) again and again, 0.6 to 1.4 s each,
    /// while clients keep going: it resumes believing it still leads and holds a lease.
    fn leader_pauses(&mut self, rng: &mut Rng) {
        let mut at = 300;
        while at < self.fault_ms - 1_500 {
            let len = rng.between(600, 1_400);
            self.add(at, at + len, Fault::PauseLeader);
            at += len + rng.between(200, 800);
        }
    }

    /// Slow links and short crashes so that elections overlap, votes split and nodes
    /// restart in the middle of an election.
    fn election_storm(&mut self, rng: &mut Rng) {
        let nodes = self.nodes;
        self.add(0, self.fault_ms, Fault::Delay { max_ms: rng.between(30, 120) });
        let mut at = 100;
        while at < self.fault_ms - 200 {
            let node = rng.below(nodes as u64) as usize;
            let down = rng.between(20, 150);
            self.add(at, at + down, Fault::Kill { node, crash: true });
            if rng.chance(0.3) {
                let a: Vec<usize> = (0..nodes).filter(|n| *n != node && rng.chance(0.5)).collect();
                let b: Vec<usize> = (0..nodes).filter(|n| !a.contains(n)).collect();
                if !a.is_empty() && !b.is_empty() {
                    let end = at + rng.between(100, 400);
                    self.add(at, end, Fault::Partition { a, b, bridge: None });
                }
            }
            at += rng.between(80, 300);
        }
    }

    /// On three nodes and spare 0: a live node replaced by the spare (a swap of
    /// voters: where the two configurations' majorities need not meet) while the
    /// partition flips between {new, a} | {old, b} and {new, b} | {old, a}. Returns
    /// (a, b), the two nodes kept. (After founding: a founder wiped before the cluster
    /// exists is another story, the founding one.)
    fn swap_under_flipping_partitions(&mut self, rng: &mut Rng) -> (usize, usize) {
        let replaced = rng.below(3) as usize;
        let (a, b) = ((replaced + 1) % 3, (replaced + 2) % 3);
        let new = self.nodes;
        self.add(800, 801, Fault::ReplaceLive { node: replaced, spare: 0 });
        let mut at = 900;
        while at < 3_200 {
            let len = rng.between(150, 400);
            let (x, y) = if rng.chance(0.5) { (a, b) } else { (b, a) };
            let cut = Fault::Partition { a: vec![new, x], b: vec![replaced, y], bridge: None };
            self.add(at, at + len, cut);
            at += len + rng.between(20, 150);
        }
        (a, b)
    }

    /// Leader completeness, on five nodes with write bursts. A leader cut off with one
    /// follower and clients on its side fills both logs with entries of its term it
    /// cannot commit (long, stale suffixes); the three others elect a newer leader that
    /// commits a shorter log. The moment the pair comes back, the new leader is cut
    /// off: of the four left, two hold the long stale log and two the newer short one,
    /// and only the last term (not the last index) may decide the election.
    fn stale_logs(&mut self, rng: &mut Rng) {
        let mut at = 300;
        while at < self.fault_ms - 2_000 {
            // Short: long enough for a new leader, too short for it to commit as much
            // as the pair appended.
            let cut = rng.between(350, 700);
            self.add(at, at + cut, Fault::IsolateLeaderPair);
            self.add(at + cut, at + cut + rng.between(600, 1_000), Fault::IsolateLeader);
            at += cut + 1_600;
        }
    }

    /// On three nodes, the sharpest case of a rotting disk (the storage fault model is
    /// one faulty replica: two losing acknowledged entries at once may lose committed
    /// writes, and the cluster then rightly stops): while a lagging replica was cut
    /// off, the others committed; the last up-to-date replica dies just as the rotting
    /// one comes back without its copy. Only the repairing replica's vote could elect
    /// the lagging one, and it must not give it. Returns the rotting node.
    fn rot_after_lag(&mut self, rng: &mut Rng) -> usize {
        let rotting = rng.below(3) as usize;
        let lagging = (rotting + 1) % 3;
        let other = (rotting + 2) % 3;
        let cut = Fault::Partition { a: vec![lagging], b: vec![rotting, other], bridge: None };
        self.add(200, 3_000, cut);
        self.add(2_500, 2_800, Fault::DiskRot { node: rotting });
        self.add(2_700, 4_300, Fault::Kill { node: other, crash: true });
        rotting
    }

    fn add(&mut self, start_ms: u64, end_ms: u64, fault: Fault) {
        let end_ms = end_ms.min(self.fault_ms);
        if start_ms < end_ms {
            self.steps.push(Step { id: 0, start_ms, end_ms, fault });
        }
    }

    /// Clocks within the bound: each node's with probability 1/2, skewed up to 5 s and
    /// drifting up to `DRIFT_BOUND_PPM` either way, for a random part of the run.
    fn clocks(&mut self, rng: &mut Rng) {
        for node in 0..self.nodes {
            if rng.chance(0.5) {
                let skew_ms = rng.between(0, 10_000) as i64 - 5_000;
                let drift_ppm = rng.between(0, 2 * DRIFT_BOUND_PPM as u64) as i64 - DRIFT_BOUND_PPM;
                let start = if rng.chance(0.5) { 0 } else { rng.below(self.fault_ms) };
                let end = start + rng.between(1_000, self.fault_ms);
                self.add(start, end, Fault::ClockSkew { node, skew_ms, drift_ppm });
            }
        }
    }

    /// Clock skew and drift within the bound on every node for the whole run, the
    /// leaders' leases in use; then, twice, the clock of a range's leader slows far
    /// beyond the bound (it ticks at about 15% of real time: its lease of 8 ticks
    /// lasts 1 s of real time while the followers stop honouring it after 200 ms)
    /// and that leader is partitioned from the other servers while clients on both
    /// sides keep reading. The drift guard must refuse the lease; without it the
    /// cut-off leader serves stale reads once the clients' writes reach the new leader.
    fn clock_scenario(&mut self, rng: &mut Rng) {
        for node in 0..self.nodes {
            let skew_ms = rng.between(0, 60_000) as i64 - 30_000;
            let drift_ppm = rng.between(0, 2 * DRIFT_BOUND_PPM as u64) as i64 - DRIFT_BOUND_PPM;
            self.add(0, self.fault_ms, Fault::ClockSkew { node, skew_ms, drift_ppm });
        }
        // Clients give up on an unresponsive node sooner, so that they reach the new
        // leader while the cut-off one may still believe in its lease.
        self.client_attempt_ms = 250;
        // More readers, every get a lease read.
        self.clients = 4;
        self.lease_get_percent = 100;
        for at in [1_000, 3_500] {
            let drift_ppm = -850_000 + rng.below(20_000) as i64;
            self.add(at, at + 2_400, Fault::LeaderClockDrift { drift_ppm });
            self.add(at + 1_000, at + 2_400, Fault::PartitionSlowLeader);
        }
    }

    /// Random faults, their number and weights scaled by the seed's intensity.
    fn swarm(&mut self, rng: &mut Rng) {
        let count = 1 + (self.intensity * 9.0) as u64 + rng.below(2);
        // Per-seed weights, so some seeds are all partitions and others all crashes.
        let weights: Vec<u64> = (0..11).map(|_| rng.below(4)).collect();
        let total: u64 = weights.iter().sum::<u64>().max(1);
        let mut crashed_until = vec![0u64; self.nodes];
        for _ in 0..count {
            let start = rng.below(self.fault_ms - 500);
            let len = rng.between(300, 2_500);
            let mut pick = rng.below(total);
            let mut kind = 0;
            for (i, w) in weights.iter().enumerate() {
                if pick < *w {
                    kind = i;
                    break;
                }
                pick -= w;
            }
            let node = rng.below(self.nodes as u64) as usize;
            let fault = match kind {
                0 => {
                    let mut order: Vec<usize> = (0..self.nodes).collect();
                    for i in (1..order.len()).rev() {
                        order.swap(i, rng.below(i as u64 + 1) as usize);
                    }
                    let cut = rng.between(1, self.nodes as u64 - 1) as usize;
                    let (a, b) = order.split_at(cut);
                    Fault::Partition { a: a.to_vec(), b: b.to_vec(), bridge: None }
                }
                1 => {
                    let mut others: Vec<usize> = (0..self.nodes).filter(|n| *n != node).collect();
                    let b = others.split_off(others.len() / 2);
                    Fault::Partition { a: others, b, bridge: Some(node) }
                }
                2 => Fault::IsolateLeader,
                3 => {
                    let to = (node + 1 + rng.below(self.nodes as u64 - 1) as usize) % self.nodes;
                    Fault::OneWay { from: node, to }
                }
                4 => Fault::Loss { rate: 0.05 + rng.unit() * 0.3 },
                5 => Fault::Delay { max_ms: rng.between(20, 200) },
                6 => Fault::Duplicate { probability: 0.05 + rng.unit() * 0.4 },
                7 | 8 => {
                    if crashed_until[node] > start {
                        continue;
                    }
                    crashed_until[node] = start + len;
                    Fault::Kill { node, crash: kind == 7 || rng.chance(0.5) }
                }
                9 if rng.chance(0.5) => Fault::Pause { node },
                9 => Fault::PauseLeader,
                _ => Fault::DiskEio { node, probability: 0.01 + rng.unit() * 0.1 },
            };
            self.add(start, start + len, fault);
        }
    }

    /// The readable schedule.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "plan: scenario {} nodes {} clients {} snapshot_entries {} history {} leaders {:?} \
             intensity {:.2} fault phase {} ms fsync up to {} us (stalls {} us) write bursts \
             {} in {}% of ops\n",
            self.scenario.name(),
            self.nodes,
            self.clients,
            self.snapshot_entries,
            if self.history_revisions == u64::MAX {
                "all".to_string()
            } else {
                self.history_revisions.to_string()
            },
            self.leader_placement,
            self.intensity,
            self.fault_ms,
            self.fsync_us.0,
            self.fsync_us.1,
            self.burst_writes,
            if self.burst_writes > 0 { self.burst_percent } else { 0 }
        );
        if self.max_append_bytes != PRODUCTION_APPEND_BYTES {
            out.push_str(&format!("  appends cut at {} bytes\n", self.max_append_bytes));
        }
        if self.steps.is_empty() {
            out.push_str("  (no faults)\n");
        }
        for step in &self.steps {
            out.push_str(&format!(
                "  {:>6} ms .. {:>6} ms  {}\n",
                step.start_ms, step.end_ms, step.fault
            ));
        }
        out
    }
}
