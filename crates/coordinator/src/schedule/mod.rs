//! Schedules in the cluster: the coordinator keeps, per scheduled job, a cron expression in an
//! IANA time zone, and starts a run of the job when it is due (docs/pipelines.md, "Schedules").
//!
//! - [`cron`]: the expression and when it next fires (DST rules there).
//! - [`ScheduleStore`]: schedules kept durably beside the jobs, in both state backends.
//! - [`scheduler`]: the loop that wakes at the next due time and starts runs through a
//!   [`RunLauncher`], one run of a schedule at a time, one catch-up run after downtime.

pub mod cron;
pub mod launcher;
pub mod rpc;
pub mod scheduler;
pub(crate) mod sqlite;

pub(crate) use sqlite::SCHEMA as SQLITE_SCHEMA;

pub use launcher::{RunLauncher, SubmitLauncher};
pub use scheduler::{Scheduler, SchedulerHandle};

use std::path::PathBuf;

use backhaul_core::Error;
use chrono_tz::Tz;
use serde::Serialize;

use crate::error::Result;
use crate::store::Submitted;
use cron::Cron;

/// One scheduled job as the coordinator stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleRow {
    /// The schedule's name: the job's name, or the pipeline's.
    pub name: String,
    /// The job or pipeline spec each run submits, as registered.
    pub spec_toml: String,
    /// Directory against which relative paths in the spec resolve on the coordinator.
    pub base_dir: PathBuf,
    /// Five-field cron expression.
    pub cron: String,
    /// IANA time zone the expression's wall-clock times are read in.
    pub time_zone: String,
    /// A paused schedule starts no runs on its ticks until resumed (`run-now` still does).
    pub paused: bool,
    /// When the schedule was added, microseconds since the epoch; the first tick is after it.
    pub created_at_us: i64,
    /// When the last run started, microseconds since the epoch.
    pub last_fired_us: Option<i64>,
    /// The job id of the last run started (a pipeline's name for a pipeline's run).
    pub last_run_job: Option<String>,
    /// The last tick handled (a run started, or skipped because the previous run was still
    /// going), or when the schedule was resumed; the next tick is the first after it.
    pub last_tick_us: Option<i64>,
    /// `run-now` asked for a run that has not started yet.
    pub run_requested: bool,
    /// Ticks skipped because the previous run was still going.
    pub skipped_ticks: u64,
}

impl ScheduleRow {
    /// A new, never-fired schedule; checks the cron expression and the zone, naming the
    /// offending field (`origin` names where they came from, e.g. `backhaul schedule add`).
    pub fn new(
        name: &str,
        spec_toml: String,
        base_dir: PathBuf,
        cron: &str,
        time_zone: &str,
        origin: &str,
        created_at_us: i64,
    ) -> Result<Self> {
        let row = ScheduleRow {
            name: name.to_string(),
            spec_toml,
            base_dir,
            cron: cron.trim().to_string(),
            time_zone: time_zone.trim().to_string(),
            paused: false,
            created_at_us,
            last_fired_us: None,
            last_run_job: None,
            last_tick_us: None,
            run_requested: false,
            skipped_ticks: 0,
        };
        row.timing(origin)?;
        Ok(row)
    }

    /// The parsed expression and zone; errors name `cron` or `time_zone`.
    pub fn timing(&self, origin: &str) -> Result<(Cron, Tz)> {
        let cron = Cron::parse(&self.cron).map_err(|m| Error::config(origin, "cron", m))?;
        let zone = cron::parse_zone(&self.time_zone).map_err(|m| Error::config(origin, "time_zone", m))?;
        Ok((cron, zone))
    }

    /// The next regular tick: the first firing after the last tick handled (or after the
    /// schedule was added or resumed). At or before now means a run is due: however many ticks
    /// passed while the coordinator was down, that is one run (the catch-up policy).
    pub fn next_tick_us(&self) -> Option<i64> {
        let (cron, zone) = self.timing("<stored schedule>").ok()?;
        let since = self.last_tick_us.unwrap_or(self.created_at_us);
        cron.next_after(cron::utc_of_us(since), zone)
            .map(|t| t.timestamp_micros())
    }

    /// Same job, same timing: adding it again changes nothing.
    fn same_definition(&self, other: &ScheduleRow) -> bool {
        self.spec_toml == other.spec_toml
            && self.base_dir == other.base_dir
            && self.cron == other.cron
            && self.time_zone == other.time_zone
    }
}

/// Schedules kept durably in the coordinator's state (both backends; the contract is in
/// `tests/state_contract.rs`). Every method is one atomic change or one consistent read.
#[tonic::async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Stores a new schedule, or confirms an identical one exists (its history kept). A
    /// schedule of that name with another spec or timing is refused
    /// ([`crate::CoordinatorError::ScheduleChanged`]): remove it first.
    async fn add_schedule(&self, schedule: ScheduleRow) -> Result<Submitted>;
    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<ScheduleRow>>;
    /// One schedule ([`crate::CoordinatorError::UnknownSchedule`] when there is none).
    async fn schedule(&self, name: &str) -> Result<ScheduleRow>;
    /// Pauses or resumes a schedule. Resuming at `now_us` does not run the ticks missed while
    /// paused: the next tick is the first after `now_us`.
    async fn set_schedule_paused(&self, name: &str, paused: bool, now_us: i64) -> Result<()>;
    /// Asks for one run as soon as the scheduler sees it (`run-now`).
    async fn request_run(&self, name: &str) -> Result<()>;
    /// Records a run started at `fired_us` as job `job_id`: the tick is handled and a
    /// `run-now` request cleared.
    async fn record_fire(&self, name: &str, fired_us: i64, job_id: &str) -> Result<()>;
    /// Records a tick skipped at `at_us` because the last run was still going; the tick counts
    /// as handled (the next one is the following tick).
    async fn record_skip(&self, name: &str, at_us: i64) -> Result<()>;
    /// Removes a schedule; its jobs stay.
    async fn remove_schedule(&self, name: &str) -> Result<()>;
}

/// The answer to adding `new` where `existing` may already be stored.
pub(crate) fn add_outcome(name: &str, existing: Option<&ScheduleRow>, new: &ScheduleRow) -> Result<Option<Submitted>> {
    match existing {
        None => Ok(None),
        Some(old) if old.same_definition(new) => Ok(Some(Submitted::Existing)),
        Some(_) => Err(crate::CoordinatorError::ScheduleChanged { name: name.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_cron_and_bad_zone_name_their_field() {
        let bad = |cron: &str, tz: &str| {
            ScheduleRow::new("j", String::new(), PathBuf::new(), cron, tz, "schedule add", 0)
                .unwrap_err()
                .to_string()
        };
        let e = bad("0 2 * *", "UTC");
        assert!(
            e.contains("schedule add") && e.contains("cron") && e.contains("five"),
            "{e}"
        );
        let e = bad("0 2 * * *", "Europe/Atlantis");
        assert!(e.contains("time_zone") && e.contains("Europe/Atlantis"), "{e}");
    }

    #[test]
    fn the_next_tick_follows_the_last_run() {
        let created = chrono::DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z")
            .unwrap()
            .timestamp_micros();
        let mut row = ScheduleRow::new("j", String::new(), PathBuf::new(), "0 2 * * *", "UTC", "t", created).unwrap();
        let first = row.next_tick_us().unwrap();
        assert_eq!(first - created, 14 * 3_600_000_000);
        row.last_tick_us = Some(first + 5 * 86_400_000_000);
        assert_eq!(row.next_tick_us().unwrap(), first + 6 * 86_400_000_000);
    }
}
