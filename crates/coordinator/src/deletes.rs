//! The delete-detection step of a sync (`sync.deletes = "soft"`, docs/pipelines.md): after the
//! sync's chunks committed, the committed ranges of the job are compared at the source and the
//! destination (`backhaul_core::deletes`) and keys deleted at the source are flagged.

use backhaul_core::connector::Connectors;
use backhaul_core::deletes::{DeleteReport, detect_deletes, disjoint_ranges};
use backhaul_core::spec::{DeleteMode, JobSpec};

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
