//! The node: one event loop driving every range replica hosted here, the listener,
//! and the boot sequence that rebuilds every replica from the data directory.

pub mod event_loop;
pub mod liveness;
pub mod replica;
pub mod server;
pub mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::env::real_disk::RealDisk;
use crate::env::real_net::TcpNetwork;
use crate::env::Disk;
use crate::raft::{self, ConfState, Entry, MemStorage, NodeId, RaftGroup, Snapshot, SnapshotMeta};
use crate::range::descriptor::{
    default_split_keys, descriptor_key, initial_descriptors, RangeDescriptor, RangeId, RangeTable,
    RESERVED_PREFIX,
};
use crate::range::kv::KvStore;
use crate::storage::{ClusterMeta, DataDir, SnapshotStore, Wal, WalOptions, WalRecovery};
use event_loop::{Event, Node};
use replica::Replica;

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
    /// Range boundaries when the cluster is created (ignored on restart).
    pub split_keys: Option<Vec<Vec<u8>>>,
    /// Raft tick interval.
    pub tick_ms: u64,
    /// A range snapshots its state machine (and lets the WAL drop older segments)
    /// after this many applied entries.
    pub snapshot_entries: u64,
}

impl ServerConfig {
    /// The single-node defaults of `rangedb server` with no flags.
    pub fn single_node(listen: &str, data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            node_id: NodeId(1),
            listen: listen.to_string(),
            peers: BTreeMap::from([(NodeId(1), listen.to_string())]),
            data_dir,
            split_keys: None,
            tick_ms: 50,
            snapshot_entries: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: String, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("range {range}: {reason}")]
    Recovery { range: RangeId, reason: String },
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
    run_node(config, Arc::new(RealDisk), shutdown).await
}

/// `run_server` on a given disk: the simulation runs the same node on its SimDisk.
///
/// # Errors
/// As `run_server`.
pub async fn run_node(
    config: ServerConfig,
    disk: Arc<dyn Disk>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    validate(&config)?;
    let data_dir = DataDir::open(Arc::clone(&disk), &config.data_dir)?;
    let meta = cluster_meta(&data_dir, &config)?;
    let voters: Vec<NodeId> = meta.peers.keys().copied().collect();
    let descriptors = initial_descriptors(&meta.split_keys, &voters)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let (wal, recovery) = Wal::open(Arc::clone(&disk), &data_dir.wal_dir(), WalOptions::default())?;
    let snapshots = SnapshotStore::open(Arc::clone(&disk), &data_dir.snap_dir())?;
    let replicas = recover_replicas(&meta, &descriptors, &snapshots, recovery)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| NodeError::Listen { address: config.listen.clone(), source })?;
    let peers = Arc::new(meta.peers.clone());
    let network = Arc::new(TcpNetwork::new(meta.node_id, meta.cluster_id, meta.peers.clone()));
    let mut node = Node::new(
        meta.node_id,
        Arc::clone(&peers),
        replicas,
        RangeTable::new(descriptors.clone()),
        wal,
        snapshots,
        network,
        config.snapshot_entries,
    );
    let (events, inbox) = mpsc::channel::<Event>(8192);
    let admission = server::Admission { me: meta.node_id, cluster: meta.cluster_id, peers };
    let acceptor = tokio::spawn(server::accept_loop(listener, events, admission));
    eprintln!(
        "rangedb node {} listening on {} (data {}, {} ranges, {} voters)",
        meta.node_id.0,
        config.listen,
        config.data_dir.display(),
        descriptors.len(),
        voters.len()
    );
    let result = run_loop(&mut node, inbox, config.tick_ms, shutdown).await;
    acceptor.abort();
    node.fail_all("the server is shutting down");
    let flushed = node.flush().and_then(|()| node.wal.sync());
    eprintln!("rangedb node {} stopped", meta.node_id.0);
    result.and(flushed.map_err(NodeError::from))
}

/// Events, ticks and Ready cycles until shutdown or a storage failure.
async fn run_loop(
    node: &mut Node,
    mut inbox: mpsc::Receiver<Event>,
    tick_ms: u64,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    /// Events handled per Ready cycle at most, so ticks and fsyncs are not starved.
    const EVENTS_PER_CYCLE: usize = 4096;
    let mut ticker = tokio::time::interval(Duration::from_millis(tick_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    node.flush()?;
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            _ = ticker.tick() => node.tick(),
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
        node.flush()?;
    }
}

fn validate(config: &ServerConfig) -> Result<(), NodeError> {
    if config.node_id.0 == 0 {
        return Err(NodeError::Config("node id must be at least 1".into()));
    }
    if !config.peers.contains_key(&config.node_id) {
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

/// The stored cluster metadata, or the one this first start creates. The cluster id
/// is a hash of the membership and split keys, so every node of a cluster started
/// with the same flags agrees on it without talking.
fn cluster_meta(data_dir: &DataDir, config: &ServerConfig) -> Result<ClusterMeta, NodeError> {
    if let Some(meta) = data_dir.load_meta()? {
        if meta.node_id != config.node_id {
            return Err(NodeError::Config(format!(
                "data directory {} belongs to node {}, not node {}",
                config.data_dir.display(),
                meta.node_id.0,
                config.node_id.0
            )));
        }
        if meta.peers != config.peers {
            eprintln!(
                "note: membership comes from the data directory; --peers differs and is ignored"
            );
        }
        return Ok(meta);
    }
    let split_keys = config.split_keys.clone().unwrap_or_else(default_split_keys);
    let voters: Vec<NodeId> = config.peers.keys().copied().collect();
    initial_descriptors(&split_keys, &voters).map_err(|e| NodeError::Config(e.to_string()))?;
    let mut hash = Fnv64::default();
    for (id, address) in &config.peers {
        hash.write(&id.0.to_le_bytes());
        hash.write(address.as_bytes());
    }
    for key in &split_keys {
        hash.write(&(key.len() as u64).to_le_bytes());
        hash.write(key);
    }
    let meta = ClusterMeta {
        cluster_id: hash.0,
        node_id: config.node_id,
        peers: config.peers.clone(),
        split_keys,
    };
    data_dir.store_meta(&meta)?;
    Ok(meta)
}

/// FNV-1a, 64 bits: a stable hash (std's is randomly seeded).
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Ticks between a leader's heartbeats: with the default 50 ms tick and election
/// timeout of 10 ticks, a heartbeat every 100 ms and 5 per election timeout, etcd's
/// ratio. Heartbeats are most of an idle cluster's work (ReadIndex rounds do not wait
/// for them: a pending read sends its heartbeat round with the next Ready).
const HEARTBEAT_TICKS: u32 = 2;

/// Rebuilds every replica: state machine from its snapshot (or the initial state),
/// Raft from the snapshot, the WAL's hard state and the entries after the snapshot.
fn recover_replicas(
    meta: &ClusterMeta,
    descriptors: &[RangeDescriptor],
    snapshots: &SnapshotStore,
    mut recovery: WalRecovery,
) -> Result<BTreeMap<RangeId, Replica>, NodeError> {
    let voters: Vec<NodeId> = meta.peers.keys().copied().collect();
    let mut replicas = BTreeMap::new();
    for descriptor in descriptors {
        let range = descriptor.id;
        let recovery_error = |reason: String| NodeError::Recovery { range, reason };
        let (snapshot, kv) = match snapshots.load(range)? {
            Some(snapshot) => {
                let kv =
                    KvStore::restore(&snapshot.data).map_err(|e| recovery_error(e.to_string()))?;
                (snapshot, kv)
            }
            None => {
                let conf_state = ConfState { voters: voters.clone(), learners: vec![] };
                let meta = SnapshotMeta { index: 0, term: 0, conf_state };
                (Snapshot { meta, data: vec![] }, initial_state(descriptor, descriptors))
            }
        };
        let log = recovery.ranges.remove(&range).unwrap_or_default();
        let hard_state = log.hard_state.unwrap_or_default();
        let entries = entries_after(&snapshot.meta, log.entries);
        let snapshot_index = snapshot.meta.index;
        let store = MemStorage::recover(snapshot, hard_state, entries)
            .map_err(|e| recovery_error(format!("log does not follow its snapshot: {e}")))?;
        let seed = meta.node_id.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ range.0 ^ meta.cluster_id;
        let mut config = raft::Config::new(meta.node_id, seed);
        config.heartbeat_tick = HEARTBEAT_TICKS;
        config.quiesce = true; // The event loop's node liveness wakes quiesced ranges.
        let mut raft = RaftGroup::new(config, store).map_err(|e| recovery_error(e.to_string()))?;
        if voters.len() == 1 {
            raft.campaign();
        }
        replicas.insert(range, Replica::new(descriptor.clone(), raft, kv, snapshot_index));
    }
    Ok(replicas)
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
        return KvStore::new();
    }
    let items = all
        .iter()
        .map(|d| {
            let value = bincode::serde::encode_to_vec(d, bincode::config::standard())
                .expect("a descriptor always encodes");
            (descriptor_key(d.id), value)
        })
        .collect();
    KvStore::bootstrap(0, items)
}
