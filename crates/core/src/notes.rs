//! What a source reports about its work besides the rows: facts of one chunk's extraction
//! ([`ExtractNotes`], e.g. records refused into a dead-letter file) and the state of its
//! circuit breaker ([`BreakerReport`]). Workers carry both to the coordinator, which stores the
//! chunk's facts with its completion and shows the breaker in `status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Facts of one chunk's extraction besides its rows, as a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractFacts {
    /// Records the source refused (they did not match the declared schema) and wrote to a
    /// dead-letter file instead of the chunk's rows.
    pub dead_letters: u64,
}

/// A handle through which a source notes [`ExtractFacts`] while its stream runs; the caller
/// reads them once the stream has ended ([`crate::connector::Source::extract_with_notes`]).
#[derive(Debug, Clone, Default)]
pub struct ExtractNotes {
    dead_letters: Arc<AtomicU64>,
}

impl ExtractNotes {
    /// Empty notes.
    pub fn new() -> Self {
        Self::default()
    }

    /// `n` more records went to the dead-letter file.
    pub fn add_dead_letters(&self, n: u64) {
        self.dead_letters.fetch_add(n, Ordering::Relaxed);
    }

    /// What was noted so far.
    pub fn facts(&self) -> ExtractFacts {
        ExtractFacts {
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
        }
    }
}

/// The phase of a circuit breaker (docs/sources/http.md, "Circuit breaker").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerPhase {
    /// Requests flow.
    Closed,
    /// Requests are refused until the open time is up.
    Open,
    /// One trial request is in flight.
    HalfOpen,
}

impl BreakerPhase {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerPhase::Closed => "closed",
            BreakerPhase::Open => "open",
            BreakerPhase::HalfOpen => "half_open",
        }
    }

    /// The inverse of [`BreakerPhase::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "closed" => Some(BreakerPhase::Closed),
            "open" => Some(BreakerPhase::Open),
            "half_open" => Some(BreakerPhase::HalfOpen),
            _ => None,
        }
    }
}

/// A source's circuit breaker as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerReport {
    /// Closed, open or half-open.
    pub phase: BreakerPhase,
    /// Consecutive failed requests counted while closed (0 otherwise).
    pub consecutive_failures: u32,
    /// When an open breaker lets a trial request through, milliseconds since the Unix epoch.
    pub open_until_unix_ms: Option<i64>,
}

impl BreakerReport {
    /// Anything but a closed breaker: worth showing in a run's report.
    pub fn is_tripped(&self) -> bool {
        self.phase != BreakerPhase::Closed
    }

    /// One line for people, e.g. `open until 2026-01-05 10:00:00 UTC` or
    /// `closed (2 consecutive failures)`.
    pub fn describe(&self) -> String {
        match (self.phase, self.open_until_unix_ms) {
            (BreakerPhase::Open, Some(ms)) => {
                let until = chrono::DateTime::from_timestamp_millis(ms)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_else(|| ms.to_string());
                format!("open until {until}")
            }
            (BreakerPhase::Closed, _) if self.consecutive_failures > 0 => {
                format!("closed ({} consecutive failures)", self.consecutive_failures)
            }
            (phase, _) => phase.as_str().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_add_up_across_clones() {
        let notes = ExtractNotes::new();
        let handle = notes.clone();
        handle.add_dead_letters(2);
        handle.add_dead_letters(3);
        assert_eq!(notes.facts(), ExtractFacts { dead_letters: 5 });
    }

    #[test]
    fn breaker_phases_round_trip_and_describe_themselves() {
        for phase in [BreakerPhase::Closed, BreakerPhase::Open, BreakerPhase::HalfOpen] {
            assert_eq!(BreakerPhase::parse(phase.as_str()), Some(phase));
        }
        let open = BreakerReport {
            phase: BreakerPhase::Open,
            consecutive_failures: 0,
            open_until_unix_ms: Some(1_767_607_200_000),
        };
        assert_eq!(open.describe(), "open until 2026-01-05 10:00:00 UTC");
        assert!(open.is_tripped());
        let closed = BreakerReport {
            phase: BreakerPhase::Closed,
            consecutive_failures: 2,
            open_until_unix_ms: None,
        };
        assert_eq!(closed.describe(), "closed (2 consecutive failures)");
        assert!(!closed.is_tripped());
    }
}
