//! Helpers shared by the subcommands.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use backhaul_coordinator::{JobRow, JobSummary, StateLocation, StateStore, Store};
use backhaul_core::connector::Connectors;
use backhaul_core::proof::ProofLevel;
use backhaul_core::registry::CheckedSpec;
use backhaul_core::spec::JobSpec;
use serde_json::json;

use crate::connectors::builtin_connectors;
use crate::local::RunReport;
use crate::output::{self, group, size};
use crate::{Globals, OutputFormat};

/// Reads a spec file; returns the spec, its name for messages, and its directory.
pub fn load_spec(path: &Path) -> Result<(JobSpec, String, PathBuf)> {
    let spec = JobSpec::load(path)?;
    let (origin, base) = spec_origin(path)?;
    Ok((spec, origin, base))
}

/// A spec file's name for messages and its directory, which its relative paths are relative to.
pub fn spec_origin(path: &Path) -> Result<(String, PathBuf)> {
    let origin = path.display().to_string();
    let base = path
        .parent()
        .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base).with_context(|| format!("resolving the directory of {origin}"))?;
    Ok((origin, base))
}

/// Environment variable with the password of a PostgreSQL state URL.
const STATE_PASSWORD_ENV: &str = "BACKHAUL_STATE_PASSWORD";

/// Where `--state` points: a file, or a PostgreSQL URL.
pub fn state_location(globals: &Globals) -> StateLocation {
    StateLocation::parse(&globals.state.to_string_lossy())
}

/// The password for a PostgreSQL state URL without one: `--state-password-file`, else
/// `$BACKHAUL_STATE_PASSWORD`; none for a state file.
pub fn state_password(globals: &Globals) -> Result<Option<String>> {
    if let StateLocation::File(_) = state_location(globals) {
        return Ok(None);
    }
    if let Some(path) = &globals.state_password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the state password from {}", path.display()))?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()));
    }
    Ok(std::env::var(STATE_PASSWORD_ENV).ok())
}

/// Opens the state named by `--state` (a file or a PostgreSQL URL) for reading.
pub async fn open_state(globals: &Globals) -> Result<Arc<dyn StateStore>> {
    Ok(state_location(globals).open_reading(state_password(globals)?).await?)
}

/// Opens the state database file named by `--state` to serve leases from it in this process
/// (a local run): refuses when another process already does, and refuses a PostgreSQL URL.
pub fn open_store_exclusive(globals: &Globals) -> Result<Store> {
    if let StateLocation::Postgres(_) = state_location(globals) {
        bail!(
            "--state {} is a PostgreSQL URL; local runs (backfill, demo, replay) keep their state in a file; use `backhaul coordinator --state URL` with workers instead",
            state_location(globals).describe()
        );
    }
    Ok(Store::open_exclusive(&globals.state)?)
}

/// A stored job by name.
pub async fn job(store: &dyn StateStore, job_id: &str) -> Result<JobRow> {
    Ok(store.job(job_id).await?)
}

/// The spec of a stored job, checked by the built-in connectors, with paths resolved.
pub fn job_spec(job: &JobRow) -> Result<CheckedSpec> {
    let origin = format!("job {}", job.job_id);
    let spec = JobSpec::from_toml(&job.spec_toml, &origin)?;
    let mut checked = builtin_connectors().check(&spec, &origin)?;
    checked.resolve_paths(&job.base_dir);
    Ok(checked)
}

/// Summary of a job.
pub async fn summary(store: &dyn StateStore, job_id: &str) -> Result<JobSummary> {
    Ok(store.summary(job_id).await?)
}

/// File statistics of a job's committed outputs: count, total, min, max.
pub async fn file_stats(store: &Store, job_id: &str) -> Result<(u64, u64, u64, u64)> {
    let id = job_id.to_string();
    let outputs = store.call(move |s, c| s.outputs(c, &id)).await?;
    let sizes: Vec<u64> = outputs.iter().map(|o| o.bytes).collect();
    Ok((
        sizes.len() as u64,
        sizes.iter().sum(),
        sizes.iter().copied().min().unwrap_or(0),
        sizes.iter().copied().max().unwrap_or(0),
    ))
}

/// Prints the end-of-run summary (text mode) and returns the exit code the run deserves with
/// the summary as JSON, which JSON-mode callers print (possibly inside a larger document).
pub async fn run_summary(
    globals: &Globals,
    store: &Store,
    job_id: &str,
    report: &RunReport,
) -> Result<(u8, serde_json::Value)> {
    let s = &report.summary;
    let (files, total, min, max) = file_stats(store, job_id).await?;
    let proofs = proof_counts(store, job_id).await?;
    let secs = report.elapsed.as_secs_f64().max(0.001);
    let rows_per_s = report.rows_this_run as f64 / secs;
    let parquet_mb_per_s = report.bytes_this_run as f64 / 1e6 / secs;
    let doc = json!({
        "job": job_id,
        "summary": s,
        "this_run": { "rows": report.rows_this_run, "parquet_bytes": report.bytes_this_run, "seconds": secs, "rows_per_second": rows_per_s, "parquet_mb_per_second": parquet_mb_per_s },
        "files": { "count": files, "bytes": total, "min_bytes": min, "max_bytes": max },
        "proofs": proofs.iter().map(|(level, n)| (level.as_str().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "breaker": report.breaker,
    });
    match globals.output {
        OutputFormat::Json => {}
        OutputFormat::Text => {
            println!(
                "job {job_id}: {}/{} chunks committed, {} parked",
                s.committed, s.chunks, s.parked
            );
            println!(
                "  rows      {} total, {} loaded by this run{}",
                group(s.committed_rows),
                group(report.rows_this_run),
                output::dead_letter_note(s.dead_letters)
            );
            println!(
                "  speed     {} in {:.1}s: {} rows/s, {:.1} MB/s of zstd Parquet written",
                group(report.rows_this_run),
                secs,
                group(rows_per_s as u64),
                parquet_mb_per_s
            );
            if let Some(avg) = total.checked_div(files) {
                println!(
                    "  files     {files} Parquet files, {} total (min {}, avg {}, max {})",
                    size(total),
                    size(min),
                    size(avg),
                    size(max)
                );
            }
            for (level, n) in &proofs {
                println!("  proof     {n} chunks proved {}", level.proves());
            }
            if let Some(breaker) = &report.breaker {
                println!("  breaker   {}: the API kept failing", breaker.describe());
            }
            if s.parked > 0 {
                println!(
                    "  parked    {} chunks failed permanently or too often; see `backhaul status {job_id} --chunks`",
                    s.parked
                );
            }
        }
    }
    Ok((if s.parked > 0 { crate::exit::PARKED } else { 0 }, doc))
}

/// Committed chunks of a job by the proof they got, strongest first.
pub async fn proof_counts(store: &dyn StateStore, job_id: &str) -> Result<Vec<(ProofLevel, u64)>> {
    let mut counts: Vec<(ProofLevel, u64)> = Vec::new();
    for proof in store.chunks(job_id).await?.iter().filter_map(|c| c.committed.as_ref()) {
        match counts.iter_mut().find(|(level, _)| *level == proof.level) {
            Some((_, n)) => *n += 1,
            None => counts.push((proof.level, 1)),
        }
    }
    counts.sort_by_key(|(level, _)| *level as u8);
    Ok(counts)
}

/// Prints the end-of-run summary; returns the exit code the run deserves.
pub async fn report_run(globals: &Globals, store: &Store, job_id: &str, report: &RunReport) -> Result<u8> {
    let (code, doc) = run_summary(globals, store, job_id, report).await?;
    if globals.output == OutputFormat::Json {
        output::print_json(&doc);
    }
    Ok(code)
}

/// Parses a duration flag like `30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    backhaul_core::units::Span::parse(text).map(|s| Duration::from_micros(s.micros as u64))
}
