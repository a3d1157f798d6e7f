//! Splitting a running chunk that turned out too large: the one rule both state stores apply.
//!
//! The worker asks ([`crate::StateStore::split`]) once the coordinator told it that other
//! workers found nothing to lease. It names `at`, above every cursor value it has already
//! written, so the chunk can keep `[from, at)` and a new pending chunk take `[at, to)`
//! without any row belonging to both. The worker narrows only after a definite answer, and
//! asking again with the same `at` gets the same answer, so a lost reply cannot leave the
//! worker and the store disagreeing about the chunk's range.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backhaul_core::cursor::CursorRange;

use crate::clock::Clock;

/// What a store knows about a leased chunk when its current attempt asks to split it at `at`.
#[derive(Debug, Clone)]
pub(crate) struct SplitFacts {
    /// The chunk's range now.
    pub range: CursorRange,
    /// Planner estimates of the chunk now.
    pub estimated_rows: u64,
    /// Planner estimates of the chunk now.
    pub estimated_bytes: u64,
    /// An earlier lease of the chunk ran out: its worker may still be running the whole
    /// range, and would commit rows the tail's chunk commits too.
    pub earlier_lease_expired: bool,
    /// A chunk already cut from this one that starts at `at` (the answer to an earlier ask).
    pub tail_at: Option<u64>,
}

/// What asking to split gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitOutcome {
    /// The chunk now covers `kept`; `new_chunk_id` holds the rest.
    Split {
        /// The chunk's range after the split.
        kept: CursorRange,
        /// The new pending chunk.
        new_chunk_id: u64,
    },
    /// Not split; the worker runs the chunk as leased.
    Refused(String),
}

/// What a store does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SplitStep {
    /// Answer without changing anything.
    Answer(SplitOutcome),
    /// Shrink the chunk and insert its tail as a new pending chunk.
    Cut(Cut),
}

/// A split to store: the chunk shrinks to `kept` with the kept estimates, and `tail` becomes a
/// new pending chunk (the store numbers it after the job's last chunk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cut {
    pub kept: CursorRange,
    pub kept_rows: u64,
    pub kept_bytes: u64,
    pub tail: CursorRange,
    pub tail_rows: u64,
    pub tail_bytes: u64,
}

/// Decides a split request (pure).
pub(crate) fn decide(facts: &SplitFacts, at: i64) -> SplitStep {
    let range = facts.range;
    if let (Some(id), true) = (facts.tail_at, range.to == at) {
        return SplitStep::Answer(SplitOutcome::Split {
            kept: range,
            new_chunk_id: id,
        });
    }
    if facts.earlier_lease_expired {
        return SplitStep::Answer(SplitOutcome::Refused(
            "an earlier lease of the chunk expired; its worker may still be running the whole range".into(),
        ));
    }
    if !(range.from < at && at < range.to) {
        return SplitStep::Answer(SplitOutcome::Refused(format!(
            "{at} is not strictly inside the chunk's range {range}"
        )));
    }
    // Estimates follow the width: the planner's best guess, corrected by what runs.
    let share = (at - range.from) as f64 / range.width() as f64;
    let part = |total: u64| ((total as f64 * share).round() as u64).min(total);
    let (kept_rows, kept_bytes) = (part(facts.estimated_rows), part(facts.estimated_bytes));
    SplitStep::Cut(Cut {
        kept: CursorRange::new(range.from, at),
        kept_rows,
        kept_bytes,
        tail: CursorRange::new(at, range.to),
        tail_rows: facts.estimated_rows - kept_rows,
        tail_bytes: facts.estimated_bytes - kept_bytes,
    })
}

/// How long a worker that found nothing to lease counts as waiting. Waiting workers ask again
/// at least once a second (`NoWork.retry_after_ms` ≤ 1000).
pub const WAIT_FRESHNESS: Duration = Duration::from_secs(2);

/// Jobs whose workers just found nothing to lease: kept in memory, since it only steers which
/// running chunks are offered a split ([`crate::CoordinatorService`]'s progress answers).
pub struct WaitingWorkers {
    clock: Arc<dyn Clock>,
    /// Job → when a worker leasing only that job last found nothing.
    jobs: Mutex<HashMap<String, i64>>,
    /// When a worker leasing any job last found nothing (0: never).
    any_job_us: AtomicI64,
}

impl WaitingWorkers {
    /// Nobody waiting yet.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        WaitingWorkers {
            clock,
            jobs: Mutex::new(HashMap::new()),
            any_job_us: AtomicI64::new(0),
        }
    }

    /// A worker leasing `job` (or any job, `None`) found nothing runnable.
    pub fn saw_waiting(&self, job: Option<&str>) {
        let now = self.clock.now_us();
        match job {
            Some(job) => {
                if let Ok(mut jobs) = self.jobs.lock() {
                    jobs.insert(job.to_string(), now);
                }
            }
            None => self.any_job_us.store(now, Ordering::Relaxed),
        }
    }

    /// Whether a worker that could run a chunk of `job` waited within [`WAIT_FRESHNESS`].
    pub fn wanted(&self, job: &str) -> bool {
        let since = self.clock.now_us() - WAIT_FRESHNESS.as_micros() as i64;
        let of_job = self
            .jobs
            .lock()
            .ok()
            .and_then(|jobs| jobs.get(job).copied())
            .unwrap_or(0);
        of_job.max(self.any_job_us.load(Ordering::Relaxed)) > since
    }

    /// A chunk of `job` was split: the waiting workers have work until they ask again, so
    /// no further chunk is cut for them.
    pub fn served(&self, job: &str) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.remove(job);
        }
        self.any_job_us.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> SplitFacts {
        SplitFacts {
            range: CursorRange::new(0, 100),
            estimated_rows: 1000,
            estimated_bytes: 10_000,
            earlier_lease_expired: false,
            tail_at: None,
        }
    }

    #[test]
    fn cuts_inside_the_range_and_shares_the_estimates_by_width() {
        assert_eq!(
            decide(&facts(), 30),
            SplitStep::Cut(Cut {
                kept: CursorRange::new(0, 30),
                kept_rows: 300,
                kept_bytes: 3000,
                tail: CursorRange::new(30, 100),
                tail_rows: 700,
                tail_bytes: 7000,
            })
        );
    }

    #[test]
    fn refuses_points_outside_the_range_and_chunks_with_an_expired_lease() {
        for at in [0, 100, -5, 200] {
            assert!(
                matches!(decide(&facts(), at), SplitStep::Answer(SplitOutcome::Refused(_))),
                "{at}"
            );
        }
        let expired = SplitFacts {
            earlier_lease_expired: true,
            ..facts()
        };
        let SplitStep::Answer(SplitOutcome::Refused(why)) = decide(&expired, 50) else {
            panic!("split a chunk whose earlier holder may still run")
        };
        assert!(why.contains("expired"), "{why}");
    }

    #[test]
    fn waiting_workers_want_splits_until_served_or_stale() {
        let clock = Arc::new(crate::clock::ManualClock::starting_now());
        let waiting = WaitingWorkers::new(clock.clone());
        assert!(!waiting.wanted("a"));
        waiting.saw_waiting(Some("a"));
        assert!(waiting.wanted("a") && !waiting.wanted("b"));
        waiting.served("a");
        assert!(!waiting.wanted("a"));
        // A worker of any job wants work from every job, for a while.
        waiting.saw_waiting(None);
        assert!(waiting.wanted("a") && waiting.wanted("b"));
        clock.advance(WAIT_FRESHNESS);
        assert!(!waiting.wanted("a") && !waiting.wanted("b"));
    }

    #[test]
    fn asking_again_with_the_same_point_gets_the_same_answer() {
        let done = SplitFacts {
            range: CursorRange::new(0, 30),
            tail_at: Some(7),
            ..facts()
        };
        let answer = SplitStep::Answer(SplitOutcome::Split {
            kept: CursorRange::new(0, 30),
            new_chunk_id: 7,
        });
        assert_eq!(decide(&done, 30), answer);
        // Even when a lease expired since: the split happened before.
        assert_eq!(
            decide(
                &SplitFacts {
                    earlier_lease_expired: true,
                    ..done.clone()
                },
                30
            ),
            answer
        );
        // Another point is a new request.
        assert!(matches!(decide(&done, 10), SplitStep::Cut(_)));
    }
}
