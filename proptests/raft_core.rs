//! The sans-IO Raft core under a random scheduler, in-process: messages are
//! delivered in any order, dropped, duplicated or held back; nodes tick, propose,
//! compact their logs, get partitioned, and crash and restart from their persisted
//! state, some in the middle of a Ready (its messages sent, nothing persisted).
//! Three voters and two learners at first; the leader is asked for random membership
//! changes (any voters and learners among the five, through joint configurations).
//! Checked after every step:
//! - at most one leader per term, and a node becomes leader only as a voter of the
//!   configuration in its log;
//! - configurations are installed in log order (a node's configuration is the one of
//!   the latest conf-change entry in its log);
//! - every node applies the same entry at each index (snapshots included);
//! - a committed entry never changes (durable log at or below the durable commit);
//! - commit and applied never decrease within a node's life, nor the durable commit
//!   across restarts.
//!
//! Then, with faults off, the group elects one leader and commits on every node,
//! within a bounded number of deliveries (a core that never goes quiet fails).

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::vec;
use proptest::prelude::*;

use rangedb::raft::{
    membership, ConfChange, ConfState, Config, EntryFormat, Index, MemStorage, Message, NodeId,
    RaftGroup, Role, Snapshot, SnapshotMeta, Storage, Term,
};

/// Nodes 1..=VOTERS vote; the others are learners (replicated to, never counted).
const NODES: u64 = 5;
const VOTERS: u64 = 3;
/// The format of the test's proposals (Raft does not read it).
const COMMAND: EntryFormat = EntryFormat { kind: EntryFormat::KIND_COMMAND, version: 1 };

/// Messages `converge` may deliver in all before the group counts as not converging
/// (healthy cases needed at most 899 in 1,000 cases, median 323; see `converge`).
const CONVERGE_DELIVERIES: u64 = 20_000;
/// Readys one `process` may handle in a row: a core whose Ready never runs dry
/// fails instead of looping.
const READY_BUDGET: u64 = 1_000;

#[derive(Clone, Debug)]
enum Step {
    Deliver(usize),
    Duplicate(usize),
    Drop(usize),
    Tick(u64),
    TickAll,
    Propose(u64, u8),
    Compact(u64),
    Crash {
        node: u64,
        mid_ready: bool,
    },
    Partition(Option<u64>),
    /// Bits 0-4: the voters wanted (nodes 1-5), bits 5-9 the learners.
    ChangeMembership(u16),
}

fn step() -> impl Strategy<Value = Step> {
    let node = 1..=NODES;
    prop_oneof![
        30 => any::<usize>().prop_map(Step::Deliver),
        2 => any::<usize>().prop_map(Step::Duplicate),
        4 => any::<usize>().prop_map(Step::Drop),
        6 => node.clone().prop_map(Step::Tick),
        8 => Just(Step::TickAll),
        10 => (node.clone(), any::<u8>()).prop_map(|(n, byte)| Step::Propose(n, byte)),
        2 => node.clone().prop_map(Step::Compact),
        1 => (node.clone(), any::<bool>()).prop_map(|(node, mid_ready)| Step::Crash { node, mid_ready }),
        1 => proptest::option::of(node).prop_map(Step::Partition),
        1 => any::<u16>().prop_map(Step::ChangeMembership),
    ]
}

/// The applied state machine: every entry applied, as (index, term, data).
type Applied = Vec<(Index, Term, Vec<u8>)>;

fn encode(applied: &Applied) -> Vec<u8> {
    bincode::serde::encode_to_vec(applied, bincode::config::standard()).expect("encodes")
}

fn decode(data: &[u8]) -> Applied {
    if data.is_empty() {
        return Vec::new();
    }
    bincode::serde::decode_from_slice(data, bincode::config::standard()).expect("decodes").0
}

struct Node {
    group: RaftGroup,
    applied: Applied,
    /// This life's highest commit and applied index seen.
    commit: Index,
    applied_index: Index,
}

struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    queue: Vec<Message>,
    isolated: Option<NodeId>,
    leaders: BTreeMap<Term, NodeId>,
    /// index -> (term, data) of every entry applied anywhere.
    applied: BTreeMap<Index, (Term, Vec<u8>)>,
    /// index -> term of every entry seen durable at or below a durable commit.
    committed: BTreeMap<Index, Term>,
    durable_commit: BTreeMap<NodeId, Index>,
    restarts: u64,
    /// Membership changes the leader accepted.
    changes: u64,
}

fn config(n: u64, seed: u64) -> Config {
    let mut config = Config::new(NodeId(n), seed);
    config.election_tick = 5;
    config.heartbeat_tick = 1;
    config.max_inflight_msgs = 3;
    config.max_size_per_msg = 64;
    config.snapshot_chunk_size = 16;
    config
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

impl Cluster {
    fn new(seed: u64) -> Cluster {
        let voters: Vec<NodeId> = (1..=VOTERS).map(NodeId).collect();
        let learners: Vec<NodeId> = (VOTERS + 1..=NODES).map(NodeId).collect();
        let conf_state = ConfState { voters, learners };
        let nodes = (1..=NODES)
            .map(|n| {
                let storage = MemStorage::new(conf_state.clone());
                let group = RaftGroup::new(config(n, seed ^ n), storage).expect("valid config");
                (NodeId(n), Node { group, applied: Vec::new(), commit: 0, applied_index: 0 })
            })
            .collect();
        Cluster {
            nodes,
            queue: Vec::new(),
            isolated: None,
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            committed: BTreeMap::new(),
            durable_commit: BTreeMap::new(),
            restarts: 0,
            changes: 0,
        }
    }

    /// Records an applied entry, failing if another node applied another one there.
    fn note_applied(
        &mut self,
        n: NodeId,
        index: Index,
        term: Term,
        data: &[u8],
    ) -> Result<(), TestCaseError> {
        let seen = self.applied.entry(index).or_insert((term, data.to_vec()));
        if *seen != (term, data.to_vec()) {
            return Err(fail(format!(
                "{n} applied ({term}, {data:?}) at {index}, another applied {seen:?}"
            )));
        }
        Ok(())
    }

    /// Handles every Ready of `n` like the node's driver (persisting is `advance`).
    fn process(&mut self, n: NodeId) -> Result<(), TestCaseError> {
        for _ in 0..READY_BUDGET {
            let node = self.nodes.get_mut(&n).expect("node exists");
            if !node.group.has_ready() {
                return Ok(());
            }
            let ready = node.group.ready();
            self.queue.extend(ready.messages.iter().cloned());
            if let Some(snapshot) = &ready.snapshot {
                let image = decode(&snapshot.data);
                for (index, term, data) in &image {
                    self.note_applied(n, *index, *term, data)?;
                }
                let node = self.nodes.get_mut(&n).expect("node exists");
                node.applied = image;
            }
            self.queue.extend(ready.persisted_messages.iter().cloned());
            for entry in &ready.committed_entries {
                let node = self.nodes.get_mut(&n).expect("node exists");
                let expected = node.applied.last().map_or(1, |(index, _, _)| index + 1);
                if entry.index != expected {
                    return Err(fail(format!(
                        "{n} applied {} after {}",
                        entry.index,
                        expected - 1
                    )));
                }
                node.applied.push((entry.index, entry.term, entry.data.to_vec()));
                self.note_applied(n, entry.index, entry.term, &entry.data)?;
            }
            self.nodes.get_mut(&n).expect("node exists").group.advance(ready);
        }
        Err(fail(format!(
            "{n} still has a Ready after {READY_BUDGET} in a row\n{}",
            self.describe()
        )))
    }

    /// The group's state for a failure message: each node's role, term, commit,
    /// applied index and log, and the queued messages.
    fn describe(&self) -> String {
        let mut out = String::new();
        for (n, node) in &self.nodes {
            let s = node.group.status();
            out.push_str(&format!(
                "  {n}: {:?} term {} leader {:?} commit {} applied {} log {}..={} {}\n",
                s.role,
                s.term,
                s.leader,
                s.commit,
                s.applied,
                s.first_index,
                s.last_index,
                node.group.membership()
            ));
        }
        out.push_str(&format!(
            "  isolated {:?}; {} messages queued",
            self.isolated,
            self.queue.len()
        ));
        for msg in self.queue.iter().take(12) {
            let mut body = format!("{:?}", msg.body);
            if body.len() > 100 {
                body.truncate(100);
                body.push_str("...");
            }
            out.push_str(&format!("\n    {} -> {} term {}: {body}", msg.from, msg.to, msg.term));
        }
        out
    }

    /// Delivers the queue until it is empty, within `budget` deliveries in all.
    fn drain(&mut self, budget: &mut u64, phase: &str) -> Result<(), TestCaseError> {
        while !self.queue.is_empty() {
            if *budget == 0 {
                return Err(fail(format!(
                    "no convergence ({phase}): {CONVERGE_DELIVERIES} messages delivered after \
                     healing and the group still sends more\n{}",
                    self.describe()
                )));
            }
            *budget -= 1;
            self.run(Step::Deliver(0), 0)?;
        }
        Ok(())
    }

    fn cut(&self, msg: &Message) -> bool {
        self.isolated.is_some_and(|n| msg.from == n || msg.to == n)
    }

    fn deliver(&mut self, msg: Message) -> Result<(), TestCaseError> {
        if self.cut(&msg) {
            return Ok(());
        }
        let to = msg.to;
        self.nodes.get_mut(&to).expect("node exists").group.step(msg).expect("step");
        self.process(to)
    }

    fn crash(&mut self, n: NodeId, mid_ready: bool, seed: u64) {
        let node = self.nodes.get_mut(&n).expect("node exists");
        if mid_ready && node.group.has_ready() {
            // The driver sent the Ready's immediate messages, then died persisting.
            let ready = node.group.ready();
            self.queue.extend(ready.messages);
        }
        let store = node.group.store().clone();
        let entries = store.entries(store.first_index(), store.last_index() + 1, u64::MAX);
        let recovered =
            MemStorage::recover(store.snapshot(), store.hard_state(), entries.expect("log"));
        let group =
            RaftGroup::new(config(n.0, seed), recovered.expect("contiguous")).expect("config");
        let applied = decode(&store.snapshot_ref().data);
        *node = Node { group, applied, commit: 0, applied_index: 0 };
        self.restarts += 1;
    }

    fn compact(&mut self, n: NodeId) {
        let node = self.nodes.get_mut(&n).expect("node exists");
        let applied = node.group.status().applied;
        let store = node.group.store();
        if applied < store.first_index() || applied > store.last_index() {
            return;
        }
        let term = store.term(applied).expect("applied entries are in the log");
        let Some(conf_state) = node.group.conf_state_at(applied) else {
            return; // Joint: never snapshotted.
        };
        let meta = SnapshotMeta { index: applied, term, conf_state };
        let data = encode(&node.applied);
        node.group.compact(Snapshot { meta, data }).expect("compact at applied");
    }

    fn run(&mut self, step: Step, seed: u64) -> Result<(), TestCaseError> {
        let pick = |queue: &Vec<Message>, k: usize| (!queue.is_empty()).then(|| k % queue.len());
        match step {
            Step::Deliver(k) => {
                if let Some(at) = pick(&self.queue, k) {
                    let msg = self.queue.remove(at);
                    self.deliver(msg)?;
                }
            }
            Step::Duplicate(k) => {
                if let Some(at) = pick(&self.queue, k) {
                    let msg = self.queue[at].clone();
                    self.deliver(msg)?;
                }
            }
            Step::Drop(k) => {
                if let Some(at) = pick(&self.queue, k) {
                    self.queue.remove(at);
                }
            }
            Step::Tick(n) => self.nodes.get_mut(&NodeId(n)).expect("node").group.tick(),
            Step::TickAll => self.nodes.values_mut().for_each(|node| node.group.tick()),
            Step::Propose(n, byte) => {
                // Mostly to the leader, sometimes to whoever (refused by a follower).
                let leader = self.nodes.iter().find(|(_, node)| node.group.role() == Role::Leader);
                let n = leader.filter(|_| byte % 4 != 0).map_or(n, |(id, _)| id.0);
                let group = &mut self.nodes.get_mut(&NodeId(n)).expect("node").group;
                let _ = group.propose(COMMAND, vec![byte, n as u8]);
            }
            Step::Compact(n) => self.compact(NodeId(n)),
            Step::Crash { node, mid_ready } => self.crash(NodeId(node), mid_ready, seed),
            Step::Partition(n) => self.isolated = n.map(NodeId),
            Step::ChangeMembership(bits) => {
                let pick = |shift: u16| -> BTreeSet<NodeId> {
                    (1..=NODES)
                        .filter(|n| bits >> (shift + *n as u16 - 1) & 1 == 1)
                        .map(NodeId)
                        .collect()
                };
                let voters = pick(0);
                let learners = pick(5).difference(&voters).copied().collect();
                let leader = self.nodes.values_mut().find(|node| node.group.role() == Role::Leader);
                if let Some(node) = leader {
                    let change = ConfChange { voters, learners, context: Vec::new() };
                    if node.group.propose_conf_change(change).is_ok() {
                        self.changes += 1;
                    }
                }
            }
        }
        // Keep the queue bounded: the oldest messages are the likeliest to be stale.
        if self.queue.len() > 300 {
            self.queue.drain(..100);
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for n in ids {
            self.process(n)?;
        }
        self.check()
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        for (&n, node) in &mut self.nodes {
            let status = node.group.status();
            if status.role == Role::Leader {
                if !self.leaders.contains_key(&status.term) {
                    // Left out of its latest configuration, a replica may lead only
                    // while that configuration is not committed (thesis 4.2.2): it
                    // may hold the log the remaining voters need.
                    let voter = node.group.membership().is_voter(n);
                    let pending = node.group.membership_index() > status.commit;
                    prop_assert!(
                        voter || pending,
                        "{} became leader in term {} as no voter of {} (committed at {})",
                        n,
                        status.term,
                        node.group.membership(),
                        node.group.membership_index()
                    );
                }
                let first = *self.leaders.entry(status.term).or_insert(n);
                prop_assert_eq!(first, n, "two leaders in term {}", status.term);
            }
            prop_assert!(status.commit >= node.commit, "{} commit went back", n);
            prop_assert!(status.applied >= node.applied_index, "{} applied went back", n);
            node.commit = status.commit;
            node.applied_index = status.applied;
            let store = node.group.store();
            let durable = store.hard_state().commit;
            let before = self.durable_commit.insert(n, durable).unwrap_or(0);
            prop_assert!(durable >= before, "{} durable commit {} -> {}", n, before, durable);
            if !node.group.has_ready() {
                // Everything is durable: the configuration is the log's latest.
                let entries = store
                    .entries(store.first_index(), store.last_index() + 1, u64::MAX)
                    .expect("stored");
                let latest = entries.iter().rev().find_map(membership::decode_conf_change);
                let expected = latest.map_or_else(
                    || membership::Membership::from_conf_state(&store.conf_state()),
                    |(m, _)| m,
                );
                prop_assert_eq!(
                    node.group.membership(),
                    &expected,
                    "{} uses another configuration than its log's latest",
                    n
                );
            }
            let high = durable.min(store.last_index());
            let low = store.first_index();
            if low <= high {
                for entry in store.entries(low, high + 1, u64::MAX).expect("stored") {
                    let seen = *self.committed.entry(entry.index).or_insert(entry.term);
                    prop_assert_eq!(
                        seen,
                        entry.term,
                        "{} committed entry {} changed",
                        n,
                        entry.index
                    );
                }
            }
        }
        Ok(())
    }

    /// Faults off: heal, tick and deliver until quiet; one leader commits everywhere.
    ///
    /// Bounded: a broken core can answer every message with another one forever (a
    /// follower that never acknowledges, a leader that resends on every refusal), so
    /// the deliveries are counted and a group still talking after
    /// `CONVERGE_DELIVERIES` fails the case with its state, which proptest then
    /// shrinks, instead of hanging the suite.
    fn converge(&mut self) -> Result<(), TestCaseError> {
        self.isolated = None;
        let mut budget = CONVERGE_DELIVERIES;
        for _ in 0..60 {
            self.run(Step::TickAll, 0)?;
            self.drain(&mut budget, "electing")?;
        }
        let leaders: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.group.role() == Role::Leader)
            .map(|(&n, _)| n)
            .collect();
        prop_assert_eq!(
            leaders.len(),
            1,
            "leaders after healing: {:?}\n{}",
            leaders,
            self.describe()
        );
        let leader = leaders[0];
        let index =
            self.nodes.get_mut(&leader).unwrap().group.propose(COMMAND, b"final".to_vec()).unwrap();
        for _ in 0..5 {
            self.drain(&mut budget, "replicating the final entry")?;
            self.run(Step::TickAll, 0)?;
        }
        if std::env::var_os("RAFT_CORE_STATS").is_some() {
            eprintln!("converge: {} deliveries", CONVERGE_DELIVERIES - budget);
        }
        let members = self.nodes[&leader].group.membership().members();
        let lagging: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|(n, _)| members.contains(n))
            .filter(|(_, node)| node.group.status().applied < index)
            .map(|(&n, _)| n)
            .collect();
        prop_assert!(
            lagging.is_empty(),
            "{:?} did not apply {}\n{}",
            lagging,
            index,
            self.describe()
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(crate::config("raft_core", 200))]

    #[test]
    fn raft_core_keeps_safety_under_a_random_scheduler(
        seed in any::<u64>(),
        steps in vec(step(), 0..800),
    ) {
        let mut cluster = Cluster::new(seed);
        for (k, step) in steps.into_iter().enumerate() {
            cluster.run(step, seed.wrapping_add(k as u64))?;
        }
        cluster.converge()?;
        if std::env::var_os("RAFT_CORE_STATS").is_some() {
            eprintln!(
                "terms with a leader {}, applied {}, restarts {}, membership changes {}",
                cluster.leaders.len(),
                cluster.applied.len(),
                cluster.restarts,
                cluster.changes
            );
        }
    }
}
