//! The runtime settings on a node (`rangedb admin config`, range/settings.rs): read
//! from the meta replica whenever it applies something, applied to the node's tuning,
//! and carried into every range this node leads through that range's own log.
//!
//! ```text
//!  meta replica applies a write ──► refresh_settings ──► tuning.snapshot_entries
//!  every tick, each range led here ──► propagate_settings ──► WriteOp::Settings
//!       (when the range's state machine holds an older settings revision)
//! ```

use tracing::{error, info, warn};

use crate::node::event_loop::Node;
use crate::range::descriptor::RangeId;
use crate::range::kv::{Command, WriteOp};
use crate::range::settings::{ClusterSettings, Setting, CONFIG_END, CONFIG_PREFIX};

/// Ticks before a leader proposes the same settings again when its range has not
/// applied them (the proposal was lost to a leadership change; a repeat is ignored
/// by the state machine, so this only bounds the extra entries).
pub const SETTINGS_RETRY_TICKS: u64 = 20;

impl Node {
    /// Reads the settings from this node's meta replica and applies the node-wide ones
    /// (`snapshot_entries`). Called at start and after the meta range applied entries
    /// or a snapshot.
    pub(crate) fn refresh_settings(&mut self) {
        let meta = self.table.meta();
        let Some(replica) = self.replicas.get(&meta) else { return };
        let kvs = replica.scan_all(CONFIG_PREFIX, CONFIG_END);
        let items = kvs.iter().map(|kv| (kv.key.as_slice(), kv.value.as_slice(), kv.revision));
        let settings = match ClusterSettings::from_meta(items) {
            Ok(settings) => settings,
            Err(error) => {
                error!(node = self.id.0, "{}: {error}; keeping the settings before it", self.id);
                return;
            }
        };
        if settings == self.settings {
            return;
        }
        for setting in Setting::ALL {
            if let Some(set) =
                settings.get(setting).filter(|&s| Some(s) != self.settings.get(setting))
            {
                info!(
                    node = self.id.0,
                    "{}: cluster setting {} is {} (meta revision {})",
                    self.id,
                    setting.name(),
                    setting.format_value(set.value),
                    set.revision
                );
            }
        }
        if let (Some(flag), Some(set)) =
            (self.tuning.initial_history_revisions, settings.history_revisions)
        {
            if flag != set.value && self.settings.history_revisions != Some(set) {
                warn!(
                    node = self.id.0,
                    "{}: --history-revisions {} is only the initial value of a new cluster; \
                     the cluster's history_revisions is {} (rangedb admin config set)",
                    self.id,
                    Setting::HistoryRevisions.format_value(flag),
                    Setting::HistoryRevisions.format_value(set.value)
                );
            }
        }
        self.settings = settings;
        self.tuning.snapshot_entries =
            settings.snapshot_entries.map_or(self.tuning.snapshot_entries_flag, |set| set.value);
        #[cfg(madsim)]
        {
            let (id, entries) = (self.id, self.tuning.snapshot_entries);
            let revision = settings.snapshot_entries.map_or(0, |set| set.revision);
            crate::env::sim_hooks::observe(|o| o.node_settings(id, revision, entries));
        }
    }

    /// Proposes the cluster's range settings in every range this node leads whose
    /// state machine holds an older revision of them: each replica then applies them
    /// at the same index of its range's log.
    pub(crate) fn propagate_settings(&mut self) {
        let desired = self.settings.range_settings();
        if desired.config_revision == 0 {
            return;
        }
        // The ranges to look at: every range led here when the revision changes, and
        // each range that becomes leader here (event_loop.rs `apply_ready`); a range
        // leaves the list once it holds the revision or is no longer led here.
        if self.settings_listed != desired.config_revision {
            self.settings_listed = desired.config_revision;
            self.settings_behind.clone_from(&self.leading);
        }
        let now = self.ticks();
        let listed: Vec<RangeId> = self.settings_behind.iter().copied().collect();
        for range in listed {
            let behind = self.replicas.get(&range).is_some_and(|replica| {
                replica.is_leader()
                    && replica.kv.settings().config_revision < desired.config_revision
            });
            if !behind {
                self.settings_behind.remove(&range);
                continue;
            }
            let Some(replica) = self.replicas.get_mut(&range) else { continue };
            let recent = replica.settings_proposed.is_some_and(|(revision, at)| {
                revision == desired.config_revision && now < at + SETTINGS_RETRY_TICKS
            });
            if recent {
                continue;
            }
            let command = Command { request_id: None, op: WriteOp::Settings(desired) };
            if replica.propose_internal(&command) {
                replica.settings_proposed = Some((desired.config_revision, now));
            }
        }
    }

    /// `--history-revisions` given and the cluster has no `history_revisions`: the
    /// node leading the meta range writes it, once its own term's entries are applied
    /// (so that it has applied every setting written before).
    pub(crate) fn write_initial_settings(&mut self) {
        let Some(history) = self.tuning.initial_history_revisions else { return };
        if self.settings.history_revisions.is_some() {
            return;
        }
        let now = self.ticks();
        if self.initial_settings_proposed.is_some_and(|at| now < at + SETTINGS_RETRY_TICKS) {
            return;
        }
        let meta = self.table.meta();
        let Some(replica) = self.replicas.get_mut(&meta) else { return };
        let committed = replica.raft.committed();
        let own_term = replica.raft.log_term(committed).ok().flatten() == Some(replica.raft.term());
        if !replica.is_leader() || !own_term || replica.kv.applied() < committed {
            return;
        }
        let op =
            WriteOp::Put { key: Setting::HistoryRevisions.key(), value: Setting::encode(history) };
        if replica.propose_internal(&Command { request_id: None, op }) {
            self.initial_settings_proposed = Some(now);
        }
    }
}
