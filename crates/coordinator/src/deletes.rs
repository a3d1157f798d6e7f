//! The delete-detection step of a sync (`sync.deletes = "soft"`, docs/pipelines.md): after the
//! sync's chunks committed, the committed ranges of the job are compared at the source and the
//! destination (`backhaul_core::deletes`) and keys deleted at the source are flagged.
//!
//! `backhaul sync` runs it at the end of its local run; on a coordinator, whose workers load
//! the chunks of `sync --coordinator` and of scheduled runs with nobody waiting for them, the
//! [`DeleteSweeper`] runs it once every chunk of such a job committed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backhaul_core::connector::Connectors;
use backhaul_core::deletes::{DeleteReport, detect_deletes, disjoint_ranges};
use backhaul_core::spec::{DeleteMode, JobSpec};

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::Result;
use crate::plan::{check_sync, relabel, sync_keys};
use crate::state::StateStore;
use crate::store::{ChunkState, JobRow};

/// Runs delete detection for `job` as its stored spec says; `None` when the spec does not ask
/// for it. Only committed chunks' ranges are compared: a range still loading would show its
/// rows as missing at the destination, not as deleted at the source.
pub async fn detect_job_deletes(
    store: &dyn StateStore,
    connectors: &dyn Connectors,
    job: &JobRow,
) -> Result<Option<DeleteReport>> {
    let origin = format!("job {}", job.job_id);
    let spec = JobSpec::from_toml(&job.spec_toml, &origin)?;
    let mut checked = connectors.check(&spec, &origin)?;
    let wanted = checked
        .validated
        .sync
        .as_ref()
        .is_some_and(|s| s.deletes == DeleteMode::Soft);
    if !wanted {
        return Ok(None);
    }
    checked.resolve_paths(&job.base_dir);
    let destination = checked.destination.build().map_err(|e| relabel(e, &origin))?;
    let policy = check_sync(&checked.validated, destination.as_ref(), &origin)?.expect("sync checked above");
    let source = checked.source.build().map_err(|e| relabel(e, &origin))?;
    let table = source.describe().await?;
    let keys = sync_keys(&policy, source.as_ref(), &table, &checked.spec, &origin)?;
    let committed: Vec<_> = store
        .chunks(&job.job_id)
        .await?
        .into_iter()
        .filter(|c| c.state == ChunkState::Committed)
        .map(|c| c.range)
        .collect();
    let ranges = disjoint_ranges(&committed);
    let report = detect_deletes(source.as_ref(), destination.as_ref(), &job.job_id, &keys, &ranges).await?;
    tracing::info!(
        job = %job.job_id,
        ranges = report.ranges_checked,
        deleted = report.deleted,
        moved = report.moved,
        "delete detection done"
    );
    Ok(Some(report))
}

/// How often a coordinator looks for sync jobs whose chunks all committed since their last
/// delete detection.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(15);

/// Runs delete detection on a coordinator: for every job whose spec asks for it
/// (`sync.deletes = "soft"`), once all its chunks are committed and the job changed (its
/// high-water mark or its committed chunks) since the last detection. Remembers what it
/// checked in memory, so after a restart each such job is checked once more: harmless, as an
/// unchanged range costs one digest query per side and marks nothing.
pub struct DeleteSweeper {
    store: Arc<dyn StateStore>,
    connectors: Arc<dyn Connectors>,
    /// Per job: the (high-water mark, committed chunks) of its last detection.
    checked: Mutex<HashMap<String, (i64, u64)>>,
}

impl DeleteSweeper {
    /// A sweeper over `store`, reading sources and destinations through `connectors`.
    pub fn new(store: Arc<dyn StateStore>, connectors: Arc<dyn Connectors>) -> Self {
        DeleteSweeper {
            store,
            connectors,
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// One look: detection for every job that is due; returns each job's report. A job
    /// whose detection fails is logged and tried again at the next look.
    pub async fn sweep(&self) -> Result<Vec<(String, DeleteReport)>> {
        let mut reports = Vec::new();
        for (job, summary) in self.store.jobs().await? {
            let complete = job.cancelled_at_us.is_none() && summary.chunks > 0 && summary.committed == summary.chunks;
            let state = (job.high_water(), summary.committed);
            let due = complete
                && wants_deletes(&job)
                && self.checked.lock().expect("not poisoned").get(&job.job_id) != Some(&state);
            if !due {
                continue;
            }
            match detect_job_deletes(self.store.as_ref(), self.connectors.as_ref(), &job).await {
                Ok(Some(report)) => {
                    self.checked
                        .lock()
                        .expect("not poisoned")
                        .insert(job.job_id.clone(), state);
                    reports.push((job.job_id.clone(), report));
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(job = %job.job_id, error = %e, "delete detection failed; trying again at the next look")
                }
            }
        }
        Ok(reports)
    }

    /// Looks every `every` until `cancel` fires. Owned by the coordinator's task set.
    pub async fn run(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.sweep().await {
                warn!(error = %e, "delete detection could not read the state");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// Whether the job's stored spec asks for delete detection (read without the connectors).
fn wants_deletes(job: &JobRow) -> bool {
    JobSpec::from_toml(&job.spec_toml, &job.job_id)
        .ok()
        .and_then(|spec| spec.sync)
        .is_some_and(|sync| sync.deletes == Some(DeleteMode::Soft))
}
