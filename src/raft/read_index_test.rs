//! Linearizable reads: ReadIndex on the leader and via followers, leases, and the
//! partitioned stale leader that must not answer.

use super::test_network::*;
use super::*;

/// Ticks of stable leadership after which the leader has a full tick-rate window
/// for every follower (tick_rate.rs).
const WARM_TICKS: u32 = 110;

fn reads(net: &Network, n: u64) -> Vec<ReadState> {
    net.read_states.get(&id(n)).cloned().unwrap_or_default()
}

#[test]
fn leader_read_needs_a_heartbeat_round() {
    let mut net = Network::new(3, |_| {});
    net.campaign(1);
    net.propose(1, b"a");
    net.node(1).read_index(7, ReadMode::ReadIndex).unwrap();
    net.process(id(1));
    assert!(reads(&net, 1).is_empty(), "not before a quorum confirms leadership");
    let round = net
        .queue
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { context, .. } if context > 0))
        .count();
    assert_eq!(round, 2, "one heartbeat round to both followers");
    net.deliver_all();
    assert_eq!(reads(&net, 1), vec![ReadState { context: 7, index: 2 }]);
}

#[test]
fn reads_in_one_round_are_batched() {
    let mut net = Network::new(3, |_| {});
    net.campaign(1);
    for context in 1..=3 {
        net.node(1).read_index(context, ReadMode::ReadIndex).unwrap();
    }
    net.process(id(1));
    assert_eq!(net.queue.len(), 2, "three reads share one heartbeat round");
    net.deliver_all();
    assert_eq!(reads(&net, 1).len(), 3);
}

#[test]
fn follower_read_is_forwarded_to_the_leader() {
    let mut net = Network::new(3, |_| {});
    net.campaign(1);
    net.propose(1, b"a");
    net.node(2).read_index(8, ReadMode::ReadIndex).unwrap();
    net.deliver_all();
    assert_eq!(reads(&net, 2), vec![ReadState { context: 8, index: 2 }]);
    let mut lonely = Network::new(3, |_| {});
    assert_eq!(
        lonely.node(2).read_index(1, ReadMode::ReadIndex),
        Err(RaftError::NotLeader { leader_hint: None })
    );
}

#[test]
fn read_waits_for_the_first_commit_of_the_term() {
    let mut net = Network::new(3, |_| {});
    net.drop_if =
        Some(Box::new(|m: &Message| matches!(m.body, MessageBody::AppendResponse { .. })));
    net.campaign(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    net.node(1).read_index(4, ReadMode::ReadIndex).unwrap();
    net.tick_all(1);
    assert!(reads(&net, 1).is_empty(), "the no-op of this term is not committed");
    net.drop_if = None;
    net.tick_all(2);
    assert_eq!(reads(&net, 1), vec![ReadState { context: 4, index: 1 }]);
}

#[test]
fn stale_leader_serves_no_reads_new_leader_does() {
    for lease_read in [false, true] {
        let mut net = Network::new(3, |c| c.lease_read = lease_read);
        net.campaign(1);
        net.tick_all(WARM_TICKS);
        net.isolate(1);
        net.tick_all(8); // The lease (election_tick - drift = 8 ticks) ran out.
        assert_eq!(net.node(1).role(), Role::Leader, "still believes it leads");
        net.node(1).read_index(1, ReadMode::Lease).unwrap();
        net.tick_all(40);
        assert!(reads(&net, 1).is_empty(), "lease_read={lease_read}: stale leader answered");
        assert_ne!(net.node(1).role(), Role::Leader);
        let leader = net.leaders()[0];
        net.node(leader.0).read_index(2, ReadMode::ReadIndex).unwrap();
        net.tick_all(1);
        assert_eq!(reads(&net, leader.0).len(), 1, "lease_read={lease_read}");
    }
}

#[test]
fn lease_read_is_answered_at_once_within_the_lease() {
    let mut net = Network::new(3, |c| c.lease_read = true);
    net.campaign(1);
    net.propose(1, b"a");
    assert_eq!(net.node(1).read_index(1, ReadMode::Lease), Ok(()));
    net.process(id(1));
    assert!(reads(&net, 1).is_empty(), "no acknowledged heartbeat yet: no lease");
    net.deliver_all();
    net.tick_all(WARM_TICKS);
    net.read_states.clear();
    net.node(1).read_index(2, ReadMode::Lease).unwrap();
    net.process(id(1));
    assert_eq!(reads(&net, 1), vec![ReadState { context: 2, index: 2 }]);
    assert!(net.queue.is_empty(), "no heartbeat round was needed");
    assert_eq!(net.node(1).lease_reads(), 1);
    net.node(1).read_index(3, ReadMode::ReadIndex).unwrap();
    net.process(id(1));
    assert_eq!(reads(&net, 1).len(), 1, "a ReadIndex read waits for its round all the same");
    assert!(!net.queue.is_empty());
}

fn restart(net: &mut Network, n: u64, configure: impl Fn(&mut Config)) {
    let store = net.node(n).store().clone();
    let entries = store.entries(store.first_index(), store.last_index() + 1, u64::MAX).unwrap();
    let recovered = MemStorage::recover(store.snapshot(), store.hard_state(), entries).unwrap();
    let mut config = config(n);
    configure(&mut config);
    net.nodes.insert(id(n), RaftGroup::new(config, recovered).unwrap());
}

#[test]
fn restarted_followers_do_not_elect_anyone_during_a_lease() {
    let lease = |c: &mut Config| c.lease_read = true;
    let mut net = Network::new(3, lease);
    net.campaign(1);
    net.tick_all(WARM_TICKS);
    net.isolate(1);
    restart(&mut net, 2, lease);
    restart(&mut net, 3, lease);
    net.node(2).campaign();
    net.deliver_all();
    assert_ne!(net.node(2).role(), Role::Leader, "node 3 must refuse while a lease may run");
    net.node(1).read_index(9, ReadMode::Lease).unwrap();
    net.process(id(1));
    assert_eq!(reads(&net, 1).len(), 1, "the old leader's lease is still safe to use");
    net.tick_all(30);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "node 1 stepped down; the majority side elected anew");
    assert_ne!(leaders[0], id(1));
}

/// Ticks the leader (node 1) `leader_ticks` times while every follower ticks
/// `follower_ticks` times per `leader_ticks`, delivering after each round.
fn tick_at_rates(net: &mut Network, rounds: u32, leader_ticks: u32, follower_ticks: u32) {
    for _ in 0..rounds {
        for step in 0..leader_ticks.max(follower_ticks) {
            let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
            for n in ids {
                let per = if n == id(1) { leader_ticks } else { follower_ticks };
                if step < per {
                    net.nodes.get_mut(&n).unwrap().tick();
                }
            }
            net.deliver_all();
        }
    }
}

/// One lease read at node 1 (context `context`): whether it was answered at once.
fn lease_read_at_once(net: &mut Network, context: u64) -> bool {
    net.read_states.clear();
    net.node(1).read_index(context, ReadMode::Lease).unwrap();
    net.process(id(1));
    let answered = !reads(net, 1).is_empty();
    net.deliver_all();
    answered
}

#[test]
fn lease_is_refused_before_a_full_rate_window() {
    let mut net = Network::new(3, |c| c.lease_read = true);
    net.campaign(1);
    net.tick_all(20);
    assert!(!lease_read_at_once(&mut net, 1), "20 ticks are no measurement");
    assert_eq!(reads(&net, 1).len(), 1, "the read fell back to a heartbeat round");
    net.tick_all(WARM_TICKS);
    assert!(lease_read_at_once(&mut net, 2));
}

#[test]
fn lease_is_refused_when_followers_tick_too_fast() {
    let mut net = Network::new(3, |c| c.lease_read = true);
    net.campaign(1);
    // Followers 25% faster than the leader: beyond the 9/8 the lease tolerates.
    tick_at_rates(&mut net, 60, 4, 5);
    assert_eq!(net.node(1).role(), Role::Leader);
    assert!(!lease_read_at_once(&mut net, 1), "a fast follower's ack must not count");
    assert_eq!(reads(&net, 1).len(), 1, "answered by a heartbeat round instead");
    assert_eq!(net.node(1).lease_reads(), 0);
}

#[test]
fn lease_is_used_when_rates_agree_or_followers_are_slower() {
    for (leader_ticks, follower_ticks) in [(1, 1), (20, 21), (5, 4)] {
        let mut net = Network::new(3, |c| c.lease_read = true);
        net.campaign(1);
        tick_at_rates(&mut net, 240 / leader_ticks, leader_ticks, follower_ticks);
        let rates = format!("{leader_ticks}:{follower_ticks}");
        assert!(lease_read_at_once(&mut net, 1), "rates {rates}: lease refused");
        assert_eq!(net.node(1).lease_reads(), 1, "rates {rates}");
    }
}

#[test]
fn one_fast_follower_leaves_the_lease_to_the_other() {
    let mut net = Network::new(3, |c| c.lease_read = true);
    net.campaign(1);
    for _ in 0..60 {
        for step in 0..5 {
            if step < 4 {
                net.node(1).tick();
                net.node(2).tick();
            }
            net.node(3).tick();
            net.deliver_all();
        }
    }
    assert!(lease_read_at_once(&mut net, 1), "node 2 ticks with the leader: its ack counts");
    net.isolate(2);
    // Node 3's acks keep arriving but do not count: once node 2's last ack is older
    // than the lease, the lease is gone although node 3 answers every heartbeat.
    for _ in 0..8 {
        net.node(1).tick();
        net.node(3).tick();
        net.deliver_all();
    }
    assert!(!lease_read_at_once(&mut net, 2));
}
