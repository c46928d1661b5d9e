//! Randomized safety sweep: one seed picks the order of ticks, deliveries, drops,
//! duplicates, partitions, proposals, reads, compactions and restarts. Checked after
//! every step: one leader per term, every applied index holds the same entry on every
//! node, and no read is answered below an index already applied somewhere when it
//! was asked (no stale reads). Determinism: the same seed gives the same trace.

use std::collections::BTreeMap;

use super::rng::Rng;
use super::test_network::*;
use super::*;

struct Sweep {
    net: Network,
    rng: Rng,
    leaders: BTreeMap<Term, NodeId>,
    applied: BTreeMap<Index, (Term, Vec<u8>)>,
    /// Read context -> the highest index applied anywhere when it was asked.
    reads_required: BTreeMap<u64, Index>,
    next_context: u64,
    reads_served: usize,
    trace: Vec<String>,
    /// Groups quiesce; a random driver wakes them (as node liveness would).
    quiesce: bool,
}

impl Sweep {
    fn new(seed: u64, lease_read: bool, quiesce: bool) -> Sweep {
        let net = Network::new(3, |c| {
            c.seed ^= seed.wrapping_mul(0x9E37_79B9);
            c.lease_read = lease_read;
            c.quiesce = quiesce;
            c.max_inflight_msgs = 4;
            c.max_size_per_msg = 64;
            c.snapshot_chunk_size = 8;
        });
        let (leaders, applied, reads_required) = Default::default();
        let trace = Vec::new();
        Sweep {
            net,
            rng: Rng::new(seed),
            leaders,
            applied,
            reads_required,
            next_context: 1,
            reads_served: 0,
            trace,
            quiesce,
        }
    }

    fn pick_node(&mut self) -> u64 {
        self.rng.range(1, 4)
    }

    fn step(&mut self) {
        match self.rng.range(0, 100) {
            0..=44 => self.deliver_random(),
            45..=49 => {
                for group in self.net.nodes.values_mut() {
                    group.tick();
                }
            }
            50..=64 => {
                let leader = self.net.leaders().first().map(|l| l.0);
                let n = leader.filter(|_| self.rng.range(0, 4) > 0).unwrap_or(self.pick_node());
                let data = vec![self.rng.range(0, 256) as u8; 3];
                let _ = self.net.node(n).propose(TEST_FORMAT, data);
            }
            65..=74 => self.read(),
            75..=76 => self.partition(),
            77..=79 if self.quiesce => self.wake_random(),
            80..=82 => self.compact(),
            83 if self.rng.range(0, 4) == 0 => self.restart(),
            _ => self.deliver_random(),
        }
        self.net.process_all();
        self.check();
    }

    fn deliver_random(&mut self) {
        if self.net.queue.is_empty() {
            return;
        }
        let at = self.rng.range(0, self.net.queue.len() as u64) as usize;
        let msg = self.net.queue.remove(at).expect("index in range");
        match self.rng.range(0, 20) {
            0 => {}
            1 => {
                self.net.queue.push_back(msg.clone());
                self.net.deliver(msg);
            }
            _ => self.net.deliver(msg),
        }
    }

    fn read(&mut self) {
        let n = self.pick_node();
        let context = self.next_context;
        self.next_context += 1;
        let required = self.applied.keys().next_back().copied().unwrap_or(0);
        let mode = if self.rng.range(0, 2) == 0 { ReadMode::Lease } else { ReadMode::ReadIndex };
        if self.net.node(n).read_index(context, mode).is_ok() {
            self.reads_required.insert(context, required);
        }
    }

    fn partition(&mut self) {
        self.net.heal();
        if self.rng.range(0, 2) == 0 {
            let n = self.pick_node();
            self.net.isolate(n);
        }
    }

    /// What node liveness does: wakes a leader, or tells a follower its leader's node
    /// has been silent for a while (safety may not depend on when this happens).
    fn wake_random(&mut self) {
        let n = self.pick_node();
        let silent = self.rng.range(0, 25) as u32;
        let group = self.net.node(n);
        group.wake();
        group.wake_leader_silent(silent);
    }

    fn compact(&mut self) {
        let n = self.pick_node();
        let group = self.net.node(n);
        let applied = group.status().applied;
        let store = group.store();
        if applied < store.first_index() {
            return;
        }
        let term = store.term(applied).expect("applied entries are in the log");
        let meta = SnapshotMeta { index: applied, term, conf_state: store.conf_state() };
        let data = format!("image@{applied}").into_bytes();
        group.compact(Snapshot { meta, data }).unwrap();
    }

    fn restart(&mut self) {
        let n = self.pick_node();
        let store = self.net.node(n).store().clone();
        let entries = store.entries(store.first_index(), store.last_index() + 1, u64::MAX);
        let entries = entries.expect("whole stored log");
        let recovered = MemStorage::recover(store.snapshot(), store.hard_state(), entries);
        let mut config = config(n);
        config.max_inflight_msgs = 4;
        config.max_size_per_msg = 64;
        config.snapshot_chunk_size = 8;
        config.quiesce = self.quiesce;
        config.seed = self.rng.next_u64();
        let group = RaftGroup::new(config, recovered.unwrap()).unwrap();
        self.net.nodes.insert(id(n), group);
        self.net.applied.remove(&id(n));
    }

    fn check(&mut self) {
        for (&n, group) in &self.net.nodes {
            let status = group.status();
            self.trace.push(format!("{n}:{:?}:{}:{}", status.role, status.term, status.commit));
            if status.role == Role::Leader {
                let first = *self.leaders.entry(status.term).or_insert(n);
                assert_eq!(first, n, "two leaders in term {}", status.term);
            }
        }
        for (&n, entries) in &mut self.net.applied {
            for entry in entries.drain(..) {
                let seen =
                    self.applied.entry(entry.index).or_insert((entry.term, entry.data.to_vec()));
                assert_eq!(
                    *seen,
                    (entry.term, entry.data.to_vec()),
                    "{n} applied a different entry at {}",
                    entry.index
                );
            }
        }
        for (&n, states) in &mut self.net.read_states {
            for state in states.drain(..) {
                let required = self.reads_required[&state.context];
                assert!(
                    state.index >= required,
                    "{n}: stale read {state:?}, {required} was applied"
                );
                self.reads_served += 1;
            }
        }
    }
}

fn run(seed: u64, lease_read: bool, steps: usize) -> Sweep {
    run_with(seed, lease_read, false, steps)
}

fn run_with(seed: u64, lease_read: bool, quiesce: bool, steps: usize) -> Sweep {
    let mut sweep = Sweep::new(seed, lease_read, quiesce);
    for _ in 0..steps {
        sweep.step();
    }
    sweep.converge(seed);
    sweep
}

impl Sweep {
    /// Liveness with faults off: the group elects a leader, commits, and converges.
    fn converge(&mut self, seed: u64) {
        self.net.heal();
        if self.quiesce {
            // The links healed: liveness wakes every quiesced group once.
            for group in self.net.nodes.values_mut() {
                group.wake();
                group.wake_leader_silent(0);
            }
        }
        self.net.tick_all(60);
        self.check();
        let leaders = self.net.leaders();
        assert_eq!(leaders.len(), 1, "seed {seed}: leaders {leaders:?}");
        let index = self.net.propose(leaders[0].0, b"final");
        self.net.tick_all(3);
        self.check();
        for (&n, group) in &self.net.nodes {
            let status = group.status();
            assert_eq!(status.commit, index, "seed {seed}: {n} did not converge: {status:?}");
            assert_eq!(status.applied, index, "seed {seed}: {n} did not apply");
        }
    }
}

#[test]
fn randomized_sweep_keeps_safety() {
    for seed in 0..40 {
        let lease_read = seed % 2 == 1;
        let sweep = run(seed, lease_read, 1500);
        assert!(!sweep.leaders.is_empty(), "seed {seed}: no leader was ever elected");
        let restored: usize = sweep.net.restored.values().map(Vec::len).sum();
        eprintln!(
            "seed {seed}: terms {} applied {} reads {}/{} snapshots {restored}",
            sweep.leaders.len(),
            sweep.applied.len(),
            sweep.reads_served,
            sweep.reads_required.len()
        );
    }
}

#[test]
fn randomized_sweep_with_quiescence_keeps_safety() {
    for seed in 0..40 {
        let lease_read = seed % 2 == 1;
        let sweep = run_with(seed, lease_read, true, 1500);
        assert!(!sweep.leaders.is_empty(), "seed {seed}: no leader was ever elected");
    }
}

#[test]
fn same_seed_same_trace() {
    let a = run(7, false, 600);
    let b = run(7, false, 600);
    assert_eq!(a.trace, b.trace);
    assert!(!a.applied.is_empty(), "the sweep made progress");
}
