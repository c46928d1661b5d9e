//! The node-wide write-ahead log: one log for every range of the node, so a single
//! fsync makes the writes of many ranges durable (group commit).
//!
//! # Files
//! Segments `<seq:016x>.wal` in the WAL directory, each preallocated and sized
//! (`set_len`) to `segment_bytes` up front, so the file length is the segment's end.
//! Frames are 8-byte aligned:
//! ```text
//! len: u32 LE | crc32(payload): u32 LE | payload (len bytes) | zero padding to 8
//! payload = batch_start: u64 LE | bincode(WalRecord)
//! ```
//! An all-zero header is the end of data. `batch_start` is the offset at which the
//! `sync` that wrote the frame began writing: every `sync` is ONE `write_at` (the
//! buffered frames plus an 8-byte zero end marker) followed by ONE `DiskFile::sync`.
//! When a record does not fit, the WAL syncs the old segment, creates the next one
//! (create, allocate, set_len, sync, sync_dir) and begins it with the latest
//! HardState of every range, so older segments never hold the only copy of one.
//!
//! # Zeroing ahead
//! `allocate` reserves a segment's blocks (a full disk fails at creation, not in the
//! middle of a batch) but leaves them "unwritten" on ext4 and xfs: the first write
//! into such a block changes the file's extent map, and the fdatasync after it must
//! then also write the inode, one more synchronous IO. So a sync whose data end comes
//! within a quarter `ZERO_CHUNK` of the zeroed part extends its single write with
//! zeros up to a chunk boundary: the extents change once per chunk instead of on
//! every sync (fdatasync of 4 KiB appends, `bench/fsync.py` on this VM: 1.4 to 1.6
//! times the syncs per second, 15 to 30 us less system CPU each). Zeros past the end
//! marker change nothing a recovery reads, whether or not they reach the disk before
//! a crash.
//!
//! # Recovery
//! Segments are replayed in order. Per range a HardState record replaces the hard
//! state; an Entries record starting at `i` truncates entries `>= i` and appends, and
//! if `i > last + 1` (after a snapshot install) the older entries are dropped.
//!
//! A bad frame (bad crc, impossible length, undecodable) at offset `x` is either a
//! torn write of the last, unacknowledged batch or corruption of synced data:
//! - In a segment that is not the last one it is corruption: a later segment is only
//!   created after this one was fully synced.
//! - In the last segment it is corruption iff a valid frame follows whose
//!   `batch_start > x`: that frame belongs to a later batch, which was only written
//!   after the batch containing `x` had been synced. Valid frames of x's own batch
//!   (`batch_start <= x`) may legitimately survive a torn write (a disk may persist
//!   a later page of an unsynced write and drop an earlier one), and so may stale
//!   frames left behind a previous truncation (their `batch_start` is at most that
//!   truncation point, which is <= x); neither counts. Otherwise the tail from `x` is
//!   cut: an end marker is written at `x` and appending continues there.
//!
//! Damage (corruption of synced data) is stepped over: replay resumes at the next
//! frame (see `next_frame`) and `WalRecovery::damage` names it. The records of every
//! range are then untrusted but term and vote are not: every change of a range's term,
//! vote or repair term is written as two identical frames (and every hard state twice
//! at the start of a segment), and one damaged frame loses at most one copy. A second
//! damaged frame is `Corrupt`: the node cannot tell whether both copies went. The node
//! discards every log, keeps the hard states and repairs from its peers
//! (`discard_damaged`). An end marker with one bit flipped is still an end marker.
//! Damage to the last synced batch of the last segment looks like a torn write and
//! is cut (only a redundant header ring, as TigerBeetle keeps, would tell them apart).
//!
//! The search for a later batch reads the segment once (it is in memory already) and
//! tests only the 8-aligned offsets after `x`. A candidate must have a plausible length
//! and a `batch_start` in `(x, candidate]`, which random or stale bytes almost never
//! do; only then is its crc computed. A 64 MiB segment is 8 Mi cheap checks.
//!
//! # Release
//! Per segment the WAL keeps, per range, the highest entry index written there
//! (rebuilt by recovery). `release` deletes the oldest segments, never the current
//! one, while every range with entries in the segment has a durable snapshot at or
//! above that index. Only a prefix is deleted: replaying a suffix of the history gives
//! the same entries above each snapshot index, while deleting a middle segment could
//! resurrect entries it had overwritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{io_err, StorageError};
use crate::env::{Disk, DiskFile};
use crate::raft::{Entry, EntryFormat, HardState, Index, Term};
use crate::range::descriptor::RangeId;

/// Frame header: len u32 + crc32 u32.
const HEADER_BYTES: u64 = 8;
/// The fixed `batch_start` prefix of every payload.
const BATCH_START_BYTES: u64 = 8;
/// Frames start at multiples of this.
const ALIGN: u64 = 8;
const SEGMENT_SUFFIX: &str = ".wal";

/// One WAL record. Entries starting at index i replace any entries >= i of that range.
/// Stored as `StoredRecord` (below): the encoding keeps the variant numbers of every
/// data directory version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalRecord {
    Entries {
        range: RangeId,
        entries: Vec<Entry>,
    },
    HardState {
        range: RangeId,
        hard_state: HardState,
    },
    /// A snapshot received from the leader at `index` (term `term`) replaced the
    /// range's whole log: every earlier Entries record of the range is void, even
    /// entries above `index` (they may belong to a divergent history).
    SnapshotInstalled {
        range: RangeId,
        index: Index,
        term: Term,
    },
    /// The range's storage was damaged: every earlier Entries record of it is void and
    /// it starts over from its snapshot (or its initial state), repairing from peers.
    LogDiscarded {
        range: RangeId,
    },
}

/// Zeros are written ahead of the data up to multiples of this (or of a sixteenth of
/// a segment if smaller), once the data end comes within a quarter of it.
const ZERO_CHUNK: u64 = 1 << 20;

/// Tuning of the WAL.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Size segments are preallocated to; a segment rolls over when full.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        // The simulation uses small segments so that rolls and releases happen
        // within seconds of simulated time (a seed writes tens of KB: at 256 KB no
        // segment was ever released, and a release too early went unseen).
        #[cfg(madsim)]
        return WalOptions { segment_bytes: 16 << 10 };
        #[cfg(not(madsim))]
        WalOptions { segment_bytes: 64 << 20 }
    }
}

/// What replay found for one range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredLog {
    pub hard_state: Option<HardState>,
    /// Contiguous entries, after applying every overwrite in log order.
    pub entries: Vec<Entry>,
}

/// What replay found for every range that has records in the WAL.
#[derive(Clone, Debug, Default)]
pub struct WalRecovery {
    pub ranges: BTreeMap<RangeId, RecoveredLog>,
    /// A damaged record of synced data that replay stepped over (at most one): the
    /// entries of every range are then untrusted, while term and vote are intact (every
    /// change of them is written twice). The node discards the logs and repairs.
    pub damage: Option<WalDamage>,
}

/// Where the WAL was found damaged, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalDamage {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl std::fmt::Display for WalDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at offset {}: {}", self.path.display(), self.offset, self.reason)
    }
}

/// One segment file and what it holds.
#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// range -> highest entry index written to this segment.
    max_index: BTreeMap<RangeId, Index>,
}

/// The node's write-ahead log.
pub struct Wal {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    options: WalOptions,
    /// Oldest first; the last one is being appended to. Never empty.
    segments: Vec<Segment>,
    /// The last segment, open for writing.
    file: Box<dyn DiskFile>,
    /// Size of the last segment; frames never cross it.
    segment_size: u64,
    /// Offset in the last segment up to which frames are written (durable unless
    /// `unsynced`); `buffer` goes here.
    offset: u64,
    /// Frames appended since the last write.
    buffer: Vec<u8>,
    /// `write` wrote frames that no fsync has covered yet.
    unsynced: bool,
    /// Offset in the last segment below which every byte has been written since it
    /// was allocated (see "Zeroing ahead").
    zeroed: u64,
    /// Latest hard state of every range seen (recovered or appended).
    hard_states: BTreeMap<RangeId, HardState>,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 16 {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("slice of 4"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("slice of 8"))
}

/// `WalRecord` as stored, for decoding: bincode numbers variants in declaration
/// order, so the variants keep the numbers data directory version 1 gave them, and
/// that version's entries record (entries without a format) is still read.
#[derive(Deserialize)]
enum StoredRecord {
    EntriesV1 { range: RangeId, entries: Vec<EntryV1> },
    HardState { range: RangeId, hard_state: HardState },
    SnapshotInstalled { range: RangeId, index: Index, term: Term },
    LogDiscarded { range: RangeId },
    Entries { range: RangeId, entries: Vec<Entry> },
}

/// `StoredRecord` by reference, for encoding (no copy of the entries).
#[derive(Serialize)]
enum StoredRecordRef<'a> {
    /// Never written: holds variant number 0 for the version-1 entries record.
    #[allow(dead_code)]
    EntriesV1,
    HardState {
        range: RangeId,
        hard_state: &'a HardState,
    },
    SnapshotInstalled {
        range: RangeId,
        index: Index,
        term: Term,
    },
    LogDiscarded {
        range: RangeId,
    },
    Entries {
        range: RangeId,
        entries: &'a [Entry],
    },
}

/// An entry as data directory version 1 stored it: before entries had a format, an
/// empty one was a leader's no-op and any other a state machine command of format 1.
#[derive(Deserialize)]
struct EntryV1 {
    term: Term,
    index: Index,
    #[serde(with = "crate::byte_serde::shared")]
    data: bytes::Bytes,
}

impl From<EntryV1> for Entry {
    fn from(old: EntryV1) -> Entry {
        let format = if old.data.is_empty() { EntryFormat::NOOP } else { COMMAND_FORMAT_V1 };
        Entry { term: old.term, index: old.index, format, data: old.data }
    }
}

/// The command format of version-1 entries (`range::kv::COMMAND_FORMAT` version 1).
const COMMAND_FORMAT_V1: EntryFormat = EntryFormat { kind: EntryFormat::KIND_COMMAND, version: 1 };

impl From<StoredRecord> for WalRecord {
    fn from(stored: StoredRecord) -> WalRecord {
        match stored {
            StoredRecord::EntriesV1 { range, entries } => WalRecord::Entries {
                range,
                entries: entries.into_iter().map(Entry::from).collect(),
            },
            StoredRecord::Entries { range, entries } => WalRecord::Entries { range, entries },
            StoredRecord::HardState { range, hard_state } => {
                WalRecord::HardState { range, hard_state }
            }
            StoredRecord::SnapshotInstalled { range, index, term } => {
                WalRecord::SnapshotInstalled { range, index, term }
            }
            StoredRecord::LogDiscarded { range } => WalRecord::LogDiscarded { range },
        }
    }
}

/// bincode of a record (the part of the payload after `batch_start`).
pub fn encode_record(record: &WalRecord) -> Vec<u8> {
    let stored = match record {
        WalRecord::Entries { range, entries } => {
            StoredRecordRef::Entries { range: *range, entries }
        }
        WalRecord::HardState { range, hard_state } => {
            StoredRecordRef::HardState { range: *range, hard_state }
        }
        WalRecord::SnapshotInstalled { range, index, term } => {
            StoredRecordRef::SnapshotInstalled { range: *range, index: *index, term: *term }
        }
        WalRecord::LogDiscarded { range } => StoredRecordRef::LogDiscarded { range: *range },
    };
    bincode::serde::encode_to_vec(&stored, bincode::config::standard())
        .expect("WalRecord always encodes")
}

/// Whether two hard states agree on what must never be lost: term, vote, repair.
fn same_vote(a: &HardState, b: &HardState) -> bool {
    (a.term, a.vote, a.repair_term) == (b.term, b.vote, b.repair_term)
}

/// The frames that begin a segment: every hard state, twice (see `append`).
fn hard_state_frames(hard_states: &BTreeMap<RangeId, HardState>) -> Vec<u8> {
    let mut frames = Vec::new();
    for (range, hard_state) in hard_states {
        let record =
            encode_record(&WalRecord::HardState { range: *range, hard_state: *hard_state });
        push_frame(&mut frames, 0, &record);
        push_frame(&mut frames, 0, &record);
    }
    frames
}

/// The aligned frame size of an encoded record.
fn frame_bytes(record_bytes: &[u8]) -> u64 {
    align_up(HEADER_BYTES + BATCH_START_BYTES + record_bytes.len() as u64)
}

/// Appends the frame of an encoded record, written by the batch starting at
/// `batch_start`, to `out`.
fn push_frame(out: &mut Vec<u8>, batch_start: u64, record_bytes: &[u8]) {
    let start = out.len();
    let len = BATCH_START_BYTES + record_bytes.len() as u64;
    let len = u32::try_from(len).expect("a WAL record is below 4 GiB");
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&batch_start.to_le_bytes());
    hasher.update(record_bytes);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&batch_start.to_le_bytes());
    out.extend_from_slice(record_bytes);
    out.resize(start + frame_bytes(record_bytes) as usize, 0);
}

/// Why the frame at `pos` is not valid, or the decoded record and the frame size.
fn decode_frame(bytes: &[u8], pos: u64) -> Result<(WalRecord, u64), String> {
    let at = pos as usize;
    let len = u64::from(read_u32(bytes, at));
    let crc = read_u32(bytes, at + 4);
    if len < BATCH_START_BYTES || pos + HEADER_BYTES + len > bytes.len() as u64 {
        return Err(format!("impossible length {len}"));
    }
    let payload = &bytes[at + HEADER_BYTES as usize..at + (HEADER_BYTES + len) as usize];
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".to_string());
    }
    let batch_start = read_u64(payload, 0);
    if batch_start > pos {
        return Err(format!("batch start {batch_start} after the frame"));
    }
    let record_bytes = &payload[BATCH_START_BYTES as usize..];
    let (record, used): (StoredRecord, usize) =
        bincode::serde::decode_from_slice(record_bytes, bincode::config::standard())
            .map_err(|e| format!("undecodable record: {e}"))?;
    if used != record_bytes.len() {
        return Err("trailing bytes after the record".to_string());
    }
    let record = WalRecord::from(record);
    if let WalRecord::Entries { entries, .. } = &record {
        // Checked: a record that passed its crc can still hold any index (a bug that
        // wrote it, or a deliberate edit); Raft never reaches u64::MAX.
        if entries.last().is_some_and(|entry| entry.index == u64::MAX) {
            return Err("entry index u64::MAX".to_string());
        }
        if !entries.windows(2).all(|pair| pair[0].index.checked_add(1) == Some(pair[1].index)) {
            return Err("entries of one record are not contiguous".to_string());
        }
    }
    Ok((record, align_up(HEADER_BYTES + len)))
}

/// The offset of a valid frame after `bad` that belongs to a batch started after
/// `bad` (see the module doc), if there is one.
fn find_later_batch(bytes: &[u8], bad: u64) -> Option<u64> {
    let end = bytes.len() as u64;
    let mut pos = bad + ALIGN;
    while pos + HEADER_BYTES + BATCH_START_BYTES <= end {
        let at = pos as usize;
        let len = u64::from(read_u32(bytes, at));
        if len >= BATCH_START_BYTES && pos + HEADER_BYTES + len <= end {
            let batch_start = read_u64(bytes, at + HEADER_BYTES as usize);
            if batch_start > bad && batch_start <= pos && batch_start % ALIGN == 0 {
                let payload =
                    &bytes[at + HEADER_BYTES as usize..at + (HEADER_BYTES + len) as usize];
                if crc32fast::hash(payload) == read_u32(bytes, at + 4) {
                    return Some(pos);
                }
            }
        }
        pos += ALIGN;
    }
    None
}

/// The valid frames of one segment and where its data ends.
struct ScannedSegment {
    records: Vec<WalRecord>,
    /// Offset of the end marker, the torn frame, or the end of the file.
    end: u64,
    /// Whether a torn tail was cut at `end`.
    torn: bool,
    /// Damaged frames of synced data stepped over: (offset, reason).
    damaged: Vec<(u64, String)>,
}

/// Reads the frames of a segment's bytes; see the module doc for the rules.
fn scan_segment(bytes: &[u8], is_last: bool) -> ScannedSegment {
    let size = bytes.len() as u64;
    let mut scanned = ScannedSegment { records: Vec::new(), end: 0, torn: false, damaged: vec![] };
    let mut pos = 0;
    while pos + HEADER_BYTES <= size {
        let at = pos as usize;
        let header = read_u64(bytes, at);
        // An end marker, or one with a bit flipped (a real header has a length >= 8
        // and a checksum: never a single bit).
        if header.count_ones() <= 1 {
            scanned.end = pos;
            return scanned;
        }
        match decode_frame(bytes, pos) {
            Ok((record, frame_size)) => {
                scanned.records.push(record);
                pos += frame_size;
            }
            Err(reason) => {
                if is_last {
                    match find_later_batch(bytes, pos) {
                        Some(later) => {
                            let reason = format!("{reason}; a later batch follows at {later}");
                            scanned.damaged.push((pos, reason));
                        }
                        None => {
                            scanned.end = pos;
                            scanned.torn = true;
                            return scanned;
                        }
                    }
                } else {
                    scanned.damaged.push((pos, format!("{reason}; later segments exist")));
                }
                match next_frame(bytes, pos) {
                    Ok(Some(next)) => pos = next,
                    Ok(None) => {
                        scanned.end = size;
                        return scanned;
                    }
                    Err(reason) => {
                        scanned.damaged.push((pos, reason));
                        scanned.end = size;
                        return scanned;
                    }
                }
            }
        }
    }
    scanned.end = pos.min(size);
    scanned
}

/// Where replay resumes after the damaged frame at `bad` (None: nothing valid
/// follows in this segment), proven consistent with ONE damaged frame:
/// - the first end marker, valid frame or end of the segment (a frame may end too
///   close to it for an end marker) after `bad` at which the damaged frame's checksum
///   matches its payload (only its length was hit; frames are contiguous, so that is
///   what followed it);
/// - else where its length says, if a valid frame or an end marker is there and no
///   valid frame lies before it.
///
/// Anything else means more is damaged (a copy of a vote could be in it): an error.
fn next_frame(bytes: &[u8], bad: u64) -> Result<Option<u64>, String> {
    /// Zero headers inside the scan that are tried as the end (payloads hold zeros).
    const ZERO_TRIES: usize = 64;
    let size = bytes.len() as u64;
    let crc = read_u32(bytes, bad as usize + 4);
    let start = (bad + HEADER_BYTES) as usize;
    let payload_ends_at = |next: u64| {
        (next - (ALIGN - 1)..=next).any(|end| {
            end >= bad + HEADER_BYTES + BATCH_START_BYTES
                && crc32fast::hash(&bytes[start..end as usize]) == crc
        })
    };
    let mut first_valid = None;
    let mut zero_tries = 0;
    let mut pos = bad + ALIGN;
    while pos <= size {
        if pos + HEADER_BYTES > size {
            // No room for a header: the segment ends here, as it may right after a
            // segment's last frame.
            if payload_ends_at(pos) {
                return Ok(Some(pos));
            }
            break;
        }
        let zero = read_u64(bytes, pos as usize) == 0;
        let valid = !zero && decode_frame(bytes, pos).is_ok();
        if (valid || (zero && zero_tries < ZERO_TRIES)) && payload_ends_at(pos) {
            return Ok(Some(pos));
        }
        zero_tries += usize::from(zero);
        if valid {
            first_valid = Some(pos);
            break;
        }
        pos += ALIGN;
    }
    let len = u64::from(read_u32(bytes, bad as usize));
    let by_length = align_up(bad + HEADER_BYTES + len);
    if by_length + HEADER_BYTES > size {
        return if first_valid.is_none() { Ok(None) } else { Err("its length is damaged".into()) };
    }
    let there = read_u64(bytes, by_length as usize) == 0 || decode_frame(bytes, by_length).is_ok();
    if there && first_valid.is_none_or(|valid| valid >= by_length) {
        return Ok(Some(by_length));
    }
    Err(format!("the record after it is damaged too (at {by_length} or before)"))
}

/// Applies one record to the recovered state and the segment summary.
fn replay(recovery: &mut WalRecovery, max_index: &mut BTreeMap<RangeId, Index>, record: WalRecord) {
    match record {
        WalRecord::HardState { range, hard_state } => {
            recovery.ranges.entry(range).or_default().hard_state = Some(hard_state);
        }
        WalRecord::SnapshotInstalled { range, .. } | WalRecord::LogDiscarded { range } => {
            recovery.ranges.entry(range).or_default().entries.clear();
        }
        WalRecord::Entries { range, entries } => {
            let (Some(first_new), Some(last_new)) = (entries.first(), entries.last()) else {
                return;
            };
            let (start, last_index) = (first_new.index, last_new.index);
            let max = max_index.entry(range).or_insert(last_index);
            *max = (*max).max(last_index);
            let log = &mut recovery.ranges.entry(range).or_default().entries;
            match log.first().map(|entry| entry.index) {
                // Overwrite from `start`: keep what precedes it.
                Some(first) if start > first && start <= first + log.len() as u64 => {
                    log.truncate((start - first) as usize);
                }
                // Empty, a gap after a snapshot install, or a rewrite of everything.
                _ => log.clear(),
            }
            log.extend(entries);
        }
    }
}

impl Wal {
    /// Opens (creating if empty) the WAL in `dir` and replays it.
    ///
    /// # Errors
    /// `Corrupt` with the segment and offset of a damaged record that is not a torn
    /// tail; `Io` when a file operation fails.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        options: WalOptions,
    ) -> Result<(Wal, WalRecovery), StorageError> {
        assert!(
            options.segment_bytes >= 64,
            "segment_bytes {} is too small",
            options.segment_bytes
        );
        disk.create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let names = disk.list(dir).map_err(io_err("list", dir))?;
        let mut seqs: Vec<u64> = names.iter().filter_map(|name| parse_segment_name(name)).collect();
        seqs.sort_unstable();
        let mut recovery = WalRecovery::default();
        let mut segments = Vec::new();
        let mut tail = None;
        let mut damaged = Vec::new();
        for (i, &seq) in seqs.iter().enumerate() {
            let path = dir.join(segment_name(seq));
            let file = disk.open(&path, false).map_err(io_err("open", &path))?;
            let bytes = read_segment(&*file, &path)?;
            let scanned = scan_segment(&bytes, i + 1 == seqs.len());
            for (offset, reason) in scanned.damaged {
                damaged.push(WalDamage { path: path.clone(), offset, reason });
            }
            let mut max_index = BTreeMap::new();
            for record in scanned.records {
                replay(&mut recovery, &mut max_index, record);
            }
            segments.push(Segment { seq, path, max_index });
            tail = Some((file, bytes.len() as u64, scanned.end, scanned.torn));
        }
        if damaged.len() > 1 {
            // A second damaged record may have held the other copy of a vote.
            let first = damaged.swap_remove(0);
            let reason = format!(
                "{}; {} damaged records in all, more than one cannot be repaired",
                first.reason,
                damaged.len() + 1
            );
            return Err(StorageError::Corrupt { path: first.path, offset: first.offset, reason });
        }
        recovery.damage = damaged.pop();
        let hard_states = recovery
            .ranges
            .iter()
            .filter_map(|(range, log)| log.hard_state.map(|hard_state| (*range, hard_state)))
            .collect();
        let (file, segment_size, offset, torn) = match tail {
            Some(tail) => tail,
            None => {
                let (segment, file, size) = create_segment(&*disk, dir, 1, options.segment_bytes)?;
                segments.push(segment);
                (file, size, 0, false)
            }
        };
        let dir = dir.to_path_buf();
        let buffer = Vec::new();
        // Past the data end a recovered segment may be unwritten: zero from there.
        let zeroed = offset;
        let mut wal = Wal {
            disk,
            dir,
            options,
            segments,
            file,
            segment_size,
            offset,
            buffer,
            unsynced: false,
            zeroed,
            hard_states,
        };
        if torn {
            #[cfg(madsim)]
            crate::env::sim_hooks::sometimes("torn WAL tail cut at recovery");
            wal.cut_tail()?;
        }
        wal.check_invariants();
        Ok((wal, recovery))
    }

    /// Writes an end marker over a torn tail so appending continues cleanly there.
    fn cut_tail(&mut self) -> Result<(), StorageError> {
        if self.offset + HEADER_BYTES <= self.segment_size {
            let path = &self.segments.last().expect("never empty").path;
            self.file
                .write_at(self.offset, &[0u8; HEADER_BYTES as usize])
                .map_err(io_err("write", path))?;
            self.file.sync().map_err(io_err("sync", path))?;
        }
        Ok(())
    }

    fn check_invariants(&self) {
        assert!(!self.segments.is_empty(), "WAL {} has no segment", self.dir.display());
        assert!(self.offset % ALIGN == 0, "WAL offset {} not aligned", self.offset);
        assert!(
            self.offset + self.buffer.len() as u64 <= self.segment_size,
            "WAL data end {} + {} beyond segment size {}",
            self.offset,
            self.buffer.len(),
            self.segment_size
        );
    }

    /// Buffers a record; durable only after `sync`. Rolls to a new segment (syncing
    /// the old one) when the record does not fit.
    ///
    /// # Panics
    /// If an Entries record's entries are not contiguous.
    ///
    /// # Errors
    /// `Io` when rolling over to a new segment fails.
    pub fn append(&mut self, record: &WalRecord) -> Result<(), StorageError> {
        if let WalRecord::Entries { range, entries } = record {
            for pair in entries.windows(2) {
                assert_eq!(
                    pair[1].index,
                    pair[0].index + 1,
                    "range {range}: WAL entries not contiguous"
                );
            }
        }
        let record_bytes = encode_record(record);
        // A change of term, vote or repair term is written twice, in one batch: one
        // damaged frame can lose one copy, never both (see the module doc).
        let copies = match record {
            WalRecord::HardState { range, hard_state } => {
                let same =
                    self.hard_states.get(range).is_some_and(|old| same_vote(old, hard_state));
                if same {
                    1
                } else {
                    2
                }
            }
            _ => 1,
        };
        let frame_size = copies * frame_bytes(&record_bytes);
        if self.offset + self.buffer.len() as u64 + frame_size > self.segment_size {
            self.roll(frame_size)?;
        }
        for _ in 0..copies {
            push_frame(&mut self.buffer, self.offset, &record_bytes);
        }
        let segment = self.segments.last_mut().expect("never empty");
        match record {
            WalRecord::HardState { range, hard_state } => {
                self.hard_states.insert(*range, *hard_state);
            }
            WalRecord::Entries { range, entries } => {
                if let Some(last) = entries.last() {
                    let max = segment.max_index.entry(*range).or_insert(last.index);
                    *max = (*max).max(last.index);
                }
            }
            // Voids older entries at replay; older segments still hold them back from
            // release until the range's snapshot index passes them, which is safe.
            WalRecord::SnapshotInstalled { .. } | WalRecord::LogDiscarded { .. } => {}
        }
        self.check_invariants();
        Ok(())
    }

    /// Writes buffered records and fsyncs once: `write`, then `fsync`.
    ///
    /// # Errors
    /// `Io` when the write or the fsync fails: nothing since the last good sync may be
    /// assumed durable.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.write()?;
        self.fsync()
    }

    /// The second half of `sync`: one fsync covering what `write` wrote (nothing to do
    /// when it wrote nothing since the last one).
    ///
    /// # Errors
    /// `Io` when the fsync fails: the written frames may or may not be durable, and a
    /// failed fsync is not retried (it could report success for pages already lost);
    /// the node stops and recovery decides.
    pub fn fsync(&mut self) -> Result<(), StorageError> {
        if !self.unsynced {
            return Ok(());
        }
        let path = &self.segments.last().expect("never empty").path;
        self.file.sync().map_err(io_err("sync", path))?;
        self.unsynced = false;
        Ok(())
    }

    /// The first half of `sync`: one `write_at` of the buffered frames and an end
    /// marker (and zeros ahead), not yet durable: a crash before `fsync` may keep,
    /// drop or tear any of its pages, which recovery cuts as a torn tail.
    ///
    /// # Errors
    /// `Io` when the write fails; the records stay buffered.
    pub fn write(&mut self) -> Result<(), StorageError> {
        self.write_buffered()
    }

    /// Bytes of records appended and not yet written (what `write` will write, before
    /// its padding).
    pub fn buffered_bytes(&self) -> u64 {
        self.buffer.len() as u64
    }

    fn write_buffered(&mut self) -> Result<(), StorageError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let end = self.offset + self.buffer.len() as u64;
        let mut write_end = (end + HEADER_BYTES).min(self.segment_size);
        let chunk = ZERO_CHUNK.min(self.segment_size / 16).max(ALIGN);
        if write_end + chunk / 4 > self.zeroed {
            let target = (write_end + chunk / 4).div_ceil(chunk) * chunk;
            write_end = target.clamp(write_end, self.segment_size);
        }
        let mut write = std::mem::take(&mut self.buffer);
        write.resize((write_end - self.offset) as usize, 0);
        let path = &self.segments.last().expect("never empty").path;
        let result = self.file.write_at(self.offset, &write).map_err(io_err("write", path));
        write.truncate((end - self.offset) as usize);
        match result {
            Ok(()) => {
                self.unsynced = true;
                self.offset = end;
                self.zeroed = self.zeroed.max(write_end);
                // Keep the allocation for the next batch.
                write.clear();
                self.buffer = write;
                Ok(())
            }
            Err(e) => {
                self.buffer = write;
                Err(e)
            }
        }
    }

    /// Syncs the current segment and starts a new one that begins with every known
    /// hard state and has room for at least a frame of `frame_size` after them.
    fn roll(&mut self, frame_size: u64) -> Result<(), StorageError> {
        self.sync()?;
        let start = hard_state_frames(&self.hard_states);
        let needed = start.len() as u64 + frame_size + HEADER_BYTES;
        let seq = self.segments.last().expect("never empty").seq + 1;
        let (segment, file, size) =
            create_segment(&*self.disk, &self.dir, seq, self.options.segment_bytes.max(needed))?;
        self.segments.push(segment);
        self.file = file;
        self.segment_size = size;
        self.offset = 0;
        self.zeroed = 0;
        self.buffer = start;
        Ok(())
    }

    /// Deletes whole segments every record of which is covered by the given durable
    /// snapshot indexes (entries at or below) or superseded (hard states).
    ///
    /// A range absent from `snapshots` keeps every segment holding its entries; pass
    /// `Index::MAX` for a range that left the node.
    ///
    /// # Errors
    /// `Io` when syncing, removing or the directory fsync fails.
    /// Once there are more than `keep` segments: the ranges whose entries in the
    /// oldest one are not covered by their snapshots (`snapshots`), with the highest
    /// such index. A range that went quiet long before its next snapshot was due
    /// would otherwise keep that segment, and every later one, forever.
    pub fn pinning(
        &self,
        snapshots: &BTreeMap<RangeId, Index>,
        keep: usize,
    ) -> Vec<(RangeId, Index)> {
        if self.segments.len() <= keep.max(1) {
            return Vec::new();
        }
        let oldest = &self.segments[0];
        oldest
            .max_index
            .iter()
            .filter(|(range, max)| snapshots.get(range).is_none_or(|snap| *max > snap))
            .map(|(range, max)| (*range, *max))
            .collect()
    }

    /// How many segments the log has (the current one included).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn release(&mut self, snapshots: &BTreeMap<RangeId, Index>) -> Result<(), StorageError> {
        let covered = |segment: &Segment| {
            segment
                .max_index
                .iter()
                .all(|(range, max)| snapshots.get(range).is_some_and(|snap| max <= snap))
        };
        let count =
            self.segments[..self.segments.len() - 1].iter().take_while(|s| covered(s)).count();
        if count == 0 {
            return Ok(());
        }
        // The hard states at the start of the current segment must be durable
        // before the older copies go.
        self.sync()?;
        for segment in self.segments.drain(..count) {
            self.disk.remove_file(&segment.path).map_err(io_err("remove", &segment.path))?;
        }
        self.disk.sync_dir(&self.dir).map_err(io_err("sync directory", &self.dir))?;
        self.check_invariants();
        #[cfg(madsim)]
        crate::env::sim_hooks::sometimes("WAL segments released behind snapshots");
        Ok(())
    }

    /// Starts over after damage: a new segment holding only `hard_states` (whose logs
    /// the caller discarded) replaces every segment, which is renamed `*.damaged` and
    /// kept for inspection. Returns the renamed paths.
    ///
    /// The new segment is durable before any old one is renamed: a crash in between
    /// finds the same damage again, followed by these hard states.
    ///
    /// # Errors
    /// `Io` when a file operation fails.
    pub fn discard_damaged(
        &mut self,
        hard_states: BTreeMap<RangeId, HardState>,
    ) -> Result<Vec<PathBuf>, StorageError> {
        let start = hard_state_frames(&hard_states);
        let seq = self.segments.last().expect("never empty").seq + 1;
        let needed = start.len() as u64 + HEADER_BYTES;
        let (segment, file, size) =
            create_segment(&*self.disk, &self.dir, seq, self.options.segment_bytes.max(needed))?;
        let old = std::mem::replace(&mut self.segments, vec![segment]);
        self.file = file;
        self.segment_size = size;
        self.offset = 0;
        self.zeroed = 0;
        self.buffer = start;
        self.hard_states = hard_states;
        self.sync()?;
        let mut renamed = Vec::new();
        for segment in old {
            let mut to = segment.path.clone().into_os_string();
            to.push(".damaged");
            let to = PathBuf::from(to);
            self.disk.rename(&segment.path, &to).map_err(io_err("rename", &segment.path))?;
            renamed.push(to);
        }
        self.disk.sync_dir(&self.dir).map_err(io_err("sync directory", &self.dir))?;
        self.check_invariants();
        Ok(renamed)
    }

    /// Paths of the segment files, oldest first (for status and tests).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|segment| segment.path.clone()).collect()
    }
}

/// The whole segment, cut down to a multiple of the frame alignment.
fn read_segment(file: &dyn DiskFile, path: &Path) -> Result<Vec<u8>, StorageError> {
    let size = file.len().map_err(io_err("stat", path))?;
    let mut bytes = vec![0u8; usize::try_from(size).expect("segment fits in memory")];
    let read = file.read_at(0, &mut bytes).map_err(io_err("read", path))?;
    bytes.truncate(read - read % ALIGN as usize);
    Ok(bytes)
}

/// Creates, preallocates and sizes segment `seq`, and makes its name durable.
fn create_segment(
    disk: &dyn Disk,
    dir: &Path,
    seq: u64,
    size: u64,
) -> Result<(Segment, Box<dyn DiskFile>, u64), StorageError> {
    let path = dir.join(segment_name(seq));
    let size = align_up(size);
    let mut file = disk.open(&path, true).map_err(io_err("create", &path))?;
    file.allocate(size).map_err(io_err("allocate", &path))?;
    file.set_len(size).map_err(io_err("set length", &path))?;
    file.sync().map_err(io_err("sync", &path))?;
    disk.sync_dir(dir).map_err(io_err("sync directory", dir))?;
    Ok((Segment { seq, path, max_index: BTreeMap::new() }, file, size))
}

#[cfg(test)]
#[path = "wal_test.rs"]
mod tests;
