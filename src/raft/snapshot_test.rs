//! Snapshots: compaction, chunked transfer to a lagging follower, restart on a gap,
//! and leadership transfer.

use super::test_network::*;
use super::*;

fn compact_at_applied(net: &mut Network, n: u64, data: &[u8]) -> Index {
    let status = net.node(n).status();
    let term = net.node(n).store().term(status.applied).unwrap();
    let conf_state = net.node(n).store().conf_state();
    let meta = SnapshotMeta { index: status.applied, term, conf_state };
    net.node(n).compact(Snapshot { meta, data: data.to_vec() }).unwrap();
    status.applied
}

fn lagging_follower_gets_snapshot(drop_second_chunk: bool) {
    let mut net = Network::new(3, |c| c.snapshot_chunk_size = 4);
    net.campaign(1);
    net.isolate(3);
    for k in 0..10u8 {
        net.propose(1, &[k]);
    }
    let data = b"state-machine-image";
    let index = compact_at_applied(&mut net, 1, data);
    assert_eq!(net.node(1).status().first_index, index + 1);
    net.propose(1, b"after");
    net.heal();
    if drop_second_chunk {
        let dropped = std::cell::Cell::new(false);
        net.drop_if = Some(Box::new(move |m: &Message| match m.body {
            MessageBody::Snapshot { offset: 4, .. } if !dropped.get() => {
                dropped.set(true);
                true
            }
            _ => false,
        }));
    }
    net.tick_all(3);
    let chunks =
        net.delivered.iter().filter(|m| matches!(m.body, MessageBody::Snapshot { .. })).count();
    assert!(chunks >= 5, "19 bytes in 4-byte chunks: {chunks}");
    let rejected = net.delivered.iter().any(|m| {
        matches!(m.body, MessageBody::SnapshotResponse { reject: true, next_offset: 4, .. })
    });
    assert_eq!(rejected, drop_second_chunk, "a gap is rejected with the offset to resume at");
    let restored = &net.restored[&id(3)];
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].data, data.to_vec());
    assert_eq!(restored[0].meta.index, index);
    assert_eq!(net.applied_data(3), vec![b"after".to_vec()], "entries after the snapshot apply");
    let follower = net.node(3).status();
    assert_eq!(follower.first_index, index + 1);
    assert_eq!(follower.last_index, net.node(1).status().last_index);
    assert_eq!(follower.applied, follower.commit);
    assert_eq!(net.node(3).store().snapshot().data, data.to_vec());
}

#[test]
fn lagging_follower_receives_snapshot_in_chunks() {
    lagging_follower_gets_snapshot(false);
}

#[test]
fn lost_chunk_makes_leader_resend_from_the_gap() {
    lagging_follower_gets_snapshot(true);
}

#[test]
fn transfer_moves_leadership_and_drops_proposals_meanwhile() {
    let mut net = Network::new(3, |_| {});
    net.campaign(1);
    net.propose(1, b"a");
    net.isolate(2);
    net.node(1).transfer_leader(id(2));
    assert_eq!(net.node(1).propose(TEST_FORMAT, b"b".to_vec()), Err(RaftError::ProposalDropped));
    net.tick_all(10);
    assert_eq!(net.node(1).role(), Role::Leader, "transfer aborted, still leader");
    net.propose(1, b"c");
    net.heal();
    net.tick_all(2);
    net.node(1).transfer_leader(id(2));
    net.deliver_all();
    assert_eq!(net.leaders(), vec![id(2)]);
    assert_eq!(net.node(1).leader(), Some(id(2)));
    net.propose(2, b"d");
    assert_eq!(net.applied_data(1), vec![b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]);
}

#[test]
fn empty_replica_outside_the_voters_learns_them_from_a_snapshot() {
    let mut net = Network::new(3, |c| c.snapshot_chunk_size = 16);
    // Node 3 is created empty, without a membership (as a new replica would be).
    let empty = RaftGroup::new(config(3), MemStorage::new(ConfState::default())).unwrap();
    net.nodes.insert(id(3), empty);
    net.isolate(3);
    net.campaign(1);
    net.propose(1, b"a");
    let index = compact_at_applied(&mut net, 1, b"image");
    net.tick_all(30);
    net.heal();
    net.tick_all(5);
    assert_eq!(net.leaders(), vec![id(1)], "the empty replica never campaigns");
    let status = net.node(3).status();
    assert_eq!(status.voters, vec![id(1), id(2), id(3)]);
    assert_eq!(status.first_index, index + 1);
    assert_eq!(status.applied, net.node(1).status().commit);
}
