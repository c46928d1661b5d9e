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
    assert!(
        reads(&net, 1).is_empty(),
        "not before a quorum confirms leadership"
    );
    let round = net
        .queue
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { context, .. } if context > 0))
        .count();
    assert_eq!(round, 2, "one heartbeat round to both followers");
    net.deliver_all();
    assert_eq!(
        reads(&net, 1),
        vec![ReadState {
            context: 7,
            index: 2
        }]
    );
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
    assert_eq!(
        reads(&net, 2),
        vec![ReadState {
            context: 8,
            index: 2
        }]
    );
    let mut lonely = Network::new(3, |_| {});
    assert_eq!(
        lonely.node(2).read_index(1),
        Err(RaftError::NotLeader { leader_hint: None })
    );
}

#[test]
fn read_waits_for_the_first_commit_of_the_term() {
    let mut net = Network::new(3, |_| {});
    net.drop_if = Some(Box::new(|m: &Message| {
        matches!(m.body, MessageBody::AppendResponse { .. })
    }));
    net.campaign(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    net.node(1).read_index(4).unwrap();
    net.tick_all(1);
    assert!(
        reads(&net, 1).is_empty(),
        "the no-op of this term is not committed"
    );
    net.drop_if = None;
    net.tick_all(2);
    assert_eq!(
        reads(&net, 1),
        vec![ReadState {
            context: 4,
            index: 1
        }]
    );
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
        assert!(
            reads(&net, 1).is_empty(),
            "lease_read={lease_read}: stale leader answered"
        );
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
    assert!(
        reads(&net, 1).is_empty(),
        "no acknowledged heartbeat yet: no lease"
    );
    net.deliver_all();
    net.tick_all(1);
    net.read_states.clear();
    net.node(1).read_index(2).unwrap();
    net.process(id(1));
    assert_eq!(
        reads(&net, 1),
        vec![ReadState {
            context: 2,
            index: 2
        }]
    );
    assert!(net.queue.is_empty(), "no heartbeat round was needed");
}
