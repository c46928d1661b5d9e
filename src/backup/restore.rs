//! `rangedb admin backup restore DIR --data-dir D`: checks a backup and stages it in
//! an empty data directory; `rangedb server` on that directory then founds a new
//! cluster (a new cluster id, its own `--peers`) whose ranges start from the images
//! (`seed` below, called by the node's boot before it recovers its replicas).
//!
//! Every founder must be staged from the same backup: the backup's id is part of
//! the founding digest, so a founder staged from another backup, or from none, is
//! refused as one started with other flags is. The images become each range's
//! snapshot at their applied index, term 0: the new cluster's first leader appends
//! after them. The meta range's descriptors are replaced by the new cluster's (its
//! nodes), the backup's freeze is lifted, and the transactions the backup caught
//! undecided are settled by the new cluster's janitor as after any crash.

use std::path::{Path, PathBuf};

use crate::backup::files::{decode_hex, read_image, sync_dir, MANIFEST};
use crate::backup::{BackupError, Manifest, RangeEntry};
use crate::raft::{ConfState, NodeId, Snapshot, SnapshotMeta};
use crate::range::descriptor::{RangeDescriptor, RangeId};
use crate::range::kv::KvStore;
use crate::storage::SnapshotStore;

/// Where a staged backup waits in a data directory until the node founds its cluster.
pub const RESTORE_DIR: &str = "restore";

/// A backup whose every file was checked, with its ranges' state machines.
pub struct Verified {
    pub manifest: Manifest,
    pub ranges: Vec<(RangeEntry, KvStore)>,
}

/// Checks every file of the backup in `dir` and decodes every range.
///
/// # Errors
/// `Damaged` naming the first file that is missing, damaged, of another version, or
/// disagrees with the manifest.
pub fn verify(dir: &Path) -> Result<Verified, BackupError> {
    let manifest = Manifest::read(dir)?;
    let backup = manifest.backup_id();
    let mut ranges = Vec::with_capacity(manifest.ranges.len());
    for entry in &manifest.ranges {
        let path = dir.join(&entry.file);
        let image = read_image(dir, entry)?;
        let kv = KvStore::restore(&image)
            .map_err(|error| BackupError::damaged(&path, error.to_string()))?;
        let frozen =
            kv.freeze().is_some_and(|f| f.backup == backup && f.index == entry.freeze_index);
        // The state at the freeze holds no write after it: one that does was
        // captured while the range took writes, and is no point of a consistent cut.
        if !frozen || kv.applied() != entry.applied || kv.newest_write() > entry.freeze_index {
            let reason = format!(
                "the image is not range {}'s state at backup {}'s freeze (index {})",
                entry.id, manifest.backup, entry.freeze_index
            );
            return Err(BackupError::damaged(&path, reason));
        }
        ranges.push((entry.clone(), kv));
    }
    Ok(Verified { manifest, ranges })
}

/// What `stage` did.
pub struct Staged {
    pub manifest: Manifest,
    pub dir: PathBuf,
}

/// Checks the backup in `backup_dir` and copies it into `data_dir/restore/`, for a
/// `rangedb server` on `data_dir` to found a new cluster from.
///
/// # Errors
/// As `verify`; `Refused` when `data_dir` already holds a node's data or a staged
/// backup; `Io` when copying failed.
pub fn stage(backup_dir: &Path, data_dir: &Path) -> Result<Staged, BackupError> {
    let verified = verify(backup_dir)?;
    for used in ["CLUSTER", "wal", "snap", RESTORE_DIR] {
        let path = data_dir.join(used);
        let in_use = match std::fs::read_dir(&path) {
            Ok(mut entries) => entries.next().is_some(),
            Err(_) => path.exists(),
        };
        if in_use {
            let reason = format!(
                "{} is in use ({} exists): restore into an empty data directory",
                data_dir.display(),
                path.display()
            );
            return Err(BackupError::Refused(reason));
        }
    }
    std::fs::create_dir_all(data_dir).map_err(BackupError::io(data_dir))?;
    let staging = data_dir.join(format!("{RESTORE_DIR}.tmp"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(BackupError::io(&staging))?;
    }
    std::fs::create_dir(&staging).map_err(BackupError::io(&staging))?;
    let files = verified.manifest.ranges.iter().map(|entry| entry.file.as_str());
    for name in files.chain([MANIFEST]) {
        let (from, to) = (backup_dir.join(name), staging.join(name));
        std::fs::copy(&from, &to).map_err(BackupError::io(&from))?;
        let copy = std::fs::File::open(&to).map_err(BackupError::io(&to))?;
        copy.sync_all().map_err(BackupError::io(&to))?;
    }
    sync_dir(&staging)?;
    let staged = data_dir.join(RESTORE_DIR);
    std::fs::rename(&staging, &staged).map_err(BackupError::io(&staged))?;
    sync_dir(data_dir)?;
    Ok(Staged { manifest: verified.manifest, dir: staged })
}

/// The backup staged in `data_dir`, checked, if there is one.
///
/// # Errors
/// As `verify`.
pub fn pending(data_dir: &Path) -> Result<Option<Verified>, BackupError> {
    let dir = data_dir.join(RESTORE_DIR);
    if !dir.exists() {
        return Ok(None);
    }
    verify(&dir).map(Some)
}

/// Makes each range's image its first snapshot (index = its applied index, term 0,
/// the founders its voters), then removes the staged backup. Run again if a crash
/// falls in between: the same snapshots are written again.
///
/// # Errors
/// `Refused` when the cluster's ranges are not the backup's; `Io` or a storage error
/// when writing.
pub fn seed(
    data_dir: &Path,
    verified: Verified,
    descriptors: &[RangeDescriptor],
    meta_items: Vec<(Vec<u8>, Vec<u8>)>,
    founders: &[NodeId],
    snapshots: &mut SnapshotStore,
) -> Result<(), BackupError> {
    let mut ranges = verified.ranges;
    let split = ranges.iter().enumerate().any(|(k, (entry, _))| entry.id != k as u64 + 1);
    if split {
        return Err(BackupError::Refused(
            "this backup was taken after ranges split (its range ids are not 1.. in key \
             order): restoring such a backup is not supported yet"
                .into(),
        ));
    }
    if ranges.len() != descriptors.len() {
        return Err(mismatch(descriptors.len(), ranges.len()));
    }
    for ((entry, kv), descriptor) in ranges.iter_mut().zip(descriptors) {
        let same_span = decode_hex(&entry.start).as_deref() == Some(descriptor.start.as_slice())
            && entry.end.as_deref().map(decode_hex) == descriptor.end.clone().map(Some);
        if entry.id != descriptor.id.0 || !same_span {
            return Err(mismatch(descriptors.len(), verified.manifest.ranges.len()));
        }
        let is_meta = descriptor.contains(crate::range::descriptor::RESERVED_PREFIX);
        kv.rebootstrap(if is_meta { meta_items.clone() } else { Vec::new() });
        let conf_state = ConfState { voters: founders.to_vec(), learners: vec![] };
        let meta = SnapshotMeta { index: kv.applied(), term: 0, conf_state };
        let snapshot = Snapshot { meta, data: kv.snapshot() };
        snapshots.save(RangeId(entry.id), &snapshot).map_err(|error| {
            BackupError::Refused(format!("cannot save range {}: {error}", entry.id))
        })?;
    }
    let staged = data_dir.join(RESTORE_DIR);
    std::fs::remove_dir_all(&staged).map_err(BackupError::io(&staged))?;
    sync_dir(data_dir)
}

fn mismatch(cluster: usize, backup: usize) -> BackupError {
    BackupError::Refused(format!(
        "the new cluster's {cluster} ranges are not the backup's {backup} (start every founder \
         without --split-keys: the backup's ranges are used)"
    ))
}
