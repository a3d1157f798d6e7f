//! What a scheduled run does: the [`RunLauncher`] hook, and the default that submits the
//! schedule's spec through the same path as `backhaul submit`.

use std::path::Path;
use std::sync::Arc;

use backhaul_core::connector::Connectors;
use backhaul_core::limit::{ConnectionLimit, LimitedConnectors};
use backhaul_core::pipeline_jobs::expand_pipeline;
use backhaul_core::spec::pipeline::job_prefix;
use backhaul_core::spec::{JobSpec, PipelineSpec, is_pipeline};
use tracing::warn;

use super::ScheduleRow;
use crate::error::{CoordinatorError, Result};
use crate::state::StateStore;

/// Starts the runs of schedules and tells whether one is still going.
#[tonic::async_trait]
pub trait RunLauncher: Send + Sync + 'static {
    /// Starts one run of `schedule` at `now_us` (microseconds since the epoch); returns what
    /// the run loads under: the job id, or for a pipeline the pipeline's name.
    async fn start(&self, schedule: &ScheduleRow, now_us: i64) -> Result<String>;
    /// Whether the run of `schedule` that [`RunLauncher::start`] named `run` still has chunks
    /// to load.
    async fn running(&self, schedule: &ScheduleRow, run: &str) -> Result<bool>;
}

/// Starts a run through the coordinator's own paths: a spec with `[sync]` as a sync run at
/// the tick's time (its range extended from the job's high-water mark to now − lag, as
/// `backhaul sync` does), any other spec as `backhaul submit` would (a fixed range: a run after
/// the first one continues or confirms the same job). A pipeline spec is expanded at each run
/// (its schemas discovered again, so a table added to a `[schema]` joins) and each table's job
/// is run that way.
pub struct SubmitLauncher {
    store: Arc<dyn StateStore>,
    connectors: Arc<dyn Connectors>,
}

impl SubmitLauncher {
    /// A launcher submitting into `store`, planning with `connectors`.
    pub fn new(store: Arc<dyn StateStore>, connectors: Arc<dyn Connectors>) -> Self {
        SubmitLauncher { store, connectors }
    }

    /// Plans one job spec: as a sync when it has `[sync]`, else as a submit.
    async fn run_spec(
        &self,
        connectors: &dyn Connectors,
        spec: JobSpec,
        origin: &str,
        base_dir: &Path,
        now_us: i64,
    ) -> Result<String> {
        if spec.sync.is_some() {
            let planned =
                crate::sync::sync_spec(self.store.as_ref(), connectors, spec, origin, base_dir, now_us).await?;
            return Ok(planned.job.job_id);
        }
        let (job, _, _) = crate::plan::submit_spec(self.store.as_ref(), connectors, spec, origin, base_dir).await?;
        Ok(job.job_id)
    }

    /// Expands the pipeline and plans every table's job. A table that cannot be planned is
    /// logged and left for the next run; the run fails only when no table could be planned.
    async fn start_pipeline(&self, schedule: &ScheduleRow, origin: &str, now_us: i64) -> Result<String> {
        let spec = PipelineSpec::from_toml(&schedule.spec_toml, origin)?;
        let limit = ConnectionLimit::new(spec.max_source_connections());
        let connectors = LimitedConnectors::new(self.connectors.clone(), limit.clone());
        let jobs = expand_pipeline(&spec, &connectors, origin, &schedule.base_dir, &limit).await?;
        let mut first_error = None;
        let mut planned = 0;
        for job in jobs {
            let table_origin = format!("{origin} ({}, table {})", job.key, job.table);
            match self
                .run_spec(&connectors, job.spec, &table_origin, &schedule.base_dir, now_us)
                .await
            {
                Ok(_) => planned += 1,
                Err(e) => {
                    warn!(schedule = %schedule.name, table = %job.table, error = %e, "a table of the scheduled pipeline run could not be planned");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if planned == 0 => Err(e),
            _ => Ok(spec.pipeline.name),
        }
    }

    /// Whether the job `job_id` still has chunks to load.
    async fn job_running(&self, job_id: &str) -> Result<bool> {
        match self.store.job(job_id).await {
            Ok(job) if job.cancelled_at_us.is_some() => Ok(false),
            Ok(_) => Ok(!self.store.summary(job_id).await?.is_finished()),
            Err(CoordinatorError::UnknownJob(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[tonic::async_trait]
impl RunLauncher for SubmitLauncher {
    async fn start(&self, schedule: &ScheduleRow, now_us: i64) -> Result<String> {
        let origin = format!("schedule {}", schedule.name);
        if is_pipeline(&schedule.spec_toml) {
            return self.start_pipeline(schedule, &origin, now_us).await;
        }
        let spec = JobSpec::from_toml(&schedule.spec_toml, &origin)?;
        self.run_spec(self.connectors.as_ref(), spec, &origin, &schedule.base_dir, now_us)
            .await
    }

    async fn running(&self, schedule: &ScheduleRow, run: &str) -> Result<bool> {
        if !is_pipeline(&schedule.spec_toml) {
            return self.job_running(run).await;
        }
        // A pipeline's run goes on while any table's job has chunks to load, whichever run
        // planned them: one run of a pipeline at a time.
        let prefix = job_prefix(run);
        for (job, summary) in self.store.jobs().await? {
            if job.job_id.starts_with(&prefix) && job.cancelled_at_us.is_none() && !summary.is_finished() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
