//! Tests of the WAL: replay rules, rollover, torn tails, corruption, release.

use super::*;
use crate::env::real_disk::RealDisk;
use crate::raft::NodeId;
use crate::range::kv::COMMAND_FORMAT;

fn entries(term: u64, from: Index, to: Index) -> Vec<Entry> {
    (from..=to)
        .map(|index| Entry {
            term,
            index,
            format: COMMAND_FORMAT,
            data: format!("t{term}i{index}").into_bytes().into(),
        })
        .collect()
}

fn hard_state(term: u64, commit: Index) -> HardState {
    HardState { term, vote: Some(NodeId(term % 3 + 1)), commit, repair_term: 0 }
}

fn open(dir: &Path, segment_bytes: u64) -> (Wal, WalRecovery) {
    Wal::open(Arc::new(RealDisk), dir, WalOptions { segment_bytes }).unwrap()
}

fn append_entries(wal: &mut Wal, range: u64, term: u64, from: Index, to: Index) {
    wal.append(&WalRecord::Entries { range: RangeId(range), entries: entries(term, from, to) })
        .unwrap();
}

fn append_hard_state(wal: &mut Wal, range: u64, term: u64, commit: Index) {
    wal.append(&WalRecord::HardState {
        range: RangeId(range),
        hard_state: hard_state(term, commit),
    })
    .unwrap();
}

fn log(recovery: &WalRecovery, range: u64) -> RecoveredLog {
    recovery.ranges.get(&RangeId(range)).cloned().unwrap_or_default()
}

/// The frame size of a record as the WAL writes it.
fn frame_size(record: &WalRecord) -> u64 {
    frame_bytes(&encode_record(record))
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn recovers_many_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, recovery) = open(dir.path(), 1 << 20);
    assert!(recovery.ranges.is_empty());
    for range in 1..=5 {
        append_hard_state(&mut wal, range, 1, 0);
        append_entries(&mut wal, range, 1, 1, 3);
    }
    wal.sync().unwrap();
    for range in 1..=5 {
        append_entries(&mut wal, range, 1, 4, 4 + range);
        append_hard_state(&mut wal, range, 2, 3);
    }
    wal.sync().unwrap();
    // Buffered but never synced: must not be required (and is lost on drop).
    append_entries(&mut wal, 9, 1, 1, 1);
    drop(wal);
    let (_, recovery) = open(dir.path(), 1 << 20);
    for range in 1..=5 {
        let want =
            RecoveredLog { hard_state: Some(hard_state(2, 3)), entries: entries(1, 1, 4 + range) };
        assert_eq!(log(&recovery, range), want, "range {range}");
    }
    assert!(!recovery.ranges.contains_key(&RangeId(9)));
}

#[test]
fn overwrite_and_gap_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1 << 20);
    append_entries(&mut wal, 1, 1, 1, 10);
    append_entries(&mut wal, 1, 2, 6, 8); // Replaces 6..=10 with 6..=8.
    append_entries(&mut wal, 2, 1, 1, 5);
    append_entries(&mut wal, 2, 3, 20, 22); // Gap: a snapshot at 19 was installed.
    append_entries(&mut wal, 3, 1, 5, 7);
    append_entries(&mut wal, 3, 2, 2, 3); // Before the first: replaces everything.
    wal.sync().unwrap();
    drop(wal);
    let (_, recovery) = open(dir.path(), 1 << 20);
    let mut want = entries(1, 1, 5);
    want.extend(entries(2, 6, 8));
    assert_eq!(log(&recovery, 1).entries, want);
    assert_eq!(log(&recovery, 2).entries, entries(3, 20, 22));
    assert_eq!(log(&recovery, 3).entries, entries(2, 2, 3));
    assert_eq!(log(&recovery, 1).hard_state, None);
}

#[test]
fn rollover_keeps_hard_states_and_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 512);
    for index in 1..=60 {
        for range in 1..=3 {
            append_entries(&mut wal, range, 1, index, index);
            append_hard_state(&mut wal, range, 1, index - 1);
        }
        if index % 7 == 0 {
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
    // A record bigger than a segment gets a segment of its own size.
    append_entries(&mut wal, 4, 1, 1, 40);
    wal.sync().unwrap();
    assert!(wal.segment_paths().len() > 5, "{} segments", wal.segment_paths().len());
    drop(wal);
    let (wal, recovery) = open(dir.path(), 512);
    for range in 1..=3 {
        assert_eq!(log(&recovery, range).entries, entries(1, 1, 60), "range {range}");
        assert_eq!(log(&recovery, range).hard_state, Some(hard_state(1, 59)));
    }
    assert_eq!(log(&recovery, 4).entries, entries(1, 1, 40));
    assert!(wal.segment_paths().len() > 5);
}

/// Damages the tail of the last segment with `damage`, then checks that the synced
/// prefix is recovered and that appending after the cut works across a reopen.
fn check_torn_tail(damage: impl Fn(&Path, u64, u64)) {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1 << 16);
    append_hard_state(&mut wal, 1, 1, 0);
    append_entries(&mut wal, 1, 1, 1, 5);
    wal.sync().unwrap();
    let last = WalRecord::Entries { range: RangeId(1), entries: entries(1, 6, 8) };
    let last_offset = wal.offset;
    wal.append(&last).unwrap();
    wal.sync().unwrap();
    let path = wal.segment_paths()[0].clone();
    drop(wal);
    damage(&path, last_offset, frame_size(&last));
    let (mut wal, recovery) = open(dir.path(), 1 << 16);
    assert_eq!(log(&recovery, 1).entries, entries(1, 1, 5));
    assert_eq!(wal.offset, last_offset);
    append_entries(&mut wal, 1, 2, 6, 6);
    append_hard_state(&mut wal, 1, 2, 6);
    wal.sync().unwrap();
    drop(wal);
    let (_, recovery) = open(dir.path(), 1 << 16);
    let mut want = entries(1, 1, 5);
    want.extend(entries(2, 6, 6));
    assert_eq!(
        log(&recovery, 1),
        RecoveredLog { hard_state: Some(hard_state(2, 6)), entries: want }
    );
}

#[test]
fn torn_tail_half_written_record() {
    check_torn_tail(|path, offset, size| {
        let mut bytes = std::fs::read(path).unwrap();
        let half = (offset + size / 2) as usize;
        bytes[half..(offset + size) as usize].fill(0);
        std::fs::write(path, bytes).unwrap();
    });
}

#[test]
fn torn_tail_garbage() {
    check_torn_tail(|path, offset, _| {
        let mut bytes = std::fs::read(path).unwrap();
        for (i, byte) in bytes[offset as usize..offset as usize + 300].iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        std::fs::write(path, bytes).unwrap();
    });
}

#[test]
fn torn_batch_with_a_later_page_kept_is_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1 << 16);
    append_entries(&mut wal, 1, 1, 1, 2);
    wal.sync().unwrap();
    let batch_offset = wal.offset;
    let first = WalRecord::Entries { range: RangeId(1), entries: entries(1, 3, 4) };
    wal.append(&first).unwrap();
    append_entries(&mut wal, 1, 1, 5, 6);
    wal.sync().unwrap();
    let path = wal.segment_paths()[0].clone();
    drop(wal);
    // The first frame of the batch was lost, the second survived.
    flip_byte(&path, batch_offset + 12);
    let (_, recovery) = open(dir.path(), 1 << 16);
    assert_eq!(log(&recovery, 1).entries, entries(1, 1, 2));
}

fn expect_damage(dir: &Path, segment_bytes: u64) -> (Wal, WalRecovery, WalDamage) {
    let (wal, recovery) = open(dir, segment_bytes);
    let damage = recovery.damage.clone().expect("damage reported");
    (wal, recovery, damage)
}

#[test]
fn flipped_byte_before_a_later_batch_is_damage_stepped_over() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1 << 16);
    let first = WalRecord::Entries { range: RangeId(1), entries: entries(1, 1, 3) };
    wal.append(&first).unwrap();
    wal.sync().unwrap();
    append_entries(&mut wal, 1, 1, 4, 5);
    wal.sync().unwrap();
    append_entries(&mut wal, 1, 1, 6, 7);
    append_hard_state(&mut wal, 1, 1, 7);
    wal.sync().unwrap();
    let second_offset = frame_size(&first);
    let path = wal.segment_paths()[0].clone();
    drop(wal);
    flip_byte(&path, second_offset + 20);
    let (_, recovery, damage) = expect_damage(dir.path(), 1 << 16);
    assert_eq!((damage.path, damage.offset), (path, second_offset), "{}", damage.reason);
    assert!(damage.reason.contains("later batch"), "{}", damage.reason);
    assert_eq!(log(&recovery, 1).hard_state, Some(hard_state(1, 7)), "replay went on past it");
}

#[test]
fn bad_record_in_an_older_segment_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 256);
    for index in 1..=20 {
        append_entries(&mut wal, 1, 1, index, index);
        wal.sync().unwrap();
    }
    let paths = wal.segment_paths();
    assert!(paths.len() >= 3);
    drop(wal);
    flip_byte(&paths[1], 9);
    let (_, _, damage) = expect_damage(dir.path(), 256);
    assert_eq!((damage.path, damage.offset), (paths[1].clone(), 0));
    assert!(damage.reason.contains("later segments"), "{}", damage.reason);
}

/// Every byte of a frame holding a vote change, flipped in turn (the length and
/// checksum too): the other copy keeps term and vote, and later records still replay.
#[test]
fn a_damaged_copy_of_a_vote_never_loses_the_vote() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1 << 16);
    append_entries(&mut wal, 1, 1, 1, 2);
    append_hard_state(&mut wal, 1, 1, 2);
    wal.sync().unwrap();
    let vote_at = wal.offset;
    append_hard_state(&mut wal, 1, 2, 2); // term 2, vote: a change, so two copies
    wal.sync().unwrap();
    append_hard_state(&mut wal, 2, 5, 0);
    wal.sync().unwrap();
    let path = wal.segment_paths()[0].clone();
    drop(wal);
    let clean = std::fs::read(&path).unwrap();
    let copy =
        frame_size(&WalRecord::HardState { range: RangeId(1), hard_state: hard_state(2, 2) });
    for byte in vote_at..vote_at + 2 * copy {
        std::fs::write(&path, &clean).unwrap();
        flip_byte(&path, byte);
        let (recovery, damage) = match Wal::open(
            Arc::new(RealDisk),
            dir.path(),
            WalOptions { segment_bytes: 1 << 16 },
        ) {
            Ok((_, recovery)) => (recovery.clone(), recovery.damage),
            Err(e) => panic!("byte {byte}: {e}"),
        };
        if byte % 8 == 0 || damage.is_some() {
            // Padding bytes are not covered by the checksum; anything else is damage.
            assert_eq!(log(&recovery, 1).hard_state, Some(hard_state(2, 2)), "byte {byte}");
            assert_eq!(log(&recovery, 2).hard_state, Some(hard_state(5, 0)), "byte {byte}");
        }
    }
}

#[test]
fn two_damaged_records_refuse_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1 << 16);
    for index in 1..=4 {
        append_entries(&mut wal, 1, 1, index, index);
        wal.sync().unwrap();
    }
    let path = wal.segment_paths()[0].clone();
    let one = frame_size(&WalRecord::Entries { range: RangeId(1), entries: entries(1, 1, 1) });
    drop(wal);
    flip_byte(&path, 20);
    flip_byte(&path, one + 20);
    match Wal::open(Arc::new(RealDisk), dir.path(), WalOptions { segment_bytes: 1 << 16 }) {
        Err(StorageError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, 0);
            assert!(reason.contains("2 damaged records"), "{reason}");
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got a recovery"),
    }
}

#[test]
fn discard_damaged_starts_over_from_the_given_hard_states() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 256);
    for index in 1..=20 {
        append_entries(&mut wal, 1, 1, index, index);
        append_hard_state(&mut wal, 1, 1, index);
        wal.sync().unwrap();
    }
    let old = wal.segment_paths();
    drop(wal);
    flip_byte(&old[0], 9);
    let (mut wal, _, _) = expect_damage(dir.path(), 256);
    let mut fresh = BTreeMap::new();
    let bumped = HardState { term: 2, vote: None, commit: 0, repair_term: 1 };
    fresh.insert(RangeId(1), bumped);
    let renamed = wal.discard_damaged(fresh).unwrap();
    assert_eq!(renamed.len(), old.len());
    assert!(renamed.iter().all(|p| p.exists() && p.to_string_lossy().ends_with(".damaged")));
    append_entries(&mut wal, 1, 3, 1, 1);
    wal.sync().unwrap();
    drop(wal);
    let (_, recovery) = open(dir.path(), 256);
    assert_eq!(recovery.damage, None);
    assert_eq!(log(&recovery, 1).hard_state, Some(bumped));
    assert_eq!(log(&recovery, 1).entries, entries(3, 1, 1));
}

#[test]
fn release_deletes_covered_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 512);
    for index in 1..=40 {
        append_entries(&mut wal, 1, 1, index, index);
        append_hard_state(&mut wal, 1, 1, index);
        if index <= 5 {
            append_entries(&mut wal, 2, 1, index, index);
            append_hard_state(&mut wal, 2, 1, index);
        }
        wal.sync().unwrap();
    }
    let before = wal.segment_paths();
    // Range 2 has no snapshot: nothing holding its entries may go.
    wal.release(&BTreeMap::from([(RangeId(1), 30)])).unwrap();
    assert_eq!(wal.segment_paths(), before);
    wal.release(&BTreeMap::from([(RangeId(1), 30), (RangeId(2), 5)])).unwrap();
    let after = wal.segment_paths();
    assert!(after.len() < before.len() && after.len() > 1, "{} -> {}", before.len(), after.len());
    assert!(!before[0].exists());
    drop(wal);
    let (mut wal, recovery) = open(dir.path(), 512);
    let range1 = log(&recovery, 1);
    assert_eq!(range1.hard_state, Some(hard_state(1, 40)));
    let first = range1.entries[0].index;
    assert!(first <= 31, "entries above the snapshot must survive, first {first}");
    assert_eq!(range1.entries, entries(1, first, 40));
    assert_eq!(log(&recovery, 2).hard_state, Some(hard_state(1, 5)));
    // Everything covered: all but the current segment go.
    wal.release(&BTreeMap::from([(RangeId(1), 40), (RangeId(2), 5)])).unwrap();
    assert_eq!(wal.segment_paths().len(), 1);
    drop(wal);
    let (_, recovery) = open(dir.path(), 512);
    assert_eq!(log(&recovery, 1).hard_state, Some(hard_state(1, 40)));
    assert_eq!(log(&recovery, 2).hard_state, Some(hard_state(1, 5)));
}

#[test]
fn a_quiet_range_is_named_as_pinning_the_oldest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 512);
    for index in 1..=40 {
        append_entries(&mut wal, 1, 1, index, index);
        if index <= 5 {
            append_entries(&mut wal, 2, 1, index, index);
        }
        wal.sync().unwrap();
    }
    let segments = wal.segment_count();
    assert!(segments >= 3, "{segments} segments");
    // Range 1 snapshotted past the oldest segment; range 2 (quiet since index 5) never.
    let snapshots = BTreeMap::from([(RangeId(1), 30)]);
    assert_eq!(wal.pinning(&snapshots, segments), vec![]);
    assert_eq!(wal.pinning(&snapshots, 1), vec![(RangeId(2), 5)]);
    let snapshots = BTreeMap::from([(RangeId(1), 30), (RangeId(2), 5)]);
    assert_eq!(wal.pinning(&snapshots, 1), vec![]);
    wal.release(&snapshots).unwrap();
    assert!(wal.segment_count() < segments);
}

#[test]
fn torn_tail_scan_of_a_full_size_garbage_segment_recovers_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = WalOptions::default().segment_bytes;
    let (mut wal, _) = open(dir.path(), segment_bytes);
    append_entries(&mut wal, 1, 1, 1, 2);
    wal.sync().unwrap();
    let torn_offset = wal.offset;
    append_entries(&mut wal, 1, 1, 3, 4);
    wal.sync().unwrap();
    let path = wal.segment_paths()[0].clone();
    drop(wal);
    // Tear the record and fill the rest of the segment with non-zero garbage, the
    // worst case for the search for a later batch.
    let mut bytes = std::fs::read(&path).unwrap();
    let mut state: u32 = 7;
    for byte in &mut bytes[torn_offset as usize + 4..] {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        *byte = (state >> 16) as u8;
    }
    std::fs::write(&path, bytes).unwrap();
    // How long this takes is a benchmark's business, not a test's: here only the
    // outcome counts.
    let (_, recovery) = open(dir.path(), segment_bytes);
    assert_eq!(log(&recovery, 1).entries, entries(1, 1, 2));
}

#[test]
fn an_installed_snapshot_voids_every_earlier_entry_of_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1 << 20);
    // Entries 1..=20 of term 2, of which 11..=20 diverge from the leader's history.
    append_entries(&mut wal, 1, 2, 1, 20);
    append_entries(&mut wal, 2, 2, 1, 5);
    wal.append(&WalRecord::SnapshotInstalled { range: RangeId(1), index: 15, term: 3 }).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (mut wal, recovery) = open(dir.path(), 1 << 20);
    assert!(log(&recovery, 1).entries.is_empty(), "nothing of the old log survives");
    assert_eq!(log(&recovery, 2).entries, entries(2, 1, 5), "other ranges are untouched");
    append_entries(&mut wal, 1, 3, 16, 18);
    wal.sync().unwrap();
    drop(wal);
    let (_, recovery) = open(dir.path(), 1 << 20);
    assert_eq!(log(&recovery, 1).entries, entries(3, 16, 18));
}

/// A disk that records every `write_at` as (offset, length).
struct RecordingDisk {
    writes: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
}

struct RecordingFile {
    inner: Box<dyn DiskFile>,
    writes: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
}

impl DiskFile for RecordingFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.writes.lock().unwrap().push((offset, data.len() as u64));
        self.inner.write_at(offset, data)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn allocate(&mut self, len: u64) -> std::io::Result<()> {
        self.inner.allocate(len)
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
}

impl Disk for RecordingDisk {
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        RealDisk.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool) -> std::io::Result<Box<dyn DiskFile>> {
        let inner = RealDisk.open(path, create)?;
        Ok(Box::new(RecordingFile { inner, writes: Arc::clone(&self.writes) }))
    }
    fn exists(&self, path: &Path) -> bool {
        RealDisk.exists(path)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        RealDisk.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        RealDisk.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        RealDisk.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        RealDisk.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> std::io::Result<Box<dyn crate::env::DirLock>> {
        RealDisk.lock_dir(dir)
    }
}

#[test]
fn syncs_write_zeros_ahead_of_the_data_once_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let disk = Arc::new(RecordingDisk { writes: Arc::clone(&writes) });
    let segment_bytes = 1 << 20;
    let chunk = ZERO_CHUNK.min(segment_bytes / 16);
    let (mut wal, _) = Wal::open(disk.clone(), dir.path(), WalOptions { segment_bytes }).unwrap();
    let mut last = 0;
    // About 64 KiB of records, one sync each, all in the first segment.
    for index in 1..=2000 {
        append_entries(&mut wal, 1, 1, index, index);
        wal.sync().unwrap();
        // Every byte from the start to a quarter chunk past the data was written since
        // the segment was allocated: no sync's data lands in an unwritten extent.
        let mut covered = 0;
        let mut sorted = writes.lock().unwrap().clone();
        sorted.sort_unstable();
        for (offset, len) in sorted {
            if offset <= covered {
                covered = covered.max(offset + len);
            }
        }
        assert!(covered >= wal.offset + chunk / 4, "sync {index}: written to {covered}");
        last = index;
    }
    assert_eq!(wal.segments.len(), 1);
    // Only about one sync per chunk of data writes more than its frames and end marker.
    let long = writes.lock().unwrap().iter().filter(|(_, len)| *len > 4096).count() as u64;
    assert!(long <= wal.offset / chunk + 2, "{long} long writes for {} bytes", wal.offset);
    drop(wal);
    let (_, recovery) = Wal::open(disk, dir.path(), WalOptions { segment_bytes }).unwrap();
    assert_eq!(log(&recovery, 1).entries, entries(1, 1, last));
}

/// A WAL written by data directory version 1 (entries without a format) is read: an
/// empty entry as a no-op, any other as a command of format 1, and the records
/// after it (hard states keep their variant numbers) too.
#[test]
fn version_1_entries_records_are_read() {
    #[derive(Serialize)]
    struct V1Entry {
        term: Term,
        index: Index,
        #[serde(with = "crate::byte_serde::shared")]
        data: bytes::Bytes,
    }
    #[derive(Serialize)]
    enum V1Record {
        Entries { range: RangeId, entries: Vec<V1Entry> },
        HardState { range: RangeId, hard_state: HardState },
    }
    let v1 = V1Record::Entries {
        range: RangeId(3),
        entries: vec![
            V1Entry { term: 2, index: 1, data: bytes::Bytes::new() },
            V1Entry { term: 2, index: 2, data: bytes::Bytes::from_static(b"cmd") },
        ],
    };
    let hard_state = HardState { term: 2, vote: Some(NodeId(1)), commit: 2, repair_term: 0 };
    let v1_hard_state = V1Record::HardState { range: RangeId(3), hard_state };
    let mut segment = Vec::new();
    for record in [&v1, &v1_hard_state] {
        let bytes = bincode::serde::encode_to_vec(record, bincode::config::standard()).unwrap();
        let at = segment.len() as u64;
        push_frame(&mut segment, at, &bytes);
    }
    let (first, size) = decode_frame(&segment, 0).unwrap();
    let (second, _) = decode_frame(&segment, size).unwrap();
    let cmd = EntryFormat { kind: EntryFormat::KIND_COMMAND, version: 1 };
    // Version-1 WAL entries hold commands of format 1, which today's version 4 still
    // reads (its enum only grew at the end).
    assert_eq!(COMMAND_FORMAT.version, 4);
    let put = crate::range::kv::Command {
        request_id: None,
        op: crate::range::kv::WriteOp::Put { key: b"k".to_vec(), value: b"v".to_vec() },
    };
    let bytes = bincode::serde::encode_to_vec(&put, bincode::config::standard()).unwrap();
    let decoded = crate::range::kv::Applicable::decode(cmd, &bytes).unwrap();
    assert_eq!(decoded, crate::range::kv::Applicable::Command(put));
    assert_eq!(
        first,
        WalRecord::Entries {
            range: RangeId(3),
            entries: vec![
                Entry { term: 2, index: 1, format: EntryFormat::NOOP, data: bytes::Bytes::new() },
                Entry { term: 2, index: 2, format: cmd, data: bytes::Bytes::from_static(b"cmd") },
            ],
        }
    );
    assert_eq!(second, WalRecord::HardState { range: RangeId(3), hard_state });
    // Today's encoding of the same records decodes to the same values.
    for record in [&first, &second] {
        let mut frame = Vec::new();
        push_frame(&mut frame, 0, &encode_record(record));
        assert_eq!(&decode_frame(&frame, 0).unwrap().0, record);
    }
}
