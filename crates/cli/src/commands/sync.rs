//! `backhaul sync`: extend a sync job's range from its high-water mark and run the new chunks.

use std::path::{Path, PathBuf};

use anyhow::Result;
use backhaul_coordinator::deletes::detect_job_deletes;
use backhaul_coordinator::{Store, SyncOutcome, SyncPlanned, sync_spec};
use backhaul_core::connector::Connectors;
use backhaul_core::cursor::{CursorKind, SpecBound};
use backhaul_core::deletes::DeleteReport;
use backhaul_core::limit::ConnectionLimit;
use backhaul_core::spec::JobSpec;
use clap::Args;

use super::backfill::RunArgs;
use super::common::{self, load_spec, open_store_exclusive};
use super::remote::RemoteArgs;
use super::submit::Submission;
use crate::Globals;
use crate::connectors::builtin_connectors;
use crate::{local, pipeline};

/// Arguments of `sync`.
#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Job spec file with a `[sync]` section, or a pipeline spec (see docs/pipelines.md).
    spec: PathBuf,
    /// The time the sync runs at, instead of the clock (RFC 3339 or a date): `range.to =
    /// "now"` ends at this minus `sync.lag`. For tests and for re-running a missed sync.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    now: Option<i64>,
    #[command(flatten)]
    run: RunArgs,
    /// Run the sync on a coordinator (--coordinator URL) instead of in this process: the
    /// coordinator extends the job and its workers load the new chunks. The local-run options
    /// (--workers, --lease-ttl, …) do not apply then.
    #[command(flatten)]
    remote: RemoteArgs,
    /// Directory relative paths in the spec resolve against on the coordinator and workers
    /// (with --coordinator); default: the spec file's directory on this machine.
    #[arg(long, value_name = "DIR", requires = "coordinator")]
    base_dir: Option<PathBuf>,
    /// With --coordinator: wait for the new chunks to load, drawing progress; exit like
    /// `submit --wait` (0, 4 parked). Without it the command returns once the sync is planned.
    #[arg(long, requires = "coordinator")]
    wait: bool,
}

pub fn parse_time(text: &str) -> Result<i64, String> {
    match SpecBound::parse(text)? {
        SpecBound::Time(us) => Ok(us),
        _ => Err(format!("`{text}` is not a date or RFC 3339 timestamp")),
    }
}

/// Extends (or, the first time, plans) the job, or every table's job of a pipeline, and runs
/// every pending chunk to the end.
pub async fn run(globals: &Globals, args: SyncArgs) -> Result<u8> {
    if args.remote.coordinator.is_some() {
        let submission = Submission {
            spec: &args.spec,
            base_dir: args.base_dir.as_deref(),
            wait: args.wait,
            fidelity_report: None,
            sync_now: Some(args.now),
        };
        if pipeline::is_pipeline_file(&args.spec)? {
            return sync_pipeline_remotely(globals, &args, &submission).await;
        }
        return super::submit::send(globals, &args.remote, submission).await;
    }
    let now = args.now.unwrap_or_else(backhaul_coordinator::now_us);
    if pipeline::is_pipeline_file(&args.spec)? {
        // Every table is checked before the state is opened: a bad one writes nothing.
        let loaded = pipeline::load(&args.spec).await?;
        let store = open_store_exclusive(globals)?;
        let run = &args.run;
        return pipeline::run_tables(globals, &loaded, |job, p| {
            let limit = Some(p.limit.clone());
            sync_job(
                globals,
                &store,
                p.connectors(),
                job.spec.clone(),
                &p.origin,
                &p.base,
                now,
                run,
                limit,
            )
        })
        .await;
    }
    let store = open_store_exclusive(globals)?;
    let (spec, origin, base) = load_spec(&args.spec)?;
    let (code, doc) = sync_job(
        globals,
        &store,
        &builtin_connectors(),
        spec,
        &origin,
        &base,
        now,
        &args.run,
        None,
    )
    .await?;
    if globals.output == crate::OutputFormat::Json {
        crate::output::print_json(&doc);
    }
    Ok(code)
}

/// `sync --coordinator` of a pipeline: the pipeline is expanded here (its schemas discovered,
/// every table's job checked, before anything is sent), then each table's job is sent as a
/// sync; the coordinator plans each and its workers load them. Reported per table.
async fn sync_pipeline_remotely(globals: &Globals, args: &SyncArgs, submission: &Submission<'_>) -> Result<u8> {
    let loaded = pipeline::load(&args.spec).await?;
    let base_dir = super::submit::base_dir_of(&args.spec, args.base_dir.as_deref())?;
    pipeline::run_tables(globals, &loaded, |job, p| {
        let base_dir = base_dir.clone();
        async move {
            let toml = job.spec.to_canonical_toml();
            let origin = format!("{} ({})", p.origin, job.key);
            // Tables are sent side by side: one progress bar would not tell them apart.
            let sent =
                super::submit::send_text(globals, &args.remote, &toml, &origin, &base_dir, submission, false).await?;
            Ok((sent.code, sent.doc))
        }
    })
    .await
}

/// Syncs one job and runs its chunks; returns the exit code it deserves and its summary as
/// JSON (text mode has printed it).
#[allow(clippy::too_many_arguments)]
pub async fn sync_job(
    globals: &Globals,
    store: &Store,
    connectors: &dyn Connectors,
    spec: JobSpec,
    origin: &str,
    base: &Path,
    now: i64,
    run: &RunArgs,
    limit: Option<ConnectionLimit>,
) -> Result<(u8, serde_json::Value)> {
    let SyncPlanned {
        job,
        outcome,
        schema_changes,
    } = sync_spec(store, connectors, spec, origin, base, now).await?;
    if globals.output == crate::OutputFormat::Text {
        let kind = job.cursor_kind;
        match &outcome {
            SyncOutcome::Backfill(_) => eprintln!(
                "first sync of job {}: backfill over {}",
                job.job_id,
                job.range.display(kind)
            ),
            SyncOutcome::Extended {
                from_mark,
                to_mark,
                chunks,
            } => eprintln!(
                "sync of job {}: high-water mark {} → {}, {} new chunks",
                job.job_id,
                kind.format(*from_mark),
                kind.format(*to_mark),
                chunks.len()
            ),
            SyncOutcome::UpToDate => eprintln!(
                "job {} is up to date (high-water mark {}); running any unfinished chunks",
                job.job_id,
                kind.format(job.high_water())
            ),
        }
    }
    let mut local = run.local(globals, &job.job_id);
    local.connection_limit = limit;
    let report = local::run(store, local).await?;
    let (code, mut doc) = common::run_summary(globals, store, &job.job_id, &report).await?;
    // The destination followed the source's columns before anything was planned.
    match globals.output {
        crate::OutputFormat::Json => doc["schema_changes"] = serde_json::to_value(&schema_changes)?,
        crate::OutputFormat::Text if !schema_changes.is_empty() => println!("  schema    {schema_changes}"),
        crate::OutputFormat::Text => {}
    }
    // Deletes are looked for only once every chunk committed: a range still loading would
    // look like rows deleted at the source.
    let deletes = if code == 0 {
        let job = backhaul_coordinator::StateStore::job(store, &job.job_id).await?;
        detect_job_deletes(store, connectors, &job).await?
    } else {
        None
    };
    if let Some(deletes) = &deletes {
        match globals.output {
            crate::OutputFormat::Json => doc["deletes"] = serde_json::to_value(deletes)?,
            crate::OutputFormat::Text => print_deletes(job.cursor_kind, deletes),
        }
    }
    if code != 0 {
        return Ok((code, doc));
    }
    // A loaded run whose table is stale or whose volume looks wrong is not a success.
    let chunks = backhaul_coordinator::StateStore::chunks(store, &job.job_id).await?;
    match backhaul_coordinator::checks::evaluate(&job, &chunks, now) {
        Some(checks) if !checks.ok() => {
            eprintln!("checks failed: {}", super::checks::line(&checks));
            Ok((crate::exit::CHECKS_FAILED, doc))
        }
        _ => Ok((0, doc)),
    }
}

/// The delete-detection lines of the text summary.
fn print_deletes(kind: CursorKind, report: &DeleteReport) {
    println!(
        "  deletes   {} keys marked deleted ({} ranges checked with {} digest queries per side, {} candidates moved to a later cursor)",
        report.deleted, report.ranges_checked, report.source_digests, report.moved
    );
    for range in &report.deleted_by_range {
        println!("            {}: {} deleted", range.range.display(kind), range.deleted);
    }
}
