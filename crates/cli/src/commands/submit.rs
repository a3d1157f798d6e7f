//! `backhaul submit`: send a job spec to a coordinator, which plans and stores it.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use backhaul_proto::v1 as pb;
use clap::Args;
use serde_json::json;

use super::remote::{self, RemoteArgs};
use crate::output::{self, group};
use crate::{Globals, OutputFormat};

/// Arguments of `submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Job spec file (TOML, see docs/job-spec.md). Submitting it again finds the same job.
    spec: PathBuf,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Directory relative paths in the spec resolve against, on the coordinator and workers;
    /// default: the spec file's directory on this machine.
    #[arg(long, value_name = "DIR")]
    base_dir: Option<PathBuf>,
    /// Wait for the job to finish, drawing progress; exit like `backfill` (0, 4 parked).
    #[arg(long)]
    wait: bool,
    /// Also write the job's type-fidelity report (Markdown and JSON) into DIR/<job>/ on this
    /// machine. The coordinator writes it next to its state file either way.
    #[arg(long, value_name = "DIR")]
    fidelity_report: Option<PathBuf>,
}

/// Submits the spec; prints the job, or the typed error the coordinator refused it with.
pub async fn run(globals: &Globals, args: SubmitArgs) -> Result<u8> {
    let spec_toml = std::fs::read_to_string(&args.spec).with_context(|| format!("reading {}", args.spec.display()))?;
    let base_dir = match &args.base_dir {
        Some(d) => d.clone(),
        None => {
            let dir = args
                .spec
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            std::fs::canonicalize(dir).with_context(|| format!("resolving the directory of {}", args.spec.display()))?
        }
    };
    let mut client = args.remote.client()?;
    let req = pb::SubmitJobRequest {
        spec_toml,
        spec_origin: args.spec.display().to_string(),
        base_dir: base_dir.display().to_string(),
    };
    let resp = client
        .submit_job(req)
        .await
        .map_err(|s| args.remote.rpc_error("submit", s))?
        .into_inner();
    let submitted = match resp.outcome {
        Some(pb::submit_job_response::Outcome::Job(job)) => job,
        Some(pb::submit_job_response::Outcome::Rejected(e)) => {
            match globals.output {
                OutputFormat::Json => output::print_json(&json!({ "error": remote::job_error_json(&e) })),
                OutputFormat::Text => eprintln!(
                    "error: {}\n(refused by the coordinator: {} error, {})",
                    remote::job_error_text(&e),
                    e.kind,
                    remote::class_name(e.class)
                ),
            }
            return Ok(crate::exit::FAILURE);
        }
        None => return Err(anyhow!("the coordinator answered without an outcome")),
    };
    let status = submitted
        .status
        .ok_or_else(|| anyhow!("submitted job without a status"))?;
    let job_id = status.job_id.clone();
    let fidelity = submitted
        .type_fidelity
        .clone()
        .map(backhaul_coordinator::service::fidelity_from_pb);
    if let (Some(dir), Some(report)) = (&args.fidelity_report, &fidelity) {
        // The job is stored at the coordinator either way; say so, so nobody submits again.
        let path = report.write(dir).with_context(|| {
            format!("job {job_id} was submitted, but its type-fidelity report could not be written")
        })?;
        if globals.output == OutputFormat::Text {
            eprintln!("type-fidelity report written to {}", path.display());
        }
    }
    if globals.output == OutputFormat::Text {
        if submitted.created {
            eprintln!(
                "submitted job {job_id}: {} chunks over {}, about {} rows",
                status.chunks,
                status.range_display,
                group(status.estimated_rows)
            );
        } else {
            eprintln!(
                "job {job_id} already exists with this spec: {}/{} chunks committed",
                status.committed, status.chunks
            );
        }
        if let Some(report) = &fidelity {
            eprintln!("type fidelity: {}", report.verdict());
            for c in report.columns.iter().filter(|c| !c.lossy_steps.is_empty()) {
                eprintln!("  {}: {}", c.name, c.lossy_steps.join("; "));
            }
        }
    }
    if !args.wait {
        if globals.output == OutputFormat::Json {
            output::print_json(&json!({
                "created": submitted.created,
                "status": remote::status_json(&status),
                "type_fidelity": fidelity,
            }));
        } else {
            println!("{job_id}");
        }
        return Ok(0);
    }
    let last = remote::follow(&args.remote, &mut client, &job_id, globals.progress).await?;
    match globals.output {
        OutputFormat::Json => output::print_json(&json!({
            "created": submitted.created,
            "status": remote::status_json(&last),
            "type_fidelity": fidelity,
        })),
        OutputFormat::Text => println!(
            "job {job_id}: {}, {}/{} chunks committed, {} parked, {} rows",
            remote::state_name(last.state),
            last.committed,
            last.chunks,
            last.parked,
            group(last.committed_rows)
        ),
    }
    Ok(remote::exit_code(&last))
}
