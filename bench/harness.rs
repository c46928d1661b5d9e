//! `rangedb bench`: load against a cluster, measured with hdrhistogram.
//!
//! Closed loop: `--clients` tasks each send one request, wait for the answer, send
//! the next. Requests share `--connections` client connections per node (pipelined).
//! With `--local N` the harness starts an N-node cluster of this same binary on
//! loopback in a temporary directory (fsync on, as always), measures the servers'
//! CPU time from /proc, then stops them and removes the directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rangedb::client::{Client, ClientConfig, ClientError};
use tokio::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// put or get (linearizable).
    #[arg(long, default_value = "put")]
    workload: String,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 64)]
    clients: u64,
    /// Client connections per node shared by the clients.
    #[arg(long, default_value_t = 4)]
    connections: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Distinct keys (uniform).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Measured time in seconds.
    #[arg(long, default_value_t = 15)]
    duration: u64,
    /// Unmeasured warm-up in seconds.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Start an N-node cluster on loopback for the run (instead of --endpoints).
    #[arg(long)]
    local: Option<u64>,
    /// Print one JSON object at the end.
    #[arg(long)]
    json: bool,
}

/// Servers started by `--local`, stopped and removed on drop.
struct LocalCluster {
    dir: PathBuf,
    children: Vec<Child>,
    endpoints: Vec<String>,
}

impl LocalCluster {
    fn start(nodes: u64) -> anyhow::Result<LocalCluster> {
        if nodes == 0 {
            bail!("--local needs at least 1 node");
        }
        let dir = std::env::temp_dir().join(format!("rangedb-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut endpoints = Vec::new();
        for _ in 0..nodes {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            endpoints.push(listener.local_addr()?.to_string());
        }
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

    /// User + system CPU seconds of every server so far.
    fn cpu_seconds(&self) -> f64 {
        self.children.iter().map(|c| process_cpu_seconds(c.id()).unwrap_or(0.0)).sum()
    }
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

/// utime + stime of a process from /proc/PID/stat, in seconds.
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux.
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    errors: Mutex<std::collections::BTreeMap<String, u64>>,
}

pub fn run(args: &BenchArgs, endpoints: &[String]) -> anyhow::Result<u8> {
    if args.workload != "put" && args.workload != "get" {
        bail!("--workload must be put or get, not {}", args.workload);
    }
    if args.clients == 0 || args.connections == 0 || args.keys == 0 || args.duration == 0 {
        bail!("--clients, --connections, --keys and --duration must be at least 1");
    }
    let local = args.local.map(LocalCluster::start).transpose()?;
    let endpoints = local.as_ref().map(|l| l.endpoints.clone()).unwrap_or(endpoints.to_vec());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(drive(args, endpoints, local.as_ref()))
}

async fn drive(
    args: &BenchArgs,
    endpoints: Vec<String>,
    local: Option<&LocalCluster>,
) -> anyhow::Result<u8> {
    let clients: Vec<Client> = (0..args.connections)
        .map(|_| {
            Client::new(ClientConfig { endpoints: endpoints.clone(), ..ClientConfig::default() })
        })
        .collect();
    wait_ready(&clients[0]).await?;
    if args.workload == "get" {
        eprintln!("loading {} keys...", args.keys);
        preload(&clients, args).await?;
    }
    eprintln!("warming up for {} s...", args.warmup);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::new();
    for task in 0..args.clients {
        let client = clients[(task % args.connections) as usize].clone();
        let (measuring, stop) = (Arc::clone(&measuring), Arc::clone(&stop));
        let (histogram, counters) = (Arc::clone(&histogram), Arc::clone(&counters));
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(task, client, args, measuring, stop, histogram, counters).await
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let cpu_start = local.map(|l| l.cpu_seconds());
    let start = Instant::now();
    measuring.store(true, Ordering::SeqCst);
    let mut last = 0;
    for second in 1..=args.duration {
        tokio::time::sleep_until(start + Duration::from_secs(second)).await;
        let ok = counters.ok.load(Ordering::Relaxed);
        eprint!("\r[{second:>3}/{} s] {:>8} ops/s   ", args.duration, ok - last);
        last = ok;
    }
    measuring.store(false, Ordering::SeqCst);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_start.zip(local.map(|l| l.cpu_seconds())).map(|(a, b)| b - a);
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        let _ = task.await;
    }
    eprintln!();
    let histogram = histogram.lock().expect("no task panicked holding it");
    report(args, &histogram, &counters, elapsed, cpu);
    Ok(0)
}

async fn wait_ready(client: &Client) -> anyhow::Result<()> {
    for _ in 0..50 {
        if client.put(b"bench-ready", b"1").await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the cluster did not accept a write within 10 s")
}

async fn preload(clients: &[Client], args: &BenchArgs) -> anyhow::Result<()> {
    let value = vec![b'v'; args.value_size];
    let mut tasks = Vec::new();
    for part in 0..64u64 {
        let client = clients[(part % clients.len() as u64) as usize].clone();
        let (value, keys) = (value.clone(), args.keys);
        tasks.push(tokio::spawn(async move {
            for i in (part..keys).step_by(64) {
                client.put(&bench_key(i), &value).await?;
            }
            Ok::<(), ClientError>(())
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

async fn client_loop(
    task: u64,
    client: Client,
    args: BenchArgs,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    histogram: Arc<Mutex<Histogram<u64>>>,
    counters: Arc<Counters>,
) {
    let value = vec![b'x'; args.value_size];
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (task + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    while !stop.load(Ordering::Relaxed) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let key = bench_key(rng % args.keys);
        let sent = Instant::now();
        let result = if args.workload == "put" {
            client.put(&key, &value).await.map(|_| ())
        } else {
            client.get(&key).await.map(|_| ())
        };
        if !measuring.load(Ordering::Relaxed) {
            continue;
        }
        match result {
            Ok(()) => {
                let micros = sent.elapsed().as_micros() as u64;
                let _ = local.record(micros.max(1));
                counters.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                let kind =
                    format!("{error:?}").split([' ', '{', '(']).next().unwrap_or("?").to_string();
                *counters.errors.lock().expect("not poisoned").entry(kind).or_default() += 1;
            }
        }
    }
    histogram.lock().expect("not poisoned").add(&local).expect("same bounds");
}

fn report(
    args: &BenchArgs,
    histogram: &Histogram<u64>,
    counters: &Counters,
    elapsed: f64,
    cpu: Option<f64>,
) {
    let ok = counters.ok.load(Ordering::Relaxed);
    let throughput = ok as f64 / elapsed;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let errors = counters.errors.lock().expect("not poisoned").clone();
    let cpu_per_op_us = cpu.map(|c| c / ok.max(1) as f64 * 1e6);
    println!(
        "workload  clients  value  ops/s      p50 ms  p90 ms  p99 ms  p99.9 ms  max ms  server cpu/op"
    );
    println!(
        "{:<9} {:<8} {:<6} {:<10.0} {:<7.2} {:<7.2} {:<7.2} {:<9.2} {:<7.2} {}",
        args.workload,
        args.clients,
        args.value_size,
        throughput,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0,
        cpu_per_op_us.map(|us| format!("{us:.0} us")).unwrap_or_else(|| "-".into()),
    );
    if !errors.is_empty() {
        println!("errors: {errors:?}");
    }
    if args.json {
        let errors: Vec<String> = errors.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!(
            "{{\"version\":\"{}\",\"workload\":\"{}\",\"clients\":{},\"connections\":{},\"value_size\":{},\"keys\":{},\"duration_s\":{elapsed:.3},\"durability\":\"fsync\",\"ops\":{ok},\"ops_per_s\":{throughput:.1},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3},\"server_cpu_us_per_op\":{},\"errors\":{{{}}}}}",
            env!("CARGO_PKG_VERSION"),
            args.workload,
            args.clients,
            args.connections,
            args.value_size,
            args.keys,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            histogram.max() as f64 / 1000.0,
            cpu_per_op_us.map(|v| format!("{v:.1}")).unwrap_or_else(|| "null".into()),
            errors.join(",")
        );
    }
}
