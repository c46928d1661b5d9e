//! Replication: commit on majority, fast backtracking, flow control, persistence
//! ordering, and the Raft paper's figure 8.

use std::collections::BTreeMap;

use super::test_network::*;
use super::*;

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        format: EntryFormat { kind: EntryFormat::KIND_COMMAND, version: 1 },
        data: vec![index as u8].into(),
    }
}

fn is_append_to(msg: &Message, n: u64) -> bool {
    msg.to == id(n) && matches!(msg.body, MessageBody::Append { .. })
}

#[test]
fn entries_commit_on_majority_and_lagging_follower_catches_up() {
    let mut net = Network::new(3, |_| {});
    net.campaign(1);
    net.isolate(3);
    let index = net.propose(1, b"a");
    assert_eq!(net.node(1).status().commit, index);
    assert_eq!(net.node(2).status().commit, index);
    assert_eq!(net.applied_data(1), vec![b"a".to_vec()]);
    assert_eq!(net.applied_data(2), vec![b"a".to_vec()]);
    assert_eq!(net.node(3).status().last_index, 1);
    net.heal();
    net.tick_all(2);
    assert_eq!(net.node(3).status().commit, index);
    assert_eq!(net.applied_data(3), vec![b"a".to_vec()]);
}

#[test]
fn divergent_follower_catches_up_in_few_round_trips() {
    let mut net = Network::new(3, |_| {});
    net.campaign(1);
    net.isolate(1);
    for k in 0..50u8 {
        net.node(1).propose(TEST_FORMAT, vec![k]).unwrap(); // Never committed: node 1 is cut off.
    }
    net.deliver_all();
    net.tick_all(40);
    let leader = net.leaders().into_iter().find(|&l| l != id(1)).expect("2 or 3 leads");
    for k in 0..50u8 {
        net.propose(leader.0, &[100 + k]);
    }
    net.heal();
    let before = net.delivered.len();
    net.tick_all(3);
    let rejects = net.delivered[before..]
        .iter()
        .filter(|m| {
            m.from == id(1) && matches!(m.body, MessageBody::AppendResponse { reject: true, .. })
        })
        .count();
    assert!(rejects <= 2, "{rejects} rejections for a 50-entry divergence");
    let leader_log = net.nodes[&leader].status();
    assert_eq!(net.node(1).status().last_index, leader_log.last_index);
    assert_eq!(net.node(1).status().commit, leader_log.commit);
    let expected: Vec<Vec<u8>> = (0..50u8).map(|k| vec![100 + k]).collect();
    assert_eq!(net.applied_data(1), expected, "the divergent entries were replaced, never applied");
}

#[test]
fn inflight_window_pauses_pipelined_appends() {
    let mut net = Network::new(3, |c| {
        c.max_inflight_msgs = 2;
        c.max_size_per_msg = 1;
    });
    net.campaign(1);
    for k in 0..5u8 {
        net.node(1).propose(TEST_FORMAT, vec![k]).unwrap();
    }
    net.process(id(1));
    let appends = net.queue.iter().filter(|m| is_append_to(m, 2)).count();
    assert_eq!(appends, 2, "replicate state sends at most max_inflight_msgs Appends");
    net.deliver_all();
    assert_eq!(net.node(2).status().last_index, 6, "acks reopen the window until caught up");
    assert_eq!(net.node(1).status().commit, 6);
}

#[test]
fn acks_and_votes_wait_for_persistence_while_appends_do_not() {
    let mut net = Network::new(3, |c| c.pre_vote = false);
    net.node(1).campaign();
    let ready = net.node(1).ready();
    assert!(ready.messages.is_empty());
    assert_eq!(ready.persisted_messages.len(), 2, "Vote requests need the durable self-vote");
    assert!(ready.hard_state.is_some());
    net.node(1).advance(ready);
    let mut pre = Network::new(3, |_| {});
    pre.node(1).campaign();
    let ready = pre.node(1).ready();
    assert_eq!(ready.messages.len(), 2, "PreVote changes no durable state");
    assert!(ready.persisted_messages.is_empty());

    let mut net = Network::new(3, |_| {});
    net.campaign(1);
    net.node(1).propose(TEST_FORMAT, b"x".to_vec()).unwrap();
    let ready = net.node(1).ready();
    assert_eq!(
        ready.messages.iter().filter(|m| matches!(m.body, MessageBody::Append { .. })).count(),
        2
    );
    let append = ready.messages[0].clone();
    net.node(1).advance(ready);
    net.node(2).step(append).unwrap();
    let ready = net.node(2).ready();
    assert_eq!(ready.entries.len(), 1);
    assert!(ready.messages.is_empty());
    assert!(matches!(
        ready.persisted_messages[0].body,
        MessageBody::AppendResponse { reject: false, index: 2, .. }
    ));
    net.node(2).advance(ready);
}

#[test]
fn committed_entries_never_include_unpersisted_ones() {
    let mut net = Network::new(3, |_| {});
    net.campaign(1);
    let index = net.node(1).propose(TEST_FORMAT, b"y".to_vec()).unwrap();
    let ready = net.node(1).ready();
    net.queue.extend(ready.messages.iter().cloned());
    // Followers ack before the leader has persisted its own entry.
    while let Some(msg) = net.queue.pop_front() {
        if msg.from == id(1) || msg.to != id(1) {
            net.deliver(msg);
        } else {
            net.node(1).step(msg).unwrap();
        }
    }
    assert_eq!(net.node(1).status().commit, index, "a quorum of followers holds it");
    assert!(!net.node(1).has_ready(), "no second Ready before advance");
    net.node(1).advance(ready);
    let ready = net.node(1).ready();
    assert_eq!(ready.committed_entries.last().map(|e| e.index), Some(index));
    net.node(1).advance(ready);
}

#[test]
#[should_panic(expected = "ready() called again before advance()")]
fn ready_twice_without_advance_panics() {
    let mut net = Network::new(1, |_| {});
    net.node(1).campaign();
    let _first = net.node(1).ready();
    let _second = net.node(1).ready();
}

fn recovered(n: u64, term: Term, log: &[Entry]) -> RaftGroup {
    let conf_state = ConfState { voters: (1..=5).map(id).collect(), learners: vec![] };
    let snapshot = Snapshot { meta: SnapshotMeta { index: 0, term: 0, conf_state }, data: vec![] };
    let hard_state = HardState { term, vote: None, commit: 1, repair_term: 0 };
    let store = MemStorage::recover(snapshot, hard_state, log.to_vec()).unwrap();
    let mut config = config(n);
    config.pre_vote = false;
    config.check_quorum = false;
    config.max_size_per_msg = 1;
    RaftGroup::new(config, store).unwrap()
}

/// Raft paper figure 8: S1 (term 4) gets its term-2 entry at index 2 onto a majority
/// (S1, S2, S3) but must not commit it by counting replicas, because S5 (last term 3)
/// can still be elected and overwrite it.
#[test]
fn figure_8_entry_of_earlier_term_not_committed_by_counting() {
    let mut nodes = BTreeMap::new();
    nodes.insert(id(1), recovered(1, 3, &[entry(1, 1), entry(2, 2)]));
    nodes.insert(id(2), recovered(2, 3, &[entry(1, 1)]));
    nodes.insert(id(3), recovered(3, 3, &[entry(1, 1)]));
    nodes.insert(id(4), recovered(4, 3, &[entry(1, 1)]));
    nodes.insert(id(5), recovered(5, 4, &[entry(1, 1), entry(2, 3)]));
    let mut net = Network::from_nodes(nodes);
    net.isolate(4);
    net.isolate(5);
    // Hold back S1's term-4 no-op at index 3 so only index 2 spreads. The first
    // probe (which the followers reject, lacking index 2) passes.
    let probed = std::cell::RefCell::new(std::collections::BTreeSet::new());
    net.drop_if = Some(Box::new(move |m: &Message| match &m.body {
        MessageBody::Append { entries, .. } if entries.iter().any(|e| e.index >= 3) => {
            !probed.borrow_mut().insert(m.to)
        }
        _ => false,
    }));
    net.campaign(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.node(1).status().term, 4);
    for n in [2, 3] {
        assert_eq!(net.node(n).store().term(2), Ok(2), "S{n} holds index 2 from term 2");
    }
    assert_eq!(net.node(1).status().commit, 1, "index 2 is on a majority but not committed");

    // Why: S1 fails, S5 wins term 5 with S2, S3, S4 and overwrites index 2.
    net.drop_if = None;
    net.heal();
    net.isolate(1);
    net.campaign(5);
    assert_eq!(net.node(5).role(), Role::Leader);
    for n in [2, 3, 4, 5] {
        assert_eq!(net.node(n).store().term(2), Ok(3), "S{n} index 2 overwritten by term 3");
        assert!(net.node(n).status().commit >= 3);
    }
}

/// A follower commits at most what the Append covered (paper figure 2: commitIndex =
/// min(leaderCommit, index of last new entry)): a stale suffix behind it stays
/// uncommitted even though the leader's commit index reaches past it. The sweep
/// cannot show this rule alone (chaos/mutants/uncaught/README.md: the leader's first
/// accepted Append always starts where the logs differ), so it is pinned here.
#[test]
fn follower_commits_only_what_the_append_covered() {
    // Index 2 (term 1) is the leader's too; 3 and 4 (term 2) are a deposed leader's.
    let log = [entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)];
    let mut follower = recovered(2, 3, &log);
    let body =
        MessageBody::Append { prev_index: 1, prev_term: 1, entries: vec![entry(2, 1)], commit: 4 };
    follower.step(Message { from: id(1), to: id(2), term: 3, body }).unwrap();
    assert_eq!(follower.status().last_index, 4, "a matching Append truncates nothing");
    assert_eq!(follower.status().commit, 2, "the stale entries 3 and 4 must stay uncommitted");
}
