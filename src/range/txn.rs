//! The replicated half of transactions: locks, transaction records and the memory of
//! finished transactions, all part of a range's state machine (`KvStore`), changed
//! only by committed entries and carried in snapshots. The coordinator that drives
//! them is in `src/client/txn.rs`; `docs/DESIGN.md` section 7.7 has the protocol and
//! the argument for why it is strictly serializable.
//!
//! ```text
//!  Prepare{txn, reads, writes}   validate reads, take read locks and write intents
//!        (at the anchor range also: the record, Pending, naming every participant)
//!  Decide{txn, commit}           the record's compare-and-set: THE commit point;
//!                                the anchor's own locks are resolved in the same entry
//!  Resolve{txn, commit}          a participant's intents become versions (or vanish)
//!  Push{txn}                     whoever meets an old lock: Pending -> Aborted, or an
//!                                Aborted record where none exists (an abort record)
//!  Forget{txn}                   every participant resolved: the record goes (its
//!                                outcome stays among the range's finished ones)
//!  Commit1pc{reads, writes}      every key in one range: all of it in one entry
//! ```
//!
//! Locks never live in a leader's memory: a new leader has exactly the locks the old
//! one had. A range remembers the transactions it resolved (`finished`), so a late or
//! duplicated `Prepare` of a finished transaction cannot take locks again.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::range::descriptor::Span;

/// A transaction: the coordinating client's id and a sequence number of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxnId {
    pub client: u64,
    pub seq: u64,
}

impl std::fmt::Display for TxnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}-{}", self.client, self.seq)
    }
}

/// A point read a transaction made: the key's mod revision it saw (0: absent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadCheck {
    #[serde(with = "crate::byte_serde::vec")]
    pub key: Vec<u8>,
    pub revision: u64,
}

/// A scan a transaction made of `[start, end)` (already clipped to one range, and to
/// just past the last key seen when a limit cut it): the live keys it saw with their
/// mod revisions. Valid while the span holds exactly those.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanCheck {
    #[serde(with = "crate::byte_serde::vec")]
    pub start: Vec<u8>,
    #[serde(with = "crate::byte_serde::option")]
    pub end: Option<Vec<u8>>,
    pub seen: Vec<ReadCheck>,
}

/// A write a transaction makes: a value, or a delete (None).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnWrite {
    #[serde(with = "crate::byte_serde::vec")]
    pub key: Vec<u8>,
    #[serde(with = "crate::byte_serde::option")]
    pub value: Option<Vec<u8>>,
}

/// A transaction's part in one range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnPart {
    pub reads: Vec<ReadCheck>,
    pub spans: Vec<SpanCheck>,
    pub writes: Vec<TxnWrite>,
}

impl TxnPart {
    /// Every key the part reads or writes (not the spans it scanned).
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        let reads = self.reads.iter().map(|r| r.key.as_slice());
        reads.chain(self.writes.iter().map(|w| w.key.as_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.spans.is_empty() && self.writes.is_empty()
    }

    /// Whether every key and scanned span of the part lies in `span`.
    pub fn within(&self, span: &Span) -> bool {
        let span_within = |check: &SpanCheck| {
            span.contains(&check.start)
                && match (&span.end, &check.end) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(range_end), Some(end)) => end <= range_end,
                }
        };
        self.keys().all(|key| span.contains(key)) && self.spans.iter().all(span_within)
    }
}

impl TxnOp {
    /// Whether every key the step names (its part's, and its anchor where it makes or
    /// decides the record) lies in `span`: a step routed to a range before it split
    /// is refused when it applies, not applied to keys the range no longer owns.
    pub fn within(&self, span: &Span) -> bool {
        match self {
            TxnOp::Commit1pc { part } => part.within(span),
            TxnOp::Prepare { anchor, participants, part, .. } => {
                part.within(span) && (participants.is_empty() || span.contains(anchor))
            }
            TxnOp::Decide { anchor, .. } | TxnOp::Push { anchor, .. } => span.contains(anchor),
            TxnOp::Resolve { .. } | TxnOp::Forget { .. } => true,
        }
    }
}

/// A lock another transaction holds, as a refused request or a read reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    #[serde(with = "crate::byte_serde::vec")]
    pub key: Vec<u8>,
    pub txn: TxnId,
    /// A key of the range holding the transaction's record.
    #[serde(with = "crate::byte_serde::vec")]
    pub anchor: Vec<u8>,
    /// A write intent (else a read lock).
    pub write: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnStatus {
    Pending,
    Committed,
    Aborted,
}

/// A transaction record, in the anchor range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub status: TxnStatus,
    /// The key the record is found by (in this range).
    pub anchor: Vec<u8>,
    /// One key per participant range (the anchor's included); empty for an abort
    /// record written by a `Push` that found no record.
    pub participants: Vec<Vec<u8>>,
    /// Always false: images of the first transactional version marked records
    /// resolved at `Forget` and kept them (now `Forget` removes the record).
    pub resolved: bool,
    /// The index of the entry that decided it (0 while pending).
    pub revision: u64,
}

/// The transaction operations a range's log carries (inside `kv::WriteOp`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// Every key in this range: validate, and write at this entry's index.
    Commit1pc {
        part: TxnPart,
    },
    /// `participants` is non-empty at the anchor only (where the record is made).
    Prepare {
        txn: TxnId,
        #[serde(with = "crate::byte_serde::vec")]
        anchor: Vec<u8>,
        participants: Vec<Vec<u8>>,
        part: TxnPart,
    },
    Decide {
        txn: TxnId,
        #[serde(with = "crate::byte_serde::vec")]
        anchor: Vec<u8>,
        commit: bool,
    },
    Resolve {
        txn: TxnId,
        commit: bool,
    },
    Push {
        txn: TxnId,
        #[serde(with = "crate::byte_serde::vec")]
        anchor: Vec<u8>,
    },
    Forget {
        txn: TxnId,
    },
}

/// What a transaction operation produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnResult {
    /// Written at `revision` (a 1PC commit, or the record's decision).
    Committed {
        revision: u64,
    },
    /// A read is no longer current: retry the transaction.
    Conflict {
        #[serde(with = "crate::byte_serde::vec")]
        key: Vec<u8>,
    },
    /// Another transaction holds a lock in the way (nothing was done).
    Locked(LockInfo),
    Prepared,
    /// The transaction was aborted (by a push, or finished here before this prepare).
    Aborted,
    /// The record as it stands (None: no record).
    Status {
        status: Option<TxnStatus>,
        participants: Vec<Vec<u8>>,
    },
    Resolved,
}

/// Who holds a key: at most one writer (with the value it will write), any readers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLock {
    pub writer: Option<(TxnId, TxnWrite)>,
    pub readers: Vec<TxnId>,
}

/// What one transaction holds in this range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub anchor: Vec<u8>,
    pub keys: Vec<Vec<u8>>,
    pub spans: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Transactions a range remembers as finished (refusing their late prepares and
/// answering late readers' status questions once the record is gone), at most this
/// many (the oldest forgotten first, in apply order, so every replica forgets the
/// same).
pub const FINISHED_MAX: usize = 100_000;

/// A range's transaction state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnTable {
    pub locks: BTreeMap<Vec<u8>, KeyLock>,
    pub held: BTreeMap<TxnId, Held>,
    pub records: BTreeMap<TxnId, TxnRecord>,
    /// Always empty: images of the first transactional version kept resolved records
    /// (evicted oldest first by this queue); a record now goes at `Forget`.
    pub resolved_order: VecDeque<TxnId>,
    /// Transactions resolved or aborted here, with their outcome (true: committed).
    pub finished: BTreeMap<TxnId, bool>,
    pub finished_order: VecDeque<TxnId>,
}

impl TxnTable {
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty() && self.held.is_empty() && self.records.is_empty()
    }

    /// Splits the table at `key`: the locks of keys from `key` on, the parts of what
    /// each transaction holds there (scanned spans cut at `key`) and the records
    /// anchored there move to the returned table; both keep the finished
    /// transactions (either half must refuse their late prepares).
    pub fn split_off(&mut self, key: &[u8]) -> TxnTable {
        let locks = self.locks.split_off(key);
        let mut held = BTreeMap::new();
        let mut emptied = Vec::new();
        for (txn, left) in self.held.iter_mut() {
            let (keys_left, keys_right) =
                std::mem::take(&mut left.keys).into_iter().partition(|k| k.as_slice() < key);
            left.keys = keys_left;
            let mut spans_right = Vec::new();
            for (start, end) in std::mem::take(&mut left.spans) {
                if start.as_slice() < key {
                    let clipped = match &end {
                        Some(end) if end.as_slice() <= key => Some(end.clone()),
                        _ => Some(key.to_vec()),
                    };
                    left.spans.push((start.clone(), clipped));
                }
                if end.as_deref().is_none_or(|end| end > key) {
                    spans_right.push((start.max(key.to_vec()), end));
                }
            }
            if !keys_right.is_empty() || !spans_right.is_empty() {
                if left.keys.is_empty() && left.spans.is_empty() {
                    emptied.push(*txn);
                }
                let anchor = left.anchor.clone();
                held.insert(*txn, Held { anchor, keys: keys_right, spans: spans_right });
            }
        }
        for txn in emptied {
            self.held.remove(&txn);
        }
        let (records_left, records) = std::mem::take(&mut self.records)
            .into_iter()
            .partition(|(_, record)| record.anchor.as_slice() < key);
        self.records = records_left;
        TxnTable {
            locks,
            held,
            records,
            resolved_order: VecDeque::new(),
            finished: self.finished.clone(),
            finished_order: self.finished_order.clone(),
        }
    }

    /// A lock of another transaction than `me` that a read (`write` false) or a
    /// write of `key` must not pass.
    pub fn blocking(&self, key: &[u8], me: Option<TxnId>, write: bool) -> Option<LockInfo> {
        let lock = |txn: TxnId, is_write: bool| {
            let anchor = self.held.get(&txn).map(|h| h.anchor.clone()).unwrap_or_default();
            LockInfo { key: key.to_vec(), txn, anchor, write: is_write }
        };
        if let Some(held) = self.locks.get(key) {
            if let Some((txn, _)) = &held.writer {
                if Some(*txn) != me {
                    return Some(lock(*txn, true));
                }
            }
            if write {
                if let Some(txn) = held.readers.iter().find(|t| Some(**t) != me) {
                    return Some(lock(*txn, false));
                }
            }
        }
        if write {
            for (txn, held) in &self.held {
                if Some(*txn) == me {
                    continue;
                }
                let covered = held.spans.iter().any(|(start, end)| {
                    key >= start.as_slice() && end.as_ref().is_none_or(|e| key < e.as_slice())
                });
                if covered {
                    return Some(lock(*txn, false));
                }
            }
        }
        None
    }

    /// A write intent of another transaction than `me` in `[start, end)`.
    pub fn blocking_span(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        me: Option<TxnId>,
    ) -> Option<LockInfo> {
        let upper = end.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let span = self.locks.range::<[u8], _>((std::ops::Bound::Included(start), upper));
        span.filter_map(|(key, _)| self.blocking(key, me, false)).next()
    }

    /// The write intents of other transactions in `[start, end)` (for scans).
    pub fn intents_in(&self, start: &[u8], end: Option<&[u8]>) -> Vec<LockInfo> {
        let upper = end.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let span = self.locks.range::<[u8], _>((std::ops::Bound::Included(start), upper));
        span.filter_map(|(key, _)| self.blocking(key, None, false)).collect()
    }

    /// Takes `txn`'s locks for `part`.
    pub fn lock(&mut self, txn: TxnId, anchor: &[u8], part: &TxnPart) {
        let held = self.held.entry(txn).or_insert_with(|| Held {
            anchor: anchor.to_vec(),
            keys: Vec::new(),
            spans: Vec::new(),
        });
        for write in &part.writes {
            let lock = self.locks.entry(write.key.clone()).or_default();
            lock.writer = Some((txn, write.clone()));
            held.keys.push(write.key.clone());
        }
        for read in &part.reads {
            let lock = self.locks.entry(read.key.clone()).or_default();
            if !lock.readers.contains(&txn) {
                lock.readers.push(txn);
            }
            held.keys.push(read.key.clone());
        }
        for span in &part.spans {
            held.spans.push((span.start.clone(), span.end.clone()));
        }
        held.keys.sort();
        held.keys.dedup();
    }

    /// Releases `txn`'s locks; returns the writes it intended (to apply on commit).
    pub fn release(&mut self, txn: TxnId) -> Vec<TxnWrite> {
        let Some(held) = self.held.remove(&txn) else {
            return Vec::new();
        };
        let mut writes = Vec::new();
        for key in held.keys {
            let Some(lock) = self.locks.get_mut(&key) else { continue };
            if lock.writer.as_ref().is_some_and(|(t, _)| *t == txn) {
                if let Some((_, write)) = lock.writer.take() {
                    writes.push(write);
                }
            }
            lock.readers.retain(|t| *t != txn);
            if lock.writer.is_none() && lock.readers.is_empty() {
                self.locks.remove(&key);
            }
        }
        writes
    }

    /// Remembers that `txn` finished here with `committed`.
    pub fn finish(&mut self, txn: TxnId, committed: bool) {
        if self.finished.insert(txn, committed).is_none() {
            self.finished_order.push_back(txn);
            while self.finished_order.len() > FINISHED_MAX {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
    }

    /// Lets a decided record go: every participant resolved. Its outcome stays in
    /// `finished` (its decision resolved this range's own locks), where a late
    /// reader's status question and a late prepare find it.
    pub fn forget(&mut self, txn: TxnId) {
        let decided = self.records.get(&txn).is_some_and(|r| r.status != TxnStatus::Pending);
        if decided && self.finished.contains_key(&txn) {
            self.records.remove(&txn);
        }
    }

    /// The outcome of a transaction whose record is gone: what `finished` remembers.
    pub fn finished_status(&self, txn: TxnId) -> Option<TxnStatus> {
        self.finished.get(&txn).map(|&committed| {
            if committed {
                TxnStatus::Committed
            } else {
                TxnStatus::Aborted
            }
        })
    }

    /// Drops what images written before records were let go at `Forget` still carry
    /// (resolved records and their eviction queue).
    pub fn drop_resolved_records(&mut self) {
        self.records.retain(|_, record| !record.resolved);
        self.resolved_order.clear();
    }

    /// Records not yet resolved, and the transactions holding locks here: what the
    /// janitor looks at (`Request::TxnLocks`).
    pub fn outstanding(&self, limit: usize) -> Vec<LockInfo> {
        let locks = self.held.iter().map(|(txn, held)| LockInfo {
            key: held.keys.first().cloned().unwrap_or_default(),
            txn: *txn,
            anchor: held.anchor.clone(),
            write: true,
        });
        let records = self.records.iter().map(|(txn, r)| LockInfo {
            key: Vec::new(),
            txn: *txn,
            anchor: r.anchor.clone(),
            write: false,
        });
        locks.chain(records).take(limit).collect()
    }
}
