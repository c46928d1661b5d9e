//! The node: one event loop driving every range replica hosted here, the listener,
//! and the boot sequence that rebuilds every replica from the data directory.

pub mod backup;
pub mod bootstrap;
pub mod config;
pub mod event_loop;
pub mod liveness;
pub mod members;
pub mod replica;
pub mod replicas;
pub mod routes;
pub mod server;
pub mod snapshotter;
pub mod split;
pub mod telemetry;
pub mod ticker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::env::real_disk::RealDisk;
use crate::env::real_net::TcpNetwork;
use crate::env::{Clock, Disk, RealClock};
use crate::raft::{
    self, ConfState, Entry, HardState, MemStorage, NodeId, RaftGroup, Snapshot, SnapshotMeta,
};
use crate::range::descriptor::{
    default_split_keys, descriptor_key, initial_descriptors, RangeDescriptor, RangeId,
    RESERVED_PREFIX,
};
use crate::range::kv::KvStore;
use crate::storage::datadir::DATA_VERSION;
use crate::storage::{
    ClusterMeta, DataDir, SnapshotStore, StorageError, Wal, WalOptions, WalRecord, WalRecovery,
};
pub use event_loop::LeaderPlacement;
use event_loop::{Event, Node, Tuning};
use replica::Replica;
use telemetry::{Readiness, Telemetry};
use ticker::Ticker;

/// How a `rangedb server` was asked to run.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub node_id: NodeId,
    /// Address to listen on for clients and peers.
    pub listen: String,
    /// Every member of the cluster including this node (id -> address). A single
    /// entry (this node) is a single-node cluster.
    pub peers: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    /// Join the cluster of the member at this address (`rangedb node add` on the
    /// cluster admits it) instead of creating one; `node_id` and `peers` are then
    /// ignored (the cluster gives the id).
    pub join: Option<String>,
    /// Range boundaries when the cluster is created (ignored on restart).
    pub split_keys: Option<Vec<Vec<u8>>>,
    /// Raft tick interval.
    pub tick_ms: u64,
    /// A range snapshots its state machine (and lets the WAL drop older segments)
    /// after this many applied entries (until the cluster setting `snapshot_entries`
    /// is set: then that)...
    pub snapshot_entries: u64,
    /// ... whose bytes are at least this many times the last snapshot's size (0: by
    /// entries only; see `Tuning`).
    pub snapshot_log_ratio: u64,
    /// The cluster setting `history_revisions` to write if the cluster has none
    /// (`--history-revisions`, kept as the initial value): the node that leads the
    /// meta range writes it once. Ranges apply the cluster's setting, never this.
    pub history_revisions: Option<u64>,
    /// Where range leaders go (`LeaderPlacement`).
    pub leader_placement: LeaderPlacement,
}

impl ServerConfig {
    /// The single-node defaults of `rangedb server` with no flags.
    pub fn single_node(listen: &str, data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            node_id: NodeId(1),
            listen: listen.to_string(),
            peers: BTreeMap::from([(NodeId(1), listen.to_string())]),
            data_dir,
            join: None,
            split_keys: None,
            tick_ms: 50,
            snapshot_entries: 10_000,
            snapshot_log_ratio: SNAPSHOT_LOG_RATIO,
            history_revisions: None,
            leader_placement: LeaderPlacement::Colocate,
        }
    }
}

/// Default `ServerConfig::snapshot_log_ratio`.
pub const SNAPSHOT_LOG_RATIO: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: String, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Founding or joining the cluster is impossible (the members refuse this data
    /// directory, or the founders' flags differ).
    #[error("cannot join the cluster: {0}")]
    Refused(String),
    #[error("range {range}: {reason}")]
    Recovery { range: RangeId, reason: String },
    /// A committed entry or a received snapshot this version cannot read (written by
    /// a newer rangedb): the node stops rather than skip it.
    #[error("range {range}: cannot apply {what}: {reason}")]
    Unreadable { range: RangeId, what: String, reason: String },
    /// `rangedb node remove` removed this node: it stops for good.
    #[error(
        "{0} was removed from the cluster (`rangedb node remove`); its data directory is no \
         longer a member. To serve again, start with an empty data directory and `--join`"
    )]
    Removed(NodeId),
}

/// Runs a server until `shutdown` resolves; then stops accepting, fails in-flight
/// requests, syncs the WAL and returns.
///
/// # Errors
/// A bad configuration, a locked or corrupt data directory, a port in use, or a disk
/// failure while running (the node stops rather than run on a disk it cannot trust).
pub async fn run_server(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    run_server_observed(config, Arc::new(Telemetry::default()), shutdown).await
}

/// `run_server` reporting its metrics and readiness to `telemetry` (which the HTTP
/// listener reads).
///
/// # Errors
/// As `run_server`.
pub async fn run_server_observed(
    config: ServerConfig,
    telemetry: Arc<Telemetry>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let (disk, clock) = (Arc::new(RealDisk), Arc::new(RealClock));
    run_node_observed(config, disk, clock, telemetry, shutdown).await
}

/// `run_server` on a given disk and clock: the simulation runs the same node on its
/// SimDisk and its skewed, drifting SimClock.
///
/// # Errors
/// As `run_server`.
pub async fn run_node(
    config: ServerConfig,
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    run_node_observed(config, disk, clock, Arc::new(Telemetry::default()), shutdown).await
}

/// `run_node` reporting to `telemetry`; it says `Readiness::Stopped` once the node
/// stops, whatever the reason.
///
/// # Errors
/// As `run_server`.
pub async fn run_node_observed(
    config: ServerConfig,
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    telemetry.set_readiness(Readiness::Starting);
    let result = run_node_inner(config, disk, clock, Arc::clone(&telemetry), shutdown).await;
    telemetry.set_readiness(Readiness::Stopped);
    result
}

async fn run_node_inner(
    config: ServerConfig,
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    validate(&config)?;
    let data_dir = DataDir::open(Arc::clone(&disk), &config.data_dir)?;
    if let Some(from) = data_dir.upgraded_from {
        info!(
            node = config.node_id.0,
            "rangedb node {}: upgraded data directory {} from version {from} to {DATA_VERSION}",
            config.node_id.0,
            config.data_dir.display()
        );
    }
    // A backup staged by `rangedb admin backup restore` (src/backup/restore.rs).
    let restoring = crate::backup::restore::pending(&config.data_dir)
        .map_err(|error| NodeError::Config(format!("cannot restore the staged backup: {error}")))?;
    tokio::pin!(shutdown);
    // A node that must found its cluster listens at once (the founders talk); one that
    // belongs to a cluster only once its replicas are recovered.
    let mut listener = None;
    let meta = match data_dir.load_meta()? {
        Some(meta) => checked_meta(meta, &config)?,
        None => {
            let split_keys = match &restoring {
                Some(backup) => restored_split_keys(&config, &data_dir, &backup.manifest)?,
                None => new_cluster_split_keys(&config, &data_dir)?,
            };
            let backup = restoring.as_ref().map_or(0, |backup| backup.manifest.backup_id());
            if let Some(join) = &config.join {
                if backup != 0 {
                    let reason = "a node that joins a cluster cannot restore a backup (start                                   it with --id and --peers to found the restored cluster)";
                    return Err(NodeError::Config(reason.into()));
                }
                let bound = listener.insert(bind(&config.listen).await?);
                match bootstrap::join(bound, &config, join, &data_dir, &mut shutdown).await? {
                    Some(meta) => meta,
                    None => return Ok(()),
                }
            } else if config.peers.len() == 1 {
                bootstrap::create_single(&config, &data_dir, split_keys)?
            } else {
                let bound = listener.insert(bind(&config.listen).await?);
                let founding =
                    bootstrap::found(bound, &config, &data_dir, split_keys, backup, &mut shutdown);
                match founding.await? {
                    Some(meta) => meta,
                    None => return Ok(()),
                }
            }
        }
    };
    if meta.removed.contains(&meta.node_id) {
        return Err(NodeError::Removed(meta.node_id));
    }
    let voters = meta.founders.clone();
    let descriptors = initial_descriptors(&meta.split_keys, &voters)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let (mut wal, recovery) =
        Wal::open(Arc::clone(&disk), &data_dir.wal_dir(), WalOptions::default())?;
    let mut snapshots = SnapshotStore::open(Arc::clone(&disk), &data_dir.snap_dir())?;
    if let Some(backup) = restoring {
        let ranges = backup.ranges.len();
        crate::backup::restore::seed(
            &config.data_dir,
            backup,
            &descriptors,
            descriptor_items(&descriptors),
            &meta.founders,
            &mut snapshots,
        )
        .map_err(|error| NodeError::Config(format!("cannot restore the staged backup: {error}")))?;
        info!(
            node = meta.node_id.0,
            "rangedb node {}: {ranges} ranges restored from the staged backup", meta.node_id.0
        );
    }
    // A new value at every start (the wall clock in ms): followers report it with their
    // tick counts so that leaders see a restart (raft::Config::incarnation).
    let incarnation = clock.wall_ms();
    let replicas =
        recover_replicas(&meta, &descriptors, &snapshots, &mut wal, recovery, incarnation)?;
    #[cfg(madsim)]
    crate::env::sim_hooks::observe(|o| o.node_started(meta.node_id));
    let listener = match listener {
        Some(listener) => listener,
        None => bind(&config.listen).await?,
    };
    let members: members::SharedMembers =
        Arc::new(std::sync::RwLock::new(members::Members::from_meta(&meta)));
    let current: BTreeMap<NodeId, String> =
        members::read(&members).current().map(|(id, a)| (id, a.clone())).collect();
    let own = meta.peers.get(&meta.node_id).cloned().unwrap_or_else(|| config.listen.clone());
    // Not a link to itself: a node replacing a member at the same address (its old
    // self, not yet removed) would dial itself.
    let current: BTreeMap<NodeId, String> =
        current.into_iter().filter(|(id, a)| *id == meta.node_id || *a != own).collect();
    let network =
        Arc::new(TcpNetwork::new(meta.node_id, meta.cluster_id, data_dir.identity(), own, current));
    let mut node = Node::new(
        meta.node_id,
        Arc::clone(&members),
        replicas,
        wal,
        snapshots,
        network,
        Tuning {
            snapshot_entries: config.snapshot_entries,
            snapshot_log_ratio: config.snapshot_log_ratio,
            snapshot_entries_flag: config.snapshot_entries,
            initial_history_revisions: config.history_revisions,
            leader_placement: config.leader_placement,
        },
        Ticker::new(clock, Duration::from_millis(config.tick_ms)),
    );
    let (events, inbox) = mpsc::channel::<Event>(8192);
    let identity = data_dir.identity();
    let data_dir = Arc::new(data_dir);
    // Members change (identities learned from first connections in a cluster upgraded
    // from data directory version 1; `rangedb node add/remove`): each change is stored
    // before it is relied on.
    let persist: Arc<server::RecordMembers> = {
        let (data_dir, meta) = (Arc::clone(&data_dir), meta.clone());
        Arc::new(move |members: &members::Members| {
            data_dir.store_meta(&members.to_meta(&meta)).map_err(|error| error.to_string())
        })
    };
    node.identity = event_loop::Identity {
        cluster: meta.cluster_id,
        identity,
        split_keys: meta.split_keys.clone(),
        founders: meta.founders.clone(),
        persist: Some(Arc::clone(&persist)),
    };
    node.telemetry = Arc::clone(&telemetry);
    node.raft_seed = event_loop::RaftSeed { cluster: meta.cluster_id, incarnation };
    let admission = server::Admission {
        me: meta.node_id,
        identity,
        cluster: meta.cluster_id,
        members,
        learned: persist,
        peer_silence: server::peer_silence_timeout(config.tick_ms),
        telemetry,
        log_limiter: Arc::new(server::ConnectionLogLimiter::new()),
    };
    let acceptor = tokio::spawn(server::accept_loop(listener, events, admission));
    info!(
        node = meta.node_id.0,
        "rangedb node {} listening on {} (data {}, {} ranges, {} members)",
        meta.node_id.0,
        config.listen,
        config.data_dir.display(),
        descriptors.len(),
        meta.peers.keys().filter(|id| !meta.removed.contains(id)).count()
    );
    let result = run_loop(&mut node, inbox, shutdown).await;
    acceptor.abort();
    node.fail_all("the server is shutting down");
    // After an unreadable entry nothing more may be applied: only what the WAL holds
    // is synced.
    let flushed = match &result {
        Err(NodeError::Unreadable { .. }) => node.wal.sync().map_err(NodeError::from),
        _ => node.flush().and_then(|()| Ok(node.wal.sync()?)),
    };
    info!(node = meta.node_id.0, "rangedb node {} stopped", meta.node_id.0);
    result.and(flushed)
}

async fn bind(address: &str) -> Result<tokio::net::TcpListener, NodeError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| NodeError::Listen { address: address.to_string(), source })
}

/// Events, ticks and Ready cycles until shutdown or a storage failure. Ticks come
/// from the node's clock (ticker.rs): every turn first performs the ticks due.
async fn run_loop(
    node: &mut Node,
    mut inbox: mpsc::Receiver<Event>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    /// Events handled per Ready cycle at most, so ticks and fsyncs are not starved.
    const EVENTS_PER_CYCLE: usize = 4096;
    let next_tick = crate::env::timer::sleep_until(node.ticker.next_deadline());
    tokio::pin!(next_tick, shutdown);
    // The tick the sleep is set for; re-armed only when ticks were done.
    let mut armed_after = node.ticker.done();
    node.flush()?;
    loop {
        node.catch_up_ticks();
        if let Some(stop) = node.stop.take() {
            return Err(stop);
        }
        if node.ticker.done() != armed_after || next_tick.is_elapsed() {
            armed_after = node.ticker.done();
            next_tick.as_mut().reset(node.ticker.next_deadline());
        }
        if node.has_ready() {
            // The last cycle left work (a commit that its own sync completed, as in a
            // single-node cluster): take what has arrived and run the next cycle
            // without waiting for an event.
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                () = std::future::ready(()) => {}
            }
            for _ in 0..EVENTS_PER_CYCLE {
                match inbox.try_recv() {
                    Ok(event) => node.handle(event),
                    Err(_) => break,
                }
            }
        } else {
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                () = &mut next_tick => {} // Performed at the top of the next turn.
                event = inbox.recv() => match event {
                    Some(event) => {
                        node.handle(event);
                        for _ in 1..EVENTS_PER_CYCLE {
                            match inbox.try_recv() {
                                Ok(event) => node.handle(event),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return Ok(()),
                },
            }
        }
        let cycle = node.flush_write()?;
        #[cfg(madsim)]
        if cycle.wrote {
            tokio::time::sleep(crate::env::sim_hooks::fsync_latency(node.id)).await;
        }
        node.flush_sync(cycle)?;
    }
}

fn validate(config: &ServerConfig) -> Result<(), NodeError> {
    if config.node_id.0 == 0 {
        return Err(NodeError::Config("node id must be at least 1".into()));
    }
    if config.join.is_none() && !config.peers.contains_key(&config.node_id) {
        return Err(NodeError::Config(format!(
            "--peers does not list this node's id {}",
            config.node_id.0
        )));
    }
    if config.tick_ms == 0 {
        return Err(NodeError::Config("tick interval must be at least 1 ms".into()));
    }
    if config.snapshot_entries == 0 {
        return Err(NodeError::Config("snapshot interval must be at least 1 entry".into()));
    }
    Ok(())
}

/// The stored cluster metadata, checked against the flags: the membership comes from
/// the data directory, never from flags given on a restart.
fn checked_meta(meta: ClusterMeta, config: &ServerConfig) -> Result<ClusterMeta, NodeError> {
    if config.join.is_some() {
        return Ok(meta); // A node that joined has the id the cluster gave it.
    }
    if meta.node_id != config.node_id {
        return Err(NodeError::Config(format!(
            "data directory {} belongs to node {}, not node {}",
            config.data_dir.display(),
            meta.node_id.0,
            config.node_id.0
        )));
    }
    if meta.peers != config.peers {
        warn!("membership comes from the data directory; --peers differs and is ignored");
    }
    Ok(meta)
}

/// The split keys of a cluster this node is about to create or found, checked; and a
/// check that the directory holds no log (a data directory with a log but no cluster
/// metadata lost a file: it must not start over as a new member).
fn new_cluster_split_keys(
    config: &ServerConfig,
    data_dir: &DataDir,
) -> Result<Vec<Vec<u8>>, NodeError> {
    let disk = data_dir.disk();
    for dir in [data_dir.wal_dir(), data_dir.snap_dir()] {
        let files = disk.list(&dir).map_err(|source| StorageError::Io {
            op: "list",
            path: dir.clone(),
            source,
        })?;
        if !files.is_empty() {
            return Err(NodeError::Config(format!(
                "data directory {} has no cluster metadata (CLUSTER) but holds {} ({}): it \
                 is damaged, not new; restore it or start with an empty directory",
                config.data_dir.display(),
                dir.display(),
                files.join(", ")
            )));
        }
    }
    let split_keys = config.split_keys.clone().unwrap_or_else(default_split_keys);
    let voters: Vec<NodeId> = config.peers.keys().copied().collect();
    initial_descriptors(&split_keys, &voters).map_err(|e| NodeError::Config(e.to_string()))?;
    Ok(split_keys)
}

/// Ticks between a leader's heartbeats: with the default 50 ms tick and election
/// timeout of 10 ticks, a heartbeat every 100 ms and 5 per election timeout, etcd's
/// ratio. Heartbeats are most of an idle cluster's work (ReadIndex rounds do not wait
/// for them: a pending read sends its heartbeat round with the next Ready).
const HEARTBEAT_TICKS: u32 = 2;

/// Rebuilds every replica: state machine from its snapshot (or the initial state),
/// Raft from the snapshot, the WAL's hard state and the entries after the snapshot.
///
/// Damaged storage (checksums caught it) is repaired from the peers rather than
/// refused: a damaged WAL record makes every range's log untrusted, a damaged
/// snapshot file its range's. Such a range keeps its intact snapshot (or starts from
/// its initial state), drops its log, bumps its term and sets `repair_term` (see
/// `RaftGroup::repairing`: it neither votes nor campaigns, nor serves local reads,
/// until a leader of a later term has replicated to it). That is made durable before
/// the node starts: a new WAL replaces a damaged one, and damaged files are renamed
/// `*.damaged` for inspection.
fn recover_replicas(
    meta: &ClusterMeta,
    descriptors: &[RangeDescriptor],
    snapshots: &SnapshotStore,
    wal: &mut Wal,
    mut recovery: WalRecovery,
    incarnation: u64,
) -> Result<BTreeMap<RangeId, Replica>, NodeError> {
    let voters = meta.founders.clone();
    let node = meta.node_id.0;
    let wal_damage = recovery.damage.take();
    if let Some(damage) = &wal_damage {
        error!(node, "rangedb node {node}: WAL damaged: {damage}");
    }
    let mut replicas = BTreeMap::new();
    let mut repairs = BTreeMap::new();
    let mut damaged_snapshots = Vec::new();
    // The ranges the cluster was created with, then those created here by splits
    // (each saved a snapshot when it was created): a split range's descriptor comes
    // from its state machine's span and its Raft configuration.
    let initial: BTreeMap<RangeId, &RangeDescriptor> =
        descriptors.iter().map(|d| (d.id, d)).collect();
    let created: Vec<RangeDescriptor> = snapshots
        .ranges()?
        .into_iter()
        .filter(|range| !initial.contains_key(range))
        .map(|id| RangeDescriptor { id, start: vec![], end: None, generation: 0, replicas: vec![] })
        .collect();
    for descriptor in descriptors.iter().chain(&created) {
        let range = descriptor.id;
        let split_created = !initial.contains_key(&range);
        let recovery_error = |reason: String| NodeError::Recovery { range, reason };
        let initial = || {
            // A split range whose snapshot is lost starts empty, with no span (it
            // serves nothing) and no configuration, until its leader sends one.
            let voters = if split_created { vec![] } else { voters.clone() };
            let conf_state = ConfState { voters, learners: vec![] };
            let meta = SnapshotMeta { index: 0, term: 0, conf_state };
            let kv = if split_created {
                KvStore::new_range()
            } else {
                initial_state(descriptor, descriptors)
            };
            (Snapshot { meta, data: vec![] }, kv)
        };
        let mut damaged = wal_damage.is_some();
        // Whether this node is the range's only voter (it has no peer to repair from,
        // and elects itself at once), by the configuration in its snapshot and log.
        let single_voter = |snapshot: &Snapshot, entries: &[Entry]| {
            let latest = entries.iter().rev().find_map(raft::membership::decode_conf_change);
            let membership = latest.map_or_else(
                || raft::Membership::from_conf_state(&snapshot.meta.conf_state),
                |(m, _)| m,
            );
            membership.is_single_voter(meta.node_id)
        };
        let (snapshot, mut kv) = match snapshots.load(range) {
            Ok(Some(snapshot)) => {
                let kv =
                    KvStore::restore(&snapshot.data).map_err(|e| recovery_error(e.to_string()))?;
                (snapshot, kv)
            }
            Ok(None) => initial(),
            Err(StorageError::Corrupt { path, offset, reason }) => {
                error!(
                    node,
                    range = range.0,
                    "rangedb node {node}: {range}: snapshot {} damaged at offset {offset}: {reason}",
                    path.display()
                );
                damaged = true;
                damaged_snapshots.push(path);
                initial()
            }
            Err(e) => return Err(e.into()),
        };
        let log = recovery.ranges.remove(&range).unwrap_or_default();
        let mut hard_state = log.hard_state.unwrap_or_default();
        if hard_state.term < snapshot.meta.term {
            // A range created by a split starts at its split entry's term, saved in
            // its snapshot at once; its first hard state may not have reached the WAL
            // before a crash. Its term never goes below its log's (a vote in that
            // term would have been logged and synced first).
            hard_state = HardState { term: snapshot.meta.term, vote: None, ..hard_state };
        }
        let mut entries = entries_after(&snapshot.meta, log.entries);
        if damaged {
            if single_voter(&snapshot, &entries) {
                let reason = "storage is corrupt (see above) and there is no peer to repair \
                              it from; restore a backup, or repair the named file";
                return Err(recovery_error(reason.into()));
            }
            hard_state = HardState {
                term: hard_state.term + 1,
                vote: None,
                commit: snapshot.meta.index,
                repair_term: hard_state.term,
            };
            entries.clear();
            repairs.insert(range, hard_state);
            #[cfg(madsim)]
            crate::env::sim_hooks::observe(|o| {
                o.storage_damaged(meta.node_id, range, hard_state.term, hard_state.commit)
            });
        }
        if !split_created {
            // A new cluster's range, or an image from before spans were stored.
            kv.adopt_span(descriptor.span());
        }
        let (snapshot_index, snapshot_bytes) = (snapshot.meta.index, snapshot.data.len() as u64);
        let store = MemStorage::recover(snapshot, hard_state, entries)
            .map_err(|e| recovery_error(format!("log does not follow its snapshot: {e}")))?;
        let config = raft_config(meta, range, incarnation);
        let mut raft = RaftGroup::new(config, store).map_err(|e| recovery_error(e.to_string()))?;
        if raft.membership().is_single_voter(meta.node_id) {
            raft.campaign();
        }
        let mut replica =
            Replica::new(descriptor.clone(), raft, kv, snapshot_index, snapshot_bytes);
        replica.refresh_descriptor();
        replicas.insert(range, replica);
    }
    // Ranges with a term or vote in the WAL but no state: replicas created empty for
    // a leader to send a snapshot to (split.rs). Their votes must survive a restart.
    for (range, log) in std::mem::take(&mut recovery.ranges) {
        if replicas.contains_key(&range) {
            continue;
        }
        let Some(hard_state) = log.hard_state else { continue };
        let hard_state = HardState { commit: 0, ..hard_state };
        let empty = Snapshot { meta: SnapshotMeta::default(), data: vec![] };
        let store = MemStorage::recover(empty, hard_state, Vec::new())
            .expect("a log with no entries follows any snapshot");
        let config = raft_config(meta, range, incarnation);
        let raft = RaftGroup::new(config, store)
            .map_err(|e| NodeError::Recovery { range, reason: e.to_string() })?;
        let descriptor = RangeDescriptor {
            id: range,
            start: vec![],
            end: None,
            generation: 0,
            replicas: vec![],
        };
        replicas.insert(range, Replica::new(descriptor, raft, KvStore::new_range(), 0, 0));
    }
    if repairs.is_empty() {
        return Ok(replicas);
    }
    let count = repairs.len();
    if wal_damage.is_some() {
        for path in wal.discard_damaged(repairs)? {
            warn!(node, "rangedb node {node}: kept the damaged WAL segment as {}", path.display());
        }
    } else {
        for (&range, &hard_state) in &repairs {
            wal.append(&WalRecord::LogDiscarded { range })?;
            wal.append(&WalRecord::HardState { range, hard_state })?;
        }
        wal.sync()?;
    }
    for path in damaged_snapshots {
        let kept = snapshots.quarantine(&path)?;
        warn!(node, "rangedb node {node}: kept the damaged snapshot as {}", kept.display());
    }
    warn!(
        node,
        "rangedb node {node}: {count} range(s) discarded their damaged log and repair from \
         their peers; they do not vote or serve until a new leader has replicated to them"
    );
    Ok(replicas)
}

/// The Raft configuration of this node's replica of `range`: leases on (each read says
/// whether it may use one, `ReadConsistency::Lease`), heartbeats every
/// `HEARTBEAT_TICKS`.
fn raft_config(meta: &ClusterMeta, range: RangeId, incarnation: u64) -> raft::Config {
    range_raft_config(meta.node_id, meta.cluster_id, range, incarnation)
}

/// `raft_config` of node `node` in cluster `cluster`.
pub(crate) fn range_raft_config(
    node: NodeId,
    cluster: u64,
    range: RangeId,
    incarnation: u64,
) -> raft::Config {
    let seed = node.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ range.0 ^ cluster;
    let mut config = raft::Config::new(node, seed);
    config.heartbeat_tick = HEARTBEAT_TICKS;
    config.lease_read = true;
    config.incarnation = incarnation;
    config.quiesce = true; // The event loop's node liveness wakes quiesced ranges.
    #[cfg(madsim)]
    if let Some(bytes) = crate::env::sim_hooks::max_append_bytes() {
        config.max_size_per_msg = bytes;
    }
    config
}

/// The recovered entries that extend `snapshot`. If the log holds the snapshot's own
/// index with another term, everything after it is from a history the snapshot
/// replaced (a crash between saving a received snapshot and logging its marker).
fn entries_after(snapshot: &SnapshotMeta, entries: Vec<Entry>) -> Vec<Entry> {
    let diverged = entries.iter().any(|e| e.index == snapshot.index && e.term != snapshot.term);
    if diverged {
        return Vec::new();
    }
    entries.into_iter().filter(|e| e.index > snapshot.index).collect()
}

/// A range's state machine before its first entry: the meta range holds every range
/// descriptor (at revision 0), the others are empty.
fn initial_state(descriptor: &RangeDescriptor, all: &[RangeDescriptor]) -> KvStore {
    if !descriptor.contains(RESERVED_PREFIX) {
        return KvStore::new_range();
    }
    KvStore::bootstrap(0, descriptor_items(all))
}

/// The meta range's keys that describe `all` ranges.
fn descriptor_items(all: &[RangeDescriptor]) -> Vec<(Vec<u8>, Vec<u8>)> {
    all.iter()
        .map(|d| {
            let value = bincode::serde::encode_to_vec(d, bincode::config::standard())
                .expect("a descriptor always encodes");
            (descriptor_key(d.id), value)
        })
        .collect()
}

/// The split keys of a cluster restored from `manifest`: the backup's ranges. Split
/// keys given as flags must be the same.
fn restored_split_keys(
    config: &ServerConfig,
    data_dir: &DataDir,
    manifest: &crate::backup::Manifest,
) -> Result<Vec<Vec<u8>>, NodeError> {
    let split_keys = manifest.split_keys();
    let mut checked = config.clone();
    checked.split_keys = Some(split_keys.clone());
    let split_keys = new_cluster_split_keys(&checked, data_dir)?;
    let given = config.split_keys.as_ref().map(|keys| initial_descriptors(keys, &[]));
    let restored = initial_descriptors(&split_keys, &[]);
    if given.is_some_and(|given| given != restored) {
        let reason = "--split-keys differs from the staged backup's ranges: omit it";
        return Err(NodeError::Config(reason.into()));
    }
    Ok(split_keys)
}
