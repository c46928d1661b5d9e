#![cfg(not(madsim))] // Real processes and sockets: `cargo sim` skips this target.
//! Ranges that split, on real `rangedb server` processes: by hand (`rangedb admin
//! split`) and by size (`range_max_bytes`), with nodes down and restarted around
//! the splits.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rangedb::client::{Client, ClientConfig};
use support::*;

fn client(cluster: &Cluster) -> Client {
    Client::new(ClientConfig { endpoints: cluster.endpoints(), ..ClientConfig::default() })
}

/// The ranges every answering node holds: (id, start, end, generation), per node.
async fn ranges_per_node(
    client: &Client,
) -> BTreeMap<u64, BTreeSet<(u64, Vec<u8>, Option<Vec<u8>>, u64)>> {
    let status = client.status().await;
    status
        .nodes
        .iter()
        .filter_map(|n| n.status.as_ref().ok())
        .map(|node| {
            let ranges = node
                .ranges
                .iter()
                .map(|r| {
                    let d = &r.descriptor;
                    (d.id.0, d.start.clone(), d.end.clone(), d.generation)
                })
                .collect();
            (node.node.0, ranges)
        })
        .collect()
}

/// Waits until all `nodes` answer and hold the same ranges, `count` of them (and
/// returns them), or panics after 30 s.
async fn same_ranges_everywhere(
    client: &Client,
    nodes: usize,
    count: usize,
) -> BTreeSet<(u64, Vec<u8>, Option<Vec<u8>>, u64)> {
    let mut last = BTreeMap::new();
    for _ in 0..300 {
        last = ranges_per_node(client).await;
        let distinct: BTreeSet<_> = last.values().collect();
        if last.len() == nodes && distinct.len() == 1 && last.values().all(|r| r.len() == count) {
            return last.into_values().next().unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the nodes never agreed on {count} ranges: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_split_cuts_a_range_on_every_replica_also_one_that_was_down() {
    // A small snapshot interval: the node that was down catches up by snapshot.
    let mut cluster = Cluster::start(3, &["--snapshot-entries", "40"]);
    let client = client(&cluster);
    let mut acked = BTreeMap::new();
    write_keys(&client, 0..300, 0, &mut acked).await;
    same_ranges_everywhere(&client, 3, 6).await;

    // By hand, from the CLI: both halves printed; again: the same answer, exit 0.
    let split = cluster.cli(&["admin", "split", "b"]);
    assert!(split.status.success(), "{}", stderr(&split));
    let table = String::from_utf8_lossy(&split.stdout).to_string();
    assert!(table.contains("RANGE") && table.contains("GENERATION"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");
    let again = cluster.cli(&["admin", "split", "b", "-w", "json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let json: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(json["right"]["start"]["text"], "b", "{json}");
    assert_eq!(json["left"]["generation"], 2, "{json}");
    // Keys on both sides of the cut stay readable and writable.
    write_keys(&client, 0..60, 1, &mut acked).await;
    let ranges = same_ranges_everywhere(&client, 3, 7).await;
    assert!(
        ranges.iter().any(|(_, start, _, generation)| start == b"b" && *generation == 2),
        "{ranges:?}"
    );

    // A node down during two more splits and many writes comes back holding the new
    // ranges (its left replicas catch up by log or by snapshot).
    let down = 3;
    cluster.kill(down);
    for key in ["c", "j"] {
        let split = cluster.cli(&["admin", "split", key]);
        assert!(split.status.success(), "split {key}: {}", stderr(&split));
    }
    write_keys(&client, 0..300, 2, &mut acked).await;
    cluster.start_node(down);
    write_keys(&client, 300..330, 2, &mut acked).await;
    same_ranges_everywhere(&client, 3, 9).await;
    check_everywhere(&cluster, &client, &acked).await;

    // Every node restarted: the ranges made by splits are recovered from their own
    // snapshots and logs.
    for node in 1..=3 {
        cluster.kill(node);
        cluster.start_node(node);
    }
    same_ranges_everywhere(&client, 3, 9).await;
    check_everywhere(&cluster, &client, &acked).await;

    // Bad splits are refused with a clear error and exit 2.
    for (key, says) in [("c", ""), ("_/x", "reserved"), ("", "")] {
        let refused = cluster.cli(&["admin", "split", key]);
        if key == "c" {
            assert!(refused.status.success(), "a split made before answers again");
            continue;
        }
        assert_eq!(refused.status.code(), Some(2), "split {key:?}: {}", stderr(&refused));
        assert!(stderr(&refused).contains(says), "{}", stderr(&refused));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_split_by_size_on_their_own() {
    let cluster = Cluster::start(3, &[]);
    let client = client(&cluster);
    let set = cluster.cli(&["admin", "config", "set", "range_max_bytes", "4KiB"]);
    assert!(set.status.success(), "{}", stderr(&set));
    let mut acked = BTreeMap::new();
    // 600 keys of ~60 bytes over the four data ranges: ~9 KiB each.
    write_keys(&client, 0..600, 0, &mut acked).await;
    let mut ranges = BTreeMap::new();
    for _ in 0..300 {
        ranges = ranges_per_node(&client).await;
        if ranges.values().all(|r| r.len() >= 12) && ranges.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ranges.values().all(|r| r.len() >= 12), "ranges did not split by size: {ranges:?}");
    check_everywhere(&cluster, &client, &acked).await;
    // Watched: one look per interval, each with its header.
    let watch = cluster.cli(&["status", "--watch", "--interval", "100ms", "--count", "2"]);
    assert!(watch.status.success(), "{}", stderr(&watch));
    let text = String::from_utf8_lossy(&watch.stdout).to_string();
    assert_eq!(text.matches("ranges (every 100ms").count(), 2, "{text}");
    // The status shows each range's generation and size.
    let status = cluster.cli(&["status", "-w", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let bytes: u64 =
        json["ranges"].as_array().expect("ranges").iter().filter_map(|r| r["bytes"].as_u64()).sum();
    assert!(bytes > 30_000, "{json}");
}
