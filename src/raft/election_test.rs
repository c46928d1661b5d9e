//! Elections: single voter, majority, jitter, pre-vote, check-quorum, vote rules.

use super::test_network::*;
use super::*;

#[test]
fn single_node_elects_itself_and_commits_on_persist() {
    let mut net = Network::new(1, |_| {});
    net.node(1).campaign();
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.node(1).status().commit, 0, "no commit before the no-op is persisted");
    let ready = net.node(1).ready();
    assert_eq!(ready.hard_state.map(|h| (h.term, h.vote)), Some((1, Some(id(1)))));
    assert_eq!(ready.entries.len(), 1);
    assert!(ready.committed_entries.is_empty());
    net.node(1).advance(ready);
    assert_eq!(net.node(1).status().commit, 1);
    let index = net.propose(1, b"x");
    assert_eq!(index, 2);
    assert_eq!(net.applied_data(1), vec![b"x".to_vec()]);
}

#[test]
fn three_nodes_elect_exactly_one_leader_by_ticking() {
    let mut net = Network::new(3, |_| {});
    net.tick_all(40);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "leaders: {leaders:?}");
    let leader = leaders[0];
    for group in net.nodes.values() {
        assert_eq!(group.leader(), Some(leader));
        assert_eq!(group.status().commit, 1, "the leader's no-op committed everywhere");
    }
}

#[test]
fn randomized_timeouts_depend_on_seed_and_stay_in_range() {
    let timeouts: Vec<u32> = (0..20)
        .map(|seed| {
            let conf_state = ConfState { voters: vec![id(1)], learners: vec![] };
            let group =
                RaftGroup::new(Config::new(id(1), seed), MemStorage::new(conf_state)).unwrap();
            group.randomized_election_timeout
        })
        .collect();
    assert!(timeouts.iter().all(|&t| (10..20).contains(&t)), "{timeouts:?}");
    let distinct: std::collections::BTreeSet<u32> = timeouts.iter().copied().collect();
    assert!(distinct.len() > 3, "timeouts barely vary: {timeouts:?}");
}

#[test]
fn pre_vote_keeps_partitioned_node_from_disrupting_the_term() {
    let mut net = Network::new(3, |_| {});
    net.campaign(1);
    assert_eq!(net.leaders(), vec![id(1)]);
    let term = net.node(1).status().term;
    net.isolate(3);
    net.tick_all(100);
    assert_eq!(net.node(3).status().term, term, "pre-vote never wins, so the term stays");
    assert_eq!(net.node(3).role(), Role::PreCandidate);
    net.heal();
    net.tick_all(5);
    assert_eq!(net.leaders(), vec![id(1)]);
    assert_eq!(net.node(1).status().term, term);
    assert_eq!(net.node(3).leader(), Some(id(1)));
}

#[test]
fn without_pre_vote_a_rejoining_node_bumps_the_term() {
    let mut net = Network::new(3, |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    net.campaign(1);
    let term = net.node(1).status().term;
    net.isolate(3);
    net.tick_all(50);
    assert!(net.node(3).status().term > term + 1);
    net.heal();
    net.tick_all(60);
    assert!(net.node(1).status().term > term, "the old term was disrupted");
}

#[test]
fn check_quorum_leader_steps_down_when_isolated() {
    let mut net = Network::new(3, |_| {});
    net.campaign(1);
    net.isolate(1);
    // The first check still sees the acks from before the cut; the second cannot.
    net.tick_all(9);
    assert_eq!(net.node(1).role(), Role::Leader);
    net.tick_all(11);
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(net.node(1).leader(), None);
    net.tick_all(40);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], id(1));
}

#[test]
fn vote_rejected_for_stale_log_and_once_per_term() {
    let mut net = Network::new(3, |c| c.pre_vote = false);
    net.campaign(1);
    net.propose(1, b"a");
    let term = net.node(2).status().term;
    let stale = Message {
        from: id(3),
        to: id(2),
        term: term + 1,
        body: MessageBody::Vote { last_index: 1, last_term: term, transfer: true },
    };
    net.node(2).step(stale).unwrap();
    let ready = net.node(2).ready();
    assert!(ready.messages.is_empty(), "vote responses wait for persistence");
    assert_eq!(
        ready.persisted_messages[0].body,
        MessageBody::VoteResponse { reject: true },
        "log 1 of term {term} is behind index 2"
    );
    net.node(2).advance(ready);
    let (last_index, last_term) = (2, term);
    for (candidate, expect_reject) in [(3, false), (1, true)] {
        let vote = Message {
            from: id(candidate),
            to: id(2),
            term: term + 1,
            body: MessageBody::Vote { last_index, last_term, transfer: true },
        };
        net.node(2).step(vote).unwrap();
        let ready = net.node(2).ready();
        assert_eq!(
            ready.persisted_messages[0].body,
            MessageBody::VoteResponse { reject: expect_reject }
        );
        if !expect_reject {
            assert_eq!(
                ready.hard_state.unwrap().vote,
                Some(id(3)),
                "the vote is persisted with it"
            );
        }
        net.node(2).advance(ready);
    }
}

#[test]
fn sticky_follower_ignores_votes_while_leader_is_live() {
    let mut net = Network::new(3, |c| c.pre_vote = false);
    net.campaign(1);
    let term = net.node(2).status().term;
    let vote = Message {
        from: id(3),
        to: id(2),
        term: term + 1,
        body: MessageBody::Vote { last_index: 10, last_term: term, transfer: false },
    };
    net.node(2).step(vote).unwrap();
    assert_eq!(net.node(2).status().term, term, "ignored: heard from the leader recently");
    assert!(!net.node(2).has_ready());
}

#[test]
fn restart_keeps_term_vote_and_log() {
    let mut net = Network::new(3, |_| {});
    net.campaign(1);
    net.propose(1, b"a");
    net.propose(1, b"b");
    let old = net.node(2).status();
    let store = net.node(2).store().clone();
    let entries = store.entries(store.first_index(), store.last_index() + 1, u64::MAX).unwrap();
    let recovered = MemStorage::recover(store.snapshot(), store.hard_state(), entries).unwrap();
    let group = RaftGroup::new(config(2), recovered).unwrap();
    let status = group.status();
    assert_eq!(status.term, old.term);
    assert_eq!(group.vote, Some(id(1)));
    assert_eq!(status.last_index, old.last_index);
    assert_eq!(status.commit, old.commit);
    assert_eq!(status.applied, 0, "the driver re-applies committed entries after the snapshot");
    net.nodes.insert(id(2), group);
    net.process(id(2));
    assert_eq!(
        net.applied_data(2),
        vec![b"a".to_vec(), b"b".to_vec(), b"a".to_vec(), b"b".to_vec()],
        "applied before the restart, then again after"
    );
}
