//! Snapshots written off the event loop.
//!
//! Encoding a range's state and writing it (a temporary file, its fsync, a rename, a
//! directory fsync) took 10 to 50 ms for a few MB: in the event loop that stalled
//! every range on the node, so every request in flight waited (the p99 of two-range
//! transactions and the p99.9 of puts were these stalls). The event loop now only
//! copies the state machine (`KvStore::clone`) and hands the copy to a background
//! writer; when the file is durable, the loop compacts the range's log to it and
//! releases the WAL segments no range needs (`Node::collect_snapshots`). Until then
//! nothing relies on the new file: the older snapshot and the log still cover
//! everything, so a crash in between loses nothing.
//!
//! One snapshot per range is written at a time. A received snapshot is saved at once
//! by the loop (its WAL marker follows it), under the same lock as the writer's
//! saves, so two saves never race on the directory; a local snapshot that finishes
//! after a newer one was installed is ignored (and its file removed by the next save:
//! `SnapshotStore::load` takes the newest anyway).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::raft::{Discarded, NodeId, Snapshot, SnapshotMeta};
use crate::range::descriptor::RangeId;
use crate::range::kv::KvStore;
use crate::storage::{SnapshotStore, StorageError};

type Finished = Vec<(RangeId, Result<Snapshot, StorageError>)>;

pub struct Snapshotter {
    store: Arc<Mutex<SnapshotStore>>,
    /// Ranges with a snapshot being written.
    writing: BTreeSet<RangeId>,
    /// Snapshots written (or failed) since the loop last looked.
    done: Arc<Mutex<Finished>>,
    /// Whose snapshots these are (the simulation's write latency is per node).
    #[cfg_attr(not(madsim), allow(dead_code))]
    node: NodeId,
}

impl Snapshotter {
    pub fn new(node: NodeId, store: SnapshotStore) -> Snapshotter {
        Snapshotter {
            store: Arc::new(Mutex::new(store)),
            writing: BTreeSet::new(),
            done: Arc::new(Mutex::new(Vec::new())),
            node,
        }
    }

    /// Saves a snapshot now, in the caller (a received one: its WAL marker must not
    /// be durable before the file is).
    ///
    /// # Errors
    /// As `SnapshotStore::save`.
    pub fn save_now(&self, range: RangeId, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.store.lock().expect("never poisoned").save(range, snapshot)
    }

    /// Whether a snapshot of `range` is being written.
    pub fn writing(&self, range: RangeId) -> bool {
        self.writing.contains(&range)
    }

    /// Starts writing a snapshot of `kv` (the loop's copy of the range's state at
    /// `meta.index`) in the background.
    pub fn start(&mut self, range: RangeId, meta: SnapshotMeta, kv: KvStore) {
        self.writing.insert(range);
        let store = Arc::clone(&self.store);
        let done = Arc::clone(&self.done);
        let write = move || {
            let snapshot = Snapshot { meta, data: kv.snapshot() };
            drop(kv);
            let result =
                store.lock().expect("never poisoned").save(range, &snapshot).map(|()| snapshot);
            done.lock().expect("never poisoned").push((range, result));
        };
        #[cfg(madsim)]
        {
            // The write takes time, as a real one of a few MB does, and one in eight
            // is slow (up to a second: a large state, a busy disk): the loop goes on
            // meanwhile (applying, installing a newer snapshot, crashing).
            let mut latency = crate::env::sim_hooks::fsync_latency(self.node) * 4;
            let draw = madsim::rand::random::<u64>();
            if draw % 8 == 0 {
                latency += std::time::Duration::from_millis((draw >> 8) % 1000);
            }
            tokio::spawn(async move {
                tokio::time::sleep(latency).await;
                write();
            });
        }
        // A thread per snapshot (seconds apart): no runtime needed, none blocked.
        #[cfg(not(madsim))]
        {
            off_the_loop("rangedb-snapshot", write);
        }
    }

    /// Frees what a compaction dropped (`raft::Discarded`: the log's entries up to
    /// the snapshot, the older snapshot image) off the event loop: freeing thousands
    /// of entries took the loop 2-4 ms per snapshot.
    pub fn discard(&self, discarded: Discarded) {
        if discarded.entries.is_empty() && discarded.snapshot.is_none() {
            return;
        }
        #[cfg(madsim)]
        drop(discarded); // Freeing memory changes nothing the simulation sees.
        #[cfg(not(madsim))]
        {
            let slot = Arc::new(Mutex::new(Some(discarded)));
            let in_thread = Arc::clone(&slot);
            let spawned =
                std::thread::Builder::new().name("rangedb-free".into()).spawn(move || {
                    drop(in_thread.lock().expect("never poisoned").take());
                });
            if spawned.is_err() {
                drop(slot.lock().expect("never poisoned").take());
            }
        }
    }

    /// The snapshots whose writes ended since the last call.
    pub fn finished(&mut self) -> Finished {
        let done = std::mem::take(&mut *self.done.lock().expect("never poisoned"));
        for (range, _) in &done {
            self.writing.remove(range);
        }
        done
    }
}

/// Runs `work` on a thread of its own (named `name`), so the event loop does not wait
/// for it; should no thread start, in the caller, as before there were threads.
#[cfg(not(madsim))]
pub(crate) fn off_the_loop(name: &str, work: impl FnOnce() + Send + 'static) {
    let slot = Arc::new(Mutex::new(Some(work)));
    let in_thread = Arc::clone(&slot);
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        if let Some(work) = in_thread.lock().expect("never poisoned").take() {
            work();
        }
    });
    if spawned.is_err() {
        if let Some(work) = slot.lock().expect("never poisoned").take() {
            work();
        }
    }
}
