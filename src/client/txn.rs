//! Transactions, coordinated by the client (the protocol: `range::txn` and
//! docs/DESIGN.md 7.7).
//!
//! ```text
//!  begin ─► get/scan: linearizable reads, each key's mod revision recorded;
//!           put/delete: buffered here (reads see them)
//!  commit, every key in one range ─► Commit1pc: validate + write in one entry
//!  commit, several ranges:
//!     Prepare at the anchor (first write's range; makes the Pending record)
//!     ─► Prepare at the others, in parallel ─► Decide{commit} at the anchor: the
//!     commit point ─► Resolve at the others ─► Forget at the anchor
//! ```
//!
//! Anyone meeting a lock settles it (`settle`): a decided transaction's locks are
//! resolved from its record; a pending one's is waited for until it has been seen for
//! `LOCK_TTL`, then pushed (aborted). The janitor (`run_janitor`, started by every
//! server) does the same for locks nobody meets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::range::descriptor::RangeId;
use crate::range::kv::KeyValue;
use crate::range::txn::{
    LockInfo, ReadCheck, SpanCheck, TxnId, TxnOp, TxnPart, TxnResult, TxnStatus, TxnWrite,
};
use crate::wire::{ReadConsistency, Request, Response};

use super::{check_key, check_value, unexpected, Client, ClientError, Kind};

/// How long a pending transaction's lock may stand in someone's way (from when they
/// first met it) before they abort that transaction.
pub const LOCK_TTL: Duration = Duration::from_millis(1500);
/// How long a transaction's read waits for another transaction's pending intent on
/// the key to be decided before it reads the version before it (and will likely
/// conflict at commit).
const INTENT_WAIT: Duration = Duration::from_millis(20);
/// How often the janitor looks for locks and unresolved records.
pub const JANITOR_EVERY: Duration = Duration::from_millis(500);
/// First pause before retrying a transaction after a conflict.
const CONFLICT_BACKOFF_MIN: Duration = Duration::from_millis(2);
const CONFLICT_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// When this client first met each transaction's lock, and the ones whose record it
/// found missing once (see `settle`).
#[derive(Default)]
pub struct LockMemory {
    first_seen: BTreeMap<TxnId, Instant>,
    /// (transaction, key) whose record was found missing when its intent on the key
    /// was met: the next read of the key that meets it again may take it as
    /// uncommitted (see `settle`). Per key: the argument holds for the key read again.
    no_record: BTreeMap<(TxnId, Vec<u8>), u32>,
}

impl LockMemory {
    /// Takes back what a read learned while it held the memory, keeping what a
    /// concurrent read (which started empty) put back meanwhile: the earliest
    /// sighting of each lock, every missing record not yet used.
    fn absorb(&mut self, other: LockMemory) {
        for (txn, seen) in other.first_seen {
            let mine = self.first_seen.entry(txn).or_insert(seen);
            *mine = (*mine).min(seen);
        }
        self.no_record.extend(other.no_record);
    }

    fn age(&mut self, txn: TxnId) -> Duration {
        let now = Instant::now();
        now.duration_since(*self.first_seen.entry(txn).or_insert(now))
    }
}

/// What a reader or writer may do about a lock it met.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The lock's transaction had not committed when the read was made: the committed
    /// version the read returned is the right answer.
    Uncommitted,
    /// The lock was resolved, or may have been: read (or try) again.
    Changed,
}

/// The state of a transaction in progress: what it read and what it will write.
/// Serializable, so the CLI can keep a transaction across invocations.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TxnState {
    pub id: Option<TxnId>,
    /// key -> mod revision read (0: absent).
    pub reads: BTreeMap<Vec<u8>, u64>,
    pub spans: Vec<SpanCheck>,
    /// key -> value to write (None: delete).
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// A transaction: reads are linearizable and recorded, writes are buffered until
/// `commit`. Cheap to clone (clones share the state), so an async closure can own one.
#[derive(Clone)]
pub struct Txn {
    client: Client,
    state: Arc<Mutex<TxnState>>,
    locks: Arc<Mutex<LockMemory>>,
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The revision of the entry that committed it: in its one range (single-range),
    /// else in the range holding its record. 0 when it wrote nothing.
    pub revision: u64,
    /// How many ranges it touched.
    pub ranges: usize,
}

impl Txn {
    pub fn id(&self) -> TxnId {
        self.state().id.expect("a transaction has an id from begin")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TxnState> {
        self.state.lock().expect("transaction state lock is never poisoned")
    }

    /// The state to keep (the CLI writes it to a file between commands).
    pub fn save(&self) -> TxnState {
        self.state().clone()
    }

    /// Reads `key` (its own writes first); the version read must still be current at
    /// commit.
    ///
    /// # Errors
    /// As `Client::get`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, ClientError> {
        check_key(key)?;
        if let Some(value) = self.state().writes.get(key) {
            let kv = value.as_ref().map(|value| KeyValue {
                key: key.to_vec(),
                value: value.clone(),
                revision: 0,
            });
            return Ok(kv);
        }
        let kv = {
            // Taken out, so concurrent reads of one transaction may run at once (the
            // second starts with an empty memory: it only settles more cautiously).
            let mut memory = std::mem::take(&mut *self.locks.lock().expect("never poisoned"));
            let result = self.client.read_settled(key, &mut memory).await;
            self.locks.lock().expect("never poisoned").absorb(memory);
            result?
        };
        let revision = kv.as_ref().map_or(0, |kv| kv.revision);
        self.state().reads.entry(key.to_vec()).or_insert(revision);
        Ok(kv)
    }

    /// Scans `[start, end)` (at most `limit` keys, 0: all), with the transaction's own
    /// writes applied; the keys seen must be exactly the same at commit.
    ///
    /// # Errors
    /// As `Client::scan`.
    pub async fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u64,
    ) -> Result<Vec<KeyValue>, ClientError> {
        let mut memory = std::mem::take(&mut *self.locks.lock().expect("never poisoned"));
        let result = self.client.scan_settled(start, end, 0, &mut memory).await;
        self.locks.lock().expect("never poisoned").absorb(memory);
        let (kvs, spans) = result?;
        let mut state = self.state();
        state.spans.extend(spans);
        let mut merged: BTreeMap<Vec<u8>, KeyValue> =
            kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        for (key, value) in &state.writes {
            let inside = key.as_slice() >= start && end.is_none_or(|end| key.as_slice() < end);
            if !inside {
                continue;
            }
            match value {
                Some(value) => {
                    let kv = KeyValue { key: key.clone(), value: value.clone(), revision: 0 };
                    merged.insert(key.clone(), kv);
                }
                None => {
                    merged.remove(key);
                }
            }
        }
        let mut kvs: Vec<KeyValue> = merged.into_values().collect();
        if limit != 0 {
            kvs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        Ok(kvs)
    }

    /// Buffers a write of `key`.
    ///
    /// # Errors
    /// `Invalid` for a key or value the server would refuse.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        check_key(key)?;
        check_value(value)?;
        self.state().writes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    /// Buffers a delete of `key`.
    ///
    /// # Errors
    /// `Invalid` for a key the server would refuse.
    pub fn delete(&self, key: &[u8]) -> Result<(), ClientError> {
        check_key(key)?;
        self.state().writes.insert(key.to_vec(), None);
        Ok(())
    }

    /// Commits: every read still current and every write applied, atomically, or
    /// nothing.
    ///
    /// # Errors
    /// `Conflict` (retryable: nothing was written) when a read is no longer current,
    /// another transaction holds a key, or this one was aborted by someone who found
    /// it stalled; `OutcomeUnknown` when the commit point may have been reached but
    /// no answer said so; other errors mean nothing was written.
    pub async fn commit(&self) -> Result<Committed, ClientError> {
        let state = self.save();
        let mut memory = std::mem::take(&mut *self.locks.lock().expect("never poisoned"));
        let result = self.client.commit_state(&state, &mut memory).await;
        *self.locks.lock().expect("never poisoned") = memory;
        result
    }
}

impl Client {
    /// Starts a transaction (nothing is sent until its first read or its commit).
    pub fn begin(&self) -> Txn {
        let seq = self.next_request_id().seq;
        let id = TxnId { client: self.client_id(), seq };
        self.resume(TxnState { id: Some(id), ..TxnState::default() })
    }

    /// A transaction from a saved state (`Txn::save`).
    pub fn resume(&self, state: TxnState) -> Txn {
        Txn {
            client: self.clone(),
            state: Arc::new(Mutex::new(state)),
            locks: Arc::new(Mutex::new(LockMemory::default())),
        }
    }

    /// Runs `body` in a transaction and commits it, again from the start (with a
    /// fresh transaction) after each conflict, until the client's deadline. Returns
    /// the body's value and how the commit went.
    ///
    /// # Errors
    /// The body's error (other than a conflict), or the commit's; `Conflict` when
    /// conflicts went on until the deadline.
    pub async fn txn<T, F, Fut>(&self, mut body: F) -> Result<(T, Committed), ClientError>
    where
        F: FnMut(Txn) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let deadline = self.deadline();
        let memory = Arc::new(Mutex::new(LockMemory::default()));
        let mut backoff = CONFLICT_BACKOFF_MIN;
        loop {
            let txn = self.begin();
            let txn = Txn { locks: Arc::clone(&memory), ..txn };
            let outcome = match body(txn.clone()).await {
                Ok(value) => txn.commit().await.map(|committed| (value, committed)),
                Err(error) => Err(error),
            };
            match outcome {
                Err(ClientError::Conflict { reason }) => {
                    if Instant::now() + backoff >= deadline {
                        return Err(ClientError::Conflict { reason });
                    }
                    #[cfg(madsim)]
                    crate::env::sim_hooks::sometimes("transaction retried after a conflict");
                    let jitter = madsim_jitter(backoff);
                    tokio::time::sleep(backoff + jitter).await;
                    backoff = (backoff * 2).min(CONFLICT_BACKOFF_MAX);
                }
                other => return other,
            }
        }
    }

    /// Writes every `(key, value)` (None: delete) atomically: one transaction with no
    /// reads.
    ///
    /// # Errors
    /// As `Txn::commit` (a batch has no reads, so a conflict means a lock stood in
    /// its way until the deadline).
    pub async fn batch(
        &self,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<Committed, ClientError> {
        let txn = self.begin();
        for (key, value) in writes {
            match value {
                Some(value) => txn.put(&key, &value)?,
                None => txn.delete(&key)?,
            }
        }
        let deadline = self.deadline();
        let mut backoff = CONFLICT_BACKOFF_MIN;
        loop {
            match txn.commit().await {
                Err(ClientError::Conflict { reason }) => {
                    if Instant::now() + backoff >= deadline {
                        return Err(ClientError::Conflict { reason });
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(CONFLICT_BACKOFF_MAX);
                    // A fresh id: the aborted one's is finished on the ranges it reached.
                    let fresh = self.begin().id();
                    txn.state().id = Some(fresh);
                }
                other => return other,
            }
        }
    }

    /// A transaction's read of `key`, looking into write intents. It asks for the
    /// leader's lease (ReadIndex when the lease is not valid): a transaction's reads
    /// need not be linearizable on their own, as commit validates every one against
    /// the state at the commit point, and a lease read costs no round to the
    /// followers.
    pub(crate) async fn read_settled(
        &self,
        key: &[u8],
        memory: &mut LockMemory,
    ) -> Result<Option<KeyValue>, ClientError> {
        let deadline = self.deadline();
        loop {
            let request = Request::Get {
                key: key.to_vec(),
                revision: None,
                consistency: ReadConsistency::Lease,
            };
            let (kv, lock) = match self.execute(key, request, Kind::Read, deadline).await? {
                Response::Get { kv, lock, .. } => (kv, lock),
                other => return Err(unexpected("Get", &other)),
            };
            let Some(lock) = lock else { return Ok(kv) };
            if self.settle(&lock, memory, deadline).await? == Settled::Uncommitted {
                // Another transaction is about to write the key. Reading the version
                // before it would only make this one conflict at commit (the key is
                // locked or changed by then): wait a little for it to finish first.
                let waited = memory.age(lock.txn);
                if waited >= INTENT_WAIT || !lock.write {
                    return Ok(kv);
                }
                let pause = Duration::from_micros(500) + madsim_jitter(Duration::from_millis(1));
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// A scan that looks into write intents, returning also the spans read per range
    /// (for a transaction's validation).
    pub(crate) async fn scan_settled(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u64,
        memory: &mut LockMemory,
    ) -> Result<(Vec<KeyValue>, Vec<SpanCheck>), ClientError> {
        let deadline = self.deadline();
        let mut found: Vec<KeyValue> = Vec::new();
        let mut spans = Vec::new();
        let mut cursor = start.to_vec();
        loop {
            if end.is_some_and(|end| cursor.as_slice() >= end) {
                break;
            }
            let remaining = if limit == 0 { 0 } else { limit - found.len() as u64 };
            let request = Request::Scan {
                start: cursor.clone(),
                end: end.map(<[u8]>::to_vec),
                limit: remaining,
                revision: None,
            };
            let (kvs, resume, locks) =
                match self.execute(&cursor, request, Kind::Read, deadline).await? {
                    Response::Scan { kvs, resume, locks, .. } => (kvs, resume, locks),
                    other => return Err(unexpected("Scan", &other)),
                };
            let mut changed = false;
            for lock in &locks {
                changed |= self.settle(lock, memory, deadline).await? == Settled::Changed;
            }
            if changed {
                continue;
            }
            let full = limit != 0 && found.len() as u64 + kvs.len() as u64 >= limit;
            let span_end = match (&resume, full) {
                (_, true) => kvs.last().map(|kv| {
                    let mut next = kv.key.clone();
                    next.push(0);
                    next
                }),
                (Some(next), false) => Some(next.clone()),
                (None, false) => end.map(<[u8]>::to_vec),
            };
            let seen =
                kvs.iter().map(|kv| ReadCheck { key: kv.key.clone(), revision: kv.revision });
            // The meta range holds no user key (scans pass over it): nothing to validate.
            if !cursor.starts_with(crate::range::descriptor::RESERVED_PREFIX) {
                spans.push(SpanCheck {
                    start: cursor.clone(),
                    end: span_end,
                    seen: seen.collect(),
                });
            }
            found.extend(kvs);
            if full {
                found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                break;
            }
            match resume {
                None => break,
                Some(next) if next > cursor => cursor = next,
                Some(_) => {
                    return Err(ClientError::Protocol {
                        reason: "scan resume key does not advance".into(),
                    })
                }
            }
        }
        Ok((found, spans))
    }

    /// Decides what to do about `lock`, helping its transaction finish when it is
    /// decided and aborting it when it has been in the way for `LOCK_TTL`.
    ///
    /// Why returning the committed version is right when this says `Uncommitted`:
    /// the record was read (linearizably) after the read that met the intent, and
    /// said Pending (or Aborted-and-resolved later): the transaction had not
    /// committed at that moment, which lies within the read. A missing record is
    /// ambiguous (not made yet, or resolved and evicted): the key is read again, and
    /// only if the same intent is still there (so the record was not evicted, which
    /// follows resolution) is it taken as not made yet.
    pub(crate) async fn settle(
        &self,
        lock: &LockInfo,
        memory: &mut LockMemory,
        deadline: Instant,
    ) -> Result<Settled, ClientError> {
        if memory.no_record.remove(&(lock.txn, lock.key.clone())).is_some()
            && memory.age(lock.txn) < LOCK_TTL
        {
            return Ok(Settled::Uncommitted);
        }
        let (status, participants) = self.txn_status(&lock.anchor, lock.txn, deadline).await?;
        match status {
            Some(TxnStatus::Pending) if memory.age(lock.txn) < LOCK_TTL => Ok(Settled::Uncommitted),
            None if memory.age(lock.txn) < LOCK_TTL => {
                memory.no_record.insert((lock.txn, lock.key.clone()), 1);
                Ok(Settled::Changed)
            }
            Some(TxnStatus::Pending) | None => {
                #[cfg(madsim)]
                crate::env::sim_hooks::sometimes("stalled transaction pushed");
                let (status, participants) = self.push(lock.txn, &lock.anchor, deadline).await?;
                self.finish(
                    lock.txn,
                    &lock.anchor,
                    status,
                    &participants,
                    Some(&lock.key),
                    deadline,
                )
                .await;
                Ok(Settled::Changed)
            }
            Some(decided) => {
                self.finish(
                    lock.txn,
                    &lock.anchor,
                    Some(decided),
                    &participants,
                    Some(&lock.key),
                    deadline,
                )
                .await;
                Ok(Settled::Changed)
            }
        }
    }

    async fn txn_status(
        &self,
        anchor: &[u8],
        txn: TxnId,
        deadline: Instant,
    ) -> Result<(Option<TxnStatus>, Vec<Vec<u8>>), ClientError> {
        let request = Request::TxnStatus { anchor: anchor.to_vec(), txn };
        match self.execute(anchor, request, Kind::Read, deadline).await? {
            Response::Txn(TxnResult::Status { status, participants }) => Ok((status, participants)),
            other => Err(unexpected("TxnStatus", &other)),
        }
    }

    async fn push(
        &self,
        txn: TxnId,
        anchor: &[u8],
        deadline: Instant,
    ) -> Result<(Option<TxnStatus>, Vec<Vec<u8>>), ClientError> {
        let op = TxnOp::Push { txn, anchor: anchor.to_vec() };
        match self.txn_step(anchor, op, None, deadline).await? {
            TxnResult::Status { status, participants } => Ok((status, participants)),
            other => Err(ClientError::Protocol { reason: format!("push answered {other:?}") }),
        }
    }

    /// Resolves a decided transaction on every participant (and on `extra`'s range),
    /// then lets its record go. Best effort: what fails is left to the janitor.
    async fn finish(
        &self,
        txn: TxnId,
        anchor: &[u8],
        status: Option<TxnStatus>,
        participants: &[Vec<u8>],
        extra: Option<&[u8]>,
        deadline: Instant,
    ) {
        let commit = match status {
            Some(TxnStatus::Committed) => true,
            Some(TxnStatus::Aborted) => false,
            _ => return,
        };
        let mut keys: Vec<Vec<u8>> = participants.to_vec();
        if let Some(extra) = extra {
            if !extra.is_empty() {
                keys.push(extra.to_vec());
            }
        }
        // One resolve per range; the anchor's own locks went with its decision. A
        // key whose range the cache does not know is resolved anyway (resolving
        // twice, or where nothing is held, is harmless; skipping one is not).
        let anchor_range = self.range_of(anchor);
        let mut seen = BTreeSet::new();
        keys.retain(|key| match self.range_of(key) {
            Some(range) => Some(range) != anchor_range && seen.insert(range),
            None => true,
        });
        let all = self.resolve_all(txn, keys, commit, deadline).await;
        if all {
            let _ = self.txn_step(anchor, TxnOp::Forget { txn }, None, deadline).await;
        }
    }

    /// Resolves `txn` at each key's range in parallel; whether all succeeded.
    async fn resolve_all(
        &self,
        txn: TxnId,
        keys: Vec<Vec<u8>>,
        commit: bool,
        deadline: Instant,
    ) -> bool {
        let tasks: Vec<_> = keys
            .into_iter()
            .map(|key| {
                let client = self.clone();
                tokio::spawn(async move {
                    let op = TxnOp::Resolve { txn, commit };
                    client.txn_step(&key, op, None, deadline).await
                })
            })
            .collect();
        let mut all = true;
        for task in tasks {
            all &= matches!(task.await, Ok(Ok(TxnResult::Resolved)));
        }
        all
    }

    /// Sends one transaction step to the range of `key`.
    async fn txn_step(
        &self,
        key: &[u8],
        op: TxnOp,
        request_id: Option<crate::range::kv::RequestId>,
        deadline: Instant,
    ) -> Result<TxnResult, ClientError> {
        let request = Request::Txn { key: key.to_vec(), op, request_id };
        match self.execute(key, request, Kind::Write, deadline).await? {
            Response::Txn(result) => Ok(result),
            other => Err(unexpected("Txn", &other)),
        }
    }

    /// The range `key` belongs to, as the cache knows it.
    fn range_of(&self, key: &[u8]) -> Option<RangeId> {
        self.routes().range_of(key)
    }

    /// Groups a transaction's reads, spans and writes by range.
    async fn parts(
        &self,
        state: &TxnState,
        deadline: Instant,
    ) -> Result<Vec<(Vec<u8>, TxnPart)>, ClientError> {
        if self.routes().needs_refresh()
            || state.reads.keys().chain(state.writes.keys()).any(|k| self.range_of(k).is_none())
        {
            let mut attempts = super::Attempts::new(deadline);
            self.refresh_table(&mut attempts, 0).await;
        }
        let mut parts: BTreeMap<RangeId, (Vec<u8>, TxnPart)> = BTreeMap::new();
        let unknown = || ClientError::Unavailable {
            reason: "the range table is not known (no node answered)".into(),
        };
        // Writes first, so the anchor (the first part) holds a write when there is one.
        for (key, value) in &state.writes {
            let range = self.range_of(key).ok_or_else(unknown)?;
            let part =
                &mut parts.entry(range).or_insert_with(|| (key.clone(), TxnPart::default())).1;
            part.writes.push(TxnWrite { key: key.clone(), value: value.clone() });
        }
        for (key, revision) in &state.reads {
            let range = self.range_of(key).ok_or_else(unknown)?;
            let part =
                &mut parts.entry(range).or_insert_with(|| (key.clone(), TxnPart::default())).1;
            part.reads.push(ReadCheck { key: key.clone(), revision: *revision });
        }
        for span in &state.spans {
            let range = self.range_of(&span.start).ok_or_else(unknown)?;
            // The empty key (a scan from the start) cannot route a request.
            let key = if span.start.is_empty() { vec![0] } else { span.start.clone() };
            let part = &mut parts.entry(range).or_insert_with(|| (key, TxnPart::default())).1;
            part.spans.push(span.clone());
        }
        let mut parts: Vec<(Vec<u8>, TxnPart)> = parts.into_values().collect();
        // The anchor: the range of the first write (else of the first read).
        let first = state.writes.keys().next().or(state.reads.keys().next()).cloned();
        if let Some(first) = first {
            let anchor_range = self.range_of(&first);
            if let Some(at) = parts.iter().position(|(key, _)| self.range_of(key) == anchor_range) {
                parts.swap(0, at);
            }
        }
        Ok(parts)
    }

    /// Commits a transaction's state (see `Txn::commit`).
    pub(crate) async fn commit_state(
        &self,
        state: &TxnState,
        memory: &mut LockMemory,
    ) -> Result<Committed, ClientError> {
        let deadline = self.deadline();
        let Some(txn) = state.id else {
            return Err(ClientError::Invalid { reason: "a transaction without an id".into() });
        };
        let parts = self.parts(state, deadline).await?;
        match parts.len() {
            0 => Ok(Committed { revision: 0, ranges: 0 }),
            1 => self.commit_1pc(&parts[0].0, &parts[0].1, memory, deadline).await,
            _ => self.commit_2pc(txn, parts, memory, deadline).await,
        }
    }

    async fn commit_1pc(
        &self,
        key: &[u8],
        part: &TxnPart,
        memory: &mut LockMemory,
        deadline: Instant,
    ) -> Result<Committed, ClientError> {
        let request_id = self.next_request_id();
        loop {
            let op = TxnOp::Commit1pc { part: part.clone() };
            match self.txn_step(key, op, Some(request_id), deadline).await? {
                TxnResult::Committed { revision } => return Ok(Committed { revision, ranges: 1 }),
                TxnResult::Conflict { key } => return Err(conflict_on(&key)),
                TxnResult::Locked(lock) => {
                    if self.settle(&lock, memory, deadline).await? == Settled::Uncommitted {
                        return Err(locked_by(&lock));
                    }
                }
                other => {
                    return Err(ClientError::Protocol {
                        reason: format!("commit answered {other:?}"),
                    })
                }
            }
        }
    }

    async fn commit_2pc(
        &self,
        txn: TxnId,
        parts: Vec<(Vec<u8>, TxnPart)>,
        memory: &mut LockMemory,
        deadline: Instant,
    ) -> Result<Committed, ClientError> {
        let ranges = parts.len();
        let anchor = parts[0].0.clone();
        let participants: Vec<Vec<u8>> = parts.iter().map(|(key, _)| key.clone()).collect();
        // Every participant at once, the anchor (which makes the record) included. A
        // reader meeting an intent before the record exists takes it for uncommitted
        // (`settle`), which it is; an abort decided before the anchor's prepare
        // arrives leaves an abort record that refuses it.
        let tasks: Vec<_> = parts
            .iter()
            .enumerate()
            .map(|(i, (key, part))| {
                let client = self.clone();
                let participants = if i == 0 { participants.clone() } else { Vec::new() };
                let op = TxnOp::Prepare {
                    txn,
                    anchor: anchor.clone(),
                    participants,
                    part: part.clone(),
                };
                let key = key.clone();
                tokio::spawn(async move { client.txn_step(&key, op, None, deadline).await })
            })
            .collect();
        let mut failure: Option<ClientError> = None;
        for task in tasks {
            let outcome = task.await.unwrap_or_else(|error| {
                Err(ClientError::Protocol { reason: format!("prepare task failed: {error}") })
            });
            match outcome {
                Ok(TxnResult::Prepared) => {}
                Ok(refused) => {
                    if let TxnResult::Locked(lock) = &refused {
                        // Settling can only help a later attempt (this one aborts),
                        // and only once the lock is old: a young one is most likely
                        // a live transaction about to finish.
                        if memory.age(lock.txn) >= LOCK_TTL {
                            let _ = self.settle(lock, memory, deadline).await;
                        }
                    }
                    failure.get_or_insert(refusal(&refused));
                }
                Err(error) => {
                    failure.get_or_insert(not_committed(error));
                }
            }
        }
        let others: Vec<(Vec<u8>, TxnPart)> = parts.into_iter().skip(1).collect();
        let keys: Vec<Vec<u8>> = others.into_iter().map(|(key, _)| key).collect();
        if let Some(error) = failure {
            // Aborted in the background: the caller's retry need not wait for it (its
            // locks go a round trip later; the retry's own reads wait for them).
            let client = self.clone();
            let abort = tokio::spawn(async move {
                let _ = client.abort(txn, &anchor, &keys, deadline).await;
            });
            self.keep_background(abort);
            return Err(error);
        }
        #[cfg(madsim)]
        if crate::env::sim_hooks::abandon_transaction() {
            crate::env::sim_hooks::sometimes("coordinator abandoned a prepared transaction");
            // The simulation's coordinator "dies" here: every lock is held, the record
            // pending; the janitor must abort it.
            return Err(ClientError::OutcomeUnknown {
                reason: "coordinator abandoned (simulated)".into(),
            });
        }
        let op = TxnOp::Decide { txn, anchor: anchor.clone(), commit: true };
        match self.txn_step(&anchor, op, None, deadline).await {
            Ok(TxnResult::Committed { revision }) => {
                // Committed: the other participants' intents are resolved in the
                // background (a reader meeting one first resolves it itself).
                let client = self.clone();
                let participants = keys_with(&anchor, &keys);
                let resolution = tokio::spawn(async move {
                    let committed = Some(TxnStatus::Committed);
                    client.finish(txn, &anchor, committed, &participants, None, deadline).await;
                });
                self.keep_background(resolution);
                Ok(Committed { revision, ranges })
            }
            Ok(TxnResult::Aborted) => {
                self.finish(
                    txn,
                    &anchor,
                    Some(TxnStatus::Aborted),
                    &keys_with(&anchor, &keys),
                    None,
                    deadline,
                )
                .await;
                Err(ClientError::Conflict {
                    reason: "the transaction was aborted by another that found it stalled".into(),
                })
            }
            Ok(other) => {
                Err(ClientError::Protocol { reason: format!("decide answered {other:?}") })
            }
            Err(error @ ClientError::OutcomeUnknown { .. }) => Err(error),
            Err(error) => Err(ClientError::OutcomeUnknown {
                reason: format!("the commit decision may have been taken: {error}"),
            }),
        }
    }

    /// Aborts `txn` at its anchor (an abort record if it has none) and releases its
    /// locks on `others`.
    async fn abort(
        &self,
        txn: TxnId,
        anchor: &[u8],
        others: &[Vec<u8>],
        deadline: Instant,
    ) -> Result<(), ClientError> {
        let op = TxnOp::Decide { txn, anchor: anchor.to_vec(), commit: false };
        match self.txn_step(anchor, op, None, deadline).await? {
            TxnResult::Aborted => {
                self.finish(
                    txn,
                    anchor,
                    Some(TxnStatus::Aborted),
                    &keys_with(anchor, others),
                    None,
                    deadline,
                )
                .await;
                Ok(())
            }
            other => Err(ClientError::Protocol { reason: format!("abort answered {other:?}") }),
        }
    }

    /// A put or delete refused by a lock: settle it, then the caller tries again.
    pub(crate) async fn wait_out(
        &self,
        lock: &LockInfo,
        memory: &mut LockMemory,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        if self.settle(lock, memory, deadline).await? == Settled::Uncommitted {
            // Pending and young: give its coordinator a moment.
            let pause = Duration::from_millis(
                10 + madsim_jitter(Duration::from_millis(20)).as_millis() as u64,
            );
            if Instant::now() + pause >= deadline {
                return Err(locked_by(lock));
            }
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }
}

fn keys_with(anchor: &[u8], others: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut keys = vec![anchor.to_vec()];
    keys.extend(others.iter().cloned());
    keys
}

fn conflict_on(key: &[u8]) -> ClientError {
    ClientError::Conflict {
        reason: format!("{} changed since the transaction read it", super::escape(key)),
    }
}

fn locked_by(lock: &LockInfo) -> ClientError {
    ClientError::Conflict {
        reason: format!("{} is held by transaction {}", super::escape(&lock.key), lock.txn),
    }
}

fn refusal(result: &TxnResult) -> ClientError {
    match result {
        TxnResult::Conflict { key } => conflict_on(key),
        TxnResult::Locked(lock) => locked_by(lock),
        TxnResult::Aborted => ClientError::Conflict {
            reason: "the transaction was aborted by another that found it stalled".into(),
        },
        other => ClientError::Protocol { reason: format!("prepare answered {other:?}") },
    }
}

/// Before the commit decision, every failure leaves the transaction uncommitted.
fn not_committed(error: ClientError) -> ClientError {
    match error {
        ClientError::OutcomeUnknown { reason } => ClientError::Unavailable {
            reason: format!("the transaction was not committed: {reason}"),
        },
        other => other,
    }
}

/// Up to `max` of random pause, so retrying transactions do not collide in step.
fn madsim_jitter(max: Duration) -> Duration {
    #[cfg(madsim)]
    let draw = madsim::rand::random::<u64>();
    #[cfg(not(madsim))]
    let draw = {
        // A different draw for every call: a counter through a mixer, apart per
        // process. (Retrying clients of one process must not back off in step, as
        // they did when this drew from the time elapsed since `now`: always ~0.)
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        crate::hash::splitmix64(u64::from(std::process::id()).rotate_left(32) ^ count)
    };
    let max = max.as_micros().max(1) as u64;
    Duration::from_micros(draw % max)
}

/// Finds locks nobody meets and settles them: every `JANITOR_EVERY`, asks each range
/// for the transactions holding locks or unresolved records there, and settles those
/// it has seen for `LOCK_TTL`. Every server runs one (against itself); they may do the
/// same work twice, which is harmless (every step is idempotent).
pub async fn run_janitor(client: Client) {
    let mut memory = LockMemory::default();
    loop {
        tokio::time::sleep(JANITOR_EVERY).await;
        let _ = client.janitor_pass(&mut memory).await;
    }
}

/// `run_janitor` beside a node (`rangedb server`): each pass visits only the ranges
/// that node leads and says hold locks or transaction records
/// (`Telemetry::txn_ranges`), not every range of the cluster; every range's leader
/// has a janitor beside it. An idle cluster of 10,000 ranges had its janitors read
/// every range twice a second (most of its CPU). Until the node runs, every range.
pub async fn run_node_janitor(
    client: Client,
    node: std::sync::Arc<crate::node::telemetry::Telemetry>,
) {
    let mut memory = LockMemory::default();
    loop {
        tokio::time::sleep(JANITOR_EVERY).await;
        let _ = match node.txn_ranges() {
            Some(keys) => client.janitor_visit(&mut memory, keys).await,
            None => client.janitor_pass(&mut memory).await,
        };
    }
}

impl Client {
    fn keep_background(&self, task: tokio::task::JoinHandle<()>) {
        let mut background = self.inner.background.lock().expect("never poisoned");
        background.retain(|task| !task.is_finished());
        background.push(task);
    }

    /// Waits for the work a commit left running: the resolution of its intents on the
    /// other ranges. A process about to exit calls it (the CLI does), so it leaves no
    /// intent for the next reader or the janitor.
    pub async fn flush_background(&self) {
        let tasks = std::mem::take(&mut *self.inner.background.lock().expect("never poisoned"));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The transactions holding locks or unresolved records in the range of `key`.
    ///
    /// # Errors
    /// As `get`.
    pub async fn txn_locks(&self, key: &[u8]) -> Result<Vec<LockInfo>, ClientError> {
        let request = Request::TxnLocks { key: key.to_vec(), limit: 256 };
        match self.execute(key, request, Kind::Read, self.deadline()).await? {
            Response::TxnLocks { locks } => Ok(locks),
            other => Err(unexpected("TxnLocks", &other)),
        }
    }

    /// One look at every range: settles what has waited for `LOCK_TTL`. Returns how
    /// many locks and records were outstanding.
    ///
    /// # Errors
    /// When the range table cannot be read.
    pub async fn janitor_pass(&self, memory: &mut LockMemory) -> Result<usize, ClientError> {
        let deadline = self.deadline();
        let mut attempts = super::Attempts::new(deadline);
        self.refresh_table(&mut attempts, 0).await;
        let starts: Vec<Vec<u8>> = self.routes().data_range_keys();
        self.janitor_settle(memory, starts).await
    }

    /// A janitor's look at the ranges of `starts` (a key in each): settles what has
    /// waited for `LOCK_TTL`. Returns how many locks and records were outstanding.
    ///
    /// # Errors
    /// None today (a range that does not answer is looked at next time).
    pub async fn janitor_visit(
        &self,
        memory: &mut LockMemory,
        starts: Vec<Vec<u8>>,
    ) -> Result<usize, ClientError> {
        if !starts.is_empty() {
            // Routes as `janitor_pass` has them (ranges split and move), only when
            // there is something to visit.
            let mut attempts = super::Attempts::new(self.deadline());
            self.refresh_table(&mut attempts, 0).await;
        }
        self.janitor_settle(memory, starts).await
    }

    async fn janitor_settle(
        &self,
        memory: &mut LockMemory,
        starts: Vec<Vec<u8>>,
    ) -> Result<usize, ClientError> {
        let deadline = self.deadline();
        let mut outstanding = 0;
        let mut live = BTreeSet::new();
        for key in starts {
            let request = Request::TxnLocks { key: key.clone(), limit: 256 };
            let locks = match self.execute(&key, request, Kind::Read, deadline).await {
                Ok(Response::TxnLocks { locks }) => locks,
                _ => continue,
            };
            outstanding += locks.len();
            for lock in locks {
                live.insert(lock.txn);
                if memory.age(lock.txn) < LOCK_TTL {
                    continue;
                }
                let lock = LockInfo {
                    key: if lock.key.is_empty() { key.clone() } else { lock.key },
                    ..lock
                };
                let _ = self.settle(&lock, memory, deadline).await;
            }
        }
        memory.first_seen.retain(|txn, _| live.contains(txn));
        memory.no_record.retain(|(txn, _), _| live.contains(txn));
        Ok(outstanding)
    }
}
