#![cfg(not(madsim))] // Real processes and sockets: `cargo sim` skips this target.
//! The operator's surface on real `rangedb server` processes: logs, and the HTTP
//! listener (`--http-addr`: /health, /ready, /metrics).

mod support;

use std::process::Command;

use support::*;

/// `--log-format json`: every line the server writes is one JSON object with a
/// timestamp, a level and a message, and the events carry their fields.
#[test]
fn json_logs_are_one_object_per_line_with_level_timestamp_and_fields() {
    let mut cluster = Cluster::start(1, &["--log-format", "json", "--log-level", "debug"]);
    let output = cluster.cli(&["put", "k", "v"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(cluster.terminate(1).code(), Some(0));
    let log = std::fs::read_to_string(&cluster.servers[&1].log).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "start, shutdown and stop lines at least:\n{log}");
    for line in &lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let timestamp = object["timestamp"].as_str().unwrap_or_else(|| panic!("{line}"));
        assert!(timestamp.len() >= 20 && timestamp.ends_with('Z'), "RFC 3339 UTC: {line}");
        let level = object["level"].as_str().unwrap_or_else(|| panic!("{line}"));
        assert!(["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level), "{line}");
        assert!(object["message"].is_string(), "{line}");
    }
    let listening = lines
        .iter()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|o| o["message"].as_str().is_some_and(|m| m.contains("listening on")))
        .unwrap_or_else(|| panic!("no listening line:\n{log}"));
    assert_eq!(listening["node"], 1, "the node id is a field: {listening}");
    assert_eq!(listening["level"], "INFO");
}

/// `--log-level warn` leaves out the info lines; a bad level or format is a usage
/// error that names the choices.
#[test]
fn the_log_level_filters_and_bad_log_flags_are_usage_errors() {
    let mut cluster = Cluster::start_unchecked(1, &["--log-level", "warn"]);
    wait_listening(&cluster.servers[&1].address);
    let output = cluster.cli(&["put", "k", "v"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(cluster.terminate(1).code(), Some(0));
    let log = std::fs::read_to_string(&cluster.servers[&1].log).unwrap();
    assert!(!log.contains("INFO") && !log.contains("listening on"), "{log}");

    for (flag, value, expected) in [
        ("--log-level", "loud", "expected error, warn, info, debug, trace or off"),
        ("--log-format", "xml", "expected text or json"),
    ] {
        let output = Command::new(BIN).args(["server", flag, value]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    }
}
