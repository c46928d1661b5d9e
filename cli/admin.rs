//! `rangedb admin ...`: cluster status, runtime settings, rangedb's own keys, backups.
//!
//! Each area of `Admin` (rangedb.rs) has one function here; a new area (for example
//! `backup`) is one more variant and one more function.

use std::ffi::OsString;

use anyhow::Context;
use serde_json::json;

use rangedb::client::{escape, setting_json, Client, ClusterStatus};
use rangedb::range::descriptor::{RangeDescriptor, DESCRIPTOR_PREFIX};
use rangedb::range::settings::{ClusterSettings, Setting, CONFIG_PREFIX};

use super::{
    client_result, print_json, print_table, usage_error, Admin, BackupCommand, ClusterCommand,
    ConfigCommand, MetaCommand, EXIT_ERROR, EXIT_NOT_FOUND,
};

pub async fn run(client: &Client, command: &Admin, json: bool) -> anyhow::Result<u8> {
    match command {
        Admin::Cluster { command: ClusterCommand::Status } => cluster_status(client, json).await,
        Admin::Config { command } => config(client, command, json).await,
        Admin::Meta { command } => meta(client, command, json).await,
        Admin::Backup { command } => backup(client, command, json).await,
        Admin::Split { key } => split(client, key, json).await,
    }
}

/// `admin split KEY`: the range holding KEY splits there; prints both halves.
async fn split(client: &Client, key: &OsString, json: bool) -> anyhow::Result<u8> {
    let key = super::key_arg(key);
    let (left, right) = client_result(client.split(&key).await)?;
    if json {
        print_json(&json!({
            "left": rangedb::client::descriptor_json(&left),
            "right": rangedb::client::descriptor_json(&right),
        }))?;
    } else {
        let row = |d: &RangeDescriptor| {
            [
                d.id.to_string(),
                escape(&d.start),
                d.end.as_deref().map_or_else(|| "∞".to_string(), escape),
                d.generation.to_string(),
            ]
        };
        print_table(&[
            ["RANGE".into(), "START".into(), "END".into(), "GENERATION".into()],
            row(&left),
            row(&right),
        ]);
    }
    Ok(0)
}

/// `admin backup create DIR` / `restore DIR --data-dir D` (src/cli_backup.rs); with
/// `-w json` one object: the summary with the manifest.
async fn backup(client: &Client, command: &BackupCommand, json: bool) -> anyhow::Result<u8> {
    match command {
        BackupCommand::Create { dir, hold } => {
            rangedb::cli_backup::create(client, dir, *hold, json).await?;
        }
        BackupCommand::Restore { dir, data_dir } => {
            rangedb::cli_backup::restore(dir, data_dir, json)?;
        }
    }
    Ok(0)
}

/// `admin cluster status`: what `rangedb status` gathers (`Client::status`), shown
/// per member and per range.
async fn cluster_status(client: &Client, json: bool) -> anyhow::Result<u8> {
    let status = client.status().await;
    let any_up = status.nodes.iter().any(|node| node.status.is_ok());
    if json {
        print_json(&rangedb::client::status_json(&status))?;
    } else {
        print_cluster(&status);
    }
    Ok(if any_up { 0 } else { EXIT_ERROR })
}

fn print_cluster(status: &ClusterStatus) {
    match status.cluster() {
        Some(cluster) => println!("cluster {cluster:016x}"),
        None => println!("cluster unknown (no node answered)"),
    }
    println!();
    let ranges = status.ranges();
    let mut rows = vec![["NODE", "ADDRESS", "STATE", "LEADS"].map(String::from)];
    for node in &status.nodes {
        let id = status.id_of(&node.address).map_or("?".to_string(), |id| id.to_string());
        let (state, leads) = match &node.status {
            Ok(own) => {
                let leads = ranges.iter().filter(|range| range.leader == Some(own.node)).count();
                ("up".to_string(), leads.to_string())
            }
            Err(reason) => (format!("down ({reason})"), "-".to_string()),
        };
        rows.push([id, node.address.clone(), state, leads]);
    }
    print_table(&rows);
    println!();
    let mut rows = vec![
        ["RANGE", "START", "END", "LEADER", "REPLICAS", "APPLIED", "HISTORY"].map(String::from)
    ];
    for range in &ranges {
        let descriptor = &range.descriptor;
        let mut replicas: Vec<String> = range.voters.iter().map(ToString::to_string).collect();
        replicas.extend(range.learners.iter().map(|n| format!("{n}(l)")));
        rows.push([
            descriptor.id.to_string(),
            format!("\"{}\"", escape(&descriptor.start)),
            descriptor
                .end
                .as_deref()
                .map_or("(end)".to_string(), |end| format!("\"{}\"", escape(end))),
            range.leader.map_or("none".to_string(), |leader| leader.to_string()),
            replicas.join(","),
            range.applied.to_string(),
            Setting::HistoryRevisions.format_value(range.settings.history_revisions),
        ]);
    }
    print_table(&rows);
}

/// A setting from the command line, or exit 2 naming the known ones.
fn setting_arg(name: &str) -> Setting {
    Setting::parse(name).unwrap_or_else(|error| usage_error(&error.to_string()))
}

/// A setting's value as shown: the cluster's, or what applies while it is unset.
fn shown(settings: &ClusterSettings, setting: Setting) -> String {
    match (settings.get(setting), setting) {
        (Some(set), _) => setting.format_value(set.value),
        (None, Setting::HistoryRevisions) => {
            format!("{} (default)", setting.format_value(rangedb::range::kv::HISTORY_REVISIONS))
        }
        (None, Setting::SnapshotEntries) => "unset (each node's --snapshot-entries)".to_string(),
        (None, Setting::RangeMaxBytes) => format!(
            "{} (default)",
            setting.format_value(rangedb::range::settings::RANGE_MAX_BYTES_DEFAULT)
        ),
    }
}

/// A setting as JSON: `value` (a number, "all", or null while unset), `revision` (of
/// the meta range write; null while unset) and `default`.
fn setting_object(settings: &ClusterSettings, setting: Setting) -> serde_json::Value {
    let set = settings.get(setting);
    let default = match setting {
        Setting::HistoryRevisions => setting_json(setting, rangedb::range::kv::HISTORY_REVISIONS),
        Setting::SnapshotEntries => serde_json::Value::Null,
        Setting::RangeMaxBytes => {
            setting_json(setting, rangedb::range::settings::RANGE_MAX_BYTES_DEFAULT)
        }
    };
    json!({
        "name": setting.name(),
        "value": set.map(|set| setting_json(setting, set.value)),
        "revision": set.map(|set| set.revision),
        "default": default,
    })
}

async fn config(client: &Client, command: &ConfigCommand, json: bool) -> anyhow::Result<u8> {
    match command {
        ConfigCommand::Get { key } => {
            let setting = setting_arg(key);
            let settings = client_result(client.config().await)?;
            if json {
                print_json(&setting_object(&settings, setting))?;
            } else {
                println!("{}", shown(&settings, setting));
            }
        }
        ConfigCommand::List => {
            let settings = client_result(client.config().await)?;
            if json {
                let list: Vec<_> =
                    Setting::ALL.iter().map(|&s| setting_object(&settings, s)).collect();
                print_json(&json!({ "settings": list }))?;
            } else {
                let mut rows = vec![["NAME", "VALUE", "REVISION", "WHAT"].map(String::from)];
                for setting in Setting::ALL {
                    let revision =
                        settings.get(setting).map_or("-".into(), |s| s.revision.to_string());
                    let name = setting.name().to_string();
                    rows.push([name, shown(&settings, setting), revision, setting.help().into()]);
                }
                print_table(&rows);
            }
        }
        ConfigCommand::Set { key, value } => {
            let setting = setting_arg(key);
            if let Err(error) = setting.parse_value(value) {
                usage_error(&error.to_string());
            }
            let before = client_result(client.config().await)?;
            let revision = client_result(client.config_set(key, value).await)?;
            let old = shown(&before, setting);
            let new = setting.format_value(setting.parse_value(value).context("checked above")?);
            if json {
                let old = setting_object(&before, setting);
                print_json(&json!({
                    "name": setting.name(),
                    "old": old["value"],
                    "new": setting_json(setting, setting.parse_value(value).context("checked")?),
                    "revision": revision,
                }))?;
            } else {
                println!("{}: {old} -> {new} (revision {revision})", setting.name());
            }
        }
    }
    Ok(0)
}

/// A meta value as text: descriptors decoded, settings as stored (JSON), anything
/// else escaped.
fn meta_text(key: &[u8], value: &[u8]) -> String {
    if key.starts_with(DESCRIPTOR_PREFIX) {
        let decoded = bincode::serde::decode_from_slice::<RangeDescriptor, _>(
            value,
            bincode::config::standard(),
        );
        if let Ok((d, _)) = decoded {
            let end =
                d.end.as_deref().map_or("(end)".to_string(), |end| format!("\"{}\"", escape(end)));
            let replicas: Vec<String> = d.replicas.iter().map(ToString::to_string).collect();
            return format!(
                "{} [\"{}\", {end}) generation {} replicas {}",
                d.id,
                escape(&d.start),
                d.generation,
                replicas.join(",")
            );
        }
    }
    if key.starts_with(CONFIG_PREFIX) {
        if let Ok(text) = std::str::from_utf8(value) {
            return text.to_string();
        }
    }
    escape(value)
}

async fn meta(client: &Client, command: &MetaCommand, json: bool) -> anyhow::Result<u8> {
    let arg = |key: &OsString| key.clone().into_encoded_bytes();
    match command {
        MetaCommand::List { prefix, limit } => {
            let kvs = client_result(client.meta_list(&arg(prefix), *limit).await)?;
            if json {
                print_json(&rangedb::client::kvs_json(&kvs))?;
            } else {
                for kv in &kvs {
                    println!("{}\t{}", escape(&kv.key), meta_text(&kv.key, &kv.value));
                }
            }
            Ok(0)
        }
        MetaCommand::Get { key } => {
            let key = arg(key);
            let found = client_result(client.meta_get(&key).await)?;
            let code = if found.is_some() { 0 } else { EXIT_NOT_FOUND };
            if json {
                print_json(&rangedb::client::kvs_json(found.as_slice()))?;
            } else if let Some(kv) = found {
                println!("{}", meta_text(&kv.key, &kv.value));
            } else {
                eprintln!("key not found: {}", escape(&key));
            }
            Ok(code)
        }
    }
}
