//! A backup taken during the workload (a quarter of the seeds) and the check that
//! what it captured is one consistent cut (docs/DESIGN.md 7.10).
//!
//! The backup holds every range, captures each, lets them go and fetches the images
//! (`rangedb::backup::hold_and_capture`, then `Client::backup_fetch`), under the same
//! faults as the rest of the workload; a backup that fails is fine (it says so), one
//! that succeeds is checked:
//! - each image holds no write above its freeze's index;
//! - the bank: with the transactions the images caught undecided settled from their
//!   records as the janitor would (committed: intents written; otherwise aborted),
//!   the accounts add up to 0;
//! - plain puts: every put acknowledged before the backup began is in the cut (its
//!   key's newest revision is at least the put's), and every put acknowledged before
//!   a put whose version the cut shows was invoked is in it too.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rangedb::client::Client;
use rangedb::range::descriptor::{RangeDescriptor, RangeId, RangeTable};
use rangedb::range::kv::{Command, CommandResult, KvStore, WriteOp};
use rangedb::range::txn::{TxnOp, TxnResult, TxnStatus};

use super::checkers::Violation;
use super::history::{Call, Op, Outcome};
use super::workload::client_config;
use super::{now_ms, Rng};

/// What the backup did: when it began and ended (ms), and the ranges it captured.
#[derive(Default)]
pub struct BackupLog {
    pub began_ms: u64,
    pub ended_ms: u64,
    pub outcome: Option<Result<Vec<(RangeDescriptor, KvStore)>, String>>,
}

/// When this seed's backup runs (None: no backup), from a stream of its own (no other
/// draw moves).
pub fn planned_at(seed: u64, fault_ms: u64) -> Option<u64> {
    let mut rng = Rng::new(seed ^ 0x0bac_c0bb);
    rng.chance(0.25).then(|| rng.between(fault_ms / 4, fault_ms.max(8) * 3 / 4))
}

/// Waits until `at_ms`, then takes the backup.
pub async fn run_backup(
    endpoints: Vec<String>,
    attempt_ms: u64,
    at_ms: u64,
    start: tokio::time::Instant,
    log: Arc<Mutex<BackupLog>>,
) {
    tokio::time::sleep(Duration::from_millis(at_ms.saturating_sub(now_ms(start)))).await;
    let client = Client::new(client_config(endpoints, 0xbac0, attempt_ms));
    let began_ms = now_ms(start);
    let outcome = take(&client).await;
    let mut log = log.lock().expect("backup log");
    *log = BackupLog { began_ms, ended_ms: now_ms(start), outcome: Some(outcome) };
}

async fn take(client: &Client) -> Result<Vec<(RangeDescriptor, KvStore)>, String> {
    let hold = Duration::from_millis(2_000);
    let cut = rangedb::backup::hold_and_capture(client, hold).await.map_err(|e| e.to_string())?;
    let mut images = Vec::new();
    for (descriptor, captured) in cut.ranges.into_iter().zip(&cut.captured) {
        let fetched = client.backup_fetch(&captured.address, cut.backup, descriptor.id, |_| {});
        let image = fetched.await.map_err(|e| e.to_string())?;
        let kv = KvStore::restore(&image).map_err(|e| format!("{}: {e}", descriptor.id))?;
        images.push((descriptor, kv));
    }
    Ok(images)
}

fn violation(message: String, evidence: Vec<String>) -> Violation {
    Violation { checker: "backup", message, evidence, focus: None }
}

/// The checks on a backup that succeeded; `history` is the plain clients'.
pub fn check(log: &BackupLog, history: &[Op]) -> Vec<Violation> {
    let Some(Ok(images)) = &log.outcome else { return Vec::new() };
    let mut violations = Vec::new();
    for (descriptor, kv) in images {
        let freeze = kv.freeze().map_or(0, |freeze| freeze.index);
        if kv.newest_write() > freeze {
            violations.push(violation(
                format!("{}'s image holds a write after its freeze", descriptor.id),
                vec![format!("freeze index {freeze}, newest write {}", kv.newest_write())],
            ));
        }
    }
    let table = RangeTable::new(images.iter().map(|(d, _)| d.clone()).collect());
    let mut settled: BTreeMap<_, KvStore> =
        images.iter().map(|(d, kv)| (d.id, kv.clone())).collect();
    settle(&table, &mut settled);
    let balances: Vec<i64> = super::bank::ACCOUNTS
        .iter()
        .map(|account| {
            let kv = &settled[&table.lookup(account).id];
            let value = kv.get(account, None).ok().flatten().map(|kv| kv.value);
            value.and_then(|v| String::from_utf8(v).ok()).and_then(|t| t.parse().ok()).unwrap_or(0)
        })
        .collect();
    if balances.iter().sum::<i64>() != 0 {
        violations.push(violation(
            "the backup's accounts do not add up to 0 (half of a transfer in the cut)".into(),
            vec![format!(
                "balances {balances:?} in the backup of {}..{} ms",
                log.began_ms, log.ended_ms
            )],
        ));
    }
    let last = |key: &[u8]| images.iter().find(|(d, _)| d.contains(key)).map(|(_, kv)| kv);
    violations.extend(check_puts(log.began_ms, history, &|key| {
        last(key).map_or(0, |kv| kv.last_revision(key))
    }));
    violations
}

/// The put checks: `newest(key)` is the revision of the key's newest version in the cut.
fn check_puts(began_ms: u64, history: &[Op], newest: &dyn Fn(&[u8]) -> u64) -> Vec<Violation> {
    let puts: Vec<(&Op, u64)> = history
        .iter()
        .filter_map(|op| match (&op.call, &op.outcome) {
            (Call::Put { .. }, Outcome::Put { revision }) => Some((op, *revision)),
            _ => None,
        })
        .collect();
    // A key deleted at some point may have lost its tombstone: not judged.
    let deleted: Vec<&[u8]> =
        history.iter().filter(|op| matches!(op.call, Call::Delete { .. })).map(Op::key).collect();
    let judged = |op: &Op| !deleted.contains(&op.key());
    // The latest invocation of a put the cut shows (its version is the key's newest).
    let shown = puts.iter().filter(|(op, revision)| newest(op.key()) == *revision);
    let horizon = shown.map(|(op, _)| op.invoke_ms).max().unwrap_or(0).max(began_ms);
    let mut violations = Vec::new();
    for (op, revision) in &puts {
        if op.complete_ms < horizon && judged(op) && newest(op.key()) < *revision {
            let why = if op.complete_ms < began_ms {
                "before the backup began"
            } else {
                "before a write the backup holds was sent"
            };
            violations.push(violation(
                format!("a put acknowledged {why} is not in the backup"),
                vec![format!("{op}; the backup holds revision {} of the key", newest(op.key()))],
            ));
            if violations.len() >= 3 {
                break;
            }
        }
    }
    violations
}

/// Settles every transaction the images hold locks or records of, from its record:
/// committed, its intents are written; otherwise it is aborted (pushed at its anchor).
fn settle(table: &RangeTable, images: &mut BTreeMap<RangeId, KvStore>) {
    let apply = |kv: &mut KvStore, op: TxnOp| {
        let index = kv.applied() + 1;
        kv.apply(index, &Command { request_id: None, op: WriteOp::Txn(op) })
    };
    for kv in images.values_mut() {
        kv.rebootstrap(Vec::new()); // Lifts the freeze: the settling writes apply.
    }
    let mut locks = Vec::new();
    for kv in images.values() {
        locks.extend(kv.txn_outstanding(usize::MAX));
    }
    let mut outcomes = BTreeMap::new();
    for lock in &locks {
        if outcomes.contains_key(&lock.txn) {
            continue;
        }
        let anchor = images.get_mut(&table.lookup(&lock.anchor).id).expect("every range");
        let committed = match anchor.txn_status(lock.txn) {
            TxnResult::Status { status: Some(TxnStatus::Committed), .. } => true,
            _ => matches!(
                apply(anchor, TxnOp::Push { txn: lock.txn, anchor: lock.anchor.clone() }),
                CommandResult::Txn(TxnResult::Status { status: Some(TxnStatus::Committed), .. })
            ),
        };
        outcomes.insert(lock.txn, committed);
    }
    for lock in locks {
        let kv = images.get_mut(&table.lookup(&lock.key).id).expect("every range");
        apply(kv, TxnOp::Resolve { txn: lock.txn, commit: outcomes[&lock.txn] });
    }
}
