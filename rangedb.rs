//! The `rangedb` command: runs a server or talks to a cluster as a client.
//!
//! Only parsing, printing and exit codes live here; the work is in the library
//! (`rangedb::node::run_server`, `rangedb::client::Client`).

// `madsim` is set by `cargo sim`; the signal code differs there.
#![allow(unexpected_cfgs)]

#[path = "cli/admin.rs"]
mod admin;
#[path = "bench/harness.rs"]
mod bench;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{CommandFactory, Parser, Subcommand};

use rangedb::cli_parse;
use rangedb::cli_table::print_table;
use rangedb::client::{
    check_key, escape, Client, ClientConfig, ClientError, ClusterStatus, CAUGHT_UP_LAG,
};
use rangedb::logging::{self, LevelFilter, LogFormat};
use rangedb::node::telemetry::Telemetry;
use rangedb::node::{LeaderPlacement, ServerConfig};
use rangedb::raft::NodeId;

/// jemalloc instead of the system's malloc: the server allocates per message, entry
/// and frame, and glibc's malloc cost ~10% of its CPU on the put path, jemalloc ~3%
/// (docs/benchmarks-history.md, fourth pass; mimalloc was tried and returned large
/// buffers to the OS too eagerly).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (cluster unavailable, no quorum, bad server configuration, ...)
  2  usage error (bad flags, empty key, key under the reserved prefix `_/`)
  3  key not found (get, delete)
  4  outcome unknown: a write timed out and may or may not have been applied
  5  transaction conflict: nothing was written; run the transaction again";

const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_FOUND: u8 = 3;
const EXIT_OUTCOME_UNKNOWN: u8 = 4;
const EXIT_CONFLICT: u8 = 5;

/// A replicated, range-partitioned key-value database.
#[derive(Parser, Debug)]
#[command(name = "rangedb", version, after_help = EXIT_CODES)]
struct Cli {
    /// Comma-separated `host:port` of cluster nodes to contact (clients only).
    #[arg(long, global = true, value_delimiter = ',', default_value = "127.0.0.1:7001")]
    endpoints: Vec<String>,
    /// Deadline for one client operation, retries included: `5s`, `500ms`, `1m` or a
    /// number of milliseconds.
    #[arg(long, global = true, value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,
    /// How results are printed: "simple" (text) or "json" (one JSON object; keys and
    /// values in base64), as etcdctl's --write-out.
    #[arg(short = 'w', long = "write-out", global = true, value_enum, default_value_t = WriteOut::Simple)]
    write_out: WriteOut,
    #[command(subcommand)]
    command: Command,
}

/// `--write-out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum WriteOut {
    Simple,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a node until SIGINT or SIGTERM.
    Server(ServerArgs),
    /// Writes VALUE at KEY (VALUE `-` reads it from stdin).
    Put { key: OsString, value: OsString },
    /// Prints the value at KEY (raw bytes; a newline is added on a terminal).
    Get {
        key: OsString,
        /// Read as of this revision of the key's range.
        #[arg(long)]
        revision: Option<u64>,
        /// Read from the leader's lease when it holds one (no round trip to the
        /// followers); safe while clock rates stay within the lease's drift bound.
        #[arg(long, conflicts_with = "revision")]
        lease: bool,
    },
    /// Deletes KEY.
    Delete { key: OsString },
    /// Prints `key<TAB>value` for keys in [START, END) (END "" = to the end), with
    /// non-printable bytes escaped. `range` is the same command.
    #[command(visible_alias = "range")]
    Scan {
        start: OsString,
        end: OsString,
        /// At most this many keys (0 = all).
        #[arg(long, default_value_t = 0)]
        limit: u64,
    },
    /// Transactions. With no subcommand: reads etcdctl's transaction syntax on stdin
    /// (compares, a blank line, operations if they all hold, a blank line, operations
    /// otherwise) and runs it atomically. With one: a transaction across invocations
    /// (`txn begin` prints its id; pass it as --txn or RANGEDB_TXN).
    Txn(TxnArgs),
    /// One atomic write of several keys (across ranges too).
    Batch {
        #[command(subcommand)]
        command: BatchCommand,
    },
    /// Shows every range (span, generation, keys, size, leader, term, commit, applied,
    /// replicas) and node.
    Status {
        /// Shows it again every --interval until interrupted (ranges new since the
        /// last look are marked `+`, ranges whose span changed `*`); with -w json,
        /// one object per line.
        #[arg(long)]
        watch: bool,
        /// Time between two looks with --watch: `1s`, `500ms`, ...
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        interval: Duration,
        /// Stop after this many looks (0: until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Cluster membership.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Measures throughput and latency against --endpoints or a --local cluster.
    Bench(bench::BenchArgs),
    /// Operating the cluster: its status, runtime settings, rangedb's own keys.
    Admin {
        #[command(subcommand)]
        command: Admin,
    },
}

/// `rangedb admin ...`: one variant per area (each its own subcommands).
#[derive(Subcommand, Debug)]
enum Admin {
    /// The cluster as a whole.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Runtime settings, replicated in the meta range under `_/cluster/config/` and
    /// applied by every node without a restart.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// rangedb's own keys under `_/` (read-only).
    Meta {
        #[command(subcommand)]
        command: MetaCommand,
    },
    /// Consistent backups of every range, and new clusters restored from them.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Splits the range holding KEY at KEY (ranges also split on their own once their
    /// data passes the setting range_max_bytes); waits until the new range serves.
    Split { key: OsString },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// The cluster id, every member (address, up or down) and every range (span,
    /// leader, replicas, applied index, history kept).
    Status,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Prints a setting's value (history_revisions, snapshot_entries).
    Get { key: String },
    /// Sets a setting for the whole cluster; prints the old and the new value.
    Set {
        key: String,
        /// A number, or "all" (history_revisions); a negative one is refused by name.
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Every setting, its value and what it does.
    List,
}

#[derive(Subcommand, Debug)]
enum MetaCommand {
    /// Prints `key<TAB>value` for rangedb's keys under PREFIX (default `_/`).
    List {
        #[arg(default_value = "_/")]
        prefix: OsString,
        /// At most this many keys (0 = all).
        #[arg(long, default_value_t = 0)]
        limit: u64,
    },
    /// Prints the value of one of rangedb's keys.
    Get { key: OsString },
}

#[derive(Subcommand, Debug)]
enum BackupCommand {
    /// Writes a consistent copy of every range into DIR (new or empty): writes wait
    /// while every range is held still for an in-memory copy.
    Create {
        dir: PathBuf,
        /// The longest a range may be held: past it, its leader lets it go and the
        /// backup fails (a backup that died never holds a range for good).
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        hold: Duration,
    },
    /// Checks the backup in DIR and stages it in an empty --data-dir; `rangedb server`
    /// on it (every founder staged, started with --id and --peers) founds a new
    /// cluster holding the backup.
    Restore {
        dir: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct TxnArgs {
    /// Prompt for the compares and operations (etcdctl's `txn -i`).
    #[arg(short, long)]
    interactive: bool,
    /// Print the outcome as JSON (the same as -w json).
    #[arg(long)]
    json: bool,
    /// The transaction (from `txn begin`).
    #[arg(long = "txn", env = "RANGEDB_TXN", global = true)]
    id: Option<String>,
    #[command(subcommand)]
    command: Option<TxnCommand>,
}

#[derive(Subcommand, Debug)]
enum TxnCommand {
    /// Starts a transaction and prints its id (its state is kept in a file under
    /// RANGEDB_TXN_DIR, default the temporary directory, until commit or abort).
    Begin,
    /// Reads KEY in the transaction (its own writes first).
    Get { key: OsString },
    /// Writes VALUE at KEY when the transaction commits.
    Put { key: OsString, value: OsString },
    /// Deletes KEY when the transaction commits.
    Delete { key: OsString },
    /// Scans [START, END) in the transaction (END "" = to the end).
    Scan {
        start: OsString,
        end: OsString,
        #[arg(long, default_value_t = 0)]
        limit: u64,
    },
    /// Commits: every read still current and every write applied, or nothing
    /// (exit 5 on a conflict).
    Commit,
    /// Drops the transaction (nothing was written).
    Abort,
}

#[derive(Subcommand, Debug)]
enum BatchCommand {
    /// Writes every KEY VALUE pair atomically.
    Put {
        #[arg(required = true, num_args = 2..)]
        pairs: Vec<OsString>,
    },
    /// Deletes every KEY atomically.
    Delete {
        #[arg(required = true)]
        keys: Vec<OsString>,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Every member: id, address, data directory identity, and state (voter, learner,
    /// catching up, joint; up, or down with the reason; removed).
    List,
    /// Adds the node listening at ADDR, started with `rangedb server --join`: it
    /// receives every range as a learner and becomes a voter once caught up.
    Add { address: String },
    /// Removes member ID from every range, then from the cluster (it stops). Refused
    /// when a range would be left without a majority of its voters up.
    Remove { id: u64 },
    /// Replaces member ID (e.g. a node whose data directory was lost) by the node
    /// listening at ADDR, started with `--join`: it catches up, then takes ID's vote
    /// in one joint change per range.
    Replace { id: u64, address: String },
}

#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// This node's id (> 0), one of the ids in --peers.
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// Address to listen on for clients and peers.
    #[arg(long, default_value = "127.0.0.1:7001")]
    listen: String,
    /// Every cluster member as `id=host:port`, comma-separated, this node included
    /// (default: a single-node cluster of this node at --listen). Creates a cluster;
    /// to grow one later, start the new node with --join.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Join the running cluster of the members at host:port[,host:port...] (any one
    /// that is up will do): the node waits until `rangedb node add <its --listen>`
    /// adds it, then gets its id and a replica of every range. --listen must be the
    /// address the other nodes reach it at.
    #[arg(long, conflicts_with_all = ["peers", "split_keys"])]
    join: Option<String>,
    /// Directory holding this node's WAL and snapshots.
    #[arg(long, default_value = "./rangedb-data")]
    data_dir: PathBuf,
    /// Keys at which the keyspace is first cut into ranges, comma-separated (only
    /// when the cluster is created; default: the server's choice).
    #[arg(long, value_delimiter = ',')]
    split_keys: Option<Vec<String>>,
    /// Raft tick interval in milliseconds.
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
    /// Snapshot a range's state machine (and release old log segments) after this
    /// many applied entries, once they also hold twice the bytes of its last snapshot
    /// (until the cluster setting snapshot_entries is set: `rangedb admin config`).
    #[arg(long, default_value_t = 10_000)]
    snapshot_entries: u64,
    /// The initial value of the cluster setting history_revisions (revisions of
    /// history each range keeps readable below its newest one; "all" keeps every
    /// version), written once if the cluster has none. Change it with `rangedb admin
    /// config set history_revisions N`: the cluster's setting wins over this flag.
    #[arg(long, value_parser = parse_history)]
    history_revisions: Option<u64>,
    /// Where range leaders go: "colocate" moves every range's leadership to the node
    /// leading the meta range (one WAL fsync there covers every range's writes);
    /// "elected" leaves it wherever elections put it.
    #[arg(long, default_value = "colocate", value_parser = parse_placement)]
    leader_placement: LeaderPlacement,
    /// Least severe log events written to stderr: error, warn, info, debug, trace or
    /// off.
    #[arg(long, default_value = "info", value_parser = parse_log_level)]
    log_level: LevelFilter,
    /// How log lines are written: "text" (timestamp, level, message, fields) or "json"
    /// (one object per line).
    #[arg(long, default_value = "text", value_parser = parse_log_format)]
    log_format: LogFormat,
    /// Serve /health, /ready and /metrics (Prometheus) over HTTP at host:port; a port
    /// alone (7070 or :7070) listens on loopback. Off unless given.
    #[arg(long, value_parser = parse_http_address)]
    http_addr: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Server(_)) {
        // A client killed by SIGPIPE when its output is closed (`| head`), as Unix
        // tools are, instead of failing on the write (Rust ignores SIGPIPE).
        // SAFETY: restores the default disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Server(ref args) => run_server(args),
        Command::Bench(ref args) => bench::run(args, &cli.endpoints),
        _ => run_client(&cli),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// clap's value parser for `--history-revisions`: a count, or "all".
fn parse_history(text: &str) -> Result<u64, String> {
    match text {
        "all" => Ok(u64::MAX),
        _ => text
            .parse()
            .map_err(|_| format!("expected a number of revisions or \"all\", got {text:?}")),
    }
}

/// clap's value parser for `--leader-placement`.
fn parse_placement(text: &str) -> Result<LeaderPlacement, String> {
    match text {
        "colocate" => Ok(LeaderPlacement::Colocate),
        "elected" => Ok(LeaderPlacement::Elected),
        _ => Err(format!("expected \"colocate\" or \"elected\", got {text:?}")),
    }
}

/// clap's value parser for `--log-level`.
fn parse_log_level(text: &str) -> Result<LevelFilter, String> {
    logging::parse_level(text).map_err(|error| error.to_string())
}

/// clap's value parser for `--log-format`.
fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    logging::parse_format(text).map_err(|error| error.to_string())
}

/// clap's value parser for `--http-addr`.
fn parse_http_address(text: &str) -> Result<String, String> {
    cli_parse::parse_http_address(text).map_err(|error| error.to_string())
}

/// clap's value parser for `--timeout`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    cli_parse::parse_duration(text).map_err(|error| error.to_string())
}

fn run_server(args: &ServerArgs) -> anyhow::Result<u8> {
    let config = server_config(args).context("invalid server configuration")?;
    logging::install(args.log_level, args.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The node runs as a task on the worker threads, not on this thread in block_on:
    // its event loop and the connection tasks it wakes then share the workers, and
    // most wake-ups stay on one thread instead of crossing with a futex (idle node:
    // futex calls 342/s -> 72/s; puts: 0.94 -> 0.49 per put, strace).
    let shutdown = {
        let _context = runtime.enter();
        shutdown_signal()
    };
    // The transaction lock janitor (rangedb::client::run_node_janitor): it settles
    // locks of transactions whose coordinator died in the ranges this node leads,
    // through this node's own listener. It stops with the process.
    let janitor = Client::new(ClientConfig {
        endpoints: vec![args.listen.clone()],
        ..ClientConfig::default()
    });
    let telemetry = Arc::new(Telemetry::default());
    runtime.spawn(rangedb::client::run_node_janitor(janitor, Arc::clone(&telemetry)));
    if let Some(address) = &args.http_addr {
        // The key-value API goes through this node's own listener, as a CLI would.
        let client = Client::new(ClientConfig {
            endpoints: vec![args.listen.clone()],
            ..ClientConfig::default()
        });
        start_http(&runtime, address, Arc::clone(&telemetry), client)?;
    }
    let server = runtime.spawn(rangedb::node::run_server_observed(config, telemetry, shutdown));
    match runtime.block_on(server) {
        Ok(result) => result.context("server failed")?,
        Err(error) => anyhow::bail!("the server task failed: {error}"),
    }
    Ok(0)
}

/// Binds `--http-addr` (a port in use is an error at once) and serves it on `runtime`
/// (ops/mod.rs).
#[cfg(not(madsim))]
fn start_http(
    runtime: &tokio::runtime::Runtime,
    address: &str,
    telemetry: Arc<Telemetry>,
    client: Client,
) -> anyhow::Result<()> {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(address))
        .with_context(|| format!("cannot listen on --http-addr {address}"))?;
    tracing::info!(
        "HTTP listener on http://{address} (status page at /; /health, /ready, /metrics, /v1/kv)"
    );
    runtime.spawn(async move {
        if let Err(error) = rangedb::ops::serve(listener, telemetry, client).await {
            tracing::error!("the HTTP listener stopped: {error}");
        }
    });
    Ok(())
}

/// The simulated build has no HTTP listener (it needs the real runtime).
#[cfg(madsim)]
fn start_http(
    _runtime: &tokio::runtime::Runtime,
    address: &str,
    _telemetry: Arc<Telemetry>,
    _client: Client,
) -> anyhow::Result<()> {
    bail!("--http-addr {address}: the simulated build has no HTTP listener")
}

fn server_config(args: &ServerArgs) -> anyhow::Result<ServerConfig> {
    if args.id == 0 {
        bail!("--id must be greater than 0");
    }
    cli_parse::check_address(&args.listen).context("--listen")?;
    if let Some(join) = &args.join {
        for address in join.split(',') {
            cli_parse::check_address(address).context("--join")?;
        }
    }
    let peers = if args.peers.is_empty() {
        BTreeMap::from([(NodeId(args.id), args.listen.clone())])
    } else {
        cli_parse::parse_peers(&args.peers)?
    };
    if !peers.contains_key(&NodeId(args.id)) {
        bail!("--peers must include this node's --id {}", args.id);
    }
    let split_keys = match &args.split_keys {
        None => None,
        Some(keys) => Some(cli_parse::parse_split_keys(keys)?),
    };
    if args.tick_ms == 0 {
        bail!("--tick-ms must be greater than 0");
    }
    Ok(ServerConfig {
        node_id: NodeId(args.id),
        listen: args.listen.clone(),
        peers,
        data_dir: args.data_dir.clone(),
        join: args.join.clone(),
        split_keys,
        tick_ms: args.tick_ms,
        snapshot_entries: args.snapshot_entries,
        history_revisions: args.history_revisions,
        leader_placement: args.leader_placement,
        snapshot_log_ratio: rangedb::node::SNAPSHOT_LOG_RATIO,
    })
}

/// Resolves on SIGINT or SIGTERM.
#[cfg_attr(madsim, allow(clippy::manual_async_fn))] // The registration is not(madsim).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // Registered now, before the server listens: a SIGTERM that arrives before the
    // loop first waits for it must stop the server cleanly, not kill the process.
    #[cfg(not(madsim))]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(interrupt), Ok(terminate)) => Some((interrupt, terminate)),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!("cannot watch SIGINT/SIGTERM ({error})");
                None
            }
        }
    };
    async move {
        #[cfg(not(madsim))]
        match signals {
            Some((mut interrupt, mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            None => std::future::pending::<()>().await,
        }
        #[cfg(madsim)]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}

fn run_client(cli: &Cli) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let config = ClientConfig {
        endpoints: cli.endpoints.clone(),
        request_timeout: cli.timeout,
        attempt_timeout: cli.timeout.min(Duration::from_secs(2)),
        connect_timeout: cli.timeout.min(Duration::from_secs(1)),
        client_id: None,
    };
    if config.endpoints.iter().all(|endpoint| endpoint.trim().is_empty()) {
        usage_error("--endpoints is empty");
    }
    let client = Client::new(config);
    let json = cli.write_out == WriteOut::Json;
    runtime.block_on(async {
        let code = client_command(&client, &cli.command, json).await;
        // A committed transaction's intents on its other ranges, resolved before exit.
        client.flush_background().await;
        code
    })
}

async fn client_command(client: &Client, command: &Command, json: bool) -> anyhow::Result<u8> {
    match command {
        Command::Server(_) | Command::Bench(_) => unreachable!("handled in main"),
        Command::Admin { command } => admin::run(client, command, json).await,
        Command::Put { key, value } => {
            let key = key_arg(key);
            let value = if value == "-" {
                let mut value = Vec::new();
                std::io::stdin().read_to_end(&mut value).context("cannot read stdin")?;
                value
            } else {
                value.clone().into_encoded_bytes()
            };
            let revision = client_result(client.put(&key, &value).await)?;
            if json {
                print_json(&serde_json::json!({ "revision": revision }))?;
            } else {
                println!("OK (revision {revision})");
            }
            Ok(0)
        }
        Command::Get { key, revision, lease } => {
            let key = key_arg(key);
            let found = match revision {
                None if *lease => client.get_lease(&key).await,
                None => client.get(&key).await,
                Some(revision) => client.get_at(&key, *revision).await,
            };
            print_found(&key, client_result(found)?, json)
        }
        Command::Delete { key } => {
            let key = key_arg(key);
            let existed = client_result(client.delete(&key).await)?;
            if json {
                print_json(&serde_json::json!({ "deleted": existed }))?;
                return Ok(if existed { 0 } else { EXIT_NOT_FOUND });
            }
            if existed {
                println!("OK (deleted)");
                Ok(0)
            } else {
                eprintln!("key not found: {}", escape(&key));
                Ok(EXIT_NOT_FOUND)
            }
        }
        Command::Scan { start, end, limit } => {
            let start = start.clone().into_encoded_bytes();
            let end = end.clone().into_encoded_bytes();
            let end = (!end.is_empty()).then_some(end);
            let kvs = client_result(client.scan(&start, end.as_deref(), *limit).await)?;
            print_kvs(&kvs, json)?;
            Ok(0)
        }
        Command::Txn(args) => txn_command(client, args, json).await,
        Command::Batch { command } => {
            let writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = match command {
                BatchCommand::Put { pairs } => {
                    if pairs.len() % 2 != 0 {
                        usage_error("batch put takes KEY VALUE pairs");
                    }
                    pairs
                        .chunks(2)
                        .map(|pair| (key_arg(&pair[0]), Some(pair[1].clone().into_encoded_bytes())))
                        .collect()
                }
                BatchCommand::Delete { keys } => {
                    keys.iter().map(|key| (key_arg(key), None)).collect()
                }
            };
            let count = writes.len();
            let committed = client.batch(writes).await;
            client.flush_background().await;
            let committed = client_result(committed)?;
            if json {
                let (revision, ranges) = (committed.revision, committed.ranges);
                print_json(
                    &serde_json::json!({"keys": count, "ranges": ranges, "revision": revision}),
                )?;
            } else {
                println!(
                    "OK ({count} keys in {} ranges, revision {})",
                    committed.ranges, committed.revision
                );
            }
            Ok(0)
        }
        Command::Status { watch: false, .. } => {
            let status = client.status().await;
            if json {
                print_json(&rangedb::client::status_json(&status))?;
            } else {
                print_status(&status, &BTreeMap::new());
            }
            let any_up = status.nodes.iter().any(|node| node.status.is_ok());
            Ok(if any_up { 0 } else { EXIT_ERROR })
        }
        Command::Status { watch: true, interval, count } => {
            watch_status(client, *interval, *count, json).await
        }
        Command::Node { command: NodeCommand::List } => {
            let status = client.status().await;
            print_members(&status, json)?;
            let any_up = status.nodes.iter().any(|node| node.status.is_ok());
            Ok(if any_up { 0 } else { EXIT_ERROR })
        }
        Command::Node { command } => {
            let progress = |line: &str| eprintln!("{line}");
            let (what, report) = match command {
                NodeCommand::List => unreachable!("handled above"),
                NodeCommand::Add { address } => {
                    cli_parse::check_address(address).context("ADDR")?;
                    ("added", client.add_node(address, progress).await)
                }
                NodeCommand::Remove { id } => {
                    ("removed", client.remove_node(NodeId(*id), progress).await)
                }
                NodeCommand::Replace { id, address } => {
                    cli_parse::check_address(address).context("ADDR")?;
                    ("replaced", client.replace_node(NodeId(*id), address, progress).await)
                }
            };
            let report = client_result(report)?;
            let catch_up = if report.catch_up.is_zero() {
                String::new()
            } else {
                format!(", caught up in {:.1?}", report.catch_up)
            };
            if json {
                print_json(&serde_json::json!({
                    "node": report.node.0,
                    "done": what,
                    "ranges": report.ranges,
                    "total_ms": report.total.as_secs_f64() * 1e3,
                    "catch_up_ms": report.catch_up.as_secs_f64() * 1e3,
                }))?;
                return Ok(0);
            }
            println!(
                "OK: {} {what} on {} ranges in {:.1?}{catch_up}",
                report.node, report.ranges, report.total
            );
            print_members(&client.status().await, false)?;
            Ok(0)
        }
    }
}

/// Prints one JSON object on a line.
fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string(value).context("cannot encode JSON")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).context("cannot write to stdout")
}

/// `print_value`, or with `json` `{"count":0|1,"kvs":[...]}` (exit 3 when not found).
fn print_found(
    key: &[u8],
    found: Option<rangedb::range::kv::KeyValue>,
    json: bool,
) -> anyhow::Result<u8> {
    if !json {
        return print_value(key, found);
    }
    let code = if found.is_some() { 0 } else { EXIT_NOT_FOUND };
    print_json(&rangedb::client::kvs_json(found.as_slice()))?;
    Ok(code)
}

/// `key<TAB>value` lines, escaped, or with `json` `{"count":n,"kvs":[...]}`.
fn print_kvs(kvs: &[rangedb::range::kv::KeyValue], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&rangedb::client::kvs_json(kvs));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for kv in kvs {
        writeln!(out, "{}\t{}", escape(&kv.key), escape(&kv.value))
            .context("cannot write to stdout")?;
    }
    out.flush().context("cannot write to stdout")
}

/// Prints a value read (raw bytes; a newline only on a terminal), or says the key was
/// not found (exit 3).
fn print_value(key: &[u8], found: Option<rangedb::range::kv::KeyValue>) -> anyhow::Result<u8> {
    let Some(kv) = found else {
        eprintln!("key not found: {}", escape(key));
        return Ok(EXIT_NOT_FOUND);
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    out.write_all(&kv.value).context("cannot write to stdout")?;
    if stdout.is_terminal() {
        out.write_all(b"\n").context("cannot write to stdout")?;
    }
    out.flush().context("cannot write to stdout")?;
    Ok(0)
}

/// Where `txn begin` keeps a transaction's state between commands.
fn txn_file(id: &str) -> PathBuf {
    let dir = std::env::var_os("RANGEDB_TXN_DIR")
        .map_or_else(|| std::env::temp_dir().join("rangedb-txns"), PathBuf::from);
    dir.join(format!("{id}.txn"))
}

const TXN_FILE_MAGIC: &[u8] = b"rangedb-txn 1\n";

fn save_txn(id: &str, state: &rangedb::client::TxnState) -> anyhow::Result<()> {
    let path = txn_file(id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut bytes = TXN_FILE_MAGIC.to_vec();
    let encoded = bincode::serde::encode_to_vec(state, bincode::config::standard())
        .context("cannot encode the transaction")?;
    bytes.extend(encoded);
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("cannot write {}", path.display()))
}

fn load_txn(id: &str) -> anyhow::Result<rangedb::client::TxnState> {
    let path = txn_file(id);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "no transaction {id} ({} unreadable: committed, aborted or never begun?)",
            path.display()
        )
    })?;
    let body = bytes
        .strip_prefix(TXN_FILE_MAGIC)
        .with_context(|| format!("{} is not a transaction file of this rangedb", path.display()))?;
    match bincode::serde::decode_from_slice(body, bincode::config::standard()) {
        Ok((state, used)) if used == body.len() => Ok(state),
        _ => anyhow::bail!("{} is damaged", path.display()),
    }
}

async fn txn_command(client: &Client, args: &TxnArgs, json: bool) -> anyhow::Result<u8> {
    let Some(command) = &args.command else {
        return etcd_txn(client, args, json || args.json).await;
    };
    // Every subcommand's answer but `get` and `scan` (keys and values): one line.
    let say = |text: &str, fields: serde_json::Value| -> anyhow::Result<()> {
        if json {
            print_json(&fields)
        } else {
            println!("{text}");
            Ok(())
        }
    };
    if let TxnCommand::Begin = command {
        let txn = client.begin();
        let id = txn.id().to_string();
        save_txn(&id, &txn.save())?;
        say(&id, serde_json::json!({ "txn": id }))?;
        if std::io::stderr().is_terminal() {
            eprintln!("(use it with --txn {id}, or: export RANGEDB_TXN={id})");
        }
        return Ok(0);
    }
    let Some(id) = &args.id else {
        usage_error(
            "which transaction? pass --txn ID or set RANGEDB_TXN (from `rangedb txn begin`)",
        );
    };
    let txn = client.resume(load_txn(id)?);
    match command {
        TxnCommand::Begin => unreachable!("handled above"),
        TxnCommand::Get { key } => {
            let key = key_arg(key);
            let found = client_result(txn.get(&key).await)?;
            save_txn(id, &txn.save())?;
            print_found(&key, found, json)
        }
        TxnCommand::Put { key, value } => {
            client_result(txn.put(&key_arg(key), &value.clone().into_encoded_bytes()))?;
            save_txn(id, &txn.save())?;
            say("OK (buffered until commit)", serde_json::json!({ "buffered": true }))?;
            Ok(0)
        }
        TxnCommand::Delete { key } => {
            client_result(txn.delete(&key_arg(key)))?;
            save_txn(id, &txn.save())?;
            say("OK (buffered until commit)", serde_json::json!({ "buffered": true }))?;
            Ok(0)
        }
        TxnCommand::Scan { start, end, limit } => {
            let start = start.clone().into_encoded_bytes();
            let end = end.clone().into_encoded_bytes();
            let end = (!end.is_empty()).then_some(end);
            let kvs = client_result(txn.scan(&start, end.as_deref(), *limit).await)?;
            save_txn(id, &txn.save())?;
            print_kvs(&kvs, json)?;
            Ok(0)
        }
        TxnCommand::Commit => {
            let result = txn.commit().await;
            // Its background work (the abort of a conflicting one) before any exit.
            client.flush_background().await;
            // Committed, conflicted, failed or unknown: the transaction is over (a
            // second commit of an unknown one could apply its blind writes twice).
            let _ = std::fs::remove_file(txn_file(id));
            let committed = client_result(result)?;
            let text = format!(
                "OK (committed{}, {} ranges)",
                if committed.revision > 0 {
                    format!(" at revision {}", committed.revision)
                } else {
                    String::new()
                },
                committed.ranges
            );
            let (revision, ranges) = (committed.revision, committed.ranges);
            say(
                &text,
                serde_json::json!({"committed": true, "revision": revision, "ranges": ranges}),
            )?;
            Ok(0)
        }
        TxnCommand::Abort => {
            std::fs::remove_file(txn_file(id)).with_context(|| format!("no transaction {id}"))?;
            say("OK (aborted; nothing was written)", serde_json::json!({ "aborted": true }))?;
            Ok(0)
        }
    }
}

/// `rangedb txn` with etcdctl's syntax on stdin.
async fn etcd_txn(client: &Client, args: &TxnArgs, json: bool) -> anyhow::Result<u8> {
    let mut text = String::new();
    if args.interactive {
        let stdin = std::io::stdin();
        for (prompt, _) in [
            ("compares:", 0),
            ("success requests (get, put, del):", 1),
            ("failure requests (get, put, del):", 2),
        ] {
            println!("{prompt}");
            loop {
                let mut line = String::new();
                if stdin.read_line(&mut line).context("cannot read stdin")? == 0
                    || line.trim().is_empty()
                {
                    break;
                }
                text.push_str(&line);
            }
            text.push('\n');
        }
    } else {
        std::io::stdin().read_to_string(&mut text).context("cannot read stdin")?;
    }
    let txn = match rangedb::cli_txn::parse(&text) {
        Ok(txn) => txn,
        Err(error) => usage_error(&error),
    };
    let outcome = client.compare_txn(&txn).await;
    client.flush_background().await;
    let outcome = client_result(outcome)?;
    if json {
        println!("{}", serde_json::to_string(&outcome).context("cannot encode the outcome")?);
    } else {
        print!("{}", rangedb::cli_txn::render(&outcome));
    }
    Ok(0)
}

/// A key from the command line, or exit 2 if the server would refuse it.
fn key_arg(key: &OsString) -> Vec<u8> {
    let key = key.clone().into_encoded_bytes();
    if let Err(error) = check_key(&key) {
        usage_error(&error.to_string());
    }
    key
}

fn usage_error(message: &str) -> ! {
    let mut command = Cli::command();
    command.error(clap::error::ErrorKind::InvalidValue, message).exit()
}

/// Passes success through; exits 4 for an unknown outcome, 2 for an invalid request;
/// other errors become `error: ...` with exit 1.
fn client_result<T>(result: Result<T, ClientError>) -> anyhow::Result<T> {
    match result {
        Ok(value) => Ok(value),
        Err(error @ ClientError::OutcomeUnknown { .. }) => {
            eprintln!("error: {error}");
            std::process::exit(i32::from(EXIT_OUTCOME_UNKNOWN));
        }
        Err(error @ ClientError::Invalid { .. }) => {
            eprintln!("error: {error}");
            std::process::exit(i32::from(EXIT_USAGE));
        }
        Err(error @ ClientError::Conflict { .. }) => {
            eprintln!("error: {error}");
            std::process::exit(i32::from(EXIT_CONFLICT));
        }
        Err(error) => Err(error.into()),
    }
}

/// `status --watch`: the status again every `interval` (the screen cleared first on a
/// terminal), marking what changed since the previous look.
async fn watch_status(
    client: &Client,
    interval: Duration,
    count: u64,
    json: bool,
) -> anyhow::Result<u8> {
    use std::io::IsTerminal;
    let terminal = std::io::stdout().is_terminal();
    let mut before: BTreeMap<u64, (Vec<u8>, Option<Vec<u8>>)> = BTreeMap::new();
    let mut looks = 0;
    loop {
        let status = client.status().await;
        looks += 1;
        if json {
            print_json(&rangedb::client::status_json(&status))?;
        } else {
            if terminal {
                print!("\x1b[2J\x1b[H");
            }
            let ranges = status.ranges().len();
            println!("{} ranges (every {interval:?}; + new, * span changed)", ranges);
            print_status(&status, &before);
            println!();
        }
        before = status
            .ranges()
            .iter()
            .map(|r| (r.descriptor.id.0, (r.descriptor.start.clone(), r.descriptor.end.clone())))
            .collect();
        if count != 0 && looks >= count {
            return Ok(0);
        }
        tokio::time::sleep(interval).await;
    }
}

/// Prints the ranges and nodes; ranges not in `before` (a previous look: id ->
/// span) are marked `+`, ranges whose span changed since `*` (nothing is marked when
/// `before` is empty).
fn print_status(status: &ClusterStatus, before: &BTreeMap<u64, (Vec<u8>, Option<Vec<u8>>)>) {
    let mut rows = vec![[
        "RANGE", "START", "END", "GEN", "KEYS", "SIZE", "LEADER", "TERM", "COMMIT", "APPLIED",
        "REPLICAS",
    ]
    .map(String::from)];
    for range in status.ranges() {
        let descriptor = &range.descriptor;
        let leader = match range.leader {
            Some(leader) => leader.to_string(),
            None => "none".to_string(),
        };
        // The range's configuration: voters, learners marked `(l)`, and the voters a
        // joint change is leaving marked `(out)`.
        let mut replicas: Vec<String> = range.voters.iter().map(NodeId::to_string).collect();
        replicas.extend(range.learners.iter().map(|n| format!("{n}(l)")));
        replicas.extend(
            range
                .outgoing
                .iter()
                .filter(|n| !range.voters.contains(n))
                .map(|n| format!("{n}(out)")),
        );
        let span = (descriptor.start.clone(), descriptor.end.clone());
        let mark = match before.get(&descriptor.id.0) {
            _ if before.is_empty() => "",
            None => "+",
            Some(old) if *old != span => "*",
            Some(_) => "",
        };
        rows.push([
            format!("{}{mark}", descriptor.id),
            format!("\"{}\"", escape(&descriptor.start)),
            match &descriptor.end {
                Some(end) => format!("\"{}\"", escape(end)),
                None => "(end)".to_string(),
            },
            descriptor.generation.to_string(),
            range.keys.to_string(),
            rangedb::cli_table::human_bytes(range.bytes),
            leader,
            range.term.to_string(),
            range.commit.to_string(),
            range.applied.to_string(),
            replicas.join(","),
        ]);
    }
    print_table(&rows);
    println!();
    let mut rows = vec![["NODE", "ADDRESS", "STATE"].map(String::from)];
    for node in &status.nodes {
        rows.push(match &node.status {
            Ok(own) => {
                let peers: Vec<String> = own
                    .peers
                    .iter()
                    .map(|(id, _, up)| format!("{id} {}", if *up { "up" } else { "down" }))
                    .collect();
                // Replicas rebuilding damaged storage from their peers (README, "A
                // damaged disk"): they neither vote nor serve local reads until then.
                let repairing: Vec<String> = own
                    .ranges
                    .iter()
                    .filter(|range| range.role.ends_with("(repairing)"))
                    .map(|range| range.descriptor.id.to_string())
                    .collect();
                let repairing = if repairing.is_empty() {
                    String::new()
                } else {
                    format!(" (repairing: {})", repairing.join(","))
                };
                [
                    own.node.to_string(),
                    node.address.clone(),
                    format!(
                        "up, {} replicas{repairing}, links: {}",
                        own.ranges.len(),
                        peers.join(", ")
                    ),
                ]
            }
            Err(reason) => {
                // The node's id as its peers know it, from their link tables.
                let id = status
                    .nodes
                    .iter()
                    .filter_map(|other| other.status.as_ref().ok())
                    .flat_map(|other| other.peers.iter())
                    .find(|(_, address, _)| *address == node.address)
                    .map_or_else(|| "?".to_string(), |(id, _, _)| id.to_string());
                [id, node.address.clone(), format!("unreachable: {reason}")]
            }
        });
    }
    print_table(&rows);
}

/// `rangedb node list`: one row per member, from every node that answered.
/// `node list`: one line per member (a table), or with `json` one object:
/// `{"cluster": HEX, "members": [{"id", "address", "identity", "up", "state"}],
/// "removed": [IDS]}`.
fn print_members(status: &ClusterStatus, json: bool) -> anyhow::Result<()> {
    let reports: Vec<&rangedb::wire::NodeStatus> =
        status.nodes.iter().filter_map(|node| node.status.as_ref().ok()).collect();
    let mut addresses: BTreeMap<NodeId, String> = BTreeMap::new();
    let mut identities: BTreeMap<NodeId, u64> = BTreeMap::new();
    for report in &reports {
        addresses.insert(report.node, report.address.clone());
        for (id, address, _) in &report.peers {
            addresses.entry(*id).or_insert_with(|| address.clone());
        }
        for (id, identity) in &report.identities {
            identities.entry(*id).or_insert(*identity);
        }
    }
    let removed: BTreeSet<NodeId> =
        reports.iter().flat_map(|report| report.removed.iter().copied()).collect();
    let ranges = status.ranges();
    // A member's role across the ranges: voter, learner (catching up while behind its
    // leader), or in a joint change.
    let role = |id: NodeId| -> String {
        let (mut voter, mut learner, mut joint, mut behind) = (0, 0, 0, 0);
        for range in &ranges {
            if range.voters.contains(&id) {
                voter += 1;
            } else if range.learners.contains(&id) {
                learner += 1;
                if rangedb::client::learner_lag(range, id) > CAUGHT_UP_LAG {
                    behind += 1;
                }
            }
            if range.outgoing.contains(&id) {
                joint += 1;
            }
        }
        let mut role = match (voter, learner) {
            (0, 0) if joint == 0 => "no replicas".to_string(),
            (_, 0) => "voter".to_string(),
            (0, _) if behind > 0 => format!("learner, catching up on {behind} ranges"),
            (0, _) => "learner, caught up".to_string(),
            _ => format!("voter on {voter} ranges, learner on {learner}"),
        };
        if joint > 0 {
            role.push_str(&format!(", leaving {joint} ranges (joint)"));
        }
        role
    };
    let mut rows = vec![["NODE", "ADDRESS", "IDENTITY", "STATE"].map(String::from)];
    let mut members = Vec::new();
    for (id, address) in &addresses {
        let own = reports.iter().find(|report| report.node == *id);
        let identity = own.map(|report| report.identity).or(identities.get(id).copied());
        if removed.contains(id) {
            continue;
        }
        let state = match own {
            Some(report) => {
                let repairing =
                    report.ranges.iter().filter(|r| r.role.ends_with("(repairing)")).count();
                let mut state = format!("{}, up, {} replicas", role(*id), report.ranges.len());
                if repairing > 0 {
                    state.push_str(&format!(", {repairing} repairing"));
                }
                if identities.get(id).is_some_and(|known| Some(*known) != identity) {
                    state.push_str(", identity differs from the cluster's record");
                }
                state
            }
            None => {
                let reason = status
                    .nodes
                    .iter()
                    .find(|node| node.address == *address)
                    .and_then(|node| node.status.as_ref().err())
                    .map_or("not among --endpoints; its peers see it".to_string(), |reason| {
                        format!("unreachable: {reason}")
                    });
                let linked = reports
                    .iter()
                    .any(|report| report.peers.iter().any(|(peer, _, up)| peer == id && *up));
                if linked {
                    format!("{}, {reason}; linked from a peer", role(*id))
                } else {
                    format!("{}, down ({reason})", role(*id))
                }
            }
        };
        let identity = identity.map(|identity| format!("{identity:016x}"));
        members.push(serde_json::json!({
            "id": id.0,
            "address": address,
            "identity": identity,
            "up": own.is_some(),
            "state": state,
        }));
        rows.push([id.to_string(), address.clone(), identity.unwrap_or_else(|| "?".into()), state]);
    }
    let cluster = reports.first().map(|report| format!("{:016x}", report.cluster));
    if json {
        let removed: Vec<u64> = removed.iter().map(|id| id.0).collect();
        let value = serde_json::json!({"cluster": cluster, "members": members, "removed": removed});
        return print_json(&value);
    }
    print_table(&rows);
    if !removed.is_empty() {
        let list: Vec<String> = removed.iter().map(ToString::to_string).collect();
        println!("\nremoved: {}", list.join(", "));
    }
    if let Some(cluster) = cluster {
        println!("\ncluster {cluster}");
    }
    Ok(())
}
