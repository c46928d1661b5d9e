//! The per-range state machine: key -> versions.
//!
//! Every committed Raft entry of a range is applied here in index order; the entry's
//! index becomes the revision of whatever it writes, so revisions are strictly
//! increasing and a read "as of revision r" sees exactly the entries <= r. Each key
//! keeps its versions (a value or a tombstone), oldest first, which is what reads at
//! a revision and scans need.
//!
//! History is bounded, as etcd's compaction and CockroachDB's GC TTL bound theirs:
//! reads as of revisions from `compacted()` = applied - `history` on are served, older
//! ones are refused with `RevisionUnavailable { first: compacted() }`. A version no
//! read from `compacted()` on can see (one followed by another at or below it) is
//! dropped when its key is written, and a background sweep (16 keys per 64 applied
//! entries, round the key space) does the same for keys no longer written and removes
//! keys whose only version is an old tombstone. So memory holds the live keys plus
//! about `history` revisions of versions, instead of every version ever written, and
//! a snapshot stays that size too.
//!
//! Client retries are deduplicated here, inside the replicated state (Raft
//! dissertation, section 6.3): a table client -> recent (seq -> result) is updated by
//! `apply` and carried in snapshots, so every replica answers a retried request with
//! the original result instead of applying it twice. A client may have many writes
//! in flight (pipelining), so a retried seq below the newest one applied is not
//! necessarily a duplicate: each client keeps the results of its last
//! `SESSION_RESULTS_MAX` writes. A retry older than that window is refused as
//! `Expired` (its outcome is unknown to the client) rather than applied again.
//! At most `SESSIONS_MAX` clients are remembered; the ones that wrote least recently
//! (by revision, so every replica evicts the same ones) are forgotten first.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::raft::EntryFormat;
use crate::range::descriptor::{descriptor_key, RangeDescriptor, RangeId, Span, DESCRIPTOR_PREFIX};
use crate::range::settings::RangeSettings;
use crate::range::txn::{
    LockInfo, ReadCheck, SpanCheck, TxnOp, TxnPart, TxnRecord, TxnResult, TxnStatus, TxnTable,
    TxnWrite,
};

/// Identifies a client write so a retry is applied once. `client` is random per
/// client instance, `seq` increases per write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub seq: u64,
}

/// One version of a key as reads return it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "crate::byte_serde::vec")]
    pub key: Vec<u8>,
    #[serde(with = "crate::byte_serde::vec")]
    pub value: Vec<u8>,
    /// Revision that wrote this version.
    pub revision: u64,
}

/// Bumped whenever the snapshot encoding changes (5: the range's span and
/// generation; 4: the range's settings and a backup's freeze; 3: the transaction
/// table; 4, 3 and 2 are still read).
const SNAPSHOT_FORMAT_VERSION: u32 = 5;

/// A write as replicated in a Raft entry's data (bincode), in entry format
/// `COMMAND_FORMAT`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub request_id: Option<RequestId>,
    pub op: WriteOp,
}

/// The entry format of the commands this version writes: bincode of `Command`.
/// Bumped (and the old version still read) whenever `Command` changes. Version 2
/// added `WriteOp::Txn` at the end of the enum, version 3 `WriteOp::Settings`,
/// `Freeze` and `Unfreeze`, version 4 `Split` and `PlanSplit`, so an older command
/// decodes as the same newer one.
pub const COMMAND_FORMAT: EntryFormat = EntryFormat { kind: EntryFormat::KIND_COMMAND, version: 4 };
/// Command versions this one reads.
const COMMAND_FORMAT_V3: EntryFormat = EntryFormat { kind: EntryFormat::KIND_COMMAND, version: 3 };
const COMMAND_FORMAT_V1: EntryFormat = EntryFormat { kind: EntryFormat::KIND_COMMAND, version: 1 };
const COMMAND_FORMAT_V2: EntryFormat = EntryFormat { kind: EntryFormat::KIND_COMMAND, version: 2 };

/// What a committed entry asks of the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applicable {
    /// A leader's no-op: only the applied index moves.
    Noop,
    /// A membership change: the Raft core read it; for the state machine, a no-op.
    ConfChange,
    Command(Command),
}

/// A committed entry this version cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnreadableEntry {
    #[error(
        "entry format {0} is not one this rangedb reads (commands up to version {max}); \
         a newer rangedb wrote it: upgrade this node",
        max = COMMAND_FORMAT.version
    )]
    Format(EntryFormat),
    #[error("undecodable {COMMAND_FORMAT} entry: {0}")]
    Decode(String),
}

impl Applicable {
    /// Reads a committed entry's format and data.
    ///
    /// # Errors
    /// `Format` for a format this version does not know, `Decode` for data that is not
    /// a command of its format.
    pub fn decode(format: EntryFormat, data: &[u8]) -> Result<Applicable, UnreadableEntry> {
        if format == EntryFormat::NOOP {
            return Ok(Applicable::Noop);
        }
        if format == EntryFormat::CONF_CHANGE {
            return Ok(Applicable::ConfChange);
        }
        if ![COMMAND_FORMAT, COMMAND_FORMAT_V3, COMMAND_FORMAT_V2, COMMAND_FORMAT_V1]
            .contains(&format)
        {
            return Err(UnreadableEntry::Format(format));
        }
        let config = bincode::config::standard();
        match bincode::serde::decode_from_slice::<Command, _>(data, config) {
            Ok((command, used)) if used == data.len() => Ok(Applicable::Command(command)),
            Ok((_, used)) => {
                Err(UnreadableEntry::Decode(format!("{} trailing bytes", data.len() - used)))
            }
            Err(error) => Err(UnreadableEntry::Decode(error.to_string())),
        }
    }
}

/// The write a command performs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Put {
        #[serde(with = "crate::byte_serde::vec")]
        key: Vec<u8>,
        #[serde(with = "crate::byte_serde::vec")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "crate::byte_serde::vec")]
        key: Vec<u8>,
    },
    /// A transaction's step in this range (`range::txn`).
    Txn(TxnOp),
    /// The range's replicated settings (`range::settings`), proposed by its leader
    /// when the cluster's settings in the meta range differ from what it holds.
    Settings(RangeSettings),
    /// Backup `backup` holds the range still: every later write is refused (and
    /// retried by its client) until `Unfreeze`, or until a leader whose clock passed
    /// `deadline_ms` (wall-clock ms) proposes the `Unfreeze` itself (src/backup/).
    Freeze { backup: u64, deadline_ms: u64 },
    /// Ends `backup`'s freeze, if it is the one in force.
    Unfreeze { backup: u64 },
    /// Splits the range at `key` if its generation is `generation`: the keys from
    /// `key` on, with their history, locks and records, become range `right` (on the
    /// same replicas, starting at this entry's index), and both halves take
    /// generation + 1. Proposed by the range's leader once the meta range planned it.
    Split {
        #[serde(with = "crate::byte_serde::vec")]
        key: Vec<u8>,
        right: RangeId,
        generation: u64,
    },
    /// In the meta range: plans the split of `range` (at `generation`) at `key`,
    /// allocating the new range's id and writing both descriptors (`_/range/`).
    PlanSplit {
        range: RangeId,
        generation: u64,
        #[serde(with = "crate::byte_serde::vec")]
        key: Vec<u8>,
    },
}

impl WriteOp {
    /// The entry format this write is proposed in (one for every write since version
    /// 3, which added the settings as well as the freezes).
    pub fn format(&self) -> EntryFormat {
        COMMAND_FORMAT
    }
}

/// A backup's freeze of a range, as applied (replicated state, in snapshots).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub backup: u64,
    /// The index of the entry that froze the range: its state since is the backup's.
    pub index: u64,
    pub deadline_ms: u64,
}

/// What applying a command produced; cached per client for deduplication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Put {
        revision: u64,
    },
    Delete {
        revision: u64,
        existed: bool,
    },
    /// A retry too old to tell whether it was applied; nothing was done now.
    Expired,
    /// A put or delete of a key a transaction holds: nothing was done (not
    /// remembered: the retry is applied once the lock is gone).
    Locked(LockInfo),
    Txn(TxnResult),
    /// A `WriteOp::Settings` applied (or ignored as older than the range's).
    Settings,
    /// A write refused while a backup holds the range (`WriteOp::Freeze`); nothing was
    /// done (not remembered: the retry is applied once the range is unfrozen). Also
    /// the answer to a `Freeze` while another backup's is in force.
    Frozen(Freeze),
    /// The answer to `Freeze`: the range is held for this backup since `index`.
    FrozenFor(Freeze),
    /// The answer to `Unfreeze`: whether that backup's freeze was in force until now
    /// (false: it had expired, or never applied).
    Unfrozen {
        held: bool,
    },
    /// A key the command names is not in the range's span any more (it was routed
    /// before a split): nothing was done (not remembered: the retry goes to the range
    /// that owns the key now).
    WrongRange,
    /// The range split; `right` holds the keys from the split key on.
    Split {
        right: RangeId,
    },
    /// The split (or its plan) was not done, and why.
    SplitRefused {
        reason: String,
    },
    /// The meta range planned a split: the two descriptors it now holds.
    SplitPlanned {
        left: RangeDescriptor,
        right: RangeDescriptor,
    },
}

/// Results remembered per client: its writes in flight at once must stay below this.
pub const SESSION_RESULTS_MAX: usize = 1024;
/// Clients remembered per range.
pub const SESSIONS_MAX: usize = 10_000;

/// A read asked for a revision this store cannot serve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("revision {revision} unavailable (have {first}..={last})")]
pub struct RevisionUnavailable {
    pub revision: u64,
    pub first: u64,
    pub last: u64,
}

/// A snapshot's bytes are not a state machine image this code can read.
#[derive(Debug, thiserror::Error)]
#[error("undecodable state machine snapshot: {0}")]
pub struct SnapshotDecodeError(pub String);

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The Raft index of the entry that wrote this version.
    pub revision: u64,
    /// None is a tombstone (the key was deleted at `revision`). Shared, so that the
    /// copy of the state a snapshot is written from (src/node/snapshotter.rs) does
    /// not copy the values; encoded as a plain byte string.
    #[serde(with = "crate::byte_serde::option_shared")]
    pub value: Option<bytes::Bytes>,
}

/// The recent requests applied for one client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ClientSession {
    /// seq -> result, at most `SESSION_RESULTS_MAX` of the highest seqs applied.
    results: SessionResults,
    /// Revision of this client's latest applied write (for eviction order).
    last_revision: u64,
}

/// A client's recent results, ascending by seq: a client's seqs mostly arrive in
/// order, so an insert is a push at the back and the oldest leaves from the front,
/// and a lookup is a binary search over contiguous memory (a B-tree of 1,024 entries
/// per client cost a few cache misses per write). Encoded as the map it replaces.
/// Shared with the copies snapshots are written from, as `Versions` are: 64 clients'
/// 1,024 results were most of the event loop's copy of a range; a client's next
/// write copies its own list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SessionResults(Arc<std::collections::VecDeque<(u64, CommandResult)>>);

impl SessionResults {
    fn search(&self, seq: u64) -> Result<usize, usize> {
        // A new write's seq is above every seq remembered: one look at the back.
        if self.0.back().is_none_or(|(newest, _)| *newest < seq) {
            return Err(self.0.len());
        }
        self.0.binary_search_by_key(&seq, |(s, _)| *s)
    }

    fn get(&self, seq: u64) -> Option<&CommandResult> {
        self.search(seq).ok().map(|at| &self.0[at].1)
    }

    fn insert(&mut self, seq: u64, result: CommandResult) {
        match self.search(seq) {
            Ok(at) => Arc::make_mut(&mut self.0)[at].1 = result,
            Err(at) if at == self.0.len() => Arc::make_mut(&mut self.0).push_back((seq, result)),
            Err(at) => Arc::make_mut(&mut self.0).insert(at, (seq, result)),
        }
    }

    fn oldest(&self) -> Option<u64> {
        self.0.front().map(|(seq, _)| *seq)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn pop_oldest(&mut self) {
        Arc::make_mut(&mut self.0).pop_front();
    }
}

impl Serialize for SessionResults {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(seq, result)| (seq, result)))
    }
}

impl<'de> Deserialize<'de> for SessionResults {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<u64, CommandResult>::deserialize(deserializer)?;
        Ok(SessionResults(Arc::new(map.into_iter().collect())))
    }
}

/// The snapshot image (bincode).
#[derive(Serialize, Deserialize)]
struct KvImage {
    format_version: u32,
    applied: u64,
    map: BTreeMap<Vec<u8>, Vec<Version>>,
    sessions: BTreeMap<u64, ClientSession>,
    txns: TxnTable,
    settings: RangeSettings,
    freeze: Option<Freeze>,
    span: Option<Span>,
}

/// The image of format version 4 (before the range's span).
#[derive(Deserialize)]
struct KvImageV4 {
    format_version: u32,
    applied: u64,
    map: BTreeMap<Vec<u8>, Vec<Version>>,
    sessions: BTreeMap<u64, ClientSession>,
    txns: TxnTable,
    settings: RangeSettings,
    freeze: Option<Freeze>,
}

/// The image of format version 3 (before the range's settings and backup freezes).
#[derive(Deserialize)]
struct KvImageV3 {
    format_version: u32,
    applied: u64,
    map: BTreeMap<Vec<u8>, Vec<Version>>,
    sessions: BTreeMap<u64, ClientSession>,
    txns: TxnTable,
}

/// The image of format version 2 (before transactions).
#[derive(Deserialize)]
struct KvImageV2 {
    format_version: u32,
    applied: u64,
    map: BTreeMap<Vec<u8>, Vec<Version>>,
    sessions: BTreeMap<u64, ClientSession>,
}

/// `KvImage` by reference, for `snapshot`: the same bincode bytes, without first
/// cloning every key and version of the store (a malloc per version), and with keys
/// written as one run of bytes instead of one serde call per byte (bincode encodes a
/// `Vec<u8>` the same either way, see byte_serde).
#[derive(Serialize)]
struct KvImageRef<'a> {
    format_version: u32,
    applied: u64,
    #[serde(serialize_with = "serialize_map_bytes_keys")]
    map: &'a BTreeMap<Key, Versions>,
    sessions: &'a BTreeMap<u64, ClientSession>,
    txns: &'a TxnTable,
    settings: &'a RangeSettings,
    freeze: &'a Option<Freeze>,
    span: &'a Option<Span>,
}

fn serialize_map_bytes_keys<S: serde::Serializer>(
    map: &&BTreeMap<Key, Versions>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.iter().map(|(key, versions)| (KeyBytes(key), &**versions)))
}

struct KeyBytes<'a>(&'a [u8]);

impl Serialize for KeyBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Revisions of history a range keeps until the cluster setting `history_revisions`
/// is set (`range::settings`).
pub const HISTORY_REVISIONS: u64 = 10_000;

/// Where the meta range keeps the id the next new range gets (little-endian u64).
pub const NEXT_RANGE_ID_KEY: &[u8] = b"_/meta/next-range-id";
/// The sweep looks at `SWEEP_KEYS` keys once per `SWEEP_EVERY` applied entries.
const SWEEP_KEYS: usize = 16;
const SWEEP_EVERY: u32 = 64;

/// A key as the store holds it: up to 24 bytes inline. The map's search compares the
/// key sought with up to 11 keys per B-tree node; inline keys sit in the node itself,
/// so a search does not chase one heap pointer (a likely cache miss) per comparison.
type Key = SmallVec<[u8; 24]>;

/// A key's versions, shared between the store and the copies that snapshots are
/// written from (src/node/snapshotter.rs): the event loop's copy of a range copies
/// the map's nodes and one pointer per key, not every key's versions and values
/// (the copy of a 3,000-key range took the loop 2-5 ms, up to 22 ms). A write after
/// a copy copies its key's list once (`Arc::make_mut`).
type Versions = Arc<Vec<Version>>;

/// Revisions are the range's Raft indexes.
#[derive(Clone, Debug)]
pub struct KvStore {
    /// Invariant: every version list is non-empty, revisions strictly increase and
    /// are <= `applied`.
    map: BTreeMap<Key, Versions>,
    /// The index of the last entry applied (0 before any).
    applied: u64,
    /// client -> the last request of that client applied.
    sessions: BTreeMap<u64, ClientSession>,
    /// Number of keys whose newest version is a value.
    live_keys: u64,
    /// Revisions of history served below `applied` (u64::MAX: all of it), and the
    /// cluster setting they come from: replicated state (`WriteOp::Settings`).
    settings: RangeSettings,
    /// Where the sweep goes on (its next key is the first one above this).
    sweep_after: Key,
    /// Entries applied since the last sweep.
    unswept: u32,
    /// Locks, transaction records and finished transactions (`range::txn`).
    txns: TxnTable,
    /// The backup holding this range still, if any: every write but `Unfreeze` and
    /// another `Freeze` is refused while it is set.
    freeze: Option<Freeze>,
    /// The span and generation of the range (None: not known, a store of tests or an
    /// image from before version 5 until the node sets it): writes of keys outside
    /// it are refused (`WrongRange`).
    span: Option<Span>,
    /// Bytes of the live keys and their newest values.
    live_bytes: u64,
    /// The right half of the split the last applied entry made, for the node to take.
    split_out: Option<(RangeId, Box<KvStore>)>,
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore {
            map: BTreeMap::new(),
            applied: 0,
            sessions: BTreeMap::new(),
            live_keys: 0,
            settings: RangeSettings { config_revision: 0, history_revisions: u64::MAX },
            sweep_after: Key::new(),
            unswept: 0,
            txns: TxnTable::default(),
            freeze: None,
            span: None,
            live_bytes: 0,
            split_out: None,
        }
    }
}

/// Equal state: the sweep's progress is not state.
impl PartialEq for KvStore {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
            && self.applied == other.applied
            && self.sessions == other.sessions
            && self.live_keys == other.live_keys
            && self.settings == other.settings
            && self.txns == other.txns
            && self.freeze == other.freeze
            && self.span == other.span
    }
}

impl Eq for KvStore {}

impl KvStore {
    /// An empty store at applied index 0 that keeps all history.
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// An empty store with the settings a new range starts with (`RangeSettings`'s
    /// default: every replica of a range starts with the same).
    pub fn new_range() -> KvStore {
        KvStore { settings: RangeSettings::default(), ..KvStore::default() }
    }

    /// Keeps `history` revisions below the applied index readable (u64::MAX: all),
    /// outside the log (tests and tools; a range changes it by `WriteOp::Settings`).
    pub fn set_history(&mut self, history: u64) {
        self.settings.history_revisions = history;
    }

    /// The settings this store applied last.
    pub fn settings(&self) -> RangeSettings {
        self.settings
    }

    /// The oldest revision reads may ask for.
    pub fn compacted(&self) -> u64 {
        self.applied.saturating_sub(self.settings.history_revisions)
    }

    /// A store whose applied index is `index`, holding `items` at revision `index`
    /// (the initial contents of a range, e.g. the range descriptors), with a new
    /// range's settings.
    ///
    /// # Panics
    /// If a key appears twice.
    pub fn bootstrap(index: u64, items: Vec<(Vec<u8>, Vec<u8>)>) -> KvStore {
        let mut store = KvStore { applied: index, ..KvStore::new_range() };
        for (key, value) in items {
            let version = Version { revision: index, value: Some(value.into()) };
            let previous = store.map.insert(Key::from_slice(&key), Arc::new(vec![version]));
            assert!(previous.is_none(), "bootstrap key {key:?} given twice");
        }
        store.recount();
        store
    }

    /// Counts the live keys and their bytes over the whole map.
    fn recount(&mut self) {
        let (mut keys, mut bytes) = (0, 0);
        for (key, versions) in &self.map {
            if let Some(value) = versions.last().and_then(|version| version.value.as_ref()) {
                keys += 1;
                bytes += (key.len() + value.len()) as u64;
            }
        }
        self.live_keys = keys;
        self.live_bytes = bytes;
    }

    /// The range's span and generation, once known.
    pub fn span(&self) -> Option<&Span> {
        self.span.as_ref()
    }

    /// Sets the span of a store that has none (a new cluster's range, or one restored
    /// from an image of before version 5): the node knows it from the descriptors it
    /// created the range with.
    pub fn adopt_span(&mut self, span: Span) {
        if self.span.is_none() {
            self.span = Some(span);
        }
    }

    /// Bytes of the live keys and their newest values.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The right half of a split the last applied entry made (`CommandResult::Split`).
    pub fn take_split(&mut self) -> Option<(RangeId, KvStore)> {
        self.split_out.take().map(|(id, store)| (id, *store))
    }

    /// A key near the middle of the live data by bytes (for a split by size), if the
    /// span can be split there; None for a range with fewer than two keys.
    pub fn middle_key(&self) -> Option<Vec<u8>> {
        let half = self.live_bytes / 2;
        let mut seen = 0;
        for (key, versions) in &self.map {
            if let Some(value) = versions.last().and_then(|version| version.value.as_ref()) {
                seen += (key.len() + value.len()) as u64;
                if seen >= half {
                    let key = key.to_vec();
                    return self
                        .span
                        .as_ref()
                        .is_some_and(|span| span.splits_at(&key))
                        .then_some(key);
                }
            }
        }
        None
    }

    /// Applies the entry at `index` (> applied). Empty/no-op entries go through
    /// `apply_noop`. A retry of a request already applied (same or older seq of the
    /// same client) is not applied again; the client's cached result is returned.
    ///
    /// # Panics
    /// If `index <= applied`.
    pub fn apply(&mut self, index: u64, command: &Command) -> CommandResult {
        self.apply_owned(index, command.clone())
    }

    /// `apply`, taking the command: a put's value moves into the store (no copy).
    pub fn apply_owned(&mut self, index: u64, command: Command) -> CommandResult {
        self.advance_applied(index);
        self.sweep();
        if let Some(id) = command.request_id {
            if let Some(session) = self.sessions.get(&id.client) {
                if let Some(result) = session.results.get(id.seq) {
                    #[cfg(madsim)]
                    crate::env::sim_hooks::sometimes("retried write deduplicated");
                    return result.clone();
                }
                let full = session.results.len() >= SESSION_RESULTS_MAX;
                if full && session.results.oldest().is_some_and(|oldest| id.seq < oldest) {
                    return CommandResult::Expired;
                }
            }
        }
        if !self.owns(&command.op) {
            #[cfg(madsim)]
            crate::env::sim_hooks::sometimes("write routed before a split refused");
            return CommandResult::WrongRange;
        }
        match (&command.op, self.freeze) {
            (WriteOp::Freeze { backup, deadline_ms }, None) => {
                let freeze = Freeze { backup: *backup, index, deadline_ms: *deadline_ms };
                self.freeze = Some(freeze);
                return CommandResult::FrozenFor(freeze);
            }
            (WriteOp::Freeze { backup, .. }, Some(freeze)) if freeze.backup == *backup => {
                return CommandResult::FrozenFor(freeze);
            }
            (WriteOp::Unfreeze { backup }, freeze) => {
                let held = freeze.is_some_and(|freeze| freeze.backup == *backup);
                if held {
                    self.freeze = None;
                }
                return CommandResult::Unfrozen { held };
            }
            (_, Some(freeze)) => {
                #[cfg(madsim)]
                crate::env::sim_hooks::sometimes("write refused by a backup's freeze");
                return CommandResult::Frozen(freeze);
            }
            (_, None) => {}
        }
        let locked = match &command.op {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => {
                self.txns.blocking(key, None, true)
            }
            WriteOp::Txn(_)
            | WriteOp::Settings(_)
            | WriteOp::Freeze { .. }
            | WriteOp::Unfreeze { .. }
            | WriteOp::Split { .. }
            | WriteOp::PlanSplit { .. } => None,
        };
        if let Some(lock) = locked {
            #[cfg(madsim)]
            crate::env::sim_hooks::sometimes("write refused by a transaction's lock");
            return CommandResult::Locked(lock);
        }
        let result = match command.op {
            WriteOp::Settings(settings) => {
                // Older than what the range holds (a leader whose meta replica lagged
                // proposed it): ignored, on every replica alike.
                if settings.config_revision > self.settings.config_revision {
                    // A change of a setting already set (not the initial value).
                    #[cfg(madsim)]
                    if self.settings.config_revision != 0 {
                        crate::env::sim_hooks::sometimes("runtime config change applied");
                    }
                    self.settings = settings;
                }
                CommandResult::Settings
            }
            WriteOp::Txn(op) => {
                let result = self.apply_txn(index, op);
                if matches!(result, TxnResult::Locked(_)) {
                    return CommandResult::Txn(result);
                }
                CommandResult::Txn(result)
            }
            WriteOp::Put { key, value } => {
                self.push_version(&key, index, Some(value));
                CommandResult::Put { revision: index }
            }
            WriteOp::Delete { key } => {
                let existed = self.is_live(&key);
                if existed {
                    self.push_version(&key, index, None);
                }
                CommandResult::Delete { revision: index, existed }
            }
            WriteOp::Split { key, right, generation } => self.split(index, key, right, generation),
            WriteOp::PlanSplit { range, generation, key } => {
                self.plan_split(index, range, generation, key)
            }
            WriteOp::Freeze { .. } | WriteOp::Unfreeze { .. } => {
                unreachable!("answered before the lock check")
            }
        };
        if let Some(id) = command.request_id {
            self.remember(id, index, result.clone());
        }
        result
    }

    /// Whether every key `op` names lies in the range's span (always, while the span
    /// is not known).
    fn owns(&self, op: &WriteOp) -> bool {
        let Some(span) = &self.span else { return true };
        match op {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => span.contains(key),
            WriteOp::Txn(op) => op.within(span),
            WriteOp::PlanSplit { range, .. } => span.contains(&descriptor_key(*range)),
            WriteOp::Settings(_)
            | WriteOp::Freeze { .. }
            | WriteOp::Unfreeze { .. }
            | WriteOp::Split { .. } => true,
        }
    }

    /// `WriteOp::Split`: cuts the store at `key` if the range is at `generation` and
    /// `key` falls strictly inside it. The right half (`take_split`) starts at this
    /// index with the same settings and a copy of the client sessions (a retry of a
    /// write applied before the split is answered from either half).
    fn split(
        &mut self,
        index: u64,
        key: Vec<u8>,
        right: RangeId,
        generation: u64,
    ) -> CommandResult {
        let refused = |reason: String| CommandResult::SplitRefused { reason };
        let Some(span) = self.span.clone() else {
            return refused("the range's span is not known".into());
        };
        if span.generation != generation {
            return refused(format!(
                "the range is at generation {}, not {generation} (split or merged since)",
                span.generation
            ));
        }
        if !span.splits_at(&key) {
            return refused(format!(
                "{:?} is not strictly inside the range",
                String::from_utf8_lossy(&key)
            ));
        }
        let map = self.map.split_off(key.as_slice());
        let txns = self.txns.split_off(&key);
        let mut half = KvStore {
            map,
            applied: index,
            sessions: self.sessions.clone(),
            settings: self.settings,
            txns,
            span: Some(Span { start: key.clone(), end: span.end, generation: generation + 1 }),
            ..KvStore::default()
        };
        half.recount();
        self.span = Some(Span { start: span.start, end: Some(key), generation: generation + 1 });
        self.recount();
        self.sweep_after = Key::new();
        self.split_out = Some((right, Box::new(half)));
        CommandResult::Split { right }
    }

    /// `WriteOp::PlanSplit` in the meta range: if the descriptor of `range` stored here
    /// is at `generation` and `key` falls strictly inside it, allocates the new range's
    /// id (never reused: `NEXT_RANGE_ID_KEY` only grows) and writes both descriptors
    /// at generation + 1.
    fn plan_split(
        &mut self,
        index: u64,
        range: RangeId,
        generation: u64,
        key: Vec<u8>,
    ) -> CommandResult {
        let refused = |reason: String| CommandResult::SplitRefused { reason };
        let Some(current) = self.descriptor(range) else {
            return refused(format!("no descriptor of {range} in the meta range"));
        };
        if current.generation != generation {
            return refused(format!(
                "{range} is at generation {}, not {generation} (split or merged since)",
                current.generation
            ));
        }
        if !current.span().splits_at(&key) {
            return refused(format!(
                "{:?} is not strictly inside {range}",
                String::from_utf8_lossy(&key)
            ));
        }
        let next = self.next_range_id();
        let left = RangeDescriptor {
            end: Some(key.clone()),
            generation: generation + 1,
            ..current.clone()
        };
        let right = RangeDescriptor {
            id: next,
            start: key,
            end: current.end,
            generation: generation + 1,
            replicas: current.replicas,
        };
        for descriptor in [&left, &right] {
            let value = bincode::serde::encode_to_vec(descriptor, bincode::config::standard())
                .expect("a descriptor always encodes");
            self.push_version(&descriptor_key(descriptor.id), index, Some(value));
        }
        self.push_version(NEXT_RANGE_ID_KEY, index, Some((next.0 + 1).to_le_bytes().to_vec()));
        CommandResult::SplitPlanned { left, right }
    }

    /// The descriptor of `range` stored in this (meta) range, if any.
    pub fn descriptor(&self, range: RangeId) -> Option<RangeDescriptor> {
        let versions = self.map.get(descriptor_key(range).as_slice())?;
        let value = versions.last()?.value.as_ref()?;
        bincode::serde::decode_from_slice(value, bincode::config::standard()).ok().map(|(d, _)| d)
    }

    /// Every descriptor stored in this (meta) range, in id order.
    pub fn descriptors(&self) -> Vec<RangeDescriptor> {
        let end = crate::range::descriptor::RESERVED_END;
        self.scan(DESCRIPTOR_PREFIX, Some(end), 0, None)
            .unwrap_or_default()
            .into_iter()
            .filter(|kv| kv.key.starts_with(DESCRIPTOR_PREFIX))
            .filter_map(|kv| {
                bincode::serde::decode_from_slice(&kv.value, bincode::config::standard())
                    .ok()
                    .map(|(d, _)| d)
            })
            .collect()
    }

    /// The id the next planned range gets: the stored counter, else one above every
    /// descriptor's (a cluster that never split).
    fn next_range_id(&self) -> RangeId {
        let stored = self
            .map
            .get(NEXT_RANGE_ID_KEY)
            .and_then(|versions| versions.last()?.value.as_ref())
            .and_then(|value| <[u8; 8]>::try_from(value.as_ref()).ok())
            .map(u64::from_le_bytes);
        let highest = self.descriptors().iter().map(|d| d.id.0).max().unwrap_or(0);
        RangeId(stored.unwrap_or(0).max(highest + 1))
    }

    /// Applies one transaction step at `index` (see `range::txn`).
    fn apply_txn(&mut self, index: u64, op: TxnOp) -> TxnResult {
        let tables = &mut self.txns;
        match op {
            TxnOp::Commit1pc { part } => {
                if let Some(lock) = self.part_blocked(&part, None) {
                    return TxnResult::Locked(lock);
                }
                if let Some(key) = self.part_invalid(&part) {
                    return TxnResult::Conflict { key };
                }
                self.write_all(index, part.writes);
                TxnResult::Committed { revision: index }
            }
            TxnOp::Prepare { txn, anchor, participants, part } => {
                if tables.finished.contains_key(&txn) {
                    return TxnResult::Aborted;
                }
                let is_anchor = !participants.is_empty();
                if is_anchor {
                    match tables.records.get(&txn) {
                        Some(record) if record.status == TxnStatus::Aborted => {
                            return TxnResult::Aborted
                        }
                        Some(_) => return TxnResult::Prepared,
                        None => {}
                    }
                }
                if tables.held.contains_key(&txn) {
                    return TxnResult::Prepared;
                }
                if let Some(lock) = self.part_blocked(&part, Some(txn)) {
                    return TxnResult::Locked(lock);
                }
                if let Some(key) = self.part_invalid(&part) {
                    return TxnResult::Conflict { key };
                }
                let tables = &mut self.txns;
                tables.lock(txn, &anchor, &part);
                if is_anchor {
                    let record = TxnRecord {
                        status: TxnStatus::Pending,
                        anchor,
                        participants,
                        resolved: false,
                        revision: 0,
                    };
                    tables.records.insert(txn, record);
                }
                TxnResult::Prepared
            }
            TxnOp::Decide { txn, anchor, commit } => {
                let Some(record) = tables.records.get_mut(&txn) else {
                    // Never prepared here, or decided and let go (its outcome kept).
                    match tables.finished.get(&txn) {
                        Some(true) => return TxnResult::Committed { revision: 0 },
                        Some(false) => return TxnResult::Aborted,
                        None => {}
                    }
                    self.abort_record(txn, anchor, index);
                    return TxnResult::Aborted;
                };
                match record.status {
                    TxnStatus::Committed => {
                        return TxnResult::Committed { revision: record.revision }
                    }
                    TxnStatus::Aborted => return TxnResult::Aborted,
                    TxnStatus::Pending => {}
                }
                record.status = if commit { TxnStatus::Committed } else { TxnStatus::Aborted };
                record.revision = index;
                self.resolve(index, txn, commit);
                if commit {
                    TxnResult::Committed { revision: index }
                } else {
                    TxnResult::Aborted
                }
            }
            TxnOp::Resolve { txn, commit } => {
                // Where the record is, it decides: a resolve never runs ahead of the
                // decision or against it (the protocol sends none; this holds anyway).
                match tables.records.get(&txn).map(|record| record.status) {
                    Some(TxnStatus::Pending) => {}
                    Some(status) => self.resolve(index, txn, status == TxnStatus::Committed),
                    None => self.resolve(index, txn, commit),
                }
                TxnResult::Resolved
            }
            TxnOp::Push { txn, anchor } => {
                match tables.records.get_mut(&txn) {
                    None => match tables.finished_status(txn) {
                        Some(status) => {
                            return TxnResult::Status {
                                status: Some(status),
                                participants: Vec::new(),
                            };
                        }
                        None => self.abort_record(txn, anchor, index),
                    },
                    Some(record) if record.status == TxnStatus::Pending => {
                        record.status = TxnStatus::Aborted;
                        record.revision = index;
                        self.resolve(index, txn, false);
                    }
                    Some(_) => {}
                }
                self.txn_status(txn)
            }
            TxnOp::Forget { txn } => {
                tables.forget(txn);
                TxnResult::Resolved
            }
        }
    }

    /// An abort record where there was none: a prepare arriving later cannot make one.
    fn abort_record(&mut self, txn: crate::range::txn::TxnId, anchor: Vec<u8>, index: u64) {
        let record = TxnRecord {
            status: TxnStatus::Aborted,
            anchor,
            participants: Vec::new(),
            resolved: false,
            revision: index,
        };
        self.txns.records.insert(txn, record);
        self.resolve(index, txn, false);
    }

    /// Releases `txn`'s locks here, writing its intents at `index` if it committed.
    fn resolve(&mut self, index: u64, txn: crate::range::txn::TxnId, commit: bool) {
        let writes = self.txns.release(txn);
        if commit {
            self.write_all(index, writes);
        }
        self.txns.finish(txn, commit);
    }

    fn write_all(&mut self, index: u64, writes: Vec<TxnWrite>) {
        for write in writes {
            match write.value {
                Some(value) => self.push_version(&write.key, index, Some(value)),
                None if self.is_live(&write.key) => self.push_version(&write.key, index, None),
                None => {}
            }
        }
    }

    /// A transaction's record as it stands (a read: `Request::TxnStatus`).
    pub fn txn_status(&self, txn: crate::range::txn::TxnId) -> TxnResult {
        match self.txns.records.get(&txn) {
            Some(record) => TxnResult::Status {
                status: Some(record.status),
                participants: record.participants.clone(),
            },
            // Let go at `Forget` (every participant resolved): the outcome remains.
            None => TxnResult::Status {
                status: self.txns.finished_status(txn),
                participants: Vec::new(),
            },
        }
    }

    /// The transactions holding locks or unresolved records here (for the janitor).
    pub fn txn_outstanding(&self, limit: usize) -> Vec<LockInfo> {
        self.txns.outstanding(limit)
    }

    /// Whether this range holds no lock, pending record or unresolved record.
    pub fn txns_settled(&self) -> bool {
        self.txns.held.is_empty()
            && self.txns.locks.is_empty()
            && self.txns.records.values().all(|r| r.status != TxnStatus::Pending)
    }

    /// Another transaction's write intent on `key`, which a read must look into.
    pub fn intent(&self, key: &[u8]) -> Option<LockInfo> {
        if self.txns.locks.is_empty() {
            return None;
        }
        self.txns.blocking(key, None, false)
    }

    /// The write intents in `[start, end)`.
    pub fn intents_in(&self, start: &[u8], end: Option<&[u8]>) -> Vec<LockInfo> {
        if self.txns.locks.is_empty() {
            return Vec::new();
        }
        self.txns.intents_in(start, end)
    }

    /// A lock of another transaction in the way of `part`.
    fn part_blocked(
        &self,
        part: &TxnPart,
        me: Option<crate::range::txn::TxnId>,
    ) -> Option<LockInfo> {
        if self.txns.held.is_empty() {
            return None;
        }
        let reads = part.reads.iter().map(|r| self.txns.blocking(&r.key, me, false));
        let writes = part.writes.iter().map(|w| self.txns.blocking(&w.key, me, true));
        let spans =
            part.spans.iter().map(|s| self.txns.blocking_span(&s.start, s.end.as_deref(), me));
        reads.chain(writes).chain(spans).flatten().next()
    }

    /// The first read of `part` that is no longer current.
    fn part_invalid(&self, part: &TxnPart) -> Option<Vec<u8>> {
        for read in &part.reads {
            if self.mod_revision(&read.key) != read.revision {
                return Some(read.key.clone());
            }
        }
        for span in &part.spans {
            if !self.span_unchanged(span) {
                return Some(span.start.clone());
            }
        }
        None
    }

    /// The revision of the newest version of `key` if it is a value, else 0.
    pub fn mod_revision(&self, key: &[u8]) -> u64 {
        match self.map.get(key).and_then(|versions| versions.last()) {
            Some(Version { revision, value: Some(_) }) => *revision,
            _ => 0,
        }
    }

    fn span_unchanged(&self, span: &SpanCheck) -> bool {
        let upper = span.end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let range = self.map.range::<[u8], _>((Bound::Included(span.start.as_slice()), upper));
        let mut live = range.filter_map(|(key, versions)| match versions.last() {
            Some(Version { revision, value: Some(_) }) => Some((key, *revision)),
            _ => None,
        });
        let mut seen = span.seen.iter();
        loop {
            match (live.next(), seen.next()) {
                (None, None) => return true,
                (Some((key, revision)), Some(ReadCheck { key: want, revision: at }))
                    if key.as_slice() == want.as_slice() && revision == *at => {}
                _ => return false,
            }
        }
    }

    /// Records a client's result, bounding the session and the session table.
    fn remember(&mut self, id: RequestId, index: u64, result: CommandResult) {
        let session = self.sessions.entry(id.client).or_default();
        session.results.insert(id.seq, result);
        session.last_revision = index;
        while session.results.len() > SESSION_RESULTS_MAX {
            session.results.pop_oldest();
        }
        if self.sessions.len() > SESSIONS_MAX + SESSIONS_MAX / 8 {
            let mut by_age: Vec<(u64, u64)> =
                self.sessions.iter().map(|(client, s)| (s.last_revision, *client)).collect();
            by_age.sort_unstable();
            let excess = self.sessions.len() - SESSIONS_MAX;
            for (_, client) in by_age.into_iter().take(excess) {
                self.sessions.remove(&client);
            }
        }
    }

    /// Advances the applied index over an entry that writes nothing.
    ///
    /// # Panics
    /// If `index <= applied`.
    pub fn apply_noop(&mut self, index: u64) {
        self.advance_applied(index);
        self.sweep();
    }

    /// Every `SWEEP_EVERY` applied entries, prunes the next `SWEEP_KEYS` keys of the
    /// key space, round and round: one descent of the map per batch.
    fn sweep(&mut self) {
        if self.settings.history_revisions == u64::MAX {
            return;
        }
        self.unswept += 1;
        if self.unswept < SWEEP_EVERY {
            return;
        }
        self.unswept = 0;
        let compacted = self.compacted();
        let mut gone = Vec::new();
        let mut last = None;
        let mut visited = 0;
        let after = (Bound::Excluded(self.sweep_after.as_slice()), Bound::Unbounded);
        for (key, versions) in self.map.range_mut::<[u8], _>(after).take(SWEEP_KEYS) {
            prune(versions, compacted);
            if is_old_tombstone(versions, compacted) {
                gone.push(key.clone());
            }
            last = Some(key);
            visited += 1;
        }
        // Past the last key: round again from the first one next time.
        let next = if visited < SWEEP_KEYS { None } else { last.cloned() };
        self.sweep_after = next.unwrap_or_default();
        for key in gone {
            self.map.remove(key.as_slice());
        }
    }

    fn advance_applied(&mut self, index: u64) {
        assert!(index > self.applied, "apply index {index} <= applied {}", self.applied);
        self.applied = index;
    }

    /// Whether the newest version of `key` is a value.
    fn is_live(&self, key: &[u8]) -> bool {
        let newest = self.map.get(key).and_then(|versions| versions.last());
        newest.is_some_and(|version| version.value.is_some())
    }

    fn push_version(&mut self, key: &[u8], revision: u64, value: Option<Vec<u8>>) {
        let value_len = value.as_ref().map(Vec::len);
        // One search by slice (`entry` would copy the key even when it exists); a new
        // key costs a second one.
        let versions = match self.map.get_mut(key) {
            Some(versions) => versions,
            None => self.map.entry(Key::from_slice(key)).or_default(),
        };
        let was_live = versions.last().and_then(|version| version.value.as_ref()).map(|v| v.len());
        if let Some(last) = versions.last() {
            assert!(
                last.revision < revision,
                "key {key:?}: revision {revision} after {}",
                last.revision
            );
        }
        Arc::make_mut(versions).push(Version { revision, value: value.map(bytes::Bytes::from) });
        let compacted = self.applied.saturating_sub(self.settings.history_revisions);
        prune(versions, compacted);
        if is_old_tombstone(versions, compacted) {
            self.map.remove(key);
        }
        let now_bytes = value_len.map(|len| (key.len() + len) as u64);
        match (was_live, now_bytes) {
            (None, Some(bytes)) => {
                self.live_keys += 1;
                self.live_bytes += bytes;
            }
            (Some(old), None) => {
                self.live_keys -= 1;
                self.live_bytes -= (key.len() + old) as u64;
            }
            (Some(old), Some(bytes)) => {
                self.live_bytes = self.live_bytes - (key.len() + old) as u64 + bytes;
            }
            (None, None) => {}
        }
    }

    /// The revision of the newest write this state holds (a version, a transaction's
    /// decision, a client's write): a state captured under a freeze holds none above
    /// the freeze's index (src/backup/ checks it).
    pub fn newest_write(&self) -> u64 {
        let versions = self.map.values().filter_map(|versions| versions.last());
        let versions = versions.map(|version| version.revision).max().unwrap_or(0);
        let records = self.txns.records.values().map(|record| record.revision).max();
        let sessions = self.sessions.values().map(|session| session.last_revision).max();
        versions.max(records.unwrap_or(0)).max(sessions.unwrap_or(0))
    }

    /// The revision of `key`'s newest version, a tombstone's included (0: none).
    pub fn last_revision(&self, key: &[u8]) -> u64 {
        self.map.get(key).and_then(|versions| versions.last()).map_or(0, |v| v.revision)
    }

    /// The backup holding this range still, if any.
    pub fn freeze(&self) -> Option<Freeze> {
        self.freeze
    }

    /// Replaces the versions of `items`' keys with one version each at revision 0, as
    /// `bootstrap` writes them: the range descriptors of a cluster restored from a
    /// backup (src/backup/restore.rs), which name the new cluster's nodes. Any
    /// freeze the image was captured under is lifted (the backup's, not the new
    /// cluster's).
    pub fn rebootstrap(&mut self, items: Vec<(Vec<u8>, Vec<u8>)>) {
        self.freeze = None;
        for (key, value) in items {
            let version = Version { revision: 0, value: Some(value.into()) };
            self.map.insert(Key::from_slice(&key), Arc::new(vec![version]));
        }
        self.recount();
    }

    /// The index of the last applied entry: the newest readable revision.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Number of live keys at the newest revision.
    pub fn len(&self) -> usize {
        usize::try_from(self.live_keys).expect("key count fits in memory")
    }

    /// Whether no key is live at the newest revision.
    pub fn is_empty(&self) -> bool {
        self.live_keys == 0
    }

    /// Checks a read revision (None = latest) and resolves it.
    fn read_revision(&self, revision: Option<u64>) -> Result<u64, RevisionUnavailable> {
        let revision = revision.unwrap_or(self.applied);
        let first = self.compacted();
        if revision > self.applied || revision < first {
            return Err(RevisionUnavailable { revision, first, last: self.applied });
        }
        Ok(revision)
    }

    /// The version of a key visible at `revision`, if it is a value.
    fn visible(key: &[u8], versions: &[Version], revision: u64) -> Option<KeyValue> {
        let count = versions.partition_point(|version| version.revision <= revision);
        let version = versions[..count].last()?;
        let value = version.value.as_ref()?;
        Some(KeyValue { key: key.to_vec(), value: value.to_vec(), revision: version.revision })
    }

    /// The value of `key` as of `revision` (None = latest).
    ///
    /// # Errors
    /// `RevisionUnavailable` when `revision` is beyond the applied index.
    pub fn get(
        &self,
        key: &[u8],
        revision: Option<u64>,
    ) -> Result<Option<KeyValue>, RevisionUnavailable> {
        let revision = self.read_revision(revision)?;
        Ok(self.map.get(key).and_then(|versions| Self::visible(key, versions, revision)))
    }

    /// Live keys in `[start, end)` at `revision`, at most `limit` (0 = no limit).
    ///
    /// # Errors
    /// `RevisionUnavailable` when `revision` is beyond the applied index.
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u64,
        revision: Option<u64>,
    ) -> Result<Vec<KeyValue>, RevisionUnavailable> {
        let revision = self.read_revision(revision)?;
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let range = self.map.range::<[u8], _>((Bound::Included(start), upper));
        let visible = range.filter_map(|(key, versions)| Self::visible(key, versions, revision));
        let limit =
            if limit == 0 { usize::MAX } else { usize::try_from(limit).unwrap_or(usize::MAX) };
        Ok(visible.take(limit).collect())
    }

    /// The whole state (versions, applied index, client table) as bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let image = KvImageRef {
            format_version: SNAPSHOT_FORMAT_VERSION,
            applied: self.applied,
            map: &self.map,
            sessions: &self.sessions,
            txns: &self.txns,
            settings: &self.settings,
            freeze: &self.freeze,
            span: &self.span,
        };
        bincode::serde::encode_to_vec(&image, bincode::config::standard())
            .expect("KvImage always encodes")
    }

    /// The inverse of `snapshot`.
    ///
    /// # Errors
    /// `SnapshotDecodeError` when the bytes do not decode, have another format
    /// version, or break the store's invariants.
    pub fn restore(data: &[u8]) -> Result<KvStore, SnapshotDecodeError> {
        // The version first (the image's first field), so that an image of another
        // layout is refused for its version rather than as undecodable.
        let (format_version, _): (u32, usize) =
            bincode::serde::decode_from_slice(data, bincode::config::standard())
                .map_err(|e| SnapshotDecodeError(e.to_string()))?;
        if !(2..=SNAPSHOT_FORMAT_VERSION).contains(&format_version) {
            let reason = format!(
                "image format version {format_version}; this rangedb reads version \
                 {SNAPSHOT_FORMAT_VERSION} (a newer rangedb wrote it: upgrade this node)"
            );
            return Err(SnapshotDecodeError(reason));
        }
        // Images from before the settings were replicated: the default a new range
        // starts with, as on every replica restoring the same image.
        let settings = RangeSettings::default();
        // An image from before version 4: no settings (a new range's) and no freeze.
        let upgraded = |format_version, applied, map, sessions, txns| KvImage {
            format_version,
            applied,
            map,
            sessions,
            txns,
            settings,
            freeze: None,
            span: None,
        };
        let decoded = if format_version == 2 {
            bincode::serde::decode_from_slice::<KvImageV2, _>(data, bincode::config::standard())
                .map(|(old, used)| {
                    let KvImageV2 { format_version, applied, map, sessions } = old;
                    (upgraded(format_version, applied, map, sessions, TxnTable::default()), used)
                })
        } else if format_version == 3 {
            bincode::serde::decode_from_slice::<KvImageV3, _>(data, bincode::config::standard())
                .map(|(old, used)| {
                    let KvImageV3 { format_version, applied, map, sessions, txns } = old;
                    (upgraded(format_version, applied, map, sessions, txns), used)
                })
        } else if format_version == 4 {
            // Before the span: the node sets it from the range's descriptor.
            bincode::serde::decode_from_slice::<KvImageV4, _>(data, bincode::config::standard())
                .map(|(old, used)| {
                    let KvImageV4 {
                        format_version,
                        applied,
                        map,
                        sessions,
                        txns,
                        settings,
                        freeze,
                    } = old;
                    let image = KvImage {
                        format_version,
                        applied,
                        map,
                        sessions,
                        txns,
                        settings,
                        freeze,
                        span: None,
                    };
                    (image, used)
                })
        } else {
            bincode::serde::decode_from_slice(data, bincode::config::standard())
        };
        let (image, used): (KvImage, usize) =
            decoded.map_err(|e| SnapshotDecodeError(e.to_string()))?;
        if used != data.len() {
            return Err(SnapshotDecodeError(format!("{} trailing bytes", data.len() - used)));
        }
        debug_assert_eq!(image.format_version, format_version);
        for (key, versions) in &image.map {
            let increasing = versions.windows(2).all(|pair| pair[0].revision < pair[1].revision);
            let last = versions
                .last()
                .ok_or_else(|| SnapshotDecodeError(format!("key {key:?} has no versions")))?;
            if !increasing || last.revision > image.applied {
                return Err(SnapshotDecodeError(format!("key {key:?} has revisions out of order")));
            }
        }
        let mut store = KvStore {
            map: image
                .map
                .into_iter()
                .map(|(key, versions)| (Key::from_vec(key), Arc::new(versions)))
                .collect(),
            applied: image.applied,
            sessions: image.sessions,
            txns: {
                let mut txns = image.txns;
                txns.drop_resolved_records();
                txns
            },
            settings: image.settings,
            freeze: image.freeze,
            span: image.span,
            ..KvStore::default()
        };
        store.recount();
        Ok(store)
    }
}

/// Drops the versions no read at `compacted` or later can see: every one before the
/// newest at or below `compacted`.
fn prune(versions: &mut Versions, compacted: u64) {
    let at_or_below = versions.partition_point(|version| version.revision <= compacted);
    if at_or_below > 1 {
        Arc::make_mut(versions).drain(..at_or_below - 1);
    }
}

/// Whether a pruned key is nothing but a tombstone no read can see past: the key can go.
fn is_old_tombstone(versions: &[Version], compacted: u64) -> bool {
    matches!(versions, [only] if only.value.is_none() && only.revision <= compacted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Command {
        Command { request_id: None, op: WriteOp::Put { key: key.into(), value: value.into() } }
    }

    fn delete(key: &str) -> Command {
        Command { request_id: None, op: WriteOp::Delete { key: key.into() } }
    }

    fn kv(key: &str, value: &str, revision: u64) -> KeyValue {
        KeyValue { key: key.into(), value: value.into(), revision }
    }

    /// A naive model: the full map after every index.
    type Model = Vec<BTreeMap<Vec<u8>, (Vec<u8>, u64)>>;

    fn model_scan(
        model: &Model,
        revision: u64,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u64,
    ) -> Vec<KeyValue> {
        let state = &model[revision as usize];
        let items = state
            .iter()
            .filter(|(k, _)| k.as_slice() >= start && end.is_none_or(|e| k.as_slice() < e));
        let items =
            items.map(|(k, (v, r))| KeyValue { key: k.clone(), value: v.clone(), revision: *r });
        items.take(if limit == 0 { usize::MAX } else { limit as usize }).collect()
    }

    fn txn_step(op: TxnOp) -> Command {
        Command { request_id: None, op: WriteOp::Txn(op) }
    }

    fn part(reads: &[(&str, u64)], writes: &[(&str, Option<&str>)]) -> TxnPart {
        TxnPart {
            reads: reads
                .iter()
                .map(|(k, r)| ReadCheck { key: k.as_bytes().to_vec(), revision: *r })
                .collect(),
            spans: Vec::new(),
            writes: writes
                .iter()
                .map(|(k, v)| TxnWrite {
                    key: k.as_bytes().to_vec(),
                    value: v.map(|v| v.as_bytes().to_vec()),
                })
                .collect(),
        }
    }

    const T1: crate::range::txn::TxnId = crate::range::txn::TxnId { client: 1, seq: 1 };
    const T2: crate::range::txn::TxnId = crate::range::txn::TxnId { client: 2, seq: 1 };

    #[test]
    fn a_single_range_commit_validates_its_reads() {
        let mut store = KvStore::new();
        store.apply(1, &put("a", "1"));
        // Read a at 1 and b absent: still current, so it commits at 3.
        let ok = TxnOp::Commit1pc { part: part(&[("a", 1), ("b", 0)], &[("b", Some("x"))]) };
        store.apply(2, &put("c", "other"));
        assert_eq!(
            store.apply(3, &txn_step(ok)),
            CommandResult::Txn(TxnResult::Committed { revision: 3 })
        );
        assert_eq!(store.get(b"b", None).unwrap(), Some(kv("b", "x", 3)));
        // A read of b at 0 (absent) is stale now: a conflict, nothing written.
        let stale = TxnOp::Commit1pc { part: part(&[("b", 0)], &[("a", Some("2"))]) };
        let conflict = CommandResult::Txn(TxnResult::Conflict { key: b"b".to_vec() });
        assert_eq!(store.apply(4, &txn_step(stale)), conflict);
        assert_eq!(store.get(b"a", None).unwrap(), Some(kv("a", "1", 1)));
        // A deleted key reads as absent again: revision 0 is current.
        store.apply(5, &delete("b"));
        let absent = TxnOp::Commit1pc { part: part(&[("b", 0)], &[]) };
        assert_eq!(
            store.apply(6, &txn_step(absent)),
            CommandResult::Txn(TxnResult::Committed { revision: 6 })
        );
    }

    fn whole_span() -> Span {
        Span { start: Vec::new(), end: None, generation: 1 }
    }

    fn split(key: &str, right: u64, generation: u64) -> Command {
        let op = WriteOp::Split { key: key.into(), right: RangeId(right), generation };
        Command { request_id: None, op }
    }

    #[test]
    fn a_split_moves_the_right_half_with_its_history_locks_records_and_sessions() {
        let mut store = KvStore::new_range();
        store.adopt_span(whole_span());
        store.apply(1, &put("a", "1"));
        store.apply(2, &put("m", "1"));
        let retried = Command {
            request_id: Some(RequestId { client: 9, seq: 1 }),
            op: WriteOp::Put { key: b"x".to_vec(), value: b"1".to_vec() },
        };
        store.apply(3, &retried);
        store.apply(4, &put("m", "2"));
        // A transaction reading a and writing y, anchored at y: its lock on y and its
        // record go right, its read lock on a stays left.
        let prepare = TxnOp::Prepare {
            txn: T1,
            anchor: b"y".to_vec(),
            participants: vec![b"y".to_vec()],
            part: part(&[("a", 1)], &[("y", Some("t"))]),
        };
        store.apply(5, &txn_step(prepare));
        assert_eq!(
            store.apply(6, &split("k", 7, 2)),
            CommandResult::SplitRefused {
                reason: "the range is at generation 1, not 2 (split or merged since)".into()
            }
        );
        assert!(matches!(store.apply(7, &split("", 7, 1)), CommandResult::SplitRefused { .. }));
        assert_eq!(store.apply(8, &split("k", 7, 1)), CommandResult::Split { right: RangeId(7) });
        let (id, mut right) = store.take_split().expect("split");
        assert_eq!(id, RangeId(7));
        assert_eq!(
            store.span(),
            Some(&Span { start: vec![], end: Some(b"k".to_vec()), generation: 2 })
        );
        assert_eq!(right.span(), Some(&Span { start: b"k".to_vec(), end: None, generation: 2 }));
        assert_eq!((store.applied(), right.applied()), (8, 8));
        assert_eq!((store.len(), right.len()), (1, 2));
        assert_eq!(store.live_bytes() + right.live_bytes(), 6);
        // History moved: m as of revision 2 reads on the right.
        assert_eq!(right.get(b"m", Some(2)).unwrap(), Some(kv("m", "1", 2)));
        assert_eq!(store.get(b"m", None).unwrap(), None);
        // Locks and records: y's intent and T1's record on the right, a's read lock left.
        assert!(right.intent(b"y").is_some());
        assert!(store.txns.locks.contains_key(b"a".as_slice()));
        assert!(!store.txns.locks.contains_key(b"y".as_slice()));
        let pending = |store: &KvStore| {
            matches!(
                store.txn_status(T1),
                TxnResult::Status { status: Some(TxnStatus::Pending), .. }
            )
        };
        assert!(pending(&right) && !pending(&store));
        assert!(store.txns.records.is_empty());
        // The retry of a write applied before the split is answered from the copy.
        assert_eq!(right.apply(9, &retried), CommandResult::Put { revision: 3 });
        // Keys the left range no longer owns are refused there, not applied.
        assert_eq!(store.apply(9, &put("z", "1")), CommandResult::WrongRange);
        assert_eq!(right.apply(10, &put("b", "1")), CommandResult::WrongRange);
        assert_eq!(store.apply(10, &put("b", "1")), CommandResult::Put { revision: 10 });
        // Both halves travel in snapshots with their spans.
        let restored = KvStore::restore(&right.snapshot()).unwrap();
        assert_eq!(restored, right);
    }

    #[test]
    fn the_meta_range_plans_splits_with_ids_never_reused() {
        let descriptor = |id, start: &str, end: Option<&str>| RangeDescriptor {
            id: RangeId(id),
            start: start.into(),
            end: end.map(Into::into),
            generation: 1,
            replicas: vec![crate::raft::NodeId(1)],
        };
        let items = [
            descriptor(1, "", Some("_/")),
            descriptor(2, "_/", Some("_0")),
            descriptor(3, "_0", None),
        ]
        .iter()
        .map(|d| {
            (
                descriptor_key(d.id),
                bincode::serde::encode_to_vec(d, bincode::config::standard()).unwrap(),
            )
        })
        .collect();
        let mut meta = KvStore::bootstrap(0, items);
        meta.adopt_span(Span { start: b"_/".to_vec(), end: Some(b"_0".to_vec()), generation: 1 });
        let plan = |range, generation, key: &str| Command {
            request_id: None,
            op: WriteOp::PlanSplit { range: RangeId(range), generation, key: key.into() },
        };
        let CommandResult::SplitPlanned { left, right } = meta.apply(1, &plan(3, 1, "m")) else {
            panic!("planned")
        };
        assert_eq!(
            (left.id, left.end.as_deref(), left.generation),
            (RangeId(3), Some(&b"m"[..]), 2)
        );
        assert_eq!(
            (right.id, right.start.as_slice(), right.end, right.generation),
            (RangeId(4), &b"m"[..], None, 2)
        );
        // A second plan of the same generation is refused; the next one gets id 5.
        assert!(matches!(meta.apply(2, &plan(3, 1, "f")), CommandResult::SplitRefused { .. }));
        assert!(matches!(meta.apply(3, &plan(4, 2, "m")), CommandResult::SplitRefused { .. }));
        let CommandResult::SplitPlanned { right, .. } = meta.apply(4, &plan(4, 2, "t")) else {
            panic!("planned")
        };
        assert_eq!(right.id, RangeId(5));
        assert_eq!(meta.descriptors().len(), 5);
        // A plan for a range whose descriptor is not in this range's span is refused.
        let mut data = KvStore::new_range();
        data.adopt_span(Span { start: b"a".to_vec(), end: Some(b"b".to_vec()), generation: 1 });
        assert_eq!(data.apply(1, &plan(3, 1, "m")), CommandResult::WrongRange);
    }

    #[test]
    fn prepared_locks_hold_off_writers_until_the_decision() {
        let mut store = KvStore::new();
        store.apply(1, &put("a", "1"));
        let prepare = TxnOp::Prepare {
            txn: T1,
            anchor: b"a".to_vec(),
            participants: vec![b"a".to_vec(), b"z".to_vec()],
            part: part(&[("a", 1), ("r", 0)], &[("a", Some("2"))]),
        };
        assert_eq!(
            store.apply(2, &txn_step(prepare.clone())),
            CommandResult::Txn(TxnResult::Prepared)
        );
        // A retry of the prepare is answered as prepared, without a second lock.
        assert_eq!(store.apply(3, &txn_step(prepare)), CommandResult::Txn(TxnResult::Prepared));
        // A put of the intent's key and of the read-locked key wait; a read sees the
        // committed value and the intent.
        assert!(
            matches!(store.apply(4, &put("a", "x")), CommandResult::Locked(l) if l.txn == T1 && l.write)
        );
        assert!(
            matches!(store.apply(5, &put("r", "x")), CommandResult::Locked(l) if l.txn == T1 && !l.write)
        );
        assert_eq!(store.get(b"a", None).unwrap(), Some(kv("a", "1", 1)));
        assert_eq!(store.intent(b"a").map(|l| l.txn), Some(T1));
        assert_eq!(store.intent(b"r"), None);
        // Another transaction reading a is refused while T1 holds it.
        let other = TxnOp::Commit1pc { part: part(&[("a", 1)], &[("q", Some("1"))]) };
        assert!(matches!(
            store.apply(6, &txn_step(other)),
            CommandResult::Txn(TxnResult::Locked(_))
        ));
        assert!(!store.txns_settled());
        let decide = TxnOp::Decide { txn: T1, anchor: b"a".to_vec(), commit: true };
        assert_eq!(
            store.apply(7, &txn_step(decide.clone())),
            CommandResult::Txn(TxnResult::Committed { revision: 7 })
        );
        assert_eq!(store.get(b"a", None).unwrap(), Some(kv("a", "2", 7)));
        assert_eq!(store.intent(b"a"), None);
        // The decision is idempotent; a late prepare of the finished T1 is refused.
        assert_eq!(
            store.apply(8, &txn_step(decide)),
            CommandResult::Txn(TxnResult::Committed { revision: 7 })
        );
        let late = TxnOp::Prepare {
            txn: T1,
            anchor: b"a".to_vec(),
            participants: vec![],
            part: part(&[], &[("r", Some("late"))]),
        };
        assert_eq!(store.apply(9, &txn_step(late)), CommandResult::Txn(TxnResult::Aborted));
        assert_eq!(store.apply(10, &put("r", "x")), CommandResult::Put { revision: 10 });
        // The record stays until forgotten; then nothing is outstanding.
        assert_eq!(store.txn_outstanding(10).len(), 1);
        store.apply(11, &txn_step(TxnOp::Forget { txn: T1 }));
        assert!(store.txn_outstanding(10).is_empty());
        assert!(store.txns_settled());
    }

    #[test]
    fn a_push_aborts_a_pending_transaction_and_bars_one_not_yet_prepared() {
        let mut store = KvStore::new();
        let prepare = |txn, index| {
            let op = TxnOp::Prepare {
                txn,
                anchor: b"a".to_vec(),
                participants: vec![b"a".to_vec(), b"z".to_vec()],
                part: part(&[], &[("a", Some(if index == 1 { "t1" } else { "t2" }))]),
            };
            txn_step(op)
        };
        assert_eq!(store.apply(1, &prepare(T1, 1)), CommandResult::Txn(TxnResult::Prepared));
        let pushed = store.apply(2, &txn_step(TxnOp::Push { txn: T1, anchor: b"a".to_vec() }));
        assert!(matches!(
            pushed,
            CommandResult::Txn(TxnResult::Status { status: Some(TxnStatus::Aborted), .. })
        ));
        assert_eq!(store.get(b"a", None).unwrap(), None);
        assert_eq!(store.intent(b"a"), None);
        // Its coordinator's decision comes too late.
        let decide = TxnOp::Decide { txn: T1, anchor: b"a".to_vec(), commit: true };
        assert_eq!(store.apply(3, &txn_step(decide)), CommandResult::Txn(TxnResult::Aborted));
        // T2 pushed before its prepare arrives: an abort record bars the prepare.
        store.apply(4, &txn_step(TxnOp::Push { txn: T2, anchor: b"a".to_vec() }));
        assert_eq!(store.apply(5, &prepare(T2, 5)), CommandResult::Txn(TxnResult::Aborted));
        assert!(store.txns_settled());
    }

    #[test]
    fn transaction_state_survives_a_snapshot_and_a_version_2_image_is_read() {
        let mut store = KvStore::new();
        store.apply(1, &put("a", "1"));
        let op = TxnOp::Prepare {
            txn: T1,
            anchor: b"a".to_vec(),
            participants: vec![b"a".to_vec(), b"z".to_vec()],
            part: part(&[("a", 1)], &[("b", Some("2"))]),
        };
        store.apply(2, &txn_step(op));
        let restored = KvStore::restore(&store.snapshot()).unwrap();
        assert_eq!(restored, store);
        assert_eq!(restored.intent(b"b").map(|l| l.txn), Some(T1));
        // A version-2 image (no transaction table) is still read.
        let old = (
            2u32,
            1u64,
            BTreeMap::from([(
                b"a".to_vec(),
                vec![Version { revision: 1, value: Some(bytes::Bytes::from_static(b"1")) }],
            )]),
            BTreeMap::<u64, ClientSession>::new(),
        );
        let bytes = bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap();
        let restored = KvStore::restore(&bytes).unwrap();
        assert_eq!(restored.get(b"a", None).unwrap(), Some(kv("a", "1", 1)));
        assert!(restored.txns_settled());
    }

    /// Random transaction steps and plain writes over a few keys: the lock table
    /// always agrees with what each transaction holds, a finished transaction holds
    /// nothing, a pending record's transaction holds its locks, and the state survives a
    /// snapshot.
    #[test]
    fn transaction_tables_stay_consistent_under_random_steps() {
        use crate::range::txn::TxnId;
        let mut store = KvStore::new();
        let mut seed: u64 = 0x5eed_0f7a_b1e5;
        let mut next = || {
            seed = crate::hash::splitmix64(seed);
            seed
        };
        let key = |n: u64| format!("k{}", n % 6);
        for index in 1..=3_000u64 {
            let txn = TxnId { client: 1, seq: next() % 12 };
            let roll = next() % 10;
            let op = match roll {
                0 | 1 => {
                    let k = key(next());
                    let revision = store.mod_revision(k.as_bytes());
                    let reads = [(k.as_str(), revision)];
                    let writes = [(key(next()), Some("v"))];
                    let writes: Vec<(&str, Option<&str>)> =
                        writes.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                    let anchor = next() % 2 == 0;
                    TxnOp::Prepare {
                        txn,
                        anchor: b"k0".to_vec(),
                        participants: if anchor {
                            vec![b"k0".to_vec(), b"z".to_vec()]
                        } else {
                            vec![]
                        },
                        part: part(&reads, &writes),
                    }
                }
                2 => TxnOp::Decide { txn, anchor: b"k0".to_vec(), commit: next() % 3 != 0 },
                3 => TxnOp::Resolve { txn, commit: next() % 2 == 0 },
                4 => TxnOp::Push { txn, anchor: b"k0".to_vec() },
                5 => TxnOp::Forget { txn },
                6 => {
                    let k = key(next());
                    let revision = store.mod_revision(k.as_bytes());
                    TxnOp::Commit1pc {
                        part: part(&[(k.as_str(), revision)], &[(key(next()).as_str(), None)]),
                    }
                }
                _ => {
                    store.apply(index, &put(&key(next()), "plain"));
                    continue;
                }
            };
            store.apply(index, &txn_step(op));
            let tables = &store.txns;
            for (k, lock) in &tables.locks {
                let holders = lock.writer.iter().map(|(t, _)| t).chain(lock.readers.iter());
                for holder in holders {
                    let held = tables.held.get(holder).expect("a lock's holder holds it");
                    assert!(held.keys.contains(k), "{holder} holds {k:?} in the table only");
                }
            }
            for (held_by, held) in &tables.held {
                assert!(
                    !tables.finished.contains_key(held_by),
                    "finished {held_by} still holds locks"
                );
                for k in &held.keys {
                    assert!(tables.locks.contains_key(k), "{held_by} lost its lock on {k:?}");
                }
            }
            for (id, record) in &tables.records {
                if record.status == TxnStatus::Pending {
                    assert!(tables.held.contains_key(id), "pending {id} without its locks");
                }
            }
            if index % 250 == 0 {
                assert_eq!(KvStore::restore(&store.snapshot()).unwrap(), store);
            }
        }
    }

    #[test]
    fn against_model() {
        let mut store = KvStore::new();
        let mut model: Model = vec![BTreeMap::new()];
        // A deterministic pseudo-random workload over a few keys.
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        for index in 1..=400u64 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let key = format!("k{}", (seed >> 33) % 12);
            let mut state = model.last().unwrap().clone();
            match (seed >> 20) % 5 {
                0 => store.apply_noop(index),
                1 => {
                    let existed = state.remove(key.as_bytes()).is_some();
                    let result = store.apply(index, &delete(&key));
                    assert_eq!(result, CommandResult::Delete { revision: index, existed });
                }
                _ => {
                    let value = format!("v{index}");
                    state.insert(key.clone().into_bytes(), (value.clone().into_bytes(), index));
                    assert_eq!(
                        store.apply(index, &put(&key, &value)),
                        CommandResult::Put { revision: index }
                    );
                }
            }
            model.push(state);
            assert_eq!(store.len(), model.last().unwrap().len());
        }
        for revision in [0, 1, 50, 199, 400] {
            for (start, end, limit) in
                [("", None, 0), ("k3", Some("k7"), 0), ("k1", None, 3), ("k5", Some("k2"), 0)]
            {
                let end = end.map(str::as_bytes);
                let got = store.scan(start.as_bytes(), end, limit, Some(revision)).unwrap();
                assert_eq!(
                    got,
                    model_scan(&model, revision, start.as_bytes(), end, limit),
                    "rev {revision}"
                );
            }
            for k in 0..12 {
                let key = format!("k{k}");
                let want = model[revision as usize].get(key.as_bytes()).map(|(v, r)| KeyValue {
                    key: key.clone().into_bytes(),
                    value: v.clone(),
                    revision: *r,
                });
                assert_eq!(store.get(key.as_bytes(), Some(revision)).unwrap(), want);
            }
        }
        assert_eq!(store.scan(b"", None, 0, None).unwrap(), model_scan(&model, 400, b"", None, 0));
        let restored = KvStore::restore(&store.snapshot()).unwrap();
        assert_eq!(restored, store);
        // The borrowed image encodes exactly as the owned one (the format is unchanged).
        let owned = KvImage {
            format_version: SNAPSHOT_FORMAT_VERSION,
            applied: store.applied,
            map: store.map.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect(),
            sessions: store.sessions.clone(),
            txns: store.txns.clone(),
            settings: store.settings,
            freeze: store.freeze,
            span: store.span.clone(),
        };
        let owned = bincode::serde::encode_to_vec(&owned, bincode::config::standard()).unwrap();
        assert_eq!(store.snapshot(), owned);
    }

    #[test]
    fn settings_change_the_history_at_their_index_and_travel_in_snapshots() {
        use crate::range::settings::RangeSettings;
        let settings = |config_revision, history_revisions| Command {
            request_id: None,
            op: WriteOp::Settings(RangeSettings { config_revision, history_revisions }),
        };
        let mut store = KvStore::new_range();
        assert_eq!(store.settings(), RangeSettings::default());
        for index in 1..=5 {
            store.apply(index, &put("a", &index.to_string()));
        }
        assert_eq!(store.get(b"a", Some(1)).unwrap(), Some(kv("a", "1", 1)));
        assert_eq!(store.apply(6, &settings(9, 2)), CommandResult::Settings);
        assert_eq!(store.compacted(), 4, "two revisions below 6 from index 6 on");
        assert!(store.get(b"a", Some(3)).is_err());
        // An older settings revision (a leader whose meta replica lagged) is ignored.
        store.apply(7, &settings(8, 100));
        assert_eq!(store.settings(), RangeSettings { config_revision: 9, history_revisions: 2 });
        let restored = KvStore::restore(&store.snapshot()).unwrap();
        assert_eq!(restored.settings(), store.settings());
        assert_eq!(restored, store);
        // An image from before settings (version 3) restores with a new range's.
        let v3 = bincode::serde::encode_to_vec(
            (3u32, store.applied, BTreeMap::<Vec<u8>, Vec<Version>>::new()),
            bincode::config::standard(),
        )
        .unwrap();
        let mut v3 = v3;
        let tail = (BTreeMap::<u64, ClientSession>::new(), TxnTable::default());
        v3.extend(bincode::serde::encode_to_vec(tail, bincode::config::standard()).unwrap());
        let old = KvStore::restore(&v3).unwrap();
        assert_eq!(old.settings(), RangeSettings::default());
    }

    #[test]
    fn a_freeze_refuses_every_write_until_its_unfreeze_and_survives_a_snapshot() {
        let freeze =
            |backup| Command { request_id: None, op: WriteOp::Freeze { backup, deadline_ms: 99 } };
        let unfreeze = |backup| Command { request_id: None, op: WriteOp::Unfreeze { backup } };
        let mut store = KvStore::new();
        store.apply(1, &put("a", "1"));
        let held = Freeze { backup: 7, index: 2, deadline_ms: 99 };
        assert_eq!(store.apply(2, &freeze(7)), CommandResult::FrozenFor(held));
        // A retried freeze of the same backup answers the same; another backup waits.
        assert_eq!(store.apply(3, &freeze(7)), CommandResult::FrozenFor(held));
        assert_eq!(store.apply(4, &freeze(8)), CommandResult::Frozen(held));
        let id = RequestId { client: 1, seq: 1 };
        let retried = Command { request_id: Some(id), ..put("a", "2") };
        assert_eq!(store.apply(5, &retried), CommandResult::Frozen(held));
        assert_eq!(store.apply(6, &delete("a")), CommandResult::Frozen(held));
        assert_eq!(store.get(b"a", None).unwrap(), Some(kv("a", "1", 1)));
        assert_eq!(store.newest_write(), 1);
        let restored = KvStore::restore(&store.snapshot()).unwrap();
        assert_eq!(restored.freeze(), Some(held));
        assert_eq!(restored, store);
        // Another backup's unfreeze lifts nothing; its own does, once.
        assert_eq!(store.apply(7, &unfreeze(8)), CommandResult::Unfrozen { held: false });
        assert_eq!(store.apply(8, &unfreeze(7)), CommandResult::Unfrozen { held: true });
        assert_eq!(store.apply(9, &unfreeze(7)), CommandResult::Unfrozen { held: false });
        // The refused write was not remembered: its retry applies now.
        assert_eq!(store.apply(10, &retried), CommandResult::Put { revision: 10 });
        assert_eq!(store.freeze(), None);
        assert_eq!(store.newest_write(), 10);
    }

    /// A copy (what a snapshot is written from) shares the versions and the
    /// sessions' results with the store, and keeps its state while the store is
    /// written on: the key written, its client's session and the history sweep.
    #[test]
    fn a_copy_keeps_its_state_while_the_store_is_written() {
        let mut store = KvStore::new_range();
        let id = |seq| RequestId { client: 5, seq };
        for index in 1..=40 {
            let command = Command { request_id: Some(id(index)), ..put("k", &index.to_string()) };
            store.apply(index, &command);
        }
        let copy = store.clone();
        let image = copy.snapshot();
        for index in 41..=200 {
            let key = if index % 2 == 0 { "k" } else { "other" };
            let command = Command { request_id: Some(id(index)), ..put(key, "later") };
            store.apply(index, &command);
        }
        assert_eq!(copy.snapshot(), image, "the copy did not change");
        assert_eq!(KvStore::restore(&image).unwrap(), copy);
        assert_ne!(store.snapshot(), image);
    }

    #[test]
    fn a_version_3_image_is_read_unfrozen() {
        let mut store = KvStore::new_range();
        store.apply(1, &put("a", "1"));
        let old = (
            3u32,
            1u64,
            store.map.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect::<BTreeMap<_, _>>(),
            store.sessions.clone(),
            store.txns.clone(),
        );
        let bytes = bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap();
        let restored = KvStore::restore(&bytes).unwrap();
        assert_eq!(restored, store);
    }

    #[test]
    fn revision_beyond_applied_is_unavailable() {
        let mut store = KvStore::new();
        store.apply(1, &put("a", "1"));
        store.apply(2, &put("a", "2"));
        assert_eq!(store.get(b"a", None).unwrap(), Some(kv("a", "2", 2)));
        assert_eq!(store.get(b"a", Some(1)).unwrap(), Some(kv("a", "1", 1)));
        assert_eq!(
            store.get(b"a", Some(3)),
            Err(RevisionUnavailable { revision: 3, first: 0, last: 2 })
        );
        assert!(store.scan(b"", None, 0, Some(9)).is_err());
    }

    #[test]
    fn delete_of_missing_key_does_not_write() {
        let mut store = KvStore::new();
        assert_eq!(
            store.apply(1, &delete("a")),
            CommandResult::Delete { revision: 1, existed: false }
        );
        assert_eq!(store.applied(), 1);
        store.apply(2, &put("a", "x"));
        assert_eq!(
            store.apply(3, &delete("a")),
            CommandResult::Delete { revision: 3, existed: true }
        );
        assert_eq!(
            store.apply(4, &delete("a")),
            CommandResult::Delete { revision: 4, existed: false }
        );
        assert_eq!(store.get(b"a", Some(2)).unwrap(), Some(kv("a", "x", 2)));
        assert_eq!(store.get(b"a", None).unwrap(), None);
        assert!(store.is_empty());
    }

    #[test]
    fn retried_request_is_applied_once() {
        let mut store = KvStore::new();
        let id = RequestId { client: 9, seq: 5 };
        let first = Command {
            request_id: Some(id),
            op: WriteOp::Put { key: b"k".to_vec(), value: b"1".to_vec() },
        };
        assert_eq!(store.apply(1, &first), CommandResult::Put { revision: 1 });
        // The same request committed again (a client retry): same result, no write.
        assert_eq!(store.apply(2, &first), CommandResult::Put { revision: 1 });
        assert_eq!(store.get(b"k", None).unwrap(), Some(kv("k", "1", 1)));
        // An older seq not seen before is a pipelined write that arrived late: it applies.
        let late = Command {
            request_id: Some(RequestId { client: 9, seq: 4 }),
            op: WriteOp::Delete { key: b"k".to_vec() },
        };
        assert_eq!(store.apply(3, &late), CommandResult::Delete { revision: 3, existed: true });
        assert_eq!(store.apply(4, &late), CommandResult::Delete { revision: 3, existed: true });
        assert_eq!(store.applied(), 4);
        assert_eq!(store.len(), 0);
        // The dedup table survives a snapshot.
        let mut restored = KvStore::restore(&store.snapshot()).unwrap();
        assert_eq!(restored.apply(5, &first), CommandResult::Put { revision: 1 });
        let next = Command {
            request_id: Some(RequestId { client: 9, seq: 6 }),
            op: WriteOp::Put { key: b"k".to_vec(), value: b"2".to_vec() },
        };
        assert_eq!(restored.apply(6, &next), CommandResult::Put { revision: 6 });
    }

    #[test]
    fn a_retry_older_than_the_session_window_is_refused_not_reapplied() {
        let mut store = KvStore::new();
        let put = |seq: u64| Command {
            request_id: Some(RequestId { client: 1, seq }),
            op: WriteOp::Put { key: b"k".to_vec(), value: seq.to_le_bytes().to_vec() },
        };
        for seq in 1..=SESSION_RESULTS_MAX as u64 + 1 {
            store.apply(seq, &put(seq));
        }
        let next = SESSION_RESULTS_MAX as u64 + 2;
        // seq 1 fell out of the window: whether it applied is no longer known.
        assert_eq!(store.apply(next, &put(1)), CommandResult::Expired);
        assert_eq!(store.get(b"k", None).unwrap().unwrap().revision, next - 1);
        // seq 2 is still remembered.
        assert_eq!(store.apply(next + 1, &put(2)), CommandResult::Put { revision: 2 });
    }

    #[test]
    fn least_recently_writing_clients_are_forgotten_first() {
        let mut store = KvStore::new();
        let put = |client: u64| Command {
            request_id: Some(RequestId { client, seq: 1 }),
            op: WriteOp::Put { key: b"k".to_vec(), value: vec![] },
        };
        let clients = (SESSIONS_MAX + SESSIONS_MAX / 8 + 1) as u64;
        for client in 1..=clients {
            store.apply(client, &put(client));
        }
        assert_eq!(store.sessions.len(), SESSIONS_MAX);
        assert!(!store.sessions.contains_key(&1), "the oldest client is evicted");
        assert!(store.sessions.contains_key(&clients), "the newest client is kept");
    }

    #[test]
    fn bootstrap_and_restore_errors() {
        let store = KvStore::bootstrap(
            3,
            vec![(b"_/r1".to_vec(), b"d1".to_vec()), (b"_/r2".to_vec(), b"d2".to_vec())],
        );
        assert_eq!(store.applied(), 3);
        assert_eq!(store.len(), 2);
        assert_eq!(store.get(b"_/r1", None).unwrap().map(|kv| kv.revision), Some(3));
        assert_eq!(store.get(b"_/r1", Some(2)).unwrap(), None);
        assert!(KvStore::restore(b"\x05garbage").is_err());
        let mut bytes = store.snapshot();
        bytes.push(0);
        assert!(KvStore::restore(&bytes).is_err());
    }

    #[test]
    #[should_panic(expected = "apply index 2 <= applied 2")]
    fn apply_out_of_order_panics() {
        let mut store = KvStore::new();
        store.apply_noop(2);
        store.apply_noop(2);
    }

    #[test]
    fn session_results_encode_as_the_map_they_replaced() {
        let mut results = SessionResults::default();
        let mut map = BTreeMap::new();
        for seq in [5, 1, 9, 3, 7, 9] {
            let result = CommandResult::Put { revision: seq * 10 };
            results.insert(seq, result.clone());
            map.insert(seq, result);
        }
        let config = bincode::config::standard();
        let encoded = bincode::serde::encode_to_vec(&results, config).unwrap();
        assert_eq!(encoded, bincode::serde::encode_to_vec(&map, config).unwrap());
        let (decoded, _): (SessionResults, usize) =
            bincode::serde::decode_from_slice(&encoded, config).unwrap();
        assert_eq!(decoded, results);
        assert_eq!(results.oldest(), Some(1));
        assert_eq!(results.get(7), Some(&CommandResult::Put { revision: 70 }));
        assert_eq!(results.get(4), None);
    }

    fn versions(store: &KvStore) -> usize {
        store.map.values().map(|versions| versions.len()).sum()
    }

    #[test]
    fn bounded_history_keeps_about_history_revisions_of_versions() {
        let mut store = KvStore::new();
        store.set_history(10);
        let mut index = 0;
        let mut next = || {
            index += 1;
            index
        };
        // A hot key: its own writes prune it.
        for i in 0..1000 {
            store.apply(next(), &put("hot", &format!("v{i}")));
        }
        assert_eq!(store.map[b"hot".as_slice()].len(), 11);
        // Cold keys and a deleted one: the sweep prunes and removes them.
        for round in 0..50 {
            for key in ["a", "b", "c", "d", "gone"] {
                store.apply(next(), &put(key, &format!("r{round}")));
            }
        }
        store.apply(next(), &delete("gone"));
        assert!(versions(&store) > 10, "the cold keys keep their recent versions");
        for _ in 0..200 {
            store.apply_noop(next());
        }
        assert_eq!(versions(&store), 5, "one version each of hot, a, b, c, d");
        assert!(!store.map.contains_key(b"gone".as_slice()));
        let first = store.compacted();
        assert_eq!(first, store.applied() - 10);
        assert_eq!(
            store.get(b"a", Some(first - 1)),
            Err(RevisionUnavailable { revision: first - 1, first, last: store.applied() })
        );
        assert_eq!(store.get(b"a", Some(first)).unwrap().unwrap().value, b"r49");
        assert_eq!(store.get(b"gone", Some(first)).unwrap(), None);
    }
}
