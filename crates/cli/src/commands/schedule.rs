//! `backhaul schedule add|list|pause|resume|run-now|remove`: schedules kept by a coordinator
//! (docs/pipelines.md, "Schedules").

use std::path::PathBuf;

use anyhow::{Context, Result};
use backhaul_proto::v1 as pb;
use clap::{Args, Subcommand};
use serde_json::json;

use super::remote::RemoteArgs;
use crate::{Globals, OutputFormat, output};

/// Arguments of `schedule`.
#[derive(Args, Debug)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    action: ScheduleAction,
}

/// What to do with schedules.
#[derive(Subcommand, Debug)]
enum ScheduleAction {
    /// Register a job spec (or a pipeline spec: every table's job each run) to run on a cron
    /// expression; the spec's `name` (or `pipeline.name`) names the schedule.
    Add {
        /// Job spec file (TOML, see docs/job-spec.md), or a pipeline spec (docs/pipelines.md).
        spec: PathBuf,
        /// Five-field cron expression (minute hour day-of-month month day-of-week), e.g. "0 2 * * *".
        #[arg(long)]
        cron: String,
        /// IANA time zone the expression's times are read in, e.g. Europe/Berlin.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Directory relative paths in the spec resolve against on the coordinator; default:
        /// the spec file's directory on this machine.
        #[arg(long, value_name = "DIR")]
        base_dir: Option<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List the schedules with their next tick and last run.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Stop starting runs on ticks (run-now still works).
    Pause {
        /// The schedule.
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Start runs on ticks again, from the next tick on (missed ticks are not run).
    Resume {
        /// The schedule.
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Start one run now (after the running one, if any, ends).
    RunNow {
        /// The schedule.
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Remove a schedule; its jobs and their state stay.
    Remove {
        /// The schedule.
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// Runs one schedule action against the coordinator.
pub async fn run(globals: &Globals, args: ScheduleArgs) -> Result<u8> {
    let (remote, call, request) = match args.action {
        ScheduleAction::Add {
            spec,
            cron,
            tz,
            base_dir,
            remote,
        } => {
            let spec_toml = std::fs::read_to_string(&spec).with_context(|| format!("reading {}", spec.display()))?;
            let base_dir = match base_dir {
                Some(d) => d,
                None => {
                    let dir = spec
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    std::fs::canonicalize(dir)
                        .with_context(|| format!("resolving the directory of {}", spec.display()))?
                }
            };
            let req = pb::AddScheduleRequest {
                spec_toml,
                spec_origin: spec.display().to_string(),
                base_dir: base_dir.display().to_string(),
                cron,
                time_zone: tz,
            };
            let mut client = remote.config()?.connect_schedules_lazy()?;
            let resp = client
                .add_schedule(req)
                .await
                .map_err(|s| remote.rpc_error("schedule add", s))?
                .into_inner();
            print_one(globals, &resp, if resp.created { "added" } else { "unchanged" });
            return Ok(0);
        }
        ScheduleAction::List { remote } => {
            let mut client = remote.config()?.connect_schedules_lazy()?;
            let resp = client
                .list_schedules(pb::ListSchedulesRequest {})
                .await
                .map_err(|s| remote.rpc_error("schedule list", s))?
                .into_inner();
            match globals.output {
                OutputFormat::Json => output::print_json(&json!({
                    "schedules": resp.schedules.iter().map(schedule_json).collect::<Vec<_>>(),
                })),
                OutputFormat::Text if resp.schedules.is_empty() => println!("no schedules"),
                OutputFormat::Text => {
                    for s in &resp.schedules {
                        println!("{}", schedule_line(s));
                    }
                }
            }
            return Ok(0);
        }
        ScheduleAction::Pause { name, remote } => (remote, "paused", (name, pb::ScheduleAction::Pause)),
        ScheduleAction::Resume { name, remote } => (remote, "resumed", (name, pb::ScheduleAction::Resume)),
        ScheduleAction::RunNow { name, remote } => (remote, "run requested", (name, pb::ScheduleAction::RunNow)),
        ScheduleAction::Remove { name, remote } => (remote, "removed", (name, pb::ScheduleAction::Remove)),
    };
    let (name, action) = request;
    let mut client = remote.config()?.connect_schedules_lazy()?;
    let resp = client
        .change_schedule(pb::ChangeScheduleRequest {
            name: name.clone(),
            action: action as i32,
        })
        .await
        .map_err(|s| remote.rpc_error(&format!("schedule {call} {name}"), s))?
        .into_inner();
    if resp.schedule.is_none() {
        match globals.output {
            OutputFormat::Json => output::print_json(&json!({"name": name, "outcome": call})),
            OutputFormat::Text => println!("schedule {name}: {call}"),
        }
        return Ok(0);
    }
    print_one(globals, &resp, call);
    Ok(0)
}

fn print_one(globals: &Globals, resp: &pb::ScheduleResponse, outcome: &str) {
    let Some(s) = &resp.schedule else { return };
    match globals.output {
        OutputFormat::Json => {
            let mut value = schedule_json(s);
            value["outcome"] = json!(outcome);
            output::print_json(&value);
        }
        OutputFormat::Text => println!("{outcome}: {}", schedule_line(s)),
    }
}

/// An RFC 3339 time of microseconds since the epoch, or `None` for 0 (never).
fn time_of(us: i64) -> Option<String> {
    (us != 0)
        .then(|| chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us))
        .flatten()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn schedule_json(s: &pb::Schedule) -> serde_json::Value {
    json!({
        "name": s.name,
        "cron": s.cron,
        "time_zone": s.time_zone,
        "paused": s.paused,
        "next_tick": time_of(s.next_tick_us),
        "last_fired": time_of(s.last_fired_us),
        "last_run_job": (!s.last_run_job.is_empty()).then_some(&s.last_run_job),
        "run_requested": s.run_requested,
        "skipped_ticks": s.skipped_ticks,
    })
}

fn schedule_line(s: &pb::Schedule) -> String {
    let state = if s.paused { "paused" } else { "active" };
    let next = time_of(s.next_tick_us).unwrap_or_else(|| "never".into());
    let last = time_of(s.last_fired_us).unwrap_or_else(|| "never".into());
    let mut line = format!(
        "{}  \"{}\" {}  {state}  next {next}  last run {last}",
        s.name, s.cron, s.time_zone
    );
    if s.run_requested {
        line.push_str("  (run requested)");
    }
    if s.skipped_ticks > 0 {
        line.push_str(&format!("  {} ticks skipped", s.skipped_ticks));
    }
    line
}
