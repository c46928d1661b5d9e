//! Membership changes (Raft paper section 6, joint consensus): configurations live in
//! the log as entries of kind `EntryFormat::KIND_CONF_CHANGE`, each carrying the whole
//! configuration it installs, and a replica uses the latest one in its log whether or
//! not it is committed (paper 6: "a server always uses the latest configuration in its
//! log"). A truncated suffix takes its configurations with it.
//!
//! ```text
//!  C_old ──propose──> C_old,new (joint: every decision needs a majority of BOTH)
//!                         │ committed
//!                         └──leader appends──> C_new ── committed: a leader not in
//!                                                        C_new steps down
//! ```
//!
//! Rules the leader enforces (`propose_conf_change`): no change before it has
//! committed an entry of its own term (a previous leader's uncommitted change may
//! still be replaced); no change while another is uncommitted or a joint
//! configuration has not been left; adding or removing learners needs no joint phase
//! (they never count). The leader leaves a joint configuration on its own as soon as it
//! is committed.
//!
//! A snapshot never captures a joint configuration (`RaftGroup::conf_state_at`
//! answers None there and the driver postpones compaction): `ConfState`, on disk and
//! on the wire, keeps the layout of the versions before joint consensus.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::message::*;
use super::progress::Progress;
use super::quorum::{self, VoteResult};
use super::{RaftError, RaftGroup, Role};

/// A configuration: who votes and who only receives the log. `outgoing` is non-empty
/// only in a joint configuration, whose decisions need a majority of `voters` AND one
/// of `outgoing`. A node may be both an outgoing voter and a learner (a voter being
/// demoted); never both an incoming voter and a learner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub outgoing: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    pub fn from_conf_state(conf_state: &ConfState) -> Membership {
        Membership {
            voters: conf_state.voters.iter().copied().collect(),
            outgoing: BTreeSet::new(),
            learners: conf_state.learners.iter().copied().collect(),
        }
    }

    /// The snapshot form; None for a joint configuration (never snapshotted).
    pub fn conf_state(&self) -> Option<ConfState> {
        (!self.is_joint()).then(|| ConfState {
            voters: self.voters.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
        })
    }

    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether `node` votes in this configuration (incoming or outgoing).
    pub fn is_voter(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.outgoing.contains(&node)
    }

    /// Every voter, incoming and outgoing, each once, in order.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        self.voters.union(&self.outgoing).copied().collect()
    }

    /// Every member the leader replicates to.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut members = self.all_voters();
        members.extend(self.learners.iter().copied());
        members
    }

    /// The only voter is `node`, and no change is under way.
    pub fn is_single_voter(&self, node: NodeId) -> bool {
        !self.is_joint() && self.voters.len() == 1 && self.voters.contains(&node)
    }

    /// The largest value a quorum of this configuration reaches, one value per voter
    /// from `value` (None: never): in a joint configuration the smaller of the two
    /// majorities' values.
    /// A set with no voter reaches nothing (None): never a configuration in force (a
    /// conf-change entry installing one is refused as unreadable), but no panic either.
    pub fn quorum_value<T: Ord + Copy>(&self, value: impl Fn(NodeId) -> Option<T>) -> Option<T> {
        let of = |set: &BTreeSet<NodeId>| {
            if set.is_empty() {
                return None;
            }
            quorum::quorum_value(set.iter().map(|&v| value(v)).collect())
        };
        let incoming = of(&self.voters);
        if self.is_joint() {
            incoming.min(of(&self.outgoing))
        } else {
            incoming
        }
    }

    /// An election's outcome: won when both majorities granted, lost when either
    /// cannot any more.
    pub fn vote_result(&self, votes: &std::collections::BTreeMap<NodeId, bool>) -> VoteResult {
        let incoming = quorum::vote_result(&self.voters, votes);
        if !self.is_joint() {
            return incoming;
        }
        match (incoming, quorum::vote_result(&self.outgoing, votes)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// Whether `active` voters make a quorum (check-quorum).
    pub fn has_quorum(&self, active: &BTreeSet<NodeId>) -> bool {
        let majority = |set: &BTreeSet<NodeId>| {
            set.intersection(active).count() >= quorum::majority(set.len())
        };
        majority(&self.voters) && (!self.is_joint() || majority(&self.outgoing))
    }

    fn check(&self) -> Result<(), String> {
        if self.voters.is_empty() {
            return Err("a configuration needs at least one voter".to_string());
        }
        if let Some(both) = self.voters.intersection(&self.learners).next() {
            return Err(format!("{both} cannot be both a voter and a learner"));
        }
        if self.voters.iter().chain(&self.learners).any(|n| n.0 == 0) {
            return Err("node id 0 is not a node".to_string());
        }
        Ok(())
    }
}

impl std::fmt::Display for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |set: &BTreeSet<NodeId>| {
            set.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
        };
        write!(f, "voters {{{}}}", list(&self.voters))?;
        if self.is_joint() {
            write!(f, " joint with {{{}}}", list(&self.outgoing))?;
        }
        if !self.learners.is_empty() {
            write!(f, " learners {{{}}}", list(&self.learners))?;
        }
        Ok(())
    }
}

/// What a conf-change entry holds (format version 1): the whole configuration it
/// installs, and `context`, opaque to Raft, for the layer above (who the new members
/// are, e.g. their addresses).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ConfChangeV1 {
    voters: Vec<NodeId>,
    outgoing: Vec<NodeId>,
    learners: Vec<NodeId>,
    #[serde(with = "crate::byte_serde::vec")]
    context: Vec<u8>,
}

/// Encodes a conf-change entry's data.
pub fn encode_conf_change(membership: &Membership, context: &[u8]) -> bytes::Bytes {
    let entry = ConfChangeV1 {
        voters: membership.voters.iter().copied().collect(),
        outgoing: membership.outgoing.iter().copied().collect(),
        learners: membership.learners.iter().copied().collect(),
        context: context.to_vec(),
    };
    bincode::serde::encode_to_vec(&entry, bincode::config::standard())
        .expect("encoding to a Vec cannot fail")
        .into()
}

/// Decodes a conf-change entry: its configuration and context. None when the entry is
/// no conf change, one this version cannot read (a newer format, or damage), or a
/// configuration no leader may propose (no voter, a node both voter and learner).
pub fn decode_conf_change(entry: &Entry) -> Option<(Membership, Vec<u8>)> {
    if entry.format != EntryFormat::CONF_CHANGE {
        return None;
    }
    let (decoded, used): (ConfChangeV1, usize) =
        bincode::serde::decode_from_slice(&entry.data, bincode::config::standard()).ok()?;
    if used != entry.data.len() {
        return None;
    }
    let membership = Membership {
        voters: decoded.voters.into_iter().collect(),
        outgoing: decoded.outgoing.into_iter().collect(),
        learners: decoded.learners.into_iter().collect(),
    };
    membership.check().ok()?;
    Some((membership, decoded.context))
}

/// The configurations of one replica's log: the snapshot's, and those of the
/// conf-change entries after it, in log order.
#[derive(Clone, Debug, Default)]
pub struct Configs {
    /// The configuration as of the snapshot (index `base_index`).
    base: Membership,
    base_index: Index,
    /// Conf-change entries above the snapshot, ascending by index.
    changes: Vec<(Index, Membership)>,
}

impl Configs {
    pub fn new(base_index: Index, base: Membership) -> Configs {
        Configs { base, base_index, changes: Vec::new() }
    }

    /// The configuration in force: the latest in the log.
    pub fn current(&self) -> &Membership {
        self.changes.last().map_or(&self.base, |(_, m)| m)
    }

    /// The index of the entry that installed the current configuration (the snapshot
    /// index when none after it).
    pub fn current_index(&self) -> Index {
        self.changes.last().map_or(self.base_index, |(i, _)| *i)
    }

    /// The configuration as of log index `index`.
    pub fn at(&self, index: Index) -> &Membership {
        self.changes.iter().rev().find(|(i, _)| *i <= index).map_or(&self.base, |(_, m)| m)
    }

    /// Forgets configurations of entries at `index` and above (a truncated suffix).
    pub fn truncate_from(&mut self, index: Index) {
        self.changes.retain(|(i, _)| *i < index);
    }

    pub fn push(&mut self, index: Index, membership: Membership) {
        debug_assert!(index > self.current_index(), "configurations out of log order");
        self.changes.push((index, membership));
    }

    /// The log was compacted up to `index`: its configuration becomes the base.
    pub fn compact_to(&mut self, index: Index) {
        if index <= self.base_index {
            return;
        }
        self.base = self.at(index).clone();
        self.base_index = index;
        self.changes.retain(|(i, _)| *i > index);
    }
}

/// A change of membership a leader is asked to make: the configuration wanted after
/// it (never joint). The leader goes through a joint configuration when the voters
/// change, directly when only learners do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfChange {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// Opaque to Raft; carried in the entry for the layer above.
    pub context: Vec<u8>,
}

impl RaftGroup {
    /// The configuration in force on this replica (the latest in its log).
    pub fn membership(&self) -> &Membership {
        self.configs.current()
    }

    /// The configuration as of `index`, in snapshot form; None while it is joint: a
    /// snapshot must not be taken there (retry once the joint phase is left).
    pub fn conf_state_at(&self, index: Index) -> Option<ConfState> {
        self.configs.at(index).conf_state()
    }

    /// Leader only: proposes a change to `change`'s configuration. Returns the index
    /// of the entry that starts it; the change is complete once the configuration
    /// `membership()` reports is `change`'s and committed.
    ///
    /// # Errors
    /// `NotLeader`, `ProposalDropped` (transfer under way), `ConfChangeRefused` with
    /// the reason: an invalid target, no change, a change in progress, or no entry of
    /// this leader's term committed yet.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<Index, RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader { leader_hint: self.leader_id });
        }
        if self.lead_transferee.is_some() {
            return Err(RaftError::ProposalDropped);
        }
        let refuse =
            |why: String| -> Result<Index, RaftError> { Err(RaftError::ConfChangeRefused(why)) };
        if let Some(format) = self.unreadable_conf {
            return refuse(format!("this replica cannot read a configuration entry ({format})"));
        }
        if !self.committed_in_current_term() {
            return refuse("the leader has not committed an entry of its term yet".to_string());
        }
        let current = self.configs.current().clone();
        let pending = self.configs.current_index();
        if pending > self.log.committed {
            return refuse(format!("the change at index {pending} is not committed yet"));
        }
        if current.is_joint() {
            return refuse("the previous change has not left its joint configuration".into());
        }
        let target = Membership {
            voters: change.voters.clone(),
            outgoing: BTreeSet::new(),
            learners: change.learners.clone(),
        };
        if let Err(why) = target.check() {
            return refuse(why);
        }
        if target == current {
            return refuse(format!("the configuration is already {current}"));
        }
        let next = if target.voters == current.voters {
            target
        } else {
            Membership { outgoing: current.voters.clone(), ..target }
        };
        self.wake();
        let index = self.append_conf_entry(&next, &change.context);
        self.debug_check_invariants();
        Ok(index)
    }

    /// Leader: appends a conf-change entry and starts using its configuration.
    fn append_conf_entry(&mut self, membership: &Membership, context: &[u8]) -> Index {
        let data = encode_conf_change(membership, context);
        let index = self.append_entry(EntryFormat::CONF_CHANGE, data);
        self.append_pending = true;
        index
    }

    /// Records the configurations of entries that entered the log at `from` and above
    /// (replacing those of any suffix they replaced).
    pub(super) fn note_log_written(&mut self, from: Index, entries: &[Entry]) {
        self.configs.truncate_from(from);
        for entry in entries.iter().filter(|e| e.format.kind == EntryFormat::KIND_CONF_CHANGE) {
            match decode_conf_change(entry) {
                Some((membership, _)) => self.configs.push(entry.index, membership),
                None => {
                    // A configuration this version cannot read: using a wrong one could
                    // elect two leaders, so the replica stops taking part (no campaign,
                    // no vote) and reports it; the driver stops the node.
                    self.unreadable_conf.get_or_insert(entry.format);
                }
            }
        }
        self.on_membership_changed();
    }

    /// The log was reset to a snapshot: its configuration is the only one.
    pub(super) fn note_log_restored(&mut self, meta: &SnapshotMeta) {
        self.configs = Configs::new(meta.index, Membership::from_conf_state(&meta.conf_state));
        self.on_membership_changed();
    }

    /// The configuration may have changed: a leader tracks exactly its members (and
    /// itself).
    fn on_membership_changed(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let members = self.configs.current().members();
        let next = self.log.last_index();
        let id = self.id;
        self.progress.retain(|peer, _| *peer == id || members.contains(peer));
        for member in members {
            self.progress
                .entry(member)
                .or_insert_with(|| Progress::new(next.max(1), self.config.max_inflight_msgs));
        }
        if self.lead_transferee.is_some_and(|to| !self.configs.current().voters.contains(&to)) {
            self.lead_transferee = None;
        }
    }

    /// Leader, after its commit index moved: leaves a committed joint configuration, and
    /// steps down once a configuration without it is committed (handing leadership to
    /// the most caught-up voter so the group does not wait an election timeout).
    pub(super) fn on_leader_commit(&mut self) {
        if self.role != Role::Leader || self.configs.current_index() > self.log.committed {
            return;
        }
        let current = self.configs.current().clone();
        if current.is_joint() {
            let next = Membership { outgoing: BTreeSet::new(), ..current };
            self.append_conf_entry(&next, &[]);
            return;
        }
        if !current.voters.contains(&self.id) {
            let successor = current
                .voters
                .iter()
                .filter_map(|v| self.progress.get(v).map(|p| (p.matched, *v)))
                .max()
                .map(|(_, v)| v);
            if let Some(to) = successor {
                self.send(to, MessageBody::TimeoutNow);
            }
            self.become_follower(self.term, None);
        }
    }

    /// Whether this replica may stand for election: a voter of its configuration, or
    /// of the configuration its commit index is in while a later one that leaves it
    /// out is not committed yet; able to read every configuration in its log; not
    /// repairing.
    ///
    /// The second case is the thesis's rule (4.2.2: "a server that is not part of its
    /// own latest configuration should still start new elections, as it might still
    /// be needed until the Cnew entry is committed"). Configurations take effect when
    /// appended, so a replica that appended a change leaving it out, sent by a leader
    /// that then lost that entry in a crash, may be the only one holding the log that
    /// every remaining voter needs: the others cannot win without its vote, and it
    /// refuses them because its log is longer. It campaigns, counting the votes of
    /// its latest configuration only (never its own), and once that configuration is
    /// committed it steps down as any leader left out does (`on_leader_commit`).
    pub(super) fn promotable(&self) -> bool {
        let needed = self.configs.current().is_voter(self.id)
            || (self.configs.current_index() > self.log.committed
                && self.configs.at(self.log.committed).is_voter(self.id));
        needed && self.unreadable_conf.is_none() && !self.repairing()
    }

    /// The log index of the configuration in force (0 for the initial one): a replica
    /// whose configuration leaves it out may lead only while this is above its commit
    /// index (see `promotable`).
    pub fn membership_index(&self) -> Index {
        self.configs.current_index()
    }

    /// A conf-change entry this replica could not read, if any (the driver stops).
    pub fn unreadable_conf(&self) -> Option<EntryFormat> {
        self.unreadable_conf
    }
}

/// The configurations of the conf-change entries in `store` (at start).
pub(super) fn configs_from_store(store: &super::MemStorage) -> (Configs, Option<EntryFormat>) {
    use super::storage::Storage;
    let base_index = store.first_index() - 1;
    let mut configs = Configs::new(base_index, Membership::from_conf_state(&store.conf_state()));
    let mut unreadable = None;
    let entries =
        store.entries(store.first_index(), store.last_index() + 1, u64::MAX).unwrap_or_default();
    for entry in entries.iter().filter(|e| e.format.kind == EntryFormat::KIND_CONF_CHANGE) {
        match decode_conf_change(entry) {
            Some((membership, _)) => configs.push(entry.index, membership),
            None => {
                unreadable.get_or_insert(entry.format);
            }
        }
    }
    (configs, unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<NodeId> {
        ids.iter().map(|&n| NodeId(n)).collect()
    }

    #[test]
    fn joint_quorum_is_the_smaller_of_both_majorities() {
        let joint =
            Membership { voters: set(&[1, 2, 3]), outgoing: set(&[1, 4, 5]), ..Default::default() };
        // 1, 2, 3 reached 10; 4 and 5 only 2: the new majority is at 10, the old at 2.
        let matched = |n: NodeId| Some(if n.0 <= 3 { 10 } else { 2 });
        assert_eq!(joint.quorum_value(matched), Some(2));
        let simple = Membership { voters: set(&[1, 2, 3]), ..Default::default() };
        assert_eq!(simple.quorum_value(matched), Some(10));
        let mut votes = std::collections::BTreeMap::new();
        votes.insert(NodeId(1), true);
        votes.insert(NodeId(2), true);
        assert_eq!(joint.vote_result(&votes), VoteResult::Pending, "no old majority yet");
        votes.insert(NodeId(4), false);
        votes.insert(NodeId(5), false);
        assert_eq!(joint.vote_result(&votes), VoteResult::Lost);
        assert!(!joint.has_quorum(&set(&[1, 2, 3])));
        assert!(joint.has_quorum(&set(&[1, 2, 4])));
    }

    #[test]
    fn conf_change_entries_round_trip_and_refuse_other_versions() {
        let membership =
            Membership { voters: set(&[1, 2]), outgoing: set(&[1, 3]), learners: set(&[4]) };
        let data = encode_conf_change(&membership, b"ctx");
        let entry = Entry { term: 1, index: 5, format: EntryFormat::CONF_CHANGE, data };
        assert_eq!(decode_conf_change(&entry), Some((membership, b"ctx".to_vec())));
        let newer = EntryFormat { version: 2, ..EntryFormat::CONF_CHANGE };
        assert_eq!(decode_conf_change(&Entry { format: newer, ..entry.clone() }), None);
        let cut = entry.data.slice(..entry.data.len() - 1);
        assert_eq!(decode_conf_change(&Entry { data: cut, ..entry.clone() }), None);
        // A configuration no leader proposes (written by a buggy or hostile peer) is
        // refused, never put in force: no voter, or a node both voter and learner.
        for bad in [
            Membership { voters: set(&[]), outgoing: set(&[1]), learners: set(&[]) },
            Membership { voters: set(&[1, 2]), outgoing: set(&[]), learners: set(&[2]) },
        ] {
            let data = encode_conf_change(&bad, b"");
            assert_eq!(decode_conf_change(&Entry { data, ..entry.clone() }), None, "{bad}");
        }
        let empty = Membership::default();
        assert_eq!(empty.quorum_value(|_| Some(1)), None, "no voter reaches nothing");
    }

    #[test]
    fn configs_follow_truncation_and_compaction() {
        let m = |v: &[u64]| Membership { voters: set(v), ..Default::default() };
        let mut configs = Configs::new(0, m(&[1]));
        configs.push(3, m(&[1, 2]));
        configs.push(7, m(&[1, 2, 3]));
        assert_eq!(configs.at(5), &m(&[1, 2]));
        assert_eq!(configs.current_index(), 7);
        configs.truncate_from(7);
        assert_eq!(configs.current(), &m(&[1, 2]));
        configs.compact_to(4);
        assert_eq!(configs.at(4), &m(&[1, 2]));
        assert_eq!(configs.current_index(), 4);
    }
}
