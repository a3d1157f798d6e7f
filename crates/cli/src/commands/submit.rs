//! `backhaul submit`: send a job spec to a coordinator, which plans and stores it.

use std::path::{Path, PathBuf};

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
    let submission = Submission {
        spec: &args.spec,
        base_dir: args.base_dir.as_deref(),
        wait: args.wait,
        fidelity_report: args.fidelity_report.as_deref(),
        sync_now: None,
    };
    send(globals, &args.remote, submission).await
}

/// What to send to a coordinator, and how to wait for it.
pub struct Submission<'a> {
    /// The spec file.
    pub spec: &'a Path,
    /// Where the spec's relative paths resolve; default: the spec's directory.
    pub base_dir: Option<&'a Path>,
    /// Follow the job until it finishes.
    pub wait: bool,
    /// Write the type-fidelity report here too.
    pub fidelity_report: Option<&'a Path>,
    /// `Some` runs the spec as a sync at this time (`None` inside: the coordinator's clock).
    pub sync_now: Option<Option<i64>>,
}

/// Sends a spec to the coordinator (as a fixed-range job or as a sync), prints what it did and,
/// with `wait`, follows the job to its end. Shared by `submit` and `sync --coordinator`.
pub async fn send(globals: &Globals, remote: &RemoteArgs, args: Submission<'_>) -> Result<u8> {
    let spec_toml = std::fs::read_to_string(args.spec).with_context(|| format!("reading {}", args.spec.display()))?;
    let base_dir = base_dir_of(args.spec, args.base_dir)?;
    let origin = args.spec.display().to_string();
    let sent = send_text(globals, remote, &spec_toml, &origin, &base_dir, &args, globals.progress).await?;
    match globals.output {
        OutputFormat::Json => output::print_json(&sent.doc),
        OutputFormat::Text => {
            if let Some(line) = &sent.line {
                println!("{line}");
            }
        }
    }
    Ok(sent.code)
}

/// Where a spec's relative paths resolve on the coordinator and workers: `base_dir`, else the
/// spec file's directory on this machine.
pub fn base_dir_of(spec: &Path, base_dir: Option<&Path>) -> Result<PathBuf> {
    match base_dir {
        Some(d) => Ok(d.to_path_buf()),
        None => {
            let dir = spec
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            std::fs::canonicalize(dir).with_context(|| format!("resolving the directory of {}", spec.display()))
        }
    }
}

/// What sending one spec did.
pub struct Sent {
    /// The exit code it deserves: 0, 1 when refused, 4 when waited for and chunks were parked.
    pub code: u8,
    /// The result as `--output json` shows it.
    pub doc: serde_json::Value,
    /// The line text mode prints on stdout (the job id, or its end state after waiting).
    pub line: Option<String>,
}

/// Sends the spec text (`origin` names it), as `args` say; text mode prints what the
/// coordinator did on stderr. `progress` draws a bar while waiting.
pub async fn send_text(
    globals: &Globals,
    remote: &RemoteArgs,
    spec_toml: &str,
    origin: &str,
    base_dir: &Path,
    args: &Submission<'_>,
    progress: bool,
) -> Result<Sent> {
    let mut client = remote.client()?;
    let req = pb::SubmitJobRequest {
        spec_toml: spec_toml.to_string(),
        spec_origin: origin.to_string(),
        base_dir: base_dir.display().to_string(),
        sync: args.sync_now.is_some(),
        sync_now_us: args.sync_now.flatten().unwrap_or(0),
    };
    let resp = client
        .submit_job(req)
        .await
        .map_err(|s| remote.rpc_error(if args.sync_now.is_some() { "sync" } else { "submit" }, s))?
        .into_inner();
    let submitted = match resp.outcome {
        Some(pb::submit_job_response::Outcome::Job(job)) => job,
        Some(pb::submit_job_response::Outcome::Rejected(e)) => {
            if globals.output == OutputFormat::Text {
                eprintln!(
                    "error: {}\n(refused by the coordinator: {} error, {})",
                    remote::job_error_text(&e),
                    e.kind,
                    remote::class_name(e.class)
                );
            }
            return Ok(Sent {
                code: crate::exit::FAILURE,
                doc: json!({ "error": remote::job_error_json(&e) }),
                line: None,
            });
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
    if let (Some(dir), Some(report)) = (args.fidelity_report, &fidelity) {
        // The job is stored at the coordinator either way; say so, so nobody submits again.
        let path = report.write(dir).with_context(|| {
            format!("job {job_id} was submitted, but its type-fidelity report could not be written")
        })?;
        if globals.output == OutputFormat::Text {
            eprintln!("type-fidelity report written to {}", path.display());
        }
    }
    let sync = submitted.sync.as_ref().map(|r| sync_json(r, &status));
    if globals.output == OutputFormat::Text {
        if let Some(line) = submitted.sync.as_ref().and_then(|r| sync_line(r, &status)) {
            eprintln!("{line}");
        } else if submitted.created {
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
        return Ok(Sent {
            code: 0,
            doc: json!({
                "created": submitted.created,
                "status": remote::status_json(&status),
                "type_fidelity": fidelity,
                "sync": sync,
            }),
            line: Some(job_id),
        });
    }
    let last = remote::follow(remote, &mut client, &job_id, progress).await?;
    Ok(Sent {
        code: remote::exit_code(&last),
        doc: json!({
            "created": submitted.created,
            "status": remote::status_json(&last),
            "type_fidelity": fidelity,
            "sync": sync,
        }),
        line: Some(format!(
            "job {job_id}: {}, {}/{} chunks committed, {} parked, {} rows",
            remote::state_name(last.state),
            last.committed,
            last.chunks,
            last.parked,
            group(last.committed_rows)
        )),
    })
}

/// The line `sync --coordinator` prints for what the sync did; `None` for a first sync, which
/// prints like a submitted job.
fn sync_line(result: &pb::SyncResult, status: &pb::JobStatus) -> Option<String> {
    use pb::sync_result::Outcome;
    let job = &status.job_id;
    match result.outcome.as_ref()? {
        Outcome::Backfill(_) => None,
        Outcome::Extended(e) => Some(format!(
            "sync of job {job}: high-water mark {} → {}, {} new chunks",
            remote::cursor_kind(&status.cursor_kind).format(e.from_mark),
            remote::cursor_kind(&status.cursor_kind).format(e.to_mark),
            e.chunks.len()
        )),
        Outcome::UpToDate(_) => Some(format!(
            "job {job} is up to date (high-water mark {}); its unfinished chunks keep running",
            status
                .range
                .as_ref()
                .map(|r| remote::cursor_kind(&status.cursor_kind).format(r.to))
                .unwrap_or_default()
        )),
    }
}

/// The sync's outcome in `--output json`: `{"outcome": "backfill" | "extended" | "up_to_date", …}`.
fn sync_json(result: &pb::SyncResult, status: &pb::JobStatus) -> serde_json::Value {
    use pb::sync_result::Outcome;
    match result.outcome.as_ref() {
        Some(Outcome::Extended(e)) => json!({
            "outcome": "extended",
            "from_mark": remote::cursor_kind(&status.cursor_kind).format(e.from_mark),
            "to_mark": remote::cursor_kind(&status.cursor_kind).format(e.to_mark),
            "new_chunks": e.chunks,
        }),
        Some(Outcome::UpToDate(_)) => json!({ "outcome": "up_to_date" }),
        Some(Outcome::Backfill(_)) | None => json!({ "outcome": "backfill" }),
    }
}
