//! The client's calls for a backup (src/backup/ orchestrates them): the range table,
//! one backup step per range through its leader, and the captured images' bytes.

use std::time::Duration;

use tokio::time::Instant;

use crate::client::{unexpected, Attempts, Client, ClientError, Kind};
use crate::range::descriptor::{RangeDescriptor, RangeId, DESCRIPTOR_PREFIX};
use crate::range::kv::Freeze;
use crate::wire::{BackupOp, Captured, Request, Response};

impl Client {
    /// Every range's descriptor as the meta range holds it, read linearizably (a
    /// node's own table may lag a split), sorted by start.
    ///
    /// # Errors
    /// As `meta_scan`; `Protocol` for a descriptor this version cannot read.
    pub async fn ranges_now(&self) -> Result<Vec<RangeDescriptor>, ClientError> {
        let end = crate::range::descriptor::RESERVED_END;
        let kvs = self.meta_scan(DESCRIPTOR_PREFIX, end, 0).await?;
        let mut ranges = Vec::with_capacity(kvs.len());
        for kv in kvs.iter().filter(|kv| kv.key.starts_with(DESCRIPTOR_PREFIX)) {
            let decoded = bincode::serde::decode_from_slice::<RangeDescriptor, _>(
                &kv.value,
                bincode::config::standard(),
            );
            match decoded {
                Ok((descriptor, _)) => ranges.push(descriptor),
                Err(error) => {
                    return Err(ClientError::Protocol {
                        reason: format!("undecodable range descriptor: {error}"),
                    })
                }
            }
        }
        ranges.sort_by(|a, b| a.start.cmp(&b.start));
        Ok(ranges)
    }

    /// Every range's descriptor, read from the cluster now.
    ///
    /// # Errors
    /// `Unavailable` when no node answered with a range table.
    pub async fn ranges(&self) -> Result<Vec<RangeDescriptor>, ClientError> {
        let mut attempts = Attempts::new(self.deadline());
        self.refresh_table(&mut attempts, 0).await;
        let ranges = self.routes().ranges().to_vec();
        if ranges.is_empty() {
            return Err(attempts.unavailable());
        }
        Ok(ranges)
    }

    /// Holds the range starting at `start` still for `backup`, for at most `hold`.
    ///
    /// # Errors
    /// As a write; `Unavailable` naming the other backup when one holds the range.
    pub async fn backup_freeze(
        &self,
        start: &[u8],
        backup: u64,
        hold: Duration,
    ) -> Result<Freeze, ClientError> {
        let hold_ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
        let op = BackupOp::Freeze { backup, hold_ms };
        match self.backup_call(start, op, Kind::Write).await? {
            Response::BackupFrozen { freeze } if freeze.backup == backup => Ok(freeze),
            response => Err(unexpected("a backup freeze", &response)),
        }
    }

    /// Captures the frozen range starting at `start` on the node that answers.
    ///
    /// # Errors
    /// `Timeout` when no node holding the freeze answered before the deadline.
    pub async fn backup_capture(&self, start: &[u8], backup: u64) -> Result<Captured, ClientError> {
        match self.backup_call(start, BackupOp::Capture { backup }, Kind::Read).await? {
            Response::BackupCaptured(captured) => Ok(captured),
            response => Err(unexpected("a backup capture", &response)),
        }
    }

    /// Lifts `backup`'s freeze of the range starting at `start`; true when that
    /// freeze was in force until now.
    ///
    /// # Errors
    /// As a write.
    pub async fn backup_unfreeze(&self, start: &[u8], backup: u64) -> Result<bool, ClientError> {
        match self.backup_call(start, BackupOp::Unfreeze { backup }, Kind::Write).await? {
            Response::BackupUnfrozen { held } => Ok(held),
            response => Err(unexpected("a backup unfreeze", &response)),
        }
    }

    async fn backup_call(
        &self,
        start: &[u8],
        op: BackupOp,
        kind: Kind,
    ) -> Result<Response, ClientError> {
        let request = Request::Backup { key: start.to_vec(), op };
        self.execute(start, request, kind, self.deadline()).await
    }

    /// The image of `range` captured for `backup` at `address`, whole; `progress` is
    /// told the bytes received so far after each chunk.
    ///
    /// # Errors
    /// `Invalid` when the node holds no such image (it restarted, or the image was
    /// fetched already); `Timeout` or `Unavailable` when it does not answer.
    pub async fn backup_fetch(
        &self,
        address: &str,
        backup: u64,
        range: RangeId,
        mut progress: impl FnMut(u64),
    ) -> Result<Vec<u8>, ClientError> {
        let mut image = Vec::new();
        let deadline = self.deadline();
        let mut attempts = Attempts::new(deadline);
        loop {
            let Some(budget) = attempts.budget(self.inner.config.attempt_timeout) else {
                return Err(attempts.deadline_error(Kind::Read));
            };
            let offset = image.len() as u64;
            let request = Request::BackupFetch { backup, range, offset };
            match self.call(address, request, budget).await {
                Ok(Response::BackupChunk { total, data }) => {
                    // Each chunk renews the deadline: an image is as large as it is.
                    attempts = Attempts::new(Instant::now() + self.inner.config.request_timeout);
                    image.extend_from_slice(&data);
                    progress(image.len() as u64);
                    if image.len() as u64 >= total {
                        return Ok(image);
                    }
                    if data.is_empty() {
                        let reason = format!("{address} sent an empty chunk of {range}");
                        return Err(ClientError::Protocol { reason });
                    }
                }
                Ok(Response::Unavailable { reason }) => {
                    attempts.answered = true;
                    attempts.last_error = reason;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Response::Invalid { reason }) => return Err(ClientError::Invalid { reason }),
                Ok(response) => return Err(unexpected("a backup image", &response)),
                Err(error) => {
                    attempts.note_failure(address, &error, Kind::Read);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}
