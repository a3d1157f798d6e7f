//! The coordinator's scheduler: wakes at the next due tick (by the injected clock), starts the
//! runs that are due through a [`RunLauncher`], and sleeps again.
//!
//! Rules (docs/pipelines.md, "Schedules"):
//! - at most one run of a schedule at a time: a tick that finds the last run still going is
//!   skipped and counted (`skipped_ticks`), and the next regular tick is the one after it;
//! - catch-up: ticks missed while the coordinator was down (or while it was busy) make ONE
//!   run when it is back, because the next tick is always computed from the last one handled;
//! - `run-now` starts a run at the next wake (at once when poked through a
//!   [`SchedulerHandle`]), even for a paused schedule, but never beside a running one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{RunLauncher, ScheduleRow};
use crate::clock::Clock;
use crate::error::Result;
use crate::state::StateStore;

/// Longest sleep between two looks at the schedules, so a schedule added without a poke (or a
/// run-now request waiting for a running run) is seen within this.
pub const MAX_NAP: Duration = Duration::from_secs(30);

/// After a failed look at the state (database unavailable), the next try comes after this.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// What one look at the schedules did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickOutcome {
    /// Schedules whose run started, with the run's job id.
    pub started: Vec<(String, String)>,
    /// Schedules whose due tick was skipped because their last run was still going.
    pub skipped: Vec<String>,
    /// The next due tick of any active schedule, microseconds since the epoch.
    pub next_due_us: Option<i64>,
}

/// Pokes a running scheduler to look at the schedules now (after add, resume, run-now).
#[derive(Clone, Default)]
pub struct SchedulerHandle {
    wake: Arc<Notify>,
}

impl SchedulerHandle {
    /// Wakes the scheduler (a no-op wake is kept for its next sleep).
    pub fn poke(&self) {
        self.wake.notify_one();
    }
}

/// The scheduler over a state store.
pub struct Scheduler {
    store: Arc<dyn StateStore>,
    launcher: Arc<dyn RunLauncher>,
    clock: Arc<dyn Clock>,
    handle: SchedulerHandle,
}

impl Scheduler {
    /// A scheduler reading schedules from `store`, starting runs with `launcher`, reading time
    /// from `clock`.
    pub fn new(store: Arc<dyn StateStore>, launcher: Arc<dyn RunLauncher>, clock: Arc<dyn Clock>) -> Self {
        Scheduler {
            store,
            launcher,
            clock,
            handle: SchedulerHandle::default(),
        }
    }

    /// A handle that wakes this scheduler.
    pub fn handle(&self) -> SchedulerHandle {
        self.handle.clone()
    }

    /// Handles everything due now: starts due runs, records skipped ticks.
    pub async fn tick(&self) -> Result<TickOutcome> {
        let now = self.clock.now_us();
        let mut outcome = TickOutcome::default();
        for schedule in self.store.schedules().await? {
            let due = !schedule.paused && schedule.next_tick_us().is_some_and(|t| t <= now);
            if due || schedule.run_requested {
                self.handle_due(&schedule, due, now, &mut outcome).await?;
            }
        }
        // Times after the changes above: a handled tick moved each schedule's next one.
        outcome.next_due_us = self
            .store
            .schedules()
            .await?
            .iter()
            .filter(|s| !s.paused)
            .filter_map(ScheduleRow::next_tick_us)
            .min();
        Ok(outcome)
    }

    async fn handle_due(&self, schedule: &ScheduleRow, due: bool, now: i64, outcome: &mut TickOutcome) -> Result<()> {
        let name = &schedule.name;
        if let Some(job) = &schedule.last_run_job
            && self.launcher.running(schedule, job).await?
        {
            if due {
                warn!(schedule = %name, job = %job, "tick skipped: the previous run is still going");
                self.store.record_skip(name, now).await?;
                outcome.skipped.push(name.clone());
            }
            return Ok(());
        }
        match self.launcher.start(schedule, now).await {
            Ok(job) => {
                info!(schedule = %name, job = %job, requested = schedule.run_requested, "scheduled run started");
                self.store.record_fire(name, now, &job).await?;
                outcome.started.push((name.clone(), job));
            }
            // A run that cannot start (a refused spec, a source down) waits for the next tick
            // instead of being retried in a loop; the error is in the log and the skip count.
            Err(e) => {
                warn!(schedule = %name, error = %e, "scheduled run could not start; waiting for the next tick");
                self.store.record_skip(name, now).await?;
                outcome.skipped.push(name.clone());
            }
        }
        Ok(())
    }

    /// Runs until `cancel` fires: a tick, then a sleep until the next due tick (at most
    /// [`MAX_NAP`]) or a poke. Owned by the coordinator's task set.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            let nap = match self.tick().await {
                Ok(outcome) => outcome
                    .next_due_us
                    .map(|due| Duration::from_micros(due.saturating_sub(self.clock.now_us()).max(0) as u64))
                    .unwrap_or(MAX_NAP)
                    .min(MAX_NAP),
                Err(e) => {
                    warn!(error = %e, "scheduler could not read the schedules");
                    RETRY_AFTER_ERROR
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.handle.wake.notified() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }
}
