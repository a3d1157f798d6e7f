//! `backhaul plan`.

use std::path::PathBuf;

use anyhow::Result;
use backhaul_coordinator::{JobPlan, PlanLoad, plan_job_at};
use backhaul_core::chunking::AMPLIFICATION_WARNING;
use clap::Args;
use serde_json::json;

use super::common::load_spec;
use crate::connectors::builtin_connectors;
use crate::output::{self, group, size};
use crate::pipeline;
use crate::{Globals, OutputFormat};

/// Arguments of `plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Job spec file (TOML, see docs/job-spec.md), or a pipeline spec (docs/pipelines.md).
    spec: PathBuf,
    /// Print every chunk; by default long plans show their first and last 10.
    #[arg(long)]
    all: bool,
    /// Plan a sync spec (`range.to = "now"`) as its first sync would at this time (RFC 3339
    /// or a date), ending at it minus `sync.lag`.
    #[arg(long, value_name = "TIME", value_parser = super::sync::parse_time)]
    now: Option<i64>,
}

/// Plans and prints the chunks; of a pipeline, one line per table.
pub async fn run(globals: &Globals, args: PlanArgs) -> Result<u8> {
    if pipeline::is_pipeline_file(&args.spec)? {
        let loaded = pipeline::load(&args.spec).await?;
        return pipeline::run_tables(globals, &loaded, |job, p| async move {
            let plan = plan_job_at(job.spec.clone(), &p.origin, &p.base, p.connectors(), false, args.now).await?;
            let kind = plan.table.cursor_kind;
            let rows: u64 = plan.chunks.iter().map(|c| c.estimated_rows).sum();
            let bytes: u64 = plan.chunks.iter().map(|c| c.estimated_bytes).sum();
            if globals.output == OutputFormat::Text {
                println!("{}", headline(&plan, rows, bytes));
            }
            Ok((
                0,
                json!({
                    "job": plan.spec.name,
                    "cursor": { "column": plan.table.cursor_column, "kind": kind.as_str() },
                    "range": { "from": kind.format(plan.range.from), "to": kind.format(plan.range.to) },
                    "chunks": plan.chunks.len(),
                    "estimated_rows": rows,
                    "estimated_bytes": bytes,
                }),
            ))
        })
        .await;
    }
    let (spec, origin, base) = load_spec(&args.spec)?;
    let plan = plan_job_at(spec, &origin, &base, &builtin_connectors(), false, args.now).await?;
    let kind = plan.table.cursor_kind;
    let rows: u64 = plan.chunks.iter().map(|c| c.estimated_rows).sum();
    let bytes: u64 = plan.chunks.iter().map(|c| c.estimated_bytes).sum();
    let warnings: Vec<String> = amplification_warning(&plan.load).into_iter().collect();
    match globals.output {
        OutputFormat::Json => output::print_json(&json!({
            "job": plan.spec.name,
            "cursor": { "column": plan.table.cursor_column, "kind": kind.as_str() },
            "range": { "from": kind.format(plan.range.from), "to": kind.format(plan.range.to) },
            "estimated_rows": rows,
            "estimated_bytes": bytes,
            "workers": plan.load.workers,
            "estimated_idle_share": plan.load.idle_share,
            "physical_order": plan.load.order,
            "estimated_read_amplification": plan.load.read_amplification,
            "warnings": warnings,
            "type_fidelity": plan.fidelity,
            "destination_notes": plan.destination_notes,
            "chunks": plan.chunks.iter().map(|c| json!({
                "index": c.index,
                "from": kind.format(c.range.from),
                "to": kind.format(c.range.to),
                "estimated_rows": c.estimated_rows,
                "estimated_bytes": c.estimated_bytes,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            println!("{}", headline(&plan, rows, bytes));
            println!("{}", load_line(&plan.load));
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{:>6}  {:<22}  {:<22}  {:>12}  {:>10}",
                "chunk", "from", "to", "est. rows", "est. size"
            );
            let n = plan.chunks.len();
            for (i, c) in plan.chunks.iter().enumerate() {
                if !args.all && n > 20 && i == 10 {
                    println!("{:>6}  … {} more chunks (--all shows them)", "", n - 20);
                }
                if !args.all && n > 20 && (10..n - 10).contains(&i) {
                    continue;
                }
                println!(
                    "{:>6}  {:<22}  {:<22}  {:>12}  {:>10}",
                    c.index,
                    kind.format(c.range.from),
                    kind.format(c.range.to),
                    group(c.estimated_rows),
                    size(c.estimated_bytes)
                );
            }
            println!();
            for note in &plan.destination_notes {
                let label = if note.warning { "warning" } else { "destination" };
                println!("{label}: {}", note.message);
            }
            if !plan.destination_notes.is_empty() {
                println!();
            }
            print!("{}", plan.fidelity.to_markdown().trim_start_matches('#').trim_start());
        }
    }
    Ok(0)
}

/// The plan in one line: job, chunks, range, cursor, estimated rows and size.
fn headline(plan: &JobPlan, rows: u64, bytes: u64) -> String {
    let kind = plan.table.cursor_kind;
    format!(
        "job {}: {} chunks over {} on {} ({}), about {} rows, {}",
        plan.spec.name,
        plan.chunks.len(),
        plan.range.display(kind),
        plan.table.cursor_column,
        kind.as_str(),
        group(rows),
        size(bytes)
    )
}

/// One line on how the plan loads the source and the workers.
fn load_line(load: &PlanLoad) -> String {
    let balance = format!(
        "balanced for {} workers (about {:.0}% idle)",
        load.workers,
        load.idle_share * 100.0
    );
    match (load.order, load.read_amplification) {
        (Some(order), Some(amplification)) => format!(
            "{balance}; the source reads its table about {amplification:.1} times \
             (cursor correlation with physical order {:.3}, {} pages{})",
            order.correlation,
            group(order.heap_pages.round() as u64),
            if order.block_scans > 1 {
                format!(
                    "; a chunk that reads the whole table is read by {} block-range scans",
                    order.block_scans
                )
            } else {
                String::new()
            }
        ),
        _ => format!("{balance}; read amplification unknown (the source cannot tell its physical order)"),
    }
}

/// The warning for a plan that reads the source's table much more than once.
fn amplification_warning(load: &PlanLoad) -> Option<String> {
    let amplification = load.read_amplification.filter(|a| *a > AMPLIFICATION_WARNING)?;
    Some(format!(
        "the chunks' range queries read the source table about {amplification:.1} times, not once: \
         the cursor barely follows the physical row order, so each chunk scans most pages. \
         Fewer workers (`chunking.workers`), a cursor in physical order, or clustering the table \
         on the cursor lowers the load (see docs/job-spec.md, [chunking])"
    ))
}
