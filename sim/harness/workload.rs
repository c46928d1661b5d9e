//! Concurrent clients on a small key space spanning every data range: put, get
//! (linearizable or from the leader's lease, at random), delete and scan through the
//! production client library.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rangedb::client::{Client, ClientConfig, ClientError};

use super::history::{Call, Op, Outcome};
use super::{now_ms, Rng};

/// Keys across the five data ranges of the default split (`8`, `g`, `p` plus the
/// meta range `[_/, _0)`, which cuts `[8, g)` in two).
pub const KEYS: [&[u8]; 9] = [b"1", b"5", b"9", b"C", b"a", b"e", b"h", b"m", b"r"];

pub fn client_config(endpoints: Vec<String>, client_id: u64, attempt_ms: u64) -> ClientConfig {
    ClientConfig {
        endpoints,
        request_timeout: Duration::from_millis(3_000),
        attempt_timeout: Duration::from_millis(attempt_ms),
        connect_timeout: Duration::from_millis(400),
        client_id: Some(client_id),
    }
}

/// One client: sequential operations until `stop`, each recorded in `history`; with
/// `burst` = (n > 0, p), in p% of its operations n puts at once (pipelined), so a
/// leader that is cut off fills its log with entries it cannot commit.
#[allow(clippy::too_many_arguments)] // The plan's knobs, the run's shared state.
pub async fn run_client(
    client_id: u64,
    attempt_ms: u64,
    lease_get_percent: u64,
    burst: (u64, u64),
    endpoints: Vec<String>,
    seed: u64,
    start: tokio::time::Instant,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Op>>>,
) {
    let client = Client::new(client_config(endpoints, client_id, attempt_ms));
    let mut rng = Rng::new(seed ^ client_id.wrapping_mul(0x1234_5678_9abc_def1));
    // Mirrors the library's RequestId sequence: one per write, from 1.
    let mut seq = 0;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = KEYS[rng.below(KEYS.len() as u64) as usize].to_vec();
        let roll = rng.below(100);
        let invoke_ms = now_ms(start);
        if burst.0 > 0 && roll < burst.1 {
            let mut writes = Vec::new();
            for _ in 0..burst.0 {
                seq += 1;
                n += 1;
                let key = KEYS[rng.below(KEYS.len() as u64) as usize].to_vec();
                writes.push((key, format!("c{client_id}.{n}").into_bytes(), seq));
            }
            let puts = writes.iter().map(|(key, value, _)| {
                let client = &client;
                async move {
                    let result = client.put(key, value).await;
                    (result, now_ms(start))
                }
            });
            let results = join_in_order(puts.collect()).await;
            let mut history = history.lock().expect("history lock");
            for ((key, value, seq), (result, complete_ms)) in writes.into_iter().zip(results) {
                let outcome = match result {
                    Ok(revision) => Outcome::Put { revision },
                    Err(error) => write_error(error),
                };
                let call = Call::Put { key, value, seq };
                history.push(Op { client: client_id, call, invoke_ms, complete_ms, outcome });
            }
            continue;
        }
        let (call, outcome) = if roll < 40 {
            seq += 1;
            let value = format!("c{client_id}.{n}").into_bytes();
            let result = client.put(&key, &value).await;
            let outcome = match result {
                Ok(revision) => Outcome::Put { revision },
                Err(error) => write_error(error),
            };
            (Call::Put { key, value, seq }, outcome)
        } else if roll < 50 {
            seq += 1;
            let outcome = match client.delete(&key).await {
                Ok(existed) => Outcome::Delete { existed },
                Err(error) => write_error(error),
            };
            (Call::Delete { key, seq }, outcome)
        } else if roll < 80 {
            // Some gets may be answered from the leader's lease.
            let lease = (roll - 50) * 100 < lease_get_percent * 30;
            let result = if lease { client.get_lease(&key).await } else { client.get(&key).await };
            let outcome = match result {
                Ok(kv) => Outcome::Get(kv.map(|kv| (kv.value, kv.revision))),
                Err(error) => Outcome::Failed(short(&error)),
            };
            (Call::Get { key, lease }, outcome)
        } else {
            let a = rng.below(KEYS.len() as u64) as usize;
            let b = rng.below(KEYS.len() as u64 + 1) as usize;
            let (lo, hi) = (a.min(b), a.max(b));
            let start_key = KEYS[lo].to_vec();
            let end_key = KEYS.get(hi).filter(|_| hi > lo).map(|k| k.to_vec());
            let outcome = match client.scan(&start_key, end_key.as_deref(), 0).await {
                Ok(kvs) => Outcome::Scan(
                    kvs.into_iter().map(|kv| (kv.key, kv.value, kv.revision)).collect(),
                ),
                Err(error) => Outcome::Failed(short(&error)),
            };
            (Call::Scan { start: start_key, end: end_key }, outcome)
        };
        let op = Op { client: client_id, call, invoke_ms, complete_ms: now_ms(start), outcome };
        history.lock().expect("history lock").push(op);
        let pause = rng.below(40);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Runs `futures` concurrently and returns their outputs in order. Each is first
/// polled in order, so the client library stamps their request ids in that order (the
/// workload mirrors the sequence numbers).
async fn join_in_order<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|output| output.expect("every future completed")).collect()
}

fn write_error(error: ClientError) -> Outcome {
    match error {
        ClientError::OutcomeUnknown { .. } => Outcome::Unknown(short(&error)),
        other => Outcome::Failed(short(&other)),
    }
}

fn short(error: &ClientError) -> String {
    let text = error.to_string();
    text.chars().take(60).collect()
}
