//! Parsers for the text the `rangedb` command line takes (durations, `--peers`,
//! `--split-keys`), in the library so they can be tested and fuzzed; `rangedb.rs`
//! calls them and wraps their errors for the user.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::client::{check_key, escape};
use crate::raft::NodeId;

/// A flag's text is not valid; the message names the flag's text and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FlagError(pub String);

fn flag_error<T>(message: String) -> Result<T, FlagError> {
    Err(FlagError(message))
}

/// Parses `5s`, `1.5s`, `500ms`, `2m` or a bare number of milliseconds.
///
/// # Errors
/// A malformed number, an unknown unit, or a duration that is not positive (zero
/// after rounding to nanoseconds included) or not below 10^9 seconds.
pub fn parse_duration(text: &str) -> Result<Duration, FlagError> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let Ok(number) = number.parse::<f64>() else {
        return flag_error(format!("`{text}` is not a duration like 5s or 500ms"));
    };
    let seconds = match unit.trim() {
        "" | "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        other => return flag_error(format!("unknown unit `{other}` in `{text}` (use ms, s or m)")),
    };
    if !(seconds > 0.0 && seconds < 1e9) {
        return flag_error(format!("`{text}` must be a positive duration"));
    }
    let duration = Duration::from_secs_f64(seconds);
    // Below a nanosecond the conversion rounds to zero, which is not positive.
    if duration.is_zero() {
        return flag_error(format!("`{text}` must be a positive duration"));
    }
    Ok(duration)
}

/// Parses `--peers` entries `id=host:port`.
///
/// # Errors
/// An entry without `=`, a non-numeric or zero id, a bad address, or an id twice.
pub fn parse_peers(entries: &[String]) -> Result<BTreeMap<NodeId, String>, FlagError> {
    let mut peers = BTreeMap::new();
    for entry in entries {
        let Some((id, address)) = entry.split_once('=') else {
            return flag_error(format!("--peers entry `{entry}` is not of the form id=host:port"));
        };
        let Ok(id) = id.trim().parse::<u64>() else {
            return flag_error(format!("--peers entry `{entry}`: `{id}` is not a node id"));
        };
        if id == 0 {
            return flag_error(format!("--peers entry `{entry}`: node ids start at 1"));
        }
        let address = address.trim().to_string();
        if let Err(FlagError(reason)) = check_address(&address) {
            return flag_error(format!("--peers entry `{entry}`: {reason}"));
        }
        if peers.insert(NodeId(id), address).is_some() {
            return flag_error(format!("--peers lists node id {id} twice"));
        }
    }
    Ok(peers)
}

/// Accepts `host:port` with a numeric port (the host is resolved when connecting).
///
/// # Errors
/// No `:`, an empty host, or a port that is not a u16.
pub fn check_address(address: &str) -> Result<(), FlagError> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return flag_error(format!("`{address}` is not of the form host:port"));
    };
    if host.is_empty() {
        return flag_error(format!("`{address}` has no host"));
    }
    if port.parse::<u16>().is_err() {
        return flag_error(format!("`{address}`: `{port}` is not a port number"));
    }
    Ok(())
}

/// Parses `--http-addr`: `host:port`, or a port alone (`7070` or `:7070`), which
/// means loopback (`127.0.0.1:7070`): the listener is reachable from other hosts only
/// when a host says so.
///
/// # Errors
/// Not a port, nor host:port.
pub fn parse_http_address(text: &str) -> Result<String, FlagError> {
    let port = text.strip_prefix(':').unwrap_or(text);
    if port.parse::<u16>().is_ok() {
        return Ok(format!("127.0.0.1:{port}"));
    }
    check_address(text)?;
    Ok(text.to_string())
}

/// Parses `--split-keys`: valid keys in strictly increasing order.
///
/// # Errors
/// An empty or reserved key, or keys out of order or repeated.
pub fn parse_split_keys(keys: &[String]) -> Result<Vec<Vec<u8>>, FlagError> {
    let keys: Vec<Vec<u8>> = keys.iter().map(|key| key.as_bytes().to_vec()).collect();
    for key in &keys {
        if let Err(error) = check_key(key) {
            return flag_error(format!("--split-keys `{}`: {error}", escape(key)));
        }
    }
    if keys.windows(2).any(|pair| pair[0] >= pair[1]) {
        return flag_error("--split-keys must be in increasing order without repeats".to_string());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_address_alone_is_a_loopback_port() {
        assert_eq!(parse_http_address("7070").unwrap(), "127.0.0.1:7070");
        assert_eq!(parse_http_address(":7070").unwrap(), "127.0.0.1:7070");
        assert_eq!(parse_http_address("0.0.0.0:80").unwrap(), "0.0.0.0:80");
        assert!(parse_http_address("70700").is_err());
        assert!(parse_http_address("localhost").is_err());
        assert!(parse_http_address("host:port").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration(" 500ms "), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        for bad in ["", "s", "0s", "-1s", "1h", "1e3", ".", "1..2s", "2000000000s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Regression (found while writing the CLI property test): a number below a
    /// nanosecond was accepted as a zero duration.
    #[test]
    fn sub_nanosecond_duration_is_refused() {
        assert!(parse_duration("0.0000000001ms").is_err());
        assert!(parse_duration("0.0000000001").is_err());
    }

    #[test]
    fn peers_and_split_keys() {
        let peers = parse_peers(&["1=a:1".into(), " 2 = b:2 ".into()]).unwrap();
        assert_eq!(peers[&NodeId(2)], "b:2");
        for bad in ["1", "0=a:1", "x=a:1", "1=a", "1=:1", "1=a:70000"] {
            assert!(parse_peers(&[bad.to_string()]).is_err(), "{bad:?} accepted");
        }
        assert!(parse_peers(&["1=a:1".into(), "1=b:2".into()]).is_err());
        assert_eq!(parse_split_keys(&["a".into(), "b".into()]).unwrap().len(), 2);
        assert!(parse_split_keys(&["b".into(), "a".into()]).is_err());
        assert!(parse_split_keys(&["".into()]).is_err());
        assert!(parse_split_keys(&["_/x".into()]).is_err());
    }
}
