//! A replica whose storage was damaged and discarded: it keeps its term (bumped past
//! the damage) but not its log, abstains from elections until a leader of a later
//! term has replicated to it, and then is an ordinary voter again.

use super::test_network::*;
use super::*;

/// Replaces node `n` by what the node layer builds after finding its log damaged:
/// the (intact) initial snapshot, no entries, term bumped, repair pending.
fn lose_log(net: &mut Network, n: u64) -> Term {
    let term = net.node(n).status().term;
    let voters = net.node(n).status().voters;
    let mut store = MemStorage::new(ConfState { voters, learners: vec![] });
    let hard_state = HardState { term: term + 1, vote: None, commit: 0, repair_term: term };
    store = MemStorage::recover(store.snapshot(), hard_state, Vec::new()).unwrap();
    net.nodes.insert(id(n), RaftGroup::new(config(n), store).unwrap());
    net.applied.remove(&id(n));
    term
}

#[test]
fn a_repairing_replica_neither_votes_nor_campaigns_until_a_later_leader_reaches_it() {
    let mut net = Network::new(3, |_| {});
    net.campaign(1);
    net.propose(1, b"a");
    // Node 2 misses "b": only node 3's acknowledgement (now lost) committed it.
    net.isolate(2);
    net.propose(1, b"b");
    net.heal();
    let damaged_in = lose_log(&mut net, 3);
    assert!(net.node(3).repairing());

    // The leader dies. Node 2 lacks "b"; node 3 forgot it, and must not elect node 2.
    net.isolate(1);
    net.tick_all(60);
    assert!(net.leaders().is_empty(), "node 3 voted while repairing: {:?}", net.leaders());
    assert!(net.node(3).repairing(), "node 3 never campaigns while repairing");

    // Node 1 returns; node 3's higher term deposes it and the intact pair elects anew.
    net.heal();
    net.tick_all(60);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], id(3), "a repairing replica cannot lead");
    assert!(net.node(3).status().term > damaged_in);
    assert!(!net.node(3).repairing(), "repair ends once a later leader replicated to it");
    assert_eq!(net.node(3).store().hard_state().repair_term, 0, "the end is durable");
    assert_eq!(net.applied_data(3), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(net.applied_data(2), vec![b"a".to_vec(), b"b".to_vec()], "b survived");

    // Repaired, it votes again: without the leader, the other two elect one.
    net.isolate(leaders[0].0);
    net.tick_all(60);
    let live: Vec<NodeId> = net.leaders().into_iter().filter(|&l| l != leaders[0]).collect();
    assert_eq!(live.len(), 1, "node 3 votes again after its repair");
}
