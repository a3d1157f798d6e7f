//! `backhaul sync`: extending a job's range from its high-water mark (docs/pipelines.md).
//!
//! - No job yet: the first sync is the backfill from `range.from` to the sync's end.
//! - A job: the spec must mean the same job (only `range.to` and `sync.lag`/`sync.lookback`
//!   may differ, see [`same_job`]); the new range `[mark, end)` is planned by the same planner
//!   as a backfill, in `dedup` mode with a lookback chunk over `[mark − lookback, mark)` in
//!   front, and stored as chunks numbered after the job's last one. Earlier chunks keep their
//!   ids and are never committed again by a sync.
//! - In `full_refresh` mode each sync plans one chunk over the whole range `[range.from, end)`:
//!   a new version of the table, committed (and swapped in) by the destination like any chunk.
//!   While the previous refresh is unfinished, nothing new is planned and that one runs.
//!
//! The end is `range.to`, or now − `sync.lag` when it is `now`; `now_us` comes from the
//! caller's clock, so tests never wait.

use std::path::Path;

use backhaul_core::Error;
use backhaul_core::chunking::PlannedChunk;
use backhaul_core::connector::{Connectors, Source};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::schema::SchemaChanges;
use backhaul_core::spec::{DeleteMode, JobSpec, SyncMode};
use tracing::warn;

use crate::checks;
use crate::error::{CoordinatorError, Result};
use crate::plan::{check_sync, plan_job_at, plan_range, relabel, source_table_name, spec_range, sync_keys};
use crate::state::StateStore;
use crate::store::{ChunkRow, ChunkState, Extension, JobRow, Submitted};

/// What a sync did to the job's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The job did not exist: it was planned from `range.from` to the sync's end.
    Backfill(Submitted),
    /// The job's range grew from `from_mark` to `to_mark`; `chunks` are the new chunk ids
    /// (the lookback chunk first, in dedup mode).
    Extended {
        /// The mark before.
        from_mark: i64,
        /// The mark after.
        to_mark: i64,
        /// The new chunks.
        chunks: Vec<u64>,
    },
    /// The sync's end is not after the mark: nothing to plan.
    UpToDate,
}

/// What [`sync_spec`] planned and stored.
#[derive(Debug, Clone)]
pub struct SyncPlanned {
    /// The job as stored afterwards.
    pub job: JobRow,
    /// What the sync did to the job's plan.
    pub outcome: SyncOutcome,
    /// How the destination table followed the source's columns in this run (empty the first
    /// time and when nothing changed), for the run's report.
    pub schema_changes: SchemaChanges,
}

/// Plans a sync of `spec` at `now_us` and stores it.
pub async fn sync_spec(
    store: &dyn StateStore,
    connectors: &dyn Connectors,
    spec: JobSpec,
    origin: &str,
    base_dir: &Path,
    now_us: i64,
) -> Result<SyncPlanned> {
    if spec.sync.is_none() {
        return Err(Error::config(
            origin,
            "sync",
            "`backhaul sync` needs a [sync] section (mode = \"append\", \"dedup\" or \"full_refresh\"); see docs/pipelines.md",
        )
        .into());
    }
    let existing = match store.job(&spec.name).await {
        Ok(job) => Some(job),
        Err(CoordinatorError::UnknownJob(_)) => None,
        Err(e) => return Err(e),
    };
    let Some(job) = existing else {
        let plan = plan_job_at(spec, origin, base_dir, connectors, true, Some(now_us)).await?;
        let job = JobRow {
            job_id: plan.spec.name.clone(),
            spec_toml: plan.spec_toml.clone(),
            base_dir: plan.base_dir.clone(),
            cursor_kind: plan.table.cursor_kind,
            range: plan.range,
            created_at_us: now_us,
            cancelled_at_us: None,
            synced_at_us: None,
        };
        let outcome = store.submit(job, plan.chunks).await?;
        return Ok(SyncPlanned {
            job: store.job(&plan.spec.name).await?,
            outcome: SyncOutcome::Backfill(outcome),
            schema_changes: plan.schema_changes,
        });
    };

    let mut checked = connectors.check(&spec, origin)?;
    let spec_toml = checked.to_canonical_toml();
    let stored = JobSpec::from_toml(&job.spec_toml, &format!("job {} in state", job.job_id))?;
    if !same_job(&stored, &checked.spec) {
        return Err(CoordinatorError::SpecChanged {
            job_id: job.job_id.clone(),
            state: store.describe(),
        });
    }
    checked.validated.resolve_now(now_us);
    checked.resolve_paths(base_dir);
    let destination = checked.destination.build().map_err(|e| relabel(e, origin))?;
    let policy = check_sync(&checked.validated, destination.as_ref(), origin)?.expect("checked above");
    let source = checked.source.build().map_err(|e| relabel(e, origin))?;
    let table = source.describe().await?;
    if table.cursor_kind != job.cursor_kind {
        return Err(CoordinatorError::SpecChanged {
            job_id: job.job_id.clone(),
            state: store.describe(),
        });
    }
    sync_keys(&policy, source.as_ref(), &table, &checked.spec, origin)?;
    let table_name = source_table_name(&checked.spec);
    let detects_deletes = policy.deletes == DeleteMode::Soft;
    let refresh = policy.mode.replaces_table();
    // A refresh re-reads every row, so a cursor that went backwards misses nothing.
    if !refresh {
        check_cursor_not_behind(
            store,
            source.as_ref(),
            &job,
            &table.cursor_column,
            &table_name,
            origin,
            detects_deletes,
        )
        .await?;
    }
    // The source table may have changed since the last run: the destination follows what it
    // can (new columns) and refuses the rest (a changed type) before anything is planned.
    let schema_changes = destination.prepare(&job.job_id, table.schema.clone()).await?;
    let end = spec_range(&table, &checked.validated, origin)?.to;
    let mark = job.high_water();
    if refresh && refresh_unfinished(store, &job.job_id).await? {
        // The killed or failed refresh runs again and becomes the new version, exactly once;
        // a second one planned beside it would read the same table twice.
        return Ok(SyncPlanned {
            job,
            outcome: SyncOutcome::UpToDate,
            schema_changes,
        });
    }
    // A refresh reads the whole range again, from `range.from`, on every sync (a fixed
    // `range.to` keeps the mark where it is); the other modes read past the mark, if anything.
    let (read_from, end) = if refresh {
        (job.range.from, end.max(mark))
    } else {
        (mark, end)
    };
    if !refresh && end <= mark {
        return Ok(SyncPlanned {
            job,
            outcome: SyncOutcome::UpToDate,
            schema_changes,
        });
    }
    let mut chunks = Vec::new();
    if policy.mode == SyncMode::Dedup {
        let lookback = lookback_in(job.cursor_kind, policy.lookback.micros);
        let from = mark.saturating_sub(lookback).max(job.range.from);
        if from < mark {
            chunks.push(PlannedChunk {
                index: 0,
                range: CursorRange::new(from, mark),
                estimated_rows: 0,
                estimated_bytes: 0,
            });
        }
    }
    let new = plan_range(
        source.as_ref(),
        table,
        CursorRange::new(read_from, end),
        &checked.validated,
        origin,
        destination.chunk_cap(),
    )
    .await?;
    chunks.extend(new.chunks);
    let ext = Extension {
        job_id: job.job_id.clone(),
        spec_toml,
        from_mark: mark,
        to_mark: end,
        chunks,
        at_us: now_us,
    };
    let ids = store.extend(ext).await?;
    Ok(SyncPlanned {
        job: store.job(&job.job_id).await?,
        outcome: SyncOutcome::Extended {
            from_mark: mark,
            to_mark: end,
            chunks: ids,
        },
        schema_changes,
    })
}

/// Refuses the sync, before anything is planned, when the source's newest cursor value is
/// older than the newest one already loaded: the cursor went backwards (a table restored from
/// an older backup, a writer with a wrong clock, a rewritten column), so rows written since
/// with cursors below the mark would silently be missed. Skipped when the source cannot tell
/// its maximum or nothing measured is loaded yet (integer cursors carry no maximum in their
/// fingerprints).
async fn check_cursor_not_behind(
    store: &dyn StateStore,
    source: &dyn Source,
    job: &JobRow,
    cursor_column: &str,
    table: &str,
    origin: &str,
    detects_deletes: bool,
) -> Result<()> {
    let Some(source_max) = source.max_cursor().await? else {
        return Ok(());
    };
    let chunks = store.chunks(&job.job_id).await?;
    match cursor_regression(job.cursor_kind, source_max, cursor_column, &chunks) {
        None => Ok(()),
        Some((source_us, loaded_us)) if detects_deletes => {
            // The newest rows deleted at the source look the same; delete detection after
            // the run flags them, and keys that moved instead show as `moved` in its report.
            let at = |us| CursorKind::Timestamp.format(us);
            warn!(
                job = %job.job_id,
                table,
                source_newest = %at(source_us),
                loaded_newest = %at(loaded_us),
                "the source's newest cursor value is older than the newest loaded one: rows were deleted \
                 (delete detection will flag them) or the cursor went backwards"
            );
            Ok(())
        }
        Some((source_us, loaded_us)) => {
            let at = |us| CursorKind::Timestamp.format(us);
            Err(Error::config(
                origin,
                "source.cursor",
                format!(
                    "table `{table}`: the newest `{cursor_column}` at the source ({}) is older than the newest value already loaded ({}): \
                     the cursor went backwards (a restore from an older backup, a writer with a wrong clock, a rewritten column, \
                     or the newest rows deleted), and an incremental sync would miss rows. Nothing was planned. \
                     Re-read what changed with `backhaul replay {} --from …`, then sync again",
                    at(source_us),
                    at(loaded_us),
                    job.job_id
                ),
            )
            .into())
        }
    }
}

/// Whether a full refresh of the job is still waiting for a worker or running: a chunk
/// pending (possibly in a retry backoff) or leased. A parked refresh does not count, so the
/// next sync plans a new one.
async fn refresh_unfinished(store: &dyn StateStore, job_id: &str) -> Result<bool> {
    Ok(store
        .chunks(job_id)
        .await?
        .iter()
        .any(|c| matches!(c.state, ChunkState::Pending | ChunkState::Leased)))
}

/// The chunks that make up the job's table now: all of them, but in a mode whose chunks each
/// replace the table (`full_refresh`) only the newest committed one, the current version; the
/// chunks before it were superseded. Without a committed chunk, all of them (nothing is
/// current yet). `chunks` are in plan order.
pub fn current_chunks(mode: Option<SyncMode>, chunks: Vec<ChunkRow>) -> Vec<ChunkRow> {
    if !mode.is_some_and(SyncMode::replaces_table) {
        return chunks;
    }
    match chunks.iter().rposition(|c| c.state == ChunkState::Committed) {
        Some(current) => chunks.into_iter().skip(current).take(1).collect(),
        None => chunks,
    }
}

/// `(source max, newest loaded)` in microseconds when the source's maximum `source_max` (cursor
/// units) is older than the newest cursor value the committed chunks measured; `None` when it
/// is not, or either side cannot tell.
fn cursor_regression(
    kind: CursorKind,
    source_max: i64,
    cursor_column: &str,
    chunks: &[ChunkRow],
) -> Option<(i64, i64)> {
    let source_us = checks::to_us(kind, source_max)?;
    let loaded_us = checks::newest_measured_us(cursor_column, chunks)?;
    (source_us < loaded_us).then_some((source_us, loaded_us))
}

/// The lookback in cursor units: microseconds, whole days (at least one) for a date cursor.
/// An integer cursor has no time, so it has no lookback.
fn lookback_in(kind: CursorKind, micros: i64) -> i64 {
    match kind {
        CursorKind::Timestamp => micros,
        CursorKind::Date => (micros / 86_400_000_000).max(1),
        CursorKind::Integer => 0,
    }
}

/// Whether `new` is the same job as `stored`, extended: everything but `range.to` and the
/// sync bookkeeping (`lag`, `lookback`) must be equal. A changed source, cursor, destination,
/// chunking or sync mode changes what the job means and is refused.
pub fn same_job(stored: &JobSpec, new: &JobSpec) -> bool {
    let meaning = |spec: &JobSpec| {
        let mut spec = spec.clone();
        spec.range.to = String::new();
        if let Some(sync) = &mut spec.sync {
            sync.lag = None;
            sync.lookback = None;
            // What happens after the rows land, not which rows: may change between syncs.
            sync.deletes = None;
            sync.metadata_columns = None;
        }
        spec
    };
    meaning(stored) == meaning(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> JobSpec {
        JobSpec::from_toml(
            &format!(
                r#"version = 1
name = "orders"
[source]
kind = "postgres"
table = "orders"
cursor = "updated_at"
[range]
from = "2024-01-01"
to = "now"
[stage]
path = "stage"
[destination]
kind = "local"
path = "wh"
table = "orders"
[sync]
mode = "dedup"
{extra}"#
            ),
            "job.toml",
        )
        .unwrap()
    }

    #[test]
    fn extending_is_the_same_job_but_a_new_cursor_or_mode_is_not() {
        let base = spec("");
        let mut later = spec("lag = \"10m\"\nlookback = \"2h\"");
        later.range.to = "2025-01-01".into();
        assert!(same_job(&base, &later));
        let mut cursor = base.clone();
        cursor.source.settings.insert("cursor".into(), "created_at".into());
        assert!(!same_job(&base, &cursor));
        let mut append = base.clone();
        append.sync.as_mut().unwrap().mode = SyncMode::Append;
        assert!(!same_job(&base, &append));
        let mut plain = base.clone();
        plain.sync = None;
        assert!(!same_job(&plain, &base), "a backfill job does not become a sync job");
    }

    #[test]
    fn lookback_is_in_cursor_units() {
        assert_eq!(lookback_in(CursorKind::Timestamp, 3_600_000_000), 3_600_000_000);
        assert_eq!(lookback_in(CursorKind::Date, 3_600_000_000), 1);
        assert_eq!(lookback_in(CursorKind::Integer, 3_600_000_000), 0);
    }
}
