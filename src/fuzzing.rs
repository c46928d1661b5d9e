//! The bodies of the fuzz targets in `fuzz/fuzz_targets/`, one plain function per
//! target, so that `cargo test` runs them over the seed corpus in `fuzz/corpus/` and
//! the targets cannot rot. Each body feeds bytes from outside to one decoder and
//! panics only when a property fails: decoders must return errors, never panic.
//!
//! ```text
//!   fuzz/fuzz_targets/<target>.rs ──▶ fuzzing::<target>(bytes) ◀── proptests/fuzz_corpus.rs
//! ```
//!
//! Inputs whose first byte selects a mode let the fuzzer reach past a checksum: in
//! the "framed" modes the body computes the length and crc itself, so the mutated
//! bytes reach bincode and the code behind it.
//!
//! `MemDisk` is a small in-memory `Disk` for these bodies and for the WAL property
//! tests; it records the last write so a test can tear it.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cli_parse;
use crate::env::{DirLock, Disk, DiskFile};
use crate::raft::{Entry, HardState, NodeId};
use crate::range::descriptor::RangeId;
use crate::range::kv::{Command, KvStore, WriteOp, COMMAND_FORMAT};
use crate::storage::{SnapshotStore, Wal, WalOptions, WalRecord};
use crate::wire::{self, ClientRequest, ClientResponse, Hello, PeerBatch};

/// The names of the fuzz targets, which are also the corpus directories.
pub const TARGETS: [&str; 5] = ["peer_frame", "client_frame", "wal_recovery", "snapshot", "cli"];

/// Runs the body of the target `name` on `data`.
///
/// # Panics
/// On an unknown name, or when the body finds a broken property.
pub fn run_target(name: &str, data: &[u8]) {
    match name {
        "peer_frame" => peer_frame(data),
        "client_frame" => client_frame(data),
        "wal_recovery" => wal_recovery(data),
        "snapshot" => snapshot(data),
        "cli" => cli(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Splits off the mode byte; None for an empty input.
fn mode(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(first, rest)| (*first, rest))
}

/// `len | crc | payload` around `payload`, the wire and WAL header shape.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend(crc32fast::hash(payload).to_le_bytes());
    frame.extend(payload);
    frame
}

/// Decodes frames of `T` from the front of `buf` until it is used up or refused;
/// every frame decoded must re-encode to a frame that decodes to the same value.
fn decode_frames<T>(mut buf: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    while let Ok(Some((value, used))) = wire::decode_frame::<T>(buf) {
        assert!(used >= wire::FRAME_HEADER_BYTES && used <= buf.len(), "used {used}");
        let again = wire::encode_frame(&value);
        let (decoded, _) = wire::decode_frame::<T>(&again).expect("re-encoded").expect("whole");
        assert_eq!(decoded, value, "a decoded frame does not round-trip");
        buf = &buf[used..];
    }
}

/// Peer connection frames: a hello, then peer batches.
/// Mode bit 0 clear: raw bytes; set: the rest is a payload framed correctly.
pub fn peer_frame(data: &[u8]) {
    let Some((mode, rest)) = mode(data) else { return };
    let bytes = if mode & 1 == 0 { rest.to_vec() } else { framed(rest) };
    decode_frames::<Hello>(&bytes);
    decode_frames::<PeerBatch>(&bytes);
}

/// Client connection frames: requests (server side) and responses (client side).
/// Mode as in `peer_frame`.
pub fn client_frame(data: &[u8]) {
    let Some((mode, rest)) = mode(data) else { return };
    let bytes = if mode & 1 == 0 { rest.to_vec() } else { framed(rest) };
    decode_frames::<ClientRequest>(&bytes);
    decode_frames::<ClientResponse>(&bytes);
}

/// Builds WAL segment bytes from `rest` in "framed" mode: a sequence of
/// `[chunk_len: u8][flags: u8][record bytes]`; each chunk becomes a valid frame whose
/// record bytes are the fuzzer's, starting a new batch when `flags & 1`.
fn framed_segment(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut batch_start = 0u64;
    while let Some((&chunk_len, tail)) = rest.split_first() {
        let take = (chunk_len as usize).min(tail.len());
        let (chunk, tail) = tail.split_at(take);
        rest = tail;
        let Some((&flags, record)) = chunk.split_first() else { break };
        if flags & 1 == 1 {
            batch_start = out.len() as u64;
        }
        let mut payload = batch_start.to_le_bytes().to_vec();
        payload.extend(record);
        out.extend(framed(&payload));
        out.resize(out.len().div_ceil(8) * 8, 0);
    }
    out
}

/// WAL recovery over one or two segments. Mode bit 0: raw bytes or framed chunks
/// (see `framed_segment`); bit 1: split the bytes into two segments at the offset
/// given by the next byte (times 8). After a successful open the WAL must take a
/// new record, and a second open must find it and the same state as the first.
pub fn wal_recovery(data: &[u8]) {
    let Some((mode, rest)) = mode(data) else { return };
    let (split, rest) = match (mode & 2 == 2, rest.split_first()) {
        (true, Some((at, rest))) => (Some(*at as usize * 8), rest),
        _ => (None, rest),
    };
    let bytes = if mode & 1 == 0 { rest.to_vec() } else { framed_segment(rest) };
    let disk = MemDisk::new();
    let dir = Path::new("/wal");
    match split {
        Some(at) if at < bytes.len() => {
            disk.set_file(&dir.join(format!("{:016x}.wal", 1)), bytes[..at].to_vec());
            disk.set_file(&dir.join(format!("{:016x}.wal", 2)), bytes[at..].to_vec());
        }
        _ => disk.set_file(&dir.join(format!("{:016x}.wal", 1)), bytes),
    }
    let options = WalOptions { segment_bytes: 4096 };
    let shared: Arc<dyn Disk> = Arc::new(disk.clone());
    let Ok((mut wal, first)) = Wal::open(shared.clone(), dir, options.clone()) else { return };
    for log in first.ranges.values() {
        for pair in log.entries.windows(2) {
            assert_eq!(pair[1].index, pair[0].index + 1, "recovered entries not contiguous");
        }
    }
    let fresh = RangeId(first.ranges.keys().next_back().map_or(1, |r| r.0.wrapping_add(1)));
    let entries = vec![Entry {
        term: 1,
        index: 1,
        format: COMMAND_FORMAT,
        data: b"after recovery".to_vec().into(),
    }];
    let hard_state = HardState { term: 1, vote: Some(NodeId(1)), commit: 1, repair_term: 0 };
    let appended = [
        WalRecord::Entries { range: fresh, entries: entries.clone() },
        WalRecord::HardState { range: fresh, hard_state },
    ];
    for record in &appended {
        wal.append(record).expect("append to a recovered WAL");
    }
    wal.sync().expect("sync of a recovered WAL");
    drop(wal);
    let (_, second) = Wal::open(shared, dir, options).expect("reopen after a clean sync");
    if first.ranges.contains_key(&fresh) {
        return; // Range ids wrapped around: nothing to compare simply.
    }
    let mut expected = first.ranges.clone();
    expected.insert(fresh, crate::storage::RecoveredLog { hard_state: Some(hard_state), entries });
    assert_eq!(second.ranges, expected, "the reopened WAL lost or changed records");
}

/// Snapshot files and the KV state machine image. Mode 0: the bytes are a snapshot
/// file; 1: a file around a payload framed correctly; else: a KvStore image.
pub fn snapshot(data: &[u8]) {
    let Some((mode, rest)) = mode(data) else { return };
    let image = match mode % 3 {
        0 | 1 => {
            let bytes = if mode % 3 == 0 {
                rest.to_vec()
            } else {
                let mut file = b"RDBSNAP1".to_vec();
                file.extend((rest.len() as u64).to_le_bytes());
                file.extend(crc32fast::hash(rest).to_le_bytes());
                file.extend(rest);
                file
            };
            let disk = MemDisk::new();
            let dir = Path::new("/snap");
            disk.set_file(&dir.join("0000000000000001-0000000000000007.snap"), bytes);
            let store = SnapshotStore::open(Arc::new(disk), dir).expect("in-memory disk");
            match store.load(RangeId(1)) {
                Ok(Some(snapshot)) => snapshot.data,
                _ => return,
            }
        }
        _ => rest.to_vec(),
    };
    let Ok(store) = KvStore::restore(&image) else { return };
    let again = KvStore::restore(&store.snapshot()).expect("a store's own snapshot restores");
    assert_eq!(again, store, "snapshot round trip changed the store");
    let all = store.scan(b"", None, 0, None).expect("latest revision");
    assert_eq!(all.len(), store.len(), "live key count disagrees with a full scan");
    let Some(next) = store.applied().checked_add(1) else { return };
    let mut store = store;
    let key = all.first().map_or(b"k".to_vec(), |kv| kv.key.clone());
    store.apply(next, &Command { request_id: None, op: WriteOp::Delete { key } });
}

/// The CLI's flag parsers. Mode % 3: a duration, `--peers` entries, `--split-keys`
/// (lists split at commas, as clap does).
pub fn cli(data: &[u8]) {
    let Some((mode, rest)) = mode(data) else { return };
    let text = String::from_utf8_lossy(rest);
    let list: Vec<String> = text.split(',').map(str::to_string).collect();
    match mode % 3 {
        0 => {
            if let Ok(duration) = cli_parse::parse_duration(&text) {
                assert!(!duration.is_zero(), "{text:?} parsed as a zero duration");
                assert!(duration.as_secs() < 1_000_000_000, "{text:?}: {duration:?}");
            }
        }
        1 => {
            if let Ok(peers) = cli_parse::parse_peers(&list) {
                assert_eq!(peers.len(), list.len(), "{text:?}: an entry was lost");
                for (id, address) in &peers {
                    assert!(id.0 > 0, "{text:?}: node id 0");
                    assert!(cli_parse::check_address(address).is_ok(), "{text:?}: {address}");
                }
            }
        }
        _ => {
            if let Ok(keys) = cli_parse::parse_split_keys(&list) {
                assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "{text:?}: order");
                let table = crate::range::descriptor::initial_descriptors(&keys, &[NodeId(1)])
                    .expect("accepted split keys describe a keyspace");
                crate::range::descriptor::RangeTable::new(table);
            }
        }
    }
}

/// The last `write_at` a `MemDisk` saw, with the bytes it replaced, so a test can
/// tear it as a crash in the middle of that write would.
#[derive(Clone, Debug)]
pub struct LastWrite {
    pub path: PathBuf,
    pub offset: u64,
    /// The bytes at `[offset, offset + old.len())` before the write (zeros past the
    /// old end of the file); `old.len()` is the length of the write.
    pub old: Vec<u8>,
    /// How many writes the disk has seen, this one included.
    pub number: u64,
}

#[derive(Default)]
struct MemDiskState {
    files: BTreeMap<PathBuf, Vec<u8>>,
    dirs: BTreeSet<PathBuf>,
    last_write: Option<LastWrite>,
    writes: u64,
}

/// An in-memory `Disk` where everything written is durable at once; tests model a
/// crash by editing the bytes of `last_write` afterwards.
#[derive(Clone, Default)]
pub struct MemDisk {
    state: Arc<Mutex<MemDiskState>>,
}

fn lock(state: &Mutex<MemDiskState>) -> MutexGuard<'_, MemDiskState> {
    // A panic while holding the lock leaves plain bytes behind: still usable.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl MemDisk {
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    /// The bytes of a file, if it exists.
    pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
        lock(&self.state).files.get(path).cloned()
    }

    /// Creates or replaces a file (and its directory).
    pub fn set_file(&self, path: &Path, bytes: Vec<u8>) {
        let mut state = lock(&self.state);
        if let Some(parent) = path.parent() {
            state.dirs.insert(parent.to_path_buf());
        }
        state.files.insert(path.to_path_buf(), bytes);
    }

    /// The last `write_at` on any file.
    pub fn last_write(&self) -> Option<LastWrite> {
        lock(&self.state).last_write.clone()
    }
}

struct MemFile {
    state: Arc<Mutex<MemDiskState>>,
    path: PathBuf,
}

impl MemFile {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> io::Result<R> {
        let mut state = lock(&self.state);
        let bytes = state.files.get_mut(&self.path).ok_or_else(|| not_found(&self.path))?;
        Ok(f(bytes))
    }
}

impl DiskFile for MemFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.with(|bytes| {
            let start = (offset as usize).min(bytes.len());
            let count = buf.len().min(bytes.len() - start);
            buf[..count].copy_from_slice(&bytes[start..start + count]);
            count
        })
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let old = self.with(|bytes| {
            let end = offset as usize + data.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            let old = bytes[offset as usize..end].to_vec();
            bytes[offset as usize..end].copy_from_slice(data);
            old
        })?;
        let path = self.path.clone();
        let mut state = lock(&self.state);
        state.writes += 1;
        let number = state.writes;
        state.last_write = Some(LastWrite { path, offset, old, number });
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|bytes| bytes.len() as u64)
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        self.with(|bytes| {
            if (bytes.len() as u64) < len {
                bytes.resize(len as usize, 0);
            }
        })
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with(|bytes| bytes.resize(len as usize, 0))
    }
}

struct MemLock;

impl DirLock for MemLock {}

impl Disk for MemDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        lock(&self.state).dirs.insert(path.to_path_buf());
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>> {
        let mut state = lock(&self.state);
        if !state.files.contains_key(path) {
            if !create {
                return Err(not_found(path));
            }
            state.files.insert(path.to_path_buf(), Vec::new());
        }
        Ok(Box::new(MemFile { state: self.state.clone(), path: path.to_path_buf() }))
    }

    fn exists(&self, path: &Path) -> bool {
        let state = lock(&self.state);
        state.files.contains_key(path) || state.dirs.contains(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = lock(&self.state);
        let names = state.files.keys().filter(|path| path.parent() == Some(dir));
        Ok(names.filter_map(|path| Some(path.file_name()?.to_str()?.to_string())).collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        let bytes = state.files.remove(from).ok_or_else(|| not_found(from))?;
        state.files.insert(to.to_path_buf(), bytes);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        lock(&self.state).files.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn lock_dir(&self, _dir: &Path) -> io::Result<Box<dyn DirLock>> {
        Ok(Box::new(MemLock))
    }
}
