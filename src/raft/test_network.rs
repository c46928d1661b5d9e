//! A tiny in-memory network of `RaftGroup`s for tests: messages are queued and
//! delivered one by one, every Ready is "persisted" at once (advance), and links can
//! be cut. Persisted messages leave only after their Ready was advanced.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::*;

/// The format of the tests' proposals (the core does not read it).
pub const TEST_FORMAT: EntryFormat = EntryFormat { kind: EntryFormat::KIND_COMMAND, version: 1 };

/// Decides whether to drop a message.
pub type DropRule = Box<dyn Fn(&Message) -> bool>;

pub struct Network {
    pub nodes: BTreeMap<NodeId, RaftGroup>,
    pub queue: VecDeque<Message>,
    /// Directed links that drop messages.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Every message delivered, in order.
    pub delivered: Vec<Message>,
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    /// Snapshots each node restored from Ready.snapshot.
    pub restored: BTreeMap<NodeId, Vec<Snapshot>>,
    /// Drops any message it returns true for.
    pub drop_if: Option<DropRule>,
}

pub fn id(n: u64) -> NodeId {
    NodeId(n)
}

pub fn config(n: u64) -> Config {
    let mut config = Config::new(id(n), 1000 + n);
    config.election_tick = 10;
    config.heartbeat_tick = 1;
    config
}

impl Network {
    /// `count` fresh voters, each configured by `configure`.
    pub fn new(count: u64, configure: impl Fn(&mut Config)) -> Network {
        let voters: Vec<NodeId> = (1..=count).map(id).collect();
        let conf_state = ConfState { voters, learners: vec![] };
        let mut nodes = BTreeMap::new();
        for n in 1..=count {
            let mut config = config(n);
            configure(&mut config);
            let group = RaftGroup::new(config, MemStorage::new(conf_state.clone())).unwrap();
            nodes.insert(id(n), group);
        }
        Network::from_nodes(nodes)
    }

    pub fn from_nodes(nodes: BTreeMap<NodeId, RaftGroup>) -> Network {
        Network {
            nodes,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            delivered: Vec::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            restored: BTreeMap::new(),
            drop_if: None,
        }
    }

    pub fn node(&mut self, n: u64) -> &mut RaftGroup {
        self.nodes.get_mut(&id(n)).unwrap()
    }

    /// Handles every pending Ready of node `n` the way a driver does.
    pub fn process(&mut self, n: NodeId) {
        let group = self.nodes.get_mut(&n).unwrap();
        while group.has_ready() {
            let ready = group.ready();
            self.queue.extend(ready.messages.iter().cloned());
            if let Some(snapshot) = &ready.snapshot {
                self.restored.entry(n).or_default().push(snapshot.clone());
                self.applied.entry(n).or_default().clear();
            }
            self.queue.extend(ready.persisted_messages.iter().cloned());
            self.applied.entry(n).or_default().extend(ready.committed_entries.iter().cloned());
            self.read_states.entry(n).or_default().extend(ready.read_states.iter().copied());
            group.advance(ready);
        }
    }

    pub fn process_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for n in ids {
            self.process(n);
        }
    }

    /// Delivers queued messages (and the ones they cause) until the network is quiet.
    pub fn deliver_all(&mut self) {
        self.process_all();
        let mut budget = 100_000;
        while let Some(msg) = self.queue.pop_front() {
            budget -= 1;
            assert!(budget > 0, "network did not quiesce");
            self.deliver(msg);
        }
    }

    /// Delivers one message unless its link is cut; processes the receiver.
    pub fn deliver(&mut self, msg: Message) {
        if self.cut.contains(&(msg.from, msg.to)) || !self.nodes.contains_key(&msg.to) {
            return;
        }
        if self.drop_if.as_ref().is_some_and(|drop| drop(&msg)) {
            return;
        }
        let to = msg.to;
        self.delivered.push(msg.clone());
        self.nodes.get_mut(&to).unwrap().step(msg).unwrap();
        self.process(to);
    }

    /// Ticks every node once, then delivers everything.
    pub fn tick_all(&mut self, times: u32) {
        for _ in 0..times {
            for group in self.nodes.values_mut() {
                group.tick();
            }
            self.deliver_all();
        }
    }

    pub fn isolate(&mut self, n: u64) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for other in ids {
            if other != id(n) {
                self.cut.insert((id(n), other));
                self.cut.insert((other, id(n)));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn campaign(&mut self, n: u64) {
        self.node(n).campaign();
        self.deliver_all();
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, g)| g.role() == Role::Leader).map(|(&n, _)| n).collect()
    }

    pub fn propose(&mut self, n: u64, data: &[u8]) -> Index {
        let index = self.node(n).propose(TEST_FORMAT, data.to_vec()).unwrap();
        self.deliver_all();
        index
    }

    /// Applied payloads of node `n`, no-ops and membership changes skipped.
    pub fn applied_data(&self, n: u64) -> Vec<Vec<u8>> {
        let entries = self.applied.get(&id(n)).cloned().unwrap_or_default();
        entries.into_iter().filter(|e| e.format == TEST_FORMAT).map(|e| e.data.to_vec()).collect()
    }
}
