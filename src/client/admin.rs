//! `rangedb admin`: the runtime settings (`config`), rangedb's own keys under `_/`
//! (`meta`, read-only), and the JSON forms of what the CLI and the HTTP API print
//! (`-w json`, `/v1/status`), kept here so both print the same.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::json;

use crate::range::descriptor::{RangeDescriptor, RESERVED_END, RESERVED_PREFIX};
use crate::range::kv::KeyValue;
use crate::range::settings::{ClusterSettings, Setting, CONFIG_END, CONFIG_PREFIX};
use crate::wire::{ReadConsistency, Request, Response};

use super::{unexpected, Client, ClientError, Kind};

impl Client {
    /// Writes the runtime setting `name` (checked by the node too) through the meta
    /// range's Raft log; returns the revision it was applied at. Every node applies it
    /// without a restart (range/settings.rs).
    ///
    /// # Errors
    /// `Invalid` for an unknown setting or a bad value; as `put` otherwise.
    pub async fn config_set(&self, name: &str, value: &str) -> Result<u64, ClientError> {
        let setting = Setting::parse(name).map_err(invalid)?;
        setting.parse_value(value).map_err(invalid)?;
        let request = Request::ConfigSet {
            name: name.to_string(),
            value: value.to_string(),
            request_id: self.next_request_id(),
        };
        match self.execute(&setting.key(), request, Kind::Write, self.deadline()).await? {
            Response::Put { revision } => Ok(revision),
            other => Err(unexpected("ConfigSet", &other)),
        }
    }

    /// The runtime settings as the meta range holds them, read linearizably.
    ///
    /// # Errors
    /// As `get`; `Protocol` for a stored setting this version cannot read.
    pub async fn config(&self) -> Result<ClusterSettings, ClientError> {
        let kvs = self.meta_scan(CONFIG_PREFIX, CONFIG_END, 0).await?;
        let items = kvs.iter().map(|kv| (kv.key.as_slice(), kv.value.as_slice(), kv.revision));
        ClusterSettings::from_meta(items)
            .map_err(|error| ClientError::Protocol { reason: error.to_string() })
    }

    /// rangedb's own keys in `[start, end)`, both under `_/` (`end` past the last one:
    /// `RESERVED_END`), at most `limit` (0: all), read linearizably.
    ///
    /// # Errors
    /// `Invalid` for bounds outside `_/`; as `get` otherwise.
    pub async fn meta_scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u64,
    ) -> Result<Vec<KeyValue>, ClientError> {
        check_meta_key(start)?;
        let request = Request::MetaScan { start: start.to_vec(), end: end.to_vec(), limit };
        match self.execute(RESERVED_PREFIX, request, Kind::Read, self.deadline()).await? {
            Response::Scan { kvs, .. } => Ok(kvs),
            other => Err(unexpected("MetaScan", &other)),
        }
    }

    /// The keys under `prefix` (which must start with `_/`).
    ///
    /// # Errors
    /// As `meta_scan`.
    pub async fn meta_list(&self, prefix: &[u8], limit: u64) -> Result<Vec<KeyValue>, ClientError> {
        check_meta_key(prefix)?;
        let end = prefix_end(prefix).unwrap_or_else(|| RESERVED_END.to_vec());
        let end = end.min(RESERVED_END.to_vec());
        self.meta_scan(prefix, &end, limit).await
    }

    /// One of rangedb's own keys, read linearizably.
    ///
    /// # Errors
    /// `Invalid` for a key outside `_/`; as `get` otherwise.
    pub async fn meta_get(&self, key: &[u8]) -> Result<Option<KeyValue>, ClientError> {
        check_meta_key(key)?;
        let consistency = ReadConsistency::Linearizable;
        let request = Request::Get { key: key.to_vec(), revision: None, consistency };
        match self.execute(key, request, Kind::Read, self.deadline()).await? {
            Response::Get { kv, .. } => Ok(kv),
            other => Err(unexpected("Get", &other)),
        }
    }
}

impl Client {
    /// Splits the range holding `key` at `key` (`rangedb admin split`): the meta
    /// range's leader plans it, then this waits until a replica of the new range has
    /// a leader (the split applied) or the deadline passes. Returns the two
    /// descriptors. A split already made at `key` answers with them at once.
    ///
    /// # Errors
    /// `Invalid` for a key at a range's start, inside `_/` or not valid; as `put`
    /// otherwise; `Unavailable` when the split was planned but not seen applied in
    /// time (it completes on its own).
    pub async fn split(
        &self,
        key: &[u8],
    ) -> Result<(RangeDescriptor, RangeDescriptor), ClientError> {
        crate::range::keys::validate_key(key)
            .map_err(|error| ClientError::Invalid { reason: error.to_string() })?;
        let request = Request::Split { key: key.to_vec() };
        let deadline = self.deadline();
        let (left, right) =
            match self.execute(RESERVED_PREFIX, request, Kind::Read, deadline).await? {
                Response::Split { left, right } => (*left, *right),
                other => return Err(unexpected("Split", &other)),
            };
        loop {
            let status = self.status().await;
            let applied = status.ranges().iter().any(|range| {
                range.descriptor.id == right.id
                    && range.leader.is_some()
                    && range.descriptor.generation >= right.generation
            });
            if applied {
                self.routes().mark_stale();
                return Ok((left, right));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Unavailable {
                    reason: format!(
                        "the split of {} at {:?} is planned ({}) but not applied yet; it \
                         completes on its own",
                        left.id,
                        String::from_utf8_lossy(key),
                        right.id
                    ),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

fn invalid(error: crate::range::settings::SettingError) -> ClientError {
    ClientError::Invalid { reason: error.to_string() }
}

/// Refuses a key outside the reserved prefix `_/` (admin reads are of those only).
///
/// # Errors
/// `Invalid`, saying so.
pub fn check_meta_key(key: &[u8]) -> Result<(), ClientError> {
    if key.starts_with(RESERVED_PREFIX) {
        return Ok(());
    }
    Err(ClientError::Invalid {
        reason: format!(
            "{:?} is not under \"_/\" (admin meta reads rangedb's own keys; use get and scan \
             for the others)",
            String::from_utf8_lossy(key)
        ),
    })
}

/// The first key after every key starting with `prefix` (None: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A key-value as JSON: key and value in base64 (standard alphabet, padded), as in
/// etcd's JSON gateway and `/v1/kv`.
pub fn kv_json(kv: &KeyValue) -> serde_json::Value {
    json!({
        "key": BASE64.encode(&kv.key),
        "value": BASE64.encode(&kv.value),
        "revision": kv.revision,
    })
}

/// Key-values as `{"count": n, "kvs": [...]}`.
pub fn kvs_json(kvs: &[KeyValue]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = kvs.iter().map(kv_json).collect();
    json!({"count": list.len(), "kvs": list})
}

/// What `rangedb status` prints, as JSON (also `GET /v1/status` and `rangedb admin
/// cluster status -w json`): the cluster id; per range (the view of its leader, else
/// the most advanced replica) its bounds (base64, and escaped as text), leader (null:
/// none known), term, commit, applied, voters, learners and settings; per node its
/// address, id and whether it answered (else the error).
pub fn status_json(status: &super::ClusterStatus) -> serde_json::Value {
    let bytes = |key: &[u8]| json!({"base64": BASE64.encode(key), "text": super::escape(key)});
    let ranges: Vec<serde_json::Value> = status
        .ranges()
        .iter()
        .map(|range| {
            let descriptor = &range.descriptor;
            json!({
                "range": descriptor.id.0,
                "start": bytes(&descriptor.start),
                "end": descriptor.end.as_deref().map(bytes),
                "generation": descriptor.generation,
                "keys": range.keys,
                "bytes": range.bytes,
                "leader": range.leader.map(|leader| leader.0),
                "term": range.term,
                "commit": range.commit,
                "applied": range.applied,
                "voters": range.voters.iter().map(|n| n.0).collect::<Vec<_>>(),
                "learners": range.learners.iter().map(|n| n.0).collect::<Vec<_>>(),
                "history_revisions": setting_json(
                    Setting::HistoryRevisions,
                    range.settings.history_revisions
                ),
                "settings_revision": range.settings.config_revision,
            })
        })
        .collect();
    let nodes: Vec<serde_json::Value> = status
        .nodes
        .iter()
        .map(|node| match &node.status {
            Ok(own) => json!({"address": node.address, "node": own.node.0, "up": true}),
            Err(reason) => json!({
                "address": node.address,
                "node": status.id_of(&node.address).map(|id| id.0),
                "up": false,
                "error": reason,
            }),
        })
        .collect();
    let cluster = status.cluster().map(|id| format!("{id:016x}"));
    json!({"cluster": cluster, "ranges": ranges, "nodes": nodes})
}

/// A range descriptor in JSON: id, span (keys as in `kv_json`), generation, replicas.
pub fn descriptor_json(descriptor: &RangeDescriptor) -> serde_json::Value {
    let bytes = |key: &[u8]| json!({"base64": BASE64.encode(key), "text": super::escape(key)});
    json!({
        "range": descriptor.id.0,
        "start": bytes(&descriptor.start),
        "end": descriptor.end.as_deref().map(bytes),
        "generation": descriptor.generation,
        "replicas": descriptor.replicas.iter().map(|n| n.0).collect::<Vec<_>>(),
    })
}

/// A setting's value in JSON: a number, or "all".
pub fn setting_json(setting: Setting, value: u64) -> serde_json::Value {
    if setting == Setting::RangeMaxBytes {
        return json!(value); // Bytes, as a number (the text form says "64MiB").
    }
    match setting.format_value(value).parse::<u64>() {
        Ok(number) => json!(number),
        Err(_) => json!(setting.format_value(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_and_meta_keys() {
        assert_eq!(prefix_end(b"_/range/"), Some(b"_/range0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert!(check_meta_key(b"_/cluster").is_ok());
        let error = check_meta_key(b"user-key").unwrap_err().to_string();
        assert!(error.contains("not under \"_/\""), "{error}");
    }

    #[test]
    fn settings_in_json_are_numbers_or_all() {
        assert_eq!(setting_json(Setting::HistoryRevisions, 5), json!(5));
        assert_eq!(setting_json(Setting::HistoryRevisions, u64::MAX), json!("all"));
    }
}
