//! `SimClock`: a node's clock for the simulation, with skew and drift.
//!
//! Real time is tokio's (madsim's simulated time under `--cfg madsim`). The clock's
//! local time runs at `1 + drift_ppm / 10^6` times real time and is piecewise linear:
//! changing the drift rebases it, so local time stays continuous and monotonic. Skew is
//! an offset of the wall clock only (`wall_ms`); monotonic time has no meaningful
//! offset between nodes. The state is shared by clones, so the simulation keeps one
//! per node across kill and restart (the hardware clock outlives the process) and
//! changes it while the node runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::Clock;

const PPM: i128 = 1_000_000;

#[derive(Debug)]
struct State {
    /// Local time is `origin + local elapsed`.
    origin: Instant,
    /// At real instant `base_real`, local elapsed time was `base_local_ns`.
    base_real: Instant,
    base_local_ns: i128,
    drift_ppm: i64,
    skew_ms: i64,
    /// Wall clock (ms since the Unix epoch) at `origin`, before skew.
    epoch_ms: u64,
}

impl State {
    fn local_ns(&self, real: Instant) -> i128 {
        let real_ns = real.saturating_duration_since(self.base_real).as_nanos() as i128;
        self.base_local_ns + real_ns * (PPM + i128::from(self.drift_ppm)) / PPM
    }
}

/// A skewed, drifting clock. Create it inside the runtime whose time it follows.
#[derive(Clone, Debug)]
pub struct SimClock {
    state: Arc<Mutex<State>>,
}

impl SimClock {
    /// A clock with no skew or drift whose wall time starts at `epoch_ms`.
    pub fn new(epoch_ms: u64) -> SimClock {
        let now = Instant::now();
        let state = State {
            origin: now,
            base_real: now,
            base_local_ns: 0,
            drift_ppm: 0,
            skew_ms: 0,
            epoch_ms,
        };
        SimClock { state: Arc::new(Mutex::new(state)) }
    }

    /// From now on the clock runs `drift_ppm` parts per million fast (negative: slow)
    /// and its wall time is off by `skew_ms`.
    ///
    /// # Panics
    /// If `drift_ppm` would stop the clock or run it backwards (at most -10^6).
    pub fn set(&self, skew_ms: i64, drift_ppm: i64) {
        self.set_at(Instant::now(), skew_ms, drift_ppm);
    }

    fn set_at(&self, now: Instant, skew_ms: i64, drift_ppm: i64) {
        assert!(i128::from(drift_ppm) > -PPM, "drift {drift_ppm} ppm stops the clock");
        let mut state = self.lock();
        state.base_local_ns = state.local_ns(now);
        state.base_real = now;
        state.drift_ppm = drift_ppm;
        state.skew_ms = skew_ms;
    }

    /// (skew in ms, drift in ppm) now in force.
    pub fn setting(&self) -> (i64, i64) {
        let state = self.lock();
        (state.skew_ms, state.drift_ppm)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Local time elapsed since the clock was created, at real instant `real`.
    fn local_elapsed_at(&self, real: Instant) -> (Instant, Duration) {
        let state = self.lock();
        let local_ns = state.local_ns(real).max(0);
        (state.origin, Duration::from_nanos(local_ns as u64))
    }

    fn wall_ms_at(&self, real: Instant) -> u64 {
        let (_, elapsed) = self.local_elapsed_at(real);
        let state = self.lock();
        let wall = state.epoch_ms as i128 + elapsed.as_millis() as i128 + i128::from(state.skew_ms);
        wall.max(0) as u64
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        let (origin, elapsed) = self.local_elapsed_at(Instant::now());
        origin + elapsed
    }

    fn wall_ms(&self) -> u64 {
        self.wall_ms_at(Instant::now())
    }

    fn real_duration(&self, local: Duration) -> Duration {
        let rate = PPM + i128::from(self.lock().drift_ppm);
        // Rounded up, so a sleep never wakes before the local time has passed.
        let real_ns = (local.as_nanos() as i128 * PPM + rate - 1) / rate;
        Duration::from_nanos(real_ns.min(i128::from(u64::MAX)) as u64)
    }
}

// Outside madsim, so that tokio's clock can be read outside a simulated runtime.
#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[test]
    fn drift_is_continuous_and_skew_moves_wall_time_only() {
        let clock = SimClock::new(1_000_000);
        let start = clock.lock().origin;
        let at = |ms: u64| start + Duration::from_millis(ms);
        let local = |ms: u64| clock.local_elapsed_at(at(ms)).1;
        assert_eq!(local(1_000), Duration::from_millis(1_000));
        clock.set_at(at(1_000), -5_000, 250_000); // 25% fast from here.
        assert_eq!(local(1_000), Duration::from_millis(1_000), "no jump at a rate change");
        assert_eq!(local(2_000), Duration::from_millis(2_250));
        assert_eq!(clock.wall_ms_at(at(2_000)), 1_000_000 + 2_250 - 5_000);
        assert_eq!(clock.real_duration(Duration::from_millis(125)), Duration::from_millis(100));
        clock.set_at(at(2_000), 0, -500_000);
        assert_eq!(local(3_000), Duration::from_millis(2_750));
        assert_eq!(clock.real_duration(Duration::from_millis(10)), Duration::from_millis(20));
    }
}
