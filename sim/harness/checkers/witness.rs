//! The witness check: the committed log (every command at its Raft index, as the
//! replicas applied it) is replayed in index order against a sequential model of the
//! KV state machine, and every client outcome is checked against it:
//! - an acknowledged put happened at exactly the revision it reported, once;
//! - a write that failed (definitely no effect) is nowhere in the log;
//! - a read returned a version the model has at that revision (or an absent key);
//! - real time: a read never returns a version that a write completed before the
//!   read began had already replaced, nor one written after the read completed.

use std::collections::BTreeMap;

use rangedb::raft::Term;
use rangedb::range::descriptor::{
    default_split_keys, initial_descriptors, RangeId, RangeTable, Span,
};
use rangedb::range::kv::{Command, WriteOp};

use super::super::history::{Call, Op, Outcome, Seen};
use super::super::workload::KEYS;
use super::Violation;

/// One version of a key: revision, value (None: deleted), the write's (client, seq).
#[derive(Clone, Debug)]
pub struct Version {
    pub revision: u64,
    pub value: Option<Vec<u8>>,
    pub writer: Option<(u64, u64)>,
}

/// The replayed state machine.
#[derive(Default)]
pub struct Model {
    /// Per key, versions in revision order (revision 0: the initial absent state).
    pub versions: BTreeMap<Vec<u8>, Vec<Version>>,
    /// (client, seq) -> (range, index) of the entry that took effect.
    pub effective: BTreeMap<(u64, u64), (RangeId, u64)>,
    /// (client, seq) -> delete's `existed` as the model computed it.
    pub delete_existed: BTreeMap<(u64, u64), bool>,
    /// (client, seq) of every entry in the log, effective or deduplicated.
    pub logged: BTreeMap<(u64, u64), Vec<(RangeId, u64)>>,
    /// Every range's span after the whole log (splits replayed).
    pub spans: BTreeMap<RangeId, Span>,
    /// Splits the log made: (range, index, key, new range).
    pub splits: Vec<(RangeId, u64, Vec<u8>, RangeId)>,
    pub problems: Vec<String>,
}

pub fn range_of(key: &[u8], voters: usize) -> RangeId {
    let voters: Vec<rangedb::raft::NodeId> =
        (1..=voters as u64).map(rangedb::raft::NodeId).collect();
    let table = RangeTable::new(
        initial_descriptors(&default_split_keys(), &voters).expect("default split keys are valid"),
    );
    table.lookup(key).id
}

impl Model {
    /// The range that owns `key` once the whole log is applied.
    pub fn range_of(&self, key: &[u8]) -> RangeId {
        self.spans.iter().find(|(_, span)| span.contains(key)).map_or(RangeId(0), |(id, _)| *id)
    }

    /// Replays the log range by range in id order (a range a split created has a
    /// higher id than the range it came from, so its parent's split is replayed
    /// first: it starts with the parent's right half of the keyspace and a copy of its
    /// deduplication table). Writes the state machine refused as a whole (routed
    /// before a split) are logged empty by the nodes, as no-ops.
    pub fn replay(committed: &BTreeMap<(RangeId, u64), (Term, Vec<u8>)>, voters: usize) -> Model {
        let mut model = Model::default();
        let founders: Vec<rangedb::raft::NodeId> =
            (1..=voters as u64).map(rangedb::raft::NodeId).collect();
        let initial = initial_descriptors(&default_split_keys(), &founders)
            .expect("default split keys are valid");
        model.spans = initial.iter().map(|d| (d.id, d.span())).collect();
        let mut inherited: BTreeMap<RangeId, BTreeMap<(u64, u64), ()>> = BTreeMap::new();
        for key in KEYS {
            model
                .versions
                .insert(key.to_vec(), vec![Version { revision: 0, value: None, writer: None }]);
        }
        let mut ranges: BTreeMap<RangeId, Vec<(u64, &Vec<u8>)>> = BTreeMap::new();
        for ((range, index), (_, data)) in committed {
            ranges.entry(*range).or_default().push((*index, data));
        }
        for (range, entries) in ranges {
            let mut seen: BTreeMap<(u64, u64), ()> = inherited.remove(&range).unwrap_or_default();
            if !model.spans.contains_key(&range) {
                model.problems.push(format!(
                    "{range} has committed entries but no split in the log created it"
                ));
                continue;
            }
            // A backup's freeze in force: the range refuses every other write, and
            // forgets it (its retry applies later).
            let mut frozen: Option<u64> = None;
            for (index, data) in entries {
                if data.is_empty() {
                    continue;
                }
                let decoded = bincode::serde::decode_from_slice::<Command, _>(
                    data,
                    bincode::config::standard(),
                );
                let Ok((command, _)) = decoded else {
                    model.problems.push(format!("{range} index {index}: undecodable entry"));
                    continue;
                };
                match (&command.op, frozen) {
                    (WriteOp::Freeze { backup, .. }, None) => frozen = Some(*backup),
                    (WriteOp::Unfreeze { backup }, Some(holder)) if *backup == holder => {
                        frozen = None
                    }
                    (WriteOp::Freeze { .. } | WriteOp::Unfreeze { .. }, _) => {}
                    (_, Some(_)) => continue,
                    (_, None) => {}
                }
                let id = command.request_id.map(|id| (id.client, id.seq));
                if let Some(id) = id {
                    model.logged.entry(id).or_default().push((range, index));
                    if seen.insert(id, ()).is_some() {
                        continue; // A retry: the state machine answers from its table.
                    }
                    model.effective.insert(id, (range, index));
                }
                let span = model.spans.get(&range).cloned().expect("checked above");
                let outside = match &command.op {
                    WriteOp::Put { key, .. } | WriteOp::Delete { key } => {
                        (!span.contains(key)).then(|| key.clone())
                    }
                    _ => None,
                };
                if let Some(key) = outside {
                    model.problems.push(format!(
                        "{range} applied a write of {:?} at index {index}, outside its span \
                         {:?}..{:?} (generation {})",
                        String::from_utf8_lossy(&key),
                        String::from_utf8_lossy(&span.start),
                        span.end.as_deref().map(String::from_utf8_lossy),
                        span.generation
                    ));
                }
                match command.op {
                    WriteOp::Split { key, right, generation } => {
                        if generation != span.generation || !span.splits_at(&key) {
                            model.problems.push(format!(
                                "{range} applied a split at {:?} of generation {generation} at \
                                 index {index}, but it is {:?}..{:?} at generation {}",
                                String::from_utf8_lossy(&key),
                                String::from_utf8_lossy(&span.start),
                                span.end.as_deref().map(String::from_utf8_lossy),
                                span.generation
                            ));
                            continue;
                        }
                        if model.spans.contains_key(&right) {
                            model.problems.push(format!(
                                "{range} split at index {index} into {right}, an id in use"
                            ));
                            continue;
                        }
                        let generation = generation + 1;
                        let left = Span { start: span.start, end: Some(key.clone()), generation };
                        model
                            .spans
                            .insert(right, Span { start: key.clone(), end: span.end, generation });
                        model.spans.insert(range, left);
                        inherited.insert(right, seen.clone());
                        model.splits.push((range, index, key, right));
                    }
                    WriteOp::PlanSplit { .. } => {}
                    WriteOp::Put { key, value } => {
                        let versions = model.versions.entry(key).or_default();
                        versions.push(Version { revision: index, value: Some(value), writer: id });
                    }
                    WriteOp::Delete { key } => {
                        let versions = model.versions.entry(key).or_default();
                        let live = versions.last().is_some_and(|v| v.value.is_some());
                        if let Some(id) = id {
                            model.delete_existed.insert(id, live);
                        }
                        if live {
                            versions.push(Version { revision: index, value: None, writer: id });
                        }
                    }
                    // Transactions touch the bank's keys only (sim/harness/bank.rs),
                    // which the bank checker judges; none of `KEYS`.
                    WriteOp::Txn(_) => {}
                    // A range's settings (range/settings.rs): no key.
                    WriteOp::Settings(_) => {}
                    WriteOp::Freeze { .. } | WriteOp::Unfreeze { .. } => {}
                }
            }
        }
        model
    }
}

pub fn check(model: &Model, history: &[Op]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut fail = |message: String, ops: Vec<&Op>| {
        if violations.len() < 5 {
            let evidence = ops.iter().map(|op| op.to_string()).collect();
            let focus = ops.first().map(|first| {
                let from = ops.iter().map(|o| o.invoke_ms).min().unwrap_or(0);
                let to = ops.iter().map(|o| o.complete_ms).max().unwrap_or(0);
                (first.key().to_vec(), from, to)
            });
            violations.push(Violation { checker: "witness", message, evidence, focus });
        }
    };
    for problem in &model.problems {
        fail(problem.clone(), vec![]);
    }
    // Completion time of each acknowledged write, by (client, seq).
    let acked: BTreeMap<(u64, u64), &Op> = history
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Put { .. } | Outcome::Delete { .. }))
        .filter_map(|op| Some(((op.client, op.seq()?), op)))
        .collect();
    let invoked: BTreeMap<(u64, u64), &Op> =
        history.iter().filter_map(|op| Some(((op.client, op.seq()?), op))).collect();
    for op in history {
        let Some(seq) = op.seq() else { continue };
        let id = (op.client, seq);
        match &op.outcome {
            Outcome::Put { revision } => match model.effective.get(&id) {
                // Which range applied it is checked by the replay (the key in its span).
                Some((_, index)) if *index == *revision => {}
                Some((range, index)) => fail(
                    format!("acknowledged put took effect at {range} index {index}, not at revision {revision}"),
                    vec![op],
                ),
                None => fail("acknowledged put is not in the committed log".into(), vec![op]),
            },
            Outcome::Delete { existed } => match model.effective.get(&id) {
                Some(_) => {
                    if model.delete_existed.get(&id) != Some(existed) {
                        fail(format!("delete answered existed={existed}, the model disagrees"), vec![op]);
                    }
                }
                None => fail("acknowledged delete is not in the committed log".into(), vec![op]),
            },
            Outcome::Failed(_) => {
                if let Some(places) = model.logged.get(&id) {
                    fail(format!("a write reported as failed is in the log at {places:?}"), vec![op]);
                }
            }
            _ => {}
        }
    }
    for op in history {
        let observations: Vec<(Vec<u8>, Seen)> = match (&op.call, &op.outcome) {
            (Call::Get { key, .. }, Outcome::Get(found)) => vec![(key.clone(), found.clone())],
            (Call::Scan { start, end }, Outcome::Scan(kvs)) => scan_observations(start, end, kvs),
            _ => continue,
        };
        for (key, found) in observations {
            let Some(versions) = model.versions.get(&key) else { continue };
            // Indexes (into versions) the read may have observed.
            let candidates: Vec<usize> = match &found {
                Some((value, revision)) => {
                    match versions.iter().position(|v| v.revision == *revision) {
                        Some(i) if versions[i].value.as_ref() == Some(value) => vec![i],
                        _ => {
                            fail(
                                format!(
                                    "read of {} returned a version not in the committed log",
                                    String::from_utf8_lossy(&key)
                                ),
                                vec![op],
                            );
                            continue;
                        }
                    }
                }
                None => (0..versions.len()).filter(|i| versions[*i].value.is_none()).collect(),
            };
            let fits = |i: usize| {
                let written_before_end = versions[i]
                    .writer
                    .and_then(|w| invoked.get(&w))
                    .is_none_or(|w| w.invoke_ms <= op.complete_ms);
                let replaced_before_start = versions.get(i + 1).is_some_and(|next| {
                    next.writer
                        .and_then(|w| acked.get(&w))
                        .is_some_and(|w| w.complete_ms < op.invoke_ms)
                });
                written_before_end && !replaced_before_start
            };
            if !candidates.iter().any(|i| fits(*i)) {
                let mut evidence = vec![op];
                if let Some(i) = candidates.last() {
                    if let Some(next) = versions.get(i + 1) {
                        if let Some(w) = next.writer.and_then(|w| acked.get(&w)) {
                            evidence.insert(0, w);
                        }
                    }
                }
                fail(
                    format!(
                        "read of {} is stale or from the future in real time",
                        String::from_utf8_lossy(&key)
                    ),
                    evidence,
                );
            }
        }
    }
    violations
}

/// What a scan says about each workload key in its span: present with a value, or absent.
pub fn scan_observations(
    start: &[u8],
    end: &Option<Vec<u8>>,
    kvs: &[(Vec<u8>, Vec<u8>, u64)],
) -> Vec<(Vec<u8>, Seen)> {
    KEYS.iter()
        .filter(|k| **k >= start && end.as_ref().is_none_or(|e| **k < e.as_slice()))
        .map(|k| {
            let found = kvs.iter().find(|(key, _, _)| key.as_slice() == *k);
            (k.to_vec(), found.map(|(_, v, r)| (v.clone(), *r)))
        })
        .collect()
}
