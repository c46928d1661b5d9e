//! Quiescence (quiesce.rs): idle groups go silent, anything wakes them, and a
//! follower woken by its driver's liveness replaces a dead leader.

use super::test_network::*;
use super::*;

fn quiet_cluster() -> Network {
    let mut net = Network::new(3, |c| c.quiesce = true);
    net.campaign(1);
    net.propose(1, b"a");
    // A heartbeat round marks every follower active, the next beat quiesces.
    net.tick_all(3);
    net
}

fn all_quiescent(net: &Network) -> bool {
    net.nodes.values().all(RaftGroup::is_quiescent)
}

#[test]
fn idle_group_quiesces_and_sends_nothing() {
    let mut net = quiet_cluster();
    assert!(all_quiescent(&net));
    let (term, sent) = (net.node(1).status().term, net.delivered.len());
    net.tick_all(100);
    assert_eq!(net.delivered.len(), sent, "a quiesced group sends nothing");
    assert_eq!(net.leaders(), vec![id(1)]);
    assert_eq!(net.node(2).status().term, term);
}

#[test]
fn proposal_wakes_and_requiesces() {
    let mut net = quiet_cluster();
    let index = net.propose(1, b"b");
    assert!(!net.node(1).is_quiescent());
    net.tick_all(4);
    assert!(all_quiescent(&net));
    for n in 1..=3 {
        assert_eq!(net.node(n).status().commit, index);
    }
}

#[test]
fn quiesced_follower_waits_for_liveness_to_replace_a_dead_leader() {
    let mut net = quiet_cluster();
    let term = net.node(2).status().term;
    net.isolate(1);
    net.tick_all(100);
    assert_eq!(net.node(2).status().term, term, "nothing ticks the election timer");
    // The driver heard nothing from node 1 for a while.
    net.node(2).wake_leader_silent(10);
    net.node(3).wake_leader_silent(10);
    net.tick_all(25);
    let leaders: Vec<NodeId> = net.leaders().into_iter().filter(|&l| l != id(1)).collect();
    assert_eq!(leaders.len(), 1, "a new leader among 2 and 3");
    assert!(net.node(2).status().term > term);
}

#[test]
fn woken_isolated_leader_steps_down() {
    let mut net = quiet_cluster();
    net.isolate(1);
    net.node(1).wake();
    net.tick_all(25);
    assert_eq!(net.node(1).role(), Role::Follower, "check-quorum runs again once woken");
}

#[test]
fn follower_that_missed_quiesce_wakes_the_leader_without_an_election() {
    let mut net = Network::new(3, |c| c.quiesce = true);
    net.campaign(1);
    net.propose(1, b"a");
    net.drop_if =
        Some(Box::new(|m| matches!(m.body, MessageBody::Quiesce { .. }) && m.to == id(3)));
    net.tick_all(3);
    let term = net.node(1).status().term;
    assert!(!net.node(3).is_quiescent());
    net.drop_if = None;
    // Node 3 hears nothing, pre-votes; that wakes the leader, whose heartbeats and
    // next Quiesce reach it.
    net.tick_all(40);
    assert_eq!(net.leaders(), vec![id(1)]);
    assert_eq!(net.node(3).status().term, term, "a pre-vote changes no term");
    assert!(all_quiescent(&net));
}

#[test]
fn restarted_follower_is_caught_up_by_a_quiesced_leader() {
    let mut net = quiet_cluster();
    let store = net.node(3).store().clone();
    let entries = store.entries(store.first_index(), store.last_index() + 1, u64::MAX).unwrap();
    let recovered = MemStorage::recover(store.snapshot(), store.hard_state(), entries).unwrap();
    let mut config = config(3);
    config.quiesce = true;
    net.nodes.insert(id(3), RaftGroup::new(config, recovered).unwrap());
    let index = net.propose(1, b"c");
    net.tick_all(40);
    assert_eq!(net.leaders(), vec![id(1)]);
    assert_eq!(net.node(3).status().commit, index);
    assert!(all_quiescent(&net));
}

/// A driver's `TickClock` stands in for ticking a quiesced group: groups ticked
/// only while awake (as the node ticks only its active replicas) count the same
/// ticks as groups ticked every time: the tick counts the followers report after a
/// long quiet spell (which leases and tick rates are judged on) are the same.
#[test]
fn a_tick_clock_counts_the_ticks_of_an_untouched_quiesced_group() {
    let runs: Vec<Vec<(NodeId, u64)>> = [false, true]
        .into_iter()
        .map(|clocked| {
            let mut net = Network::new(3, |c| c.quiesce = true);
            let clock = TickClock::new();
            if clocked {
                for n in 1..=3 {
                    net.node(n).use_tick_clock(clock.clone());
                }
            }
            net.campaign(1);
            net.propose(1, b"a");
            for t in 1..=60 {
                if t == 40 {
                    net.node(1).wake();
                }
                clock.set(t);
                for group in net.nodes.values_mut() {
                    if !clocked || !group.is_quiescent() {
                        group.tick();
                    }
                }
                net.deliver_all();
                if t == 30 {
                    assert!(all_quiescent(&net));
                }
            }
            net.delivered
                .iter()
                .filter_map(|m| match m.body {
                    MessageBody::HeartbeatResponse { tick, .. } => Some((m.from, tick)),
                    _ => None,
                })
                .collect()
        })
        .collect();
    assert_eq!(runs[0], runs[1], "ticked vs clocked");
    let woken: Vec<(NodeId, u64)> = vec![(id(2), 40), (id(3), 40)];
    assert_eq!(runs[1], woken, "the followers woken at tick 40 count 40 ticks");
}
