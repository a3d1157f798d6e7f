//! `backhaul status --check`: the `[checks]` of jobs (freshness, volume) evaluated over the
//! state database now, as the coordinator evaluates them; exits `exit::CHECKS_FAILED` when one
//! fails (docs/pipelines.md, "Checks and alerts").

use std::sync::Arc;

use anyhow::{Result, bail};
use backhaul_coordinator::StateStore;
use backhaul_coordinator::checks::{JobChecks, evaluate};
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
            None if job.is_some() => bail!(
                "job {} has no [checks] section in its spec (docs/job-spec.md)",
                j.job_id
            ),
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

/// One job's results on one line.
pub(crate) fn line(r: &JobChecks) -> String {
    let mut parts = vec![format!("{:<24} {}", r.job_id, if r.ok() { "pass" } else { "FAILED" })];
    if let Some(f) = &r.freshness {
        parts.push(format!("freshness {}", f.describe()));
    }
    if let Some(v) = &r.volume {
        parts.push(format!("volume {}", v.describe()));
    }
    parts.join("  ")
}
