//! The circuit breaker of one source: after `failure_threshold` consecutive failed requests it
//! opens and refuses requests for `open_seconds`, then lets one trial through (half-open); the
//! trial's success closes it, its failure opens it again. Pure: time is passed in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backhaul_core::connector::{BreakerPhase, BreakerReport};

use tokio::time::Instant;

/// The breaker's state, as `status` would show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; counting consecutive failures.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Requests are refused until `until`.
    Open {
        /// When a trial request will be allowed.
        until: Instant,
    },
    /// One trial request is in flight; others are refused.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn name(self) -> &'static str {
        self.phase().as_str()
    }

    /// The phase, without its details.
    pub fn phase(self) -> BreakerPhase {
        match self {
            BreakerState::Closed { .. } => BreakerPhase::Closed,
            BreakerState::Open { .. } => BreakerPhase::Open,
            BreakerState::HalfOpen => BreakerPhase::HalfOpen,
        }
    }

    /// The state as `status` shows it: `now` and `wall_now` are the same moment on the
    /// monotonic and the wall clock, to turn the open deadline into a wall-clock time.
    pub fn report(self, now: Instant, wall_now: SystemTime) -> BreakerReport {
        let open_until_unix_ms = match self {
            BreakerState::Open { until } => {
                let at = wall_now + until.saturating_duration_since(now);
                at.duration_since(UNIX_EPOCH).ok().map(|d| d.as_millis() as i64)
            }
            _ => None,
        };
        BreakerReport {
            phase: self.phase(),
            consecutive_failures: match self {
                BreakerState::Closed { failures } => failures,
                _ => 0,
            },
            open_until_unix_ms,
        }
    }
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    state: BreakerState,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        CircuitBreaker {
            threshold: threshold.max(1),
            open_for,
            state: BreakerState::Closed { failures: 0 },
        }
    }

    /// The state at `now` (an open breaker whose time is up reports half-open only once a
    /// request was admitted; until then it still says open).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// May a request go at `now`? `Err(wait)`: refused, ask again after `wait`.
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                Ok(())
            }
            BreakerState::Open { until } => Err(until - now),
            BreakerState::HalfOpen => Err(self.open_for),
        }
    }

    /// The admitted request succeeded (the API answered, whatever the status, short of 429,
    /// 5xx or a timeout).
    pub fn success(&mut self) {
        self.state = BreakerState::Closed { failures: 0 };
    }

    /// The admitted request failed at `now` (5xx, 429 or a timeout).
    pub fn failure(&mut self, now: Instant) {
        self.state = match self.state {
            BreakerState::Closed { failures } if failures + 1 < self.threshold => {
                BreakerState::Closed { failures: failures + 1 }
            }
            _ => BreakerState::Open {
                until: now + self.open_for,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_half_opens_after_the_wait_and_closes_on_success() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = CircuitBreaker::new(3, s(30));
        for _ in 0..2 {
            b.admit(t0).unwrap();
            b.failure(t0);
        }
        assert_eq!(b.state(), BreakerState::Closed { failures: 2 });
        // A success resets the count.
        b.success();
        for _ in 0..3 {
            b.admit(t0).unwrap();
            b.failure(t0);
        }
        assert_eq!(b.state(), BreakerState::Open { until: t0 + s(30) });
        assert_eq!(b.admit(t0 + s(10)), Err(s(20)));
        // After the wait: one trial, others refused while it runs.
        b.admit(t0 + s(30)).unwrap();
        assert_eq!(b.state().name(), "half_open");
        assert!(b.admit(t0 + s(30)).is_err());
        // The trial fails: open again for the full wait.
        b.failure(t0 + s(31));
        assert_eq!(b.state(), BreakerState::Open { until: t0 + s(61) });
        let wall = UNIX_EPOCH + s(1_000);
        assert_eq!(
            b.state().report(t0 + s(41), wall),
            BreakerReport {
                phase: BreakerPhase::Open,
                consecutive_failures: 0,
                open_until_unix_ms: Some(1_020_000),
            }
        );
        b.admit(t0 + s(61)).unwrap();
        b.success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }
}
