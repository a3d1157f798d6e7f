//! `backhaul demo`: the embedded default job, end to end, with no servers.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use backhaul_core::connector::Connectors;
use backhaul_core::spec::JobSpec;
use clap::Args;

use super::backfill::{RunArgs, submit};
use super::common::{self, open_store_exclusive};
use super::verify;
use crate::connectors::builtin_connectors;
use crate::{Globals, OutputFormat, local};

/// The demo job, shipped as a readable example spec.
const DEMO_SPEC: &str = include_str!("../../../../deploy/jobs/demo-orders.toml");

/// Arguments of `demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Directory for everything the demo writes.
    #[arg(long, default_value = ".backhaul/demo")]
    dir: PathBuf,
    /// Days of order history to load, starting 2023-01-01.
    #[arg(long, default_value_t = 181, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// Generated rows per day at 2020-01-01 (volume doubles every year after).
    #[arg(long)]
    rows_per_day: Option<u64>,
    #[command(flatten)]
    run: RunArgs,
}

/// Seeds, backfills, verifies and summarizes the demo job.
pub async fn run(globals: &Globals, args: DemoArgs) -> Result<u8> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    // Start from an empty warehouse each time; the seeded source is kept (seeding is the slow part).
    for stale in ["state.db", "state.db-wal", "state.db-shm", "stage", "warehouse"] {
        remove(&args.dir.join(stale))?;
    }
    let spec_path = args.dir.join("orders.toml");
    std::fs::write(&spec_path, demo_spec(&args)?).with_context(|| format!("writing {}", spec_path.display()))?;
    let globals = Globals {
        state: args.dir.join("state.db"),
        state_password_file: None,
        output: globals.output,
        progress: globals.progress,
    };
    let store = open_store_exclusive(&globals)?;
    let text = globals.output == OutputFormat::Text;
    if text {
        eprintln!(
            "demo: seeding the embedded source if needed and planning {} ...",
            spec_path.display()
        );
    }
    let seeded = Instant::now();
    let job_id = submit(&globals, &store, &spec_path).await?;
    if text {
        eprintln!(
            "demo: source ready and job planned in {:.1}s",
            seeded.elapsed().as_secs_f64()
        );
    }
    let report = local::run(&store, args.run.local(&globals, &job_id)).await?;
    let (code, run_doc) = common::run_summary(&globals, &store, &job_id, &report).await?;
    let v = verify::verify_job(&store, &job_id).await?;
    match globals.output {
        OutputFormat::Json => crate::output::print_json(&serde_json::json!({
            "run": run_doc,
            "verify": { "verified": v.problems.is_empty(), "result": v },
            "warehouse": args.dir.join("warehouse"),
        })),
        OutputFormat::Text => verify::print(&globals, &job_id, &v),
    }
    if text {
        let wh = args.dir.join("warehouse");
        println!(
            "\nquery it:\n  backhaul query --warehouse {} \"SELECT status, count(*) AS orders, sum(amount) AS revenue FROM orders GROUP BY status ORDER BY orders DESC\"",
            wh.display()
        );
    }
    if !v.problems.is_empty() {
        return Ok(crate::exit::VERIFY_MISMATCH);
    }
    Ok(code)
}

fn demo_spec(args: &DemoArgs) -> Result<String> {
    let mut spec = JobSpec::from_toml(DEMO_SPEC, "deploy/jobs/demo-orders.toml")?;
    let from = chrono::NaiveDate::from_ymd_opt(2023, 1, 1).expect("valid date");
    let to = from + chrono::Days::new(u64::from(args.days));
    spec.range.to = to.to_string();
    if let Some(r) = args.rows_per_day {
        // The demo's source is the embedded one.
        let settings = &mut spec.source.settings;
        settings.insert("rows_per_day".into(), toml::Value::Integer(i64::try_from(r)?));
        // A seeded database belongs to its generator settings; keep one per setting.
        settings.insert("path".into(), toml::Value::String(format!("source-{r}.db")));
    }
    let checked = builtin_connectors().check(&spec, "deploy/jobs/demo-orders.toml")?;
    Ok(format!(
        "# Written by `backhaul demo` from deploy/jobs/demo-orders.toml.\n{}",
        checked.to_canonical_toml()
    ))
}

fn remove(path: &Path) -> Result<()> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}
