//! Membership changes: learners added and promoted through a joint configuration,
//! voters removed and replaced, a leader removing itself, and the rules that keep one
//! change at a time.

use std::collections::{BTreeMap, BTreeSet};

use super::test_network::*;
use super::*;

fn set(ids: &[u64]) -> BTreeSet<NodeId> {
    ids.iter().map(|&n| id(n)).collect()
}

fn change(voters: &[u64], learners: &[u64]) -> ConfChange {
    ConfChange { voters: set(voters), learners: set(learners), context: Vec::new() }
}

/// Voters 1..=voters, elected leader 1, and `spare` more nodes that belong to no
/// configuration yet (as a node that joins: an empty replica waiting for the log).
fn cluster(voters: u64, spare: u64) -> Network {
    let conf_state = ConfState { voters: (1..=voters).map(id).collect(), learners: vec![] };
    let mut nodes = BTreeMap::new();
    for n in 1..=voters + spare {
        let store =
            if n <= voters { MemStorage::new(conf_state.clone()) } else { MemStorage::default() };
        nodes.insert(id(n), RaftGroup::new(config(n), store).unwrap());
    }
    let mut net = Network::from_nodes(nodes);
    net.campaign(1);
    assert_eq!(net.leaders(), vec![id(1)]);
    net
}

fn membership(net: &mut Network, n: u64) -> Membership {
    net.node(n).membership().clone()
}

/// Proposes a change on `leader` and lets it complete (joint phase included).
fn apply_change(net: &mut Network, leader: u64, target: ConfChange) -> Index {
    let index = net.node(leader).propose_conf_change(target).unwrap();
    net.deliver_all();
    index
}

#[test]
fn grow_from_three_to_five_through_learners_and_a_joint_configuration() {
    let mut net = cluster(3, 2);
    net.propose(1, b"before");
    apply_change(&mut net, 1, change(&[1, 2, 3], &[4, 5]));
    for n in 1..=5 {
        assert_eq!(membership(&mut net, n).learners, set(&[4, 5]), "node {n}");
        assert_eq!(net.applied_data(n), vec![b"before".to_vec()], "node {n} caught up");
    }
    // Promotion enters a joint configuration, and the leader leaves it on commit.
    let joint_index = net.node(1).propose_conf_change(change(&[1, 2, 3, 4, 5], &[])).unwrap();
    let joint = membership(&mut net, 1);
    assert!(joint.is_joint(), "{joint}");
    assert_eq!(joint.outgoing, set(&[1, 2, 3]));
    assert_eq!(net.node(1).conf_state_at(joint_index), None, "joint is never snapshotted");
    net.deliver_all();
    for n in 1..=5 {
        let m = membership(&mut net, n);
        assert_eq!((m.voters.clone(), m.is_joint()), (set(&[1, 2, 3, 4, 5]), false), "node {n}");
    }
    // Five voters: with 1, 2 and 5 up, writes still commit; with three down, not.
    net.isolate(3);
    net.isolate(4);
    let index = net.propose(1, b"three of five");
    assert_eq!(net.node(1).status().commit, index);
    net.isolate(5);
    let stuck = net.node(1).propose(TEST_FORMAT, b"two of five".to_vec()).unwrap();
    net.deliver_all();
    assert!(net.node(1).status().commit < stuck);
}

#[test]
fn a_joint_configuration_needs_both_majorities() {
    // Replace 2 and 3 by 4 and 5 in one change: C_old = {1,2,3}, C_new = {1,4,5}.
    let mut net = cluster(3, 2);
    apply_change(&mut net, 1, change(&[1, 2, 3], &[4, 5]));
    // The new voters are cut off: the joint entry commits with the old majority, but
    // nothing after it can, so the configuration stays joint.
    net.isolate(4);
    net.isolate(5);
    let joint_index = net.node(1).propose_conf_change(change(&[1, 4, 5], &[])).unwrap();
    net.deliver_all();
    assert!(net.node(1).status().commit < joint_index, "C_new has no majority");
    assert!(membership(&mut net, 1).is_joint());
    let write = net.node(1).propose(TEST_FORMAT, b"w".to_vec()).unwrap();
    net.deliver_all();
    assert!(net.node(1).status().commit < write);
    // A second change is refused while one is in flight.
    let refused = net.node(1).propose_conf_change(change(&[1, 2, 3], &[]));
    assert!(matches!(refused, Err(RaftError::ConfChangeRefused(_))), "{refused:?}");
    net.heal();
    net.tick_all(3);
    let leader = net.leaders()[0];
    assert_eq!(leader, id(1));
    let final_membership = membership(&mut net, 1);
    assert_eq!(final_membership.voters, set(&[1, 4, 5]));
    assert!(!final_membership.is_joint());
    assert_eq!(net.node(1).status().commit, net.node(1).status().last_index);
    // 2 and 3 are out: with 4 and 5 cut off nothing commits; with them up it does.
    net.isolate(4);
    net.isolate(5);
    let stuck = net.node(1).propose(TEST_FORMAT, b"x".to_vec()).unwrap();
    net.deliver_all();
    assert!(net.node(1).status().commit < stuck, "2 and 3 no longer count");
    net.heal();
    net.isolate(2);
    net.isolate(3);
    net.tick_all(2);
    assert!(net.node(1).status().commit >= stuck);
}

#[test]
fn no_change_before_the_leader_commits_in_its_term_nor_while_one_is_uncommitted() {
    let mut net = cluster(3, 1);
    // A new leader whose no-op is not committed yet: leadership handed to 2, whose
    // Appends are lost.
    net.drop_if =
        Some(Box::new(|m| m.from == id(2) && matches!(m.body, MessageBody::Append { .. })));
    net.node(1).transfer_leader(id(2));
    net.deliver_all();
    assert_eq!(net.node(2).role(), Role::Leader);
    let early = net.node(2).propose_conf_change(change(&[1, 2, 3], &[4]));
    assert!(matches!(early, Err(RaftError::ConfChangeRefused(_))), "{early:?}");
    net.drop_if = None;
    net.tick_all(3);
    let leader = net.leaders()[0].0;
    // Adding a learner is one entry; a second change waits until it commits.
    net.isolate(if leader == 1 { 2 } else { 1 });
    net.isolate(3);
    net.node(leader).propose_conf_change(change(&[1, 2, 3], &[4])).unwrap();
    let second = net.node(leader).propose_conf_change(change(&[1, 2, 3], &[]));
    assert!(matches!(second, Err(RaftError::ConfChangeRefused(_))), "{second:?}");
    let invalid = change(&[], &[4]);
    net.heal();
    net.tick_all(3);
    let leader = net.leaders()[0].0;
    let refused = net.node(leader).propose_conf_change(invalid);
    assert!(matches!(refused, Err(RaftError::ConfChangeRefused(_))), "no voters: {refused:?}");
    let same = net.node(leader).propose_conf_change(change(&[1, 2, 3], &[4]));
    assert!(matches!(same, Err(RaftError::ConfChangeRefused(_))), "no change: {same:?}");
}

#[test]
fn a_leader_that_removes_itself_steps_down_and_never_campaigns_again() {
    let mut net = cluster(3, 0);
    net.propose(1, b"a");
    apply_change(&mut net, 1, change(&[2, 3], &[]));
    assert_ne!(net.node(1).role(), Role::Leader, "stepped down once C_new committed");
    // The most caught-up voter was told to campaign: a leader without an election
    // timeout of waiting.
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    assert!(leaders[0] == id(2) || leaders[0] == id(3));
    let leader = leaders[0].0;
    net.propose(leader, b"b");
    assert_eq!(net.applied_data(2), vec![b"a".to_vec(), b"b".to_vec()]);
    // The removed node hears nothing more; it must not campaign.
    let before = net.delivered.len();
    net.isolate(1);
    net.tick_all(100);
    assert!(net.delivered[before..].iter().all(|m| m.from != id(1)), "a removed node stays silent");
    assert_eq!(net.leaders(), vec![id(leader)]);
}

#[test]
fn a_truncated_configuration_is_forgotten() {
    let mut net = cluster(3, 1);
    // Leader 1, cut off, appends a change nobody else receives.
    net.isolate(1);
    net.node(1).propose_conf_change(change(&[1, 2, 3], &[4])).unwrap();
    net.deliver_all();
    assert_eq!(membership(&mut net, 1).learners, set(&[4]));
    // 2 is elected without it and writes; 1 rejoins and its suffix is replaced.
    net.tick_all(30);
    let leader = net.leaders().into_iter().find(|&l| l != id(1)).expect("a new leader");
    net.heal();
    net.propose(leader.0, b"x");
    net.tick_all(3);
    assert_eq!(membership(&mut net, 1).learners, set(&[]), "the change went with its entry");
    assert_eq!(membership(&mut net, 1).voters, set(&[1, 2, 3]));
}

#[test]
fn a_restarted_replica_reads_its_configuration_from_its_log() {
    let mut net = cluster(3, 2);
    apply_change(&mut net, 1, change(&[1, 2, 3], &[4, 5]));
    apply_change(&mut net, 1, change(&[1, 2, 3, 4], &[5]));
    let before = membership(&mut net, 2);
    let restarted = RaftGroup::new(config(2), net.node(2).store().clone()).unwrap();
    assert_eq!(restarted.membership(), &before);
    assert_eq!(before.voters, set(&[1, 2, 3, 4]));
    // Compaction keeps the configuration as of its index.
    let applied = net.node(2).status().applied;
    let conf_state = net.node(2).conf_state_at(applied).unwrap();
    let term = net.node(2).log_term(applied).unwrap().unwrap();
    let snapshot =
        Snapshot { meta: SnapshotMeta { index: applied, term, conf_state }, data: vec![] };
    net.node(2).compact(snapshot).unwrap();
    let restarted = RaftGroup::new(config(2), net.node(2).store().clone()).unwrap();
    assert_eq!(restarted.membership(), &before);
}

#[test]
fn a_snapshot_with_the_wrong_configuration_is_refused() {
    let mut net = cluster(3, 1);
    apply_change(&mut net, 1, change(&[1, 2, 3], &[4]));
    let applied = net.node(1).status().applied;
    let term = net.node(1).log_term(applied).unwrap().unwrap();
    let stale = ConfState { voters: vec![id(1), id(2), id(3)], learners: vec![] };
    let snapshot =
        Snapshot { meta: SnapshotMeta { index: applied, term, conf_state: stale }, data: vec![] };
    assert!(matches!(net.node(1).compact(snapshot), Err(RaftError::InvalidConfig(_))));
}

#[test]
fn an_unreadable_configuration_stops_the_replica_from_campaigning() {
    let mut net = cluster(3, 0);
    let newer = EntryFormat { version: 9, ..EntryFormat::CONF_CHANGE };
    net.node(1).propose(newer, b"from the future".to_vec()).unwrap();
    net.deliver_all();
    assert_eq!(net.node(2).unreadable_conf(), Some(newer));
    net.isolate(1);
    let before = net.delivered.len();
    net.tick_all(60);
    let campaigned = net.delivered[before..]
        .iter()
        .any(|m| matches!(m.body, MessageBody::PreVote { .. } | MessageBody::Vote { .. }));
    assert!(!campaigned, "no replica that cannot read its configuration campaigns");
}

#[test]
fn a_new_voter_catches_up_by_snapshot_and_counts_after_promotion() {
    let mut net = cluster(3, 1);
    for i in 0..5u8 {
        net.propose(1, &[i]);
    }
    // Compact the leader's log so node 4 can only catch up from a snapshot.
    let applied = net.node(1).status().applied;
    let conf_state = net.node(1).conf_state_at(applied).unwrap();
    let term = net.node(1).log_term(applied).unwrap().unwrap();
    let meta = SnapshotMeta { index: applied, term, conf_state };
    net.node(1).compact(Snapshot { meta, data: b"image".to_vec() }).unwrap();
    apply_change(&mut net, 1, change(&[1, 2, 3], &[4]));
    net.tick_all(3);
    assert_eq!(net.restored.get(&id(4)).map(Vec::len), Some(1), "installed one snapshot");
    assert_eq!(membership(&mut net, 4).learners, set(&[4]));
    apply_change(&mut net, 1, change(&[1, 2, 3, 4], &[]));
    assert_eq!(membership(&mut net, 4).voters, set(&[1, 2, 3, 4]));
    // Four voters need three: 1 and 4 and one of 2, 3.
    net.isolate(2);
    let index = net.propose(1, b"with 4");
    assert_eq!(net.node(1).status().commit, index);
}

/// A replica restarted from `store` holding only its log up to `last` and a commit
/// index of `commit` (as after a crash that lost the rest before it was durable).
fn restart_cut(store: &MemStorage, n: u64, last: Index, commit: Index) -> RaftGroup {
    let entries = store.entries(store.first_index(), last + 1, u64::MAX).unwrap();
    let hard_state = HardState { commit, ..store.hard_state() };
    let recovered = MemStorage::recover(store.snapshot(), hard_state, entries).unwrap();
    RaftGroup::new(config(n), recovered).unwrap()
}

#[test]
fn a_replica_left_out_by_an_uncommitted_change_still_campaigns_while_it_is_needed() {
    // {1,2} becomes {1} (2 a learner): the joint entry {1}/{1,2} commits, then the
    // leader appends the entry leaving it and sends it to 2, and crashes before the
    // entry is durable on its own disk. 1 needs 2's vote (the committed configuration
    // is joint) and 2 refuses it (2's log is longer); 2 sees itself a learner in its
    // latest configuration. Unless 2 campaigns, the group never has a leader again.
    let mut net = cluster(2, 0);
    net.propose(1, b"a");
    let joint = apply_change(&mut net, 1, change(&[1], &[2]));
    let leave = net.node(2).membership_index();
    assert!(leave > joint && !membership(&mut net, 2).is_voter(id(2)));
    let one = restart_cut(net.node(1).store(), 1, leave - 1, joint);
    let two = restart_cut(net.node(2).store(), 2, leave, joint);
    let nodes = BTreeMap::from([(id(1), one), (id(2), two)]);
    let mut net = Network::from_nodes(nodes);
    assert!(membership(&mut net, 1).is_joint());
    net.tick_all(60);
    // 2 led until the change was committed, then handed over to 1.
    assert_eq!(net.leaders(), vec![id(1)]);
    for n in 1..=2 {
        let m = membership(&mut net, n);
        assert_eq!((m.voters.clone(), m.is_joint()), (set(&[1]), false), "node {n}");
        assert!(net.node(n).status().commit >= leave, "node {n} committed the change");
    }
    let elected_by_two = net
        .delivered
        .iter()
        .any(|m| m.from == id(2) && m.to == id(1) && matches!(m.body, MessageBody::Append { .. }));
    assert!(elected_by_two, "2 led to commit the change");
    net.propose(1, b"b");
    assert_eq!(net.applied_data(1).last(), Some(&b"b".to_vec()));
}
