//! Pipelines in the CLI: a pipeline spec is loaded (its schemas discovered at the source, its
//! tables expanded into jobs and checked before anything is written), then a command runs one
//! step per table's job, tables concurrently under the pipeline's source-connection limit, and
//! reports per table.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use backhaul_core::connector::Connectors;
use backhaul_core::limit::{ConnectionLimit, LimitedConnectors};
use backhaul_core::pipeline_jobs::expand_pipeline;
use backhaul_core::spec::{PipelineJob, PipelineSpec, is_pipeline};
use futures::StreamExt;
use serde_json::json;

use crate::commands::common::spec_origin;
use crate::connectors::builtin_connectors;
use crate::{Globals, OutputFormat, output};

/// A pipeline ready to run: every table's job, checked.
pub struct LoadedPipeline {
    /// The spec as written.
    pub spec: PipelineSpec,
    /// The file, for messages.
    pub origin: String,
    /// The file's directory, which relative paths are relative to.
    pub base: PathBuf,
    /// One job per table, in spec order (listed tables, then those a `[schema]` selects).
    pub jobs: Vec<PipelineJob>,
    /// The source connections all the jobs share.
    pub limit: ConnectionLimit,
    /// The built-in connectors, their sources drawing from `limit`.
    pub connectors: LimitedConnectors,
}

impl LoadedPipeline {
    /// The connectors every table's job plans and runs with.
    pub fn connectors(&self) -> &dyn Connectors {
        &self.connectors
    }
}

/// Whether the spec file at `path` is a pipeline (a top-level `[pipeline]` table).
pub fn is_pipeline_file(path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(is_pipeline(&text))
}

/// When `arg` names a pipeline spec file: the pipeline's name, whose tables' jobs are
/// `<pipeline>-<table>` (reading it needs no source). `None` for a job name or a job spec.
pub fn pipeline_name(arg: &str) -> Result<Option<String>> {
    Ok(pipeline_spec(arg)?.map(|spec| spec.pipeline.name))
}

/// When `arg` names a pipeline spec file: the pipeline as written (not yet validated or
/// expanded). `None` for a job name or a job spec.
pub fn pipeline_spec(arg: &str) -> Result<Option<PipelineSpec>> {
    let path = Path::new(arg);
    if path.is_file() && is_pipeline_file(path)? {
        return Ok(Some(PipelineSpec::load(path)?));
    }
    Ok(None)
}

/// The stored jobs of pipeline `name` that `table` names (the job `shop-orders`, or the table
/// `orders` / `public.orders` whose job that is); every stored job when `None`. Refused, naming
/// the pipeline's jobs, when none matches or the pipeline has no jobs yet.
pub async fn stored_tables(
    store: &dyn backhaul_coordinator::StateStore,
    name: &str,
    table: Option<&str>,
) -> Result<Vec<String>> {
    let jobs = stored_jobs(store, name).await?;
    if jobs.is_empty() {
        anyhow::bail!(
            "pipeline `{name}` has no jobs in the state database yet (run `backhaul backfill` or `sync` on it first)"
        );
    }
    let Some(wanted) = table else { return Ok(jobs) };
    let unqualified = wanted.rsplit_once('.').map_or(wanted, |(_, t)| t).to_ascii_lowercase();
    let job = format!("{}{unqualified}", backhaul_core::spec::pipeline::job_prefix(name));
    let found: Vec<String> = jobs.iter().filter(|j| **j == wanted || **j == job).cloned().collect();
    if found.is_empty() {
        anyhow::bail!(
            "--table {wanted}: pipeline `{name}` has no job for this table; its jobs: {}",
            jobs.join(", ")
        );
    }
    Ok(found)
}

/// The stored jobs of the pipeline named `name`, by job id.
pub async fn stored_jobs(store: &dyn backhaul_coordinator::StateStore, name: &str) -> Result<Vec<String>> {
    let prefix = backhaul_core::spec::pipeline::job_prefix(name);
    let mut ids: Vec<String> = store
        .jobs()
        .await?
        .into_iter()
        .map(|(job, _)| job.job_id)
        .filter(|id| id.starts_with(&prefix))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Reads a pipeline, discovers the schemas it names (one source connection, within the
/// limit), expands its tables into jobs and checks each job's spec: a table that does not
/// exist, a bad cursor or key fails here, naming the table and the key, before any state or
/// destination is touched.
pub async fn load(path: &Path) -> Result<LoadedPipeline> {
    let spec = PipelineSpec::load(path)?;
    let (origin, base) = spec_origin(path)?;
    let registry = builtin_connectors();
    let limit = ConnectionLimit::new(spec.max_source_connections());
    let jobs = expand_pipeline(&spec, &registry, &origin, &base, &limit).await?;
    for job in &jobs {
        registry
            .check(&job.spec, &origin)
            .with_context(|| format!("{} (table {}, job {})", job.key, job.table, job.spec.name))?;
    }
    let connectors = LimitedConnectors::new(Arc::new(registry), limit.clone());
    Ok(LoadedPipeline {
        spec,
        origin,
        base,
        jobs,
        limit,
        connectors,
    })
}

/// Runs `step` for every table's job (with the pipeline, whose `connectors` it plans and runs
/// with), at most `max_source_connections` tables at once (their
/// connections drawn from the one limit), and reports per table. A failed table does not stop
/// the others; the exit code is 1 when any table failed, else the highest a table returned.
pub async fn run_tables<'a, F, Fut>(globals: &Globals, loaded: &'a LoadedPipeline, step: F) -> Result<u8>
where
    F: Fn(&'a PipelineJob, &'a LoadedPipeline) -> Fut,
    Fut: Future<Output = Result<(u8, serde_json::Value)>> + 'a,
{
    let mut results: Vec<(usize, Result<(u8, serde_json::Value)>)> =
        futures::stream::iter(loaded.jobs.iter().enumerate())
            .map(|(i, job)| {
                let run = step(job, loaded);
                async move { (i, run.await) }
            })
            .buffer_unordered(loaded.limit.max())
            .collect()
            .await;
    results.sort_by_key(|(i, _)| *i);
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    let code = if failed > 0 {
        crate::exit::FAILURE
    } else {
        results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().map(|(c, _)| *c))
            .max()
            .unwrap_or(0)
    };
    match globals.output {
        OutputFormat::Json => output::print_json(&json!({
            "pipeline": loaded.spec.pipeline.name,
            "max_source_connections": loaded.limit.max(),
            "failed": failed,
            "exit_code": code,
            "tables": results.iter().map(|(i, r)| {
                let job = &loaded.jobs[*i];
                let mut entry = json!({ "table": job.table, "job": job.spec.name, "key": job.key });
                match r {
                    Ok((c, doc)) => { entry["exit_code"] = json!(c); entry["result"] = doc.clone(); }
                    Err(e) => { entry["exit_code"] = json!(crate::exit::FAILURE); entry["error"] = json!(format!("{e:#}")); }
                }
                entry
            }).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            println!(
                "pipeline {}: {} tables, {} ok, {} failed (at most {} source connections)",
                loaded.spec.pipeline.name,
                results.len(),
                results.len() - failed,
                failed,
                loaded.limit.max()
            );
            for (i, r) in &results {
                let job = &loaded.jobs[*i];
                match r {
                    Ok((0, _)) => println!("  {:<32} ok      {}", job.spec.name, job.table),
                    Ok((c, _)) => println!("  {:<32} exit {c}  {}", job.spec.name, job.table),
                    Err(e) => println!("  {:<32} FAILED  {}: {e:#}", job.spec.name, job.table),
                }
            }
        }
    }
    Ok(code)
}
