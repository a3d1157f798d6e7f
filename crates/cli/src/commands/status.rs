//! `backhaul status`.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::common::{self, open_store};
use crate::output::{self, group, size};
use crate::{Globals, OutputFormat};

/// Arguments of `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A job name; without it every job is listed.
    job: Option<String>,
    /// List the job's chunks with their states and last errors.
    #[arg(long, requires = "job")]
    chunks: bool,
}

/// Prints job or chunk status.
pub async fn run(globals: &Globals, args: StatusArgs) -> Result<u8> {
    let store = open_store(globals)?;
    let Some(job_id) = args.job else {
        let jobs = store.call(|s, c| s.jobs(c)).await?;
        let mut rows = Vec::new();
        for j in &jobs {
            rows.push((j.clone(), common::summary(&store, &j.job_id).await?));
        }
        match globals.output {
            OutputFormat::Json => output::print_json(&json!({ "jobs": rows.iter().map(|(j, s)| json!({
                "job": j.job_id, "range": { "from": j.cursor_kind.format(j.range.from), "to": j.cursor_kind.format(j.range.to) }, "summary": s,
            })).collect::<Vec<_>>() })),
            OutputFormat::Text => {
                if rows.is_empty() {
                    println!("no jobs in {}", globals.state.display());
                }
                for (j, s) in rows {
                    println!(
                        "{:<24} {:>5}/{:<5} committed  {:>3} parked  {:>14} rows  {}",
                        j.job_id,
                        s.committed,
                        s.chunks,
                        s.parked,
                        group(s.committed_rows),
                        j.range.display(j.cursor_kind)
                    );
                }
            }
        }
        return Ok(0);
    };
    let job = common::job(&store, &job_id).await?;
    let summary = common::summary(&store, &job_id).await?;
    let chunks = if args.chunks {
        let id = job_id.clone();
        store.call(move |s, c| s.chunks(c, &id)).await?
    } else {
        Vec::new()
    };
    let kind = job.cursor_kind;
    match globals.output {
        OutputFormat::Json => output::print_json(&json!({
            "job": job_id,
            "range": { "from": kind.format(job.range.from), "to": kind.format(job.range.to) },
            "finished": summary.is_finished(),
            "summary": summary,
            "chunks": chunks.iter().map(|c| json!({
                "index": c.chunk_id, "from": kind.format(c.range.from), "to": kind.format(c.range.to),
                "state": c.state, "attempt": c.attempt, "failures": c.failures,
                "estimated_rows": c.estimated_rows, "rows": c.committed.map(|s| s.rows), "bytes": c.committed_bytes,
                "last_error": c.last_error.as_ref().map(|(class, kind, message)| json!({"class": class, "kind": kind, "message": message})),
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            println!("job {job_id} over {}", job.range.display(kind));
            println!(
                "  chunks    {} committed, {} running, {} pending, {} parked, of {}",
                summary.committed, summary.leased, summary.pending, summary.parked, summary.chunks
            );
            println!(
                "  rows      {} committed ({} estimated in total)",
                group(summary.committed_rows),
                group(summary.estimated_rows)
            );
            println!("  size      {} of Parquet", size(summary.committed_bytes));
            if args.chunks {
                println!(
                    "{:>6}  {:<22}  {:<22}  {:<9}  {:>7}  {:>12}  last error",
                    "chunk", "from", "to", "state", "attempt", "rows"
                );
                for c in &chunks {
                    let err = c
                        .last_error
                        .as_ref()
                        .map(|(class, _, m)| format!("[{class}] {m}"))
                        .unwrap_or_default();
                    println!(
                        "{:>6}  {:<22}  {:<22}  {:<9}  {:>7}  {:>12}  {err}",
                        c.chunk_id,
                        kind.format(c.range.from),
                        kind.format(c.range.to),
                        format!("{:?}", c.state).to_lowercase(),
                        c.attempt,
                        c.committed.map(|s| group(s.rows)).unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(0)
}
