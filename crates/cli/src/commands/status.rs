//! `backhaul status`.

use anyhow::{Result, anyhow};
use backhaul_proto::v1 as pb;
use clap::Args;
use serde_json::json;

use super::common::{self, open_state};
use super::remote::{self, RemoteArgs};
use crate::output::{self, group, size};
use crate::{Globals, OutputFormat};

/// Arguments of `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A job name, or a pipeline spec file (its tables' jobs are listed); without it every
    /// job is listed.
    job: Option<String>,
    /// List the job's chunks with their states and last errors.
    #[arg(long, requires = "job")]
    chunks: bool,
    /// Keep watching the job with a progress bar until it finishes (needs --coordinator).
    #[arg(long, requires = "job")]
    follow: bool,
    /// Evaluate the jobs' `[checks]` (freshness, volume) now; exit 5 when one fails.
    #[arg(long, conflicts_with_all = ["chunks", "follow"])]
    check: bool,
    /// Ask a coordinator instead of reading the local state database.
    #[command(flatten)]
    remote: RemoteArgs,
}

/// Prints job or chunk status.
pub async fn run(globals: &Globals, args: StatusArgs) -> Result<u8> {
    if args.remote.coordinator.is_some() {
        if args.check {
            return Err(anyhow!(
                "--check reads the state database (--state, a file or a postgres:// URL), not a coordinator"
            ));
        }
        return run_remote(globals, args).await;
    }
    if args.follow {
        return Err(anyhow!("--follow watches a coordinator; give --coordinator URL"));
    }
    let store = open_state(globals).await?;
    if args.check {
        return super::checks::run(globals, store, args.job.as_deref()).await;
    }
    // A pipeline's jobs are `<pipeline>-<table>`: reading its name needs no source.
    let pipeline = match args.job.as_deref() {
        Some(arg) => crate::pipeline::pipeline_name(arg)?,
        None => None,
    };
    if let Some(name) = &pipeline
        && (args.chunks || args.follow)
    {
        return Err(anyhow!(
            "--chunks and --follow take one job; `backhaul status {name}-TABLE --chunks`"
        ));
    }
    let job = if pipeline.is_some() { None } else { args.job };
    let Some(job_id) = job else {
        let prefix = pipeline
            .as_deref()
            .map(backhaul_core::spec::pipeline::job_prefix)
            .unwrap_or_default();
        let mut rows = store.jobs().await?;
        rows.retain(|(j, _)| j.job_id.starts_with(&prefix));
        match globals.output {
            OutputFormat::Json => output::print_json(&json!({ "jobs": rows.iter().map(|(j, s)| json!({
                "job": j.job_id, "range": { "from": j.cursor_kind.format(j.range.from), "to": j.cursor_kind.format(j.range.to) }, "summary": s,
            })).collect::<Vec<_>>() })),
            OutputFormat::Text => {
                if rows.is_empty() {
                    println!("no jobs in {}", common::state_location(globals).describe());
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
    let job = common::job(store.as_ref(), &job_id).await?;
    let summary = common::summary(store.as_ref(), &job_id).await?;
    let chunks = if args.chunks {
        store.chunks(&job_id).await?
    } else {
        Vec::new()
    };
    let kind = job.cursor_kind;
    let proofs = common::proof_counts(store.as_ref(), &job_id).await?;
    match globals.output {
        OutputFormat::Json => output::print_json(&json!({
            "job": job_id,
            "range": { "from": kind.format(job.range.from), "to": kind.format(job.range.to) },
            "finished": summary.is_finished(),
            "summary": summary,
            "proofs": proofs.iter().map(|(level, n)| json!({ "proof": level, "proves": level.proves(), "chunks": n })).collect::<Vec<_>>(),
            "chunks": chunks.iter().map(|c| json!({
                "index": c.chunk_id, "from": kind.format(c.range.from), "to": kind.format(c.range.to),
                "state": c.state, "attempt": c.attempt, "failures": c.failures,
                "estimated_rows": c.estimated_rows, "rows": c.committed.as_ref().map(|p| p.rows), "bytes": c.committed_bytes,
                "proof": c.committed.as_ref().map(|p| p.level), "proves": c.committed.as_ref().map(|p| p.level.proves()),
                "dead_letters": c.dead_letters,
                "split_from": c.split_from,
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
                "  rows      {} committed ({} estimated in total){}",
                group(summary.committed_rows),
                group(summary.estimated_rows),
                output::dead_letter_note(summary.dead_letters)
            );
            println!("  size      {} of Parquet", size(summary.committed_bytes));
            for (level, n) in &proofs {
                println!("  proof     {n} chunks proved {}", level.proves());
            }
            if args.chunks {
                let dead = output::DeadLetterColumn::new(chunks.iter().map(|c| c.dead_letters));
                println!(
                    "{:>6}  {:<22}  {:<22}  {:<9}  {:>7}  {:>12}  {:<14}  {}last error",
                    "chunk",
                    "from",
                    "to",
                    "state",
                    "attempt",
                    "rows",
                    "proof",
                    dead.header()
                );
                for c in &chunks {
                    let err = c
                        .last_error
                        .as_ref()
                        .map(|(class, _, m)| format!("[{class}] {m}"))
                        .unwrap_or_default();
                    println!(
                        "{:>6}  {:<22}  {:<22}  {:<9}  {:>7}  {:>12}  {:<14}  {}{err}",
                        c.chunk_id,
                        kind.format(c.range.from),
                        kind.format(c.range.to),
                        format!("{:?}", c.state).to_lowercase(),
                        c.attempt,
                        c.committed.as_ref().map(|p| group(p.rows)).unwrap_or_default(),
                        c.committed.as_ref().map_or("", |p| p.level.label()),
                        dead.cell(c.dead_letters)
                    );
                }
            }
        }
    }
    Ok(0)
}

/// `status --coordinator URL`: the same views over the wire.
async fn run_remote(globals: &Globals, args: StatusArgs) -> Result<u8> {
    let mut client = args.remote.client()?;
    let Some(job_id) = args.job else {
        let listed = client
            .list_jobs(pb::ListJobsRequest {})
            .await
            .map_err(|s| args.remote.rpc_error("list jobs", s))?
            .into_inner();
        let jobs = listed.jobs;
        match globals.output {
            OutputFormat::Json => output::print_json(&json!({
                "jobs": jobs.iter().map(remote::status_json).collect::<Vec<_>>(),
                "pools": listed.pools.iter().map(pool_json).collect::<Vec<_>>(),
            })),
            OutputFormat::Text => {
                if jobs.is_empty() {
                    println!("no jobs at {}", args.remote.url()?);
                }
                for j in &jobs {
                    println!(
                        "{:<24} {:<10} {:>5}/{:<5} committed  {:>3} parked  {:>14} rows  {}",
                        j.job_id,
                        remote::state_name(j.state),
                        j.committed,
                        j.chunks,
                        j.parked,
                        group(j.committed_rows),
                        j.range_display
                    );
                    if let Some(b) = j.breaker.as_ref().filter(|b| b.state != "closed") {
                        println!("{:<24} breaker {}", "", remote::breaker_text(b));
                    }
                }
                print_pools(&listed.pools);
            }
        }
        return Ok(0);
    };
    if args.follow {
        let last = remote::follow(&args.remote, &mut client, &job_id, globals.progress).await?;
        if globals.output == OutputFormat::Json {
            output::print_json(&remote::status_json(&last));
        } else {
            println!(
                "job {job_id}: {}, {}/{} chunks committed, {} parked, {} rows",
                remote::state_name(last.state),
                last.committed,
                last.chunks,
                last.parked,
                group(last.committed_rows)
            );
        }
        return Ok(remote::exit_code(&last));
    }
    let resp = client
        .get_job_status(pb::GetJobStatusRequest {
            job_id: job_id.clone(),
            include_chunks: args.chunks,
        })
        .await
        .map_err(|s| args.remote.rpc_error("job status", s))?
        .into_inner();
    let status = resp.status.ok_or_else(|| anyhow!("job status without a status"))?;
    let kind = remote::cursor_kind(&status.cursor_kind);
    match globals.output {
        OutputFormat::Json => {
            let mut doc = remote::status_json(&status);
            doc["chunks"] = resp.chunks.iter().map(|c| remote::chunk_json(kind, c)).collect();
            output::print_json(&doc);
        }
        OutputFormat::Text => {
            println!(
                "job {job_id} over {}: {}",
                status.range_display,
                remote::state_name(status.state)
            );
            println!(
                "  chunks    {} committed, {} running, {} pending, {} parked, {} cancelled, of {}",
                status.committed, status.leased, status.pending, status.parked, status.cancelled, status.chunks
            );
            println!(
                "  rows      {} committed ({} estimated in total), {} in flight{}",
                group(status.committed_rows),
                group(status.estimated_rows),
                group(status.in_flight_rows),
                output::dead_letter_note(status.dead_letters)
            );
            println!("  size      {} of Parquet", size(status.committed_bytes));
            if status.failures > 0 {
                println!("  failures  {} failed attempts (retried or parked)", status.failures);
            }
            if let Some(b) = &status.breaker {
                println!("  breaker   {}", remote::breaker_text(b));
            }
            if args.chunks {
                let dead = output::DeadLetterColumn::new(resp.chunks.iter().map(|c| c.dead_letters));
                println!(
                    "{:>6}  {:<22}  {:<22}  {:<9}  {:>7}  {:>12}  {:<14}  {:<16}  {}last error",
                    "chunk",
                    "from",
                    "to",
                    "state",
                    "attempt",
                    "rows",
                    "proof",
                    "worker",
                    dead.header()
                );
                for c in &resp.chunks {
                    let range = c.range.unwrap_or_default();
                    let err = c
                        .last_error
                        .as_ref()
                        .map(|e| format!("[{}] {}", remote::class_name(e.class), e.message))
                        .unwrap_or_default();
                    println!(
                        "{:>6}  {:<22}  {:<22}  {:<9}  {:>7}  {:>12}  {:<14}  {:<16}  {}{err}",
                        c.chunk_id,
                        kind.format(range.from),
                        kind.format(range.to),
                        remote::chunk_state_name(c.state),
                        c.attempt,
                        group(c.rows),
                        backhaul_proto::proof::proof_level(c.proof_level).map_or("", |l| l.label()),
                        c.worker_id,
                        dead.cell(c.dead_letters)
                    );
                }
            }
        }
    }
    Ok(0)
}

/// A rate-limit pool in `--output json`.
fn pool_json(p: &pb::PoolStatus) -> serde_json::Value {
    json!({
        "pool": p.name, "configured_rate": p.configured_rate, "current_rate": p.current_rate,
        "burst": p.burst, "daily_cap": p.daily_cap, "daily_used": p.daily_used,
        "tokens_granted": p.tokens_granted, "waits": p.waits, "throttled": p.throttled_reported,
    })
}

/// The coordinator's rate-limit pools, after the jobs (nothing when there are none).
fn print_pools(pools: &[pb::PoolStatus]) {
    if pools.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<24} {:>10} {:>10} {:>6} {:>10} {:>8} {:>6}  today",
        "pool", "rate now", "configured", "burst", "granted", "waits", "429s"
    );
    for p in pools {
        let cap = p.daily_cap.map(|c| format!(" of {}", group(c))).unwrap_or_default();
        println!(
            "{:<24} {:>8.2}/s {:>8}/s {:>6} {:>10} {:>8} {:>6}  {}{cap}",
            p.name,
            p.current_rate,
            p.configured_rate,
            p.burst,
            group(p.tokens_granted),
            group(p.waits),
            group(p.throttled_reported),
            group(p.daily_used)
        );
    }
}
