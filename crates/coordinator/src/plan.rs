//! Turning a job spec into a chunk plan, with IO: the source is described and profiled, the
//! stage and destination are checked, then the pure planner in `backhaul_core::chunking` cuts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backhaul_core::Error;
use backhaul_core::chunking::{ChunkCap, PhysicalOrder, PlanContext, PlanPolicy, PlannedChunk, plan_for};
use backhaul_core::connector::{Connectors, Destination, PlanNote, Source, TableDescription};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::fidelity::TypeFidelityReport;
use backhaul_core::schema::SchemaChanges;
use backhaul_core::spec::{
    ChunkPolicy, DEFAULT_PLAN_WORKERS, DeleteMode, JobSpec, StageSpec, SyncPolicy, ValidatedSpec,
};
use backhaul_core::stage::Stage;

use crate::error::Result;

/// A planned job: everything the coordinator stores when the job is submitted.
pub struct JobPlan {
    /// The spec, checked: sections as their connectors write them, job-level paths resolved.
    pub spec: JobSpec,
    /// Canonical TOML of `spec` as submitted (paths as written).
    pub spec_toml: String,
    /// Directory relative paths resolve against.
    pub base_dir: PathBuf,
    /// Validation results.
    pub validated: ValidatedSpec,
    /// The source table.
    pub table: TableDescription,
    /// The whole range in cursor units.
    pub range: CursorRange,
    /// The chunks.
    pub chunks: Vec<PlannedChunk>,
    /// What the plan costs the source and how it keeps the workers busy.
    pub load: PlanLoad,
    /// Each column's types from source to destination, and any lossy step.
    pub fidelity: TypeFidelityReport,
    /// What the chunks use of the destination's quotas ([`Destination::plan_notes`]).
    pub destination_notes: Vec<PlanNote>,
    /// How the destination's existing table followed the source's columns when it was
    /// prepared (empty for a new table, or when `plan` did not prepare it).
    pub schema_changes: SchemaChanges,
    /// The built source (kept so callers need not open it twice).
    pub source: Arc<dyn Source>,
    /// The built destination.
    pub destination: Arc<dyn Destination>,
    /// The checked stage.
    pub stage: Stage,
}

/// The source side of a plan: what `backhaul plan` shows and the cost profiler needs, with
/// no stage or destination involved.
pub struct SourcePlan {
    /// The source table.
    pub table: TableDescription,
    /// The whole range in cursor units.
    pub range: CursorRange,
    /// The chunks.
    pub chunks: Vec<PlannedChunk>,
    /// What the plan costs the source and how it keeps the workers busy.
    pub load: PlanLoad,
}

/// Estimates `backhaul plan` shows beside the chunks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanLoad {
    /// Workers the plan is balanced for.
    pub workers: usize,
    /// How the cursor follows physical order, when the source can tell.
    pub order: Option<PhysicalOrder>,
    /// Estimated database read amplification, when the source can tell.
    pub read_amplification: Option<f64>,
    /// Estimated share of the workers' time idle because of the plan.
    pub idle_share: f64,
    /// Set when a destination's chunk cap made the chunks larger: the cap, and how many
    /// chunks the chunking policy alone would have cut.
    pub capped: Option<(ChunkCap, usize)>,
}

/// Describes `source`, prepares it for the spec's range, reads its density and cuts the
/// chunks, within `cap` (a destination's [`Destination::chunk_cap`]) when given. `origin` names
/// the spec file in errors. The source may be local or a worker's (cluster-mode profiling
/// reads through a remote one).
pub async fn plan_source(
    source: &dyn Source,
    validated: &ValidatedSpec,
    origin: &str,
    cap: Option<ChunkCap>,
) -> Result<SourcePlan> {
    let table = source.describe().await?;
    let range = spec_range(&table, validated, origin)?;
    plan_range(source, table, range, validated, origin, cap).await
}

/// The spec's `[range]` in the units of `table`'s cursor; errors name `range.from`/`range.to`.
pub(crate) fn spec_range(table: &TableDescription, validated: &ValidatedSpec, origin: &str) -> Result<CursorRange> {
    let kind = table.cursor_kind;
    let bound = |b: backhaul_core::cursor::SpecBound, field: &str| {
        b.to_cursor(kind).map_err(|m| {
            Error::config(
                origin,
                field,
                format!("{m} (cursor `{}` is a {} column)", table.cursor_column, kind.as_str()),
            )
        })
    };
    let (from, to) = (bound(validated.from, "range.from")?, bound(validated.to, "range.to")?);
    if from >= to {
        return Err(Error::config(
            origin,
            "range",
            format!("the range {} is empty", CursorRange { from, to }.display(kind)),
        )
        .into());
    }
    Ok(CursorRange::new(from, to))
}

/// Prepares `source` for `range` of the described `table`, reads its density and cuts the
/// chunks by the spec's chunking, within `cap`: the one planner for a whole job and for a
/// sync's extension.
pub(crate) async fn plan_range(
    source: &dyn Source,
    table: TableDescription,
    range: CursorRange,
    validated: &ValidatedSpec,
    origin: &str,
    cap: Option<ChunkCap>,
) -> Result<SourcePlan> {
    let kind = table.cursor_kind;
    let full_refresh = validated.sync.as_ref().is_some_and(|s| s.mode.replaces_table());
    let policy = match validated.chunking {
        // A refresh is one version of the table, so one chunk: its commit is the swap.
        _ if full_refresh => PlanPolicy::FixedWidth(range.to.saturating_sub(range.from).max(1)),
        ChunkPolicy::FixedStep(n) => PlanPolicy::FixedWidth(n),
        ChunkPolicy::FixedSpan(span) => match kind {
            CursorKind::Timestamp => PlanPolicy::FixedWidth(span.micros),
            CursorKind::Date => PlanPolicy::FixedWidth((span.micros / 86_400_000_000).max(1)),
            CursorKind::Integer => {
                return Err(Error::config(
                    origin,
                    "chunking.every",
                    "the cursor is an integer column; give an integer step",
                )
                .into());
            }
        },
        ChunkPolicy::TargetBytes { bytes, .. } => PlanPolicy::TargetBytes(bytes),
    };
    let workers = match validated.chunking {
        ChunkPolicy::TargetBytes { workers, .. } => workers,
        _ => DEFAULT_PLAN_WORKERS,
    };
    source.prepare(range).await?;
    let density = source.density(range).await?;
    let order = source.physical_order().await?;
    let granularity = kind.granularity();
    let context = PlanContext {
        workers: usize::from(workers),
        order,
        max_chunks: cap,
    };
    let plan =
        plan_for(range, policy, &density, granularity, context).map_err(|m| Error::config(origin, "chunking", m))?;
    let load = PlanLoad {
        workers: context.workers,
        order,
        read_amplification: plan.read_amplification,
        idle_share: plan.idle_share,
        capped: cap.zip(plan.capped_from),
    };
    Ok(SourcePlan {
        table,
        range,
        chunks: plan.chunks,
        load,
    })
}

/// Validates, builds connectors, checks stage and destination, and plans chunks.
///
/// `origin` names the spec file in errors; `base_dir` is where relative paths resolve.
///
/// With `prepare_destination` the stage is probed and the destination table created (or
/// checked to belong to this job); without it, `plan` creates and writes nothing at either.
pub async fn plan_job(
    raw: JobSpec,
    origin: &str,
    base_dir: &Path,
    connectors: &dyn Connectors,
    prepare_destination: bool,
) -> Result<JobPlan> {
    plan_job_at(raw, origin, base_dir, connectors, prepare_destination, None).await
}

/// [`plan_job`] of a sync job at `now_us`: `range.to = "now"` ends the range at now − lag.
/// Without `now_us`, `now` is refused (a fixed backfill has a fixed end).
pub async fn plan_job_at(
    raw: JobSpec,
    origin: &str,
    base_dir: &Path,
    connectors: &dyn Connectors,
    prepare_destination: bool,
    now_us: Option<i64>,
) -> Result<JobPlan> {
    let mut checked = connectors.check(&raw, origin)?;
    if let Some(now) = now_us {
        checked.validated.resolve_now(now);
    }
    let spec_toml = checked.to_canonical_toml();
    checked.resolve_paths(base_dir);
    let destination = checked.destination.build().map_err(|e| relabel(e, origin))?;
    let stage = if prepare_destination {
        checked_stage(&checked.spec.stage, destination.as_ref(), origin).await?
    } else {
        let stage = Stage::unprobed(&checked.spec.stage, origin)?;
        destination.check_stage(&stage).map_err(|e| relabel(e, origin))?;
        stage
    };
    let source = checked.source.build().map_err(|e| relabel(e, origin))?;
    let validated = checked.validated;
    let sync = check_sync(&validated, destination.as_ref(), origin)?;
    let SourcePlan {
        table,
        range,
        chunks,
        load,
    } = plan_source(source.as_ref(), &validated, origin, destination.chunk_cap()).await?;
    let spec = checked.spec;
    if let Some(policy) = &sync {
        sync_keys(policy, source.as_ref(), &table, &spec, origin)?;
    }
    let schema_changes = if prepare_destination {
        destination.prepare(&spec.name, table.schema.clone()).await?
    } else {
        SchemaChanges::default()
    };
    let fidelity = TypeFidelityReport::build(&spec.name, &table, destination.as_ref());
    let mut destination_notes = Vec::new();
    if let Some((cap, from)) = load.capped {
        destination_notes.push(PlanNote {
            warning: false,
            message: format!(
                "chunks made larger to stay within {}: the chunking policy cuts {from} chunks, the plan has {}",
                cap.reason,
                chunks.len()
            ),
        });
    }
    destination_notes.extend(destination.plan_notes(&chunks));
    Ok(JobPlan {
        spec,
        spec_toml,
        base_dir: base_dir.to_path_buf(),
        validated,
        table,
        range,
        chunks,
        load,
        fidelity,
        destination_notes,
        schema_changes,
        source,
        destination,
        stage,
    })
}

/// The spec's `[sync]`, refused when the destination cannot commit its mode: the one place
/// that asks [`Destination::supports_sync_mode`].
pub(crate) fn check_sync(
    validated: &ValidatedSpec,
    destination: &dyn Destination,
    origin: &str,
) -> Result<Option<SyncPolicy>> {
    let Some(policy) = &validated.sync else { return Ok(None) };
    if policy.metadata_columns && !destination.supports_metadata_columns() {
        return Err(Error::config(
            origin,
            "sync.metadata_columns",
            "this destination does not add the _backhaul_deleted/_backhaul_synced_at columns yet; use the local warehouse",
        )
        .into());
    }
    if policy.deletes == DeleteMode::Soft && !destination.supports_delete_detection() {
        return Err(Error::config(
            origin,
            "sync.deletes",
            "this destination does not detect deletes yet; use the local warehouse",
        )
        .into());
    }
    if !destination.supports_sync_mode(policy.mode) {
        return Err(Error::config(
            origin,
            "sync.mode",
            format!(
                "this destination does not support sync mode `{}` yet; use mode = \"append\" or the local warehouse",
                policy.mode.as_str()
            ),
        )
        .into());
    }
    Ok(Some(policy.clone()))
}

/// The key columns of a sync job (the spec's, else the source's), refused when a dedup job has
/// none, or when delete detection is on and the source cannot answer it or a key column has a
/// type it cannot compare: the one place that checks a sync job against its source.
pub(crate) fn sync_keys(
    policy: &SyncPolicy,
    source: &dyn Source,
    table: &TableDescription,
    spec: &JobSpec,
    origin: &str,
) -> Result<Vec<String>> {
    let name = source_table_name(spec);
    let keys = policy.key_columns(origin, &name, &table.key_columns)?;
    if policy.deletes == DeleteMode::Soft {
        if !source.supports_delete_detection() {
            return Err(Error::config(
                origin,
                "sync.deletes",
                "this source cannot detect deletes (PostgreSQL and MySQL sources can)",
            )
            .into());
        }
        backhaul_core::deletes::check_key_types(&table.schema, &keys, origin, &name)?;
    }
    Ok(keys)
}

/// The source table's name for messages: the source section's `table`, else the job's name.
pub(crate) fn source_table_name(spec: &JobSpec) -> String {
    let table = spec.source.settings.get("table").and_then(|v| v.as_str());
    table.unwrap_or(&spec.name).to_string()
}

/// Builds the stage (checked writable) and lets the destination refuse it.
async fn checked_stage(spec: &StageSpec, destination: &dyn Destination, origin: &str) -> Result<Stage> {
    let stage = Stage::from_spec(spec, origin).await?;
    destination.check_stage(&stage).map_err(|e| relabel(e, origin))?;
    Ok(stage)
}

/// Stage and connector builds report `<spec>`; put the real file name in.
pub(crate) fn relabel(e: Error, origin: &str) -> Error {
    match e {
        Error::Config { file, field, message } if file == "<spec>" => Error::Config {
            file: origin.into(),
            field,
            message,
        },
        other => other,
    }
}

/// Plans `spec` and stores it as a job, or finds the identical stored job: what `backhaul
/// backfill` does locally and what SubmitJob does for a remote client, so both share one path.
pub async fn submit_spec(
    store: &dyn crate::state::StateStore,
    connectors: &dyn Connectors,
    spec: JobSpec,
    origin: &str,
    base_dir: &Path,
) -> Result<(crate::store::JobRow, crate::store::Submitted, TypeFidelityReport)> {
    let plan = plan_job(spec, origin, base_dir, connectors, true).await?;
    let job = crate::store::JobRow {
        job_id: plan.spec.name.clone(),
        spec_toml: plan.spec_toml.clone(),
        base_dir: plan.base_dir.clone(),
        cursor_kind: plan.table.cursor_kind,
        range: plan.range,
        created_at_us: crate::store::now_us(),
        cancelled_at_us: None,
        synced_at_us: None,
    };
    let outcome = store.submit(job.clone(), plan.chunks).await?;
    let job = store.job(&job.job_id).await?;
    Ok((job, outcome, plan.fidelity))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::SchemaRef;
    use backhaul_core::connector::ChunkCommit;
    use backhaul_core::proof::{ChunkProof, ProofLevel};
    use backhaul_core::stage::StageKind;
    use futures::future::BoxFuture;

    use super::*;

    /// A destination that loads only from GCS, like BigQuery load jobs.
    struct GcsOnly;

    impl Destination for GcsOnly {
        fn prepare(
            &self,
            _: &str,
            _: SchemaRef,
        ) -> BoxFuture<'_, backhaul_core::Result<backhaul_core::schema::SchemaChanges>> {
            unreachable!("not planned that far")
        }
        fn proof_level(&self) -> ProofLevel {
            ProofLevel::CountOnly
        }
        fn commit_chunk<'a>(
            &'a self,
            _: &'a Stage,
            _: &'a ChunkCommit,
        ) -> BoxFuture<'a, backhaul_core::Result<ChunkProof>> {
            unreachable!("not planned that far")
        }
        fn read_back(&self, _: &str, _: u64) -> BoxFuture<'_, backhaul_core::Result<Option<ChunkProof>>> {
            unreachable!("not planned that far")
        }
        fn check_stage(&self, stage: &Stage) -> backhaul_core::Result<()> {
            if stage.kind() == StageKind::Gcs {
                return Ok(());
            }
            Err(Error::config(
                "<spec>",
                "stage.url",
                format!("load jobs read only gs:// stages, not {}", stage.url()),
            ))
        }
    }

    /// Accepts every stage: the trait's default.
    struct AnyStage;

    impl Destination for AnyStage {
        fn prepare(
            &self,
            _: &str,
            _: SchemaRef,
        ) -> BoxFuture<'_, backhaul_core::Result<backhaul_core::schema::SchemaChanges>> {
            unreachable!("not planned that far")
        }
        fn proof_level(&self) -> ProofLevel {
            ProofLevel::CountOnly
        }
        fn commit_chunk<'a>(
            &'a self,
            _: &'a Stage,
            _: &'a ChunkCommit,
        ) -> BoxFuture<'a, backhaul_core::Result<ChunkProof>> {
            unreachable!("not planned that far")
        }
        fn read_back(&self, _: &str, _: u64) -> BoxFuture<'_, backhaul_core::Result<Option<ChunkProof>>> {
            unreachable!("not planned that far")
        }
    }

    #[tokio::test]
    async fn a_destination_refuses_an_incompatible_stage_naming_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let spec = StageSpec::local(dir.path().join("stage"));
        let e = checked_stage(&spec, &GcsOnly, "job.toml").await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("job.toml: stage.url: load jobs read only gs://"),
            "{text}"
        );
        let stage = checked_stage(&spec, &AnyStage, "job.toml").await.unwrap();
        assert_eq!(stage.kind(), StageKind::Local);
    }

    fn validated(sync: &str) -> ValidatedSpec {
        let text = format!(
            "version = 1\nname = \"j\"\n[source]\nkind = \"postgres\"\n[range]\nfrom = \"2024-01-01\"\nto = \"now\"\n\
             [stage]\npath = \"stage\"\n[destination]\nkind = \"snowflake\"\n[sync]\n{sync}\n"
        );
        JobSpec::from_toml(&text, "job.toml")
            .unwrap()
            .validate("job.toml")
            .unwrap()
    }

    #[test]
    fn a_destination_without_the_sync_features_refuses_them_naming_the_key() {
        let refused = |sync: &str| {
            check_sync(&validated(sync), &AnyStage, "job.toml")
                .unwrap_err()
                .to_string()
        };
        let e = refused("mode = \"dedup\"\nmetadata_columns = true");
        assert!(e.starts_with("job.toml: sync.metadata_columns:"), "{e}");
        let e = refused("mode = \"dedup\"\nmetadata_columns = true\ndeletes = \"soft\"");
        assert!(e.starts_with("job.toml: sync.metadata_columns:"), "{e}");
        let e = refused("mode = \"dedup\"");
        assert!(e.starts_with("job.toml: sync.mode:"), "{e}");
        let e = refused("mode = \"full_refresh\"");
        assert!(
            e.starts_with("job.toml: sync.mode:") && e.contains("full_refresh"),
            "{e}"
        );
        let policy = check_sync(&validated("mode = \"append\""), &AnyStage, "job.toml").unwrap();
        assert_eq!(policy.unwrap().mode, backhaul_core::spec::SyncMode::Append);
    }
}
