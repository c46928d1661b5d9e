//! Sleeps and timeouts that register one timer per deadline, in the simulation too.
//!
//! tokio's `Sleep` keeps one registration and only swaps the waker when polled again;
//! madsim's adds a new timer to its heap on every poll that finds it pending. A sleep
//! in a select loop (the event loop's next tick, polled at every turn) or a timeout
//! around a read (polled at every chunk that arrives) left thousands of stale timers in
//! the simulated heap, each popped at its deadline: the heap was the largest single
//! cost of a simulated run after the checkers. Here, under madsim, a `Sleep` polls the
//! inner one only when its deadline or the task's waker changed since the last
//! registration; outside the simulation it is tokio's.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

/// A deadline passed before the future completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut;

/// `tokio::time::Sleep`, registering once per deadline under madsim.
#[derive(Debug)]
pub struct Sleep {
    inner: Pin<Box<tokio::time::Sleep>>,
    /// The deadline and waker of the timer registered last (simulation only).
    #[cfg(madsim)]
    registered: Option<(Instant, std::task::Waker)>,
}

pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        inner: Box::pin(tokio::time::sleep_until(deadline)),
        #[cfg(madsim)]
        registered: None,
    }
}

pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

impl Sleep {
    pub fn reset(&mut self, deadline: Instant) {
        self.inner.as_mut().reset(deadline);
    }

    pub fn is_elapsed(&self) -> bool {
        self.inner.is_elapsed()
    }
}

impl Future for Sleep {
    type Output = ();

    #[cfg(not(madsim))]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }

    #[cfg(madsim)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.is_elapsed() {
            return Poll::Ready(());
        }
        let deadline = self.inner.deadline();
        if let Some((at, waker)) = &self.registered {
            if *at == deadline && waker.will_wake(cx.waker()) {
                return Poll::Pending; // The timer registered for this deadline wakes us.
            }
        }
        let polled = self.inner.as_mut().poll(cx);
        self.registered = Some((deadline, cx.waker().clone()));
        polled
    }
}

/// `future`'s output, or `TimedOut` once `duration` has passed.
///
/// # Errors
/// `TimedOut` if the deadline came first.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, TimedOut> {
    #[cfg(not(madsim))]
    {
        tokio::time::timeout(duration, future).await.map_err(|_| TimedOut)
    }
    #[cfg(madsim)]
    {
        let deadline = sleep(duration);
        tokio::pin!(future, deadline);
        tokio::select! {
            biased;
            output = &mut future => Ok(output),
            () = &mut deadline => Err(TimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timeout_passes_the_output_or_times_out() {
        assert_eq!(timeout(Duration::from_secs(5), async { 7 }).await, Ok(7));
        let never = std::future::pending::<()>();
        assert_eq!(timeout(Duration::from_millis(20), never).await, Err(TimedOut));
        let mut sleep = sleep(Duration::from_secs(60));
        sleep.reset(Instant::now() + Duration::from_millis(10));
        sleep.await;
    }
}
