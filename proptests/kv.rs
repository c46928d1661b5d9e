//! The KV state machine (`KvStore`) against a model: a plain map per applied index,
//! and a table of every (client, seq) result for request-id deduplication. Random
//! puts, deletes, no-ops, retries, gets and scans at any revision with limits, and
//! snapshot-then-restore in the middle; with all history kept or only the last few
//! revisions (compaction: older reads are refused, newer ones still see every version
//! they should).

use std::collections::BTreeMap;

use proptest::collection::vec;
use proptest::prelude::*;

use rangedb::range::kv::{Command, CommandResult, KvStore, RevisionUnavailable, WriteOp};
use rangedb::range::kv::{Freeze, KeyValue, RequestId};

type State = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

#[derive(Clone, Debug)]
enum Op {
    Write {
        gap: u64,
        op: WriteOp,
        id: Option<(u64, u64)>,
    },
    /// Re-applies the n-th (mod count) write that carried a request id.
    Retry {
        gap: u64,
        which: usize,
    },
    Noop {
        gap: u64,
    },
    Get {
        key: Vec<u8>,
        back: u64,
    },
    Scan {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u64,
        back: u64,
    },
    SnapshotRestore,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'c'), Just(0u8), Just(0xff)], 0..3)
}

fn op() -> impl Strategy<Value = Op> {
    let write = prop_oneof![
        3 => (key(), vec(any::<u8>(), 0..4)).prop_map(|(key, value)| WriteOp::Put { key, value }),
        1 => key().prop_map(|key| WriteOp::Delete { key }),
        1 => (1u64..3).prop_map(|backup| WriteOp::Freeze { backup, deadline_ms: 5 }),
        1 => (1u64..3).prop_map(|backup| WriteOp::Unfreeze { backup }),
    ];
    let id = proptest::option::of((0u64..3, 0u64..24));
    prop_oneof![
        8 => (1u64..3, write, id).prop_map(|(gap, op, id)| Op::Write { gap, op, id }),
        2 => (1u64..3, any::<usize>()).prop_map(|(gap, which)| Op::Retry { gap, which }),
        1 => (1u64..3).prop_map(|gap| Op::Noop { gap }),
        3 => (key(), 0u64..8).prop_map(|(key, back)| Op::Get { key, back }),
        3 => (key(), proptest::option::of(key()), 0u64..4, 0u64..8)
            .prop_map(|(start, end, limit, back)| Op::Scan { start, end, limit, back }),
        1 => Just(Op::SnapshotRestore),
    ]
}

struct Model {
    /// (applied index, state after it), increasing; starts with (0, empty).
    states: Vec<(u64, State)>,
    /// Every request applied: (client, seq) -> its result.
    results: BTreeMap<(u64, u64), CommandResult>,
    /// Commands with a request id, for retries.
    sent: Vec<Command>,
    /// The backup freeze in force: every other write is refused, and not remembered.
    freeze: Option<Freeze>,
}

impl Model {
    fn applied(&self) -> u64 {
        self.states.last().expect("never empty").0
    }

    /// The state as of `revision`; None beyond the applied index or below `first`.
    fn at(&self, revision: u64, first: u64) -> Option<&State> {
        if revision > self.applied() || revision < first {
            return None;
        }
        let count = self.states.partition_point(|(index, _)| *index <= revision);
        Some(&self.states[count - 1].1)
    }

    fn apply(&mut self, index: u64, command: &Command) -> CommandResult {
        let id = command.request_id.map(|id| (id.client, id.seq));
        let mut state = self.states.last().expect("never empty").1.clone();
        let cached = id.and_then(|id| self.results.get(&id).cloned());
        let result = match (cached, &command.op, self.freeze) {
            (Some(cached), _, _) => cached,
            (None, WriteOp::Freeze { backup, deadline_ms }, None) => {
                let freeze = Freeze { backup: *backup, index, deadline_ms: *deadline_ms };
                self.freeze = Some(freeze);
                CommandResult::FrozenFor(freeze)
            }
            (None, WriteOp::Freeze { backup, .. }, Some(freeze)) if freeze.backup == *backup => {
                CommandResult::FrozenFor(freeze)
            }
            (None, WriteOp::Unfreeze { backup }, freeze) => {
                let held = freeze.is_some_and(|freeze| freeze.backup == *backup);
                if held {
                    self.freeze = None;
                }
                CommandResult::Unfrozen { held }
            }
            (None, _, Some(freeze)) => CommandResult::Frozen(freeze),
            (None, WriteOp::Put { key, value }, None) => {
                state.insert(key.clone(), (value.clone(), index));
                CommandResult::Put { revision: index }
            }
            (None, WriteOp::Delete { key }, None) => {
                let existed = state.remove(key).is_some();
                CommandResult::Delete { revision: index, existed }
            }
            (
                None,
                WriteOp::Txn(_)
                | WriteOp::Settings(_)
                | WriteOp::Split { .. }
                | WriteOp::PlanSplit { .. },
                None,
            ) => {
                unreachable!("this model draws no transaction steps, settings or splits")
            }
        };
        let applied = matches!(result, CommandResult::Put { .. } | CommandResult::Delete { .. });
        if let (Some(id), true) = (id, applied) {
            self.results.entry(id).or_insert(result.clone());
        }
        self.states.push((index, state));
        result
    }
}

fn model_kvs<'a>(items: impl Iterator<Item = (&'a Vec<u8>, &'a (Vec<u8>, u64))>) -> Vec<KeyValue> {
    items
        .map(|(key, (value, revision))| KeyValue {
            key: key.clone(),
            value: value.clone(),
            revision: *revision,
        })
        .collect()
}

fn unavailable(revision: u64, first: u64, applied: u64) -> RevisionUnavailable {
    RevisionUnavailable { revision, first, last: applied }
}

/// `history`: revisions kept below the applied index (u64::MAX: all).
fn run(ops: Vec<Op>, history: u64) -> Result<(), TestCaseError> {
    let mut store = KvStore::new();
    store.set_history(history);
    let mut model = Model {
        states: vec![(0, State::new())],
        results: BTreeMap::new(),
        sent: vec![],
        freeze: None,
    };
    for op in ops {
        let applied = model.applied();
        let first = applied.saturating_sub(history);
        match op {
            Op::Write { gap, op, id } => {
                let request_id = id.map(|(client, seq)| RequestId { client, seq });
                let command = Command { request_id, op };
                if request_id.is_some() {
                    model.sent.push(command.clone());
                }
                let expected = model.apply(applied + gap, &command);
                prop_assert_eq!(store.apply(applied + gap, &command), expected);
            }
            Op::Retry { gap, which } => {
                if model.sent.is_empty() {
                    continue;
                }
                let command = model.sent[which % model.sent.len()].clone();
                let expected = model.apply(applied + gap, &command);
                prop_assert_eq!(store.apply(applied + gap, &command), expected);
            }
            Op::Noop { gap } => {
                let state = model.states.last().expect("never empty").1.clone();
                model.states.push((applied + gap, state));
                store.apply_noop(applied + gap);
            }
            Op::Get { key, back } => {
                // `back` 0 asks one past the applied index: unavailable.
                let revision = (applied + 1).saturating_sub(back);
                let expected = match model.at(revision, first) {
                    None => Err(unavailable(revision, first, applied)),
                    Some(state) => Ok(model_kvs(state.get_key_value(&key).into_iter()).pop()),
                };
                prop_assert_eq!(store.get(&key, Some(revision)), expected);
            }
            Op::Scan { start, end, limit, back } => {
                let revision = (applied + 1).saturating_sub(back);
                let expected = model.at(revision, first).map(|state| {
                    let items = state
                        .iter()
                        .filter(|(k, _)| **k >= start && end.as_ref().is_none_or(|end| *k < end));
                    let mut kvs = model_kvs(items);
                    if limit > 0 {
                        kvs.truncate(limit as usize);
                    }
                    kvs
                });
                let expected = expected.ok_or_else(|| unavailable(revision, first, applied));
                let got = store.scan(&start, end.as_deref(), limit, Some(revision));
                prop_assert_eq!(got, expected);
            }
            Op::SnapshotRestore => {
                let mut restored = KvStore::restore(&store.snapshot()).expect("own snapshot");
                restored.set_history(history);
                prop_assert_eq!(&restored, &store);
                store = restored;
            }
        }
        let latest = &model.states.last().expect("never empty").1;
        prop_assert_eq!(store.applied(), model.applied());
        prop_assert_eq!(store.len(), latest.len());
        prop_assert_eq!(store.scan(b"", None, 0, None).unwrap(), model_kvs(latest.iter()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::config("kv", 256))]

    #[test]
    fn kv_store_matches_model(ops in vec(op(), 0..120)) {
        run(ops, u64::MAX)?;
    }

    #[test]
    fn kv_store_with_bounded_history_matches_model(
        ops in vec(op(), 0..200),
        history in prop_oneof![Just(0u64), 1u64..12],
    ) {
        run(ops, history)?;
    }
}
