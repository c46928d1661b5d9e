//! The server's logs: structured events through `tracing`, written to stderr by a
//! `tracing-subscriber` formatter, levelled, timestamped, as text or as one JSON
//! object per line (`rangedb server --log-level LEVEL --log-format text|json`).
//!
//! The library only emits events (`tracing::info!` and friends, with fields such as
//! `node` and `range`); whoever runs it installs the subscriber: the binary with
//! `install`, the simulation with `install_simulation`, whose timestamps are the
//! simulated time (no clock is read that the simulation does not control, and nothing
//! it writes feeds back into a run). With no subscriber installed (unit tests, the
//! client library in another program) events cost a branch and go nowhere.
//!
//! Repeated events (a message dropped per peer batch) go through a `RateLimiter`
//! (limiter.rs) so that a misbehaving peer cannot flood the log.

pub mod limiter;

pub use limiter::{Admit, RateLimiter};
pub use tracing::level_filters::LevelFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-12-07T14:50:00.123456Z  INFO rangedb::node: message field=value`.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the
    /// event's fields.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("unknown log level {0:?}: expected error, warn, info, debug, trace or off")]
    Level(String),
    #[error("unknown log format {0:?}: expected text or json")]
    Format(String),
    #[error("cannot install the logger: {0}")]
    Install(String),
}

/// Parses `--log-level`.
///
/// # Errors
/// `LoggingError::Level` for anything but error, warn, info, debug, trace or off.
pub fn parse_level(text: &str) -> Result<LevelFilter, LoggingError> {
    match text.to_ascii_lowercase().as_str() {
        "error" => Ok(LevelFilter::ERROR),
        "warn" => Ok(LevelFilter::WARN),
        "info" => Ok(LevelFilter::INFO),
        "debug" => Ok(LevelFilter::DEBUG),
        "trace" => Ok(LevelFilter::TRACE),
        "off" => Ok(LevelFilter::OFF),
        _ => Err(LoggingError::Level(text.to_string())),
    }
}

/// Parses `--log-format`.
///
/// # Errors
/// `LoggingError::Format` for anything but text or json.
pub fn parse_format(text: &str) -> Result<LogFormat, LoggingError> {
    match text.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(LoggingError::Format(text.to_string())),
    }
}

/// Installs the process-wide subscriber: events at `level` and above, to stderr, in
/// `format`, with wall-clock timestamps (RFC 3339, UTC).
///
/// # Errors
/// `LoggingError::Install` if a subscriber was installed already.
pub fn install(level: LevelFilter, format: LogFormat) -> Result<(), LoggingError> {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    installed.map_err(|error| LoggingError::Install(error.to_string()))
}

/// The simulation's subscriber: to stderr (which a sweep sends to a file), as text,
/// timestamped with the simulated time since the run started. `level` as `install`.
/// A second call (every seed of a sweep calls it) does nothing.
#[cfg(madsim)]
pub fn install_simulation(level: LevelFilter) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_timer(SimulatedTime)
        .try_init();
}

/// Timestamps of the simulation: its simulated time, read from the runtime of the
/// thread that logs (none outside a run: `-`).
#[cfg(madsim)]
struct SimulatedTime;

#[cfg(madsim)]
impl tracing_subscriber::fmt::time::FormatTime for SimulatedTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match madsim::time::TimeHandle::try_current() {
            Some(time) => {
                let elapsed = time.elapsed();
                write!(w, "sim {}.{:06}s", elapsed.as_secs(), elapsed.subsec_micros())
            }
            None => write!(w, "sim -"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_formats_parse_and_bad_ones_are_named() {
        assert_eq!(parse_level("info").unwrap(), LevelFilter::INFO);
        assert_eq!(parse_level("DEBUG").unwrap(), LevelFilter::DEBUG);
        assert_eq!(parse_level("off").unwrap(), LevelFilter::OFF);
        let error = parse_level("loud").unwrap_err().to_string();
        assert!(error.contains("\"loud\"") && error.contains("warn"), "{error}");
        assert_eq!(parse_format("json").unwrap(), LogFormat::Json);
        assert_eq!(parse_format("text").unwrap(), LogFormat::Text);
        let error = parse_format("xml").unwrap_err().to_string();
        assert!(error.contains("\"xml\"") && error.contains("json"), "{error}");
    }
}
