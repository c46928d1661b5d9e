//! `rangedb bench --target etcd`: the harness's operations on etcd's v3 API (gRPC, via
//! the `etcd-client` crate), and `--local N` as N `etcd` processes on loopback.
//!
//! ```text
//!  Target::Etcd(Connection) ── one etcd_client::Client = one HTTP/2 connection per
//!     │                        endpoint, requests round-robin over the endpoints
//!     ├─ put     Put                       (a follower forwards it to the leader)
//!     ├─ get     Range, linearizable        (etcd's default: ReadIndex, not serializable)
//!     ├─ scan    Range [key, ∞) limit N     (linearizable)
//!     ├─ delete  DeleteRange key
//!     └─ version Maintenance.Status
//! ```
//!
//! Compiled only with `--features etcd`, so `cargo build`, `cargo test` and `cargo sim`
//! never build tonic.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, Error, GetOptions, KvClient, MaintenanceClient,
    Txn, TxnOp,
};

use super::{free_loopback_addresses, LocalCluster, OpError};

/// Per-request deadline, as the rangedb client's default operation timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The KV and maintenance services of one `etcd_client::Client`: its own HTTP/2
/// connection to every endpoint. Cloning shares the connections (tonic channels are
/// handles).
#[derive(Clone)]
pub(super) struct Connection {
    kv: KvClient,
    maintenance: MaintenanceClient,
}

impl Connection {
    pub(super) async fn connect(endpoints: &[String]) -> anyhow::Result<Connection> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(REQUEST_TIMEOUT);
        let client = Client::connect(endpoints, Some(options))
            .await
            .with_context(|| format!("connect to etcd at {}", endpoints.join(",")))?;
        Ok(Connection { kv: client.kv_client(), maintenance: client.maintenance_client() })
    }

    pub(super) async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        self.kv.put(key, value, None).await.map(|_| ()).map_err(op_error)
    }

    pub(super) async fn get(&mut self, key: &[u8]) -> Result<(), OpError> {
        self.kv.get(key, None).await.map(|_| ()).map_err(op_error)
    }

    pub(super) async fn delete(&mut self, key: &[u8]) -> Result<(), OpError> {
        self.kv.delete(key, None).await.map(|_| ()).map_err(op_error)
    }

    pub(super) async fn scan(&mut self, start: &[u8], limit: u64) -> Result<(), OpError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let options = GetOptions::new().with_from_key().with_limit(limit);
        self.kv.get(start, Some(options)).await.map(|_| ()).map_err(op_error)
    }

    /// Reads `a` and `b`, then writes both if neither changed (a transaction comparing
    /// their mod revisions), again until it succeeds: what etcd's STM does.
    pub(super) async fn transfer(
        &mut self,
        a: &[u8],
        b: &[u8],
        value: &[u8],
    ) -> Result<(), OpError> {
        loop {
            let mut other = self.kv.clone();
            let (ra, rb) = tokio::join!(self.kv.get(a, None), other.get(b, None));
            let (ra, rb) = (ra.map_err(op_error)?, rb.map_err(op_error)?);
            let revision = |response: &etcd_client::GetResponse| {
                response.kvs().first().map_or(0, |kv| kv.mod_revision())
            };
            let compares = vec![
                Compare::mod_revision(a, CompareOp::Equal, revision(&ra)),
                Compare::mod_revision(b, CompareOp::Equal, revision(&rb)),
            ];
            let txn = Txn::new()
                .when(compares)
                .and_then(vec![TxnOp::put(a, value, None), TxnOp::put(b, value, None)]);
            if self.kv.txn(txn).await.map_err(op_error)?.succeeded() {
                return Ok(());
            }
        }
    }

    /// The version of the member that answers.
    pub(super) async fn version(&mut self) -> Result<String, OpError> {
        let status = self.maintenance.status().await.map_err(op_error)?;
        Ok(status.version().to_string())
    }
}

/// Waits until every member in `endpoints` answers a status request on its own (the
/// balanced client would be content with any one), and returns their version.
pub(super) async fn wait_members(endpoints: &[String]) -> anyhow::Result<String> {
    let mut version = String::new();
    for endpoint in endpoints {
        let mut last_error = None;
        for _ in 0..100 {
            let status = match Connection::connect(std::slice::from_ref(endpoint)).await {
                Ok(mut member) => member.version().await.map_err(anyhow::Error::from),
                Err(error) => Err(error),
            };
            match status {
                Ok(v) => {
                    version = v;
                    last_error = None;
                    break;
                }
                Err(error) => last_error = Some(error),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let Some(error) = last_error {
            return Err(error.context(format!("etcd at {endpoint} did not answer within 20 s")));
        }
    }
    Ok(version)
}

/// gRPC failures by status code (`GRpcUnavailable`, `GRpcDeadlineExceeded`, ...), the
/// rest by the client error's variant.
fn op_error(error: Error) -> OpError {
    let kind = match &error {
        Error::GRpcStatus(status) => format!("GRpc{:?}", status.code()),
        other => format!("{other:?}").split([' ', '{', '(']).next().unwrap_or("?").to_string(),
    };
    OpError { kind, message: error.to_string() }
}

/// Starts `nodes` etcd members on loopback under `dir`, each with its own data dir and
/// log, in one static cluster, with etcd's defaults otherwise: the WAL is fsynced
/// before a write is acknowledged (3.4 has no switch to turn that off; 3.5's
/// `--unsafe-no-fsync` is not passed), the backend commits every 100 ms.
pub(super) fn start_local(dir: PathBuf, nodes: u64) -> anyhow::Result<LocalCluster> {
    let addresses = free_loopback_addresses(nodes * 2)?;
    let (client_addresses, peer_addresses) = addresses.split_at(nodes as usize);
    let initial_cluster: Vec<String> = peer_addresses
        .iter()
        .enumerate()
        .map(|(i, peer)| format!("node{}=http://{peer}", i + 1))
        .collect();
    let token = format!("rangedb-bench-{}", std::process::id());
    let mut cluster = LocalCluster {
        dir: dir.clone(),
        children: Vec::new(),
        endpoints: client_addresses.to_vec(),
    };
    for (i, (client, peer)) in client_addresses.iter().zip(peer_addresses).enumerate() {
        let name = format!("node{}", i + 1);
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new("etcd")
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(dir.join(&name))
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", &initial_cluster.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token])
            // Nothing from the caller's environment (ETCD_*) changes the setup.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start etcd (is it installed? `apt-get install etcd-server`)")?;
        cluster.children.push(child);
    }
    Ok(cluster)
}
