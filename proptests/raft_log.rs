//! The Raft log (`RaftLog`: durable `MemStorage` overlaid with the `Unstable` tail)
//! against a plain Vec model of the logical log, under leader appends, follower
//! appends that overwrite an uncommitted suffix, Readies handed out and advanced
//! late (with truncations in between), commits, applies, compactions and snapshot
//! installs.

use proptest::collection::vec;
use proptest::prelude::*;

use rangedb::raft::testing::RaftLog;
use rangedb::raft::{
    ConfState, Entry, EntryFormat, Index, MemStorage, NodeId, Snapshot, SnapshotMeta, Storage,
    StorageError, Term,
};

#[derive(Clone, Debug)]
enum Op {
    LeaderAppend {
        count: u64,
        bump: u64,
    },
    /// Append after `prev = last - back`: keep `keep` matching entries, then `new`
    /// entries of a higher term.
    FollowerAppend {
        back: u64,
        keep: u64,
        new: u64,
        bump: u64,
    },
    Ready,
    Advance,
    Commit {
        back: u64,
    },
    Apply,
    Compact {
        back: u64,
    },
    InstallSnapshot {
        ahead: u64,
        bump: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..4, 0u64..2).prop_map(|(count, bump)| Op::LeaderAppend { count, bump }),
        3 => (0u64..6, 0u64..4, 0u64..4, 0u64..2)
            .prop_map(|(back, keep, new, bump)| Op::FollowerAppend { back, keep, new, bump }),
        3 => Just(Op::Ready),
        3 => Just(Op::Advance),
        2 => (0u64..4).prop_map(|back| Op::Commit { back }),
        2 => Just(Op::Apply),
        1 => (0u64..4).prop_map(|back| Op::Compact { back }),
        1 => (1u64..4, 0u64..2).prop_map(|(ahead, bump)| Op::InstallSnapshot { ahead, bump }),
    ]
}

/// The logical log: a snapshot point and every entry after it.
struct Model {
    snapshot_index: Index,
    snapshot_term: Term,
    entries: Vec<Entry>,
    committed: Index,
    applied: Index,
}

impl Model {
    fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as u64
    }

    fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        let at = index.checked_sub(self.snapshot_index + 1)?;
        self.entries.get(at as usize).map(|e| e.term)
    }

    fn max_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    fn entry(&self, index: Index) -> Entry {
        self.entries[(index - self.snapshot_index - 1) as usize].clone()
    }

    /// Replaces entries from the first one of `new` on.
    fn write(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else { return };
        self.entries.truncate((first.index - self.snapshot_index - 1) as usize);
        self.entries.extend_from_slice(new);
    }
}

fn entries(from: Index, count: u64, term: Term) -> Vec<Entry> {
    (from..from + count)
        .map(|index| Entry {
            term,
            index,
            format: EntryFormat { kind: EntryFormat::KIND_COMMAND, version: 1 },
            data: index.to_le_bytes().to_vec().into(),
        })
        .collect()
}

fn conf() -> ConfState {
    ConfState { voters: vec![NodeId(1)], learners: vec![] }
}

struct Harness {
    log: RaftLog,
    model: Model,
    /// A Ready handed out and not yet advanced: (snapshot, entries).
    in_flight: Option<(Option<Snapshot>, Vec<Entry>)>,
}

impl Harness {
    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        let (log, model) = (&mut self.log, &mut self.model);
        match op {
            Op::LeaderAppend { count, bump } => {
                let new = entries(model.last_index() + 1, count, model.max_term() + bump);
                prop_assert_eq!(log.append(&new), model.last_index() + count);
                model.write(&new);
            }
            Op::FollowerAppend { back, keep, new, bump } => {
                let prev = model.last_index().saturating_sub(back).max(model.snapshot_index);
                let keep = keep.min(model.last_index() - prev);
                let mut run: Vec<Entry> =
                    (prev + 1..=prev + keep).map(|i| model.entry(i)).collect();
                run.extend(entries(prev + keep + 1, new, model.max_term() + bump + 1));
                // A conflict at or below the commit index is a bug in the leader, which
                // the log asserts; do not generate it.
                let conflict = run.iter().find(|e| model.term(e.index) != Some(e.term));
                if conflict.is_some_and(|e| e.index <= model.committed) {
                    return Ok(());
                }
                let prev_term = model.term(prev).expect("prev is in the log");
                let written_from = conflict.map(|e| e.index);
                prop_assert_eq!(
                    log.maybe_append(prev, prev_term, &run),
                    Some((prev + keep + new, written_from))
                );
                if let Some(conflict) = conflict {
                    let from = (conflict.index - run[0].index) as usize;
                    model.write(&run[from..]);
                }
                // A mismatching prev term is refused without a change.
                prop_assert_eq!(log.maybe_append(prev, prev_term + 100, &run), None);
            }
            Op::Ready => {
                if self.in_flight.is_none() {
                    let snapshot = log.unstable.next_snapshot().cloned();
                    let entries = log.unstable.next_entries().to_vec();
                    log.unstable.accept_in_progress();
                    self.in_flight = Some((snapshot, entries));
                }
            }
            Op::Advance => {
                // What RaftGroup::advance does with a Ready's snapshot and entries.
                if let Some((snapshot, entries)) = self.in_flight.take() {
                    if let Some(snapshot) = snapshot {
                        let index = snapshot.meta.index;
                        log.store.apply_snapshot(snapshot);
                        log.unstable.stable_snapshot_to(index);
                        log.applied = log.applied.max(index);
                        log.applying = log.applying.max(index);
                    }
                    if let Some(last) = entries.last() {
                        log.store.append(&entries);
                        log.unstable.stable_to(last.index, last.term);
                    }
                }
            }
            Op::Commit { back } => {
                let index = model.last_index().saturating_sub(back).max(model.committed);
                log.commit_to(index);
                model.committed = index;
            }
            Op::Apply => {
                let next = log.next_committed_entries(u64::MAX);
                prop_assert_eq!(log.has_next_committed_entries(), !next.is_empty());
                for (k, entry) in next.iter().enumerate() {
                    prop_assert_eq!(entry.index, log.applying + 1 + k as u64);
                    prop_assert!(entry.index <= model.committed);
                    prop_assert_eq!(entry, &model.entry(entry.index));
                    // Applied only once durable: the store holds the same entry.
                    prop_assert_eq!(log.store.term(entry.index), Ok(entry.term));
                }
                if let Some(last) = next.last() {
                    log.applying = last.index;
                    log.applied = last.index;
                    model.applied = last.index;
                }
            }
            Op::Compact { back } => {
                let store_first = log.store.first_index();
                let index = log.applied.min(log.store.last_index()).saturating_sub(back);
                if index < store_first || log.unstable.snapshot.is_some() {
                    return Ok(());
                }
                let term = log.store.term(index).expect("within the store");
                prop_assert_eq!(Some(term), model.term(index), "store term at {}", index);
                let meta = SnapshotMeta { index, term, conf_state: conf() };
                log.store.compact(Snapshot { meta, data: vec![] });
                // The logical log is unchanged until the first index catches up.
                if index > model.snapshot_index {
                    model.entries.drain(..(index - model.snapshot_index) as usize);
                    model.snapshot_index = index;
                    model.snapshot_term = term;
                }
            }
            Op::InstallSnapshot { ahead, bump } => {
                let index = model.committed + ahead;
                let term = model.max_term() + bump;
                let meta = SnapshotMeta { index, term, conf_state: conf() };
                log.restore(Snapshot { meta, data: vec![] });
                model.snapshot_index = index;
                model.snapshot_term = term;
                model.entries.clear();
                model.committed = index;
            }
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let (log, model) = (&self.log, &self.model);
        let (first, last) = (model.snapshot_index + 1, model.last_index());
        prop_assert_eq!(log.first_index(), first);
        prop_assert_eq!(log.last_index(), last);
        prop_assert_eq!(log.committed, model.committed);
        prop_assert!(log.applied <= log.applying && log.applying <= log.committed);
        for index in first - 1..=last {
            prop_assert_eq!(log.term(index), Ok(model.term(index).unwrap()), "term {}", index);
        }
        if first >= 2 {
            prop_assert_eq!(log.term(first - 2), Err(StorageError::Compacted(first - 2)));
        }
        prop_assert_eq!(log.term(last + 1), Err(StorageError::Unavailable(last + 1)));
        prop_assert_eq!(&log.entries_from(first, u64::MAX).unwrap(), &model.entries);
        if first < last {
            let mid = first + (last - first) / 2;
            let cut = log.slice(mid, last + 1, 1).unwrap();
            prop_assert_eq!(cut.len(), 1, "a size limit still returns one entry");
            prop_assert_eq!(&cut[0], &model.entry(mid));
        }
        let persisted = log.persisted_index();
        prop_assert!(persisted <= last || log.unstable.snapshot.is_some());
        let store = &log.store;
        let stored = store.entries(store.first_index(), store.last_index() + 1, u64::MAX);
        let stored = stored.unwrap();
        for pair in stored.windows(2) {
            prop_assert_eq!(pair[1].index, pair[0].index + 1);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(crate::config("raft_log", 2048))]

    #[test]
    fn raft_log_matches_vec_model(ops in vec(op(), 0..80)) {
        let log = RaftLog::new(MemStorage::new(conf()));
        let model =
            Model { snapshot_index: 0, snapshot_term: 0, entries: vec![], committed: 0, applied: 0 };
        let mut harness = Harness { log, model, in_flight: None };
        for op in ops {
            harness.step(op)?;
        }
    }
}
