#![cfg(not(madsim))] // Real processes and sockets: `cargo sim` skips this target.
//! `rangedb admin` (cluster status, config, meta), `range`, and `-w json`, on real
//! `rangedb server` processes over loopback.

mod support;

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The command's stdout as one JSON value; fails the test if it is not one.
fn json(output: &Output) -> Value {
    assert!(output.status.success() || output.status.code() == Some(3), "{}", stderr(output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", stdout(output)))
}

/// Waits (up to 10 s) until every range reports `history` applied in `admin cluster
/// status -w json`; returns the status.
fn wait_history(endpoints: &str, history: Value) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = json(&cli(endpoints, &["admin", "cluster", "status", "-w", "json"]));
        let ranges = last["ranges"].as_array().cloned().unwrap_or_default();
        if !ranges.is_empty() && ranges.iter().all(|r| r["history_revisions"] == history) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the ranges did not apply history_revisions {history} within 10 s: {last}");
}

/// Puts `key` = `value` and returns the revision it was written at.
fn put(endpoints: &str, key: &str, value: &str) -> u64 {
    let answer = json(&cli(endpoints, &["put", key, value, "-w", "json"]));
    answer["revision"].as_u64().unwrap_or_else(|| panic!("no revision in {answer}"))
}

#[test]
fn a_setting_set_on_one_node_is_seen_on_another_and_applied_without_a_restart() {
    let mut cluster = Cluster::start(3, &[]);
    let (one, three) = (cluster.servers[&1].address.clone(), cluster.servers[&3].address.clone());
    let set = cli(&one, &["admin", "config", "set", "history_revisions", "2"]);
    assert!(set.status.success(), "{}", stderr(&set));
    assert!(stdout(&set).starts_with("history_revisions: 10000 (default) -> 2 (revision "));
    // Read through another node: the meta range's value, linearizably.
    assert_eq!(stdout(&cli(&three, &["admin", "config", "get", "history_revisions"])), "2\n");
    let status = wait_history(&three, Value::from(2));
    assert_eq!(status["nodes"].as_array().map(Vec::len), Some(3), "{status}");
    // History 2: of six versions, those more than two revisions below the newest are
    // compacted away on every replica; the newest three are still readable.
    let revisions: Vec<u64> = (1..=6).map(|i| put(&three, "k", &format!("v{i}"))).collect();
    let old = cli(&one, &["get", "k", "--revision", &revisions[0].to_string()]);
    assert_eq!(old.status.code(), Some(1), "{}", stdout(&old));
    assert!(stderr(&old).contains("is not available"), "{}", stderr(&old));
    let recent = cli(&one, &["get", "k", "--revision", &revisions[4].to_string()]);
    assert_eq!(recent.stdout, b"v5", "{}", stderr(&recent));
    // All history from now on: versions written after it stay readable.
    let set = cli(&three, &["admin", "config", "set", "history_revisions", "all", "-w", "json"]);
    let answer = json(&set);
    assert_eq!((&answer["old"], &answer["new"]), (&Value::from(2), &Value::from("all")));
    wait_history(&one, Value::from("all"));
    let kept: Vec<u64> = (1..=6).map(|i| put(&one, "j", &format!("w{i}"))).collect();
    let first = cli(&three, &["get", "j", "--revision", &kept[0].to_string()]);
    assert_eq!(first.stdout, b"w1", "{}", stderr(&first));
    // A node-wide setting: every node applies it (it says so), no restart.
    let set = cli(&cluster.endpoints_flag(), &["admin", "config", "set", "snapshot_entries", "5"]);
    assert!(
        stdout(&set).contains("unset (each node's --snapshot-entries) -> 5"),
        "{}",
        stdout(&set)
    );
    let applied = "cluster setting snapshot_entries is 5";
    for _ in 0..100 {
        if cluster
            .servers
            .values()
            .all(|s| std::fs::read_to_string(&s.log).is_ok_and(|log| log.contains(applied)))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for server in cluster.servers.values() {
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        assert!(log.contains(applied), "node {} did not apply it:\n{log}", server.id);
    }
    // Persisted: a restarted node reads the settings from its meta replica.
    assert_eq!(cluster.terminate(3).code(), Some(0));
    let log = cluster.servers[&3].log.clone();
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    cluster.start_node(3);
    cluster.wait_serving(3);
    let list = json(&cli(&three, &["admin", "config", "list", "-w", "json"]));
    let values: Vec<&Value> =
        list["settings"].as_array().unwrap().iter().map(|s| &s["value"]).collect();
    // range_max_bytes never set: null, with its default beside it.
    assert_eq!(values, [&Value::from("all"), &Value::from(5), &Value::Null], "{list}");
    assert_eq!(list["settings"][2]["default"], Value::from(64u64 << 20), "{list}");
    let restarted = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        restarted[before..].contains("cluster setting history_revisions is all"),
        "{restarted}"
    );
}

#[test]
fn bad_setting_names_and_values_and_reserved_writes_are_usage_errors() {
    let cluster = Cluster::start(1, &[]);
    let cases: [(&[&str], &str); 8] = [
        (&["admin", "config", "set", "history", "5"], "unknown setting \"history\""),
        (
            &["admin", "config", "get", "nope"],
            "the settings are: history_revisions, snapshot_entries",
        ),
        (&["admin", "config", "set", "history_revisions", "ten"], "expected a number of revisions"),
        (&["admin", "config", "set", "history_revisions", "-1"], "expected a number of revisions"),
        (&["admin", "config", "set", "snapshot_entries", "0"], "at least 1"),
        (&["admin", "meta", "get", "user-key"], "is not under \"_/\""),
        (&["admin", "meta", "list", "a"], "is not under \"_/\""),
        (&["put", "_/cluster/config/history_revisions", "1"], "reserved"),
    ];
    for (args, expected) in cases {
        let output = cluster.cli(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{args:?}: {}", stderr(&output));
        assert!(!stderr(&output).contains("panicked"), "{args:?}: {}", stderr(&output));
    }
    // Nothing was written.
    let list = json(&cluster.cli(&["admin", "config", "list", "-w", "json"]));
    assert!(list["settings"].as_array().unwrap().iter().all(|s| s["value"].is_null()), "{list}");
}

#[test]
fn write_out_json_is_one_parseable_object_per_command() {
    let cluster = Cluster::start(1, &[]);
    let put = json(&cluster.cli(&["-w", "json", "put", "a", "1"]));
    let revision = put["revision"].as_u64().expect("revision");
    let get = json(&cluster.cli(&["get", "a", "--write-out", "json"]));
    assert_eq!(get["count"], 1);
    assert_eq!(get["kvs"][0]["key"], "YQ==");
    assert_eq!(get["kvs"][0]["value"], "MQ==");
    assert_eq!(get["kvs"][0]["revision"], revision);
    let missing = cluster.cli(&["get", "nope", "-w", "json"]);
    assert_eq!(missing.status.code(), Some(3));
    assert_eq!(json(&missing)["count"], 0);
    cluster.cli(&["put", "b", "2"]);
    // `range` is `scan`.
    for command in ["scan", "range"] {
        let kvs = json(&cluster.cli(&[command, "a", "", "-w", "json"]));
        assert_eq!(kvs["count"], 2, "{command}: {kvs}");
    }
    assert_eq!(stdout(&cluster.cli(&["range", "a", "b"])), "a\t1\n");
    let batch = json(&cluster.cli(&["-w", "json", "batch", "put", "c", "3", "d", "4"]));
    assert_eq!(batch["keys"], 2);
    let deleted = json(&cluster.cli(&["-w", "json", "delete", "b"]));
    assert_eq!(deleted["deleted"], true);
    let status = json(&cluster.cli(&["-w", "json", "status"]));
    assert_eq!(status["ranges"].as_array().map(Vec::len), Some(6), "{status}");
    assert_eq!(status["nodes"][0]["up"], true);
    let admin = json(&cluster.cli(&["-w", "json", "admin", "cluster", "status"]));
    assert!(admin["cluster"].as_str().is_some_and(|id| id.len() == 16), "{admin}");
    let meta = json(&cluster.cli(&["-w", "json", "admin", "meta", "list", "_/range/"]));
    assert_eq!(meta["count"], 6, "{meta}");
    let one =
        json(&cluster.cli(&["-w", "json", "admin", "meta", "get", "_/range/0000000000000001"]));
    assert_eq!(one["count"], 1, "{one}");
    let setting =
        json(&cluster.cli(&["-w", "json", "admin", "config", "get", "history_revisions"]));
    assert_eq!((&setting["value"], &setting["default"]), (&Value::Null, &Value::from(10000)));
    // etcdctl's transaction syntax: `-w json` as `--json`.
    let txn = std::process::Command::new(BIN)
        .args(["--endpoints", &cluster.endpoints_flag(), "-w", "json", "txn"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"value(\"a\") = \"1\"\n\nput a 2\n\n\n")?;
            child.wait_with_output()
        })
        .expect("run txn");
    assert_eq!(json(&txn)["succeeded"], true, "{}", stdout(&txn));
    // Text output is unchanged without the flag.
    assert_eq!(stdout(&cluster.cli(&["put", "e", "5"])).split(' ').next(), Some("OK"));
    let nodes = json(&cluster.cli(&["-w", "json", "node", "list"]));
    assert_eq!(nodes["members"][0]["id"], 1, "{nodes}");
    assert_eq!(nodes["members"][0]["up"], true, "{nodes}");
    assert_eq!(nodes["cluster"], admin["cluster"], "{nodes}");
    // A backup and its restore, each one object with the manifest.
    let dir = tempfile::tempdir().expect("temporary directory");
    let into = dir.path().join("backup");
    let backup = json(&cluster.cli(&["-w", "json", "admin", "backup", "create", path(&into)]));
    assert_eq!(backup["manifest"]["ranges"].as_array().map(Vec::len), Some(6), "{backup}");
    assert!(backup["keys"].as_u64().is_some_and(|keys| keys >= 4), "{backup}");
    let data = dir.path().join("restored");
    let restore = ["-w", "json", "admin", "backup", "restore", path(&into), "--data-dir"];
    let staged = json(&cluster.cli(&[&restore[..], &[path(&data)]].concat()));
    assert_eq!(staged["manifest"]["backup"], backup["manifest"]["backup"], "{staged}");
}

fn path(path: &std::path::Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}
