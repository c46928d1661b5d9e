//! `rangedb status`: every node's own report, gathered concurrently, and a merged
//! per-range view.

use std::collections::BTreeMap;

use crate::raft::NodeId;
use crate::range::descriptor::RangeId;
use crate::wire::{NodeStatus, RangeStatus, Request, Response};

use super::conn::CallError;
use super::Client;

/// What one address answered to `Request::Status`.
#[derive(Clone, Debug)]
pub struct NodeReport {
    pub address: String,
    /// The node's status, or why it could not be had (unreachable, timed out).
    pub status: Result<NodeStatus, String>,
}

/// Every node's report, one per node: addresses that turned out to be the same node
/// are merged.
#[derive(Clone, Debug, Default)]
pub struct ClusterStatus {
    pub nodes: Vec<NodeReport>,
}

impl ClusterStatus {
    /// One line per range: the view of the replica that is its leader, else the most
    /// advanced one (highest term, then commit). Sorted by range start.
    pub fn ranges(&self) -> Vec<RangeStatus> {
        let mut best: BTreeMap<RangeId, RangeStatus> = BTreeMap::new();
        for node in &self.nodes {
            let Ok(status) = &node.status else { continue };
            for range in &status.ranges {
                let is_leader = range.leader == Some(status.node);
                let better = match best.get(&range.descriptor.id) {
                    None => true,
                    Some(current) => {
                        let current_is_leader = current_leader_is_self(current, &self.nodes);
                        (is_leader && !current_is_leader)
                            || (is_leader == current_is_leader
                                && (range.term, range.commit) > (current.term, current.commit))
                    }
                };
                if better {
                    best.insert(range.descriptor.id, range.clone());
                }
            }
        }
        let mut ranges: Vec<RangeStatus> = best.into_values().collect();
        ranges.sort_by(|a, b| a.descriptor.start.cmp(&b.descriptor.start));
        ranges
    }

    /// The cluster's id, from the first node that answered.
    pub fn cluster(&self) -> Option<u64> {
        self.nodes.iter().find_map(|report| report.status.as_ref().ok().map(|own| own.cluster))
    }

    /// The id of the node at `address` as it or its peers know it.
    pub fn id_of(&self, address: &str) -> Option<NodeId> {
        let answered = self.nodes.iter().filter_map(|report| report.status.as_ref().ok());
        let mut known = answered.flat_map(|own| {
            std::iter::once((own.node, own.address.as_str()))
                .chain(own.peers.iter().map(|(id, peer, _)| (*id, peer.as_str())))
        });
        known.find(|(_, known)| *known == address).map(|(id, _)| id)
    }

    /// The address a node reported for itself, if it answered.
    pub fn address_of(&self, node: NodeId) -> Option<&str> {
        self.nodes.iter().find_map(|report| match &report.status {
            Ok(status) if status.node == node => Some(status.address.as_str()),
            _ => None,
        })
    }
}

/// Whether `range` came from the replica that leads it. A range status does not
/// name the node that reported it, so look for a leader's own report.
fn current_leader_is_self(range: &RangeStatus, nodes: &[NodeReport]) -> bool {
    nodes.iter().any(|report| match &report.status {
        Ok(status) => {
            Some(status.node) == range.leader && status.ranges.iter().any(|own| own == range)
        }
        Err(_) => false,
    })
}

/// Queries `addresses` concurrently, then any peer address they report that was not
/// asked yet.
pub(super) async fn collect(client: &Client, mut addresses: Vec<String>) -> ClusterStatus {
    let timeout = client.inner.config.attempt_timeout;
    let mut reports: Vec<NodeReport> = Vec::new();
    let mut asked: Vec<String> = Vec::new();
    while !addresses.is_empty() {
        let mut tasks = Vec::new();
        for address in addresses.drain(..) {
            if asked.contains(&address) {
                continue;
            }
            asked.push(address.clone());
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let status = match client.call(&address, Request::Status, timeout).await {
                    Ok(Response::Status(status)) => Ok(status),
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(CallError::TimedOut) => Err(format!("no answer within {timeout:?}")),
                    Err(CallError::NotSent { reason, .. } | CallError::Broken { reason }) => {
                        Err(reason)
                    }
                };
                NodeReport { address, status }
            }));
        }
        for task in tasks {
            if let Ok(report) = task.await {
                reports.push(report);
            }
        }
        for report in &reports {
            if let Ok(status) = &report.status {
                for (_, address, _) in &status.peers {
                    if !asked.contains(address) && !addresses.contains(address) {
                        addresses.push(address.clone());
                    }
                }
            }
        }
    }
    ClusterStatus { nodes: dedupe(reports) }
}

/// Keeps one report per node id (the first); unreachable addresses are kept unless
/// a node that answered reports that address as its own.
fn dedupe(reports: Vec<NodeReport>) -> Vec<NodeReport> {
    let mut seen: Vec<NodeId> = Vec::new();
    let own_addresses: Vec<String> = reports
        .iter()
        .filter_map(|report| report.status.as_ref().ok().map(|status| status.address.clone()))
        .collect();
    let mut kept = Vec::new();
    for report in reports {
        match &report.status {
            Ok(status) => {
                if seen.contains(&status.node) {
                    continue;
                }
                seen.push(status.node);
            }
            Err(_) if own_addresses.contains(&report.address) => continue,
            Err(_) => {}
        }
        kept.push(report);
    }
    kept.sort_by_key(|report| match &report.status {
        Ok(status) => (0, status.node.0, report.address.clone()),
        Err(_) => (1, 0, report.address.clone()),
    });
    kept
}
