//! Snapshot transfer (Raft paper section 7) in chunks of `snapshot_chunk_size`.
//!
//! ```text
//!  leader                                   follower
//!  Snapshot{offset 0, chunk}  ──────────>   start assembly
//!  ... up to SNAPSHOT_WINDOW chunks unacked  append; ack next_offset
//!  Snapshot{.., done}         ──────────>   restore log to it -> Ready.snapshot
//!                   <──────────  SnapshotResponse{next_offset = total} (after persist)
//!  probe from index + 1
//! ```
//! A mismatch (unknown assembly, gap) is answered with `reject` and the offset to
//! resume from; an unresponsive follower gets the transfer restarted.

use super::message::*;
use super::RaftGroup;

/// Chunks the leader may have sent and not yet had acknowledged.
const SNAPSHOT_WINDOW: u64 = 4;

/// Follower: a snapshot being received.
#[derive(Clone, Debug)]
pub struct SnapshotAssembly {
    meta: SnapshotMeta,
    total_len: u64,
    data: Vec<u8>,
}

impl RaftGroup {
    /// Leader: starts sending the latest stored snapshot to `to`.
    pub(super) fn start_snapshot_transfer(&mut self, to: NodeId) {
        let index = self.log.store.snapshot_ref().meta.index;
        self.progress.get_mut(&to).expect("leader tracks every voter").become_snapshot(index);
        self.send_snapshot_chunks(to);
    }

    /// Leader: sends chunks while the window allows.
    fn send_snapshot_chunks(&mut self, to: NodeId) {
        let snapshot = self.log.store.snapshot_ref();
        let chunk_size = self.config.snapshot_chunk_size;
        let total_len = snapshot.data.len() as u64;
        let progress = self.progress.get_mut(&to).expect("leader tracks every voter");
        let mut transfer = progress.snapshot.expect("progress is in Snapshot state");
        if transfer.index != snapshot.meta.index {
            // A newer compaction replaced the snapshot being sent: start over.
            progress.become_snapshot(snapshot.meta.index);
            transfer = progress.snapshot.expect("just set");
        }
        let mut chunks = Vec::new();
        while !transfer.all_sent && transfer.sent < transfer.acked + SNAPSHOT_WINDOW * chunk_size {
            let end = (transfer.sent + chunk_size).min(total_len);
            let chunk = snapshot.data[transfer.sent as usize..end as usize].to_vec();
            let done = end == total_len;
            chunks.push(MessageBody::Snapshot {
                meta: snapshot.meta.clone(),
                total_len,
                offset: transfer.sent,
                chunk,
                done,
            });
            transfer.sent = end;
            transfer.all_sent = done;
        }
        progress.snapshot = Some(transfer);
        for body in chunks {
            self.send(to, body);
        }
    }

    /// Leader: a follower acknowledged (or rejected) snapshot chunks.
    pub(super) fn handle_snapshot_response(&mut self, msg: &Message) {
        let MessageBody::SnapshotResponse { index, next_offset, reject } = msg.body else {
            unreachable!("not a SnapshotResponse: {:?}", msg.body);
        };
        let total_len = self.log.store.snapshot_ref().data.len() as u64;
        let progress = self.progress.get_mut(&msg.from).expect("leader tracks every voter");
        let Some(transfer) = progress.snapshot.as_mut().filter(|t| t.index == index) else {
            return; // Stale: not the transfer in progress.
        };
        transfer.idle_ticks = 0;
        if reject {
            transfer.acked = next_offset.min(transfer.sent);
            transfer.sent = transfer.acked;
            transfer.all_sent = false;
        } else {
            transfer.acked = transfer.acked.max(next_offset);
        }
        if !reject && transfer.all_sent && transfer.acked >= total_len {
            progress.become_probe();
            progress.maybe_update(index);
            self.maybe_send_append(msg.from, true);
            return;
        }
        self.send_snapshot_chunks(msg.from);
    }

    /// Leader: restarts transfers to followers silent for an election timeout.
    pub(super) fn tick_snapshot_transfers(&mut self) {
        let limit = self.config.election_tick;
        let mut restart = Vec::new();
        for (&peer, progress) in self.progress.iter_mut() {
            if let Some(transfer) = progress.snapshot.as_mut() {
                transfer.idle_ticks += 1;
                if transfer.idle_ticks >= limit {
                    restart.push(peer);
                }
            }
        }
        for peer in restart {
            self.start_snapshot_transfer(peer);
        }
    }

    /// Follower: one chunk of a snapshot from the leader.
    pub(super) fn handle_snapshot(&mut self, msg: Message) {
        let MessageBody::Snapshot { meta, total_len, offset, chunk, done } = msg.body else {
            unreachable!("not a Snapshot: {:?}", msg.body);
        };
        let (from, index) = (msg.from, meta.index);
        if offset == 0 {
            self.incoming_snapshot =
                Some(SnapshotAssembly { meta: meta.clone(), total_len, data: Vec::new() });
        }
        let respond = |group: &mut RaftGroup, next_offset: u64, reject: bool| {
            group.send(from, MessageBody::SnapshotResponse { index, next_offset, reject });
        };
        let Some(assembly) =
            self.incoming_snapshot.as_mut().filter(|a| a.meta == meta && a.total_len == total_len)
        else {
            self.incoming_snapshot = None;
            return respond(self, 0, true);
        };
        let have = assembly.data.len() as u64;
        if offset > have {
            return respond(self, have, true);
        }
        let skip = ((have - offset) as usize).min(chunk.len());
        assembly.data.extend_from_slice(&chunk[skip..]);
        let have = assembly.data.len() as u64;
        if !done || have < total_len {
            return respond(self, have, false);
        }
        let assembly = self.incoming_snapshot.take().expect("checked above");
        self.restore_snapshot(Snapshot { meta: assembly.meta, data: assembly.data });
        respond(self, total_len, false);
    }

    /// Follower: resets the log to a complete snapshot unless it is not news.
    fn restore_snapshot(&mut self, snapshot: Snapshot) {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        if index <= self.log.committed {
            return;
        }
        if self.log.match_term(index, term) {
            // Our log already holds it: just learn that it is committed.
            self.log.commit_to(index);
            return;
        }
        let meta = snapshot.meta.clone();
        self.log.restore(snapshot);
        self.note_log_restored(&meta);
    }
}
