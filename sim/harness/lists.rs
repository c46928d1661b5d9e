//! The list-append workload (Elle's): transactions of 1 to 4 operations, each an
//! append of a unique number to one of six list keys spread over the data ranges (a
//! read of the list and a write of it one longer), or a read of a list. One attempt
//! per transaction, its outcome recorded as the client library reports it: committed,
//! unknown, or (every other error) not committed. `checkers::elle` infers the
//! dependency graph and looks for cycles.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rangedb::client::{Client, ClientError};

use super::checkers::elle::{ListOp, ListTxn, TxnOutcome};
use super::workload::client_config;
use super::{now_ms, Rng};

/// One list in each data range, two in the last.
pub const LISTS: [&[u8]; 6] = [b"0list", b"9list", b"blist", b"jlist", b"tlist", b"ulist"];

/// A list as stored: numbers joined by commas ("" is the empty list).
pub fn parse(value: Option<&[u8]>) -> Vec<u64> {
    match value {
        None => Vec::new(),
        Some(bytes) => String::from_utf8_lossy(bytes)
            .split(',')
            .filter(|part| !part.is_empty())
            .map(|part| part.parse().unwrap_or(u64::MAX))
            .collect(),
    }
}

fn encode(list: &[u64]) -> Vec<u8> {
    list.iter().map(u64::to_string).collect::<Vec<_>>().join(",").into_bytes()
}

/// One list client until `stop`.
pub async fn run_list_client(
    client_id: u64,
    attempt_ms: u64,
    endpoints: Vec<String>,
    seed: u64,
    start: tokio::time::Instant,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<ListTxn>>>,
) {
    let client = Client::new(client_config(endpoints, client_id, attempt_ms));
    let mut rng = Rng::new(seed ^ client_id.wrapping_mul(0x1157_a99e_4d00_0001));
    let mut next = client_id * 1_000_000;
    while !stop.load(Ordering::Relaxed) {
        let count = rng.between(1, 4);
        let mut plan = Vec::new();
        // A quarter are write-skew shapes: read one of two lists in two ranges, append
        // to the other. Two of them at once, crossed, are the cycle that read locks
        // (taken at prepare) must prevent: the prepares must interleave, one range's
        // validation before the other's write lock on each side.
        if rng.chance(0.25) {
            // Started on a 50 ms boundary, so other clients' skew shapes run with it.
            let wait = 50 - now_ms(start) % 50;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let (a, b) = if rng.chance(0.5) { (0, 4) } else { (4, 0) };
            next += 1;
            plan.push((LISTS[a], None));
            plan.push((LISTS[b], Some(next)));
        }
        for _ in 0..count.saturating_sub(if plan.is_empty() { 0 } else { count }) {
            let key = LISTS[rng.below(LISTS.len() as u64) as usize];
            if rng.chance(0.5) {
                next += 1;
                plan.push((key, Some(next)));
            } else {
                plan.push((key, None));
            }
        }
        let invoke = now_ms(start);
        let txn = client.begin();
        let mut ops = Vec::new();
        let mut failed = None;
        // Now and then the lists of two ranges by scans (span validation and span
        // locks). The spans hold none of the plain workload's `KEYS`: the witness
        // checker takes every logged put to apply, and a put refused by a span's lock
        // applies later.
        if rng.chance(0.15) {
            let mut scanned = Vec::new();
            for (from, to) in [(&b"0"[..], Some(&b"1"[..])), (b"s", None)] {
                match txn.scan(from, to, 0).await {
                    Ok(kvs) => scanned.extend(kvs),
                    Err(error) => failed = Some(error),
                }
            }
            for key in [LISTS[0], LISTS[4], LISTS[5]] {
                let found = scanned.iter().find(|kv| kv.key.as_slice() == key);
                let list = parse(found.map(|kv| &kv.value[..]));
                ops.push(ListOp::Read { key: key.to_vec(), list });
            }
        }
        for (key, append) in plan.iter().filter(|_| failed.is_none()) {
            match txn.get(key).await {
                Ok(kv) => {
                    let mut list = parse(kv.as_ref().map(|kv| &kv.value[..]));
                    match append {
                        Some(value) => {
                            list.push(*value);
                            if let Err(error) = txn.put(key, &encode(&list)) {
                                failed = Some(error);
                                break;
                            }
                            ops.push(ListOp::Append { key: key.to_vec(), value: *value });
                        }
                        None => ops.push(ListOp::Read { key: key.to_vec(), list }),
                    }
                }
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        let outcome = match failed {
            Some(_) => TxnOutcome::Aborted,
            None => match txn.commit().await {
                Ok(_) => TxnOutcome::Committed,
                Err(ClientError::OutcomeUnknown { .. }) => TxnOutcome::Unknown,
                Err(_) => TxnOutcome::Aborted,
            },
        };
        // Appends planned but never buffered (a failed read) were never sent.
        let complete = now_ms(start);
        log.lock().expect("list log").push(ListTxn {
            client: client_id,
            invoke,
            complete,
            outcome,
            ops,
        });
        tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
    }
}

/// Every list as a transaction reads it after healing (None: no read committed).
pub async fn final_lists(
    endpoints: Vec<String>,
    deadline_ms: u64,
    start: tokio::time::Instant,
) -> Option<Vec<(Vec<u8>, Vec<u64>)>> {
    let client = Client::new(client_config(endpoints, 0x1157, 800));
    while now_ms(start) < deadline_ms {
        let result = client
            .txn(|t| async move {
                let mut lists = Vec::new();
                for key in LISTS {
                    let kv = t.get(key).await?;
                    lists.push((key.to_vec(), parse(kv.as_ref().map(|kv| &kv.value[..]))));
                }
                Ok(lists)
            })
            .await;
        match result {
            Ok((lists, _)) => return Some(lists),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    None
}
