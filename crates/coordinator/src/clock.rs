//! The time the state stores read: when leases expire, when a retry backoff ends, when an
//! attempt started and ended. Injectable, so expiry and backoff are tested by moving a clock
//! instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Microseconds since the Unix epoch, as a state store sees them.
pub trait Clock: Send + Sync + 'static {
    /// Now, in microseconds since the Unix epoch.
    fn now_us(&self) -> i64;
}

/// The system's wall clock: what every serving store uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> i64 {
        chrono::Utc::now().timestamp_micros()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    now_us: AtomicI64,
}

impl ManualClock {
    /// A clock standing at the system time of its creation, so stored times look real.
    pub fn starting_now() -> Self {
        ManualClock {
            now_us: AtomicI64::new(SystemClock.now_us()),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let us = by.as_micros().min(i64::MAX as u128) as i64;
        self.now_us.fetch_add(us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> i64 {
        self.now_us.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::starting_now();
        let start = clock.now_us();
        assert!((start - SystemClock.now_us()).abs() < 60_000_000);
        assert_eq!(clock.now_us(), start);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_us(), start + 1_500_000);
    }
}
