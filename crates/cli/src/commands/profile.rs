//! `backhaul profile`: measure a job's table for the cost planner and save the profile.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use backhaul_coordinator::plan_source;
use backhaul_core::connector::{Connectors, Source};
use backhaul_core::spec::JobSpec;
use backhaul_cost::config::CostConfig;
use backhaul_cost::profile::{Measured, Profile, TableProfile, fingerprint, pipeline_fingerprint};
use backhaul_cost::profiler::{ProfileInput, ProfileOptions, assemble, profile_table};
use backhaul_proto::v1 as pb;
use backhaul_worker::flight::{DataPlaneClient, RemoteSource};
use chrono::Utc;
use clap::Args;

use super::common::load_spec;
use super::remote::RemoteArgs;
use crate::connectors::builtin_connectors;
use crate::output::{self, group};
use crate::{Globals, OutputFormat};

/// Profile options that override the cost config (`[profile]`).
#[derive(Args, Debug, Clone, Default)]
pub struct ProfileFlags {
    /// Cost config file (TOML, see docs/cost.md); every key has a default.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Read the whole range: exact row count and exact activity (slow on big tables).
    #[arg(long)]
    pub exact: bool,
    /// Rows to sample (overrides profile.sample_rows).
    #[arg(long)]
    pub sample_rows: Option<u64>,
    /// Column set once on insert (overrides profile.created_at).
    #[arg(long)]
    pub created_at: Option<String>,
    /// Column set on every change (overrides profile.updated_at).
    #[arg(long)]
    pub updated_at: Option<String>,
    /// Soft-delete column, timestamp or boolean (overrides profile.soft_delete).
    #[arg(long)]
    pub soft_delete: Option<String>,
    /// End of the steady window, a date or RFC 3339 time (overrides profile.window_end).
    #[arg(long)]
    pub window_end: Option<String>,
}

/// Cluster mode: a worker reads the source (over Arrow Flight), not this machine.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// With --coordinator, every source read runs on a worker of that cluster started with
    /// --flight-listen; this machine needs neither the source's credentials nor its network.
    #[command(flatten)]
    remote: RemoteArgs,
    /// Directory relative paths in the spec resolve against on the worker (cluster mode);
    /// default: the spec file's directory on this machine.
    #[arg(long, value_name = "DIR")]
    base_dir: Option<PathBuf>,
}

impl ClusterArgs {
    /// The job's source: built here, or in cluster mode a worker's.
    /// `spec` is checked ([`Connectors::check`]), paths as written.
    async fn source(&self, spec: &JobSpec, origin: &str, spec_dir: &Path) -> Result<Arc<dyn Source>> {
        if self.remote.coordinator.is_none() {
            if self.base_dir.is_some() {
                bail!("--base-dir names a directory on a worker: give --coordinator too");
            }
            let mut source = builtin_connectors().source_config(&spec.source, origin)?;
            source.resolve_paths(spec_dir);
            return Ok(source.build()?);
        }
        let config = self.remote.config()?;
        let offer = config
            .connect_lazy()?
            .find_data_plane(pb::FindDataPlaneRequest {})
            .await
            .map_err(|s| self.remote.rpc_error("finding a worker that serves Arrow Flight", s))?
            .into_inner();
        let worker = DataPlaneClient::connect(&config.data_plane(&offer.flight_url))?;
        tracing::info!(worker = %offer.flight_url, "the source is read by a worker");
        let base_dir = self.base_dir.as_deref().unwrap_or(spec_dir);
        Ok(Arc::new(RemoteSource::new(
            worker,
            spec.to_canonical_toml(),
            origin,
            base_dir,
        )))
    }
}

/// Arguments of `profile`.
#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// Job spec file (TOML, see docs/job-spec.md), or a pipeline spec (every table, one profile).
    spec: PathBuf,
    /// Where to save the profile: `.json` for JSON, anything else for TOML.
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
    #[command(flatten)]
    flags: ProfileFlags,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// The cost config with flags applied, validated; `origin` names it in errors.
pub fn load_config(flags: &ProfileFlags) -> Result<(CostConfig, String)> {
    let (mut config, origin) = match &flags.config {
        Some(path) => (CostConfig::load(path)?, path.display().to_string()),
        None => (CostConfig::default(), "<default cost config>".to_string()),
    };
    let p = &mut config.profile;
    if let Some(n) = flags.sample_rows {
        p.sample_rows = n;
    }
    for (flag, slot) in [
        (&flags.created_at, &mut p.created_at),
        (&flags.updated_at, &mut p.updated_at),
        (&flags.soft_delete, &mut p.soft_delete),
        (&flags.window_end, &mut p.window_end),
    ] {
        if flag.is_some() {
            slot.clone_from(flag);
        }
    }
    let origin = if flags.sample_rows.is_some()
        || flags.created_at.is_some()
        || flags.updated_at.is_some()
        || flags.soft_delete.is_some()
        || flags.window_end.is_some()
    {
        format!("{origin} with command-line flags")
    } else {
        origin
    };
    config.validate(&origin)?;
    Ok((config, origin))
}

/// Plans the source side of the job (stage and destination untouched) and profiles its
/// table, reading the source here or, in cluster mode, on a worker. A pipeline spec is
/// profiled table by table into one profile named after the pipeline.
pub async fn take_profile(
    spec_path: &Path,
    config: &CostConfig,
    origin: &str,
    exact: bool,
    cluster: &ClusterArgs,
) -> Result<Profile> {
    if crate::pipeline::is_pipeline_file(spec_path)? {
        let loaded = crate::pipeline::load(spec_path).await?;
        let mut tables = Vec::new();
        let mut fingerprints = Vec::new();
        for job in &loaded.jobs {
            let (table, fp) =
                profile_job(&job.spec, &loaded.origin, &loaded.base, config, origin, exact, cluster).await?;
            tables.push(table);
            fingerprints.push(fp);
        }
        return Ok(assemble(
            &loaded.spec.pipeline.name,
            &pipeline_fingerprint(&fingerprints),
            tables,
            Utc::now(),
        ));
    }
    let (raw, spec_origin, spec_dir) = load_spec(spec_path)?;
    let (table, fp) = profile_job(&raw, &spec_origin, &spec_dir, config, origin, exact, cluster).await?;
    Ok(assemble(&raw.name, &fp, vec![table], Utc::now()))
}

/// Profiles one job's table; returns it with the job's spec fingerprint.
async fn profile_job(
    raw: &JobSpec,
    spec_origin: &str,
    spec_dir: &Path,
    config: &CostConfig,
    origin: &str,
    exact: bool,
    cluster: &ClusterArgs,
) -> Result<(TableProfile, String)> {
    let checked = builtin_connectors().check(raw, spec_origin)?;
    let fp = fingerprint(&checked.spec);
    let validated = &checked.validated;
    let mut options = ProfileOptions::from_config(&config.profile, origin)?;
    options.exact = exact;
    let source = cluster.source(&checked.spec, spec_origin, spec_dir).await?;
    let plan = plan_source(source.as_ref(), validated, spec_origin, None).await?;
    let input = ProfileInput {
        job: raw.name.clone(),
        source_kind: raw.source.kind.clone(),
        table_name: checked.source.table().to_string(),
        table: plan.table,
        range: plan.range,
        chunks: plan.chunks.len() as u64,
        file_size: checked.destination.staging().file_size,
        source,
    };
    let table = profile_table(&input, &options, Utc::now())
        .await
        .with_context(|| format!("profiling job {}", raw.name))?;
    Ok((table, fp))
}

fn measured(m: &Option<Measured>) -> String {
    match m {
        Some(m) => format!("{} ({})", group(m.value), m.bound.as_str()),
        None => "unknown".into(),
    }
}

/// Prints a profile for people.
pub fn print_profile(profile: &Profile, saved: Option<&Path>) {
    for t in &profile.tables {
        println!(
            "profile of job {}, table {} ({}){}",
            profile.job,
            t.name,
            t.source_kind,
            saved.map_or(String::new(), |p| format!(", saved to {}", p.display()))
        );
        println!(
            "  rows          {} ({}: {})",
            group(t.rows.value),
            t.rows.bound.as_str(),
            t.rows.basis
        );
        println!(
            "  primary key   {}",
            if t.primary_key.is_empty() {
                "none".to_string()
            } else {
                t.primary_key.join(", ")
            }
        );
        println!(
            "  bytes/row     {} zstd Parquet, {} logical, {} Airbyte JSON ({} rows sampled in {} sub-ranges)",
            t.bytes_per_row.parquet_zstd,
            t.bytes_per_row.logical,
            t.bytes_per_row.airbyte_json,
            group(t.sample.rows),
            t.sample.ranges
        );
        let a = &t.activity;
        println!(
            "  activity      {} .. {} ({} days), from {}",
            a.window_from,
            a.window_to,
            a.window_days,
            format!("{:?}", a.method).to_lowercase()
        );
        println!(
            "                inserts {}, updated keys {}, deleted keys {}, keys touched {}",
            measured(&a.inserts),
            measured(&a.updated_keys),
            measured(&a.deleted_keys),
            measured(&a.touched_keys)
        );
        if let Some(tp) = &t.throughput {
            println!(
                "  speed         {} rows read and written as Parquet in {} s ({} rows/s, one reader)",
                group(tp.rows),
                tp.seconds,
                tp.rows_per_second
            );
        }
        for n in &a.notes {
            println!("  - {n}");
        }
    }
}

/// Profiles the job and saves or prints the profile.
pub async fn run(globals: &Globals, args: ProfileArgs) -> Result<u8> {
    let (config, origin) = load_config(&args.flags)?;
    let profile = take_profile(&args.spec, &config, &origin, args.flags.exact, &args.cluster).await?;
    if let Some(out) = &args.out {
        profile.save(out)?;
    }
    match globals.output {
        OutputFormat::Json => output::print_json(&serde_json::to_value(&profile)?),
        OutputFormat::Text => print_profile(&profile, args.out.as_deref()),
    }
    Ok(0)
}
