//! Runtime settings changed while the cluster runs (`rangedb admin config set`), in a
//! third of the seeds: an operator's client sets `history_revisions` and
//! `snapshot_entries` at random times of the fault phase through the production
//! admin path. The settings checker (`checkers::raft_safety`, "settings") sees every
//! replica apply each change at the same index of its range's log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rangedb::client::Client;

use super::workload::client_config;
use super::Rng;

/// The operator's client id (apart from the workload's, the bank's and the lists').
const ADMIN_CLIENT: u64 = 300;

/// Whether this seed changes settings, and when: up to three changes, each after a
/// pause; drawn from a stream of its own so that adding it kept every other draw.
pub async fn run_admin_client(
    attempt_ms: u64,
    endpoints: Vec<String>,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut rng = Rng::new(seed ^ 0x5e77_1265_adc0);
    if !rng.chance(0.33) {
        return 0;
    }
    let client = Client::new(client_config(endpoints, ADMIN_CLIENT, attempt_ms));
    let mut done = 0;
    for _ in 0..rng.between(1, 3) {
        tokio::time::sleep(Duration::from_millis(rng.between(300, 2_500))).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (name, value) = if rng.chance(0.7) {
            ("history_revisions", ["0", "3", "50", "all"][rng.below(4) as usize])
        } else {
            ("snapshot_entries", ["10", "30", "100"][rng.below(3) as usize])
        };
        // Under faults a set may fail or time out (its outcome unknown): the checker
        // judges what the replicas applied, not what the operator was told.
        if client.config_set(name, value).await.is_ok() {
            done += 1;
        }
    }
    done
}
