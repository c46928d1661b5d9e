//! Node-level liveness: what lets idle ranges quiesce (raft/quiesce.rs) and still
//! notice a dead leader. Every frame from a peer proves it alive; a node that sent a
//! peer nothing for `PING_TICKS` sends it an empty batch, so the cost of an idle
//! cluster is one small frame per node pair and ping interval, whatever the number
//! of ranges (CockroachDB's coalesced heartbeats plus node liveness, in one).
//!
//! ```text
//!  frame from P ─► heard(P) ──(was silent)──► P came back: wake the ranges we lead
//!  tick ─► P silent >= SILENT_TICKS ─► P went silent: wake the ranges we lead (they
//!          run check-quorum) and the ranges P leads here (they count the silence as
//!          election time and campaign)
//! ```

use std::collections::BTreeMap;

use crate::raft::NodeId;

/// Ticks without sending a peer anything after which it gets an empty batch: 200 ms
/// at the default tick, so a peer counts as silent only after missing two pings.
pub const PING_TICKS: u64 = 4;
/// Ticks without hearing from a peer after which it counts as silent: the base
/// election timeout, so a missed ping or two does not wake anything.
pub const SILENT_TICKS: u64 = 10;

#[derive(Clone, Copy, Debug)]
struct Peer {
    /// Node tick of the last frame from the peer (None: never).
    heard: Option<u64>,
    /// Node tick of the last frame sent to it.
    sent: u64,
    /// Counted as live (heard within `SILENT_TICKS`).
    live: bool,
}

pub struct Liveness {
    peers: BTreeMap<NodeId, Peer>,
}

impl Liveness {
    pub fn new(peers: impl IntoIterator<Item = NodeId>) -> Liveness {
        let peers =
            peers.into_iter().map(|p| (p, Peer { heard: None, sent: 0, live: false })).collect();
        Liveness { peers }
    }

    /// A member was added: watched from now on (silent until heard from).
    pub fn add(&mut self, peer: NodeId) {
        self.peers.entry(peer).or_insert(Peer { heard: None, sent: 0, live: false });
    }

    /// A member was removed: no more pings.
    pub fn remove(&mut self, peer: NodeId) {
        self.peers.remove(&peer);
    }

    /// A frame from `peer` arrived at node tick `now`. Returns whether it came back
    /// (was silent, or never heard from).
    pub fn heard(&mut self, peer: NodeId, now: u64) -> bool {
        let Some(state) = self.peers.get_mut(&peer) else {
            return false;
        };
        state.heard = Some(now);
        !std::mem::replace(&mut state.live, true)
    }

    /// A frame to `peer` was sent at node tick `now`.
    pub fn sent(&mut self, peer: NodeId, now: u64) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.sent = now;
        }
    }

    /// Peers sent nothing for `PING_TICKS` at node tick `now`: they get a ping.
    pub fn due_pings(&self, now: u64) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(_, state)| now.saturating_sub(state.sent) >= PING_TICKS)
            .map(|(&peer, _)| peer)
            .collect()
    }

    /// Marks peers silent for `SILENT_TICKS` as not live; returns whether any was live.
    pub fn expire(&mut self, now: u64) -> bool {
        !self.expire_peers(now).is_empty()
    }

    /// Marks peers silent for `SILENT_TICKS` as not live; returns those that were.
    pub fn expire_peers(&mut self, now: u64) -> Vec<NodeId> {
        let mut went_silent = Vec::new();
        for (peer, state) in &mut self.peers {
            let silent = now.saturating_sub(state.heard.unwrap_or(0));
            if state.live && silent >= SILENT_TICKS {
                state.live = false;
                went_silent.push(*peer);
            }
        }
        went_silent
    }

    /// Ticks since `peer` was last heard from, if it counts as silent (or unknown).
    pub fn silent_ticks(&self, peer: NodeId, now: u64) -> Option<u64> {
        match self.peers.get(&peer) {
            Some(state) if state.live => None,
            Some(state) => Some(now.saturating_sub(state.heard.unwrap_or(0))),
            None => Some(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_pings_idle_links_and_expires_silent_peers() {
        let (a, b) = (NodeId(2), NodeId(3));
        let mut liveness = Liveness::new([a, b]);
        assert_eq!(liveness.due_pings(PING_TICKS - 1), Vec::<NodeId>::new());
        assert_eq!(liveness.due_pings(PING_TICKS), vec![a, b]);
        liveness.sent(a, 2);
        assert_eq!(liveness.due_pings(PING_TICKS + 1), vec![b]);
        assert!(liveness.heard(a, 3), "first frame: a came back");
        assert!(!liveness.heard(a, 4));
        assert_eq!(liveness.silent_ticks(a, 5), None);
        assert_eq!(liveness.silent_ticks(b, 5), Some(5), "never heard: silent");
        assert!(!liveness.expire(4 + SILENT_TICKS - 1));
        assert!(liveness.expire(4 + SILENT_TICKS));
        assert_eq!(liveness.silent_ticks(a, 20), Some(16));
        assert!(liveness.heard(a, 21));
    }
}
