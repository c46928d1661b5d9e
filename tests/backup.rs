#![cfg(not(madsim))] // Real processes and sockets: `cargo sim` skips this target.
//! `rangedb admin backup create|restore` on real servers: a backup taken under a
//! write load restores into a new cluster that holds one consistent cut; a damaged
//! backup is refused naming the file; a freeze whose backup died lets go.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rangedb::client::{Client, ClientConfig};
use support::*;
use tokio::time::Instant;

/// One test at a time: each runs a cluster (and two a load), and on two shared cores
/// they starved each other's elections when run together.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn client(endpoints: Vec<String>) -> Client {
    Client::new(ClientConfig { endpoints, ..ClientConfig::default() })
}

/// Accounts in every default range; each starts with 100.
const ACCOUNTS: [&str; 8] =
    ["1acct", "9acct", "aacct", "eacct", "hacct", "macct", "qacct", "xacct"];
const BALANCE: i64 = 100;
/// The sequential writer's keys, one per range it cycles through.
const SEQUENCE_KEYS: [&str; 6] = ["0seq", "9seq", "bseq", "iseq", "rseq", "yseq"];

fn sequence_key(n: u64) -> &'static str {
    SEQUENCE_KEYS[(n % SEQUENCE_KEYS.len() as u64) as usize]
}

/// Transfers between accounts until `stop`; returns how many committed.
async fn transfers(client: Client, worker: usize, stop: Arc<AtomicBool>) -> u64 {
    let mut committed = 0;
    let mut round = worker;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let from = ACCOUNTS[round % ACCOUNTS.len()];
        let to = ACCOUNTS[(round * 3 + 1) % ACCOUNTS.len()];
        if from == to {
            continue;
        }
        let outcome = client
            .txn(|txn| async move {
                let balance = |kv: Option<rangedb::range::kv::KeyValue>| -> i64 {
                    kv.and_then(|kv| String::from_utf8(kv.value).ok())
                        .and_then(|text| text.parse().ok())
                        .unwrap_or(0)
                };
                let a = balance(txn.get(from.as_bytes()).await?);
                let b = balance(txn.get(to.as_bytes()).await?);
                txn.put(from.as_bytes(), (a - 7).to_string().as_bytes())?;
                txn.put(to.as_bytes(), (b + 7).to_string().as_bytes())?;
                Ok(())
            })
            .await;
        // Atomic either way (a conflict, or a slow machine's timeout): the total is
        // what is checked.
        if outcome.is_ok() {
            committed += 1;
        }
    }
    committed
}

/// Writes n = 1, 2, ... to `sequence_key(n)` one at a time until `stop`, recording
/// when each was acknowledged. A write that failed or whose outcome is unknown is
/// sent again (the same key and value) until acknowledged, before the next one.
async fn sequence(client: Client, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<Instant>>>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let value = n.to_string();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match client.put(sequence_key(n).as_bytes(), value.as_bytes()).await {
                Ok(_) => break,
                Err(error) if attempts >= 10 => {
                    panic!("put #{n} failed after {attempts} attempts: {error}")
                }
                Err(_) => {}
            }
        }
        acked.lock().unwrap().push(Instant::now());
    }
}

/// Puts to a key in every range until `stop` (more writes for a freeze to hold off).
/// Returns how many were acknowledged.
async fn noise(client: Client, worker: u64, stop: Arc<AtomicBool>) -> u64 {
    let (mut n, mut acknowledged) = (0u64, 0);
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("{}noise{worker}", ["0", "9", "b", "i", "r", "y"][(n % 6) as usize]);
        if client.put(key.as_bytes(), n.to_string().as_bytes()).await.is_ok() {
            acknowledged += 1;
        }
    }
    acknowledged
}

/// The restored value of every sequence key (0: absent).
async fn sequence_values(client: &Client) -> BTreeMap<&'static str, u64> {
    let mut values = BTreeMap::new();
    for key in SEQUENCE_KEYS {
        let kv = client.get(key.as_bytes()).await.expect("get a sequence key");
        let value = kv.map_or(0, |kv| String::from_utf8(kv.value).unwrap().parse().unwrap());
        values.insert(key, value);
    }
    values
}

/// Waits (at most 30 s) until no range holds a lock or an undecided record.
async fn wait_settled(client: &Client) {
    let started = Instant::now();
    loop {
        let mut left = 0;
        for key in ["0", "9", "_0x", "h", "q"] {
            left += client.txn_locks(key.as_bytes()).await.map_or(1, |locks| locks.len());
        }
        if left == 0 {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{left} locks left after 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stages `backup` for every server of `cluster` and starts them.
fn restore_into(cluster: &mut Cluster, backup: &Path) {
    let ids: Vec<u64> = cluster.servers.keys().copied().collect();
    for id in &ids {
        let data_dir = cluster.servers[id].data_dir.clone();
        let out = cli(
            "127.0.0.1:1",
            &["admin", "backup", "restore", path_str(backup), "--data-dir", path_str(&data_dir)],
        );
        assert!(out.status.success(), "restore for node {id}: {}", stderr(&out));
    }
    for id in &ids {
        cluster.start_node(*id);
    }
    for id in &ids {
        cluster.wait_serving(*id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_one_consistent_cut_into_a_new_cluster() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3, &[]);
    let writer = client(cluster.endpoints());
    let initial: Vec<(Vec<u8>, Option<Vec<u8>>)> = ACCOUNTS
        .iter()
        .map(|a| (a.as_bytes().to_vec(), Some(BALANCE.to_string().into_bytes())))
        .collect();
    writer.batch(initial).await.expect("open the accounts");

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut bank = Vec::new();
    for worker in 0..2 {
        bank.push(tokio::spawn(transfers(client(cluster.endpoints()), worker, Arc::clone(&stop))));
    }
    let puts =
        tokio::spawn(sequence(client(cluster.endpoints()), Arc::clone(&stop), Arc::clone(&acked)));
    let noisy: Vec<_> = (0..2)
        .map(|worker| tokio::spawn(noise(client(cluster.endpoints()), worker, Arc::clone(&stop))))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Three backups in a row; the second is restored below.
    let kept = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    for round in 0..3 {
        let backup = kept.path().join(format!("backup{round}"));
        let began = Instant::now();
        let acked_before = acked.lock().unwrap().len() as u64;
        let endpoints = cluster.endpoints_flag();
        let dir = backup.clone();
        let out = tokio::task::spawn_blocking(move || {
            cli(&endpoints, &["admin", "backup", "create", path_str(&dir)])
        })
        .await
        .unwrap();
        let took = began.elapsed();
        assert!(out.status.success(), "backup create: {}", stderr(&out));
        let summary = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(summary.contains("6 ranges") && summary.contains("writes paused"), "{summary}");
        // Every image is its range's state at its freeze (no write above it).
        rangedb::backup::verify(&backup).expect("the backup verifies");
        taken.push((backup, began, took, acked_before, summary));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (backup, began, backup_took, acked_before, summary) = taken.swap_remove(1);
    stop.store(true, Ordering::Relaxed);
    let mut committed = 0;
    for task in bank {
        committed += task.await.unwrap();
    }
    puts.await.unwrap();
    for task in noisy {
        assert!(task.await.unwrap() > 0, "the noise writers ran");
    }
    let acked = acked.lock().unwrap().clone();
    let during = acked.iter().filter(|at| **at > began && **at < began + backup_took).count();
    eprintln!(
        "{committed} transfers, {} puts ({acked_before} before the backup, {during} during its \
         {backup_took:?}):\n{summary}",
        acked.len()
    );
    assert!(committed > 0 && acked.len() as u64 > acked_before, "the load ran on");
    drop(cluster);

    let mut restored = Cluster::prepare(3, &[]);
    restore_into(&mut restored, &backup);
    let reader = client(restored.endpoints());
    wait_settled(&reader).await;
    let mut total = 0;
    for account in ACCOUNTS {
        let kv = reader.get(account.as_bytes()).await.expect("get an account");
        let text = kv.map(|kv| String::from_utf8(kv.value).unwrap()).expect("every account");
        total += text.parse::<i64>().unwrap();
    }
    assert_eq!(total, BALANCE * ACCOUNTS.len() as i64, "the bank's total in the restored cut");

    // The cut is the state right after one write m of the sequence: every key holds
    // the last write to it up to m, and m is at least every write acknowledged
    // before the backup began.
    let values = sequence_values(&reader).await;
    let m = values.values().copied().max().unwrap();
    assert!(
        m >= acked_before,
        "write #{acked_before} was acknowledged before the backup: {values:?}"
    );
    for (key, value) in &values {
        let last = (1..=m).rev().find(|n| sequence_key(*n) == *key).unwrap_or(0);
        assert_eq!(*value, last, "{key} in a cut after write #{m}: {values:?}");
    }
    // A new cluster: it takes writes, and its id is not the backed-up one.
    reader.put(b"after", b"restore").await.expect("a write to the restored cluster");
    let status = restored.cli(&["node", "list"]);
    let manifest = std::fs::read_to_string(backup.join("MANIFEST")).unwrap();
    let status_text = String::from_utf8_lossy(&status.stdout).to_string();
    let cluster_line = status_text.lines().find(|l| l.starts_with("cluster")).unwrap_or("");
    let new_id = cluster_line.trim_start_matches("cluster ").trim();
    assert!(!new_id.is_empty() && !manifest.contains(new_id), "{status_text}\n{manifest}");
}

/// Something done to a copy of a backup.
type Damage = Box<dyn FnOnce(&Path)>;

/// A copy of `backup` in `name`, changed by `damage`.
fn damaged_copy(backup: &Path, name: &str, damage: impl FnOnce(&Path)) -> std::path::PathBuf {
    let copy = backup.parent().unwrap().join(name);
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(backup).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    damage(&copy);
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_partial_backup_is_refused_naming_the_file() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(1, &[]);
    for i in 0..30 {
        let out = cluster.cli(&["put", &format!("{}-k", ["a", "h", "q"][i % 3]), "v"]);
        assert!(out.status.success());
    }
    let backup = cluster.dir.path().join("backup");
    let out = cluster.cli(&["admin", "backup", "create", path_str(&backup)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = cluster.cli(&["admin", "backup", "create", path_str(&backup)]);
    assert!(!again.status.success() && stderr(&again).contains("not empty"), "{}", stderr(&again));
    let file = |dir: &Path| dir.join("range-0000000000000004.img");
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "truncated",
            Box::new(move |dir: &Path| {
                let bytes = std::fs::read(file(dir)).unwrap();
                std::fs::write(file(dir), &bytes[..bytes.len() / 2]).unwrap();
            }),
            "range-0000000000000004.img",
        ),
        (
            "flipped",
            Box::new(move |dir: &Path| {
                let mut bytes = std::fs::read(file(dir)).unwrap();
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
                std::fs::write(file(dir), bytes).unwrap();
            }),
            "range-0000000000000004.img",
        ),
        (
            "missing-range",
            Box::new(move |dir: &Path| std::fs::remove_file(file(dir)).unwrap()),
            "range-0000000000000004.img",
        ),
        (
            "missing-manifest",
            Box::new(|dir: &Path| std::fs::remove_file(dir.join("MANIFEST")).unwrap()),
            "MANIFEST",
        ),
        (
            "newer-version",
            Box::new(|dir: &Path| {
                let text = std::fs::read_to_string(dir.join("MANIFEST")).unwrap();
                std::fs::write(
                    dir.join("MANIFEST"),
                    text.replace("\"version\": 1", "\"version\": 2"),
                )
                .unwrap();
            }),
            "version 2",
        ),
    ];
    for (name, damage, named) in cases {
        let copy = damaged_copy(&backup, name, damage);
        let data_dir = cluster.dir.path().join(format!("data-{name}"));
        let out = cli(
            "127.0.0.1:1",
            &["admin", "backup", "restore", path_str(&copy), "--data-dir", path_str(&data_dir)],
        );
        let message = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {message}");
        assert!(message.contains(named), "{name}: the error names {named}: {message}");
        assert!(!message.contains("panicked"), "{name}: {message}");
        assert!(!data_dir.join("restore").exists(), "{name}: nothing staged");
    }
    // The intact backup restores.
    let data_dir = cluster.dir.path().join("data-intact");
    let out = cli(
        "127.0.0.1:1",
        &["admin", "backup", "restore", path_str(&backup), "--data-dir", path_str(&data_dir)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_whose_backup_died_is_lifted_at_its_deadline_and_writes_wait_meanwhile() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3, &[]);
    let client = client(cluster.endpoints());
    client.put(b"hold-me", b"1").await.expect("a first put");
    let ranges = client.ranges().await.expect("the range table");
    let range = ranges.iter().find(|r| r.contains(b"hold-me")).unwrap();
    let frozen = client.backup_freeze(&range.start, 42, Duration::from_millis(1500)).await;
    let frozen = frozen.expect("freeze");
    assert_eq!(frozen.backup, 42);
    // A write waits, then succeeds once the leader lifts the freeze (nobody
    // unfreezes it).
    let started = Instant::now();
    client.put(b"hold-me", b"2").await.expect("the put waits out the freeze");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1000), "the put waited for the freeze: {waited:?}");
    assert!(waited < Duration::from_secs(8), "the freeze was lifted: {waited:?}");
    assert!(!client.backup_unfreeze(&range.start, 42).await.unwrap(), "it had expired");
    let kv = client.get(b"hold-me").await.unwrap().unwrap();
    assert_eq!(kv.value, b"2");
}
