//! Online Raft safety, fed by the node's observer hook:
//! - at most one leader per range per term (election safety);
//! - every replica applies the same command at the same index (state machine
//!   safety / log matching of committed entries), so a committed entry never changes;
//! - a replica applies indexes in order without gaps, and a snapshot it restores
//!   agrees with what was committed at that index;
//! - the durable term and commit index of a replica never go backwards, restarts
//!   included (they come from its disk);
//! - a replica becomes leader only as a voter of its configuration, and each
//!   replica's configurations follow joint consensus in log order: from a simple
//!   configuration to a joint one leaving exactly its voters (or to another simple one
//!   with the same voters: learners only), from a joint one only to its incoming
//!   voters (membership changes); a replica left out of its latest configuration
//!   leads only while that configuration is not committed;
//! - a follower's commit index never passes what its leader's message vouched for
//!   (the lesser of the leader's commit and the last entry the Append covered);
//! - runtime settings (range/settings.rs, checker "settings"): every replica of a
//!   range changes its settings at the same index of the range's log, to the same
//!   value, and every node applies the same `snapshot_entries` for the same meta
//!   revision; converged replicas hold the same settings (`settings_diverged`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use rangedb::env::sim_hooks::{LogTerm, Observer};
use rangedb::raft::{Membership, NodeId, Role, Term};
use rangedb::range::descriptor::{RangeId, Span};
use rangedb::range::settings::RangeSettings;

use super::super::{now_ms, Fnv};
use super::Violation;

/// Raft events kept for the failure report.
const RECENT_EVENTS: usize = 60;

#[derive(Default)]
pub struct Safety {
    /// (range, term) -> the leader.
    leaders: BTreeMap<(RangeId, Term), NodeId>,
    /// (range, index) -> (term, data): the committed log, as first applied anywhere.
    pub committed: BTreeMap<(RangeId, u64), (Term, Vec<u8>)>,
    /// Last applied index per replica (None after a restart until the first apply).
    applied: BTreeMap<(NodeId, RangeId), u64>,
    durable: BTreeMap<(NodeId, RangeId), (Term, u64)>,
    /// The durable vote of each replica in its current term: (term, vote).
    votes: BTreeMap<(NodeId, RangeId), (Term, NodeId)>,
    /// Votes granted (durable votes for another replica; an effect counted per sweep).
    pub votes_granted: u64,
    recent: VecDeque<Logged>,
    /// Every event: (ms, range, text), for reports about one range.
    log: Vec<(u64, RangeId, Logged)>,
    pub violations: Vec<Violation>,
    pub trace: Fnv,
    pub events: u64,
    pub elections: u64,
    pub snapshots_restored: u64,
    /// Replicas that found their storage damaged and repaired from peers.
    pub repairs: u64,
    /// Nodes whose disk was wiped: from then on none of their replicas may run.
    wiped: BTreeSet<NodeId>,
    /// Per range, per term: the highest commit index a replica made durable in that
    /// term. Every index up to it was committed by a leader of that term or earlier.
    committed_by: BTreeMap<RangeId, BTreeMap<Term, u64>>,
    /// Leaders checked for completeness (an effect counted per sweep).
    pub completeness_checks: u64,
    /// Follower commit advances checked against what the leader vouched for.
    pub commits_checked: u64,
    /// The last configuration each replica applied: (index, configuration).
    configurations: BTreeMap<(NodeId, RangeId), (u64, Membership)>,
    /// (range, index) -> the configuration first applied there.
    committed_configurations: BTreeMap<(RangeId, u64), Membership>,
    /// Conf-change entries applied (an effect counted per sweep).
    pub conf_changes_applied: u64,
    /// (range, settings revision) -> (index, history, node): where a replica first
    /// changed to those settings.
    settings_at: BTreeMap<(RangeId, u64), (u64, u64, NodeId)>,
    /// Meta revision of `snapshot_entries` -> (entries, node) as a node first applied it.
    node_settings: BTreeMap<u64, (u64, NodeId)>,
    /// Settings changes applied by replicas (an effect counted per sweep).
    pub settings_applied: u64,
    /// The generation each node's replica of a range last had (cleared at restart:
    /// a replica recovers from its snapshot and applies its log again).
    generations: BTreeMap<(NodeId, RangeId), u64>,
    /// Spans reported by nodes (an effect counted per sweep).
    pub span_reports: u64,
    /// Joint configurations left (a leave entry applied after its joint one).
    pub joints_left: u64,
    /// Replicas repairing: (node, range) -> their commit index when found damaged.
    repairing: BTreeMap<(NodeId, RangeId), u64>,
    /// Repairs finished: a damaged replica applied an entry past that commit index
    /// or restored a snapshot there, so a leader has replicated to it.
    pub repairs_finished: u64,
    /// The last time each follower heard from its leader: (range, follower) ->
    /// (leader, term, us). It refuses to help elect another leader for
    /// `STICKY_AT_LEAST_US` after at least (leader stickiness).
    heard: BTreeMap<(RangeId, NodeId), (NodeId, Term, u64)>,
    /// The last restart of each node (us): a restarted replica refuses votes for an
    /// election timeout.
    restarted_at: BTreeMap<NodeId, u64>,
    /// Leases checked against the voters' stickiness (an effect counted per sweep).
    pub leases_checked: u64,
    /// A clock ran beyond the drift bound: from then on leases are the drift guard's
    /// business (it refuses them only once it measured a whole window, so a lease may
    /// outlive the bound's stickiness meanwhile), judged by the history checkers.
    beyond_bound: bool,
    /// TimeoutNow sent: (range, leader, term, target) -> the leader's last entry then.
    timeout_nows: BTreeMap<(RangeId, NodeId, Term, NodeId), (Term, u64)>,
    /// Campaigns started by a TimeoutNow, checked (an effect counted per sweep).
    pub handoffs_checked: u64,
}

/// How long a follower refuses to help elect another leader after it last heard from
/// its leader, at least: `election_tick - 1` (9) of its ticks (the first may come just
/// after the message), its 20 ms ticks at most `DRIFT_BOUND_PPM` fast.
pub const STICKY_AT_LEAST_US: u64 =
    9 * 20_000 * 1_000_000 / (1_000_000 + super::super::schedule::DRIFT_BOUND_PPM as u64);

/// The lease check (thesis 6.4.1, src/raft/reads.rs), from outside the core: a leader
/// may answer from its lease at a time only if a quorum of its configuration (itself
/// included) still refuses to help elect anyone else then, so that every possible
/// next leader needs a vote that cannot be had. `defends(v)`: voter `v` does.
pub fn lease_quorum_holds(membership: &Membership, defends: impl Fn(NodeId) -> bool) -> bool {
    let majority = |voters: &BTreeSet<NodeId>| {
        voters.is_empty() || 2 * voters.iter().filter(|v| defends(**v)).count() > voters.len()
    };
    majority(&membership.voters) && majority(&membership.outgoing)
}

/// Whether a follower that last heard from the lease holder at `heard_us` (None:
/// not in its term) or restarted at `restarted_us` still refuses votes at `until_us`.
pub fn sticky_until(heard_us: Option<u64>, restarted_us: Option<u64>, until_us: u64) -> bool {
    [heard_us, restarted_us].into_iter().flatten().any(|at| at + STICKY_AT_LEAST_US >= until_us)
}

/// The handoff check (thesis 3.10): a leader sends TimeoutNow only to a replica that
/// holds its whole log, so the target's campaign can win every vote. `leader` and
/// `target` are (last term, last index) when the leader sent it and when the target
/// campaigned.
pub fn handoff_target_caught_up(leader: (Term, u64), target: (Term, u64)) -> bool {
    target >= leader
}

/// A Raft event kept for the failure report. Applies, by far the most frequent, are
/// kept as their fields and formatted only when a report shows them (formatting each
/// was 2% of a simulated run).
#[derive(Clone, Debug)]
enum Logged {
    Text(String),
    Apply { ms: u64, node: NodeId, range: RangeId, index: u64, term: Term, digest: u64 },
}

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Logged::Text(text) => f.write_str(text),
            Logged::Apply { ms, node, range, index, term, digest } => {
                write!(f, "{ms:>6} ms {node} {range} apply {index} (term {term}, {digest:016x})")
            }
        }
    }
}

impl Safety {
    fn range_event(&mut self, ms: u64, range: RangeId, text: String) {
        let logged = Logged::Text(text);
        self.log.push((ms, range, logged.clone()));
        self.event(logged);
    }

    /// Role changes and applies of `range` between `from` and `to` ms (at most 50,
    /// role changes first).
    pub fn events_around(&self, range: RangeId, from: u64, to: u64) -> Vec<String> {
        let within: Vec<&(u64, RangeId, Logged)> =
            self.log.iter().filter(|(t, r, _)| *r == range && *t >= from && *t <= to).collect();
        let is_apply = |logged: &Logged| matches!(logged, Logged::Apply { .. });
        let mut picked: Vec<&(u64, RangeId, Logged)> =
            within.iter().copied().filter(|(_, _, logged)| !is_apply(logged)).collect();
        for event in &within {
            if picked.len() >= 50 {
                break;
            }
            if is_apply(&event.2) {
                picked.push(event);
            }
        }
        picked.sort_by_key(|(t, _, _)| *t);
        picked.into_iter().map(|(_, _, logged)| logged.to_string()).collect()
    }

    fn event(&mut self, logged: Logged) {
        match &logged {
            Logged::Text(text) => self.trace.write(text.as_bytes()),
            Logged::Apply { ms, node, range, index, term, digest } => {
                for field in [*ms, node.0, range.0, *index, *term, *digest] {
                    self.trace.write(&field.to_le_bytes());
                }
            }
        }
        self.events += 1;
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(logged);
    }

    fn violate(&mut self, message: String) {
        if self.violations.len() < 5 {
            let evidence = self.recent.iter().map(Logged::to_string).collect();
            self.violations.push(Violation {
                checker: "raft_safety",
                message,
                evidence,
                focus: None,
            });
        }
    }

    /// A lease held by `leader` (term `term`, `membership`) until `until_us` at least
    /// (its next tick), checked at `now_us` against the voters' stickiness.
    fn check_lease(
        &mut self,
        range: RangeId,
        leader: NodeId,
        term: Term,
        until_us: u64,
        membership: &Membership,
    ) {
        self.leases_checked += 1;
        let defends = |v: NodeId| {
            let heard = self
                .heard
                .get(&(range, v))
                .filter(|(l, t, _)| (*l, *t) == (leader, term))
                .map(|(_, _, at)| *at);
            v == leader || sticky_until(heard, self.restarted_at.get(&v).copied(), until_us)
        };
        if lease_quorum_holds(membership, defends) {
            return;
        }
        let defenders: Vec<String> = membership
            .all_voters()
            .into_iter()
            .filter(|v| defends(*v))
            .map(|v| v.to_string())
            .collect();
        let heard: Vec<String> = membership
            .all_voters()
            .into_iter()
            .filter_map(|v| {
                let (l, t, at) = self.heard.get(&(range, v))?;
                Some(format!("{v} heard {l} (term {t}) at {:.1} ms", *at as f64 / 1_000.0))
            })
            .collect();
        let t = until_us / 1_000;
        self.range_event(t, range, format!("{t:>6} ms {leader} {range} lease of term {term}"));
        self.violate_as(
            "lease",
            format!(
                "{leader}'s lease on {range} (term {term}) holds until {:.1} ms, but by then \
                 only {{{}}} of its configuration {membership} can still refuse to elect \
                 another leader ({}; each refuses for {:.1} ms at least after): a new leader \
                 could be elected and commit while {leader} answers reads from its lease",
                until_us as f64 / 1_000.0,
                defenders.join(","),
                heard.join(", "),
                STICKY_AT_LEAST_US as f64 / 1_000.0
            ),
        );
    }

    /// Converged replicas of `range` (the same commit and applied index) hold other
    /// settings: one applied them outside the log, or skipped the entry.
    pub fn settings_diverged(&mut self, range: u64, by_node: &BTreeMap<u64, RangeSettings>) {
        let list: Vec<String> = by_node
            .iter()
            .map(|(node, s)| {
                format!("n{node}: history {} (revision {})", s.history_revisions, s.config_revision)
            })
            .collect();
        self.violate_as(
            "settings",
            format!(
                "r{range}: replicas at the same applied index hold different settings: {}",
                list.join(", ")
            ),
        );
    }

    fn violate_as(&mut self, checker: &'static str, message: String) {
        if self.violations.len() < 5 {
            let evidence = self.recent.iter().map(Logged::to_string).collect();
            self.violations.push(Violation { checker, message, evidence, focus: None });
        }
    }

    /// The latest Raft events, oldest first.
    pub fn recent_events(&self) -> Vec<String> {
        self.recent.iter().map(Logged::to_string).collect()
    }

    /// A node's clock now runs beyond the drift bound (`beyond_bound`).
    pub fn clocks_beyond_bound(&mut self) {
        self.beyond_bound = true;
    }

    /// A node's data directory was wiped; it restarts with the same flags.
    pub fn node_wiped(&mut self, node: NodeId) {
        self.wiped.insert(node);
        self.event(Logged::Text(format!("{node} wiped")));
    }

    /// Checked on every replica event: a wiped node must never run a replica again
    /// (it has a new identity, and its old one's acknowledgements are gone: voting or
    /// acknowledging as that member could lose committed writes).
    fn check_not_wiped(&mut self, node: NodeId, range: RangeId, what: &str) {
        if self.wiped.contains(&node) {
            self.violate(format!(
                "{node}'s data directory was wiped, yet it runs a replica of {range} as a \
                 member ({what}): the members must refuse it"
            ));
        }
    }

    /// A replica applied up to `index`: a repair is finished once past the commit
    /// index the damaged replica restarted from.
    fn repair_progress(&mut self, node: NodeId, range: RangeId, index: u64) {
        if self.repairing.get(&(node, range)).is_some_and(|commit| index > *commit) {
            self.repairing.remove(&(node, range));
            self.repairs_finished += 1;
        }
    }

    /// Leaders elected (role changes to Leader) at or after `ms`.
    pub fn elections_since(&self, ms: u64) -> u64 {
        let leader = |logged: &Logged| match logged {
            Logged::Text(text) => text.contains(" becomes Leader "),
            Logged::Apply { .. } => false,
        };
        self.log.iter().filter(|(t, _, logged)| *t >= ms && leader(logged)).count() as u64
    }

    /// A node restarted: its in-memory applied index starts again from its snapshot.
    pub fn node_restarted(&mut self, node: NodeId) {
        self.applied.retain(|(n, _), _| *n != node);
        // It applies its log again from its snapshot: configurations too.
        self.configurations.retain(|(n, _), _| *n != node);
        self.event(Logged::Text(format!("{node} restarted")));
    }
}

/// The observer installed for a run; shares `Safety` with the harness.
pub struct SafetyObserver {
    pub state: Arc<Mutex<Safety>>,
    pub start: tokio::time::Instant,
}

impl SafetyObserver {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn with(&self, f: impl FnOnce(&mut Safety, u64)) {
        let mut state = self.state.lock().expect("safety lock");
        f(&mut state, now_ms(self.start));
    }
}

impl Observer for SafetyObserver {
    fn applied(&mut self, node: NodeId, range: RangeId, index: u64, term: Term, data: &[u8]) {
        self.with(|s, t| {
            s.check_not_wiped(node, range, "applied an entry");
            let digest = Fnv::hash(data);
            let logged = Logged::Apply { ms: t, node, range, index, term, digest };
            s.log.push((t, range, logged.clone()));
            s.event(logged);
            if let Some(last) = s.applied.get(&(node, range)) {
                if index != last + 1 {
                    s.violate(format!(
                        "{node} {range} applied {index} after {last}: applied index must advance by one"
                    ));
                }
            }
            s.applied.insert((node, range), index);
            s.repair_progress(node, range, index);
            match s.committed.get(&(range, index)) {
                Some((t0, d0)) if (*t0, Fnv::hash(d0)) != (term, digest) => {
                    let message = format!(
                        "{range} index {index}: {node} applied term {term} {digest:016x}, but \
                         term {t0} {:016x} was applied there before",
                        Fnv::hash(d0)
                    );
                    s.violate(message);
                }
                Some(_) => {}
                None => {
                    s.committed.insert((range, index), (term, data.to_vec()));
                }
            }
        });
    }

    fn snapshot_restored(&mut self, node: NodeId, range: RangeId, index: u64, term: Term) {
        self.with(|s, t| {
            s.check_not_wiped(node, range, "restored a snapshot");
            // The snapshot holds a configuration the checker did not see applied.
            s.configurations.remove(&(node, range));
            s.range_event(t, range, format!("{t:>6} ms {node} {range} restore snapshot at {index} (term {term})"));
            if let Some(last) = s.applied.get(&(node, range)).copied().filter(|last| index < *last) {
                s.violate(format!(
                    "{node} {range} restored a snapshot at {index} after applying {last}: its \
                     state went back (an older snapshot than what it had applied)"
                ));
            }
            if let Some((t0, _)) = s.committed.get(&(range, index)) {
                if *t0 != term {
                    s.violate(format!(
                        "{node} {range} restored a snapshot at {index} term {term}; term {t0} was committed there"
                    ));
                }
            }
            s.applied.insert((node, range), index);
            s.repair_progress(node, range, index);
            s.snapshots_restored += 1;
        });
    }

    fn hard_state_synced(&mut self, node: NodeId, range: RangeId, term: Term, commit: u64) {
        self.with(|s, _| {
            s.check_not_wiped(node, range, "synced a hard state");
            if let Some((t0, c0)) = s.durable.get(&(node, range)).copied() {
                if term < t0 || commit < c0 {
                    s.violate(format!(
                        "{node} {range}: durable (term, commit) went from ({t0}, {c0}) to ({term}, {commit})"
                    ));
                }
            }
            s.durable.insert((node, range), (term, commit));
            let known = s.committed_by.entry(range).or_default().entry(term).or_default();
            *known = (*known).max(commit);
        });
    }

    /// Election safety at its root (Raft paper 5.2, figure 2: "votedFor"): a replica
    /// votes for at most one candidate per term, restarts and repairs included (the
    /// vote is on disk twice). A second vote, or the vote forgotten, within a term is
    /// a violation even when it elects nobody; two leaders are seen by `role_changed`.
    fn vote_synced(&mut self, node: NodeId, range: RangeId, term: Term, vote: Option<NodeId>) {
        self.with(|s, t| {
            let before = s.votes.get(&(node, range)).copied();
            match (before, vote) {
                (Some((t0, v0)), Some(v)) if t0 == term && v0 != v => {
                    s.range_event(
                        t,
                        range,
                        format!("{t:>6} ms {node} {range} votes {v} in term {term}"),
                    );
                    s.violate(format!(
                        "{node} {range} voted for {v0} and then for {v} in term {term}: \
                         two votes in one term"
                    ));
                }
                (Some((t0, v0)), None) if t0 == term => {
                    s.range_event(
                        t,
                        range,
                        format!("{t:>6} ms {node} {range} forgets its vote in term {term}"),
                    );
                    s.violate(format!(
                        "{node} {range} voted for {v0} in term {term}, then made durable a \
                         hard state of that term with no vote: a vote forgotten within its term"
                    ));
                }
                (_, Some(v)) if before.is_none_or(|(t0, _)| t0 < term) => {
                    s.votes_granted += u64::from(v != node);
                    s.votes.insert((node, range), (term, v));
                }
                _ => {}
            }
        });
    }

    /// Leader completeness (Raft paper 5.4), checked directly: a leader of `term`
    /// holds every entry committed in an earlier term. The highest index known to be
    /// committed by then (a durable commit index of an earlier term) must be in its log
    /// with the term it was applied with, or covered by its snapshot.
    fn became_leader(&mut self, node: NodeId, range: RangeId, term: Term, log_term: LogTerm<'_>) {
        self.with(|s, t| {
            let Some(index) = s
                .committed_by
                .get(&range)
                .and_then(|by_term| by_term.range(..term).map(|(_, commit)| *commit).max())
                .filter(|index| *index > 0)
            else {
                return;
            };
            let Some((expected, _)) = s.committed.get(&(range, index)).cloned() else {
                return;
            };
            s.completeness_checks += 1;
            let found = match log_term(index) {
                Ok(Some(found)) if found == expected => return,
                Err(snapshot) if index <= snapshot => return,
                Ok(Some(found)) => format!("an entry of term {found}"),
                Ok(None) => "nothing (its log is shorter)".to_string(),
                Err(snapshot) => format!("a snapshot at {snapshot} only"),
            };
            s.range_event(t, range, format!("{t:>6} ms {node} {range} leader of term {term}"));
            s.violate(format!(
                "leader completeness: {node} became leader of {range} in term {term} without \
                 the entry at {index} (term {expected}) committed in an earlier term; its log \
                 has {found} there"
            ));
        });
    }

    fn leader_membership(
        &mut self,
        node: NodeId,
        range: RangeId,
        term: Term,
        membership: &Membership,
        committed: bool,
    ) {
        self.with(|s, t| {
            // Left out of its latest configuration, a replica may still lead while that
            // configuration is not committed (thesis 4.2.2): it may hold the log the
            // remaining voters need. Once it is committed, never.
            if !membership.is_voter(node) && committed {
                s.range_event(t, range, format!("{t:>6} ms {node} {range} leader of term {term}"));
                s.violate(format!(
                    "{node} became leader of {range} in term {term} but is no voter of its \
                     configuration {membership}, committed"
                ));
            }
        });
    }

    fn follower_commit(
        &mut self,
        node: NodeId,
        range: RangeId,
        term: Term,
        vouched: u64,
        before: u64,
        after: u64,
    ) {
        self.with(|s, t| {
            s.commits_checked += 1;
            if after <= before.max(vouched) {
                return;
            }
            s.range_event(t, range, format!("{t:>6} ms {node} {range} commit {before} -> {after}"));
            s.violate_as(
                "commit_vouched",
                format!(
                    "{node}, follower of {range} in term {term}, advanced its commit index from \
                     {before} to {after} on a message from its leader that vouched for its log \
                     only up to {vouched}: entries past what the leader proved matching may be \
                     a stale suffix, committed and applied although never committed"
                ),
            );
        });
    }

    fn heard_leader(&mut self, node: NodeId, range: RangeId, term: Term, leader: NodeId) {
        let now_us = self.now_us();
        self.with(|s, _| {
            s.heard.insert((range, node), (leader, term, now_us));
        });
    }

    fn lease_held(
        &mut self,
        node: NodeId,
        range: RangeId,
        held: Option<(Term, tokio::time::Instant)>,
        membership: &Membership,
    ) {
        let start = self.start;
        self.with(|s, _| {
            if s.beyond_bound {
                return;
            }
            if let Some((term, until)) = held {
                let until_us = until.saturating_duration_since(start).as_micros() as u64;
                s.check_lease(range, node, term, until_us, membership);
            }
        });
    }

    fn timeout_now_sent(
        &mut self,
        node: NodeId,
        range: RangeId,
        term: Term,
        to: NodeId,
        last: (Term, u64),
    ) {
        self.with(|s, _| {
            s.timeout_nows.insert((range, node, term, to), last);
        });
    }

    fn transfer_campaign(
        &mut self,
        node: NodeId,
        range: RangeId,
        from: NodeId,
        term: Term,
        last: (Term, u64),
    ) {
        self.with(|s, t| {
            let Some(sent) = s.timeout_nows.get(&(range, from, term, node)).copied() else {
                return;
            };
            s.handoffs_checked += 1;
            if handoff_target_caught_up(sent, last) {
                return;
            }
            s.range_event(
                t,
                range,
                format!("{t:>6} ms {node} {range} campaigns in term {} on TimeoutNow", term + 1),
            );
            s.violate_as(
                "handoff",
                format!(
                    "{from}, leader of {range} in term {term}, handed its leadership to {node} \
                     (TimeoutNow) when its log ended at (term {}, index {}); {node} campaigned \
                     with its log ending at (term {}, index {}): the voters holding the missing \
                     entries refuse it and the range goes without a leader for an election \
                     timeout or more",
                    sent.0, sent.1, last.0, last.1
                ),
            );
        });
    }

    fn node_started(&mut self, node: NodeId) {
        let now_us = self.now_us();
        self.with(|s, _| {
            s.restarted_at.insert(node, now_us);
            s.generations.retain(|(n, _), _| *n != node);
            s.node_restarted(node);
        });
    }

    fn conf_applied(&mut self, node: NodeId, range: RangeId, index: u64, membership: &Membership) {
        self.with(|s, t| {
            s.conf_changes_applied += 1;
            match s.committed_configurations.get(&(range, index)) {
                Some(first) if first != membership => {
                    let message = format!(
                        "{range} index {index}: {node} applied configuration {membership}, \
                         but {first} was applied there before"
                    );
                    s.violate(message);
                }
                Some(_) => {}
                None => {
                    s.committed_configurations.insert((range, index), membership.clone());
                }
            }
            s.range_event(
                t,
                range,
                format!("{t:>6} ms {node} {range} configuration {index}: {membership}"),
            );
            if let Some((at, previous)) = s.configurations.get(&(node, range)).cloned() {
                s.joints_left += u64::from(previous.is_joint() && !membership.is_joint());
                let legal = if previous.is_joint() {
                    !membership.is_joint() && membership.voters == previous.voters
                } else if membership.is_joint() {
                    membership.outgoing == previous.voters
                } else {
                    membership.voters == previous.voters
                };
                if !legal || index <= at {
                    s.violate(format!(
                        "{node} {range}: configuration {membership} at {index} follows \
                         {previous} at {at}: not a joint consensus step in log order"
                    ));
                }
            }
            s.configurations.insert((node, range), (index, membership.clone()));
        });
    }

    fn storage_damaged(&mut self, node: NodeId, range: RangeId, term: Term, commit: u64) {
        self.with(|s, t| {
            s.check_not_wiped(node, range, "recovered its storage");
            s.range_event(
                t,
                range,
                format!("{t:>6} ms {node} {range} storage damaged: log discarded, term {term}"),
            );
            // Its durable commit restarts at its snapshot; its term still may not drop.
            if let Some((t0, _)) = s.durable.get(&(node, range)).copied() {
                if term < t0 {
                    s.violate(format!("{node} {range}: term went from {t0} to {term} in repair"));
                }
            }
            s.durable.insert((node, range), (term, commit));
            s.repairs += 1;
            s.repairing.insert((node, range), commit);
        });
    }

    fn spans_changed(&mut self, node: NodeId, spans: &[(RangeId, Span)]) {
        self.with(|s, t| {
            s.span_reports += 1;
            let mut sorted: Vec<&(RangeId, Span)> = spans.iter().collect();
            sorted.sort_by(|a, b| a.1.start.cmp(&b.1.start));
            for pair in sorted.windows(2) {
                let ((a, left), (b, right)) = (pair[0], pair[1]);
                if left.overlaps(right) {
                    s.violate_as(
                        "splits",
                        format!(
                            "{node}'s replicas of {a} ({:?}..{:?}, generation {}) and {b} \
                             ({:?}..{:?}, generation {}) overlap",
                            String::from_utf8_lossy(&left.start),
                            left.end.as_deref().map(String::from_utf8_lossy),
                            left.generation,
                            String::from_utf8_lossy(&right.start),
                            right.end.as_deref().map(String::from_utf8_lossy),
                            right.generation
                        ),
                    );
                }
            }
            for (range, span) in spans {
                let before = s.generations.insert((node, *range), span.generation);
                if before == Some(span.generation) {
                    continue;
                }
                if before.is_some_and(|before| before > span.generation) {
                    s.violate_as(
                        "splits",
                        format!(
                            "{node}'s replica of {range} went back from generation {} to {}",
                            before.unwrap_or(0),
                            span.generation
                        ),
                    );
                }
                s.range_event(
                    t,
                    *range,
                    format!(
                        "{t:>6} ms {node} {range} span {:?}..{:?} generation {}",
                        String::from_utf8_lossy(&span.start),
                        span.end.as_deref().map(String::from_utf8_lossy),
                        span.generation
                    ),
                );
            }
        });
    }

    fn settings_applied(
        &mut self,
        node: NodeId,
        range: RangeId,
        index: u64,
        settings: RangeSettings,
    ) {
        self.with(|s, t| {
            let RangeSettings { config_revision, history_revisions: history } = settings;
            s.range_event(
                t,
                range,
                format!("{t:>6} ms {node} {range} settings at {index}: history {history} (revision {config_revision})"),
            );
            s.settings_applied += 1;
            match s.settings_at.get(&(range, config_revision)).copied() {
                Some((index0, history0, node0)) if (index0, history0) != (index, history) => {
                    s.violate_as(
                        "settings",
                        format!(
                            "{range}: {node} changed to settings revision {config_revision} (history \
                             {history}) after applying {index}, but {node0} changed to it \
                             (history {history0}) after applying {index0}: a setting applied \
                             outside the range's log"
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    s.settings_at.insert((range, config_revision), (index, history, node));
                }
            }
        });
    }

    fn node_settings(&mut self, node: NodeId, revision: u64, entries: u64) {
        self.with(|s, _| {
            if revision == 0 {
                return; // Unset: each node's flag.
            }
            match s.node_settings.get(&revision).copied() {
                Some((entries0, node0)) if entries0 != entries => s.violate_as(
                    "settings",
                    format!(
                        "{node} applied snapshot_entries {entries} for meta revision {revision}, \
                         {node0} applied {entries0}"
                    ),
                ),
                Some(_) => {}
                None => {
                    s.node_settings.insert(revision, (entries, node));
                }
            }
        });
    }

    fn role_changed(&mut self, node: NodeId, range: RangeId, term: Term, role: Role) {
        self.with(|s, t| {
            s.check_not_wiped(node, range, "changed role");
            s.range_event(
                t,
                range,
                format!("{t:>6} ms {node} {range} becomes {role:?} in term {term}"),
            );
            if role != Role::Leader {
                return;
            }
            s.elections += 1;
            match s.leaders.get(&(range, term)) {
                Some(other) if *other != node => {
                    let message = format!("{range} term {term}: two leaders, {other} and {node}");
                    s.violate(message);
                }
                _ => {
                    s.leaders.insert((range, term), node);
                }
            }
        });
    }
}
