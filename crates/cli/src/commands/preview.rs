//! `backhaul preview`: the first rows of a chunk, fetched over Arrow Flight from a worker.

use anyhow::{Context, Result};
use backhaul_proto::v1 as pb;
use backhaul_worker::flight::DataPlaneClient;
use clap::Args;
use futures::TryStreamExt;
use serde_json::json;

use super::remote::RemoteArgs;
use crate::{Globals, OutputFormat, output};

/// Arguments of `preview`.
#[derive(Args, Debug)]
pub struct PreviewArgs {
    /// The job.
    job: String,
    /// The chunk (its index in `status JOB --chunks`).
    #[arg(long)]
    chunk: u64,
    /// Most rows to show.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    limit: u32,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// Asks the coordinator for a worker and a ticket, then reads the rows from the worker.
pub async fn run(globals: &Globals, args: PreviewArgs) -> Result<u8> {
    let config = args.remote.config()?;
    let mut client = config.connect_lazy()?;
    let offer = client
        .preview_chunk(pb::PreviewChunkRequest {
            job_id: args.job.clone(),
            chunk_id: args.chunk,
            limit: args.limit,
        })
        .await
        .map_err(|s| args.remote.rpc_error("preview", s))?
        .into_inner();
    let worker = DataPlaneClient::connect(&config.data_plane(&offer.flight_url))?;
    let context = || format!("preview of chunk {} of {}", args.chunk, args.job);
    let batches: Vec<_> = worker
        .do_get(offer.ticket)
        .await
        .with_context(context)?
        .try_collect()
        .await
        .with_context(context)?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    match globals.output {
        OutputFormat::Json => {
            let mut writer = arrow::json::ArrayWriter::new(Vec::new());
            for b in &batches {
                writer.write(b)?;
            }
            writer.finish()?;
            let bytes = writer.into_inner();
            let rows_json: serde_json::Value = if bytes.is_empty() {
                json!([])
            } else {
                serde_json::from_slice(&bytes)?
            };
            output::print_json(&json!({
                "job": args.job, "chunk": args.chunk, "worker": offer.flight_url, "rows": rows_json,
            }));
        }
        OutputFormat::Text => {
            println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
            eprintln!(
                "{rows} rows of chunk {} of {}, read by the worker at {}",
                args.chunk, args.job, offer.flight_url
            );
        }
    }
    Ok(0)
}
