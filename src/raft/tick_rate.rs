//! The lease drift guard's measurement: how fast a follower ticks compared with the
//! leader, from the tick counter each `HeartbeatResponse` carries.
//!
//! A sample is taken when a heartbeat response arrives: `sent`, the leader tick at
//! which that heartbeat round left; `received`, the leader tick now; `follower`, the
//! follower's tick counter when it answered. For two samples `a` (older) and `b`, the
//! follower answered `a` before the leader received it and answered `b` after the
//! leader sent it, so at least `b.sent - a.received - 1` leader tick periods of real
//! time separate the two answers (the `- 1`: tick quantisation). In that time the
//! follower ticked `b.follower - a.follower` times, at least its rate times that time
//! minus one. Hence, with `r_f` and `r_l` the tick rates:
//!
//! ```text
//!   r_f / r_l  <=  (b.follower - a.follower + 1) / (b.sent - a.received - 1)
//! ```
//!
//! an upper bound that holds whatever the network delays were. `TickRate::within`
//! requires it for every kept sample at least `RATE_SPAN_MIN_TICKS` older than the
//! newest (a short span reacts sooner to a changed rate, a long one is more precise),
//! and only once a sample `RATE_WINDOW_TICKS` old exists.
//!
//! It assumes the leader performs its ticks on time when it handles a message (the
//! node catches its ticks up to its clock before handling events) and that rates
//! change slowly compared with the window: a jump in rate shows only in part until
//! the spans cover it. A restarted follower starts counting from 0 again, so a new
//! `incarnation`, a counter going backwards or a long silence starts a new window.

use std::collections::VecDeque;

/// A full measurement spans at least this many leader ticks.
pub const RATE_WINDOW_TICKS: u64 = 100;
/// Spans shorter than this are too imprecise to judge by.
pub const RATE_SPAN_MIN_TICKS: u64 = 50;
/// Kept samples are at least this many leader ticks apart.
const SAMPLE_SPACING_TICKS: u64 = 5;
/// Samples further apart than this (leader ticks) break the window: the follower may
/// have restarted in between without its counter showing it.
const SAMPLE_GAP_MAX_TICKS: u64 = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    round: u64,
    sent: u64,
    received: u64,
    follower: u64,
}

/// One follower's tick rate as the leader measures it.
#[derive(Clone, Debug, Default)]
pub struct TickRate {
    incarnation: u64,
    /// Spaced samples, oldest first; the first is the newest one at least
    /// `RATE_WINDOW_TICKS` older than `newest` once the window is full.
    kept: VecDeque<Sample>,
    newest: Option<Sample>,
    /// The verdict at the newest sample.
    within: bool,
}

impl TickRate {
    /// Records a heartbeat response of `round` (sent at leader tick `sent`) received
    /// at leader tick `received`, carrying the follower's `follower_tick` and
    /// `incarnation`. `tolerance` is the largest acceptable follower-to-leader rate
    /// ratio as a fraction (numerator, denominator).
    pub fn observe(
        &mut self,
        round: u64,
        sent: u64,
        received: u64,
        follower_tick: u64,
        incarnation: u64,
        tolerance: (u64, u64),
    ) {
        let sample = Sample { round, sent, received, follower: follower_tick };
        if let Some(newest) = self.newest {
            if incarnation == self.incarnation && round <= newest.round {
                return; // A late or duplicated answer to an older round.
            }
            let restarted = incarnation != self.incarnation
                || follower_tick < newest.follower
                || received > newest.received + SAMPLE_GAP_MAX_TICKS;
            if restarted {
                self.kept.clear();
                self.newest = None;
            }
        }
        self.incarnation = incarnation;
        self.newest = Some(sample);
        if self.kept.back().is_none_or(|last| received >= last.received + SAMPLE_SPACING_TICKS) {
            self.kept.push_back(sample);
        }
        while self.kept.len() >= 2 && sent >= self.kept[1].received + RATE_WINDOW_TICKS {
            self.kept.pop_front();
        }
        self.within = self.judge(sample, tolerance);
    }

    fn judge(&self, newest: Sample, (numerator, denominator): (u64, u64)) -> bool {
        let Some(oldest) = self.kept.front() else { return false };
        if newest.sent < oldest.received + RATE_WINDOW_TICKS {
            return false; // No full window yet.
        }
        self.kept.iter().take_while(|a| newest.sent >= a.received + RATE_SPAN_MIN_TICKS).all(|a| {
            let follower_ticks = newest.follower - a.follower + 1;
            let leader_ticks = newest.sent - a.received - 1;
            // follower_ticks / leader_ticks <= numerator / denominator
            u128::from(follower_ticks) * u128::from(denominator)
                <= u128::from(numerator) * u128::from(leader_ticks)
        })
    }

    /// Whether a full window exists and the follower's rate is within the tolerance.
    pub fn within(&self) -> bool {
        self.within
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE: (u64, u64) = (9, 8);

    /// Heartbeats every 2 leader ticks answered at once by a follower ticking
    /// `rate` times as fast; returns the verdict after each.
    fn run(rate: f64, ticks: u64) -> Vec<bool> {
        let mut measured = TickRate::default();
        let mut verdicts = Vec::new();
        for leader in (2..=ticks).step_by(2) {
            let follower = (leader as f64 * rate) as u64;
            measured.observe(leader / 2, leader, leader, follower, 1, TOLERANCE);
            verdicts.push(measured.within());
        }
        verdicts
    }

    #[test]
    fn a_full_window_is_needed() {
        let verdicts = run(1.0, 300);
        let first = verdicts.iter().position(|v| *v).expect("accepted eventually");
        assert!(first * 2 >= RATE_WINDOW_TICKS as usize, "accepted after {} ticks", first * 2);
        assert!(verdicts[first..].iter().all(|v| *v));
    }

    #[test]
    fn a_fast_follower_is_refused_a_slow_one_is_not() {
        assert!(run(1.2, 400).iter().all(|v| !*v));
        assert!(*run(0.5, 400).last().unwrap());
        assert!(*run(1.05, 400).last().unwrap());
    }

    #[test]
    fn a_restart_starts_a_new_window() {
        let mut measured = TickRate::default();
        for leader in (2..=200).step_by(2) {
            measured.observe(leader, leader, leader, leader, 1, TOLERANCE);
        }
        assert!(measured.within());
        measured.observe(201, 202, 202, 3, 1, TOLERANCE);
        assert!(!measured.within(), "counter went backwards");
        let mut other = TickRate::default();
        for leader in (2..=200).step_by(2) {
            other.observe(leader, leader, leader, leader, 1, TOLERANCE);
        }
        other.observe(201, 202, 202, 300, 2, TOLERANCE);
        assert!(!other.within(), "a new incarnation");
    }
}
