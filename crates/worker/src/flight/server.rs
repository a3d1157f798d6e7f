//! The Flight server of one worker: `DoGet` for previews of a stored job's chunk and for
//! extracts of a source range, `DoAction` for a source's description, preparation, density
//! and activity. Every source is built with this worker's connectors, credentials and network.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse,
    PollInfo, PutResult, SchemaResult, Ticket,
};
use backhaul_core::ErrorClass;
use backhaul_core::connector::{BatchStream, Source};
use backhaul_proto::v1 as pb;
use backhaul_proto::{AuthLayer, Token};
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info};

use super::wire;
use crate::runner::BATCH_ROWS;
use crate::worker::Worker;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Largest batch an extract ticket may ask for; bigger asks are capped (memory stays bounded).
const MAX_BATCH_ROWS: usize = 65_536;

/// Source reads (streams and actions) one worker serves at once; each holds a source
/// connection, so more callers are refused as throttled rather than queued without bound.
pub const MAX_CONCURRENT_READS: usize = 8;

/// The Flight service of one worker.
pub struct DataPlaneService {
    worker: Arc<Worker>,
    reads: Arc<Semaphore>,
}

impl DataPlaneService {
    /// Data-plane calls run with `worker`'s connectors and job contexts.
    pub fn new(worker: Arc<Worker>) -> Self {
        DataPlaneService {
            worker,
            reads: Arc::new(Semaphore::new(MAX_CONCURRENT_READS)),
        }
    }

    /// A slot for one source read, held until its response (or stream) ends.
    fn read_slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.reads.clone().try_acquire_owned().map_err(|_| {
            wire::error_status(
                ErrorClass::Throttled,
                "busy",
                format!("the worker serves {MAX_CONCURRENT_READS} source reads at once; try again shortly"),
            )
        })
    }

    fn open_source(&self, source: Option<pb::SourceRef>) -> Result<(Arc<dyn Source>, String), Status> {
        let r = source.ok_or_else(|| Status::invalid_argument("data-plane request without a source"))?;
        let source = self
            .worker
            .open_source(&r.spec_toml, &r.spec_origin, Path::new(&r.base_dir))
            .map_err(|e| wire::core_status(&e))?;
        Ok((source, r.spec_origin))
    }

    async fn preview(&self, ticket: pb::PreviewTicket) -> Result<Response<BoxStream<FlightData>>, Status> {
        let slot = self.read_slot()?;
        let range = ticket
            .range
            .map(wire::range_from_pb)
            .ok_or_else(|| Status::invalid_argument("preview ticket without a range"))?;
        let ctx = self
            .worker
            .job_context(&ticket.job_id, &ticket.job_spec_toml, Path::new(&ticket.spec_base_dir))
            .await
            .map_err(|e| wire::error_status(e.class(), e.kind(), e.to_string()))?;
        let limit = ticket.limit.max(1) as usize;
        let batches = ctx
            .source
            .extract(range, limit.min(BATCH_ROWS))
            .await
            .map_err(|e| wire::core_status(&e))?;
        info!(job = %ticket.job_id, chunk = ticket.chunk_id, limit, "serving a preview");
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(ctx.table.schema.clone())
            .build(first_rows(batches, limit));
        Ok(Response::new(holding(slot, encoded)))
    }

    async fn extract(&self, ticket: pb::ExtractTicket) -> Result<Response<BoxStream<FlightData>>, Status> {
        let slot = self.read_slot()?;
        let range = ticket
            .range
            .map(wire::range_from_pb)
            .ok_or_else(|| Status::invalid_argument("extract ticket without a range"))?;
        let (source, origin) = self.open_source(ticket.source)?;
        let batch_rows = match ticket.batch_rows as usize {
            0 => BATCH_ROWS,
            n => n.min(MAX_BATCH_ROWS),
        };
        let batches = source
            .extract(range, batch_rows)
            .await
            .map_err(|e| wire::core_status(&e))?;
        info!(spec = %origin, from = range.from, to = range.to, "serving an extract");
        // No schema up front: describing would cost the source another round trip, and the
        // caller knows the schema already. An empty range is an empty stream.
        let encoded = FlightDataEncoderBuilder::new().build(typed_errors(batches));
        Ok(Response::new(holding(slot, encoded)))
    }

    /// Runs one action; returns the response message's bytes.
    async fn action(&self, action: Action) -> Result<Vec<u8>, Status> {
        let _slot = self.read_slot()?;
        let decode_error = |e: prost::DecodeError| Status::invalid_argument(format!("`{}` body: {e}", action.r#type));
        let core = |e: backhaul_core::Error| wire::core_status(&e);
        match action.r#type.as_str() {
            wire::DESCRIBE => {
                let r = pb::SourceRequest::decode(action.body.clone()).map_err(decode_error)?;
                let (source, origin) = self.open_source(r.source)?;
                debug!(spec = %origin, "describe");
                let table = source.describe().await.map_err(core)?;
                Ok(wire::describe_to_pb(&table).map_err(core)?.encode_to_vec())
            }
            wire::PREPARE | wire::DENSITY => {
                let r = pb::RangeRequest::decode(action.body.clone()).map_err(decode_error)?;
                let range = r
                    .range
                    .map(wire::range_from_pb)
                    .ok_or_else(|| Status::invalid_argument("range request without a range"))?;
                let (source, origin) = self.open_source(r.source)?;
                debug!(spec = %origin, action = %action.r#type, from = range.from, to = range.to, "source call");
                if action.r#type == wire::PREPARE {
                    source.prepare(range).await.map_err(core)?;
                    Ok(pb::PrepareResponse {}.encode_to_vec())
                } else {
                    let buckets = source.density(range).await.map_err(core)?;
                    Ok(wire::density_to_pb(&buckets).encode_to_vec())
                }
            }
            wire::ACTIVITY => {
                let r = pb::ActivityRequest::decode(action.body.clone()).map_err(decode_error)?;
                let query = wire::activity_query_from_pb(&r)
                    .ok_or_else(|| Status::invalid_argument("activity request without a range or window"))?;
                let (source, origin) = self.open_source(r.source)?;
                debug!(spec = %origin, "activity");
                let activity = source.activity(query).await.map_err(core)?;
                Ok(wire::activity_to_pb(activity).encode_to_vec())
            }
            other => Err(Status::unimplemented(format!(
                "unknown action `{other}`; this worker serves {}",
                ACTIONS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

/// The actions served, with what they do (ListActions).
const ACTIONS: &[(&str, &str)] = &[
    (
        wire::DESCRIBE,
        "SourceRequest -> DescribeResponse: the source table's schema and cursor",
    ),
    (
        wire::PREPARE,
        "RangeRequest -> PrepareResponse: make the source ready for the range",
    ),
    (
        wire::DENSITY,
        "RangeRequest -> DensityResponse: estimated rows and bytes, from statistics",
    ),
    (
        wire::ACTIVITY,
        "ActivityRequest -> ActivityResponse: change activity in a window",
    ),
];

/// The encoded stream as a response that keeps `slot` until the stream ends or is dropped.
fn holding(
    slot: OwnedSemaphorePermit,
    encoded: impl Stream<Item = Result<FlightData, FlightError>> + Send + 'static,
) -> BoxStream<FlightData> {
    Box::pin(encoded.map(move |r| {
        let _held = &slot;
        r.map_err(Status::from)
    }))
}

/// Batches with source errors sent as typed statuses (class and kind survive the trip).
fn typed_errors(batches: BatchStream) -> impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static {
    batches.map(|r| r.map_err(|e| FlightError::Tonic(Box::new(wire::core_status(&e)))))
}

/// The first `limit` rows of `batches`, slicing the last batch.
fn first_rows(
    batches: BatchStream,
    limit: usize,
) -> impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static {
    futures::stream::unfold((typed_errors(batches), limit), |(mut batches, left)| async move {
        if left == 0 {
            return None;
        }
        match batches.next().await? {
            Ok(batch) => {
                let take = batch.num_rows().min(left);
                Some((Ok(batch.slice(0, take)), (batches, left - take)))
            }
            Err(e) => Some((Err(e), (batches, 0))),
        }
    })
}

fn unimplemented<T>() -> Result<T, Status> {
    Err(Status::unimplemented(
        "backhaul workers serve DoGet, DoAction and ListActions only",
    ))
}

#[tonic::async_trait]
impl FlightService for DataPlaneService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn do_get(&self, req: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = pb::FlightTicket::decode(req.into_inner().ticket)
            .map_err(|e| Status::invalid_argument(format!("not a backhaul Flight ticket: {e}")))?;
        match ticket.kind {
            Some(pb::flight_ticket::Kind::Preview(t)) => self.preview(t).await,
            Some(pb::flight_ticket::Kind::Extract(t)) => self.extract(t).await,
            None => Err(Status::invalid_argument("Flight ticket without a kind")),
        }
    }

    async fn do_action(&self, req: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        let body = self.action(req.into_inner()).await?;
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::once(async { Ok(result) }))))
    }

    async fn list_actions(&self, _: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = ACTIONS.iter().map(|(name, description)| {
            Ok(ActionType {
                r#type: (*name).into(),
                description: (*description).into(),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(actions))))
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
}

/// Prepares the Flight server on `listener`: refuses calls without `token`, serves TLS (with
/// a client CA, mutual TLS) when `tls` is given. Fails now on unusable TLS settings; the
/// returned future serves until `cancel` fires.
pub fn serve(
    worker: Arc<Worker>,
    listener: TcpListener,
    token: Option<Token>,
    tls: Option<ServerTlsConfig>,
    cancel: CancellationToken,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + Send + 'static, tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // Keep-alive pings drop clients that vanished mid-stream instead of keeping their calls.
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let router = builder
        .layer(AuthLayer::new(token))
        .add_service(FlightServiceServer::new(DataPlaneService::new(worker)));
    Ok(async move {
        router
            .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
            .await
    })
}

/// The URL other machines use for a listener bound to `addr`: `advertise` when given,
/// otherwise `http://addr` (`https://addr` with TLS), which only works when `addr` is not a
/// wildcard address.
pub fn advertised_url(addr: SocketAddr, advertise: Option<&str>, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    advertise
        .map(str::to_string)
        .unwrap_or_else(|| format!("{scheme}://{addr}"))
}

#[cfg(test)]
mod tests {
    use backhaul_core::registry::Registry;

    use super::*;
    use crate::worker::WorkerConfig;

    #[tokio::test]
    async fn reads_beyond_the_limit_are_refused_as_throttled() {
        let client = backhaul_proto::ClientConfig::plain("http://127.0.0.1:9")
            .connect_lazy()
            .unwrap();
        let worker = Arc::new(Worker::new(client, Arc::new(Registry::new()), WorkerConfig::new("w")));
        let service = DataPlaneService::new(worker);
        let held: Vec<_> = (0..MAX_CONCURRENT_READS)
            .map(|_| service.read_slot().unwrap())
            .collect();
        let refused = service.read_slot().expect_err("one read too many");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(wire::status_error(&refused, "w").class(), ErrorClass::Throttled);
        drop(held);
        assert!(service.read_slot().is_ok(), "slots come back when reads end");
    }
}
