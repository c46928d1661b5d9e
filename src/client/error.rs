//! What a client operation can fail with, worded for the person at the CLI.

use crate::range::descriptor::RangeId;

/// Why a client operation did not succeed.
///
/// Only `OutcomeUnknown` leaves a write's fate open; every other error from `put` or
/// `delete` means the write was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No node answered at all: every address was refused or unreachable.
    #[error("cluster unavailable: {reason}")]
    Unavailable { reason: String },
    /// Nodes answered but none knew a leader for the range before the deadline.
    #[error(
        "no leader for range {range} before the deadline (no quorum? are a majority of its \
         replicas up?): {reason}"
    )]
    NoLeader { range: RangeId, reason: String },
    /// A write was sent but no answer came before the deadline: it may or may not
    /// have been applied. Retrying with a new request may apply it twice.
    #[error("outcome unknown, the write may or may not have been applied: {reason}")]
    OutcomeUnknown { reason: String },
    /// A read got no answer before the deadline (nothing was changed).
    #[error("timed out: {reason}")]
    Timeout { reason: String },
    /// The request was refused as malformed (empty or reserved key, too large).
    #[error("invalid request: {reason}")]
    Invalid { reason: String },
    /// The revision asked for is compacted away or not yet written.
    #[error("revision {revision} is not available (the range has revisions {first} to {last})")]
    RevisionUnavailable { revision: u64, first: u64, last: u64 },
    /// A transaction did not commit because another one changed or holds what it
    /// read or writes: nothing was written, and running it again may succeed.
    #[error("transaction conflict, nothing was written (retry): {reason}")]
    Conflict { reason: String },
    /// A node answered something that does not fit the request (a version mismatch
    /// or a bug).
    #[error("protocol error: {reason}")]
    Protocol { reason: String },
}
