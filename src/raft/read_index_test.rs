//! Linearizable reads: ReadIndex on the leader and via followers, leases, and the
//! partitioned stale leader that must not answer.

use super::test_network::*;
use super::*;

fn reads(net: &Network, n: u64) -> Vec<ReadState> {
    net.read_states.get(&id(n)).cloned().unwrap_or_default()
}

#[test]
fn leader_read_needs_a_heartbeat_round() {
    let mut net = Network::new(3, |_| {});
    net.campaign(1);
    net.propose(1, b"a");
    net.node(1).read_index(7).unwrap();
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
        net.node(1).read_index(context).unwrap();
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
    net.node(2).read_index(8).unwrap();
    net.deliver_all();
    assert_eq!(reads(&net, 2), vec![ReadState { context: 8, index: 2 }]);
    let mut lonely = Network::new(3, |_| {});
    assert_eq!(lonely.node(2).read_index(1), Err(RaftError::NotLeader { leader_hint: None }));
}

#[test]
fn read_waits_for_the_first_commit_of_the_term() {
    let mut net = Network::new(3, |_| {});
    net.drop_if =
        Some(Box::new(|m: &Message| matches!(m.body, MessageBody::AppendResponse { .. })));
    net.campaign(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    net.node(1).read_index(4).unwrap();
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
        net.tick_all(2);
        net.isolate(1);
        net.tick_all(8); // The lease (election_tick - drift = 8 ticks) ran out.
        assert_eq!(net.node(1).role(), Role::Leader, "still believes it leads");
        net.node(1).read_index(1).unwrap();
        net.tick_all(40);
        assert!(reads(&net, 1).is_empty(), "lease_read={lease_read}: stale leader answered");
        assert_ne!(net.node(1).role(), Role::Leader);
        let leader = net.leaders()[0];
        net.node(leader.0).read_index(2).unwrap();
        net.tick_all(1);
        assert_eq!(reads(&net, leader.0).len(), 1, "lease_read={lease_read}");
    }
}

#[test]
fn lease_read_is_answered_at_once_within_the_lease() {
    let mut net = Network::new(3, |c| c.lease_read = true);
    net.campaign(1);
    net.propose(1, b"a");
    assert_eq!(net.node(1).read_index(1), Ok(()));
    net.process(id(1));
    assert!(reads(&net, 1).is_empty(), "no acknowledged heartbeat yet: no lease");
    net.deliver_all();
    net.tick_all(1);
    net.read_states.clear();
    net.node(1).read_index(2).unwrap();
    net.process(id(1));
    assert_eq!(reads(&net, 1), vec![ReadState { context: 2, index: 2 }]);
    assert!(net.queue.is_empty(), "no heartbeat round was needed");
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
    net.tick_all(2);
    net.isolate(1);
    restart(&mut net, 2, lease);
    restart(&mut net, 3, lease);
    net.node(2).campaign();
    net.deliver_all();
    assert_ne!(net.node(2).role(), Role::Leader, "node 3 must refuse while a lease may run");
    net.node(1).read_index(9).unwrap();
    net.process(id(1));
    assert_eq!(reads(&net, 1).len(), 1, "the old leader's lease is still safe to use");
    net.tick_all(30);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "node 1 stepped down; the majority side elected anew");
    assert_ne!(leaders[0], id(1));
}
