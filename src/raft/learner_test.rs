//! Learners: replicated to (entries and snapshots), never counted, never voting or
//! campaigning.

use std::collections::BTreeMap;

use super::test_network::*;
use super::*;

/// Voters 1..=voters and learners after them, every one knowing the membership.
fn network_with_learners(voters: u64, learners: u64) -> Network {
    let conf_state = ConfState {
        voters: (1..=voters).map(id).collect(),
        learners: (voters + 1..=voters + learners).map(id).collect(),
    };
    let mut nodes = BTreeMap::new();
    for n in 1..=voters + learners {
        let group = RaftGroup::new(config(n), MemStorage::new(conf_state.clone())).unwrap();
        nodes.insert(id(n), group);
    }
    Network::from_nodes(nodes)
}

#[test]
fn learners_receive_the_log_but_do_not_count_toward_commit() {
    let mut net = network_with_learners(3, 2);
    net.campaign(1);
    assert_eq!(net.leaders(), vec![id(1)]);
    let index = net.propose(1, b"a");
    for n in 1..=5 {
        assert_eq!(net.applied_data(n), vec![b"a".to_vec()], "node {n} applied the entry");
    }
    // Two voters down: the leader and both learners are a majority of all five nodes,
    // but not of the voters, so nothing more commits.
    net.isolate(2);
    net.isolate(3);
    let next = net.node(1).propose(TEST_FORMAT, b"b".to_vec()).unwrap();
    net.deliver_all();
    assert_eq!(net.node(1).status().commit, index, "learners' acks are not a quorum");
    assert_eq!(net.node(4).status().last_index, next, "learners still receive the entry");
    net.heal();
    net.tick_all(2);
    assert_eq!(net.node(1).status().commit, next);
    let status = net.node(1).status();
    assert_eq!(status.voters, vec![id(1), id(2), id(3)]);
    assert_eq!(status.learners, vec![id(4), id(5)]);
}

#[test]
fn a_learner_never_campaigns_and_its_vote_is_never_counted() {
    let mut net = network_with_learners(3, 1);
    // A learner that hears nobody for many election timeouts stays a follower.
    net.isolate(4);
    net.tick_all(100);
    assert_eq!(net.node(4).role(), Role::Follower);
    assert!(net.delivered.iter().all(|m| m.from != id(4)), "it sent nothing");
    // A transfer to a learner is refused.
    net.heal();
    net.tick_all(30);
    let leader = net.leaders()[0];
    net.nodes.get_mut(&leader).unwrap().transfer_leader(id(4));
    net.tick_all(30);
    assert_ne!(net.leaders(), vec![id(4)]);

    // A candidate with only a learner reachable does not win: with voters 2 and 3 cut
    // off, 1 and the learner are no majority of the voters (and a learner is not
    // asked for its vote).
    let mut net = network_with_learners(3, 1);
    net.isolate(2);
    net.isolate(3);
    net.campaign(1);
    assert!(net.leaders().is_empty(), "{:?}", net.leaders());
    let asked =
        |m: &Message| matches!(m.body, MessageBody::PreVote { .. } | MessageBody::Vote { .. });
    assert!(!net.delivered.iter().any(|m| m.to == id(4) && asked(m)), "voters only are asked");
}

#[test]
fn a_lagging_learner_catches_up_by_snapshot() {
    let mut net = network_with_learners(3, 1);
    net.campaign(1);
    net.isolate(4);
    for k in 0..10u8 {
        net.propose(1, &[k]);
    }
    let status = net.node(1).status();
    let term = net.node(1).store().term(status.applied).unwrap();
    let conf_state = net.node(1).store().conf_state();
    assert_eq!(conf_state.learners, vec![id(4)], "snapshots carry the learners");
    let meta = SnapshotMeta { index: status.applied, term, conf_state };
    net.node(1).compact(Snapshot { meta, data: b"image".to_vec() }).unwrap();
    net.heal();
    net.tick_all(5);
    assert_eq!(net.restored.get(&id(4)).map(Vec::len), Some(1), "the learner got the snapshot");
    assert_eq!(net.node(4).status().applied, net.node(1).status().applied);
    assert_eq!(net.node(4).status().learners, vec![id(4)]);
}
