//! The transactional workload and its checkers: a bank.
//!
//! Accounts spread over every data range hold integer balances (an absent account
//! holds 0) and start empty, so the total is always 0. Bank clients run transfers
//! (read two accounts, move an amount, write both: across ranges through the
//! two-phase commit, or within one range in one entry), audits (a read-only
//! transaction over every account), plain reads of accounts (which must look into
//! intents) and plain puts of a key the transfers also write (which must wait for
//! their locks). Some coordinators abandon a prepared transaction (`set_abandon`):
//! the cluster's janitors must abort it.
//!
//! Checked: every committed audit saw a total of 0 (atomicity and isolation: a
//! transfer seen half-done, or a lost write of one side, changes the total); after
//! healing, an audit commits and sees 0, and within `SETTLE_BOUND_MS` no range holds a
//! lock, a pending record or an unresolved one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rangedb::client::{Client, ClientError};

use super::checkers::Violation;
use super::workload::client_config;
use super::{now_ms, Rng};

/// One account in each data range, two in the last (so some transfers are
/// single-range), and the key the transfers and plain puts share.
pub const ACCOUNTS: [&[u8]; 6] = [b"0acct", b"9acct", b"bacct", b"jacct", b"tacct", b"uacct"];
const SHARED: &[u8] = b"ulast";
/// How long after healing the janitors have to leave no lock or open record.
pub const SETTLE_BOUND_MS: u64 = 12_000;

/// What the bank clients saw.
#[derive(Default, Debug)]
pub struct BankLog {
    /// Committed audits: (invoke ms, complete ms, client, the balances read).
    pub audits: Vec<(u64, u64, u64, Vec<i64>)>,
    pub transfers_committed: u64,
    pub transfers_conflicted: u64,
    pub transfers_unknown: u64,
    pub cross_range_committed: u64,
    pub failures: u64,
}

fn balance(value: Option<&[u8]>) -> Result<i64, ClientError> {
    match value {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| ClientError::Protocol { reason: format!("balance {bytes:?}") }),
    }
}

/// One bank client until `stop`.
pub async fn run_bank_client(
    client_id: u64,
    attempt_ms: u64,
    endpoints: Vec<String>,
    seed: u64,
    start: tokio::time::Instant,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<BankLog>>,
) {
    let client = Client::new(client_config(endpoints, client_id, attempt_ms));
    let mut rng = Rng::new(seed ^ client_id.wrapping_mul(0x0ba4_c0de_5eed_f00d));
    while !stop.load(Ordering::Relaxed) {
        let roll = rng.below(100);
        if roll < 60 {
            let (a, b) = if rng.chance(0.25) {
                (4, 5)
            } else {
                let a = rng.below(ACCOUNTS.len() as u64) as usize;
                (a, (a + 1 + rng.below(ACCOUNTS.len() as u64 - 1) as usize) % ACCOUNTS.len())
            };
            let amount = rng.between(1, 100) as i64;
            let stamp = format!("c{client_id}.{}", rng.next_u64() % 1_000_000);
            let result = client
                .txn(|t| {
                    let stamp = stamp.clone();
                    async move {
                        let from =
                            balance(t.get(ACCOUNTS[a]).await?.as_ref().map(|kv| &kv.value[..]))?;
                        let to =
                            balance(t.get(ACCOUNTS[b]).await?.as_ref().map(|kv| &kv.value[..]))?;
                        t.put(ACCOUNTS[a], (from - amount).to_string().as_bytes())?;
                        t.put(ACCOUNTS[b], (to + amount).to_string().as_bytes())?;
                        if b == 5 || a == 5 {
                            t.put(SHARED, stamp.as_bytes())?;
                        }
                        Ok(())
                    }
                })
                .await;
            let mut log = log.lock().expect("bank log");
            match result {
                Ok((_, committed)) => {
                    log.transfers_committed += 1;
                    if committed.ranges > 1 {
                        log.cross_range_committed += 1;
                    }
                }
                Err(ClientError::Conflict { .. }) => log.transfers_conflicted += 1,
                Err(ClientError::OutcomeUnknown { .. }) => log.transfers_unknown += 1,
                Err(_) => log.failures += 1,
            }
        } else if roll < 85 {
            let invoke = now_ms(start);
            let result = client
                .txn(|t| async move {
                    let mut balances = Vec::new();
                    for account in ACCOUNTS {
                        balances
                            .push(balance(t.get(account).await?.as_ref().map(|kv| &kv.value[..]))?);
                    }
                    Ok(balances)
                })
                .await;
            if let Ok((balances, _)) = result {
                let complete = now_ms(start);
                log.lock().expect("bank log").audits.push((invoke, complete, client_id, balances));
            }
        } else if roll < 90 {
            // A plain read of an account: it must look into a transfer's intent.
            let account = ACCOUNTS[rng.below(ACCOUNTS.len() as u64) as usize];
            let _ = client.get(account).await;
        } else {
            // A plain put of a key transfers write: it waits for their locks.
            let _ = client.put(SHARED, format!("plain.c{client_id}").as_bytes()).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
    }
}

/// The checks on the bank's history.
pub fn check(log: &BankLog) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (invoke, complete, client, balances) in &log.audits {
        let total: i64 = balances.iter().sum();
        if total != 0 && violations.len() < 3 {
            violations.push(Violation {
                checker: "bank",
                message: format!(
                    "a committed audit saw a total of {total}, not 0 (a transfer seen half done, \
                     or one side of it lost)"
                ),
                evidence: vec![format!(
                    "client {client} audit {invoke}..{complete} ms: balances {balances:?} of {:?}",
                    ACCOUNTS.iter().map(|a| String::from_utf8_lossy(a)).collect::<Vec<_>>()
                )],
                focus: None,
            });
        }
    }
    violations
}

/// After healing: an audit must commit and see 0, and every range must be left
/// without locks or open records within `SETTLE_BOUND_MS` (the janitors' work).
pub async fn after_heal(endpoints: Vec<String>, start: tokio::time::Instant) -> Vec<Violation> {
    let heal = now_ms(start);
    let client = Client::new(client_config(endpoints.clone(), 0xba4c, 800));
    let mut violations = Vec::new();
    let mut audit = None;
    while audit.is_none() && now_ms(start) < heal + SETTLE_BOUND_MS {
        let result = client
            .txn(|t| async move {
                let mut balances = Vec::new();
                for account in ACCOUNTS {
                    balances.push(balance(t.get(account).await?.as_ref().map(|kv| &kv.value[..]))?);
                }
                Ok(balances)
            })
            .await;
        match result {
            Ok((balances, _)) => audit = Some(balances),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    match audit {
        Some(balances) if balances.iter().sum::<i64>() != 0 => violations.push(Violation {
            checker: "bank",
            message: "after healing the accounts do not add up to 0".into(),
            evidence: vec![format!("balances {balances:?}")],
            focus: None,
        }),
        Some(_) => {}
        None => violations.push(Violation {
            checker: "liveness",
            message: format!(
                "no audit transaction committed within {SETTLE_BOUND_MS} ms of healing"
            ),
            evidence: vec![],
            focus: None,
        }),
    }
    let mut left = Vec::new();
    loop {
        left.clear();
        for key in [&b"0"[..], b"9", b"b", b"j", b"t"] {
            match client.txn_locks(key).await {
                Ok(locks) => left.extend(locks.into_iter().map(|l| format!("{l:?}"))),
                Err(error) => left.push(format!(
                    "range of {:?} did not answer: {error}",
                    String::from_utf8_lossy(key)
                )),
            }
        }
        if left.is_empty() {
            break;
        }
        if now_ms(start) > heal + SETTLE_BOUND_MS {
            violations.push(Violation {
                checker: "transactions",
                message: format!(
                    "locks or open transaction records left {SETTLE_BOUND_MS} ms after healing"
                ),
                evidence: left.clone(),
                focus: None,
            });
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    violations
}
