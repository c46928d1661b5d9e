//! A rate limiter for repeated log events: the first occurrence of a kind of event is
//! logged, the ones that follow within `interval` are only counted, and the count is
//! reported once the interval is over (`take_summaries`) or with the next occurrence
//! that is logged. A peer sending a thousand misaddressed messages a second then costs
//! two lines every interval, not a thousand.
//!
//! Time is a plain millisecond count from any origin the caller keeps (ticks times
//! the tick interval in the event loop): the limiter reads no clock, so it behaves
//! the same under simulation and in its tests.

use std::collections::BTreeMap;

/// Whether to log an occurrence (`RateLimiter::admit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Log it; `suppressed` occurrences of this kind were counted but not logged
    /// since the last line about it (and not yet reported by `take_summaries`).
    Log { suppressed: u64 },
    /// Count it only.
    Suppress,
}

/// An interval during which one kind of event was logged once.
#[derive(Clone, Copy, Debug)]
struct Window {
    started_ms: u64,
    suppressed: u64,
}

/// Per kind of event (`K`: a small, bounded set such as `&'static str`), at most one
/// line per `interval_ms`, plus a summary of what was left out.
#[derive(Debug)]
pub struct RateLimiter<K: Ord> {
    interval_ms: u64,
    windows: BTreeMap<K, Window>,
}

impl<K: Ord + Clone> RateLimiter<K> {
    /// # Panics
    /// If `interval_ms` is 0 (a limiter that limits nothing is a mistake).
    pub fn new(interval_ms: u64) -> RateLimiter<K> {
        assert!(interval_ms > 0, "a rate limiter's interval must be positive");
        RateLimiter { interval_ms, windows: BTreeMap::new() }
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// An occurrence of `key` at `now_ms`. A clock that goes back (`now_ms` before the
    /// window's start) counts as inside the window.
    pub fn admit(&mut self, key: K, now_ms: u64) -> Admit {
        let interval_ms = self.interval_ms;
        match self.windows.get_mut(&key) {
            Some(window) if now_ms.saturating_sub(window.started_ms) < interval_ms => {
                window.suppressed += 1;
                Admit::Suppress
            }
            Some(window) => {
                let suppressed = window.suppressed;
                *window = Window { started_ms: now_ms, suppressed: 0 };
                Admit::Log { suppressed }
            }
            None => {
                self.windows.insert(key, Window { started_ms: now_ms, suppressed: 0 });
                Admit::Log { suppressed: 0 }
            }
        }
    }

    /// The kinds whose window is over at `now_ms`, each with the occurrences it
    /// suppressed (only those with some), in key order. Their windows are closed: the
    /// next occurrence is logged at once.
    pub fn take_summaries(&mut self, now_ms: u64) -> Vec<(K, u64)> {
        let interval_ms = self.interval_ms;
        let mut summaries = Vec::new();
        self.windows.retain(|key, window| {
            if now_ms.saturating_sub(window.started_ms) < interval_ms {
                return true;
            }
            if window.suppressed > 0 {
                summaries.push((key.clone(), window.suppressed));
            }
            false
        });
        summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_is_logged_and_the_rest_of_the_interval_counted() {
        let mut limiter = RateLimiter::new(1_000);
        assert_eq!(limiter.admit("drop", 0), Admit::Log { suppressed: 0 });
        for ms in 1..=999 {
            assert_eq!(limiter.admit("drop", ms), Admit::Suppress, "at {ms} ms");
        }
        // The summary is due once the interval is over, not before.
        assert_eq!(limiter.take_summaries(999), vec![]);
        assert_eq!(limiter.take_summaries(1_000), vec![("drop", 999)]);
        // Reported once; the window is closed, so the next one is logged at once.
        assert_eq!(limiter.take_summaries(5_000), vec![]);
        assert_eq!(limiter.admit("drop", 5_000), Admit::Log { suppressed: 0 });
    }

    #[test]
    fn an_occurrence_after_the_interval_carries_the_count_not_yet_reported() {
        let mut limiter = RateLimiter::new(100);
        assert_eq!(limiter.admit("drop", 10), Admit::Log { suppressed: 0 });
        assert_eq!(limiter.admit("drop", 20), Admit::Suppress);
        assert_eq!(limiter.admit("drop", 30), Admit::Suppress);
        assert_eq!(limiter.admit("drop", 110), Admit::Log { suppressed: 2 });
        assert_eq!(limiter.admit("drop", 150), Admit::Suppress);
        assert_eq!(limiter.take_summaries(210), vec![("drop", 1)]);
    }

    #[test]
    fn kinds_are_limited_apart_and_a_window_without_repeats_reports_nothing() {
        let mut limiter = RateLimiter::new(100);
        assert_eq!(limiter.admit("a", 0), Admit::Log { suppressed: 0 });
        assert_eq!(limiter.admit("b", 50), Admit::Log { suppressed: 0 });
        assert_eq!(limiter.admit("a", 60), Admit::Suppress);
        assert_eq!(limiter.admit("b", 60), Admit::Suppress);
        assert_eq!(limiter.admit("b", 70), Admit::Suppress);
        assert_eq!(limiter.admit("c", 70), Admit::Log { suppressed: 0 });
        // "a" is due at 100, "b" at 150; "c" suppressed nothing.
        assert_eq!(limiter.take_summaries(120), vec![("a", 1)]);
        assert_eq!(limiter.take_summaries(200), vec![("b", 2)]);
        assert!(limiter.windows.is_empty(), "every window closed");
    }

    #[test]
    fn a_clock_that_goes_back_stays_inside_the_window() {
        let mut limiter = RateLimiter::new(100);
        assert_eq!(limiter.admit(1u8, 500), Admit::Log { suppressed: 0 });
        assert_eq!(limiter.admit(1u8, 400), Admit::Suppress);
        assert_eq!(limiter.take_summaries(450), vec![]);
        assert_eq!(limiter.take_summaries(600), vec![(1u8, 1)]);
    }

    #[test]
    #[should_panic(expected = "interval must be positive")]
    fn a_zero_interval_is_refused() {
        let _ = RateLimiter::<u8>::new(0);
    }
}
