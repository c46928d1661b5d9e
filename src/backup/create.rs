//! `rangedb admin backup create DIR`: a consistent copy of every range.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::backup::files::{encode_hex, encode_image, image_file_name, sync_dir, write_durably};
use crate::backup::{BackupError, Manifest, RangeEntry};
use crate::client::Client;
use crate::env::{Clock, RealClock};
use crate::range::descriptor::RangeDescriptor;
use crate::wire::Captured;

/// How a backup is taken.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// The longest a range may stay frozen: a leader lifts a freeze older than this
    /// (its backup died), and the backup then fails rather than be inconsistent.
    pub hold: Duration,
}

impl Default for CreateOptions {
    fn default() -> CreateOptions {
        CreateOptions { hold: Duration::from_secs(10) }
    }
}

/// What a backup is doing, for a progress line.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Every range is frozen (`count`), captured and unfrozen; writes were held for
    /// `pause`.
    Captured { ranges: usize, pause: Duration },
    /// Bytes of range `index` (of `ranges`) written so far.
    Writing { index: usize, ranges: usize, range: u64, bytes: u64 },
}

/// What a finished backup holds.
#[derive(Clone, Debug)]
pub struct Summary {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Writes were held this long (first freeze sent to last unfreeze answered).
    pub pause: Duration,
    /// The whole backup, start to manifest.
    pub duration: Duration,
}

impl Summary {
    pub fn keys(&self) -> u64 {
        self.manifest.ranges.iter().map(|range| range.keys).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.manifest.ranges.iter().map(|range| range.bytes).sum()
    }
}

/// Takes a backup of the cluster `client` talks to into `dir` (created; it must not
/// exist or be empty).
///
/// # Errors
/// `Refused` for a directory in use; `Expired` when a freeze lapsed before every
/// range was captured; `Client` when a range could not be frozen, captured or
/// fetched; `Io` when a file could not be written. Every range frozen is unfrozen
/// whatever happens after its freeze.
pub async fn create(
    client: &Client,
    dir: &Path,
    options: &CreateOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Summary, BackupError> {
    let started = Instant::now();
    prepare_dir(dir)?;
    let cluster = cluster_id(client).await;
    let created_ms = RealClock.wall_ms();
    let Cut { backup, ranges, captured, pause } = hold_and_capture(client, options.hold).await?;
    progress(&Progress::Captured { ranges: ranges.len(), pause });
    let pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
    let mut manifest = Manifest::new(backup, cluster, created_ms, pause_ms);
    for (index, (descriptor, capture)) in ranges.iter().zip(&captured).enumerate() {
        let count = ranges.len();
        let range = descriptor.id.0;
        let report = |bytes| Progress::Writing { index, ranges: count, range, bytes };
        let image = client
            .backup_fetch(&capture.address, backup, descriptor.id, |bytes| progress(&report(bytes)))
            .await?;
        let file = encode_image(range, &image);
        let name = image_file_name(range);
        write_durably(dir, &name, &file)?;
        manifest.ranges.push(RangeEntry {
            id: range,
            start: encode_hex(&descriptor.start),
            end: descriptor.end.as_deref().map(encode_hex),
            file: name,
            bytes: file.len() as u64,
            crc32: crc32fast::hash(&file),
            freeze_index: capture.freeze.index,
            applied: capture.applied,
            keys: capture.keys,
        });
    }
    manifest.write(dir)?;
    Ok(Summary { dir: dir.to_path_buf(), manifest, pause, duration: started.elapsed() })
}

/// Every range captured at one cut (not fetched yet).
pub struct Cut {
    /// The backup's id (its freezes').
    pub backup: u64,
    pub ranges: Vec<RangeDescriptor>,
    /// One per range, in the same order.
    pub captured: Vec<Captured>,
    /// How long writes were held.
    pub pause: Duration,
}

/// Freezes every range, captures each, unfreezes every range (steps 1 to 3 of
/// docs/DESIGN.md 7.10); the images wait on the nodes for `Client::backup_fetch`.
///
/// # Errors
/// As `create`.
pub async fn hold_and_capture(client: &Client, hold: Duration) -> Result<Cut, BackupError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let ranges = client.ranges_now().await?;
        let backup = client.client_id();
        let held = Instant::now();
        let captured = freeze_and_capture(client, &ranges, backup, hold).await;
        // Once every range is frozen no range splits (a split is a write, and so is
        // its plan in the meta range): the ranges now must be the ones frozen, each
        // captured under its own id, or a split came in between.
        let unchanged = match &captured {
            Ok(captured) => {
                let same_ids = captured.iter().zip(&ranges).all(|(c, d)| c.range == d.id);
                same_ids && client.ranges_now().await.is_ok_and(|now| now == ranges)
            }
            Err(_) => true,
        };
        let unfrozen = unfreeze_all(client, &ranges, backup).await;
        let pause = held.elapsed();
        let captured = captured?;
        unfrozen?;
        if unchanged {
            return Ok(Cut { backup, ranges, captured, pause });
        }
        #[cfg(madsim)]
        crate::env::sim_hooks::sometimes("backup taken again after a split");
        if attempt >= SPLIT_RETRIES {
            return Err(BackupError::Refused(
                "ranges kept splitting while the backup froze them; run it again".into(),
            ));
        }
    }
}

/// Times a backup is taken again when a range split between listing the ranges and
/// freezing them.
const SPLIT_RETRIES: usize = 3;

/// Creates `dir`, or accepts an empty one.
fn prepare_dir(dir: &Path) -> Result<(), BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                let reason =
                    format!("{} is not empty: back up into a new directory", dir.display());
                return Err(BackupError::Refused(reason));
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(BackupError::io(dir))?;
            if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        Err(source) => return Err(BackupError::Io { path: dir.to_path_buf(), source }),
    }
    Ok(())
}

/// The cluster's id, from the first node that gives its status (0 if none does).
async fn cluster_id(client: &Client) -> u64 {
    let status = client.status().await;
    status.nodes.iter().find_map(|node| node.status.as_ref().ok().map(|s| s.cluster)).unwrap_or(0)
}

/// Freezes every range, then (once all are frozen) captures each, in range order.
async fn freeze_and_capture(
    client: &Client,
    ranges: &[RangeDescriptor],
    backup: u64,
    hold: Duration,
) -> Result<Vec<Captured>, BackupError> {
    // In parallel: each range's step is a task (madsim's tokio has no JoinSet).
    let freezes: Vec<_> = ranges
        .iter()
        .map(|descriptor| {
            let (client, start) = (client.clone(), descriptor.start.clone());
            tokio::spawn(async move { client.backup_freeze(&start, backup, hold).await })
        })
        .collect();
    let mut outcome = Ok(());
    for freeze in freezes {
        if let Err(error) = freeze.await.map_err(task_failed)? {
            outcome = outcome.and(Err(BackupError::Client(error)));
        }
    }
    outcome?;
    // Every range is held from here until its unfreeze.
    let captures: Vec<_> = ranges
        .iter()
        .map(|descriptor| {
            let (client, start) = (client.clone(), descriptor.start.clone());
            tokio::spawn(async move { client.backup_capture(&start, backup).await })
        })
        .collect();
    let mut captured = Vec::with_capacity(ranges.len());
    for capture in captures {
        captured.push(capture.await.map_err(task_failed)??);
    }
    Ok(captured)
}

/// Unfreezes every range; fails when one's freeze had lapsed (or could not be
/// lifted: its leader lifts it at the deadline).
async fn unfreeze_all(
    client: &Client,
    ranges: &[RangeDescriptor],
    backup: u64,
) -> Result<(), BackupError> {
    let unfreezes: Vec<_> = ranges
        .iter()
        .map(|descriptor| {
            let (client, start, range) = (client.clone(), descriptor.start.clone(), descriptor.id);
            tokio::spawn(async move { (range, client.backup_unfreeze(&start, backup).await) })
        })
        .collect();
    let mut outcome = Ok(());
    for unfreeze in unfreezes {
        let (range, result) = unfreeze.await.map_err(task_failed)?;
        match result {
            Ok(true) => {}
            Ok(false) => outcome = outcome.and(Err(BackupError::Expired { range })),
            Err(error) => outcome = outcome.and(Err(BackupError::Client(error))),
        }
    }
    outcome
}

fn task_failed(error: tokio::task::JoinError) -> BackupError {
    BackupError::Refused(format!("a backup task failed: {error}"))
}
