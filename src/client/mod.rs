//! The Rust client library: the CLI, benchmarks and simulation workloads use it.
//!
//! ```text
//!  Client::put(key) ─► RangeCache: range of key ─► cached leader, else a replica
//!        ▲                                              │ Pool: one pipelined
//!        │ NotLeader{address}: retry there at once      ▼ connection per node
//!        │ NotLeader{none} / broken: back off, try another node, refresh the table
//!        └──────────────────────── until the whole-operation deadline
//! ```
//!
//! Writes carry a `RequestId` that stays the same across retries, so the server
//! applies a retried write once. A write whose fate the client cannot learn before the
//! deadline ends in `ClientError::OutcomeUnknown`, never in a plain failure.

mod admin;
mod backup;
pub mod compare;
mod conn;
mod error;
mod membership;
mod route;
mod status;
mod txn;

pub use admin::{check_meta_key, descriptor_json, kv_json, kvs_json, setting_json, status_json};
pub use error::ClientError;
pub use membership::{lag as learner_lag, MembershipReport, NodeIdentity, CAUGHT_UP_LAG};
pub use status::{ClusterStatus, NodeReport};
pub use txn::{
    run_janitor, run_node_janitor, Committed, LockMemory, Txn, TxnState, JANITOR_EVERY, LOCK_TTL,
};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::range::descriptor::RangeId;
use crate::range::keys::{validate_key, validate_value};
use crate::range::kv::{KeyValue, RequestId};
use crate::wire::{ReadConsistency, Request, Response};

use conn::{CallError, Pool};
use route::RangeCache;

/// First delay between retries; doubles per retry up to `RETRY_BACKOFF_MAX`.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(20);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Redirects followed in a row before backing off (guards against a redirect loop).
const REDIRECTS_MAX: u32 = 3;
/// Refusals per address (with no node answering) before giving up as unavailable.
const REFUSALS_MAX: u32 = 2;

/// How a client finds the cluster and how long it waits.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` of some nodes; the rest are learnt from the range table.
    pub endpoints: Vec<String>,
    /// Deadline for a whole operation, retries included.
    pub request_timeout: Duration,
    /// Deadline for one attempt at one node.
    pub attempt_timeout: Duration,
    /// Deadline for opening one connection.
    pub connect_timeout: Duration,
    /// The `RequestId::client` for this client's writes; None picks one at random.
    /// Simulations set it so that runs are reproducible.
    pub client_id: Option<u64>,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            endpoints: vec!["127.0.0.1:7001".to_string()],
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            client_id: None,
        }
    }
}

/// A handle to a cluster. Cheap to clone; clones share connections and the range
/// cache, and every method takes `&self`, so one client serves many tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    pool: Pool,
    routes: Mutex<RangeCache>,
    client_id: u64,
    /// Sequence number of the next write.
    next_seq: AtomicU64,
    /// Resolutions of committed transactions still running (`txn::flush_background`).
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// What an operation does to the database, which decides how a timeout is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

impl Client {
    /// Creates a client; connects lazily, on first use.
    pub fn new(config: ClientConfig) -> Client {
        let client_id = config.client_id.unwrap_or_else(random_client_id);
        let pool = Pool::new(config.connect_timeout);
        Client {
            inner: Arc::new(Inner {
                config,
                pool,
                routes: Mutex::new(RangeCache::default()),
                client_id,
                next_seq: AtomicU64::new(1),
                background: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The `RequestId::client` this client stamps on its writes.
    pub fn client_id(&self) -> u64 {
        self.inner.client_id
    }

    /// Writes `value` at `key` and returns the revision it was applied at.
    ///
    /// # Errors
    /// `OutcomeUnknown` when the write was sent but not confirmed before the deadline;
    /// any other error means it was not applied.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<u64, ClientError> {
        check_key(key)?;
        check_value(value)?;
        let request_id = self.next_request_id();
        let request = Request::Put { key: key.to_vec(), value: value.to_vec(), request_id };
        match self.write_past_locks(key, request).await? {
            Response::Put { revision } => Ok(revision),
            other => Err(unexpected("Put", &other)),
        }
    }

    /// Deletes `key`; returns whether it existed.
    ///
    /// # Errors
    /// As `put`.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, ClientError> {
        check_key(key)?;
        let request_id = self.next_request_id();
        let request = Request::Delete { key: key.to_vec(), request_id };
        match self.write_past_locks(key, request).await? {
            Response::Delete { existed, .. } => Ok(existed),
            other => Err(unexpected("Delete", &other)),
        }
    }

    /// Sends a put or delete, waiting out (and settling) transactions' locks on its
    /// key. The refused attempts did nothing, so the request id stays the same.
    async fn write_past_locks(
        &self,
        key: &[u8],
        request: Request,
    ) -> Result<Response, ClientError> {
        let deadline = self.deadline();
        let mut memory = LockMemory::default();
        loop {
            match self.execute(key, request.clone(), Kind::Write, deadline).await? {
                Response::Locked { lock } => self.wait_out(&lock, &mut memory, deadline).await?,
                other => return Ok(other),
            }
        }
    }

    /// Reads the latest value of `key`, linearizably.
    ///
    /// # Errors
    /// `Timeout`, `Unavailable`, `NoLeader`, `Invalid` or `Protocol`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, ClientError> {
        self.read(key, None, ReadConsistency::Linearizable).await
    }

    /// Reads the latest value of `key` from the leader's lease when it holds one (no
    /// round trip to the followers), else as `get` does. Linearizable as long as the
    /// nodes' clock rates stay within the bound the lease tolerates; the leader
    /// measures them and falls back to a ReadIndex round when they do not.
    ///
    /// # Errors
    /// As `get`.
    pub async fn get_lease(&self, key: &[u8]) -> Result<Option<KeyValue>, ClientError> {
        self.read(key, None, ReadConsistency::Lease).await
    }

    /// Reads `key` as of `revision` of its range.
    ///
    /// # Errors
    /// As `get`, and `RevisionUnavailable` when the revision is compacted or future.
    pub async fn get_at(&self, key: &[u8], revision: u64) -> Result<Option<KeyValue>, ClientError> {
        self.read(key, Some(revision), ReadConsistency::Linearizable).await
    }

    async fn read(
        &self,
        key: &[u8],
        revision: Option<u64>,
        consistency: ReadConsistency,
    ) -> Result<Option<KeyValue>, ClientError> {
        check_key(key)?;
        let deadline = self.deadline();
        let mut memory = LockMemory::default();
        loop {
            let request = Request::Get { key: key.to_vec(), revision, consistency };
            match self.execute(key, request, Kind::Read, deadline).await? {
                Response::Get { kv, lock: None, .. } => return Ok(kv),
                Response::Get { kv, lock: Some(lock), .. } => {
                    if self.settle(&lock, &mut memory, deadline).await? == txn::Settled::Uncommitted
                    {
                        return Ok(kv);
                    }
                }
                other => return Err(unexpected("Get", &other)),
            }
        }
    }

    /// Returns the keys in `[start, end)` (`end` None: to the end of the keyspace) in
    /// order, at most `limit` of them (0: no limit). Each range is read linearizably,
    /// but a scan across ranges is not one atomic snapshot.
    ///
    /// # Errors
    /// As `get`.
    pub async fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u64,
    ) -> Result<Vec<KeyValue>, ClientError> {
        let mut memory = LockMemory::default();
        Ok(self.scan_settled(start, end, limit, &mut memory).await?.0)
    }

    /// Asks every node this client knows of (its endpoints, the range table's
    /// addresses and the peers they report) for its status.
    pub async fn status(&self) -> ClusterStatus {
        let deadline = Instant::now() + self.inner.config.attempt_timeout;
        let mut attempts = Attempts::new(deadline);
        self.refresh_table(&mut attempts, 0).await;
        status::collect(self, self.candidates()).await
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.config.request_timeout
    }

    fn next_request_id(&self) -> RequestId {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        RequestId { client: self.inner.client_id, seq }
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, RangeCache> {
        self.inner.routes.lock().expect("route cache lock is never poisoned")
    }

    /// Endpoints, then every other node address the range table named.
    fn candidates(&self) -> Vec<String> {
        let mut all = self.inner.config.endpoints.clone();
        for address in self.routes().addresses() {
            if !all.contains(&address) {
                all.push(address);
            }
        }
        all
    }

    async fn call(
        &self,
        address: &str,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        self.inner.pool.call(address, request, timeout).await
    }

    /// Loads the range table from the first node that answers.
    /// Starts at the `rotation`-th candidate so that retries do not keep waiting on
    /// the same dead node first.
    async fn refresh_table(&self, attempts: &mut Attempts, rotation: usize) {
        let mut candidates = self.candidates();
        let len = candidates.len();
        candidates.rotate_left(rotation % len.max(1));
        for address in candidates {
            let Some(budget) = attempts.budget(self.inner.config.attempt_timeout) else {
                return;
            };
            match self.call(&address, Request::RangeTable, budget).await {
                Ok(Response::RangeTable { ranges, addresses }) => {
                    attempts.answered = true;
                    self.routes().replace(ranges, addresses);
                    return;
                }
                Ok(_) => attempts.answered = true,
                Err(error) => attempts.note_failure(&address, &error, Kind::Read),
            }
        }
    }

    /// Sends `request` for `key`'s range until a node answers it or `deadline` passes,
    /// following redirects and retrying elsewhere. Returns the first answer that is
    /// not a redirect or a refusal.
    async fn execute(
        &self,
        key: &[u8],
        request: Request,
        kind: Kind,
        deadline: Instant,
    ) -> Result<Response, ClientError> {
        let mut attempts = Attempts::new(deadline);
        let mut redirect: Option<String> = None;
        let mut redirects = 0;
        let mut rotation = 0usize;
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            let Some(budget) = attempts.budget(self.inner.config.attempt_timeout) else {
                return Err(attempts.deadline_error(kind));
            };
            let target = match redirect.take() {
                Some(address) => address,
                None => {
                    if self.routes().needs_refresh() {
                        self.refresh_table(&mut attempts, rotation).await;
                    }
                    self.pick_target(key, rotation)
                }
            };
            let budget = attempts.budget(budget).unwrap_or(budget);
            attempts.tried.insert(target.clone());
            match self.call(&target, request.clone(), budget).await {
                Ok(Response::NotLeader { range, leader, address }) => {
                    attempts.answered = true;
                    attempts.no_leader = Some(range);
                    self.routes().note_not_leader(range, leader, address.clone());
                    match address {
                        Some(address) if address != target && redirects < REDIRECTS_MAX => {
                            redirects += 1;
                            redirect = Some(address);
                            continue;
                        }
                        _ => {
                            attempts.last_error =
                                format!("{target} is not the leader of {range} and knows none");
                        }
                    }
                }
                Ok(Response::WrongRange { range, descriptor }) => {
                    // Nothing was done: the range split since the request was routed.
                    attempts.answered = true;
                    self.routes().mark_stale();
                    if request_spans_ranges(&request) {
                        // Its keys were grouped by the old table: the transaction
                        // starts again (as after a conflict), grouped anew.
                        return Err(ClientError::Conflict {
                            reason: format!("{range} split since the transaction was grouped"),
                        });
                    }
                    attempts.last_error = format!(
                        "{target}: {range} no longer holds the key (now {:?}..{:?}, generation \
                         {}); the table was refreshed",
                        String::from_utf8_lossy(&descriptor.start),
                        descriptor.end.as_deref().map(String::from_utf8_lossy),
                        descriptor.generation
                    );
                }
                Ok(Response::Unavailable { reason }) => {
                    attempts.answered = true;
                    // A node shutting down fails writes it may already have proposed.
                    attempts.maybe_sent |= kind == Kind::Write;
                    attempts.last_error = format!("{target} is unavailable: {reason}");
                }
                Ok(response) => {
                    self.routes().note_leader_at(key, &target);
                    return check_response(response);
                }
                Err(error) => {
                    attempts.note_failure(&target, &error, kind);
                    let mut routes = self.routes();
                    routes.forget_leader_at(&target);
                    routes.mark_stale();
                }
            }
            if attempts.all_refused(&self.candidates()) {
                return Err(attempts.unavailable());
            }
            redirects = 0;
            rotation += 1;
            let Some(pause) = attempts.budget(backoff) else {
                return Err(attempts.deadline_error(kind));
            };
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }

    /// The cached leader of `key`'s range, else one of its replicas, else (range
    /// unknown) one of all known nodes; `rotation` walks through the choices.
    fn pick_target(&self, key: &[u8], rotation: usize) -> String {
        if let Some(address) = self.routes().target(key, rotation) {
            return address;
        }
        let candidates = self.candidates();
        assert!(!candidates.is_empty(), "a client needs at least one endpoint");
        candidates[rotation % candidates.len()].clone()
    }
}

/// Whether `request` names keys grouped by the client's table (a transaction's part),
/// which a split can leave in two ranges.
fn request_spans_ranges(request: &Request) -> bool {
    use crate::range::txn::TxnOp;
    matches!(request, Request::Txn { op: TxnOp::Prepare { .. } | TxnOp::Commit1pc { .. }, .. })
}

/// The bookkeeping of one operation's attempts, to pick the right error at the end.
struct Attempts {
    deadline: Instant,
    /// Set once a write may have reached a node; from then on only the server's
    /// answer can settle its fate.
    maybe_sent: bool,
    /// Some node gave an answer (any), so the cluster is at least partly up.
    answered: bool,
    /// The last `NotLeader` without a leader named, by range.
    no_leader: Option<RangeId>,
    last_error: String,
    tried: BTreeSet<String>,
    refusals: BTreeMap<String, u32>,
}

impl Attempts {
    fn new(deadline: Instant) -> Attempts {
        Attempts {
            deadline,
            maybe_sent: false,
            answered: false,
            no_leader: None,
            last_error: String::new(),
            tried: BTreeSet::new(),
            refusals: BTreeMap::new(),
        }
    }

    /// `wanted`, cut to what is left before the deadline; None once it has passed.
    fn budget(&self, wanted: Duration) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        (!left.is_zero()).then(|| wanted.min(left))
    }

    fn note_failure(&mut self, address: &str, error: &CallError, kind: Kind) {
        self.tried.insert(address.to_string());
        match error {
            CallError::NotSent { reason, refused } => {
                if *refused {
                    *self.refusals.entry(address.to_string()).or_default() += 1;
                }
                self.last_error = reason.clone();
            }
            CallError::Broken { reason } => {
                self.maybe_sent |= kind == Kind::Write;
                self.last_error = reason.clone();
            }
            CallError::TimedOut => {
                self.maybe_sent |= kind == Kind::Write;
                self.answered = true;
                self.no_leader = None;
                self.last_error = format!("{address} did not answer in time");
            }
        }
    }

    /// Nothing has answered and every address refused connections repeatedly: no
    /// server is running there, so waiting out the deadline would not help.
    fn all_refused(&self, candidates: &[String]) -> bool {
        !self.answered
            && !self.maybe_sent
            && candidates.iter().all(|address| {
                self.refusals.get(address).is_some_and(|count| *count >= REFUSALS_MAX)
            })
    }

    fn unavailable(&self) -> ClientError {
        let tried: Vec<&str> = self.tried.iter().map(String::as_str).collect();
        ClientError::Unavailable {
            reason: format!(
                "no node answered (tried {}); last error: {}",
                tried.join(", "),
                self.last_error
            ),
        }
    }

    fn deadline_error(&self, kind: Kind) -> ClientError {
        if kind == Kind::Write && self.maybe_sent {
            return ClientError::OutcomeUnknown {
                reason: format!(
                    "no confirmation before the deadline; last error: {}",
                    self.last_error
                ),
            };
        }
        if !self.answered {
            return self.unavailable();
        }
        if let Some(range) = self.no_leader {
            return ClientError::NoLeader { range, reason: self.last_error.clone() };
        }
        match kind {
            Kind::Read => ClientError::Timeout {
                reason: format!("no answer before the deadline; last error: {}", self.last_error),
            },
            Kind::Write => ClientError::Unavailable {
                reason: format!(
                    "the write was not accepted before the deadline; last error: {}",
                    self.last_error
                ),
            },
        }
    }
}

/// Turns the answers that are errors into `ClientError`.
fn check_response(response: Response) -> Result<Response, ClientError> {
    match response {
        Response::Invalid { reason } => Err(ClientError::Invalid { reason }),
        Response::RevisionUnavailable { revision, first, last } => {
            Err(ClientError::RevisionUnavailable { revision, first, last })
        }
        other => Ok(other),
    }
}

fn unexpected(asked: &str, response: &Response) -> ClientError {
    ClientError::Protocol { reason: format!("asked {asked}, the node answered {response:?}") }
}

/// Refuses keys the server would refuse, without a round trip (the same rules:
/// `range::keys`).
///
/// # Errors
/// `Invalid` for an empty key, one under the reserved prefix `_/`, or one longer than
/// `KEY_BYTES_MAX`.
pub fn check_key(key: &[u8]) -> Result<(), ClientError> {
    validate_key(key).map_err(|error| ClientError::Invalid { reason: error.to_string() })
}

fn check_value(value: &[u8]) -> Result<(), ClientError> {
    validate_value(value).map_err(|error| ClientError::Invalid { reason: error.to_string() })
}

/// Shows bytes as text, escaping everything but printable ASCII (`\xNN`, `\\`).
pub fn escape(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for &byte in bytes {
        match byte {
            b'\\' => text.push_str("\\\\"),
            b'\t' => text.push_str("\\t"),
            b'\n' => text.push_str("\\n"),
            0x20..=0x7e => text.push(byte as char),
            _ => text.push_str(&format!("\\x{byte:02x}")),
        }
    }
    text
}

/// A client id unlikely to collide with another client's: the process id, a heap
/// address (randomized by ASLR), the wall clock and a per-process counter, mixed.
#[cfg(not(madsim))]
fn random_client_id() -> u64 {
    use crate::env::{Clock, RealClock};
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let heap = Box::new(0u8);
    let address = &*heap as *const u8 as usize as u64;
    let mut seed = u64::from(std::process::id());
    seed ^= address.rotate_left(20);
    seed ^= RealClock.wall_ms().rotate_left(42);
    seed ^= CREATED.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    crate::hash::splitmix64(seed)
}

/// In simulation, a draw from the runtime's generator: the heap address and the
/// per-process counter above would make a seed's run depend on the seeds run before
/// it in the process. (The harness names its clients; this is for any that do not.)
#[cfg(madsim)]
fn random_client_id() -> u64 {
    madsim::rand::random::<u64>()
}

// Fake servers on 127.0.0.1:0: real sockets only (madsim's loopback differs); the
// simulation exercises the client under `cargo sim`.
#[cfg(all(test, not(madsim)))]
mod tests;
