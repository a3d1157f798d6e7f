//! `backhaul sync`: extend a sync job's range from its high-water mark and run the new chunks.

use std::path::PathBuf;

use anyhow::Result;
use backhaul_coordinator::{SyncOutcome, sync_spec};
use backhaul_core::cursor::SpecBound;
use clap::Args;

use super::backfill::RunArgs;
use super::common::{self, load_spec, open_store_exclusive};
use super::remote::RemoteArgs;
use super::submit::Submission;
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

fn parse_time(text: &str) -> Result<i64, String> {
    match SpecBound::parse(text)? {
        SpecBound::Time(us) => Ok(us),
        _ => Err(format!("`{text}` is not a date or RFC 3339 timestamp")),
    }
}

/// Extends (or, the first time, plans) the job and runs every pending chunk to the end.
pub async fn run(globals: &Globals, args: SyncArgs) -> Result<u8> {
    if args.remote.coordinator.is_some() {
        let submission = Submission {
            spec: &args.spec,
            base_dir: args.base_dir.as_deref(),
            wait: args.wait,
            fidelity_report: None,
            sync_now: Some(args.now),
        };
        return super::submit::send(globals, &args.remote, submission).await;
    }
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
    let code = common::report_run(globals, &store, &job.job_id, &report).await?;
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
