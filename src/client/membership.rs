//! `rangedb node add / remove / replace`: the steps of a membership change, one range
//! at a time, each sent to the range's leader (`Request::ChangeReplicas`). Every step
//! is idempotent on the server (a step already done answers at once), so a command
//! that was interrupted is finished by running it again.
//!
//! ```text
//!  add ADDR:        learner on every range (meta range first) -> wait until each has
//!                   caught up with its leader -> promote (joint change) everywhere
//!  remove ID:       out of every range (joint change when a voter), meta range last
//!                   (its entry marks the node removed: it stops, its id is retired)
//!  replace ID ADDR: add ADDR as a learner and let it catch up, then in one joint
//!                   change per range ID stops voting and ADDR starts
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::raft::NodeId;
use crate::range::descriptor::{RangeDescriptor, RESERVED_PREFIX};
use crate::wire::{
    read_frame, write_frame, Hello, HelloReply, HelloRole, RangeMembership, RangeStatus, ReplicaOp,
    Request, Response,
};

use super::{check_response, unexpected, Client, ClientError, ClusterStatus, Kind};

/// A learner counts as caught up when it is at most this many entries behind its
/// leader's commit index.
pub const CAUGHT_UP_LAG: u64 = 64;
/// Time between two looks at the ranges while waiting.
const POLL: Duration = Duration::from_millis(200);

/// What a membership command did.
#[derive(Clone, Debug)]
pub struct MembershipReport {
    pub node: NodeId,
    pub ranges: usize,
    /// Adding: time from the first learner to the last one caught up.
    pub catch_up: Duration,
    pub total: Duration,
}

/// Who answers at an address: its cluster (0: none yet), node id and identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    pub cluster: u64,
    pub node: NodeId,
    pub identity: u64,
}

impl Client {
    /// Says hello to `address` and reports who answered.
    ///
    /// # Errors
    /// `Unavailable` when it cannot be reached or refuses.
    pub async fn probe(&self, address: &str) -> Result<NodeIdentity, ClientError> {
        let unavailable = |reason: String| ClientError::Unavailable { reason };
        let exchange = async {
            let mut stream = TcpStream::connect(address)
                .await
                .map_err(|e| unavailable(format!("cannot connect to {address}: {e}")))?;
            write_frame(&mut stream, &Hello::new(HelloRole::Client))
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            stream.flush().await.map_err(|e| unavailable(e.to_string()))?;
            match read_frame::<HelloReply, _>(&mut stream).await {
                Ok(Some(HelloReply::Accepted { cluster, node, identity, .. })) => {
                    Ok(NodeIdentity { cluster, node, identity })
                }
                Ok(Some(HelloReply::Refused { reason, .. } | HelloReply::Removed { reason })) => {
                    Err(unavailable(format!("{address} refused: {reason}")))
                }
                Ok(None) => Err(unavailable(format!("{address} closed the connection"))),
                Err(error) => Err(unavailable(format!("{address}: {error}"))),
            }
        };
        let timeout = self.inner.config.attempt_timeout;
        tokio::time::timeout(timeout, exchange).await.unwrap_or_else(|_| {
            Err(unavailable(format!("{address} did not answer in {timeout:?}")))
        })
    }

    /// One step on one range, sent to its leader; the range's configuration after it.
    ///
    /// # Errors
    /// `Invalid` with the reason when the step cannot be made; the usual errors when
    /// no leader answers in time.
    pub async fn change_replicas(
        &self,
        range: &RangeDescriptor,
        op: ReplicaOp,
    ) -> Result<RangeMembership, ClientError> {
        let request = Request::ChangeReplicas { range: range.id, op };
        // A step is idempotent: retried like a read, never "outcome unknown".
        let response = self.execute(&range.start, request, Kind::Read, self.deadline()).await?;
        match check_response(response)? {
            Response::Membership(membership) => Ok(membership),
            other => Err(unexpected("ChangeReplicas", &other)),
        }
    }

    /// Adds the node listening at `address` (started with `--join`): learner on every
    /// range, then voter once caught up. `progress` gets a line per step.
    ///
    /// # Errors
    /// `Invalid` when `address` belongs to another cluster or the cluster refuses;
    /// availability errors.
    pub async fn add_node(
        &self,
        address: &str,
        mut progress: impl FnMut(&str),
    ) -> Result<MembershipReport, ClientError> {
        let started = Instant::now();
        let (node, identity, status) = self.learner_for(address, &mut progress).await?;
        let ranges = add_order(&status);
        let catch_up = self.add_learners(&ranges, node, address, identity, &mut progress).await?;
        for (k, range) in ranges.iter().enumerate() {
            progress(&format!("promoting {node} to voter: {}/{} ranges", k, ranges.len()));
            self.change_replicas(range, ReplicaOp::Promote { node }).await?;
        }
        self.wait_settled(&ranges, |m| m.voters.contains(&node), "promotion", &mut progress)
            .await?;
        let mut count = ranges.len();
        for _ in 0..SPLIT_ROUNDS_MAX {
            let more = self.ranges_not(|m| m.voters.contains(&node)).await;
            if more.is_empty() {
                break;
            }
            progress(&format!("{} ranges split off meanwhile", more.len()));
            self.add_learners(&more, node, address, identity, &mut progress).await?;
            for range in &more {
                self.change_replicas(range, ReplicaOp::Promote { node }).await?;
            }
            self.wait_settled(&more, |m| m.voters.contains(&node), "promotion", &mut progress)
                .await?;
            count += more.len();
        }
        Ok(MembershipReport { node, ranges: count, catch_up, total: started.elapsed() })
    }

    /// Removes `node` from every range (the meta range last), then from the cluster.
    ///
    /// # Errors
    /// `Invalid` when removing it would leave a range without voters, or without a
    /// majority of its voters up (the reason says which); availability errors.
    pub async fn remove_node(
        &self,
        node: NodeId,
        mut progress: impl FnMut(&str),
    ) -> Result<MembershipReport, ClientError> {
        let started = Instant::now();
        let status = self.status().await;
        let known = status_members(&status);
        if !known.contains(&node) {
            return Err(ClientError::Invalid { reason: format!("{node} is not a member") });
        }
        // Every range but the meta range first, then again for ranges split off
        // meanwhile (they take their range's configuration at the split), and the
        // meta range last: its entry retires the node, which stops then.
        let (meta, others) = meta_and_others(add_order(&status));
        let done = |m: &RangeMembership| !is_member(m, node);
        let mut count = 0;
        let mut pending = others;
        for _ in 0..=SPLIT_ROUNDS_MAX {
            for range in &pending {
                progress(&format!("removing {node}: {count} ranges"));
                self.change_replicas(range, ReplicaOp::Remove { node, last: false }).await?;
                count += 1;
            }
            self.wait_settled(&pending, done, "removal", &mut progress).await?;
            pending = self.ranges_not(done).await;
            pending.retain(|range| Some(range.id) != meta.as_ref().map(|m| m.id));
            if pending.is_empty() {
                break;
            }
            progress(&format!("{} ranges split off meanwhile", pending.len()));
        }
        if let Some(meta) = meta {
            progress(&format!("removing {node}: {count} ranges"));
            self.change_replicas(&meta, ReplicaOp::Remove { node, last: true }).await?;
            self.wait_settled(&[meta], done, "removal", &mut progress).await?;
            count += 1;
        }
        Ok(MembershipReport {
            node,
            ranges: count,
            catch_up: Duration::ZERO,
            total: started.elapsed(),
        })
    }

    /// Replaces member `old` (typically a node whose data directory was lost) by the
    /// node listening at `address` (started with `--join`): it catches up as a
    /// learner, then one joint change per range swaps the voters.
    ///
    /// # Errors
    /// As `add_node` and `remove_node`.
    pub async fn replace_node(
        &self,
        old: NodeId,
        address: &str,
        mut progress: impl FnMut(&str),
    ) -> Result<MembershipReport, ClientError> {
        let started = Instant::now();
        let (node, identity, status) = self.learner_for(address, &mut progress).await?;
        let ranges = add_order(&status);
        if !status_members(&status).contains(&old) {
            // Done already (a command run again), or nothing to replace.
            let views = status.ranges();
            let done = !ranges.is_empty()
                && views.iter().all(|v| v.voters.contains(&node) && v.outgoing.is_empty());
            if done {
                let elapsed = started.elapsed();
                return Ok(MembershipReport {
                    node,
                    ranges: ranges.len(),
                    catch_up: elapsed,
                    total: elapsed,
                });
            }
            return Err(ClientError::Invalid { reason: format!("{old} is not a member") });
        }
        let catch_up = self.add_learners(&ranges, node, address, identity, &mut progress).await?;
        // As `remove_node`: the meta range last, its entry retires `old`.
        let (meta, others) = meta_and_others(ranges);
        let done = |m: &RangeMembership| m.voters.contains(&node) && !is_member(m, old);
        let mut count = 0;
        let mut pending = others;
        for round in 0..=SPLIT_ROUNDS_MAX {
            if round > 0 {
                self.add_learners(&pending, node, address, identity, &mut progress).await?;
            }
            for range in &pending {
                progress(&format!("replacing {old} by {node}: {count} ranges"));
                let op = ReplicaOp::Replace { remove: old, add: node, last: false };
                self.change_replicas(range, op).await?;
                count += 1;
            }
            self.wait_settled(&pending, done, "replacement", &mut progress).await?;
            pending = self.ranges_not(done).await;
            pending.retain(|range| Some(range.id) != meta.as_ref().map(|m| m.id));
            if pending.is_empty() {
                break;
            }
            progress(&format!("{} ranges split off meanwhile", pending.len()));
        }
        if let Some(meta) = meta {
            progress(&format!("replacing {old} by {node}: {count} ranges"));
            let op = ReplicaOp::Replace { remove: old, add: node, last: true };
            self.change_replicas(&meta, op).await?;
            self.wait_settled(&[meta], done, "replacement", &mut progress).await?;
            count += 1;
        }
        Ok(MembershipReport { node, ranges: count, catch_up, total: started.elapsed() })
    }

    /// Who the node at `address` will be: the id it already has in this cluster, or
    /// a new one; its identity; and the cluster's status.
    async fn learner_for(
        &self,
        address: &str,
        progress: &mut impl FnMut(&str),
    ) -> Result<(NodeId, u64, ClusterStatus), ClientError> {
        let probed = self.probe(address).await?;
        // A node an earlier command was adding may be in a configuration before its
        // identity is applied anywhere: its id is taken, and may be this node's. Wait
        // until every member in a configuration has a known identity.
        let mut status = self.status().await;
        let deadline = Instant::now() + self.inner.config.request_timeout;
        while let Some(pending) = unrecorded(&status) {
            if Instant::now() >= deadline {
                return Err(ClientError::Unavailable {
                    reason: format!(
                        "the change adding {pending} is not applied yet; run the command again"
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
            status = self.status().await;
        }
        let own = status.nodes.iter().find_map(|report| report.status.as_ref().ok());
        let Some(own) = own else {
            return Err(ClientError::Unavailable {
                reason: "no member of the cluster answered (--endpoints)".into(),
            });
        };
        if probed.cluster != 0 && probed.cluster != own.cluster {
            return Err(ClientError::Invalid {
                reason: format!(
                    "{address} belongs to another cluster ({:016x}); start it with an empty \
                     data directory and --join",
                    probed.cluster
                ),
            });
        }
        // Already given an id (a command run again): the node says so if it joined;
        // else some member knows its identity.
        let reports: Vec<&crate::wire::NodeStatus> =
            status.nodes.iter().filter_map(|report| report.status.as_ref().ok()).collect();
        let removed: BTreeSet<NodeId> =
            reports.iter().flat_map(|r| r.removed.iter().copied()).collect();
        let known = reports
            .iter()
            .flat_map(|r| r.identities.iter())
            .find(|(id, identity)| *identity == probed.identity && !removed.contains(id));
        let node = if probed.cluster == own.cluster && probed.node.0 != 0 {
            probed.node
        } else if let Some((id, _)) = known {
            *id
        } else {
            let mut all: BTreeSet<NodeId> = status_members(&status);
            all.extend(removed);
            for report in &reports {
                all.extend(report.identities.iter().map(|(id, _)| *id));
                all.extend(report.peers.iter().map(|(id, _, _)| *id));
                all.insert(report.node);
            }
            NodeId(all.iter().map(|n| n.0).max().unwrap_or(0) + 1)
        };
        progress(&format!("{address} (identity {:016x}) will be {node}", probed.identity));
        Ok((node, probed.identity, status))
    }

    /// Adds `node` as a learner of every range and waits until each has caught up;
    /// returns how long the catching up took.
    async fn add_learners(
        &self,
        ranges: &[RangeDescriptor],
        node: NodeId,
        address: &str,
        identity: u64,
        progress: &mut impl FnMut(&str),
    ) -> Result<Duration, ClientError> {
        let started = Instant::now();
        for (k, range) in ranges.iter().enumerate() {
            progress(&format!("adding {node} as a learner: {k}/{} ranges", ranges.len()));
            let op = ReplicaOp::AddLearner { node, address: address.to_string(), identity };
            self.change_replicas(range, op).await?;
        }
        let mut last_report = Instant::now();
        loop {
            let status = self.status().await;
            let views = status.ranges();
            let behind: Vec<u64> = ranges
                .iter()
                .map(|range| {
                    let view = views.iter().find(|v| v.descriptor.id == range.id);
                    view.map_or(u64::MAX, |v| lag(v, node))
                })
                .collect();
            let caught_up = behind.iter().filter(|&&lag| lag <= CAUGHT_UP_LAG).count();
            if caught_up == ranges.len() {
                return Ok(started.elapsed());
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                let entries: u64 = behind.iter().filter(|&&l| l != u64::MAX).sum();
                progress(&format!(
                    "catching up: {caught_up}/{} ranges caught up, {entries} entries to go, {:.0?}",
                    ranges.len(),
                    started.elapsed()
                ));
                last_report = Instant::now();
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every range's configuration satisfies `done` and is not joint.
    async fn wait_settled(
        &self,
        ranges: &[RangeDescriptor],
        done: impl Fn(&RangeMembership) -> bool,
        what: &str,
        progress: &mut impl FnMut(&str),
    ) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        loop {
            let views = self.status().await.ranges();
            let settled = ranges
                .iter()
                .filter(|range| {
                    views.iter().any(|v| {
                        v.descriptor.id == range.id && v.outgoing.is_empty() && done(&membership(v))
                    })
                })
                .count();
            if settled == ranges.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout {
                    reason: format!(
                        "{what} committed on {settled} of {} ranges so far; run the command \
                         again to finish it",
                        ranges.len()
                    ),
                });
            }
            progress(&format!("{what}: {settled}/{} ranges done", ranges.len()));
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The ranges in the order nodes are added: the meta range first (its entries tell
/// every node about members), then by start key.
/// Rounds of catching up with ranges split off while a membership command ran (a
/// range that splits takes its configuration at the split, which may predate the
/// command's change of it).
const SPLIT_ROUNDS_MAX: usize = 5;

impl Client {
    /// The ranges, by the cluster's status now, whose configuration `done` is not
    /// true of, in add order.
    async fn ranges_not(&self, done: impl Fn(&RangeMembership) -> bool) -> Vec<RangeDescriptor> {
        let status = self.status().await;
        let pending: BTreeSet<_> = status
            .ranges()
            .iter()
            .filter(|view| !done(&membership(view)))
            .map(|view| view.descriptor.id)
            .collect();
        add_order(&status).into_iter().filter(|d| pending.contains(&d.id)).collect()
    }
}

/// The meta range (first in add order), and the others.
fn meta_and_others(
    mut ranges: Vec<RangeDescriptor>,
) -> (Option<RangeDescriptor>, Vec<RangeDescriptor>) {
    match ranges.first() {
        Some(first) if first.contains(RESERVED_PREFIX) => {
            let meta = ranges.remove(0);
            (Some(meta), ranges)
        }
        _ => (None, ranges),
    }
}

fn add_order(status: &ClusterStatus) -> Vec<RangeDescriptor> {
    let mut ranges: Vec<RangeDescriptor> =
        status.ranges().into_iter().map(|r| r.descriptor).collect();
    ranges.sort_by_key(|d| (!d.contains(RESERVED_PREFIX), d.start.clone()));
    ranges
}

/// A node some configuration names that no member knows yet (the change adding it
/// records its address and identity when applied).
fn unrecorded(status: &ClusterStatus) -> Option<NodeId> {
    let mut recorded = BTreeSet::new();
    for report in status.nodes.iter().filter_map(|report| report.status.as_ref().ok()) {
        recorded.insert(report.node);
        recorded.extend(report.identities.iter().map(|(id, _)| *id));
        recorded.extend(report.peers.iter().map(|(id, _, _)| *id));
        recorded.extend(report.removed.iter().copied());
    }
    status_members(status).into_iter().find(|node| !recorded.contains(node))
}

/// Every node some range's configuration names.
fn status_members(status: &ClusterStatus) -> BTreeSet<NodeId> {
    let mut all = BTreeSet::new();
    for range in status.ranges() {
        all.extend(range.voters.iter().chain(&range.outgoing).chain(&range.learners).copied());
    }
    all
}

fn membership(view: &RangeStatus) -> RangeMembership {
    RangeMembership {
        range: view.descriptor.id,
        voters: view.voters.clone(),
        outgoing: view.outgoing.clone(),
        learners: view.learners.clone(),
    }
}

fn is_member(m: &RangeMembership, node: NodeId) -> bool {
    m.voters.contains(&node) || m.outgoing.contains(&node) || m.learners.contains(&node)
}

/// How far `node` is behind the leader's commit index, by the leader's view: MAX
/// when the view is not the leader's, does not track it yet, or it has acknowledged
/// nothing yet (a node that has not started holds nothing, however short the log).
pub fn lag(view: &RangeStatus, node: NodeId) -> u64 {
    match view.matched.iter().find(|(n, _)| *n == node) {
        Some(&(_, matched)) if matched > 0 => view.commit.saturating_sub(matched),
        _ => u64::MAX,
    }
}
