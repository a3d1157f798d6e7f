//! `backhaul sync`: extend a sync job's range from its high-water mark and run the new chunks.

use std::path::PathBuf;

use anyhow::Result;
use backhaul_coordinator::deletes::detect_job_deletes;
use backhaul_coordinator::{SyncOutcome, sync_spec};
use backhaul_core::cursor::{CursorKind, SpecBound};
use backhaul_core::deletes::DeleteReport;
use clap::Args;

use super::backfill::RunArgs;
use super::common::{self, load_spec, open_store_exclusive};
use crate::Globals;
use crate::connectors::builtin_connectors;
use crate::local;

/// Arguments of `sync`.
#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Job spec file with a `[sync]` section (see docs/pipelines.md).
    spec: PathBuf,
    /// The time the sync runs at, instead of the clock (RFC 3339 or a date): `range.to =
    /// "now"` ends at this minus `sync.lag`. For tests and for re-running a missed sync.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    now: Option<i64>,
    #[command(flatten)]
    run: RunArgs,
}

fn parse_time(text: &str) -> Result<i64, String> {
    match SpecBound::parse(text)? {
        SpecBound::Time(us) => Ok(us),
        _ => Err(format!("`{text}` is not a date or RFC 3339 timestamp")),
    }
}

/// Extends (or, the first time, plans) the job and runs every pending chunk to the end.
pub async fn run(globals: &Globals, args: SyncArgs) -> Result<u8> {
    let store = open_store_exclusive(globals)?;
    let (spec, origin, base) = load_spec(&args.spec)?;
    let now = args.now.unwrap_or_else(backhaul_coordinator::now_us);
    let (job, outcome) = sync_spec(&store, &builtin_connectors(), spec, &origin, &base, now).await?;
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
    let report = local::run(&store, args.run.local(globals, &job.job_id)).await?;
    let (code, mut doc) = common::run_summary(globals, &store, &job.job_id, &report).await?;
    // Deletes are looked for only once every chunk committed: a range still loading would
    // look like rows deleted at the source.
    let connectors = builtin_connectors();
    let deletes = if code == 0 {
        let job = backhaul_coordinator::StateStore::job(&store, &job.job_id).await?;
        detect_job_deletes(&store, &connectors, &job).await?
    } else {
        None
    };
    if let Some(deletes) = &deletes {
        match globals.output {
            crate::OutputFormat::Json => doc["deletes"] = serde_json::to_value(deletes)?,
            crate::OutputFormat::Text => print_deletes(job.cursor_kind, deletes),
        }
    }
    if globals.output == crate::OutputFormat::Json {
        crate::output::print_json(&doc);
    }
    if code != 0 {
        return Ok(code);
    }
    // A loaded run whose table is stale or whose volume looks wrong is not a success.
    let chunks = backhaul_coordinator::StateStore::chunks(&store, &job.job_id).await?;
    match backhaul_coordinator::checks::evaluate(&job, &chunks, now) {
        Some(checks) if !checks.ok() => {
            eprintln!("checks failed: {}", super::checks::line(&checks));
            Ok(crate::exit::CHECKS_FAILED)
        }
        _ => Ok(0),
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
