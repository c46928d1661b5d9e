//! The node-wide WAL (src/storage/wal.rs) on an in-memory disk:
//! - any sequence of appends and syncs, then a crash that tears the last write at any
//!   byte (each page after the cut keeps its old bytes, is zeroed, garbled or
//!   written, and the torn page may be garbled before the cut), recovers exactly the
//!   state of a prefix of the records that contains every synced one; recovery then
//!   goes on appending, over several crashes;
//! - a bit flipped inside a frame that a later batch follows (or in an older
//!   segment) is reported as damage naming that segment and frame offset, and every
//!   range's term, vote and repair term are still those the model holds.
//!
//! The model replays records by the module doc's rules: a hard state replaces the
//! range's; entries from i drop every entry >= i (and all of them when i leaves a
//! gap) and append; a snapshot install drops the range's entries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;

use rangedb::fuzzing::MemDisk;
use rangedb::raft::{Entry, HardState, NodeId};
use rangedb::range::descriptor::RangeId;
use rangedb::range::kv::COMMAND_FORMAT;
use rangedb::storage::{RecoveredLog, StorageError, Wal, WalOptions, WalRecord, WalRecovery};

const PAGE: usize = 64;

/// A record relative to the model's state when it is appended.
#[derive(Clone, Debug)]
enum RecordSpec {
    HardState {
        range: u64,
        term: u64,
        commit: u64,
    },
    /// Entries from `last + 1 - back` (or `last + 2 + gap`), `count` of them.
    Entries {
        range: u64,
        back: u64,
        gap: Option<u64>,
        count: u64,
        term: u64,
        size: usize,
    },
    SnapshotInstalled {
        range: u64,
        ahead: u64,
    },
}

#[derive(Clone, Debug)]
enum WalOp {
    Append(RecordSpec),
    Sync,
}

/// How the crash leaves the last write: bytes before `cut` are written; each page
/// from the cut on takes `pages[k % len]`: 0 old, 1 zero, 2 garbage, 3 written.
#[derive(Clone, Debug)]
struct Crash {
    tear: bool,
    cut: usize,
    pages: Vec<u8>,
    garble_torn_page: bool,
    seed: u64,
}

fn record_spec() -> impl Strategy<Value = RecordSpec> {
    prop_oneof![
        2 => (1u64..4, 0u64..5, 0u64..20)
            .prop_map(|(range, term, commit)| RecordSpec::HardState { range, term, commit }),
        6 => (1u64..4, 0u64..4, proptest::option::weighted(0.1, 0u64..3), 0u64..5, 1u64..4, 0usize..40)
            .prop_map(|(range, back, gap, count, term, size)| RecordSpec::Entries {
                range, back, gap, count, term, size
            }),
        1 => (1u64..4, 0u64..3).prop_map(|(range, ahead)| RecordSpec::SnapshotInstalled { range, ahead }),
    ]
}

fn wal_op() -> impl Strategy<Value = WalOp> {
    prop_oneof![4 => record_spec().prop_map(WalOp::Append), 1 => Just(WalOp::Sync)]
}

fn crash() -> impl Strategy<Value = Crash> {
    (proptest::bool::weighted(0.8), any::<usize>(), vec(0u8..4, 1..4), any::<bool>(), any::<u64>())
        .prop_map(|(tear, cut, pages, garble_torn_page, seed)| Crash {
            tear,
            cut,
            pages,
            garble_torn_page,
            seed,
        })
}

/// The recovered state of every range, without ranges that hold nothing.
type State = BTreeMap<RangeId, RecoveredLog>;

fn replay(records: &[WalRecord]) -> State {
    let mut state: BTreeMap<RangeId, (Option<HardState>, BTreeMap<u64, Entry>)> = BTreeMap::new();
    for record in records {
        match record {
            WalRecord::HardState { range, hard_state } => {
                state.entry(*range).or_default().0 = Some(*hard_state);
            }
            WalRecord::SnapshotInstalled { range, .. } | WalRecord::LogDiscarded { range } => {
                state.entry(*range).or_default().1.clear()
            }
            WalRecord::Entries { range, entries } => {
                let Some(first) = entries.first() else { continue };
                let log = &mut state.entry(*range).or_default().1;
                log.retain(|index, _| *index < first.index);
                if log.last_key_value().is_some_and(|(last, _)| last + 1 < first.index) {
                    log.clear();
                }
                log.extend(entries.iter().map(|e| (e.index, e.clone())));
            }
        }
    }
    state
        .into_iter()
        .map(|(range, (hard_state, log))| {
            (range, RecoveredLog { hard_state, entries: log.into_values().collect() })
        })
        .filter(|(_, log)| *log != RecoveredLog::default())
        .collect()
}

fn normalize(recovery: WalRecovery) -> State {
    recovery.ranges.into_iter().filter(|(_, log)| *log != RecoveredLog::default()).collect()
}

fn resolve(spec: &RecordSpec, state: &State) -> WalRecord {
    let last = |range: u64| {
        let log = state.get(&RangeId(range));
        log.and_then(|log| log.entries.last()).map_or(0, |e| e.index)
    };
    match *spec {
        RecordSpec::HardState { range, term, commit } => WalRecord::HardState {
            range: RangeId(range),
            hard_state: HardState {
                term,
                vote: Some(NodeId(term % 3 + 1)),
                commit,
                repair_term: 0,
            },
        },
        RecordSpec::Entries { range, back, gap, count, term, size } => {
            let start = match gap {
                Some(gap) => last(range) + 2 + gap,
                None => (last(range) + 1).saturating_sub(back).max(1),
            };
            let entries = (start..start + count)
                .map(|index| Entry {
                    term,
                    index,
                    format: COMMAND_FORMAT,
                    data: vec![index as u8; size].into(),
                })
                .collect();
            WalRecord::Entries { range: RangeId(range), entries }
        }
        RecordSpec::SnapshotInstalled { range, ahead } => WalRecord::SnapshotInstalled {
            range: RangeId(range),
            index: last(range) + ahead,
            term: 1,
        },
    }
}

fn next_garbage(seed: &mut u64) -> u8 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 24) as u8
}

/// Tears the disk's last write as `crash` says.
fn tear(disk: &MemDisk, crash: &Crash) {
    let Some(write) = disk.last_write() else { return };
    let mut bytes = disk.file(&write.path).expect("written file exists");
    let start = write.offset as usize;
    let len = write.old.len();
    let cut = crash.cut % (len + 1);
    let mut seed = crash.seed | 1;
    for at in cut..len {
        let page = (start + at) / PAGE - (start + cut) / PAGE;
        bytes[start + at] = match crash.pages[page % crash.pages.len()] {
            0 => write.old[at],
            1 => 0,
            2 => next_garbage(&mut seed),
            _ => bytes[start + at],
        };
    }
    if crash.garble_torn_page {
        let page_start = ((start + cut) / PAGE * PAGE).max(start);
        for byte in &mut bytes[page_start..start + cut] {
            *byte = next_garbage(&mut seed);
        }
    }
    disk.set_file(&write.path, bytes);
}

fn open(disk: &MemDisk, segment_bytes: u64) -> Result<(Wal, WalRecovery), StorageError> {
    let shared: Arc<dyn rangedb::env::Disk> = Arc::new(disk.clone());
    Wal::open(shared, Path::new("/wal"), WalOptions { segment_bytes })
}

fn write_number(disk: &MemDisk) -> u64 {
    disk.last_write().map_or(0, |write| write.number)
}

/// Runs epochs of appends and syncs, each ending in a crash, checking recovery.
fn run_crashes(segment_bytes: u64, epochs: Vec<(Vec<WalOp>, Crash)>) -> Result<(), TestCaseError> {
    let disk = MemDisk::new();
    // Every record appended that survived so far, in log order.
    let mut history: Vec<WalRecord> = Vec::new();
    let (mut wal, recovery) = open(&disk, segment_bytes).expect("fresh WAL");
    prop_assert_eq!(normalize(recovery), State::new());
    // Writes numbered above this one happened in the current epoch (its opening
    // included): only those can be in flight at its crash.
    let mut epoch_writes_after = 0;
    for (ops, crash) in epochs {
        let mut state = replay(&history);
        // Records written to disk by completed writes, and those before the last write.
        let mut appended = history.len();
        let (mut written, mut before_last) = (history.len(), history.len());
        for op in ops {
            let writes = write_number(&disk);
            let segments = wal.segment_paths().len();
            match op {
                WalOp::Append(spec) => {
                    let record = resolve(&spec, &state);
                    wal.append(&record).expect("append");
                    if write_number(&disk) != writes {
                        // A roll synced everything buffered before this record.
                        before_last = written;
                        written = appended;
                    }
                    prop_assert!(wal.segment_paths().len() >= segments);
                    history.push(record);
                    appended += 1;
                    state = replay(&history);
                }
                WalOp::Sync => {
                    wal.sync().expect("sync");
                    if write_number(&disk) != writes {
                        before_last = written;
                        written = appended;
                    }
                }
            }
        }
        let segments = wal.segment_paths();
        drop(wal);
        // Only a write to the newest segment can be in flight at a crash: older
        // segments were synced before the newer one was created.
        let last_path: Option<PathBuf> = disk.last_write().map(|write| write.path);
        let torn = crash.tear
            && write_number(&disk) > epoch_writes_after
            && last_path.as_ref() == segments.last();
        let lowest = if torn {
            tear(&disk, &crash);
            before_last
        } else {
            written
        };
        epoch_writes_after = write_number(&disk);
        let (reopened, recovery) = open(&disk, segment_bytes)
            .map_err(|e| TestCaseError::fail(format!("recovery failed: {e}")))?;
        let recovered = normalize(recovery);
        // The longest prefix of the written records whose replay matches.
        let Some(kept) = (lowest..=written).rev().find(|&k| replay(&history[..k]) == recovered)
        else {
            return Err(TestCaseError::fail(format!(
                "recovered {recovered:?} is no prefix in {lowest}..={written} of {history:?}"
            )));
        };
        history.truncate(kept);
        wal = reopened;
    }
    Ok(())
}

/// Frames of a segment: (offset, frame length with header, batch_start).
fn frames(bytes: &[u8]) -> Vec<(usize, usize, u64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
        if len == 0 && crc == 0 {
            break;
        }
        let batch_start = u64::from_le_bytes(bytes[pos + 8..pos + 16].try_into().unwrap());
        out.push((pos, 8 + len, batch_start));
        pos += (8 + len).div_ceil(8) * 8;
    }
    out
}

fn run_bit_flip(
    segment_bytes: u64,
    ops: Vec<WalOp>,
    pick: usize,
    bit: usize,
) -> Result<(), TestCaseError> {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, segment_bytes).expect("fresh WAL");
    let mut history = Vec::new();
    for op in ops {
        if let WalOp::Append(spec) = op {
            let record = resolve(&spec, &replay(&history));
            wal.append(&record).expect("append");
            history.push(record);
        }
        // Every append is followed by a sync, so every record is its own batch.
        wal.sync().expect("sync");
    }
    let segments = wal.segment_paths();
    drop(wal);
    // Frames whose damage must be reported: in an older segment, or followed by a
    // frame of a later batch.
    let mut candidates = Vec::new();
    for (i, path) in segments.iter().enumerate() {
        let bytes = disk.file(path).expect("segment");
        let frames = frames(&bytes);
        for (k, &(offset, len, _)) in frames.iter().enumerate() {
            let later = frames[k + 1..].iter().any(|&(_, _, start)| start > offset as u64);
            if i + 1 < segments.len() || later {
                candidates.push((path.clone(), offset, len));
            }
        }
    }
    if candidates.is_empty() {
        return Ok(());
    }
    let (path, offset, len) = candidates[pick % candidates.len()].clone();
    let mut bytes = disk.file(&path).expect("segment");
    let bit = bit % (len * 8);
    bytes[offset + bit / 8] ^= 1 << (bit % 8);
    disk.set_file(&path, bytes);
    let recovery = match open(&disk, segment_bytes) {
        Ok((_, recovery)) => recovery,
        Err(e) => return Err(TestCaseError::fail(format!("one flipped bit refused: {e}"))),
    };
    let Some(damage) = recovery.damage else {
        return Err(TestCaseError::fail(format!(
            "bit {bit} of the frame at {offset} in {} flipped: recovered without damage",
            path.display()
        )));
    };
    prop_assert_eq!(damage.path, path);
    prop_assert_eq!(damage.offset, offset as u64);
    // Term and vote survive one damaged frame (commit may step back: it is a hint).
    let vote = |h: &HardState| (h.term, h.vote, h.repair_term);
    for (range, log) in replay(&history) {
        let got = recovery.ranges.get(&range).and_then(|log| log.hard_state);
        prop_assert_eq!(got.map(|h| vote(&h)), log.hard_state.map(|h| vote(&h)), "{}", range);
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::config("wal", 384))]

    #[test]
    fn crash_recovers_a_prefix_with_every_synced_record(
        segment_bytes in 128u64..1024,
        epochs in vec((vec(wal_op(), 0..24), crash()), 1..5),
    ) {
        run_crashes(segment_bytes, epochs)?;
    }

    #[test]
    fn flipped_bit_before_the_tail_is_damage_that_keeps_every_vote(
        segment_bytes in 128u64..1024,
        ops in vec(wal_op(), 1..24),
        pick in any::<usize>(),
        bit in any::<usize>(),
    ) {
        run_bit_flip(segment_bytes, ops, pick, bit)?;
    }
}
