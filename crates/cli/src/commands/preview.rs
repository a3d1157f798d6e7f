//! `backhaul preview`: the first rows of a chunk, fetched over Arrow Flight from a worker.

use anyhow::{Context, Result, anyhow};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use backhaul_proto::ClientAuth;
use backhaul_proto::v1 as pb;
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
    let channel = tonic::transport::Endpoint::from_shared(offer.flight_url.clone())
        .with_context(|| format!("worker Flight URL `{}`", offer.flight_url))?
        .connect()
        .await
        .with_context(|| format!("connecting to the worker at {}", offer.flight_url))?;
    let mut flight = FlightServiceClient::with_interceptor(channel, ClientAuth::new(config.token.as_ref()));
    let data = flight
        .do_get(arrow_flight::Ticket {
            ticket: offer.ticket.into(),
        })
        .await
        .map_err(|s| {
            anyhow!(
                "preview from the worker at {}: {:?}: {}",
                offer.flight_url,
                s.code(),
                s.message()
            )
        })?
        .into_inner();
    let batches: Vec<_> = FlightRecordBatchStream::new_from_flight_data(data.map_err(|e| e.into()))
        .try_collect()
        .await
        .with_context(|| format!("reading the preview from {}", offer.flight_url))?;
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
