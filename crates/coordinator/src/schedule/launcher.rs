//! What a scheduled run does: the [`RunLauncher`] hook, and the default that submits the
//! schedule's spec through the same path as `backhaul submit`.

use std::sync::Arc;

use backhaul_core::connector::Connectors;
use backhaul_core::spec::JobSpec;

use super::ScheduleRow;
use crate::error::{CoordinatorError, Result};
use crate::state::StateStore;

/// Starts the runs of schedules and tells whether one is still going.
#[tonic::async_trait]
pub trait RunLauncher: Send + Sync + 'static {
    /// Starts one run of `schedule` at `now_us` (microseconds since the epoch); returns the
    /// job id the run loads under.
    async fn start(&self, schedule: &ScheduleRow, now_us: i64) -> Result<String>;
    /// Whether the run loading as `job_id` still has chunks to load.
    async fn running(&self, job_id: &str) -> Result<bool>;
}

/// Starts a run through the coordinator's own paths: a spec with `[sync]` as a sync run at
/// the tick's time (its range extended from the job's high-water mark to now − lag, as
/// `backhaul sync` does), any other spec as `backhaul submit` would (a fixed range: a run after
/// the first one continues or confirms the same job).
pub struct SubmitLauncher {
    store: Arc<dyn StateStore>,
    connectors: Arc<dyn Connectors>,
}

impl SubmitLauncher {
    /// A launcher submitting into `store`, planning with `connectors`.
    pub fn new(store: Arc<dyn StateStore>, connectors: Arc<dyn Connectors>) -> Self {
        SubmitLauncher { store, connectors }
    }
}

#[tonic::async_trait]
impl RunLauncher for SubmitLauncher {
    async fn start(&self, schedule: &ScheduleRow, now_us: i64) -> Result<String> {
        let origin = format!("schedule {}", schedule.name);
        let spec = JobSpec::from_toml(&schedule.spec_toml, &origin)?;
        if spec.sync.is_some() {
            let planned = crate::sync::sync_spec(
                self.store.as_ref(),
                self.connectors.as_ref(),
                spec,
                &origin,
                &schedule.base_dir,
                now_us,
            )
            .await?;
            return Ok(planned.job.job_id);
        }
        let (job, _, _) = crate::plan::submit_spec(
            self.store.as_ref(),
            self.connectors.as_ref(),
            spec,
            &origin,
            &schedule.base_dir,
        )
        .await?;
        Ok(job.job_id)
    }

    async fn running(&self, job_id: &str) -> Result<bool> {
        match self.store.job(job_id).await {
            Ok(job) if job.cancelled_at_us.is_some() => Ok(false),
            Ok(_) => Ok(!self.store.summary(job_id).await?.is_finished()),
            Err(CoordinatorError::UnknownJob(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
