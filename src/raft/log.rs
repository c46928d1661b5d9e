//! `RaftLog`: the replica's view of its log, the durable `MemStorage` overlaid with the
//! `Unstable` tail, plus the commit and applied indexes (Raft paper, figure 2).
//!
//! ```text
//!   snapshot | stable entries (MemStorage)  | unstable entries
//!   ... first_index-1 | first_index ...      | offset ... last_index
//!   applied <= committed <= last_index; entries are applied only once persisted.
//! ```

use super::message::*;
use super::storage::{entry_size, fitting, MemStorage, Storage, StorageError};
use super::unstable::Unstable;

#[derive(Clone, Debug)]
pub struct RaftLog {
    pub store: MemStorage,
    pub unstable: Unstable,
    /// Highest index known committed. Never decreases.
    pub committed: Index,
    /// Highest index the state machine applied (acknowledged by `advance`).
    pub applied: Index,
    /// Highest index handed to the driver to apply (applied <= applying <= committed).
    pub applying: Index,
}

impl RaftLog {
    /// Builds the log from durable state; `committed` is clamped to the log and the
    /// state machine is assumed restored from the snapshot (applied = snapshot index).
    pub fn new(store: MemStorage) -> RaftLog {
        let snapshot_index = store.first_index() - 1;
        let committed = store.hard_state().commit.clamp(snapshot_index, store.last_index());
        let unstable = Unstable::new(store.last_index() + 1);
        RaftLog { store, unstable, committed, applied: snapshot_index, applying: snapshot_index }
    }

    pub fn first_index(&self) -> Index {
        self.unstable.maybe_first_index().unwrap_or_else(|| self.store.first_index())
    }

    pub fn last_index(&self) -> Index {
        self.unstable.maybe_last_index().unwrap_or_else(|| self.store.last_index())
    }

    pub fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index + 1 < self.first_index() {
            return Err(StorageError::Compacted(index));
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        match self.unstable.maybe_term(index) {
            Some(term) => Ok(term),
            None => self.store.term(index),
        }
    }

    /// Term of `index`, or 0 when it is compacted or beyond the log.
    pub fn term_or_zero(&self, index: Index) -> Term {
        self.term(index).unwrap_or(0)
    }

    pub fn last_term(&self) -> Term {
        self.term(self.last_index()).expect("the last index always has a term")
    }

    pub fn match_term(&self, index: Index, term: Term) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// Raft paper 5.4.1: a candidate's log is at least as up to date as ours.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Highest index that is durable and still part of the log. While a received
    /// snapshot is pending, nothing of the old log counts.
    pub fn persisted_index(&self) -> Index {
        if self.unstable.snapshot.is_some() {
            return 0;
        }
        self.store.last_index().min(self.unstable.offset - 1)
    }

    /// Entries `[low, high)` cut at `max_bytes` (at least one when low < high).
    pub fn slice(
        &self,
        low: Index,
        high: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low >= high {
            return Ok(Vec::new());
        }
        if low < self.first_index() {
            return Err(StorageError::Compacted(low));
        }
        assert!(
            high <= self.last_index() + 1,
            "slice [{low}, {high}) beyond {}",
            self.last_index()
        );
        let offset = self.unstable.offset;
        let mut out = Vec::new();
        if low < offset {
            out = self.store.entries(low, high.min(offset), max_bytes)?;
            if (out.len() as u64) < high.min(offset) - low {
                return Ok(out);
            }
        }
        if high > offset {
            let from = (low.max(offset) - offset) as usize;
            let tail = &self.unstable.entries[from..(high - offset) as usize];
            let used = out.iter().map(entry_size).sum();
            out.extend_from_slice(&tail[..fitting(tail, used, max_bytes)]);
        }
        Ok(out)
    }

    /// Entries from `low` to the end, cut at `max_bytes`.
    pub fn entries_from(&self, low: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.slice(low, self.last_index() + 1, max_bytes)
    }

    /// Leader path: appends entries right after the last index. A leader never
    /// overwrites its own log (DESIGN 8).
    pub fn append(&mut self, entries: &[Entry]) -> Index {
        if let Some(first) = entries.first() {
            assert_eq!(first.index, self.last_index() + 1, "leader append must not truncate");
            self.unstable.truncate_and_append(entries);
        }
        self.last_index()
    }

    /// Follower path (Raft paper figure 2, AppendEntries 2-5): if the log matches at
    /// `prev_index`/`prev_term`, appends `entries` replacing any conflicting suffix and
    /// returns the last index known to match the leader, and the first index written
    /// (None when every entry was already in the log).
    pub fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
    ) -> Option<(Index, Option<Index>)> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as u64;
        let conflict = self.find_conflict(entries);
        if let Some(conflict) = conflict {
            assert!(
                conflict > self.committed,
                "entry {conflict} conflicts with committed {}",
                self.committed
            );
            let start = (conflict - entries[0].index) as usize;
            self.unstable.truncate_and_append(&entries[start..]);
        }
        Some((last_new, conflict))
    }

    /// The first entry that is not already in the log with the same term.
    fn find_conflict(&self, entries: &[Entry]) -> Option<Index> {
        entries.iter().find(|e| !self.match_term(e.index, e.term)).map(|e| e.index)
    }

    /// The largest index <= `index` whose term is <= `term`, with its term (used to
    /// skip a whole divergent term per round trip, as etcd's findConflictByTerm).
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Ok(t) if t > term && index > 0 => index -= 1,
                Ok(t) => return (index, t),
                Err(_) => return (index, 0),
            }
        }
    }

    /// Raises the commit index; never lowers it.
    pub fn commit_to(&mut self, index: Index) {
        if index <= self.committed {
            return;
        }
        assert!(index <= self.last_index(), "commit {index} beyond last {}", self.last_index());
        self.committed = index;
    }

    /// Commits `index` if it is from `term` (Raft paper 5.4.2: only current-term
    /// entries are committed by counting replicas).
    pub fn maybe_commit(&mut self, index: Index, term: Term) -> bool {
        if index > self.committed && self.term_or_zero(index) == term {
            self.commit_to(index);
            return true;
        }
        false
    }

    /// The highest index the driver may apply now: committed and durable.
    fn applicable_index(&self) -> Index {
        if self.unstable.snapshot.is_some() {
            return self.applying;
        }
        self.committed.min(self.persisted_index()).max(self.applying)
    }

    pub fn has_next_committed_entries(&self) -> bool {
        self.applicable_index() > self.applying
    }

    pub fn next_committed_entries(&self, max_bytes: u64) -> Vec<Entry> {
        let high = self.applicable_index();
        if high <= self.applying {
            return Vec::new();
        }
        self.slice(self.applying + 1, high + 1, max_bytes)
            .expect("committed entries are not compacted")
    }

    /// Resets the log to a snapshot received from the leader.
    pub fn restore(&mut self, snapshot: Snapshot) {
        assert!(snapshot.meta.index > self.committed, "restore of an already committed snapshot");
        self.committed = snapshot.meta.index;
        self.unstable.restore(snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, term: Term) -> Entry {
        Entry { term, index, format: EntryFormat::NOOP, data: bytes::Bytes::new() }
    }

    fn log_with(terms: &[Term]) -> RaftLog {
        let mut log = RaftLog::new(MemStorage::new(ConfState::default()));
        let entries: Vec<Entry> =
            terms.iter().enumerate().map(|(i, &t)| entry(i as u64 + 1, t)).collect();
        log.append(&entries);
        log
    }

    #[test]
    fn maybe_append_replaces_conflicting_suffix() {
        let mut log = log_with(&[1, 1, 2]);
        assert_eq!(log.maybe_append(1, 2, &[entry(2, 3)]), None);
        assert_eq!(log.maybe_append(1, 1, &[entry(2, 3)]), Some((2, Some(2))));
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.last_term(), 3);
        assert_eq!(log.maybe_append(0, 0, &[entry(1, 1)]), Some((1, None)));
        assert_eq!(log.last_index(), 2, "a matching prefix does not truncate");
    }

    #[test]
    fn find_conflict_by_term_skips_higher_terms() {
        let log = log_with(&[1, 1, 2, 2, 4, 4]);
        assert_eq!(log.find_conflict_by_term(6, 3), (4, 2));
        assert_eq!(log.find_conflict_by_term(6, 1), (2, 1));
        assert_eq!(log.find_conflict_by_term(10, 4), (6, 4));
        assert_eq!(log.find_conflict_by_term(6, 0), (0, 0));
    }

    #[test]
    fn committed_entries_wait_for_persistence() {
        let mut log = log_with(&[1, 1]);
        log.commit_to(2);
        assert!(!log.has_next_committed_entries());
        let entries = log.unstable.entries.clone();
        log.store.append(&entries);
        log.unstable.stable_to(2, 1);
        assert_eq!(log.next_committed_entries(u64::MAX).len(), 2);
        assert!(!log.maybe_commit(2, 1));
    }
}
