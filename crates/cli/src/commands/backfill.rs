//! `backhaul backfill`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use backhaul_coordinator::{RetryPolicy, Store, Submitted, submit_spec};
use backhaul_core::connector::Connectors;
use backhaul_core::spec::JobSpec;
use clap::Args;

use super::common::{self, load_spec, open_store_exclusive};
use crate::Globals;
use crate::connectors::builtin_connectors;
use crate::local::{self, LocalRun};
use crate::pipeline;

/// Arguments of `backfill`.
#[derive(Args, Debug)]
pub struct BackfillArgs {
    /// Job spec file (TOML, see docs/job-spec.md), or a pipeline spec (docs/pipelines.md).
    /// Running it again resumes the job(s).
    #[arg(required_unless_present = "resume")]
    spec: Option<PathBuf>,
    /// Resume a job from the state database by name, without its spec file.
    #[arg(long, value_name = "JOB", conflicts_with = "spec")]
    resume: Option<String>,
    #[command(flatten)]
    run: RunArgs,
}

/// Options of any command that runs chunks locally.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Workers (chunks extracted in parallel).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Lease time-to-live: a chunk whose worker stops heartbeating is handed out again after it.
    #[arg(long, default_value = "30s", value_parser = common::parse_duration)]
    pub lease_ttl: Duration,
    /// Failed attempts after which a chunk is parked instead of retried.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// First retry backoff after a transient failure (doubles per failure).
    #[arg(long, default_value = "1s", value_parser = common::parse_duration)]
    pub retry_backoff: Duration,
}

impl RunArgs {
    /// The local-run options for `job_id`.
    pub fn local(&self, globals: &Globals, job_id: &str) -> LocalRun {
        LocalRun {
            job_id: job_id.into(),
            workers: usize::from(self.workers),
            progress: globals.progress,
            lease_ttl: self.lease_ttl,
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                transient_base: self.retry_backoff,
                ..RetryPolicy::default()
            },
            connection_limit: None,
        }
    }
}

/// Plans (or finds) the job, or every table's job of a pipeline, and runs it to the end.
pub async fn run(globals: &Globals, args: BackfillArgs) -> Result<u8> {
    if let Some(path) = &args.spec
        && pipeline::is_pipeline_file(path)?
    {
        // Every table is checked before the state is opened: a bad one writes nothing.
        let loaded = pipeline::load(path).await?;
        let store = open_store_exclusive(globals)?;
        let run = &args.run;
        return pipeline::run_tables(globals, &loaded, |job, p| {
            let store = &store;
            async move {
                let job_id =
                    submit_checked(globals, store, p.connectors(), job.spec.clone(), &p.origin, &p.base).await?;
                let mut local = run.local(globals, &job_id);
                local.connection_limit = Some(p.limit.clone());
                let report = local::run(store, local).await?;
                common::run_summary(globals, store, &job_id, &report).await
            }
        })
        .await;
    }
    let store = open_store_exclusive(globals)?;
    let job_id = match (&args.spec, &args.resume) {
        (Some(path), _) => submit(globals, &store, path).await?,
        (None, Some(job)) => {
            common::job(&store, job).await?;
            job.clone()
        }
        (None, None) => bail!("give a job spec file or --resume JOB"),
    };
    let report = local::run(&store, args.run.local(globals, &job_id)).await?;
    common::report_run(globals, &store, &job_id, &report).await
}

/// Plans a spec and stores it as a job (or finds the identical stored job). Returns its id.
pub async fn submit(globals: &Globals, store: &Store, path: &std::path::Path) -> Result<String> {
    let (spec, origin, base) = load_spec(path)?;
    submit_checked(globals, store, &builtin_connectors(), spec, &origin, &base).await
}

/// Plans a parsed spec with `connectors` and stores it as a job (or finds the identical stored
/// job). Returns its id.
pub async fn submit_checked(
    globals: &Globals,
    store: &Store,
    connectors: &dyn Connectors,
    spec: JobSpec,
    origin: &str,
    base: &std::path::Path,
) -> Result<String> {
    let (job, outcome, fidelity) = submit_spec(store, connectors, spec, origin, base).await?;
    let fidelity_path = fidelity.write(&reports_dir(&globals.state))?;
    let summary = common::summary(store, &job.job_id).await?;
    if globals.output == crate::OutputFormat::Text {
        match outcome {
            Submitted::Created => eprintln!(
                "planned job {}: {} chunks over {}",
                job.job_id,
                summary.chunks,
                job.range.display(job.cursor_kind)
            ),
            Submitted::Existing => eprintln!(
                "resuming job {}: {}/{} chunks already committed",
                job.job_id, summary.committed, summary.chunks
            ),
        }
        eprintln!("type fidelity: {} ({})", fidelity.verdict(), fidelity_path.display());
    }
    Ok(job.job_id)
}

/// Where type-fidelity reports go: `reports/` next to the state database.
pub fn reports_dir(state: &std::path::Path) -> PathBuf {
    state
        .parent()
        .unwrap_or_else(|| std::path::Path::new("."))
        .join("reports")
}
