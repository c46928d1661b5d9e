//! The CLI's flag parsers (`rangedb::cli_parse`): what they accept round-trips from
//! a model of the flag, and anything else is an error, not a panic.

use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;

use rangedb::cli_parse::{parse_duration, parse_peers, parse_split_keys};

proptest! {
    #![proptest_config(crate::config("cli", 512))]

    #[test]
    fn durations_in_every_unit(value in 1u64..1_000_000, unit in 0usize..4) {
        let (text, expected) = match unit {
            0 => (format!("{value}"), Duration::from_millis(value)),
            1 => (format!("{value}ms"), Duration::from_millis(value)),
            2 => (format!(" {value} s "), Duration::from_secs(value)),
            _ => (format!("{value}m"), Duration::from_secs(value * 60)),
        };
        prop_assert_eq!(parse_duration(&text), Ok(expected));
    }

    #[test]
    fn any_text_parses_to_a_positive_duration_or_an_error(text in "[0-9.]{0,14}[a-z ]{0,3}") {
        if let Ok(duration) = parse_duration(&text) {
            prop_assert!(!duration.is_zero(), "{:?} parsed as zero", text);
        }
    }

    #[test]
    fn peers_round_trip(
        peers in proptest::collection::btree_map(1u64.., ("[a-z0-9.]{1,12}", any::<u16>()), 1..6)
    ) {
        let entries: Vec<String> =
            peers.iter().map(|(id, (host, port))| format!("{id}={host}:{port}")).collect();
        let parsed = parse_peers(&entries).unwrap();
        prop_assert_eq!(parsed.len(), peers.len());
        for (id, (host, port)) in &peers {
            prop_assert_eq!(&parsed[&rangedb::raft::NodeId(*id)], &format!("{host}:{port}"));
        }
    }

    #[test]
    fn any_peer_text_parses_or_errs(entries in vec("[0-9a-z=:. ]{0,10}", 0..4)) {
        if let Ok(peers) = parse_peers(&entries) {
            prop_assert_eq!(peers.len(), entries.len());
        }
    }

    #[test]
    fn split_keys_accepted_iff_sorted_valid(keys in vec("[_/a-c]{0,3}", 0..5)) {
        let valid = keys.iter().all(|k| !k.is_empty() && !k.starts_with("_/"))
            && keys.windows(2).all(|pair| pair[0] < pair[1]);
        prop_assert_eq!(parse_split_keys(&keys).is_ok(), valid, "{:?}", keys);
    }
}
