//! Coverage markers: events worth reaching (Antithesis's `sometimes`, FoundationDB's
//! `TEST`). Each seed reports the markers it reached (`SeedReport::markers`), the
//! sweep prints how many seeds reached each, and the default `cargo sim --test sim`
//! fails when a marker declared here never fired: a fault or workload change that
//! stops reaching one of them leaves the sweep blind to the bugs behind it.
//!
//! Markers come from `sim_hooks::sometimes` at `#[cfg(madsim)]` call sites in the
//! node (torn WAL tail, deduplicated retry, duplicated and replayed peer batches)
//! and from what the harness sees (`run.rs`: elections after the heal, snapshots,
//! repairs, lease reads, handoffs). A new feature declares its own here.

/// Every marker the default sweep must reach at least once.
pub const DECLARED: &[&str] = &[
    "leader elected after the heal",
    "snapshot installed from a leader",
    "retried write deduplicated",
    "repair finished (damaged replica applied past its commit)",
    "lease read served",
    "leadership handed to the meta leader",
    "peer batch sent twice",
    "stale peer batch replayed",
];

/// Markers the default sweep is known not to reach, with why: printed as such and
/// not failing the sweep, until the gap is closed and they move to `DECLARED`.
pub const KNOWN_UNREACHED: &[(&str, &str)] = &[
    (
        "crash tore an unsynced page",
        "Wal::sync writes and fsyncs in one call after the simulated fsync latency, so a \
         crash never finds unsynced WAL pages on the SimDisk",
    ),
    ("torn WAL tail cut at recovery", "same: no crash leaves a torn WAL batch"),
];
