//! `backhaul cancel`: stop a job on a coordinator.

use anyhow::{Result, anyhow};
use backhaul_proto::v1 as pb;
use clap::Args;
use serde_json::json;

use super::remote::{self, RemoteArgs};
use crate::{Globals, OutputFormat, output};

/// Arguments of `cancel`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The job.
    job: String,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// Cancels the job: no more leases; running chunks are refused at their next heartbeat.
pub async fn run(globals: &Globals, args: CancelArgs) -> Result<u8> {
    let mut client = args.remote.client()?;
    let resp = client
        .cancel_job(pb::CancelJobRequest {
            job_id: args.job.clone(),
        })
        .await
        .map_err(|s| args.remote.rpc_error("cancel", s))?
        .into_inner();
    let status = resp.status.ok_or_else(|| anyhow!("cancel answered without a status"))?;
    match globals.output {
        OutputFormat::Json => output::print_json(&json!({
            "chunks_cancelled": resp.chunks_cancelled,
            "status": remote::status_json(&status),
        })),
        OutputFormat::Text => println!(
            "cancelled job {}: {} chunks will not run; {}/{} were committed",
            args.job, resp.chunks_cancelled, status.committed, status.chunks
        ),
    }
    Ok(0)
}
