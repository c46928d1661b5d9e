//! `rangedb bench`: load against a cluster, measured with hdrhistogram, the way etcd's
//! `benchmark` tool and YCSB do.
//!
//! ```text
//!  --clients tasks ──share──► --connections Client handles (pipelined per node)
//!     │ closed loop: send, wait for the answer, send the next
//!     │ open loop (--rate R): request k of a task is due at start + k / (R / clients);
//!     │   its latency runs from that intended send time, not from when it was sent,
//!     │   so a stall shows up in the percentiles (no coordinated omission)
//!     ▼
//!  per-task histograms (µs) ──merged──► p50 p90 p99 p99.9 max, ops/s, errors by kind
//! ```
//!
//! Workloads: `put`, `get` (`--read linearizable`: a ReadIndex round each, batched;
//! `--read lease`: from the leader's lease), `mixed` (`--read-ratio` gets,
//! the rest puts), `scan` (`--scan-limit` keys from a random key), `delete`, `txn` (a
//! transfer: read two keys, write both, in one or two ranges: `--txn-ranges`). Keys are
//! drawn uniformly or from a scrambled zipfian (YCSB's generator, theta 0.99 by
//! default) over `--keys` keys. Reads, scans and deletes run on a preloaded key space.
//! A run lasts `--duration` seconds or `--ops` operations, after `--warmup` seconds
//! that are not counted.
//!
//! With `--local N` the harness starts an N-node cluster of this same binary on
//! loopback in a temporary directory (fsync on, as always), measures the servers'
//! CPU time from /proc, then stops them and removes the directory.
//!
//! `--target etcd` (a build with `--features etcd`) runs the same driver, key chooser
//! and report against etcd's v3 API: `--local N` then starts N `etcd` processes the
//! same way (a static `--initial-cluster`, WAL fsync on, etcd's default), `--endpoints`
//! names an existing cluster. The workloads see a backend only through [`Target`].

#[cfg(feature = "etcd")]
mod etcd;
mod report;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rangedb::client::{Client, ClientConfig, ClientError};
use rangedb::hash::Fnv64;
use tokio::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// put, get (linearizable), mixed (--read-ratio gets, the rest puts), scan,
    /// delete, or txn (a transfer: read two keys, write both, in one transaction;
    /// --txn-ranges 2 puts the keys in two ranges, 1 in one).
    #[arg(long, default_value = "put")]
    workload: String,
    /// Ranges a txn workload transaction spans: 1 or 2.
    #[arg(long, default_value_t = 2)]
    txn_ranges: u8,
    /// Fraction of operations that are gets in the mixed workload.
    #[arg(long, default_value_t = 0.5)]
    read_ratio: f64,
    /// How gets are confirmed: linearizable (a ReadIndex round) or lease (the
    /// leader's lease when valid, else a ReadIndex round).
    #[arg(long, default_value = "linearizable")]
    read: String,
    /// Keys returned per scan (scan workload).
    #[arg(long, default_value_t = 10)]
    scan_limit: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: u64,
    /// Client connections per node shared by the clients.
    #[arg(long, default_value_t = 4)]
    connections: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// uniform or zipfian (scrambled, so hot keys spread over the ranges).
    #[arg(long, default_value = "uniform")]
    distribution: String,
    /// Zipfian skew (YCSB uses 0.99).
    #[arg(long, default_value_t = 0.99)]
    zipf_theta: f64,
    /// Open loop: target operations per second over all clients, each latency measured
    /// from the intended send time. 0 = closed loop (as fast as replies come).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Measured time in seconds (ignored when --ops is given).
    #[arg(long, default_value_t = 15)]
    duration: u64,
    /// Stop after this many measured operations instead of after --duration.
    #[arg(long)]
    ops: Option<u64>,
    /// Unmeasured warm-up in seconds.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Do not write the key space before a get, mixed, scan or delete run (it is
    /// already there, e.g. from a previous run against the same --endpoints).
    #[arg(long)]
    skip_preload: bool,
    /// Start an N-node cluster on loopback for the run (instead of --endpoints).
    #[arg(long)]
    local: Option<u64>,
    /// A runtime setting (`rangedb admin config set`) made before the run, as
    /// NAME=VALUE; repeatable (e.g. `--setting range_max_bytes=16MiB`; rangedb only).
    #[arg(long, value_name = "NAME=VALUE")]
    setting: Vec<String>,
    /// Print one JSON object per run on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Also draw the run into FILE: throughput and latency per second and the latency
    /// distribution, as an HTML page (or, for a name ending in .svg, an SVG image).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// What to measure: rangedb, or etcd (v3 API; needs a build with
    /// `--features etcd`). --local starts that server, --endpoints names its clients'
    /// addresses (etcd: `host:port` of the client URLs).
    #[arg(long, default_value = "rangedb")]
    target: String,
}

/// The system under test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum TargetKind {
    Rangedb,
    #[cfg(feature = "etcd")]
    Etcd,
}

impl TargetKind {
    fn parse(args: &BenchArgs) -> anyhow::Result<TargetKind> {
        match args.target.as_str() {
            "rangedb" => Ok(TargetKind::Rangedb),
            #[cfg(feature = "etcd")]
            "etcd" if args.read == "lease" => {
                bail!("--read lease is rangedb's: etcd has no lease reads (use linearizable)")
            }
            #[cfg(feature = "etcd")]
            "etcd" => Ok(TargetKind::Etcd),
            #[cfg(not(feature = "etcd"))]
            "etcd" => bail!(
                "this rangedb was built without etcd support; build it with \
                 `cargo build --release --features etcd` to use --target etcd"
            ),
            other => bail!("--target must be rangedb or etcd, not {other}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            TargetKind::Rangedb => "rangedb",
            #[cfg(feature = "etcd")]
            TargetKind::Etcd => "etcd",
        }
    }
}

/// Why one operation failed: `kind` names it in the error counts (the client error's
/// variant, or etcd's gRPC status code), `message` says the rest.
#[derive(Debug)]
struct OpError {
    kind: String,
    message: String,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for OpError {}

impl From<ClientError> for OpError {
    fn from(error: ClientError) -> OpError {
        OpError { kind: error_kind(&error), message: error.to_string() }
    }
}

/// One connection to the system under test, with the operations the workloads use.
/// Cloning shares the connection (a client task holds a clone).
#[derive(Clone)]
enum Target {
    Rangedb(Client),
    /// Boxed: tonic's client handles are large (clippy's `large_enum_variant`).
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::Connection>),
}

impl Target {
    /// The rangedb client, if that is the target.
    fn rangedb(&self) -> Option<&Client> {
        match self {
            Target::Rangedb(client) => Some(client),
            #[cfg(feature = "etcd")]
            Target::Etcd(_) => None,
        }
    }

    /// `connections` connections to `endpoints`, each to every node.
    async fn connect(
        kind: TargetKind,
        endpoints: &[String],
        connections: u64,
    ) -> anyhow::Result<Vec<Target>> {
        let mut targets = Vec::new();
        for _ in 0..connections {
            targets.push(match kind {
                TargetKind::Rangedb => Target::Rangedb(Client::new(ClientConfig {
                    endpoints: endpoints.to_vec(),
                    ..ClientConfig::default()
                })),
                #[cfg(feature = "etcd")]
                TargetKind::Etcd => {
                    Target::Etcd(Box::new(etcd::Connection::connect(endpoints).await?))
                }
            });
        }
        Ok(targets)
    }

    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        match self {
            Target::Rangedb(client) => Ok(client.put(key, value).await.map(|_| ())?),
            #[cfg(feature = "etcd")]
            Target::Etcd(connection) => connection.put(key, value).await,
        }
    }

    /// A linearizable read (rangedb: ReadIndex on the range's leader; etcd: its
    /// default, also ReadIndex, not `--consistency s`).
    async fn get(&mut self, key: &[u8]) -> Result<(), OpError> {
        match self {
            Target::Rangedb(client) => Ok(client.get(key).await.map(|_| ())?),
            #[cfg(feature = "etcd")]
            Target::Etcd(connection) => connection.get(key).await,
        }
    }

    /// A read from the range leader's lease when it is valid (rangedb only: etcd has
    /// no lease reads; `--read lease` is refused for it when the flags are parsed).
    async fn get_lease(&mut self, key: &[u8]) -> Result<(), OpError> {
        match self {
            Target::Rangedb(client) => Ok(client.get_lease(key).await.map(|_| ())?),
            #[cfg(feature = "etcd")]
            Target::Etcd(_) => Err(OpError {
                kind: "Unsupported".into(),
                message: "etcd has no lease reads".into(),
            }),
        }
    }

    async fn delete(&mut self, key: &[u8]) -> Result<(), OpError> {
        match self {
            Target::Rangedb(client) => Ok(client.delete(key).await.map(|_| ())?),
            #[cfg(feature = "etcd")]
            Target::Etcd(connection) => connection.delete(key).await,
        }
    }

    /// A transfer: reads `a` and `b` (at once) and writes both (`value`) in one transaction,
    /// again from the start after a conflict (rangedb: `Client::txn`; etcd: a
    /// compare-and-swap on both keys' mod revisions, as etcd's STM does).
    async fn transfer(&mut self, a: &[u8], b: &[u8], value: &[u8]) -> Result<(), OpError> {
        match self {
            Target::Rangedb(client) => {
                let body = |t: rangedb::client::Txn| async move {
                    let (read_a, read_b) = tokio::join!(t.get(a), t.get(b));
                    read_a?;
                    read_b?;
                    t.put(a, value)?;
                    t.put(b, value)
                };
                Ok(client.txn(body).await.map(|_| ())?)
            }
            #[cfg(feature = "etcd")]
            Target::Etcd(connection) => connection.transfer(a, b, value).await,
        }
    }

    /// Up to `limit` keys from `start` on.
    async fn scan(&mut self, start: &[u8], limit: u64) -> Result<(), OpError> {
        match self {
            Target::Rangedb(client) => Ok(client.scan(start, None, limit).await.map(|_| ())?),
            #[cfg(feature = "etcd")]
            Target::Etcd(connection) => connection.scan(start, limit).await,
        }
    }

    /// The server's version: etcd reports its own; a rangedb cluster is taken to run
    /// this binary's version (it does under --local).
    async fn server_version(&mut self) -> Result<String, OpError> {
        match self {
            Target::Rangedb(_) => Ok(env!("CARGO_PKG_VERSION").to_string()),
            #[cfg(feature = "etcd")]
            Target::Etcd(connection) => connection.version().await,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Workload {
    Put,
    Get {
        lease: bool,
    },
    Mixed {
        read_ratio: f64,
        lease: bool,
    },
    Scan {
        limit: u64,
    },
    Delete,
    /// Read two keys and write both in one transaction; the second key is in
    /// another range (`ranges` 2) or in the same one (1).
    Txn {
        ranges: u8,
    },
}

impl Workload {
    fn parse(args: &BenchArgs) -> anyhow::Result<Workload> {
        let lease = match args.read.as_str() {
            "linearizable" => false,
            "lease" => true,
            other => bail!("--read must be linearizable or lease, not {other}"),
        };
        Ok(match args.workload.as_str() {
            "put" => Workload::Put,
            "get" => Workload::Get { lease },
            "mixed" => {
                if !(0.0..=1.0).contains(&args.read_ratio) {
                    bail!("--read-ratio must be between 0 and 1");
                }
                Workload::Mixed { read_ratio: args.read_ratio, lease }
            }
            "scan" => Workload::Scan { limit: args.scan_limit.max(1) },
            "delete" => Workload::Delete,
            "txn" => match args.txn_ranges {
                1 | 2 => Workload::Txn { ranges: args.txn_ranges },
                other => bail!("--txn-ranges must be 1 or 2, not {other}"),
            },
            other => bail!("--workload must be put, get, mixed, scan, delete or txn, not {other}"),
        })
    }

    /// Whether the key space is written before the run.
    fn needs_preload(self) -> bool {
        self != Workload::Put
    }
}

/// Servers started by `--local`, stopped and removed on drop.
struct LocalCluster {
    dir: PathBuf,
    children: Vec<Child>,
    endpoints: Vec<String>,
}

impl LocalCluster {
    fn start(kind: TargetKind, nodes: u64) -> anyhow::Result<LocalCluster> {
        if nodes == 0 {
            bail!("--local needs at least 1 node");
        }
        let dir = std::env::temp_dir().join(format!(
            "rangedb-bench-{}-{}",
            kind.name(),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        match kind {
            TargetKind::Rangedb => LocalCluster::start_rangedb(dir, nodes),
            #[cfg(feature = "etcd")]
            TargetKind::Etcd => etcd::start_local(dir, nodes),
        }
    }

    fn start_rangedb(dir: PathBuf, nodes: u64) -> anyhow::Result<LocalCluster> {
        let endpoints = free_loopback_addresses(nodes)?;
        let peers: Vec<String> =
            endpoints.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let binary = std::env::current_exe().context("find the rangedb binary")?;
        let mut cluster = LocalCluster { dir: dir.clone(), children: Vec::new(), endpoints };
        for (i, address) in cluster.endpoints.clone().iter().enumerate() {
            let log = std::fs::File::create(dir.join(format!("node{}.log", i + 1)))?;
            let child = Command::new(&binary)
                .args(["server", "--id", &(i + 1).to_string(), "--listen", address])
                .args(["--peers", &peers.join(",")])
                .arg("--data-dir")
                .arg(dir.join(format!("node{}", i + 1)))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("start a server")?;
            cluster.children.push(child);
        }
        Ok(cluster)
    }

    /// (user, system) CPU seconds of every server so far.
    fn cpu_seconds(&self) -> (f64, f64) {
        self.children
            .iter()
            .filter_map(|c| process_cpu_seconds(c.id()))
            .fold((0.0, 0.0), |(u, s), (cu, cs)| (u + cu, s + cs))
    }
}

/// `count` distinct loopback addresses whose ports were free a moment ago (the servers
/// bind them right after; another process could take one in between, and the start
/// then fails loudly).
fn free_loopback_addresses(count: u64) -> anyhow::Result<Vec<String>> {
    // Hold every listener until all are chosen so no port is handed out twice.
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("find a free loopback port")?;
    listeners.iter().map(|l| Ok(l.local_addr()?.to_string())).collect()
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// (utime, stime) of a process from /proc/PID/stat, in seconds.
fn process_cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user / 100.0, system / 100.0)) // USER_HZ is 100 on Linux.
}

/// The 1-minute load average, recorded so that a run on a busy machine says so.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    /// Measured operations started (the --ops budget).
    started: AtomicU64,
    /// Measured operations that failed (an --ops run ends when ok + failed reach it).
    failed: AtomicU64,
    errors: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// Key chooser: uniform, or YCSB's zipfian (Gray et al., "Quickly generating
/// billion-record synthetic databases") with the rank scrambled by a hash so the hot
/// keys do not all sit in one range.
#[derive(Clone, Debug)]
enum KeyChooser {
    Uniform { keys: u64 },
    Zipfian { keys: u64, theta: f64, alpha: f64, zeta_n: f64, eta: f64 },
}

impl KeyChooser {
    fn new(args: &BenchArgs) -> anyhow::Result<KeyChooser> {
        match args.distribution.as_str() {
            "uniform" => Ok(KeyChooser::Uniform { keys: args.keys }),
            "zipfian" => {
                let theta = args.zipf_theta;
                if !(0.0..1.0).contains(&theta) || theta == 0.0 {
                    bail!("--zipf-theta must be in (0, 1)");
                }
                let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
                let (zeta_n, zeta_2) = (zeta(args.keys), zeta(2));
                let eta =
                    (1.0 - (2.0 / args.keys as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n);
                Ok(KeyChooser::Zipfian {
                    keys: args.keys,
                    theta,
                    alpha: 1.0 / (1.0 - theta),
                    zeta_n,
                    eta,
                })
            }
            other => bail!("--distribution must be uniform or zipfian, not {other}"),
        }
    }

    fn next(&self, rng: &mut Rng) -> u64 {
        match *self {
            KeyChooser::Uniform { keys } => rng.next() % keys,
            KeyChooser::Zipfian { keys, theta, alpha, zeta_n, eta } => {
                let u = rng.unit();
                let uz = u * zeta_n;
                let rank = if uz < 1.0 {
                    0
                } else if uz < 1.0 + 0.5f64.powf(theta) {
                    1
                } else {
                    ((keys as f64) * (eta * u - eta + 1.0).powf(alpha)) as u64
                };
                Fnv64::hash(&rank.min(keys - 1).to_le_bytes()) % keys
            }
        }
    }
}

/// xorshift64: per-task, seeded by the task number, so runs choose the same keys.
struct Rng(u64);

impl Rng {
    fn new(task: u64) -> Rng {
        Rng(0x9e37_79b9_7f4a_7c15_u64 ^ (task + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub fn run(args: &BenchArgs, endpoints: &[String]) -> anyhow::Result<u8> {
    let kind = TargetKind::parse(args)?;
    let workload = Workload::parse(args)?;
    let chooser = KeyChooser::new(args)?;
    if args.clients == 0 || args.connections == 0 || args.keys == 0 || args.duration == 0 {
        bail!("--clients, --connections, --keys and --duration must be at least 1");
    }
    if args.ops == Some(0) {
        bail!("--ops must be at least 1");
    }
    if let Some(path) = &args.report {
        // Found out now, not after the run.
        std::fs::File::create(path)
            .with_context(|| format!("create the report {}", path.display()))?;
    }
    let local = args.local.map(|nodes| LocalCluster::start(kind, nodes)).transpose()?;
    let endpoints = local.as_ref().map(|l| l.endpoints.clone()).unwrap_or(endpoints.to_vec());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(drive(args, kind, workload, chooser, endpoints, local.as_ref()))
}

/// Shared between the driver and the client tasks.
struct Shared {
    args: BenchArgs,
    workload: Workload,
    chooser: KeyChooser,
    measuring: AtomicBool,
    stop: AtomicBool,
    histogram: Mutex<Histogram<u64>>,
    /// Per measured second, its latencies (`--report` only).
    timeline: Mutex<Vec<Histogram<u64>>>,
    /// When measuring started (set once, before `measuring`).
    measure_start: std::sync::OnceLock<Instant>,
    counters: Counters,
    /// Open loop: when the schedule starts (every task's request k is due at
    /// `epoch + k * interval`).
    epoch: Instant,
}

async fn drive(
    args: &BenchArgs,
    kind: TargetKind,
    workload: Workload,
    chooser: KeyChooser,
    endpoints: Vec<String>,
    local: Option<&LocalCluster>,
) -> anyhow::Result<u8> {
    #[cfg(feature = "etcd")]
    if kind == TargetKind::Etcd {
        etcd::wait_members(&endpoints).await?;
    }
    let clients = Target::connect(kind, &endpoints, args.connections).await?;
    wait_ready(&mut clients[0].clone()).await?;
    let server_version = clients[0].clone().server_version().await.context("server version")?;
    eprintln!("{} {server_version} at {}", kind.name(), endpoints.join(","));
    for setting in &args.setting {
        let Some((name, value)) = setting.split_once('=') else {
            bail!("--setting {setting:?}: expected NAME=VALUE");
        };
        let Some(client) = clients[0].rangedb() else {
            bail!("--setting is for rangedb");
        };
        client.config_set(name, value).await.with_context(|| format!("--setting {setting}"))?;
        eprintln!("setting {name} = {value}");
    }
    let ranges_before = range_count(&clients[0]).await;
    if workload.needs_preload() && !args.skip_preload {
        eprintln!("loading {} keys...", args.keys);
        preload(&clients, args).await?;
    }
    eprintln!("warming up for {} s...", args.warmup);
    let shared = Arc::new(Shared {
        args: args.clone(),
        workload,
        chooser,
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        histogram: Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?),
        timeline: Mutex::new(Vec::new()),
        measure_start: std::sync::OnceLock::new(),
        counters: Counters::default(),
        epoch: Instant::now(),
    });
    let mut tasks = Vec::new();
    for task in 0..args.clients {
        let client = clients[(task % args.connections) as usize].clone();
        let shared = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move { client_loop(task, client, shared).await }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let cpu_start = local.map(|l| l.cpu_seconds());
    let client_cpu_start = process_cpu_seconds(std::process::id());
    let start = Instant::now();
    let _ = shared.measure_start.set(start);
    shared.measuring.store(true, Ordering::SeqCst);
    progress(args, &shared.counters, start).await;
    shared.measuring.store(false, Ordering::SeqCst);
    let elapsed = start.elapsed().as_secs_f64();
    let client_cpu = client_cpu_start
        .zip(process_cpu_seconds(std::process::id()))
        .map(|(a, b)| (b.0 - a.0) + (b.1 - a.1));
    let cpu = cpu_start.zip(local.map(|l| l.cpu_seconds())).map(|(a, b)| (b.0 - a.0, b.1 - a.1));
    shared.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        let _ = task.await;
    }
    eprintln!();
    if let (Some(before), Some(after)) = (ranges_before, range_count(&clients[0]).await) {
        eprintln!("ranges: {before} before the run, {after} after");
    }
    let histogram = shared.histogram.lock().expect("no task panicked holding it");
    let target = (kind, server_version.as_str());
    let summary = report(args, target, &histogram, &shared.counters, elapsed, cpu, client_cpu);
    if let Some(path) = &args.report {
        let timeline = shared.timeline.lock().expect("no task panicked holding it");
        write_report(args, target, summary, &timeline, &histogram, path)?;
    }
    Ok(0)
}

/// How many ranges a rangedb cluster has (None for another target).
async fn range_count(target: &Target) -> Option<usize> {
    Some(target.rangedb()?.status().await.ranges().len())
}

/// Prints a progress line every second until the duration or the op count is reached.
async fn progress(args: &BenchArgs, counters: &Counters, start: Instant) {
    let mut last = 0;
    let mut second = 0;
    loop {
        let done = |finished: u64| match args.ops {
            Some(ops) => finished >= ops,
            None => start.elapsed() >= Duration::from_secs(args.duration),
        };
        // Poll often enough to stop an --ops run close to its count.
        let next = start + Duration::from_secs(second + 1);
        while Instant::now() < next {
            if args.ops.is_some() && done(finished(counters)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10).min(next - Instant::now())).await;
        }
        second += 1;
        let ok = counters.ok.load(Ordering::Relaxed);
        let errors: u64 = counters.errors.lock().expect("not poisoned").values().sum();
        let total = match args.ops {
            Some(ops) => format!("{ok}/{ops} ops"),
            None => format!("{second:>3}/{} s", args.duration),
        };
        eprint!("\r[{total}] {:>8} ops/s  {errors} errors   ", ok - last);
        last = ok;
        if done(finished(counters)) {
            return;
        }
    }
}

/// Measured operations that completed, successfully or not.
fn finished(counters: &Counters) -> u64 {
    counters.ok.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed)
}

/// Waits until the cluster accepts a write (a fresh etcd or rangedb cluster first
/// elects its leaders).
async fn wait_ready(client: &mut Target) -> anyhow::Result<()> {
    let mut last_error = None;
    for _ in 0..100 {
        match client.put(b"bench-ready", b"1").await {
            Ok(()) => return Ok(()),
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the cluster did not accept a write within 20 s: {}", last_error.expect("tried"))
}

async fn preload(clients: &[Target], args: &BenchArgs) -> anyhow::Result<()> {
    let value = vec![b'v'; args.value_size];
    let mut tasks = Vec::new();
    for part in 0..64u64 {
        let mut client = clients[(part % clients.len() as u64) as usize].clone();
        let (value, keys) = (value.clone(), args.keys);
        tasks.push(tokio::spawn(async move {
            for i in (part..keys).step_by(64) {
                client.put(&bench_key(i), &value).await?;
            }
            Ok::<(), OpError>(())
        }));
    }
    for task in tasks {
        task.await?.context("preload")?;
    }
    Ok(())
}

fn bench_key(i: u64) -> Vec<u8> {
    // Spread keys over the default ranges: the first character varies fastest.
    const FIRST: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut key = vec![FIRST[(i % FIRST.len() as u64) as usize]];
    key.extend_from_slice(format!("bench-{i:08}").as_bytes());
    key
}

/// One operation of the workload on `key`.
async fn one_op(
    client: &mut Target,
    workload: Workload,
    (index, keys): (u64, u64),
    value: &[u8],
    rng: &mut Rng,
) -> Result<(), OpError> {
    let key = &bench_key(index)[..];
    match workload {
        Workload::Put => client.put(key, value).await,
        Workload::Get { lease: false } => client.get(key).await,
        Workload::Get { lease: true } => client.get_lease(key).await,
        Workload::Mixed { read_ratio, lease } if rng.unit() < read_ratio => {
            if lease {
                client.get_lease(key).await
            } else {
                client.get(key).await
            }
        }
        Workload::Mixed { .. } => client.put(key, value).await,
        Workload::Scan { limit } => client.scan(key, limit).await,
        Workload::Delete => client.delete(key).await,
        Workload::Txn { ranges } => {
            // bench_key varies its first character fastest over 36: 36 keys on, the
            // same first character (the same range); 18 on, one across a split key.
            let step = if ranges == 1 { 36 } else { 18 };
            let other = bench_key((index + step) % keys.max(1));
            client.transfer(key, &other, value).await
        }
    }
}

/// The error's variant name: `OutcomeUnknown`, `Timeout`, ...
fn error_kind(error: &ClientError) -> String {
    format!("{error:?}").split([' ', '{', '(']).next().unwrap_or("?").to_string()
}

async fn client_loop(task: u64, mut client: Target, shared: Arc<Shared>) {
    let args = &shared.args;
    let value = vec![b'x'; args.value_size];
    let mut rng = Rng::new(task);
    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    // Per measured second (`--report`): two significant digits are plenty for a chart.
    let mut timeline: Vec<Histogram<u64>> = Vec::new();
    let second_histogram =
        || Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).expect("valid bounds");
    // Open loop: this task's share of the rate, its first request offset so the
    // tasks do not all fire at once.
    let interval =
        (args.rate > 0).then(|| Duration::from_secs_f64(args.clients as f64 / args.rate as f64));
    let mut intended = shared.epoch
        + interval.map_or(Duration::ZERO, |i| i.mul_f64(task as f64 / args.clients as f64));
    while !shared.stop.load(Ordering::Relaxed) {
        if interval.is_some() {
            tokio::time::sleep_until(intended).await;
        } else {
            intended = Instant::now();
        }
        let measured = shared.measuring.load(Ordering::Relaxed);
        if measured {
            let started = shared.counters.started.fetch_add(1, Ordering::Relaxed);
            if args.ops.is_some_and(|ops| started >= ops) {
                // The budget is spent: idle until the driver stops everyone.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        }
        let index = shared.chooser.next(&mut rng);
        let result =
            one_op(&mut client, shared.workload, (index, args.keys), &value, &mut rng).await;
        // Latency from the intended send time: a request that waited behind a stalled
        // one is charged for the wait (open loop); in closed loop they coincide.
        let micros = intended.elapsed().as_micros() as u64;
        if let Some(interval) = interval {
            intended += interval;
        }
        if !measured {
            continue;
        }
        match result {
            Ok(()) => {
                let _ = local.record(micros.max(1));
                if let (Some(_), Some(start)) = (&args.report, shared.measure_start.get()) {
                    let second = start.elapsed().as_secs() as usize;
                    if timeline.len() <= second {
                        timeline.resize_with(second + 1, second_histogram);
                    }
                    let _ = timeline[second].record(micros.max(1));
                }
                shared.counters.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                let mut errors = shared.counters.errors.lock().expect("not poisoned");
                *errors.entry(error.kind).or_default() += 1;
            }
        }
    }
    shared.histogram.lock().expect("not poisoned").add(&local).expect("same bounds");
    let mut merged = shared.timeline.lock().expect("not poisoned");
    for (second, histogram) in timeline.into_iter().enumerate() {
        if merged.len() <= second {
            merged.resize_with(second + 1, second_histogram);
        }
        merged[second].add(&histogram).expect("same bounds");
    }
}

/// Draws the run into `path` (`--report`, bench/report.rs).
fn write_report(
    args: &BenchArgs,
    (kind, server_version): (TargetKind, &str),
    summary: (Vec<String>, Vec<String>),
    timeline: &[Histogram<u64>],
    overall: &Histogram<u64>,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    // The last second is usually cut short by the end of the run: not drawn.
    let seconds = &timeline[..timeline.len().min(args.duration as usize)];
    let mode =
        if args.rate > 0 { format!("open loop, {}/s", args.rate) } else { "closed loop".into() };
    let parameters = [
        ("target", format!("{} {server_version}", kind.name())),
        ("workload", args.workload.clone()),
        ("clients", args.clients.to_string()),
        ("loop", mode),
        ("value size", format!("{} bytes", args.value_size)),
        ("keys", format!("{} ({})", args.keys, args.distribution)),
        ("nodes", args.local.map_or_else(|| "--endpoints".to_string(), |n| format!("{n} local"))),
        ("measured", format!("{} s after {} s of warm-up", args.duration, args.warmup)),
        ("load average", load_average().map_or_else(|| "-".to_string(), |l| format!("{l:.2}"))),
    ];
    let report = report::RunReport {
        title: format!(
            "rangedb bench: {} {}, {} clients",
            kind.name(),
            args.workload,
            args.clients
        ),
        parameters: parameters.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        summary,
        seconds,
        overall,
    };
    let text = report::render(&report, path);
    std::fs::write(path, text).with_context(|| format!("write the report {}", path.display()))?;
    eprintln!("report: {}", path.display());
    Ok(())
}

/// Prints the run's table (and JSON); returns the summary's header and cells for the
/// drawn report.
fn report(
    args: &BenchArgs,
    (kind, server_version): (TargetKind, &str),
    histogram: &Histogram<u64>,
    counters: &Counters,
    elapsed: f64,
    cpu: Option<(f64, f64)>,
    client_cpu: Option<f64>,
) -> (Vec<String>, Vec<String>) {
    let ok = counters.ok.load(Ordering::Relaxed);
    let throughput = ok as f64 / elapsed;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let errors = counters.errors.lock().expect("not poisoned").clone();
    let per_op_us = |seconds: f64| seconds / ok.max(1) as f64 * 1e6;
    let cpu_per_op_us = cpu.map(|(user, system)| per_op_us(user + system));
    let system_per_op_us = cpu.map(|(_, system)| per_op_us(system));
    let client_per_op_us = client_cpu.map(per_op_us);
    let mode = if args.rate > 0 { format!("open {}/s", args.rate) } else { "closed".into() };
    let workload = match args.workload.as_str() {
        "get" | "mixed" if args.read == "lease" => format!("{}/lease", args.workload),
        _ => args.workload.clone(),
    };
    let table = format!(
        "target   workload  dist     loop          clients  value  ops/s      p50 ms  p90 ms  \
         p99 ms  p99.9 ms  max ms   server cpu/op\n\
         {:<8} {:<9} {:<8} {:<13} {:<8} {:<6} {:<10.0} {:<7.2} {:<7.2} {:<7.2} {:<9.2} {:<8.2} {}",
        kind.name(),
        workload,
        args.distribution,
        mode,
        args.clients,
        args.value_size,
        throughput,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0,
        cpu_per_op_us
            .zip(system_per_op_us)
            .map(|(us, system)| format!("{us:.0} us ({system:.0} us system)"))
            .unwrap_or_else(|| "-".into()),
    );
    let table = match client_per_op_us {
        // The bench process shares the machine's cores with --local servers.
        Some(us) => format!("{table}; bench client {us:.0} us cpu/op"),
        None => table,
    };
    let errors_line = (!errors.is_empty()).then(|| format!("errors: {errors:?}"));
    let header =
        ["ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "server CPU/op"];
    let cells = vec![
        format!("{throughput:.0}"),
        format!("{:.2}", ms(0.5)),
        format!("{:.2}", ms(0.9)),
        format!("{:.2}", ms(0.99)),
        format!("{:.2}", ms(0.999)),
        format!("{:.2}", histogram.max() as f64 / 1000.0),
        errors.values().sum::<u64>().to_string(),
        cpu_per_op_us.map_or_else(|| "-".to_string(), |us| format!("{us:.0} µs")),
    ];
    let summary = (header.map(String::from).to_vec(), cells);
    if !args.json {
        println!("{table}");
        if let Some(line) = errors_line {
            println!("{line}");
        }
        return summary;
    }
    eprintln!("{table}");
    if let Some(line) = errors_line {
        eprintln!("{line}");
    }
    let errors: Vec<String> = errors.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    let null = || "null".to_string();
    println!(
        "{{\"version\":\"{}\",\"target\":\"{}\",\"target_version\":\"{}\",\"workload\":\"{}\",\"read\":\"{}\",\"read_ratio\":{},\"scan_limit\":{},\
         \"distribution\":\"{}\",\"zipf_theta\":{},\"loop\":\"{}\",\"target_rate\":{},\
         \"clients\":{},\"connections\":{},\"value_size\":{},\"keys\":{},\"local_nodes\":{},\
         \"warmup_s\":{},\"duration_s\":{elapsed:.3},\"durability\":\"fsync\",\
         \"loadavg_1m\":{},\"ops\":{ok},\"ops_per_s\":{throughput:.1},\"p50_ms\":{:.3},\
         \"p90_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3},\
         \"server_cpu_us_per_op\":{},\"server_system_cpu_us_per_op\":{},\"client_cpu_us_per_op\":{},\"errors\":{{{}}}}}",
        env!("CARGO_PKG_VERSION"),
        kind.name(),
        server_version,
        args.workload,
        args.read,
        args.read_ratio,
        args.scan_limit,
        args.distribution,
        args.zipf_theta,
        if args.rate > 0 { "open" } else { "closed" },
        args.rate,
        args.clients,
        args.connections,
        args.value_size,
        args.keys,
        args.local.map(|n| n.to_string()).unwrap_or_else(null),
        args.warmup,
        load_average().map(|l| l.to_string()).unwrap_or_else(null),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0,
        cpu_per_op_us.map(|v| format!("{v:.1}")).unwrap_or_else(null),
        system_per_op_us.map(|v| format!("{v:.1}")).unwrap_or_else(null),
        client_per_op_us.map(|v| format!("{v:.1}")).unwrap_or_else(null),
        errors.join(",")
    );
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(distribution: &str) -> BenchArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            bench: BenchArgs,
        }
        Wrap::parse_from(["bench", "--distribution", distribution, "--keys", "1000"]).bench
    }

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let chooser = KeyChooser::new(&args("zipfian")).unwrap();
        let mut rng = Rng::new(1);
        let mut counts = vec![0u64; 1000];
        for _ in 0..100_000 {
            counts[chooser.next(&mut rng) as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // Theta 0.99 over 1,000 keys: the hottest key takes roughly 13% of draws.
        assert!(counts[0] > 8_000 && counts[0] < 20_000, "hottest {}", counts[0]);
        assert!(counts[999] < 100);
    }

    #[test]
    fn target_is_rangedb_by_default_and_etcd_only_with_the_feature() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let parse = |flags: &[&str]| {
            let bench = Wrap::parse_from(std::iter::once("bench").chain(flags.iter().copied()));
            TargetKind::parse(&bench.bench)
        };
        assert_eq!(parse(&[]).unwrap(), TargetKind::Rangedb);
        assert!(parse(&["--target", "zookeeper"]).is_err());
        let etcd = parse(&["--target", "etcd"]);
        #[cfg(feature = "etcd")]
        assert_eq!(etcd.unwrap(), TargetKind::Etcd);
        #[cfg(not(feature = "etcd"))]
        assert!(etcd.unwrap_err().to_string().contains("--features etcd"));
    }

    #[test]
    fn uniform_covers_the_key_space() {
        let chooser = KeyChooser::new(&args("uniform")).unwrap();
        let mut rng = Rng::new(2);
        let mut seen = [false; 1000];
        for _ in 0..20_000 {
            seen[chooser.next(&mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
