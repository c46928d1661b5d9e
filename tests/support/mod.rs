//! Real `rangedb server` processes on loopback for integration tests.
//!
//! Ports come from binding 127.0.0.1:0 and releasing it, so parallel test runs do
//! not clash. Each server's stderr goes to a log file in the cluster's temporary
//! directory; a failing test prints the logs' tails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use rangedb::client::{Client, ClientError};
use rangedb::wire::{
    read_frame, write_frame, ClientRequest, ClientResponse, Hello, HelloReply, HelloRole,
    ReadConsistency, Request, Response,
};
use tokio::io::AsyncWriteExt;

pub const BIN: &str = env!("CARGO_BIN_EXE_rangedb");

/// A free loopback port (released before use; another process could take it, which
/// the OS makes unlikely for freshly released ephemeral ports).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

pub struct Server {
    pub id: u64,
    pub address: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// Started with `--join` this member's address instead of `--id`/`--peers`
    /// (its node id is the one the cluster gives it).
    pub join: Option<String>,
    /// Started with `--http-addr` this address (`Cluster::enable_http`).
    pub http: Option<String>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub servers: BTreeMap<u64, Server>,
    pub peers_flag: String,
    pub extra_flags: Vec<String>,
}

impl Cluster {
    /// Starts `n` servers (ids 1..=n) and waits until each serves (its log says so).
    pub fn start(n: u64, extra_flags: &[&str]) -> Cluster {
        let cluster = Cluster::start_unchecked(n, extra_flags);
        // Founding completes once every founder has said hello: wait for it, so a test
        // that stops a node at once stops a member, not a founder still learning.
        for id in 1..=n {
            cluster.wait_serving(id);
        }
        cluster
    }

    /// Starts `n` servers (ids 1..=n) and waits until each accepts connections only
    /// (for flags that keep the log from saying when a node serves).
    pub fn start_unchecked(n: u64, extra_flags: &[&str]) -> Cluster {
        let mut cluster = Cluster::prepare(n, extra_flags);
        for id in 1..=n {
            cluster.start_node(id);
        }
        cluster
    }

    /// A cluster of `n` servers (ids 1..=n), none started yet.
    pub fn prepare(n: u64, extra_flags: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let addresses: BTreeMap<u64, String> =
            (1..=n).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect();
        let peers_flag =
            addresses.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
        let servers = addresses
            .iter()
            .map(|(id, address)| {
                let server = Server {
                    id: *id,
                    address: address.clone(),
                    data_dir: dir.path().join(format!("node{id}")),
                    log: dir.path().join(format!("node{id}.log")),
                    child: None,
                    join: None,
                    http: None,
                };
                (*id, server)
            })
            .collect();
        let extra_flags = extra_flags.iter().map(|s| s.to_string()).collect();
        Cluster { dir, servers, peers_flag, extra_flags }
    }

    /// Adds a server that joins the cluster of `join` (a member's address) under the
    /// test's key `key`, started with an empty data directory; `address` None: a new
    /// port.
    pub fn start_joiner(&mut self, key: u64, address: Option<String>, join: &str) {
        let address = address.unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let server = Server {
            id: key,
            address,
            data_dir: self.dir.path().join(format!("node{key}")),
            log: self.dir.path().join(format!("node{key}.log")),
            child: None,
            join: Some(join.to_string()),
            http: None,
        };
        self.servers.insert(key, server);
        self.start_node(key);
    }

    /// Waits until node `id`'s log says it serves (after founding, if it founds).
    pub fn wait_serving(&self, id: u64) {
        let server = &self.servers[&id];
        let needle = format!("listening on {} (data", server.address);
        for _ in 0..600 {
            if std::fs::read_to_string(&server.log).is_ok_and(|log| log.contains(&needle)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("node {id} does not serve after 15 s:\n{}", self.logs());
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.servers.values().map(|s| s.address.clone()).collect()
    }

    pub fn endpoints_flag(&self) -> String {
        self.endpoints().join(",")
    }

    pub fn start_node(&mut self, id: u64) {
        let server = self.servers.get_mut(&id).expect("known node");
        assert!(server.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&server.log)
            .expect("open log");
        let mut command = Command::new(BIN);
        command.arg("server").args(["--listen", &server.address]);
        match &server.join {
            Some(join) => command.args(["--join", join]),
            None => command.args(["--id", &id.to_string(), "--peers", &self.peers_flag]),
        };
        if let Some(http) = &server.http {
            command.args(["--http-addr", http]);
        }
        let child = command
            .arg("--data-dir")
            .arg(&server.data_dir)
            .args(&self.extra_flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn rangedb server");
        server.child = Some(child);
        wait_listening(&server.address);
    }

    /// Gives every server an HTTP listener on a free loopback port (`--http-addr`),
    /// from its next start on.
    pub fn enable_http(&mut self) {
        for server in self.servers.values_mut() {
            server.http = Some(format!("127.0.0.1:{}", free_port()));
        }
    }

    /// Node `id`'s HTTP address (`enable_http`).
    pub fn http(&self, id: u64) -> &str {
        self.servers[&id].http.as_deref().expect("enable_http was called")
    }

    /// Starts node `id` with its stderr piped and not tracked by the cluster: for a
    /// server expected to exit by itself (refused, corrupt data), see `wait_with_timeout`.
    pub fn spawn_piped(&self, id: u64) -> Child {
        let server = &self.servers[&id];
        Command::new(BIN)
            .arg("server")
            .args(["--id", &id.to_string(), "--listen", &server.address])
            .args(["--peers", &self.peers_flag])
            .arg("--data-dir")
            .arg(&server.data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rangedb server")
    }

    /// SIGKILL: no chance to sync or clean up.
    pub fn kill(&mut self, id: u64) {
        let server = self.servers.get_mut(&id).expect("known node");
        let mut child = server.child.take().expect("node is running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self, id: u64) -> ExitStatus {
        let server = self.servers.get_mut(&id).expect("known node");
        let child = server.child.take().expect("node is running");
        terminate(child)
    }

    /// Runs the CLI against the cluster.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.endpoints_flag(), args)
    }

    pub fn logs(&self) -> String {
        let mut all = String::new();
        for server in self.servers.values() {
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            // Panics first (a backtrace would push them out of the tail), then the tail.
            let panics = text.lines().filter(|l| l.contains("panicked at")).take(3);
            let tail: Vec<&str> =
                text.lines().filter(|l| !l.starts_with("  ")).rev().take(20).collect();
            all.push_str(&format!("--- node {} ({}) ---\n", server.id, server.address));
            for line in panics.chain(tail.into_iter().rev()) {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("server logs:\n{}", self.logs());
        }
        for server in self.servers.values_mut() {
            if let Some(mut child) = server.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub fn terminate(mut child: Child) -> ExitStatus {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -TERM failed");
    for _ in 0..200 {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("server did not exit within 10 s of SIGTERM");
}

/// Waits for a process expected to exit by itself; kills it and fails the test if it
/// is still running after `limit`.
pub fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let polls = limit.as_millis() / 50;
    for _ in 0..polls {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("collect output");
    panic!("still running after {limit:?}; stderr: {}", String::from_utf8_lossy(&output.stderr));
}

/// Waits until `address` accepts TCP connections.
pub fn wait_listening(address: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(address).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {address} after 5 s");
}

pub fn cli(endpoints: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--endpoints", endpoints])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rangedb CLI")
}

/// One HTTP/1.1 request (`Connection: close`) to `address`: the status code and
/// the body. Fails the test if nothing answers within 10 s.
pub fn http(address: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)
        .unwrap_or_else(|e| panic!("connect to {address}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write request");
    stream.write_all(body).expect("write body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {text}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    (status.unwrap_or_else(|| panic!("no status: {head}")), body.to_string())
}

/// `GET path` on `address`.
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    http(address, "GET", path, None)
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A raw client connection speaking the wire protocol, for requests the client
/// library does not make (local reads from one particular node).
pub struct RawConnection {
    stream: tokio::net::TcpStream,
    next_id: u64,
}

impl RawConnection {
    pub async fn connect(address: &str) -> std::io::Result<RawConnection> {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        write_frame(&mut stream, &Hello::new(HelloRole::Client))
            .await
            .map_err(std::io::Error::other)?;
        stream.flush().await?;
        match read_frame::<HelloReply, _>(&mut stream).await.map_err(std::io::Error::other)? {
            Some(HelloReply::Accepted { .. }) => Ok(RawConnection { stream, next_id: 1 }),
            other => Err(std::io::Error::other(format!("hello answered {other:?}"))),
        }
    }

    pub async fn call(&mut self, request: Request) -> std::io::Result<Response> {
        let id = self.next_id;
        self.next_id += 1;
        write_frame(&mut self.stream, &ClientRequest { id, request })
            .await
            .map_err(std::io::Error::other)?;
        self.stream.flush().await?;
        let response: Option<ClientResponse> =
            read_frame(&mut self.stream).await.map_err(std::io::Error::other)?;
        let response = response.ok_or_else(|| std::io::Error::other("connection closed"))?;
        assert_eq!(response.id, id, "responses come back in order on one connection");
        Ok(response.response)
    }

    /// This node's own replica's value of `key`, leader or not.
    pub async fn local_get(&mut self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        let request =
            Request::Get { key: key.to_vec(), revision: None, consistency: ReadConsistency::Local };
        match self.call(request).await? {
            Response::Get { kv, .. } => Ok(kv.map(|kv| kv.value)),
            other => Err(std::io::Error::other(format!("unexpected {other:?}"))),
        }
    }
}

/// Keys spread over every default range: `0…`, `5…`, `a…`, `h…`, `q…`, `z…`.
pub fn spread_key(i: u64) -> Vec<u8> {
    const PREFIXES: [&str; 6] = ["0", "5", "a", "h", "q", "z"];
    format!("{}-key-{i:06}", PREFIXES[(i % 6) as usize]).into_bytes()
}

pub fn value_of(i: u64, round: u64) -> Vec<u8> {
    format!("value-{i}-{round}-{}", "x".repeat(32)).into_bytes()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Writes keys `range` and records every acknowledged value. A write whose outcome
/// is unknown is retried (same key, same value) until acknowledged.
pub async fn write_keys(
    client: &Client,
    keys: std::ops::Range<u64>,
    round: u64,
    acked: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) {
    for i in keys {
        let (key, value) = (spread_key(i), value_of(i, round));
        let mut attempts = 0;
        loop {
            attempts += 1;
            match client.put(&key, &value).await {
                Ok(_) => break,
                Err(ClientError::OutcomeUnknown { .. }) if attempts < 5 => continue,
                Err(error) => panic!(
                    "put {} failed after {attempts} attempts: {error}",
                    String::from_utf8_lossy(&key)
                ),
            }
        }
        acked.insert(key, value);
    }
}

/// Every acknowledged write must be readable from every node's own replica (after
/// it catches up) and through the leader.
pub async fn check_everywhere(
    cluster: &Cluster,
    client: &Client,
    acked: &BTreeMap<Vec<u8>, Vec<u8>>,
) {
    for (key, value) in acked {
        let got = client.get(key).await.unwrap_or_else(|e| panic!("linearizable get: {e}"));
        assert_eq!(
            got.map(|kv| kv.value).as_ref(),
            Some(value),
            "key {}",
            String::from_utf8_lossy(key)
        );
        let got = client.get_lease(key).await.unwrap_or_else(|e| panic!("lease get: {e}"));
        assert_eq!(got.map(|kv| kv.value).as_ref(), Some(value), "lease get");
    }
    for server in cluster.servers.values() {
        let mut connection = RawConnection::connect(&server.address).await.expect("connect");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for (key, value) in acked {
            loop {
                // Unavailable while the replica repairs damaged storage: wait as well.
                let got = connection.local_get(key).await.map_err(|e| e.to_string());
                if got.as_ref().ok().and_then(Option::as_ref) == Some(value) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node {} never caught up on key {}: has {:?}",
                    server.id,
                    String::from_utf8_lossy(key),
                    got.map(|v| v.map(|v| String::from_utf8_lossy(&v).into_owned()))
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
