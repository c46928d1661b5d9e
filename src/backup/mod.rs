//! Backup and restore of a whole cluster (`rangedb admin backup create|restore`).
//!
//! ```text
//!  create: ranges ─► freeze every range (Raft) ─► capture each (an in-memory clone)
//!          ─► unfreeze every range, each must still have been held ─► fetch each
//!          image ─► DIR/range-<id>.img, then DIR/MANIFEST
//!  restore: verify DIR ─► stage it in <data>/restore/ ─► `rangedb server` founds a
//!          new cluster whose ranges start from the images (node/mod.rs)
//! ```
//!
//! Why the copy is consistent (docs/DESIGN.md, "Backup and restore"): every range
//! refuses writes from its freeze entry to its unfreeze entry; the freezes are all
//! acknowledged before any unfreeze is sent, and each unfreeze reports that its
//! freeze was still in force; so at the instant the last freeze was acknowledged,
//! every range's state was its image, and the images are the whole database at
//! that one instant.
//!
//! Files (format version `FORMAT_VERSION`):
//!
//! ```text
//! DIR/MANIFEST            JSON: format, version, backup and cluster ids, time,
//!                         the pause, one entry per range (span, file, bytes, crc32
//!                         of the file, freeze index, applied index, keys)
//! DIR/range-<id:016x>.img "RDBBKUP1" | version u32 LE | range u64 LE | len u64 LE
//!                         | crc32(image) u32 LE | image (KvStore::snapshot)
//! ```

pub mod create;
mod files;
pub mod restore;

pub use create::{create, hold_and_capture, CreateOptions, Cut, Progress, Summary};
pub use files::{decode_hex as files_decode_hex, Manifest, RangeEntry, FORMAT_VERSION, MANIFEST};
pub use restore::{stage, verify, Staged, RESTORE_DIR};

use std::path::PathBuf;

/// Why a backup could not be taken, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A backup file is missing, damaged or of another version.
    #[error("{}: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    /// The ranges were not all held at one moment (a freeze expired first).
    #[error(
        "{range}'s freeze expired before the backup was captured (the copy would not be \
         consistent): nothing was written; run it again with a longer --hold"
    )]
    Expired { range: crate::range::descriptor::RangeId },
    /// The request cannot be done as asked.
    #[error("{0}")]
    Refused(String),
}

impl BackupError {
    fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
        move |source| BackupError::Io { path: path.to_path_buf(), source }
    }

    fn damaged(path: &std::path::Path, reason: impl Into<String>) -> BackupError {
        BackupError::Damaged { path: path.to_path_buf(), reason: reason.into() }
    }
}
