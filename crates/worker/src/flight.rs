//! The worker's data plane: Arrow Flight `DoGet` for previews and samples of a chunk. The
//! coordinator hands callers a ticket carrying the job's spec and the chunk's range; the
//! worker reads the first rows from the source and streams them as Arrow IPC. Callers need
//! neither the source's credentials nor its network path, only this endpoint.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse,
    PollInfo, PutResult, SchemaResult, Ticket,
};
use backhaul_core::cursor::CursorRange;
use backhaul_proto::v1 as pb;
use backhaul_proto::{AuthLayer, Token};
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::error::WorkerError;
use crate::runner::BATCH_ROWS;
use crate::worker::Worker;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Flight service of one worker.
pub struct PreviewService {
    worker: Arc<Worker>,
}

impl PreviewService {
    /// Previews run with `worker`'s connectors and job contexts.
    pub fn new(worker: Arc<Worker>) -> Self {
        PreviewService { worker }
    }
}

fn to_status(e: WorkerError) -> Status {
    match e.class() {
        backhaul_core::ErrorClass::Permanent => Status::failed_precondition(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

/// The first `limit` rows of `batches`, slicing the last batch.
fn first_rows(
    batches: backhaul_core::connector::BatchStream,
    limit: usize,
) -> impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static {
    futures::stream::unfold((batches, limit), |(mut batches, left)| async move {
        if left == 0 {
            return None;
        }
        match batches.next().await? {
            Ok(batch) => {
                let take = batch.num_rows().min(left);
                Some((Ok(batch.slice(0, take)), (batches, left - take)))
            }
            Err(e) => Some((Err(FlightError::ExternalError(Box::new(e))), (batches, 0))),
        }
    })
}

fn unimplemented<T>() -> Result<T, Status> {
    Err(Status::unimplemented("backhaul workers serve DoGet previews only"))
}

#[tonic::async_trait]
impl FlightService for PreviewService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn do_get(&self, req: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = pb::PreviewTicket::decode(req.into_inner().ticket)
            .map_err(|e| Status::invalid_argument(format!("not a backhaul preview ticket: {e}")))?;
        let range = ticket
            .range
            .map(|r| CursorRange { from: r.from, to: r.to })
            .ok_or_else(|| Status::invalid_argument("preview ticket without a range"))?;
        let ctx = self
            .worker
            .job_context(&ticket.job_id, &ticket.job_spec_toml, Path::new(&ticket.spec_base_dir))
            .await
            .map_err(to_status)?;
        let limit = ticket.limit.max(1) as usize;
        let batches = ctx
            .source
            .extract(range, limit.min(BATCH_ROWS))
            .await
            .map_err(|e| to_status(e.into()))?;
        tracing::info!(job = %ticket.job_id, chunk = ticket.chunk_id, limit, "serving a preview");
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(ctx.table.schema.clone())
            .build(first_rows(batches, limit))
            .map(|r| r.map_err(Status::from));
        Ok(Response::new(Box::pin(encoded)))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unimplemented()
    }

    async fn list_flights(&self, _: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        unimplemented()
    }

    async fn get_flight_info(&self, _: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        unimplemented()
    }

    async fn poll_flight_info(&self, _: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        unimplemented()
    }

    async fn get_schema(&self, _: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        unimplemented()
    }

    async fn do_put(&self, _: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        unimplemented()
    }

    async fn do_exchange(&self, _: Request<Streaming<FlightData>>) -> Result<Response<Self::DoExchangeStream>, Status> {
        unimplemented()
    }

    async fn do_action(&self, _: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        unimplemented()
    }

    async fn list_actions(&self, _: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        unimplemented()
    }
}

/// Serves Flight on `listener` until `cancel` fires, refusing calls without `token`.
pub async fn serve(
    worker: Arc<Worker>,
    listener: TcpListener,
    token: Option<Token>,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .layer(AuthLayer::new(token))
        .add_service(FlightServiceServer::new(PreviewService::new(worker)))
        .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
        .await
}

/// The URL other machines use for a listener bound to `addr`: `advertise` when given,
/// otherwise `http://addr` (which only works when `addr` is not a wildcard address).
pub fn advertised_url(addr: SocketAddr, advertise: Option<&str>) -> String {
    advertise
        .map(str::to_string)
        .unwrap_or_else(|| format!("http://{addr}"))
}
