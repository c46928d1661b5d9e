//! The part of the log not yet durable: entries appended since the last `advance` and
//! a snapshot received from the leader. Entries `[offset, offset_in_progress)` have
//! been handed to the driver in a `Ready` that was not yet advanced.

use super::message::*;

#[derive(Clone, Debug, Default)]
pub struct Unstable {
    /// A received snapshot to persist; it replaces the whole log.
    pub snapshot: Option<Snapshot>,
    /// Whether `snapshot` was handed out in a Ready.
    pub snapshot_in_progress: bool,
    /// Entries from `offset` on; `entries[k].index == offset + k`.
    pub entries: Vec<Entry>,
    pub offset: Index,
    /// Entries below this index were handed out in a Ready (offset <= it <= last + 1).
    pub offset_in_progress: Index,
}

impl Unstable {
    pub fn new(offset: Index) -> Unstable {
        Unstable { offset, offset_in_progress: offset, ..Unstable::default() }
    }

    /// First index, if a snapshot is pending.
    pub fn maybe_first_index(&self) -> Option<Index> {
        self.snapshot.as_ref().map(|s| s.meta.index + 1)
    }

    pub fn maybe_last_index(&self) -> Option<Index> {
        match self.entries.last() {
            Some(entry) => Some(entry.index),
            None => self.snapshot.as_ref().map(|s| s.meta.index),
        }
    }

    pub fn maybe_term(&self, index: Index) -> Option<Term> {
        if index < self.offset {
            let snapshot = self.snapshot.as_ref()?;
            return (snapshot.meta.index == index).then_some(snapshot.meta.term);
        }
        self.entries.get((index - self.offset) as usize).map(|e| e.term)
    }

    /// Entries not yet handed out.
    pub fn next_entries(&self) -> &[Entry] {
        let start = (self.offset_in_progress - self.offset) as usize;
        &self.entries[start..]
    }

    pub fn next_snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref().filter(|_| !self.snapshot_in_progress)
    }

    /// Marks everything pending as handed out in a Ready.
    pub fn accept_in_progress(&mut self) {
        self.offset_in_progress = self.offset + self.entries.len() as u64;
        self.snapshot_in_progress = self.snapshot.is_some();
    }

    /// Entries up to `index` (with `term`) are durable. Ignored if they were since
    /// replaced by a newer leader's entries, or by a snapshot still pending: entries
    /// written before that snapshot are void, and the ones after it (even with the
    /// same index and term) are only durable once the snapshot is.
    pub fn stable_to(&mut self, index: Index, term: Term) {
        if self.snapshot.is_some() || index < self.offset || self.maybe_term(index) != Some(term) {
            return;
        }
        let count = (index + 1 - self.offset) as usize;
        self.entries.drain(..count);
        self.offset = index + 1;
        self.offset_in_progress = self.offset_in_progress.max(self.offset);
    }

    pub fn stable_snapshot_to(&mut self, index: Index) {
        if self.snapshot.as_ref().is_some_and(|s| s.meta.index == index) {
            self.snapshot = None;
            self.snapshot_in_progress = false;
        }
    }

    pub fn restore(&mut self, snapshot: Snapshot) {
        self.offset = snapshot.meta.index + 1;
        self.offset_in_progress = self.offset;
        self.entries.clear();
        self.snapshot = Some(snapshot);
        self.snapshot_in_progress = false;
    }

    /// Appends `entries`, replacing any unstable entries at or after the first one.
    /// The caller guarantees `entries[0].index` is at most last index + 1.
    pub fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let after = first.index;
        if after == self.offset + self.entries.len() as u64 {
            self.entries.extend_from_slice(entries);
        } else if after <= self.offset {
            self.offset = after;
            self.entries = entries.to_vec();
        } else {
            self.entries.truncate((after - self.offset) as usize);
            self.entries.extend_from_slice(entries);
        }
        self.offset_in_progress = self.offset_in_progress.min(after).max(self.offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, term: Term) -> Entry {
        Entry { term, index, format: EntryFormat::NOOP, data: bytes::Bytes::new() }
    }

    #[test]
    fn truncate_and_append_rewinds_in_progress() {
        let mut unstable = Unstable::new(5);
        unstable.truncate_and_append(&[entry(5, 1), entry(6, 1), entry(7, 1)]);
        unstable.accept_in_progress();
        assert!(unstable.next_entries().is_empty());
        unstable.truncate_and_append(&[entry(6, 2)]);
        assert_eq!(unstable.next_entries(), &[entry(6, 2)]);
        unstable.truncate_and_append(&[entry(3, 3)]);
        assert_eq!(unstable.offset, 3);
        assert_eq!(unstable.next_entries(), &[entry(3, 3)]);
    }

    /// Regression (found by proptests/raft_log.rs): entries handed out in a Ready,
    /// then a snapshot restored before that Ready was advanced, then entries with the
    /// same index and term appended after the snapshot. The late advance must not
    /// mark those new entries durable: the snapshot, persisted afterwards, clears the
    /// stored log, and they would be lost from both.
    #[test]
    fn stable_to_waits_for_a_pending_snapshot() {
        let mut unstable = Unstable::new(1);
        unstable.truncate_and_append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        unstable.accept_in_progress();
        let meta = SnapshotMeta { index: 1, term: 1, conf_state: ConfState::default() };
        unstable.restore(Snapshot { meta, data: vec![] });
        unstable.truncate_and_append(&[entry(2, 1), entry(3, 1)]);
        unstable.stable_to(3, 1);
        assert_eq!(unstable.entries.len(), 2, "entries after the pending snapshot were dropped");
        unstable.stable_snapshot_to(1);
        unstable.stable_to(3, 1);
        assert!(unstable.entries.is_empty());
    }

    #[test]
    fn stable_to_ignores_replaced_entries() {
        let mut unstable = Unstable::new(1);
        unstable.truncate_and_append(&[entry(1, 1), entry(2, 1)]);
        unstable.stable_to(2, 2);
        assert_eq!(unstable.entries.len(), 2);
        unstable.stable_to(1, 1);
        assert_eq!(unstable.offset, 2);
        assert_eq!(unstable.maybe_term(2), Some(1));
    }
}
