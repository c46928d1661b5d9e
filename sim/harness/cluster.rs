//! The simulated cluster: server nodes running the production `run_node` on their
//! SimDisk and SimClock, client nodes, and the supervisor's levers (network clogs,
//! kill, restart, pause, disk faults, clock skew and drift) and probes (status and
//! local reads of one node).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use madsim::task::NodeId as SimNodeId;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use rangedb::client::{run_node_janitor, Client};
use rangedb::env::sim_clock::SimClock;
use rangedb::env::sim_disk::{DiskFaults, SimDisk};
use rangedb::node::telemetry::Telemetry;
use rangedb::node::{run_node_observed, ServerConfig};
use rangedb::raft::NodeId;
use rangedb::wire::{
    encode_frame, read_frame, ClientRequest, ClientResponse, Hello, HelloReply, HelloRole,
    NodeStatus, ReadConsistency, Request, Response,
};

use super::history::Seen;
use super::schedule::Plan;

pub const PORT: u16 = 7000;

pub fn server_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1))
}

pub fn server_address(i: usize) -> String {
    format!("{}:{PORT}", server_ip(i))
}

pub struct Server {
    pub node: NodeHandle,
    pub disk: SimDisk,
    /// The node's clock; like the disk it outlives kill and restart.
    pub clock: SimClock,
    shutdown: Arc<Notify>,
    /// Set when `run_node` returned (a clean stop or a storage failure).
    pub exited: Arc<AtomicBool>,
    /// Why `run_node` returned with an error, the last time it did.
    pub exit_reason: Arc<std::sync::Mutex<Option<String>>>,
    /// The configuration the node (re)starts with: a replaced node restarts with
    /// `--join` (`Cluster::set_join`).
    config: Arc<std::sync::Mutex<ServerConfig>>,
    pub killed: bool,
    pub paused: bool,
}

pub struct Cluster {
    pub handle: Handle,
    pub servers: Vec<Server>,
    /// Client node per workload client, then the probe node (last).
    pub client_nodes: Vec<NodeHandle>,
    pub probe: NodeHandle,
    clogged: BTreeSet<(SimNodeId, SimNodeId)>,
    /// Crashes that tore an unsynced page (a coverage marker).
    pub crashes_tearing: u64,
}

impl Cluster {
    pub fn start(plan: &Plan) -> Cluster {
        let handle = Handle::current();
        let peers: BTreeMap<NodeId, String> =
            (0..plan.nodes).map(|i| (NodeId(i as u64 + 1), server_address(i))).collect();
        let mut servers = Vec::new();
        // The founders, then the spares: started with --join, they wait until a
        // membership change adds them.
        for i in 0..plan.nodes + plan.spares {
            let disk = SimDisk::new(plan.seed.wrapping_mul(31).wrapping_add(i as u64));
            let clock = SimClock::new(1_750_000_000_000);
            let shutdown = Arc::new(Notify::new());
            let exited = Arc::new(AtomicBool::new(false));
            let config = ServerConfig {
                node_id: NodeId(i as u64 + 1),
                listen: server_address(i),
                peers: peers.clone(),
                data_dir: PathBuf::from("/data"),
                join: (i >= plan.nodes)
                    .then(|| (0..plan.nodes).map(server_address).collect::<Vec<_>>().join(",")),
                split_keys: None,
                tick_ms: plan.tick_ms,
                snapshot_entries: plan.snapshot_entries,
                history_revisions: Some(plan.history_revisions),
                leader_placement: plan.leader_placement,
                // By entries only: the sim's states are tiny and snapshots must happen.
                snapshot_log_ratio: 0,
            };
            let config = Arc::new(std::sync::Mutex::new(config));
            let exit_reason = Arc::new(std::sync::Mutex::new(None));
            let (d, s, e, c) = (disk.clone(), shutdown.clone(), exited.clone(), clock.clone());
            let (shared_config, reason) = (config.clone(), exit_reason.clone());
            let node = handle
                .create_node()
                .name(format!("n{}", i + 1))
                .ip(server_ip(i))
                .init(move || {
                    let (disk, shutdown, exited) = (d.clone(), s.clone(), e.clone());
                    let clock = c.clone();
                    let config = shared_config.lock().expect("config lock").clone();
                    let reason = reason.clone();
                    async move {
                        exited.store(false, Ordering::Relaxed);
                        // The lock janitor every server runs (as `rangedb server` does),
                        // on this node, looking at the ranges it leads: it dies with it.
                        let janitor = super::workload::client_config(
                            vec![server_address(i)],
                            0x1a_0000 + i as u64,
                            800,
                        );
                        let telemetry = Arc::new(Telemetry::default());
                        let beside = Arc::clone(&telemetry);
                        tokio::spawn(run_node_janitor(Client::new(janitor), beside));
                        let stop = async move { shutdown.notified().await };
                        let (disk, clock) = (Arc::new(disk), Arc::new(clock));
                        let run = run_node_observed(config, disk, clock, telemetry, stop);
                        if let Err(error) = run.await {
                            eprintln!("sim: node stopped: {error}");
                            *reason.lock().expect("reason lock") = Some(error.to_string());
                        }
                        exited.store(true, Ordering::Relaxed);
                    }
                })
                .build();
            servers.push(Server {
                node,
                disk,
                clock,
                shutdown,
                exited,
                exit_reason,
                config,
                killed: false,
                paused: false,
            });
        }
        let client_nodes = (0..plan.clients)
            .map(|c| {
                handle
                    .create_node()
                    .name(format!("c{}", c + 1))
                    .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, c as u8 + 1)))
                    .build()
            })
            .collect();
        let probe =
            handle.create_node().name("probe").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1))).build();
        Cluster {
            handle,
            servers,
            client_nodes,
            probe,
            clogged: BTreeSet::new(),
            crashes_tearing: 0,
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.servers.len()).map(server_address).collect()
    }

    fn net(&self) -> Arc<NetSim> {
        NetSim::current()
    }

    pub fn clog(&mut self, from: SimNodeId, to: SimNodeId) {
        if self.clogged.insert((from, to)) {
            self.net().clog_link(from, to);
        }
    }

    /// Clears every clogged link.
    pub fn unclog_all(&mut self) {
        let net = self.net();
        for (from, to) in std::mem::take(&mut self.clogged) {
            net.unclog_link(from, to);
        }
    }

    pub fn server_id(&self, i: usize) -> SimNodeId {
        self.servers[i].node.id()
    }

    /// Power loss: the node dies and its disk loses what was not durable.
    pub fn crash(&mut self, i: usize) -> rangedb::env::sim_disk::CrashReport {
        self.handle.kill(self.server_id(i));
        self.servers[i].killed = true;
        super::timeline::node_event(i, "crash");
        let report = self.servers[i].disk.crash();
        if report.pages_torn > 0 {
            self.crashes_tearing += 1;
        }
        report
    }

    /// Bit rot on a stopped node: one bit flips in synced data the node reads at
    /// restart: a snapshot file, or a WAL segment before its last batch (damage to the
    /// last batch of the newest segment is indistinguishable from a torn write, see
    /// src/storage/wal.rs, so it is not injected). Returns the file and offset, None
    /// when there is nothing to flip yet.
    pub fn rot(&self, i: usize, pick: u64) -> Option<(PathBuf, u64)> {
        let disk = &self.servers[i].disk;
        let mut candidates: Vec<(PathBuf, u64)> = Vec::new();
        for path in disk.names() {
            let bytes = disk.file_bytes(&path).unwrap_or_default();
            let limit = match path.extension().and_then(|e| e.to_str()) {
                Some("snap") => bytes.len() as u64,
                Some("wal") => last_wal_batch_start(&bytes),
                _ => 0,
            };
            if limit > 0 {
                candidates.push((path, limit));
            }
        }
        if candidates.is_empty() {
            return None;
        }
        let (path, limit) = candidates.swap_remove((pick % candidates.len() as u64) as usize);
        let offset = pick.rotate_left(17) % limit;
        disk.flip(&path, offset, pick >> 59).then_some((path, offset))
    }

    /// The node loses power and its disk is replaced by an empty one.
    pub fn wipe(&mut self, i: usize) {
        self.crash(i);
        self.servers[i].disk.wipe();
        super::timeline::node_event(i, "wipe");
    }

    /// From its next start, node `i` joins the cluster of the member at `join`
    /// (a wiped node restarted to be replaced).
    pub fn set_join(&self, i: usize, join: String) {
        self.servers[i].config.lock().expect("config lock").join = Some(join);
    }

    /// Whether node `i` stopped because it was removed from the cluster.
    pub fn exited_removed(&self, i: usize) -> bool {
        let server = &self.servers[i];
        server.exited.load(Ordering::Relaxed)
            && server
                .exit_reason
                .lock()
                .expect("reason lock")
                .as_ref()
                .is_some_and(|reason| reason.contains("was removed from the cluster"))
    }

    /// Clean stop: shutdown signal, a grace period, then the process ends.
    pub async fn stop(&mut self, i: usize) {
        self.servers[i].shutdown.notify_waiters();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.handle.kill(self.server_id(i));
        self.servers[i].killed = true;
        super::timeline::node_event(i, "stop");
    }

    pub fn restart(&mut self, i: usize) {
        self.servers[i].exited.store(false, Ordering::Relaxed);
        *self.servers[i].exit_reason.lock().expect("reason lock") = None;
        self.handle.restart(self.server_id(i));
        self.servers[i].killed = false;
        self.servers[i].paused = false;
        super::timeline::node_event(i, "restart");
    }

    pub fn pause(&mut self, i: usize) {
        if !self.servers[i].killed {
            self.handle.pause(self.server_id(i));
            self.servers[i].paused = true;
            super::timeline::node_event(i, "pause");
        }
    }

    pub fn resume(&mut self, i: usize) {
        if self.servers[i].paused {
            self.handle.resume(self.server_id(i));
            self.servers[i].paused = false;
            super::timeline::node_event(i, "resume");
        }
    }

    /// Node `i`'s clock from now on: wall time off by `skew_ms`, running `drift_ppm`
    /// parts per million fast (negative: slow). Local time stays continuous.
    pub fn set_clock(&self, i: usize, skew_ms: i64, drift_ppm: i64) {
        if self.servers[i].clock.setting() != (skew_ms, drift_ppm) {
            self.servers[i].clock.set(skew_ms, drift_ppm);
        }
    }

    pub fn set_disk_faults(&self, i: usize, faults: DiskFaults) {
        self.servers[i].disk.set_faults(faults);
    }

    pub fn set_loss(&self, rate: f64) {
        self.net().update_config(|c| c.packet_loss_rate = rate);
    }

    pub fn set_latency_ms(&self, max_ms: u64) {
        self.net().update_config(|c| {
            c.send_latency = Duration::from_millis(1)..Duration::from_millis(max_ms.max(2))
        });
    }

    /// One request to server `i`, from the probe node.
    pub async fn probe(&self, i: usize, request: Request) -> Option<Response> {
        let address = server_address(i);
        self.probe.spawn(call(address, request)).await.ok().flatten()
    }

    pub async fn status(&self, i: usize) -> Option<NodeStatus> {
        match self.probe(i, Request::Status).await? {
            Response::Status(status) => Some(status),
            _ => None,
        }
    }

    /// The range descriptors as the node's meta replica holds them.
    pub async fn range_table(
        &self,
        i: usize,
    ) -> Option<Vec<rangedb::range::descriptor::RangeDescriptor>> {
        match self.probe(i, Request::RangeTable).await? {
            Response::RangeTable { ranges, .. } => Some(ranges),
            _ => None,
        }
    }

    /// The node's local (not linearizable) value of `key`: (value, revision).
    pub async fn local_get(&self, i: usize, key: &[u8]) -> Option<Seen> {
        let request =
            Request::Get { key: key.to_vec(), revision: None, consistency: ReadConsistency::Local };
        match self.probe(i, request).await? {
            Response::Get { kv, .. } => Some(kv.map(|kv| (kv.value, kv.revision))),
            _ => None,
        }
    }
}

async fn call(address: String, request: Request) -> Option<Response> {
    let connect = tokio::net::TcpStream::connect(address.as_str());
    let stream = tokio::time::timeout(Duration::from_millis(500), connect).await.ok()?.ok()?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    // The request follows the hello at once; the reply to the hello comes first.
    writer.write_all(&encode_frame(&Hello::new(HelloRole::Client))).await.ok()?;
    writer.write_all(&encode_frame(&ClientRequest { id: 1, request })).await.ok()?;
    writer.flush().await.ok()?;
    let read = async {
        match read_frame::<HelloReply, _>(&mut reader).await.ok()?? {
            HelloReply::Accepted { .. } => {
                read_frame::<ClientResponse, _>(&mut reader).await.ok()?
            }
            HelloReply::Refused { .. } | HelloReply::Removed { .. } => None,
        }
    };
    let response = tokio::time::timeout(Duration::from_millis(1_000), read).await.ok()??;
    Some(response.response)
}

/// Where the last batch of a WAL segment starts: frames are `len u32 | crc u32 |
/// batch_start u64 | record`, 8-byte aligned, ended by a zero header (the format of
/// src/storage/wal.rs, read here only to aim the rot).
fn last_wal_batch_start(bytes: &[u8]) -> u64 {
    let mut pos = 0usize;
    let mut last = 0;
    while pos + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        if len < 8 || pos + 8 + len > bytes.len() {
            break;
        }
        last = u64::from_le_bytes(bytes[pos + 8..pos + 16].try_into().expect("8 bytes"));
        pos += (8 + len).div_ceil(8) * 8;
    }
    last
}
