//! SimDisk: the simulation's `Disk`, in memory, with the crash semantics of a real
//! disk and page cache (after FoundationDB's simulated files).
//!
//! ```text
//!  write_at ─► cache pages (what reads see) + "dirty" ─ sync ok ─► durable
//!                                          └─ sync EIO ─► clean but NOT durable
//!  crash(): each page that differs from its durable copy is kept, dropped or torn
//!           (dirty pages; seeded), or dropped (pages whose fsync failed);
//!           each name created, renamed or removed since its directory's last
//!           sync_dir keeps its new or its old meaning (seeded)
//! ```
//!
//! The state lives behind an `Arc` that the harness keeps, so it survives the madsim
//! kill and restart of the node that uses it. File handles carry the epoch they were
//! opened in; after a crash the old incarnation's handles fail with EIO.
//!
//! A failed fsync models Linux ("fsyncgate"): the dirty pages are marked clean, reads
//! still see the new bytes, a later fsync returns Ok without making them durable, and
//! a crash loses them. So retrying fsync is not safe, as on a real kernel.
//!
//! Rot: `rot` flips one bit of synced data in a file (bit rot, a misdirected write);
//! the node must catch it by checksum and repair from its peers.
//!
//! Not modelled: directories (created durably at once), free space.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{DirLock, Disk, DiskFile};
use crate::hash::splitmix64_next;

/// The unit a crash keeps, drops or tears.
pub const PAGE: u64 = 4096;
/// A torn page is a mix of old and new sectors.
const SECTOR: usize = 512;

type Page = Box<[u8; PAGE as usize]>;

/// One file's contents, independent of its names.
#[derive(Default)]
struct Inode {
    /// What reads see: sparse pages (absent = zeros) and the length.
    pages: BTreeMap<u64, Page>,
    len: u64,
    /// The durable content of every page whose cached content may differ from it
    /// (None: the page was absent, i.e. zeros). Invariant: `dirty` ⊆ keys.
    durable: BTreeMap<u64, Option<Page>>,
    durable_len: u64,
    /// Pages written since the last fsync (a failed fsync clears this, not `durable`).
    dirty: BTreeSet<u64>,
}

/// What a crash did, for the fault log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    pub pages_kept: u64,
    pub pages_dropped: u64,
    pub pages_torn: u64,
    /// Pages lost because their fsync had failed.
    pub pages_lost_eio: u64,
    /// Names whose unsynced creation, rename or removal was undone.
    pub names_reverted: u64,
}

/// Fault knobs, set by the harness.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskFaults {
    /// Probability that one fsync fails with EIO.
    pub fsync_eio: f64,
}

struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// name -> inode as the running node sees it.
    names: BTreeMap<PathBuf, u64>,
    /// name -> inode as of each directory's last sync_dir.
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Incremented by every crash; handles from older epochs fail.
    epoch: u64,
    rng: u64,
    faults: DiskFaults,
    fsync_failures: u64,
}

/// An in-memory disk; clones share the same state.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    /// A fresh, empty disk whose crash and fault choices follow `seed`.
    pub fn new(seed: u64) -> SimDisk {
        let state = State {
            inodes: BTreeMap::new(),
            next_inode: 1,
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            dirs: BTreeSet::from([PathBuf::from("/")]),
            epoch: 0,
            rng: seed ^ 0x5eed_d15c,
            faults: DiskFaults::default(),
            fsync_failures: 0,
        };
        SimDisk { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it is a bug in this file; keep going for the report.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_faults(&self, faults: DiskFaults) {
        self.lock().faults = faults;
    }

    /// fsyncs that failed so far.
    pub fn fsync_failures(&self) -> u64 {
        self.lock().fsync_failures
    }

    /// The disk is replaced by an empty one (an operator wiped the data directory, or
    /// swapped the drive): every file and directory is gone, and handles opened before
    /// now stop working.
    pub fn wipe(&self) {
        let mut state = self.lock();
        state.inodes.clear();
        state.names.clear();
        state.durable_names.clear();
        state.dirs = BTreeSet::from([PathBuf::from("/")]);
        state.epoch += 1;
    }

    /// The power fails: everything not durable is resolved as the module doc says,
    /// and handles opened before now stop working.
    pub fn crash(&self) -> CrashReport {
        let mut state = self.lock();
        let state = &mut *state;
        let mut report = CrashReport::default();
        state.epoch += 1;
        for inode in state.inodes.values_mut() {
            for (page, old) in std::mem::take(&mut inode.durable) {
                if !inode.dirty.contains(&page) {
                    report.pages_lost_eio += 1;
                    restore(inode, page, old);
                    continue;
                }
                match splitmix64_next(&mut state.rng) % 3 {
                    0 => report.pages_kept += 1,
                    1 => {
                        report.pages_dropped += 1;
                        restore(inode, page, old);
                    }
                    _ => {
                        report.pages_torn += 1;
                        let new = inode.pages.get(&page).map(|p| **p).unwrap_or([0; PAGE as usize]);
                        let mut mixed = old.map(|p| *p).unwrap_or([0; PAGE as usize]);
                        for sector in 0..PAGE as usize / SECTOR {
                            if splitmix64_next(&mut state.rng) % 2 == 0 {
                                let range = sector * SECTOR..(sector + 1) * SECTOR;
                                mixed[range.clone()].copy_from_slice(&new[range]);
                            }
                        }
                        inode.pages.insert(page, Box::new(mixed));
                    }
                }
            }
            inode.dirty.clear();
            if inode.len != inode.durable_len && splitmix64_next(&mut state.rng) % 2 == 0 {
                inode.len = inode.durable_len;
            }
            let len = inode.len;
            inode.pages.retain(|page, _| page * PAGE < len);
            inode.durable_len = inode.len;
        }
        let changed: BTreeSet<PathBuf> = state
            .names
            .iter()
            .filter(|(name, inode)| state.durable_names.get(*name) != Some(inode))
            .map(|(name, _)| name.clone())
            .chain(
                state.durable_names.keys().filter(|name| !state.names.contains_key(*name)).cloned(),
            )
            .collect();
        for name in changed {
            if splitmix64_next(&mut state.rng) % 2 == 0 {
                report.names_reverted += 1;
                match state.durable_names.get(&name) {
                    Some(inode) => state.names.insert(name, *inode),
                    None => state.names.remove(&name),
                };
            }
        }
        state.durable_names = state.names.clone();
        let live: BTreeSet<u64> = state.names.values().copied().collect();
        state.inodes.retain(|id, _| live.contains(id));
        report
    }

    /// Every file name, as the running node sees them.
    pub fn names(&self) -> Vec<PathBuf> {
        self.lock().names.keys().cloned().collect()
    }

    /// Flips bit `bit % 8` of the byte at `offset` in `path`, if that page's cached
    /// content is durable (synced data). Returns whether it did.
    pub fn flip(&self, path: &Path, offset: u64, bit: u64) -> bool {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(inode) = state.names.get(path).and_then(|id| state.inodes.get_mut(id)) else {
            return false;
        };
        let page = offset / PAGE;
        if offset >= inode.len || inode.durable.contains_key(&page) {
            return false;
        }
        let bytes = inode.pages.entry(page).or_insert_with(|| Box::new([0; PAGE as usize]));
        bytes[(offset % PAGE) as usize] ^= 1 << (bit % 8);
        true
    }

    /// A digest of what reads would see, for tests.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let inode = state.inodes.get(state.names.get(path)?)?;
        let mut bytes = vec![0; inode.len as usize];
        read(inode, 0, &mut bytes);
        Some(bytes)
    }
}

fn restore(inode: &mut Inode, page: u64, old: Option<Page>) {
    match old {
        Some(old) => inode.pages.insert(page, old),
        None => inode.pages.remove(&page),
    };
}

fn read(inode: &Inode, offset: u64, buf: &mut [u8]) -> usize {
    let end = (offset + buf.len() as u64).min(inode.len);
    if offset >= end {
        return 0;
    }
    let mut at = offset;
    while at < end {
        let page = at / PAGE;
        let within = (at % PAGE) as usize;
        let take = ((PAGE as usize - within) as u64).min(end - at) as usize;
        let out = &mut buf[(at - offset) as usize..(at - offset) as usize + take];
        match inode.pages.get(&page) {
            Some(bytes) => out.copy_from_slice(&bytes[within..within + take]),
            None => out.fill(0),
        }
        at += take as u64;
    }
    (end - offset) as usize
}

/// Remembers the durable content of `page` before its first change since then.
fn touch(inode: &mut Inode, page: u64) {
    if !inode.durable.contains_key(&page) {
        let old = inode.pages.get(&page).cloned();
        inode.durable.insert(page, old);
    }
    inode.dirty.insert(page);
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated EIO: {what}"))
}

struct SimFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    epoch: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.epoch != self.epoch || !state.inodes.contains_key(&self.inode) {
            return Err(eio("handle from before a crash"));
        }
        f(&mut state, self.inode)
    }
}

impl DiskFile for SimFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.with(|state, id| Ok(read(&state.inodes[&id], offset, buf)))
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(|state, id| {
            let inode = state.inodes.get_mut(&id).expect("checked in with");
            let mut at = offset;
            let end = offset + data.len() as u64;
            while at < end {
                let page = at / PAGE;
                let within = (at % PAGE) as usize;
                let take = ((PAGE as usize - within) as u64).min(end - at) as usize;
                touch(inode, page);
                let bytes = inode.pages.entry(page).or_insert_with(|| Box::new([0; PAGE as usize]));
                let from = (at - offset) as usize;
                bytes[within..within + take].copy_from_slice(&data[from..from + take]);
                at += take as u64;
            }
            inode.len = inode.len.max(end);
            Ok(())
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.with(|state, id| {
            let draw = (splitmix64_next(&mut state.rng) >> 11) as f64 / ((1u64 << 53) as f64);
            let fail = state.faults.fsync_eio > 0.0 && draw < state.faults.fsync_eio;
            let inode = state.inodes.get_mut(&id).expect("checked in with");
            if fail {
                // The kernel marks the pages clean: they are never retried.
                inode.dirty.clear();
                state.fsync_failures += 1;
                return Err(eio("fsync"));
            }
            for page in std::mem::take(&mut inode.dirty) {
                inode.durable.remove(&page);
            }
            inode.durable_len = inode.len;
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|state, id| Ok(state.inodes[&id].len))
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        self.with(|state, id| {
            let inode = state.inodes.get_mut(&id).expect("checked in with");
            inode.len = inode.len.max(len);
            Ok(())
        })
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with(|state, id| {
            let inode = state.inodes.get_mut(&id).expect("checked in with");
            if len < inode.len {
                // Cut pages keep their durable copy, so a crash can bring them back.
                let first_cut = len.div_ceil(PAGE);
                let cut: Vec<u64> = inode.pages.range(first_cut..).map(|(p, _)| *p).collect();
                for page in cut {
                    touch(inode, page);
                    inode.pages.remove(&page);
                }
                if len % PAGE != 0 {
                    let page = len / PAGE;
                    touch(inode, page);
                    if let Some(bytes) = inode.pages.get_mut(&page) {
                        bytes[(len % PAGE) as usize..].fill(0);
                    }
                }
            }
            inode.len = len;
            Ok(())
        })
    }
}

struct SimLock;

impl DirLock for SimLock {}

impl Disk for SimDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        for ancestor in path.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>> {
        let mut state = self.lock();
        let parent = path.parent().unwrap_or(Path::new("/"));
        if !state.dirs.contains(parent) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        let inode = match state.names.get(path) {
            Some(inode) => *inode,
            None if create => {
                let inode = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(inode, Inode::default());
                state.names.insert(path.to_path_buf(), inode);
                inode
            }
            None => return Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        };
        let file = SimFile { state: Arc::clone(&self.state), inode, epoch: state.epoch };
        Ok(Box::new(file))
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.lock();
        state.names.contains_key(path) || state.dirs.contains(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        if !state.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        let mut names: Vec<String> = state
            .names
            .keys()
            .filter(|name| name.parent() == Some(dir))
            .chain(state.dirs.iter().filter(|d| d.parent() == Some(dir)))
            .filter_map(|name| name.file_name()?.to_str().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let inode = state
            .names
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        state.names.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state
            .names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let state = &mut *state;
        state.durable_names.retain(|name, _| name.parent() != Some(dir));
        for (name, inode) in &state.names {
            if name.parent() == Some(dir) {
                state.durable_names.insert(name.clone(), *inode);
            }
        }
        Ok(())
    }

    fn lock_dir(&self, _dir: &Path) -> io::Result<Box<dyn DirLock>> {
        // One node per disk: the harness never starts two on the same one.
        Ok(Box::new(SimLock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SimDisk, PathBuf) {
        let disk = SimDisk::new(7);
        let dir = PathBuf::from("/d");
        disk.create_dir_all(&dir).unwrap();
        (disk, dir)
    }

    #[test]
    fn sim_disk_synced_data_survives_crash() {
        let (disk, dir) = setup();
        let path = dir.join("f");
        let mut file = disk.open(&path, true).unwrap();
        file.write_at(5000, b"hello").unwrap();
        file.sync().unwrap();
        disk.sync_dir(&dir).unwrap();
        drop(file);
        for _ in 0..5 {
            disk.crash();
            let bytes = disk.file_bytes(&path).unwrap();
            assert_eq!(&bytes[5000..5005], b"hello");
        }
    }

    #[test]
    fn sim_disk_unsynced_pages_kept_dropped_or_torn() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..40 {
            let disk = SimDisk::new(seed);
            let dir = PathBuf::from("/d");
            disk.create_dir_all(&dir).unwrap();
            let path = dir.join("f");
            let mut file = disk.open(&path, true).unwrap();
            file.write_at(0, &[1; PAGE as usize]).unwrap();
            file.sync().unwrap();
            disk.sync_dir(&dir).unwrap();
            file.write_at(0, &[2; PAGE as usize]).unwrap();
            let report = disk.crash();
            let bytes = disk.file_bytes(&path).unwrap();
            let kind = if bytes.iter().all(|b| *b == 2) {
                "kept"
            } else if bytes.iter().all(|b| *b == 1) {
                "dropped"
            } else {
                "torn"
            };
            outcomes.insert(kind);
            assert_eq!(report.pages_kept + report.pages_dropped + report.pages_torn, 1);
            assert!(file.read_at(0, &mut [0; 4]).is_err(), "old handles die with the crash");
        }
        assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    }

    #[test]
    fn sim_disk_unsynced_rename_may_vanish() {
        let mut vanished = 0;
        for seed in 0..20 {
            let disk = SimDisk::new(seed);
            let dir = PathBuf::from("/d");
            disk.create_dir_all(&dir).unwrap();
            let mut file = disk.open(&dir.join("a.tmp"), true).unwrap();
            file.write_at(0, b"x").unwrap();
            file.sync().unwrap();
            disk.rename(&dir.join("a.tmp"), &dir.join("a")).unwrap();
            disk.crash();
            if !disk.exists(&dir.join("a")) {
                vanished += 1;
            }
        }
        assert!(vanished > 0 && vanished < 20, "{vanished}");
    }

    #[test]
    fn sim_disk_failed_fsync_is_not_retried() {
        let (disk, dir) = setup();
        let path = dir.join("f");
        let mut file = disk.open(&path, true).unwrap();
        file.write_at(0, b"old!").unwrap();
        file.sync().unwrap();
        disk.sync_dir(&dir).unwrap();
        file.write_at(0, b"new!").unwrap();
        disk.set_faults(DiskFaults { fsync_eio: 1.0 });
        assert!(file.sync().is_err());
        disk.set_faults(DiskFaults::default());
        assert!(file.sync().is_ok(), "the retry 'succeeds'");
        assert_eq!(&disk.file_bytes(&path).unwrap()[..4], b"new!");
        let report = disk.crash();
        assert_eq!(report.pages_lost_eio, 1);
        assert_eq!(&disk.file_bytes(&path).unwrap()[..4], b"old!");
    }

    #[test]
    fn sim_disk_truncate_and_list() {
        let (disk, dir) = setup();
        let mut file = disk.open(&dir.join("b"), true).unwrap();
        file.write_at(0, &[9; 10000]).unwrap();
        file.set_len(100).unwrap();
        assert_eq!(file.len().unwrap(), 100);
        file.set_len(9000).unwrap();
        let mut buf = [1u8; 10];
        file.read_at(8000, &mut buf).unwrap();
        assert_eq!(buf, [0; 10]);
        disk.open(&dir.join("a"), true).unwrap();
        assert_eq!(disk.list(&dir).unwrap(), vec!["a".to_string(), "b".to_string()]);
    }
}
