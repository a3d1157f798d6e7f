//! `backhaul replay`.

use anyhow::{Context, Result, anyhow};
use backhaul_core::cursor::{CursorRange, SpecBound};
use backhaul_core::limit::ConnectionLimit;
use clap::Args;
use serde_json::json;

use super::backfill::RunArgs;
use super::common::{self, open_store_exclusive};
use crate::{Globals, OutputFormat, local, output, pipeline};

/// Arguments of `replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The job, or a pipeline spec file (its tables' jobs; choose one with --table).
    job: String,
    /// With a pipeline: replay only this table's job (`orders`, `public.orders` or the job
    /// name `shop-orders`).
    #[arg(long)]
    table: Option<String>,
    /// Start of the range to replay (same forms as the spec's `range.from`); default: the job's start.
    #[arg(long)]
    from: Option<String>,
    /// End of the range (exclusive); default: the job's end.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    run: RunArgs,
}

/// Queues the chunks overlapping the range again and runs them: of the job, or of every
/// chosen table's job of a pipeline, one job after the other.
pub async fn run(globals: &Globals, args: ReplayArgs) -> Result<u8> {
    let pipeline = pipeline::pipeline_spec(&args.job)?;
    if pipeline.is_none() && args.table.is_some() {
        return Err(anyhow!(
            "--table {}: `{}` is a job, not a pipeline spec; --table chooses a table of a pipeline",
            args.table.as_deref().unwrap_or_default(),
            args.job
        ));
    }
    let store = open_store_exclusive(globals)?;
    let Some(pipeline) = pipeline else {
        let code = replay_job(globals, &store, &args, &args.job, None).await?.0;
        return Ok(code);
    };
    let name = &pipeline.pipeline.name;
    let jobs = pipeline::stored_tables(&store, name, args.table.as_deref()).await?;
    // The tables share the pipeline's source connections, as when they were loaded.
    let limit = ConnectionLimit::new(pipeline.max_source_connections());
    let mut results = Vec::new();
    for job in &jobs {
        results.push(replay_job(globals, &store, &args, job, Some(limit.clone())).await?);
    }
    let code = results.iter().map(|(c, _)| *c).max().unwrap_or(0);
    if globals.output == OutputFormat::Json {
        output::print_json(&json!({
            "pipeline": name,
            "exit_code": code,
            "jobs": results.iter().map(|(_, doc)| doc.clone()).collect::<Vec<_>>(),
        }));
    }
    Ok(code)
}

/// Replays the range of one job; returns the exit code and the run summary as JSON (printed
/// already for a lone job in JSON mode, and in text mode).
async fn replay_job(
    globals: &Globals,
    store: &backhaul_coordinator::Store,
    args: &ReplayArgs,
    job_id: &str,
    limit: Option<ConnectionLimit>,
) -> Result<(u8, serde_json::Value)> {
    let job = common::job(store, job_id).await?;
    let kind = job.cursor_kind;
    let parse = |text: &Option<String>, flag: &str, default: i64| -> Result<i64> {
        match text {
            None => Ok(default),
            Some(t) => SpecBound::parse(t)
                .and_then(|b| b.to_cursor(kind))
                .map_err(|m| anyhow!(m))
                .with_context(|| format!("--{flag} {t} (job {job_id})")),
        }
    };
    let from = parse(&args.from, "from", job.range.from)?;
    let to = parse(&args.to, "to", job.range.to)?;
    if from >= to {
        return Err(anyhow!("--from must be before --to (job {job_id})"));
    }
    let range = CursorRange::new(from, to);
    let id = job_id.to_string();
    let queued = store.call(move |s, c| s.replay(c, &id, Some(range))).await?;
    if globals.output == OutputFormat::Text {
        eprintln!(
            "replaying {} chunks of {} overlapping {}",
            queued.len(),
            job_id,
            range.display(kind)
        );
    }
    let mut local = args.run.local(globals, job_id);
    local.connection_limit = limit.clone();
    let report = local::run(store, local).await?;
    let (code, doc) = common::run_summary(globals, store, job_id, &report).await?;
    if limit.is_none() && globals.output == OutputFormat::Json {
        output::print_json(&doc);
    }
    Ok((code, doc))
}
