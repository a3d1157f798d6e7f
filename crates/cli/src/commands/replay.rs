//! `backhaul replay`.

use anyhow::{Context, Result, anyhow};
use backhaul_core::cursor::{CursorRange, SpecBound};
use clap::Args;

use super::backfill::RunArgs;
use super::common::{self, open_store_exclusive};
use crate::{Globals, local};

/// Arguments of `replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The job.
    job: String,
    /// Start of the range to replay (same forms as the spec's `range.from`); default: the job's start.
    #[arg(long)]
    from: Option<String>,
    /// End of the range (exclusive); default: the job's end.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    run: RunArgs,
}

/// Queues the chunks overlapping the range again and runs them.
pub async fn run(globals: &Globals, args: ReplayArgs) -> Result<u8> {
    let store = open_store_exclusive(globals)?;
    let job = common::job(&store, &args.job).await?;
    let kind = job.cursor_kind;
    let parse = |text: &Option<String>, flag: &str, default: i64| -> Result<i64> {
        match text {
            None => Ok(default),
            Some(t) => SpecBound::parse(t)
                .and_then(|b| b.to_cursor(kind))
                .map_err(|m| anyhow!(m))
                .with_context(|| format!("--{flag} {t}")),
        }
    };
    let from = parse(&args.from, "from", job.range.from)?;
    let to = parse(&args.to, "to", job.range.to)?;
    if from >= to {
        return Err(anyhow!("--from must be before --to"));
    }
    let range = CursorRange::new(from, to);
    let id = args.job.clone();
    let queued = store.call(move |s, c| s.replay(c, &id, Some(range))).await?;
    if globals.output == crate::OutputFormat::Text {
        eprintln!(
            "replaying {} chunks of {} overlapping {}",
            queued.len(),
            args.job,
            range.display(kind)
        );
    }
    let report = local::run(&store, args.run.local(globals, &args.job)).await?;
    common::report_run(globals, &store, &args.job, &report).await
}
