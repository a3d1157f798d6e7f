//! `backhaul query`.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use backhaul_core::registry::{DestinationConfig, DestinationKind};
use backhaul_core::spec::{JobSpec, parse_section};
use backhaul_sink_local::{LocalDestinationSpec, LocalKind};
use clap::Args;

use super::common::{self, open_state};
use crate::{Globals, OutputFormat};

/// Arguments of `query`.
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// SQL to run; every table of the warehouse is registered under its name.
    sql: String,
    /// Warehouse directory; default: the destination of the most recent job in the state database.
    #[arg(long, env = "BACKHAUL_WAREHOUSE")]
    warehouse: Option<PathBuf>,
}

/// Runs the query and prints the result.
pub async fn run(globals: &Globals, args: QueryArgs) -> Result<u8> {
    let root = match args.warehouse {
        Some(p) => p,
        None => latest_warehouse(globals).await?,
    };
    let batches = backhaul_sink_local::query(&root, &args.sql).await?;
    match globals.output {
        OutputFormat::Json => {
            let mut writer = arrow::json::ArrayWriter::new(Vec::new());
            for b in &batches {
                writer.write(b)?;
            }
            writer.finish()?;
            let bytes = writer.into_inner();
            let text = if bytes.is_empty() {
                "[]".to_string()
            } else {
                String::from_utf8(bytes)?
            };
            println!("{text}");
        }
        OutputFormat::Text => println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?),
    }
    Ok(0)
}

async fn latest_warehouse(globals: &Globals) -> Result<PathBuf> {
    let store = open_state(globals).await?;
    let jobs = store.jobs().await?;
    let (job, _) = jobs.last().ok_or_else(|| {
        anyhow!(
            "no jobs in {}; pass --warehouse DIR",
            common::state_location(globals).describe()
        )
    })?;
    let origin = format!("job {}", job.job_id);
    let spec = JobSpec::from_toml(&job.spec_toml, &origin).with_context(|| format!("reading {origin}"))?;
    if spec.destination.kind != LocalKind.kind() {
        bail!(
            "{origin} loads into a `{}` destination; `backhaul query` reads local warehouses: pass --warehouse DIR",
            spec.destination.kind
        );
    }
    let mut local: LocalDestinationSpec = parse_section(&spec.destination.settings, "destination", &origin)?;
    local.resolve_paths(&job.base_dir);
    Ok(local.path)
}
