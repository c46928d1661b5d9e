//! The core's read view of its durable log, and `MemStorage`, the in-memory copy of
//! one range's persisted Raft state (latest snapshot, hard state, entries after it).
//!
//! `MemStorage` only ever holds what the driver has made durable: the core writes to
//! it in `RaftGroup::advance`, after the driver has persisted the matching `Ready`.

use super::message::*;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("index {0} is compacted")]
    Compacted(Index),
    #[error("index {0} is not available")]
    Unavailable(Index),
}

/// What the core reads of its persisted log.
///
/// Obligations: `first_index() - 1` is the snapshot index and `term(first_index() - 1)`
/// answers with the snapshot term; `entries(low, high, max_bytes)` returns a contiguous
/// run `[low, high)` cut at `max_bytes` but never empty when `low < high`.
pub trait Storage {
    fn hard_state(&self) -> HardState;
    fn conf_state(&self) -> ConfState;
    fn first_index(&self) -> Index;
    fn last_index(&self) -> Index;
    fn term(&self, index: Index) -> Result<Term, StorageError>;
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    fn snapshot(&self) -> Snapshot;
}

/// Bytes an entry counts for in `max_bytes` limits: its payload plus a fixed header.
pub fn entry_size(entry: &Entry) -> u64 {
    entry.data.len() as u64 + 24
}

/// What `MemStorage::compact` dropped, to be freed by the caller.
#[derive(Debug, Default)]
pub struct Discarded {
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
}

/// In-memory persisted log of one range, rebuilt from the WAL and snapshot at start.
///
/// Invariant: `entries[k].index == snapshot.meta.index + 1 + k`.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl MemStorage {
    /// A fresh group whose log is empty with membership `conf_state`.
    pub fn new(conf_state: ConfState) -> MemStorage {
        let snapshot =
            Snapshot { meta: SnapshotMeta { index: 0, term: 0, conf_state }, data: Vec::new() };
        MemStorage { hard_state: HardState::default(), snapshot, entries: Vec::new() }
    }

    /// A recovered group: latest snapshot (if any), hard state, entries after it.
    ///
    /// # Errors
    /// `Unavailable(i)` when the entries after the snapshot are not contiguous from
    /// `snapshot.meta.index + 1` (`i` is the first missing index).
    pub fn recover(
        snapshot: Snapshot,
        hard_state: HardState,
        entries: Vec<Entry>,
    ) -> Result<MemStorage, StorageError> {
        let snapshot_index = snapshot.meta.index;
        let kept: Vec<Entry> = entries.into_iter().filter(|e| e.index > snapshot_index).collect();
        for (offset, entry) in kept.iter().enumerate() {
            let expected = snapshot_index + 1 + offset as u64;
            if entry.index != expected {
                return Err(StorageError::Unavailable(expected));
            }
        }
        Ok(MemStorage { hard_state, snapshot, entries: kept })
    }

    /// The stored snapshot, without copying its data.
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Records a durable hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Records durable entries: a run starting at index i replaces entries >= i.
    ///
    /// # Panics
    /// If the run would leave a gap or overwrite the snapshot.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index > self.snapshot.meta.index,
            "append at {} overwrites snapshot at {}",
            first.index,
            self.snapshot.meta.index
        );
        assert!(
            first.index <= self.last_index() + 1,
            "append at {} leaves a gap after last index {}",
            first.index,
            self.last_index()
        );
        let keep = (first.index - self.snapshot.meta.index - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// Replaces the whole log with `snapshot` (a snapshot received from the leader).
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        assert!(
            snapshot.meta.index >= self.snapshot.meta.index,
            "snapshot at {} is older than stored snapshot at {}",
            snapshot.meta.index,
            self.snapshot.meta.index
        );
        self.entries.clear();
        if self.hard_state.commit < snapshot.meta.index {
            self.hard_state.commit = snapshot.meta.index;
        }
        self.snapshot = snapshot;
    }

    /// Keeps `snapshot` (taken locally at or below the applied index) and drops
    /// entries up to its index. An older snapshot than the stored one is ignored.
    ///
    /// Returns what it dropped (the entries and the older snapshot), for the caller
    /// to free where it costs nobody a wait: thousands of entries and a snapshot
    /// image of megabytes take milliseconds to free.
    ///
    /// # Panics
    /// If the snapshot is beyond the last index or its term disagrees with the log.
    pub fn compact(&mut self, snapshot: Snapshot) -> Discarded {
        let index = snapshot.meta.index;
        if index <= self.snapshot.meta.index {
            return Discarded { entries: Vec::new(), snapshot: Some(snapshot) };
        }
        assert!(index <= self.last_index(), "compact at {index} beyond {}", self.last_index());
        let term = self.term(index).expect("index is within the stored log");
        assert_eq!(term, snapshot.meta.term, "compact at {index}: snapshot term mismatch");
        let drop = (index - self.snapshot.meta.index) as usize;
        // The entries kept (those after the snapshot, few) move; the dropped stay put.
        let kept = self.entries.split_off(drop);
        let entries = std::mem::replace(&mut self.entries, kept);
        let snapshot = std::mem::replace(&mut self.snapshot, snapshot);
        Discarded { entries, snapshot: Some(snapshot) }
    }
}

impl Storage for MemStorage {
    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn conf_state(&self) -> ConfState {
        self.snapshot.meta.conf_state.clone()
    }

    fn first_index(&self) -> Index {
        self.snapshot.meta.index + 1
    }

    fn last_index(&self) -> Index {
        self.snapshot.meta.index + self.entries.len() as u64
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        let snapshot_index = self.snapshot.meta.index;
        if index < snapshot_index {
            return Err(StorageError::Compacted(index));
        }
        if index == snapshot_index {
            return Ok(self.snapshot.meta.term);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        Ok(self.entries[(index - snapshot_index - 1) as usize].term)
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if low < self.first_index() {
            return Err(StorageError::Compacted(low));
        }
        if high > self.last_index() + 1 {
            return Err(StorageError::Unavailable(high - 1));
        }
        let base = self.snapshot.meta.index + 1;
        let slice = &self.entries[(low - base) as usize..(high - base) as usize];
        Ok(limit_size(slice, max_bytes))
    }

    fn snapshot(&self) -> Snapshot {
        self.snapshot.clone()
    }
}

/// The longest prefix of `entries` within `max_bytes`, but at least one entry.
pub fn limit_size(entries: &[Entry], max_bytes: u64) -> Vec<Entry> {
    entries[..fitting(entries, 0, max_bytes)].to_vec()
}

/// How many of `entries` fit after `used_bytes` already taken of `max_bytes`; when
/// nothing is taken yet, at least one. Counts before copying: copying first and
/// cutting after copied every entry twice.
pub fn fitting(entries: &[Entry], used_bytes: u64, max_bytes: u64) -> usize {
    let mut total = used_bytes;
    for (taken, entry) in entries.iter().enumerate() {
        total += entry_size(entry);
        if total > max_bytes && (taken > 0 || used_bytes > 0) {
            return taken;
        }
    }
    entries.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, term: Term) -> Entry {
        Entry { term, index, format: EntryFormat::NOOP, data: bytes::Bytes::new() }
    }

    #[test]
    fn recover_drops_entries_in_snapshot_and_checks_gaps() {
        let snapshot = Snapshot {
            meta: SnapshotMeta { index: 2, term: 1, conf_state: ConfState::default() },
            data: vec![],
        };
        let entries = vec![entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)];
        let store = MemStorage::recover(snapshot.clone(), HardState::default(), entries).unwrap();
        assert_eq!(store.first_index(), 3);
        assert_eq!(store.last_index(), 4);
        assert_eq!(store.term(2), Ok(1));
        assert_eq!(store.term(1), Err(StorageError::Compacted(1)));
        let gap = MemStorage::recover(snapshot, HardState::default(), vec![entry(4, 2)]);
        assert_eq!(gap.unwrap_err(), StorageError::Unavailable(3));
    }

    #[test]
    fn append_overwrites_suffix_and_compact_drops_prefix() {
        let mut store = MemStorage::new(ConfState::default());
        store.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        store.append(&[entry(2, 2)]);
        assert_eq!(store.last_index(), 2);
        assert_eq!(store.term(2), Ok(2));
        let snapshot = Snapshot {
            meta: SnapshotMeta { index: 1, term: 1, conf_state: ConfState::default() },
            data: vec![7],
        };
        store.compact(snapshot);
        assert_eq!(store.first_index(), 2);
        assert_eq!(store.entries(2, 3, 0).unwrap(), vec![entry(2, 2)]);
    }
}
