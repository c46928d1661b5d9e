//! The node's side of a backup (src/backup/ drives it): freezing and unfreezing a
//! range through Raft, capturing a frozen range's state in memory, handing the
//! captured image out in chunks, and lifting freezes whose backup went away.
//!
//! ```text
//!  Backup{Freeze}   ─► propose WriteOp::Freeze (deadline = now + hold) ─► BackupFrozen
//!  Backup{Capture}  ─► kv frozen for this backup? clone it (the loop), encode it
//!                      (a thread) into the stash ─► BackupCaptured
//!  Backup{Unfreeze} ─► propose WriteOp::Unfreeze ─► BackupUnfrozen{held}
//!  BackupFetch      ─► a chunk of the stashed image; the last one empties the slot
//!  tick             ─► a leader past a freeze's deadline proposes its Unfreeze
//! ```
//!
//! A replica whose applied state is frozen for backup N holds exactly the state at
//! the freeze's index, leader or not, current or stale: nothing but no-ops and
//! refused writes applied since. So a capture needs no read index; it needs the
//! freeze.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::node::event_loop::Node;
use crate::node::members;
use crate::node::replica::{frozen, ReplyTo};
use crate::raft::Role;
use crate::range::descriptor::RangeId;
use crate::range::kv::{Command, KvStore, WriteOp};
use crate::wire::{BackupOp, Captured, Response};

/// Bytes of an image per `BackupChunk` (well below the frame limit).
pub const BACKUP_CHUNK_BYTES: usize = 4 << 20;
/// A captured image nobody fetched is dropped after this long.
const STASH_KEEP_MS: u64 = 10 * 60 * 1000;
/// A leader retries proposing the unfreeze of an expired freeze this often.
const EXPIRY_RETRY_MS: u64 = 1000;

/// An image being encoded (None) or ready.
type Slot = Arc<Mutex<Option<Arc<Vec<u8>>>>>;

/// The images captured on this node, by backup and range.
#[derive(Default)]
pub struct BackupStash {
    images: BTreeMap<(u64, RangeId), (Slot, u64)>,
    /// When this node last proposed the unfreeze of an expired freeze, per range.
    expiries: BTreeMap<RangeId, u64>,
}

impl BackupStash {
    /// Encodes `kv` in the background into the slot of (`backup`, `range`).
    fn capture(&mut self, backup: u64, range: RangeId, kv: KvStore, now_ms: u64) {
        let slot: Slot = Arc::new(Mutex::new(None));
        self.images.insert((backup, range), (Arc::clone(&slot), now_ms));
        let encode = move || {
            let image = kv.snapshot();
            drop(kv);
            *slot.lock().expect("never poisoned") = Some(Arc::new(image));
        };
        #[cfg(madsim)]
        encode();
        #[cfg(not(madsim))]
        {
            crate::node::snapshotter::off_the_loop("rangedb-backup", encode);
        }
    }

    /// The chunk of (`backup`, `range`)'s image at `offset`.
    fn fetch(&mut self, backup: u64, range: RangeId, offset: u64) -> Response {
        let Some((slot, _)) = self.images.get(&(backup, range)) else {
            let reason = format!("no image of {range} captured for backup {backup:016x} here");
            return Response::Invalid { reason };
        };
        let Some(image) = slot.lock().expect("never poisoned").clone() else {
            return Response::Unavailable { reason: format!("{range}: still encoding; retry") };
        };
        let total = image.len() as u64;
        let start = usize::try_from(offset.min(total)).unwrap_or(image.len());
        let end = (start + BACKUP_CHUNK_BYTES).min(image.len());
        if end == image.len() {
            self.images.remove(&(backup, range));
        }
        Response::BackupChunk { total, data: image[start..end].to_vec() }
    }
}

impl Node {
    /// A backup's step in the range of `key`.
    pub(crate) fn backup_step(&mut self, key: &[u8], op: BackupOp, reply: ReplyTo) {
        let range = match self.route(key) {
            Ok(range) => range,
            Err(response) => return reply.send(*response),
        };
        let command = match op {
            BackupOp::Freeze { backup, hold_ms } => {
                let deadline_ms = self.ticker.wall_ms().saturating_add(hold_ms);
                WriteOp::Freeze { backup, deadline_ms }
            }
            BackupOp::Unfreeze { backup } => WriteOp::Unfreeze { backup },
            BackupOp::Capture { backup } => return self.backup_capture(range, backup, reply),
        };
        self.propose(range, Command { request_id: None, op: command }, reply);
    }

    fn backup_capture(&mut self, range: RangeId, backup: u64, reply: ReplyTo) {
        let not_leader = self.not_leader(range);
        let address = members::read(&self.members).addresses.get(&self.id).cloned();
        let replica = self.replicas.get(&range).expect("every range in the table has a replica");
        let freeze = replica.kv.freeze().filter(|freeze| freeze.backup == backup);
        let Some(freeze) = freeze else {
            if replica.raft.role() != Role::Leader {
                return reply.send(not_leader(replica.raft.leader()));
            }
            let reason = format!(
                "{range} is not held for backup {backup:016x} (its freeze expired, or is not \
                 applied here yet)"
            );
            return reply.send(Response::Unavailable { reason });
        };
        let captured = Captured {
            range,
            freeze,
            applied: replica.kv.applied(),
            keys: replica.kv.len() as u64,
            address: address.unwrap_or_default(),
        };
        let kv = replica.kv.clone();
        self.backups.capture(backup, range, kv, self.ticker.wall_ms());
        #[cfg(madsim)]
        crate::env::sim_hooks::sometimes("range captured for a backup");
        reply.send(Response::BackupCaptured(captured));
    }

    /// `BackupFetch`.
    pub(crate) fn backup_fetch(&mut self, backup: u64, range: RangeId, offset: u64) -> Response {
        self.backups.fetch(backup, range, offset)
    }

    /// Whether a write to `range` must be refused now because a backup holds it (the
    /// leader answers at once; the state machine refuses one proposed before the
    /// freeze applied).
    pub(crate) fn refused_by_freeze(&self, range: RangeId, op: &WriteOp) -> Option<Response> {
        if matches!(op, WriteOp::Freeze { .. } | WriteOp::Unfreeze { .. }) {
            return None;
        }
        let replica = self.replicas.get(&range)?;
        let freeze = replica.kv.freeze()?;
        (replica.raft.role() == Role::Leader).then(|| frozen(range, freeze))
    }

    /// Once a tick: drops images nobody fetched, and has each range this node leads
    /// lift a freeze whose deadline passed (its backup died or stalled), so that no
    /// range stays frozen for good.
    pub(crate) fn expire_backups(&mut self) {
        let now_ms = self.ticker.wall_ms();
        let stash = &mut self.backups;
        stash
            .images
            .retain(|_, (_, created_ms)| now_ms.saturating_sub(*created_ms) < STASH_KEEP_MS);
        // Only the ranges that held a freeze when last applied (`Node::frozen`).
        let frozen: Vec<RangeId> = self.frozen.iter().copied().collect();
        for range in frozen {
            let Some(replica) = self.replicas.get(&range) else {
                stash.expiries.remove(&range);
                self.frozen.remove(&range);
                continue;
            };
            let Some(freeze) = replica.kv.freeze() else {
                stash.expiries.remove(&range);
                self.frozen.remove(&range);
                continue;
            };
            if now_ms <= freeze.deadline_ms || replica.raft.role() != Role::Leader {
                continue;
            }
            let range = &range;
            let last = stash.expiries.get(range).copied().unwrap_or(0);
            if now_ms.saturating_sub(last) < EXPIRY_RETRY_MS {
                continue;
            }
            stash.expiries.insert(*range, now_ms);
            let command =
                Command { request_id: None, op: WriteOp::Unfreeze { backup: freeze.backup } };
            let Ok(data) = bincode::serde::encode_to_vec(&command, bincode::config::standard())
            else {
                continue;
            };
            // Nobody waits for the answer; the freeze shows whether it applied.
            if let Some(replica) = self.replicas.get_mut(range) {
                let _ = replica.raft.propose(command.op.format(), data);
            }
            #[cfg(madsim)]
            crate::env::sim_hooks::sometimes("expired backup freeze lifted by its leader");
            tracing::warn!(
                node = self.id.0,
                range = range.0,
                "{} {range}: backup {:016x} held the range past its deadline; unfreezing",
                self.id,
                freeze.backup
            );
        }
    }
}
