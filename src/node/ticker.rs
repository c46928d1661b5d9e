//! Raft ticks from the node's `Clock`: tick `k` is due when the clock's local time
//! has advanced `k` tick intervals since the node started.
//!
//! Every due tick is performed, including those that fell due while the node was
//! stalled (a GC or VM pause, a slow fsync): a leader resumed after a pause must count
//! the time that passed or it would believe its lease still runs. The node catches up
//! at every turn of its loop and before handing a read to Raft. A very long stall is
//! caught up only `TICKS_CATCH_UP_MAX` ticks; the rest are dropped, which only makes
//! the node's timers run late, the safe direction (see the constant).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::env::Clock;

/// The most ticks performed at once after a stall. At least twice the election
/// timeout (10 ticks): any lease (shorter than the election timeout) has run out and a
/// leader has run a full check-quorum period before it handles what queued up.
pub const TICKS_CATCH_UP_MAX: u64 = 24;

pub struct Ticker {
    clock: Arc<dyn Clock>,
    /// Local time at which tick 0 was due.
    origin: Instant,
    interval: Duration,
    /// Ticks performed or dropped: the next due tick is `done + 1`.
    done: u64,
}

impl Ticker {
    /// # Panics
    /// If `interval` is zero.
    pub fn new(clock: Arc<dyn Clock>, interval: Duration) -> Ticker {
        assert!(!interval.is_zero(), "tick interval must be positive");
        let origin = clock.now();
        Ticker { clock, origin, interval, done: 0 }
    }

    /// The clock's wall time, ms since the epoch (timestamps only).
    pub fn wall_ms(&self) -> u64 {
        self.clock.wall_ms()
    }

    /// How many ticks to perform now; the ones beyond `TICKS_CATCH_UP_MAX` are dropped.
    pub fn take_due(&mut self) -> u64 {
        let elapsed = self.clock.now().saturating_duration_since(self.origin);
        let due = (elapsed.as_nanos() / self.interval.as_nanos()) as u64;
        let behind = due.saturating_sub(self.done);
        self.done = self.done.max(due);
        behind.min(TICKS_CATCH_UP_MAX)
    }

    /// The tick interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Ticks performed or dropped since the start.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Real (tokio timer) time at which the next tick falls due.
    pub fn next_deadline(&self) -> Instant {
        let next_ns = self.interval.as_nanos() * u128::from(self.done + 1);
        let next_local =
            self.origin + Duration::from_nanos(next_ns.min(u128::from(u64::MAX)) as u64);
        let local_wait = next_local.saturating_duration_since(self.clock.now());
        Instant::now() + self.clock.real_duration(local_wait)
    }
}

// Outside madsim, so that tokio's clock can be read outside a simulated runtime.
#[cfg(all(test, not(madsim)))]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A clock that moves only when told to.
    struct ManualClock(Mutex<Instant>);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
        fn wall_ms(&self) -> u64 {
            0
        }
        fn real_duration(&self, local: Duration) -> Duration {
            local * 2 // A clock running at half speed.
        }
    }

    #[test]
    fn every_due_tick_is_taken_and_a_long_stall_is_capped() {
        let clock = Arc::new(ManualClock(Mutex::new(Instant::now())));
        let mut ticker = Ticker::new(clock.clone(), Duration::from_millis(50));
        assert_eq!(ticker.take_due(), 0);
        clock.advance(Duration::from_millis(49));
        assert_eq!(ticker.take_due(), 0);
        clock.advance(Duration::from_millis(1));
        assert_eq!(ticker.take_due(), 1);
        assert_eq!(ticker.take_due(), 0, "a tick is taken once");
        clock.advance(Duration::from_millis(175)); // A 3.5-tick stall: all 3 are due.
        assert_eq!(ticker.take_due(), 3);
        clock.advance(Duration::from_secs(10)); // 200 ticks: capped, the rest dropped.
        assert_eq!(ticker.take_due(), TICKS_CATCH_UP_MAX);
        assert_eq!(ticker.done(), 204);
        assert_eq!(ticker.take_due(), 0);
    }

    #[test]
    fn the_sleep_to_the_next_tick_is_in_real_time() {
        let clock = Arc::new(ManualClock(Mutex::new(Instant::now())));
        let ticker = Ticker::new(clock.clone(), Duration::from_millis(50));
        clock.advance(Duration::from_millis(20));
        let before = Instant::now();
        let wait = ticker.next_deadline() - before;
        // 30 ms of local time on a half-speed clock is 60 ms of real time.
        assert!(wait >= Duration::from_millis(59) && wait <= Duration::from_millis(75), "{wait:?}");
    }
}
