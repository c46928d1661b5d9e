//! The three seams between rangedb and the world: `Disk`, `Network`, `Clock`.
//!
//! Production implementations live in `real_disk.rs` (files + fsync + fs2 lock),
//! `real_net.rs` (tokio TCP) and `Clock` here (tokio time + system clock); the
//! simulation supplies its own `Disk` (crash-lossy SimDisk) and runs the same TCP and
//! time code under madsim.

pub mod real_disk;
pub mod real_net;
pub mod timer;
// The simulation's disk, clock and observation hooks exist only in `cargo sim`'s
// build (`--cfg madsim`): the production server does not contain them.
#[cfg(madsim)]
pub mod sim_clock;
#[cfg(madsim)]
pub mod sim_disk;
#[cfg(madsim)]
pub mod sim_hooks;

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::raft::NodeId;
use crate::wire::Envelope;

/// One open file. Obligations: `write_at` may be lost on a crash until `sync`
/// returns Ok; a failed `sync` means nothing since the last good sync is durable.
#[allow(clippy::len_without_is_empty)] // A file's length is a size, not a collection's.
pub trait DiskFile: Send + Sync {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// fdatasync: data and the size, not necessarily other metadata.
    fn sync(&mut self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    /// Reserves `len` bytes (preallocation); does not shrink.
    fn allocate(&mut self, len: u64) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// A held lock on a data directory; dropping it releases the lock.
pub trait DirLock: Send + Sync {}

/// File-system operations rangedb needs. A new or renamed file survives a crash only
/// after `sync_dir` on its directory.
pub trait Disk: Send + Sync + 'static {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens for read and write, creating it if `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>>;
    fn exists(&self, path: &Path) -> bool;
    /// File names (not paths) in `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `dir`; fails with `WouldBlock` if another process
    /// holds it.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// Peer links. `send` never blocks and may drop (Raft retransmits); messages to one
/// peer in one call travel in one frame and arrive in order or not at all. An empty
/// batch is sent too: it is the node's liveness ping (node/liveness.rs).
pub trait Network: Send + Sync + 'static {
    fn send(&self, to: NodeId, batch: Vec<Envelope>);
    /// Whether the link to `to` is currently connected (for `rangedb status`).
    fn is_connected(&self, to: NodeId) -> bool;
    /// A member was added (or moved): open a link to it at `address`.
    fn add_peer(&self, peer: NodeId, address: String);
    /// A member was removed: close its link; what is sent to it is dropped.
    fn remove_peer(&self, peer: NodeId);
    /// Why a peer said this node was removed from the cluster, if one did.
    fn removed(&self) -> Option<String>;
}

/// Time. Monotonic time drives ticks and leases; wall time is for timestamps only.
///
/// Obligations: `now` never goes backwards. It is this node's own oscillator, which
/// may run a little fast or slow (drift); leases stay safe while the rates of the
/// nodes' clocks differ by less than the bound the Raft lease tolerates
/// (src/raft/reads.rs), and the leader refuses leases when it measures more. Offsets
/// between nodes (skew) do not matter to leases; they show in `wall_ms` only.
pub trait Clock: Send + Sync + 'static {
    /// Local monotonic time.
    fn now(&self) -> tokio::time::Instant;
    /// Milliseconds since the Unix epoch.
    fn wall_ms(&self) -> u64;
    /// The real (tokio timer) duration in which `local` of this clock's time passes:
    /// what to sleep to wake when `now()` has advanced by `local`.
    fn real_duration(&self, local: Duration) -> Duration;
}

/// 64 random bits from the operating system (`getrandom`), for identities that must
/// differ between data directories and clusters. Under madsim the same call is
/// answered from the seed (madsim interposes `getrandom`), so a simulation replays.
///
/// # Panics
/// If the kernel has no entropy source at all (`getrandom` fails for a reason other
/// than an interrupt), which no supported system does.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: writes at most the remaining bytes of a live buffer.
        let got = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if got < 0 {
            let error = std::io::Error::last_os_error();
            assert!(error.kind() == std::io::ErrorKind::Interrupted, "getrandom: {error}");
            continue;
        }
        filled += got as usize;
    }
    u64::from_le_bytes(bytes)
}

/// tokio time (simulated under madsim) and the system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
    fn wall_ms(&self) -> u64 {
        #[allow(clippy::disallowed_methods)] // The one sanctioned wall-clock read.
        let now = std::time::SystemTime::now();
        now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
    fn real_duration(&self, local: Duration) -> Duration {
        local
    }
}
