//! Runtime settings of the cluster (`rangedb admin config`): what they are called,
//! which values they take, how they are stored in the meta range, and the part of
//! them each range's state machine holds.
//!
//! ```text
//!  admin config set ──► meta range: Put _/cluster/config/<name> (through Raft)
//!        every node, applying it ──► ClusterSettings (node tuning: snapshot_entries)
//!        each range's leader ──► WriteOp::Settings(RangeSettings) in its own log
//!              every replica, applying it ──► KvStore history at that same index
//! ```
//!
//! A setting that shapes replicated state (the history a range keeps decides which
//! versions its sweep drops) reaches each range through that range's own log, so
//! every replica changes it at the same index; one that only tunes a node (when it
//! snapshots) is applied by each node when its meta replica applies the write.

use serde::{Deserialize, Serialize};

use crate::range::kv::HISTORY_REVISIONS;

/// Where the settings live in the meta range: `_/cluster/config/<name>`.
pub const CONFIG_PREFIX: &[u8] = b"_/cluster/config/";
/// The key just after every setting's.
pub const CONFIG_END: &[u8] = b"_/cluster/config0";

/// A runtime setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Setting {
    /// Revisions of history each range keeps readable below its newest (`get
    /// --revision`); "all" keeps every version.
    HistoryRevisions,
    /// A range snapshots its state machine after this many applied entries (once they
    /// also hold `snapshot_log_ratio` times the last snapshot's bytes).
    SnapshotEntries,
    /// A range whose live keys and values pass this many bytes is split in two at
    /// its middle key by the meta range's leader (0: never by size).
    RangeMaxBytes,
}

/// `range_max_bytes` when never set: 64 MiB (TiKV's regions split at 96 MiB,
/// CockroachDB's ranges at 512 MiB; smaller ranges spread sooner over few nodes).
pub const RANGE_MAX_BYTES_DEFAULT: u64 = 64 << 20;

/// Why a setting's name or value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("unknown setting {name:?}; the settings are: {known}")]
    Unknown { name: String, known: String },
    #[error("{name}: {reason}, got {value:?}")]
    BadValue { name: &'static str, value: String, reason: &'static str },
    #[error("undecodable stored setting {key}: {reason}")]
    Stored { key: String, reason: String },
}

/// The stored form of a setting's value (JSON, so that `admin meta get` shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredSetting {
    /// Bumped when the stored form changes.
    version: u32,
    value: u64,
}

const STORED_SETTING_VERSION: u32 = 1;

impl Setting {
    pub const ALL: [Setting; 3] =
        [Setting::HistoryRevisions, Setting::SnapshotEntries, Setting::RangeMaxBytes];

    pub fn name(self) -> &'static str {
        match self {
            Setting::HistoryRevisions => "history_revisions",
            Setting::SnapshotEntries => "snapshot_entries",
            Setting::RangeMaxBytes => "range_max_bytes",
        }
    }

    /// What the setting does, for `config list`.
    pub fn help(self) -> &'static str {
        match self {
            Setting::HistoryRevisions => {
                "revisions of history each range keeps (\"all\": every one)"
            }
            Setting::SnapshotEntries => "entries a range applies between two snapshots",
            Setting::RangeMaxBytes => {
                "bytes of live data at which a range splits in two (0: never; default 64MiB)"
            }
        }
    }

    /// # Errors
    /// `Unknown`, listing the settings there are.
    pub fn parse(name: &str) -> Result<Setting, SettingError> {
        Setting::ALL.into_iter().find(|setting| setting.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Setting::ALL.iter().map(|s| s.name()).collect();
            SettingError::Unknown { name: name.to_string(), known: known.join(", ") }
        })
    }

    /// The setting's meta key.
    pub fn key(self) -> Vec<u8> {
        let mut key = CONFIG_PREFIX.to_vec();
        key.extend_from_slice(self.name().as_bytes());
        key
    }

    /// Reads a value as an operator writes it.
    ///
    /// # Errors
    /// `BadValue` saying what the setting takes.
    pub fn parse_value(self, text: &str) -> Result<u64, SettingError> {
        let bad = |reason| SettingError::BadValue { name: self.name(), value: text.into(), reason };
        match self {
            Setting::HistoryRevisions if text == "all" => Ok(u64::MAX),
            Setting::HistoryRevisions => {
                text.parse().map_err(|_| bad("expected a number of revisions or \"all\""))
            }
            Setting::SnapshotEntries => match text.parse::<u64>() {
                Ok(0) => Err(bad("expected a number of entries of at least 1")),
                Ok(entries) => Ok(entries),
                Err(_) => Err(bad("expected a number of entries of at least 1")),
            },
            Setting::RangeMaxBytes => {
                parse_bytes(text).ok_or_else(|| bad("expected bytes, e.g. 65536, 512KiB, 64MiB"))
            }
        }
    }

    /// A value as `parse_value` reads it.
    pub fn format_value(self, value: u64) -> String {
        match self {
            Setting::HistoryRevisions if value == u64::MAX => "all".to_string(),
            Setting::RangeMaxBytes => format_bytes(value),
            _ => value.to_string(),
        }
    }

    /// The value stored at `key()`.
    pub fn encode(value: u64) -> Vec<u8> {
        let stored = StoredSetting { version: STORED_SETTING_VERSION, value };
        serde_json::to_vec(&stored).expect("a stored setting always encodes")
    }

    /// Reads a stored value.
    ///
    /// # Errors
    /// `Stored` for bytes that are not a stored setting of a version this reads.
    pub fn decode(self, bytes: &[u8]) -> Result<u64, SettingError> {
        let stored = |reason: String| SettingError::Stored { key: self.name().into(), reason };
        let setting: StoredSetting =
            serde_json::from_slice(bytes).map_err(|error| stored(error.to_string()))?;
        if setting.version != STORED_SETTING_VERSION {
            return Err(stored(format!(
                "stored version {}; this rangedb reads {STORED_SETTING_VERSION} (upgrade it)",
                setting.version
            )));
        }
        // Values are checked when written; a stored one is taken as it is.
        Ok(setting.value)
    }
}

/// A setting's value as the meta range holds it, and the revision (meta range index)
/// that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetValue {
    pub value: u64,
    pub revision: u64,
}

/// Every setting as the meta range holds it (None: never set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterSettings {
    pub history_revisions: Option<SetValue>,
    pub snapshot_entries: Option<SetValue>,
    pub range_max_bytes: Option<SetValue>,
}

impl ClusterSettings {
    pub fn get(&self, setting: Setting) -> Option<SetValue> {
        match setting {
            Setting::HistoryRevisions => self.history_revisions,
            Setting::SnapshotEntries => self.snapshot_entries,
            Setting::RangeMaxBytes => self.range_max_bytes,
        }
    }

    /// The size at which ranges split (None: never by size).
    pub fn range_max_bytes(&self) -> Option<u64> {
        let bytes = self.range_max_bytes.map_or(RANGE_MAX_BYTES_DEFAULT, |set| set.value);
        (bytes > 0).then_some(bytes)
    }

    fn slot(&mut self, setting: Setting) -> &mut Option<SetValue> {
        match setting {
            Setting::HistoryRevisions => &mut self.history_revisions,
            Setting::SnapshotEntries => &mut self.snapshot_entries,
            Setting::RangeMaxBytes => &mut self.range_max_bytes,
        }
    }

    /// The settings from the meta range's live keys under `CONFIG_PREFIX` (key, value,
    /// revision); keys of settings this version does not know are left out.
    ///
    /// # Errors
    /// The first stored value that does not decode.
    pub fn from_meta<'a>(
        items: impl IntoIterator<Item = (&'a [u8], &'a [u8], u64)>,
    ) -> Result<ClusterSettings, SettingError> {
        let mut settings = ClusterSettings::default();
        for (key, value, revision) in items {
            let Some(name) = key.strip_prefix(CONFIG_PREFIX) else { continue };
            let Ok(setting) = Setting::parse(&String::from_utf8_lossy(name)) else { continue };
            let value = setting.decode(value)?;
            *settings.slot(setting) = Some(SetValue { value, revision });
        }
        Ok(settings)
    }

    /// What each range's state machine should hold.
    pub fn range_settings(&self) -> RangeSettings {
        match self.history_revisions {
            Some(SetValue { value, revision }) => {
                RangeSettings { config_revision: revision, history_revisions: value }
            }
            None => RangeSettings::default(),
        }
    }
}

/// Bytes as an operator writes them: a number, optionally followed by B, KiB, MiB
/// or GiB (also KB/MB/GB, taken as the same powers of two).
fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kib" | "kb" | "k" => 10,
        "mib" | "mb" | "m" => 20,
        "gib" | "gb" | "g" => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

/// Bytes as `parse_bytes` reads them, in the largest unit that divides them.
fn format_bytes(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes > 0 && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// The settings a range's state machine holds (replicated: changed only by a
/// `WriteOp::Settings` entry of its log, and carried in its snapshots).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RangeSettings {
    /// The meta range revision of the `history_revisions` write these come from (0:
    /// the default, never set). An entry with a revision not above the current one is
    /// ignored, so that a leader whose meta replica lags cannot move a range back.
    pub config_revision: u64,
    /// Revisions of history kept below the applied index (u64::MAX: all).
    pub history_revisions: u64,
}

impl Default for RangeSettings {
    fn default() -> Self {
        RangeSettings { config_revision: 0, history_revisions: HISTORY_REVISIONS }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_checked() {
        assert_eq!(Setting::parse("history_revisions"), Ok(Setting::HistoryRevisions));
        let unknown = Setting::parse("history").unwrap_err().to_string();
        assert!(
            unknown.contains("history_revisions, snapshot_entries, range_max_bytes"),
            "{unknown}"
        );
        let history = Setting::HistoryRevisions;
        assert_eq!(history.parse_value("all"), Ok(u64::MAX));
        assert_eq!(history.parse_value("0"), Ok(0));
        assert!(history.parse_value("-1").is_err());
        assert!(history.parse_value("ten").is_err());
        assert_eq!(history.format_value(u64::MAX), "all");
        let entries = Setting::SnapshotEntries;
        assert!(entries.parse_value("0").unwrap_err().to_string().contains("at least 1"));
        assert_eq!(entries.parse_value("500"), Ok(500));
        assert!(entries.parse_value("all").is_err());
        let bytes = Setting::RangeMaxBytes;
        assert_eq!(bytes.parse_value("64MiB"), Ok(64 << 20));
        assert_eq!(bytes.parse_value("4096"), Ok(4096));
        assert_eq!(bytes.parse_value("0"), Ok(0));
        assert_eq!(bytes.format_value(64 << 20), "64MiB");
        assert_eq!(bytes.format_value(1000), "1000");
        assert!(bytes.parse_value("64 parsecs").is_err());
        assert!(bytes.parse_value("99999999999GiB").is_err());
    }

    #[test]
    fn stored_values_round_trip_and_carry_their_version() {
        let bytes = Setting::encode(u64::MAX);
        assert_eq!(bytes, br#"{"version":1,"value":18446744073709551615}"#);
        assert_eq!(Setting::HistoryRevisions.decode(&bytes), Ok(u64::MAX));
        let newer = br#"{"version":2,"value":5}"#;
        let error = Setting::HistoryRevisions.decode(newer).unwrap_err().to_string();
        assert!(error.contains("stored version 2"), "{error}");
        assert!(Setting::SnapshotEntries.decode(b"5").is_err());
    }

    #[test]
    fn cluster_settings_come_from_the_config_keys() {
        let history = Setting::HistoryRevisions.key();
        let other = b"_/cluster/config/future_setting".to_vec();
        let value = Setting::encode(7);
        let items = [(history.as_slice(), value.as_slice(), 42), (other.as_slice(), b"x", 43)];
        let settings = ClusterSettings::from_meta(items).unwrap();
        assert_eq!(settings.history_revisions, Some(SetValue { value: 7, revision: 42 }));
        assert_eq!(settings.snapshot_entries, None);
        let range = settings.range_settings();
        assert_eq!(range, RangeSettings { config_revision: 42, history_revisions: 7 });
        assert_eq!(ClusterSettings::default().range_settings(), RangeSettings::default());
    }
}
