//! `backhaul cost` and `backhaul cost-models check`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use backhaul_core::changes::{MonthChanges, sum_months};
use backhaul_core::connector::Connectors;
use backhaul_core::spec::JobSpec;
use backhaul_cost::config::WAREHOUSE_SIZES;
use backhaul_cost::estimate::{EstimateInput, estimate};
use backhaul_cost::prices::PriceBook;
use backhaul_cost::profile::{Profile, fingerprint, pipeline_fingerprint};
use backhaul_cost::report;
use chrono::{NaiveDate, Utc};
use clap::{Args, Subcommand};
use serde_json::json;

use super::common::load_spec;
use super::profile::{ClusterArgs, ProfileFlags, load_config, take_profile};
use crate::connectors::builtin_connectors;
use crate::{Globals, OutputFormat, output, pipeline};

/// Arguments of `cost`.
#[derive(Args, Debug)]
pub struct CostArgs {
    /// Job spec file (TOML, see docs/job-spec.md), or a pipeline spec: every table's estimate
    /// and their total.
    spec: PathBuf,
    /// A saved profile of this job (`backhaul profile -o`); without it the source is profiled now.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Price date, YYYY-MM-DD (default: today, UTC).
    #[arg(long)]
    as_of: Option<String>,
    /// Contract prices that win over the tables (repeatable; same format as cost-models/).
    #[arg(long)]
    overlay: Vec<PathBuf>,
    /// Refuse to use any price whose confidence is `unconfirmed`.
    #[arg(long)]
    strict: bool,
    /// Also write the report as a self-contained HTML page with a chart.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Read price tables from this directory instead of the copy built into the binary.
    #[arg(long)]
    models: Option<PathBuf>,
    /// Snowflake warehouse size (overrides snowflake.warehouse): xs, s, m, l, xl, 2xl ... 6xl.
    #[arg(long)]
    warehouse: Option<String>,
    /// Also show the rows the job's loads really inserted, updated and deleted per month (UTC),
    /// as its destination recorded them, beside the estimate.
    #[arg(long)]
    actual: bool,
    #[command(flatten)]
    flags: ProfileFlags,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Loads the price tables and overlays.
fn price_book(models: Option<&Path>, overlays: &[PathBuf]) -> Result<PriceBook> {
    let mut book = match models {
        Some(dir) => PriceBook::load_dir(dir)?,
        None => PriceBook::builtin()?,
    };
    for o in overlays {
        book.add_overlay_file(o)?;
    }
    Ok(book)
}

/// Estimates and prints.
pub async fn run(globals: &Globals, args: CostArgs) -> Result<u8> {
    let (mut config, origin) = load_config(&args.flags)?;
    snowflake_as_configured(&mut config, &args.spec)?;
    if let Some(size) = &args.warehouse {
        let size = size.to_ascii_lowercase();
        if !WAREHOUSE_SIZES.contains(&size.as_str()) {
            bail!("--warehouse {size}: use one of {}", WAREHOUSE_SIZES.join(", "));
        }
        config.snowflake.warehouse = size;
    }
    let as_of = match &args.as_of {
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .with_context(|| format!("--as-of {text}: write a date as YYYY-MM-DD"))?,
        None => Utc::now().date_naive(),
    };
    let book = price_book(args.models.as_deref(), &args.overlay)?;
    let profile = match &args.profile {
        Some(path) => {
            let profile = Profile::load(path)?;
            let file = path.display().to_string();
            if pipeline::is_pipeline_file(&args.spec)? {
                let loaded = pipeline::load(&args.spec).await?;
                let mut fingerprints = Vec::new();
                for job in &loaded.jobs {
                    fingerprints.push(fingerprint(
                        &builtin_connectors().check(&job.spec, &loaded.origin)?.spec,
                    ));
                }
                profile.check_taken_for(&loaded.spec.pipeline.name, &pipeline_fingerprint(&fingerprints), &file)?;
            } else {
                let (spec, spec_origin, _) = load_spec(&args.spec)?;
                let checked = builtin_connectors().check(&spec, &spec_origin)?;
                profile.check_job(&checked.spec, &file)?;
            }
            profile
        }
        None => take_profile(&args.spec, &config, &origin, args.flags.exact, &args.cluster).await?,
    };
    let report = estimate(&EstimateInput {
        profile: &profile,
        book: &book,
        config: &config,
        as_of,
        strict: args.strict,
    })?;
    if let Some(path) = &args.html {
        std::fs::write(path, report::to_html(&report)).with_context(|| format!("writing {}", path.display()))?;
    }
    let actual = if args.actual {
        Some(actual_changes(&args.spec).await?)
    } else {
        None
    };
    match (globals.output, actual) {
        (OutputFormat::Json, None) => println!("{}", report::to_json(&report)),
        (OutputFormat::Json, Some(actual)) => {
            let estimate: serde_json::Value = serde_json::from_str(&report::to_json(&report))?;
            output::print_json(&json!({ "estimate": estimate, "actual": actual }));
        }
        (OutputFormat::Text, actual) => {
            print!("{}", report::to_text(&report));
            if let Some(actual) = actual {
                print_actual(&report, &actual);
            }
        }
    }
    Ok(0)
}

/// What the job's destination recorded of its loads, per month; for a pipeline, summed over
/// its tables' jobs.
async fn actual_changes(spec_path: &Path) -> Result<Vec<MonthChanges>> {
    if pipeline::is_pipeline_file(spec_path)? {
        let loaded = pipeline::load(spec_path).await?;
        let mut tables = Vec::new();
        for job in &loaded.jobs {
            tables.push(job_changes(job.spec.clone(), &loaded.origin, &loaded.base).await?);
        }
        return Ok(sum_months(tables));
    }
    let (spec, origin, base) = load_spec(spec_path)?;
    job_changes(spec, &origin, &base).await
}

/// One job's months as its destination recorded them.
async fn job_changes(spec: JobSpec, origin: &str, base: &Path) -> Result<Vec<MonthChanges>> {
    let mut checked = builtin_connectors().check(&spec, origin)?;
    checked.resolve_paths(base);
    let destination = checked.destination.build()?;
    match destination.monthly_changes(&checked.spec.name).await? {
        Some(months) => Ok(months),
        None => bail!(
            "{origin}: --actual: destination `{}` does not record rows per month (the local warehouse does, for [sync] jobs)",
            checked.spec.destination.kind
        ),
    }
}

fn print_actual(report: &backhaul_cost::estimate::Report, months: &[MonthChanges]) {
    println!();
    println!("Actual rows per month (UTC), as the destination recorded the loads:");
    println!(
        "  {:<8} {:>12} {:>12} {:>12} {:>12}",
        "month", "inserted", "updated", "deleted", "active"
    );
    for m in months {
        println!(
            "  {:<8} {:>12} {:>12} {:>12} {:>12}",
            m.month,
            m.inserted,
            m.updated,
            m.deleted,
            m.active()
        );
    }
    if months.is_empty() {
        println!("  (nothing loaded by a sync yet)");
    }
    for t in &report.tables {
        println!(
            "  planner's estimate for {}: {} monthly active rows in a steady month",
            t.name, t.steady.mar
        );
    }
    println!(
        "  Counts are per sync: a key changed on several nights of a month counts once per night, so \"active\" can exceed the distinct keys a vendor bills as monthly active rows."
    );
}

/// The Snowflake lines price what a Snowflake destination is configured with: its
/// `warehouse_size` (over `[snowflake] warehouse`; `--warehouse` still wins) and, with an internal
/// stage, internal staging. Its `file_size` reaches the estimate through the profile already.
fn snowflake_as_configured(config: &mut backhaul_cost::config::CostConfig, spec_path: &Path) -> Result<()> {
    let (section, origin) = match pipeline::pipeline_spec(&spec_path.to_string_lossy())? {
        // A pipeline's destination is every table's, but for the table key.
        Some(mut p) => {
            p.destination
                .settings
                .entry("table")
                .or_insert_with(|| toml::Value::String(p.pipeline.name.clone()));
            (p.destination, spec_path.display().to_string())
        }
        None => {
            let (spec, origin, _) = load_spec(spec_path)?;
            (spec.destination, origin)
        }
    };
    if section.kind != "snowflake" {
        return Ok(());
    }
    let destination: backhaul_sink_snowflake::SnowflakeDestinationSpec =
        backhaul_core::spec::parse_section(&section.settings, "destination", &origin)?;
    if destination.warehouse_size.is_some() {
        config.snowflake.warehouse = destination.warehouse_size().to_string();
    }
    if matches!(
        destination.stage_mode(&origin)?,
        backhaul_sink_snowflake::StageMode::Internal { .. }
    ) {
        config.snowflake.stage = backhaul_cost::config::StageKind::Internal;
    }
    Ok(())
}

/// Arguments of `cost-models`.
#[derive(Args, Debug)]
pub struct CostModelsArgs {
    #[command(subcommand)]
    action: CostModelsAction,
}

#[derive(Subcommand, Debug)]
enum CostModelsAction {
    /// Check price tables: they parse, every row has a known unit and a source, periods of one
    /// id do not overlap. Without DIR, checks the tables built into the binary.
    Check {
        /// Directory of price tables (e.g. cost-models).
        dir: Option<PathBuf>,
        /// Overlay files to check on top (repeatable).
        #[arg(long)]
        overlay: Vec<PathBuf>,
    },
}

/// Runs `cost-models check`.
pub async fn run_models(globals: &Globals, args: CostModelsArgs) -> Result<u8> {
    let CostModelsAction::Check { dir, overlay } = args.action;
    let book = price_book(dir.as_deref(), &overlay)?;
    let summary = book.summary();
    match globals.output {
        OutputFormat::Json => output::print_json(&json!({ "ok": true, "summary": summary })),
        OutputFormat::Text => {
            let by: Vec<String> = summary
                .rows_by_confidence
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            println!(
                "ok: {} files, {} rows ({})",
                summary.files.len(),
                summary.rows,
                by.join(", ")
            );
            for f in &summary.files {
                println!("  {f}");
            }
        }
    }
    Ok(0)
}
