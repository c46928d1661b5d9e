//! Ranges that split while the cluster runs, in about half the seeds: an operator's
//! client splits ranges at keys among the workload's, the bank's and the lists'
//! (`rangedb admin split`), and in some of those seeds sets `range_max_bytes` so low
//! that the meta range's leader splits ranges by size on its own. The splits happen
//! under every fault the schedule injects; the witness replays them (every write
//! applied inside its range's span, generations only growing), and the nodes report
//! their spans to the `splits` check (no two of a node's replicas overlap).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rangedb::client::Client;

use super::workload::client_config;
use super::Rng;

/// The splitting operator's client id (apart from the other clients').
const SPLIT_CLIENT: u64 = 310;

/// Split points: between and at the workload's keys (`KEYS`), inside the bank's
/// accounts and the lists (so their transactions' locks and records are cut).
const SPLIT_KEYS: [&[u8]; 14] =
    [b"3", b"7", b"9", b"B", b"b", b"c", b"e", b"f", b"j", b"jacct", b"k", b"n", b"t", b"ul"];

/// What this seed's operator did: splits answered, and whether it turned on splits
/// by size.
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitsDone {
    pub split: u64,
    pub by_size: bool,
}

pub async fn run_split_client(
    attempt_ms: u64,
    endpoints: Vec<String>,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> SplitsDone {
    let mut rng = Rng::new(seed ^ 0x5b11_7a9e_0c0d);
    let mut done = SplitsDone::default();
    if !rng.chance(0.5) {
        return done;
    }
    let client = Client::new(client_config(endpoints, SPLIT_CLIENT, attempt_ms));
    if rng.chance(0.3) {
        tokio::time::sleep(Duration::from_millis(rng.between(200, 1_500))).await;
        // A few hundred bytes: the ranges the workload writes to split by size.
        let bytes = ["48", "96", "200"][rng.below(3) as usize];
        done.by_size = client.config_set("range_max_bytes", bytes).await.is_ok();
    }
    for _ in 0..rng.between(1, 5) {
        tokio::time::sleep(Duration::from_millis(rng.between(100, 1_500))).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = SPLIT_KEYS[rng.below(SPLIT_KEYS.len() as u64) as usize];
        // Under faults a split may time out (planned, applied later) or be refused
        // (the key already a boundary): the checkers judge what the replicas did.
        if client.split(key).await.is_ok() {
            done.split += 1;
        }
    }
    done
}
