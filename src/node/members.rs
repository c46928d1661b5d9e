//! The cluster's members as this node knows them: address and data directory identity
//! of every node ever added, and which were removed. Shared by the event loop (status,
//! redirects, the peer links), the listener (who may connect) and the join handler.
//!
//! Membership changes reach every node through the ranges' conf-change entries
//! (raft/membership.rs): `rangedb node add` puts a `NodeChange::Added` in the context
//! of the entry that adds the node as a learner of each range, `node remove` a
//! `NodeChange::Removed` in the meta range's entry that removes it (the meta range is
//! changed first on add and last on remove). A node applies them as they commit, in
//! log order, and persists the result in its CLUSTER file before going on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::raft::NodeId;
use crate::storage::ClusterMeta;

/// What a conf-change entry tells the nodes about the cluster's members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeChange {
    /// A node joins with this address and data directory identity.
    Added { node: NodeId, address: String, identity: u64 },
    /// A node left for good.
    Removed { node: NodeId },
}

/// The context's encoding: a variant per version.
#[derive(Serialize, Deserialize)]
enum StoredNodeChange {
    V1(NodeChange),
}

impl NodeChange {
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(
            StoredNodeChange::V1(self.clone()),
            bincode::config::standard(),
        )
        .expect("a node change always encodes")
    }

    /// None for an empty context (a change that names no node: leaving a joint
    /// configuration) or one this version cannot read.
    pub fn decode(context: &[u8]) -> Option<NodeChange> {
        if context.is_empty() {
            return None;
        }
        match bincode::serde::decode_from_slice(context, bincode::config::standard()) {
            Ok((StoredNodeChange::V1(change), used)) if used == context.len() => Some(change),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// Every node ever added (removed ones included), this one too.
    pub addresses: BTreeMap<NodeId, String>,
    /// Their data directory identities (absent: not known yet, version-1 upgrades).
    pub identities: BTreeMap<NodeId, u64>,
    pub removed: BTreeSet<NodeId>,
}

pub type SharedMembers = Arc<RwLock<Members>>;

impl Members {
    pub fn from_meta(meta: &ClusterMeta) -> Members {
        Members {
            addresses: meta.peers.clone(),
            identities: meta.identities.clone(),
            removed: meta.removed.clone(),
        }
    }

    /// The metadata to store with these members.
    pub fn to_meta(&self, base: &ClusterMeta) -> ClusterMeta {
        ClusterMeta {
            peers: self.addresses.clone(),
            identities: self.identities.clone(),
            removed: self.removed.clone(),
            ..base.clone()
        }
    }

    /// Members not removed.
    pub fn current(&self) -> impl Iterator<Item = (NodeId, &String)> {
        self.addresses.iter().filter(|(id, _)| !self.removed.contains(id)).map(|(id, a)| (*id, a))
    }

    /// Applies a change; returns whether anything changed.
    pub fn apply(&mut self, change: &NodeChange) -> bool {
        match change {
            NodeChange::Added { node, address, identity } => {
                if self.removed.contains(node) {
                    return false; // Ids are never reused; a stale add changes nothing.
                }
                let before =
                    (self.addresses.get(node).cloned(), self.identities.get(node).copied());
                self.addresses.insert(*node, address.clone());
                self.identities.insert(*node, *identity);
                before != (Some(address.clone()), Some(*identity))
            }
            NodeChange::Removed { node } => self.removed.insert(*node),
        }
    }

    /// The next node id never used in this cluster.
    pub fn next_id(&self) -> NodeId {
        let max = self.addresses.keys().chain(&self.removed).map(|n| n.0).max().unwrap_or(0);
        NodeId(max + 1)
    }

    /// The member at `address`, not removed.
    pub fn by_address(&self, address: &str) -> Option<NodeId> {
        self.current().find(|(_, a)| a.as_str() == address).map(|(id, _)| id)
    }
}

pub fn read(members: &SharedMembers) -> std::sync::RwLockReadGuard<'_, Members> {
    members.read().expect("members lock is never poisoned")
}

pub fn write(members: &SharedMembers) -> std::sync::RwLockWriteGuard<'_, Members> {
    members.write().expect("members lock is never poisoned")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_and_ids_are_never_reused() {
        let added = NodeChange::Added { node: NodeId(4), address: "a:1".into(), identity: 9 };
        assert_eq!(NodeChange::decode(&added.encode()), Some(added.clone()));
        assert_eq!(NodeChange::decode(&[]), None);
        assert_eq!(NodeChange::decode(&[7, 7, 7]), None);
        let mut members = Members::default();
        members.addresses.insert(NodeId(1), "a:0".into());
        assert!(members.apply(&added));
        assert!(!members.apply(&added), "applying twice changes nothing");
        assert_eq!(members.by_address("a:1"), Some(NodeId(4)));
        assert!(members.apply(&NodeChange::Removed { node: NodeId(4) }));
        assert_eq!(members.by_address("a:1"), None);
        assert_eq!(members.next_id(), NodeId(5));
        assert!(!members.apply(&added), "a removed id does not come back");
    }
}
