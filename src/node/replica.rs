//! One range replica on this node: its Raft group, its KV state machine, and the
//! client requests waiting on either.
//!
//! ```text
//!  client write ──propose──► RaftGroup ──committed_entries──► KvStore::apply ──► reply
//!  client read  ──read_index─► RaftGroup ──ReadState{index}──► wait applied >= index ──► reply
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::node::split::AppliedSplit;
use crate::node::telemetry::{NodeMetrics, Operation, Outcome, Telemetry};
use crate::raft::{Entry, Index, NodeId, RaftGroup, ReadMode, Role, Term};
use crate::range::descriptor::{RangeDescriptor, RangeId};
use crate::range::kv::{
    Applicable, Command, CommandResult, KeyValue, KvStore, RevisionUnavailable, UnreadableEntry,
    WriteOp,
};
use crate::wire::{Request, Response};

/// Where a reply goes: a client connection's outbox and the request's id on it.
#[derive(Clone, Debug)]
pub struct ReplyTo {
    pub outbox: tokio::sync::mpsc::UnboundedSender<crate::wire::ClientResponse>,
    pub id: u64,
    /// What was asked and when it arrived, for the node's request metrics.
    pub operation: Operation,
    pub started: tokio::time::Instant,
    pub telemetry: Arc<Telemetry>,
}

impl ReplyTo {
    /// Sends the response and records the request (operation, outcome, latency); a
    /// closed connection is not an error (the client is gone).
    pub fn send(self, response: Response) {
        let outcome = Outcome::of(&response);
        let elapsed = self.started.elapsed();
        self.telemetry.metrics.record_request(self.operation, outcome, elapsed);
        let _ = self.outbox.send(crate::wire::ClientResponse { id: self.id, response });
    }

    /// Sends the response to a write that Raft dropped or that lost its leader.
    fn send_dropped(self, response: Response) {
        NodeMetrics::add(&self.telemetry.metrics.proposals_dropped, 1);
        self.send(response);
    }
}

/// A write proposed at `index` in `term`, waiting to apply.
struct PendingWrite {
    term: Term,
    reply: ReplyTo,
    /// When it was proposed (`NodeMetrics::raft_commit`).
    proposed: tokio::time::Instant,
}

impl PendingWrite {
    /// Its entry committed and applies now: records the time since it was proposed.
    fn committed(&self) {
        let metrics = &self.reply.telemetry.metrics;
        metrics.raft_commit.observe_duration(self.proposed.elapsed());
    }
}

/// A read waiting for its read index, then for the state machine to reach it.
struct PendingRead {
    request: Request,
    reply: ReplyTo,
    /// The node tick at which the read started (Raft may drop a read silently, e.g.
    /// a forwarded one whose answer is lost, so reads time out).
    started_tick: u64,
}

/// An upper bound on the encoded size of `command` (varints and tags included).
fn command_bytes_estimate(command: &Command) -> usize {
    const OVERHEAD_BYTES: usize = 48;
    match &command.op {
        WriteOp::Put { key, value } => key.len() + value.len() + OVERHEAD_BYTES,
        WriteOp::Delete { key } => key.len() + OVERHEAD_BYTES,
        WriteOp::Txn(_) | WriteOp::Settings(_) => 256,
        WriteOp::Freeze { .. } | WriteOp::Unfreeze { .. } => OVERHEAD_BYTES,
        WriteOp::Split { key, .. } | WriteOp::PlanSplit { key, .. } => key.len() + OVERHEAD_BYTES,
    }
}

/// A range's write load as its replica applies it: a counter, and every 8th written
/// key in a ring of the last 64 such (where a split by load cuts: their median).
#[derive(Debug, Default)]
pub struct Load {
    pub writes: u64,
    sampled: std::collections::VecDeque<Vec<u8>>,
}

impl Load {
    const EVERY: u64 = 8;
    const KEPT: usize = 64;

    /// Whether the next write's key is kept.
    fn samples_next(&self) -> bool {
        (self.writes + 1) % Load::EVERY == 0
    }

    fn record(&mut self, sampled: Option<Vec<u8>>) {
        self.writes += 1;
        if let Some(key) = sampled {
            if self.sampled.len() == Load::KEPT {
                self.sampled.pop_front();
            }
            self.sampled.push_back(key);
        }
    }

    /// The median of the sampled keys.
    pub fn median_key(&self) -> Option<Vec<u8>> {
        let mut keys: Vec<&Vec<u8>> = self.sampled.iter().collect();
        keys.sort();
        keys.get(keys.len() / 2).map(|key| (*key).clone())
    }
}

/// What applying an entry did beyond the state machine.
#[derive(Default)]
pub struct Applied {
    /// The range split: the node creates the new range.
    pub split: Option<AppliedSplit>,
    /// A command refused as a whole (routed before a split, or a split that could not
    /// be made): the state machine only moved its applied index.
    pub refused: bool,
}

/// Ticks a read may wait for its read index before it is failed for a retry.
pub const READ_TIMEOUT_TICKS: u64 = 40;
/// A scan reply carries at most this many bytes of keys and values; the rest is
/// left to a continuation from `resume`.
pub const SCAN_REPLY_BYTES_MAX: usize = 4 << 20;

pub struct Replica {
    pub descriptor: RangeDescriptor,
    pub raft: RaftGroup,
    pub kv: KvStore,
    /// Index of the newest durable snapshot of this range (0: none).
    pub snapshot_index: Index,
    /// Size of that snapshot's state machine image.
    pub snapshot_bytes: u64,
    /// Bytes of entries applied since (an estimate of the log a snapshot would free).
    pub log_bytes: u64,
    writes: BTreeMap<Index, PendingWrite>,
    /// Reads that asked Raft for a read index, by read context.
    reads_unconfirmed: BTreeMap<u64, PendingRead>,
    /// Reads with a read index, waiting for `kv.applied() >= index`.
    reads_confirmed: Vec<(Index, PendingRead)>,
    /// The settings revision this replica, leading, last proposed and at which tick
    /// (`Node::propagate_settings`).
    pub settings_proposed: Option<(u64, u64)>,
    /// The node tick at which this replica was created by applying a split.
    pub split_at_tick: Option<u64>,
    /// Writes applied, and some of their keys (for a split by load).
    pub load: Load,
    /// The state machine's settings last reported to the simulation's checker.
    #[cfg(madsim)]
    pub sim_settings: crate::range::settings::RangeSettings,
}

impl Replica {
    pub fn new(
        descriptor: RangeDescriptor,
        raft: RaftGroup,
        kv: KvStore,
        snapshot_index: Index,
        snapshot_bytes: u64,
    ) -> Self {
        Replica {
            descriptor,
            raft,
            snapshot_index,
            snapshot_bytes,
            log_bytes: 0,
            writes: BTreeMap::new(),
            reads_unconfirmed: BTreeMap::new(),
            reads_confirmed: Vec::new(),
            settings_proposed: None,
            split_at_tick: None,
            load: Load::default(),
            #[cfg(madsim)]
            sim_settings: kv.settings(),
            kv,
        }
    }

    pub fn id(&self) -> RangeId {
        self.descriptor.id
    }

    /// Proposes a write; replies at once if this replica cannot take it.
    pub fn propose_write(
        &mut self,
        command: Command,
        reply: ReplyTo,
        not_leader: impl Fn(Option<NodeId>) -> Response,
    ) {
        // Sized up front: growing from empty reallocates several times per command.
        let mut data = Vec::with_capacity(command_bytes_estimate(&command));
        let encoded =
            bincode::serde::encode_into_std_write(&command, &mut data, bincode::config::standard());
        let data = match encoded {
            Ok(_) => data,
            Err(error) => {
                return reply
                    .send(Response::Invalid { reason: format!("unencodable command: {error}") })
            }
        };
        let proposed = self.raft.propose(command.op.format(), data);
        self.await_proposal(proposed, reply, not_leader);
    }

    /// Proposes a write of the node's own that nobody waits for (the range's
    /// settings); false if this replica cannot take it now (it is retried later).
    pub fn propose_internal(&mut self, command: &Command) -> bool {
        let Ok(data) = bincode::serde::encode_to_vec(command, bincode::config::standard()) else {
            return false;
        };
        self.raft.propose(command.op.format(), data).is_ok()
    }

    /// A proposal's outcome: its reply waits for the entry to be applied, or is sent now
    /// (a redirect, or why it was refused).
    fn await_proposal(
        &mut self,
        proposed: Result<Index, crate::raft::RaftError>,
        reply: ReplyTo,
        not_leader: impl Fn(Option<NodeId>) -> Response,
    ) {
        match proposed {
            Ok(index) => {
                let term = self.raft.term();
                let proposed = tokio::time::Instant::now();
                let previous = self.writes.insert(index, PendingWrite { term, reply, proposed });
                assert!(previous.is_none(), "range {} proposed twice at index {index}", self.id());
            }
            Err(crate::raft::RaftError::NotLeader { leader_hint }) => {
                reply.send(not_leader(leader_hint))
            }
            Err(error) => {
                #[cfg(madsim)]
                if matches!(error, crate::raft::RaftError::ConfChangeRefused(_)) {
                    crate::env::sim_hooks::sometimes("membership change refused by the leader");
                }
                reply.send_dropped(Response::Unavailable { reason: error.to_string() })
            }
        }
    }

    /// Proposes a membership change; answers with the configuration once its entry
    /// is applied.
    pub fn propose_conf_change(
        &mut self,
        change: crate::raft::ConfChange,
        reply: ReplyTo,
        not_leader: impl Fn(Option<NodeId>) -> Response,
    ) {
        let proposed = self.raft.propose_conf_change(change);
        self.await_proposal(proposed, reply, not_leader);
    }

    /// The range's configuration as this replica has it.
    pub fn membership(&self) -> crate::wire::RangeMembership {
        let membership = self.raft.membership();
        crate::wire::RangeMembership {
            range: self.id(),
            voters: membership.voters.iter().copied().collect(),
            outgoing: membership.outgoing.iter().copied().collect(),
            learners: membership.learners.iter().copied().collect(),
        }
    }

    /// Starts a linearizable read tagged `context`, confirmed as `mode` allows.
    pub fn start_read(
        &mut self,
        context: u64,
        mode: ReadMode,
        now_tick: u64,
        request: Request,
        reply: ReplyTo,
        not_leader: impl Fn(Option<NodeId>) -> Response,
    ) {
        match self.raft.read_index(context, mode) {
            Ok(()) => {
                let read = PendingRead { request, reply, started_tick: now_tick };
                self.reads_unconfirmed.insert(context, read);
            }
            Err(crate::raft::RaftError::NotLeader { leader_hint }) => {
                reply.send(not_leader(leader_hint))
            }
            Err(error) => reply.send(Response::Unavailable { reason: error.to_string() }),
        }
    }

    /// A read index arrived for `context`.
    pub fn confirm_read(&mut self, context: u64, index: Index) {
        if let Some(read) = self.reads_unconfirmed.remove(&context) {
            self.reads_confirmed.push((index, read));
        }
    }

    /// Fails reads that have waited too long for their read index.
    pub fn expire_reads(&mut self, now_tick: u64) {
        let expired: Vec<u64> = self
            .reads_unconfirmed
            .iter()
            .filter(|(_, read)| now_tick.saturating_sub(read.started_tick) > READ_TIMEOUT_TICKS)
            .map(|(context, _)| *context)
            .collect();
        for context in expired {
            let read = self.reads_unconfirmed.remove(&context).expect("collected above");
            read.reply.send(Response::Unavailable { reason: "read index timed out; retry".into() });
        }
    }

    /// Applies one committed entry and answers the write waiting on it, if any.
    ///
    /// # Errors
    /// An entry this version cannot read (a newer node's format): nothing is applied,
    /// and the replica cannot go on (its state machine would skip a committed write).
    pub fn apply(&mut self, entry: &Entry) -> Result<Applied, UnreadableEntry> {
        let command = match Applicable::decode(entry.format, &entry.data)? {
            Applicable::ConfChange => {
                self.kv.apply_noop(entry.index);
                if let Some(write) = self.writes.remove(&entry.index) {
                    if write.term == entry.term {
                        write.committed();
                        write.reply.send(Response::Membership(self.membership()));
                    } else {
                        let reason = "leader changed; retry".into();
                        write.reply.send_dropped(Response::Unavailable { reason });
                    }
                }
                return Ok(Applied::default());
            }
            Applicable::Noop => {
                self.kv.apply_noop(entry.index);
                if let Some(write) = self.writes.remove(&entry.index) {
                    // Our proposal at this index was replaced by a new leader's no-op.
                    let reason = "leader changed; retry".into();
                    write.reply.send_dropped(Response::Unavailable { reason });
                }
                return Ok(Applied::default());
            }
            Applicable::Command(command) => command,
        };
        self.log_bytes += entry.data.len() as u64;
        let waiting = self.writes.remove(&entry.index);
        // The new range's configuration is the one in force at the split's index (the
        // same on every replica); a joint one refuses the split (its leader plans it
        // again once the change is done).
        let conf_state = self.raft.conf_state_at(entry.index);
        // A put or delete counts toward the range's load; one in `Load::EVERY` keeps
        // its key (copied only then: this is the write path).
        let written = match &command.op {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => {
                Some(self.load.samples_next().then(|| key.clone()))
            }
            _ => None,
        };
        let result = if matches!(command.op, WriteOp::Split { .. }) && conf_state.is_none() {
            self.kv.apply_noop(entry.index);
            let reason = "the range is changing its replicas".to_string();
            CommandResult::SplitRefused { reason }
        } else {
            self.kv.apply_owned(entry.index, command)
        };
        let split = match (&result, self.kv.take_split(), conf_state) {
            (CommandResult::Split { .. }, Some((right, kv)), Some(conf_state)) => {
                self.refresh_descriptor();
                Some(AppliedSplit {
                    left: self.id(),
                    right,
                    kv,
                    index: entry.index,
                    term: entry.term,
                    conf_state,
                })
            }
            _ => None,
        };
        let refused =
            matches!(result, CommandResult::WrongRange | CommandResult::SplitRefused { .. });
        if let (Some(sampled), false) = (written, refused) {
            self.load.record(sampled);
        }
        if let Some(write) = waiting {
            if write.term == entry.term {
                write.committed();
                write.reply.send(match result {
                    CommandResult::Put { revision } => Response::Put { revision },
                    CommandResult::Delete { revision, existed } => {
                        Response::Delete { revision, existed }
                    }
                    CommandResult::Expired => Response::Unavailable {
                        reason: "retry too old to deduplicate; the outcome is unknown".into(),
                    },
                    CommandResult::Locked(lock) => Response::Locked { lock },
                    CommandResult::Txn(result) => Response::Txn(result),
                    // Proposed by the leader itself (`propose_internal`): nobody waits.
                    CommandResult::Settings => Response::Put { revision: entry.index },
                    CommandResult::Frozen(freeze) => frozen(self.descriptor.id, freeze),
                    CommandResult::FrozenFor(freeze) => Response::BackupFrozen { freeze },
                    CommandResult::Unfrozen { held } => Response::BackupUnfrozen { held },
                    CommandResult::WrongRange => self.wrong_range(),
                    CommandResult::Split { right } => Response::Invalid {
                        reason: format!("{} split ({right}); not an answer to a client", self.id()),
                    },
                    CommandResult::SplitRefused { reason } => Response::Invalid { reason },
                    CommandResult::SplitPlanned { left, right } => {
                        Response::Split { left: Box::new(left), right: Box::new(right) }
                    }
                });
            } else {
                let reason = "leader changed; retry".into();
                write.reply.send_dropped(Response::Unavailable { reason });
            }
        }
        Ok(Applied { split, refused })
    }

    /// The answer to a request for a key this range no longer owns.
    pub fn wrong_range(&self) -> Response {
        Response::WrongRange { range: self.id(), descriptor: self.descriptor.clone() }
    }

    /// Takes the descriptor's span from the state machine (after a split or an
    /// installed snapshot) and its replicas from the Raft configuration.
    pub fn refresh_descriptor(&mut self) {
        if let Some(span) = self.kv.span() {
            let membership = self.raft.membership();
            let replicas = membership.members().into_iter().collect();
            self.descriptor = span.descriptor(self.id(), replicas);
        }
    }

    /// Answers every confirmed read the state machine has caught up with.
    pub fn serve_reads(&mut self) {
        let applied = self.kv.applied();
        if self.reads_confirmed.iter().all(|(index, _)| *index > applied) {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_confirmed)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.reads_confirmed = waiting;
        for (_, read) in ready {
            let response = self.read_now(&read.request);
            read.reply.send(response);
        }
    }

    /// Answers a read from the local state machine as it is now.
    pub fn read_now(&self, request: &Request) -> Response {
        let key = match request {
            Request::Get { key, .. }
            | Request::TxnLocks { key, .. }
            | Request::TxnStatus { anchor: key, .. }
            | Request::Scan { start: key, .. } => Some(key),
            _ => None,
        };
        // Routed here before the range split (or the read waited across the split).
        if let (Some(key), Some(span)) = (key, self.kv.span()) {
            if !span.contains(key) {
                return self.wrong_range();
            }
        }
        let applied = self.kv.applied();
        let unavailable = |e: RevisionUnavailable| Response::RevisionUnavailable {
            revision: e.revision,
            first: e.first,
            last: e.last,
        };
        match request {
            Request::Get { key, revision, .. } => match self.kv.get(key, *revision) {
                Ok(kv) => Response::Get {
                    kv,
                    read_revision: revision.unwrap_or(applied),
                    // A read of the past is not affected by today's locks.
                    lock: if revision.is_none() { self.kv.intent(key) } else { None },
                },
                Err(e) => unavailable(e),
            },
            Request::TxnStatus { txn, .. } => Response::Txn(self.kv.txn_status(*txn)),
            Request::TxnLocks { limit, .. } => {
                Response::TxnLocks { locks: self.kv.txn_outstanding(*limit as usize) }
            }
            Request::Scan { start, end, limit, revision } => {
                self.scan_now(start, end.as_deref(), *limit, *revision)
            }
            // Checked by the node: both bounds under `_/`, so in the meta range.
            Request::MetaScan { start, end, limit } => {
                match self.kv.scan(start, Some(end), *limit, None) {
                    Ok(kvs) => {
                        Response::Scan { kvs, resume: None, read_revision: applied, locks: vec![] }
                    }
                    Err(e) => unavailable(e),
                }
            }
            other => Response::Invalid { reason: format!("not a read: {other:?}") },
        }
    }

    /// Scans `[start, end)` clipped to this range; `resume` is this range's end when
    /// the scan must continue in the next range.
    fn scan_now(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u64,
        revision: Option<u64>,
    ) -> Response {
        let range_end = self.descriptor.end.as_deref();
        let (clipped_end, resume) = match (end, range_end) {
            (_, None) => (end, None),
            (None, Some(r)) => (Some(r), Some(r.to_vec())),
            (Some(e), Some(r)) if e <= r => (Some(e), None),
            (Some(_), Some(r)) => (Some(r), Some(r.to_vec())),
        };
        let read_revision = revision.unwrap_or(self.kv.applied());
        // The meta range holds only rangedb's own keys: scans pass over it.
        if self.descriptor.contains(crate::range::descriptor::RESERVED_PREFIX) {
            return Response::Scan { kvs: vec![], resume, read_revision, locks: vec![] };
        }
        let mut kvs = match self.kv.scan(start, clipped_end, limit, revision) {
            Ok(kvs) => kvs,
            Err(e) => {
                return Response::RevisionUnavailable {
                    revision: e.revision,
                    first: e.first,
                    last: e.last,
                }
            }
        };
        let full = limit != 0 && kvs.len() as u64 >= limit;
        let mut resume = if full { None } else { resume };
        // Cap the reply's size; the client continues just after the last key sent.
        let mut bytes = 0;
        if let Some(cut) = kvs.iter().position(|kv| {
            bytes += kv.key.len() + kv.value.len() + 32;
            bytes > SCAN_REPLY_BYTES_MAX
        }) {
            let cut = cut.max(1);
            if cut < kvs.len() {
                kvs.truncate(cut);
                let mut next = kvs[cut - 1].key.clone();
                next.push(0);
                resume = Some(next);
            }
        }
        // The intents in the part answered (up to the resume point).
        let locks = if revision.is_some() {
            Vec::new()
        } else {
            let answered_end = resume.as_deref().or(clipped_end);
            self.kv.intents_in(start, answered_end)
        };
        Response::Scan { kvs, resume, read_revision, locks }
    }

    /// Leadership was lost: fail every waiting request so clients retry at the new
    /// leader. Writes may still commit; their retry is deduplicated by request id.
    pub fn fail_pending(&mut self, response: impl Fn() -> Response) {
        for (_, write) in std::mem::take(&mut self.writes) {
            write.reply.send_dropped(response());
        }
        for (_, read) in std::mem::take(&mut self.reads_unconfirmed) {
            read.reply.send(response());
        }
        for (_, read) in std::mem::take(&mut self.reads_confirmed) {
            read.reply.send(response());
        }
    }

    /// Reports the state machine's settings to the simulation's checker if they
    /// changed since the last report, as of its applied index.
    #[cfg(madsim)]
    pub fn sim_report_settings(&mut self, node: NodeId) {
        let settings = self.kv.settings();
        if settings != self.sim_settings {
            self.sim_settings = settings;
            let (range, index) = (self.id(), self.kv.applied());
            crate::env::sim_hooks::observe(|o| o.settings_applied(node, range, index, settings));
        }
    }

    /// No write or read waits on this replica.
    pub fn waits_on_nothing(&self) -> bool {
        self.writes.is_empty()
            && self.reads_unconfirmed.is_empty()
            && self.reads_confirmed.is_empty()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.role() == Role::Leader
    }

    /// Live keys: values under the descriptor prefix of the meta range.
    pub fn scan_all(&self, start: &[u8], end: &[u8]) -> Vec<KeyValue> {
        self.kv.scan(start, Some(end), 0, None).unwrap_or_default()
    }
}

/// The answer to a write that a backup's freeze refused: retry (the client does).
pub fn frozen(
    range: crate::range::descriptor::RangeId,
    freeze: crate::range::kv::Freeze,
) -> Response {
    let reason = format!("{range} is held still for backup {:016x}; retry", freeze.backup);
    Response::Unavailable { reason }
}
