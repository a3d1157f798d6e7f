//! `backhaul status --check`: the `[checks]` of jobs (freshness, volume) evaluated over the
//! state database now, as the coordinator evaluates them; exits `exit::CHECKS_FAILED` when one
//! fails (docs/pipelines.md, "Checks and alerts").

use std::sync::Arc;

use anyhow::{Result, bail};
use backhaul_coordinator::StateStore;
use backhaul_coordinator::checks::{JobChecks, Volume, evaluate};
use serde_json::json;

use crate::output;
use crate::{Globals, OutputFormat, exit};

/// Evaluates the checks of `job` (or of every job with `[checks]`) and prints them.
pub async fn run(globals: &Globals, store: Arc<dyn StateStore>, job: Option<&str>) -> Result<u8> {
    let now = chrono::Utc::now().timestamp_micros();
    let jobs = match job {
        Some(id) => vec![store.job(id).await?],
        None => store.jobs().await?.into_iter().map(|(j, _)| j).collect(),
    };
    let mut results = Vec::new();
    for j in &jobs {
        let chunks = store.chunks(&j.job_id).await?;
        match evaluate(j, &chunks, now) {
            Some(r) => results.push(r),
            None if job.is_some() => bail!("job {} has no [checks] section in its spec (docs/job-spec.md)", j.job_id),
            None => {}
        }
    }
    let failed = results.iter().filter(|r| !r.ok()).count();
    match globals.output {
        OutputFormat::Json => output::print_json(&json!({ "checks": results, "failed": failed })),
        OutputFormat::Text => {
            if results.is_empty() {
                println!("no job has a [checks] section");
            }
            for r in &results {
                println!("{}", line(r));
            }
        }
    }
    Ok(if failed > 0 { exit::CHECKS_FAILED } else { 0 })
}

fn line(r: &JobChecks) -> String {
    let mut parts = vec![format!("{:<24} {}", r.job_id, if r.ok() { "pass" } else { "FAILED" })];
    if let Some(f) = &r.freshness {
        let age = f
            .age_s
            .map(|a| format!("{:.1} h old", a as f64 / 3600.0))
            .unwrap_or_else(|| "nothing loaded".into());
        let verdict = if f.ok { "fresh" } else { "STALE" };
        parts.push(format!("freshness {verdict} ({age}, SLA {:.1} h)", f.sla_s as f64 / 3600.0));
    }
    if let Some(v) = &r.volume {
        parts.push(match &v.verdict {
            Volume::InsufficientHistory { days } => format!("volume {}: {days} days of history", v.day),
            Volume::Normal { median, band } => {
                format!("volume {} normal ({:.0} rows, median {median:.0} ± {band:.0})", v.day, v.rows)
            }
            Volume::Anomaly { median, band } => {
                format!("volume {} ANOMALY ({:.0} rows, median {median:.0} ± {band:.0})", v.day, v.rows)
            }
        });
    }
    parts.join("  ")
}
