//! The caller's side of the data plane: a client for a worker's Flight port, and
//! [`RemoteSource`], a [`Source`] whose every read happens on that worker.

use std::path::Path;

use arrow_flight::Action;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use backhaul_core::chunking::DensityBucket;
use backhaul_core::connector::{BatchStream, Source, TableDescription};
use backhaul_core::cursor::CursorRange;
use backhaul_core::profile::{Activity, ActivityQuery};
use backhaul_core::{ErrorClass, Result};
use backhaul_proto::v1 as pb;
use backhaul_proto::{ClientAuth, ClientConfig, WireError};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::wire;

/// A worker's Flight endpoint: authenticated with the shared token, over TLS for `https://`.
/// Cheap to clone; connects on first use.
#[derive(Clone)]
pub struct DataPlaneClient {
    system: String,
    client: FlightServiceClient<InterceptedService<Channel, ClientAuth>>,
}

impl std::fmt::Debug for DataPlaneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.system)
    }
}

impl DataPlaneClient {
    /// A client for the endpoint `config` names (see [`ClientConfig::data_plane`]).
    pub fn connect(config: &ClientConfig) -> Result<Self, WireError> {
        let channel = config.channel("worker Flight")?;
        Ok(DataPlaneClient {
            system: format!("worker at {}", config.url),
            client: FlightServiceClient::with_interceptor(channel, ClientAuth::new(config.token.as_ref()))
                .max_decoding_message_size(64 * 1024 * 1024),
        })
    }

    /// `worker at URL`, as errors name the endpoint.
    pub fn system(&self) -> &str {
        &self.system
    }

    /// Streams the record batches `DoGet` returns for `ticket`, an encoded `FlightTicket`
    /// (as the coordinator hands them out). Starting the stream is retried like every call
    /// (see [`with_retries`]); a stream that breaks later fails with its class.
    pub async fn do_get(&self, ticket: impl Into<bytes::Bytes>) -> Result<BatchStream> {
        let ticket: bytes::Bytes = ticket.into();
        let data = with_retries("DoGet", RETRY_ATTEMPTS, || async {
            self.client
                .clone()
                .do_get(arrow_flight::Ticket { ticket: ticket.clone() })
                .await
                .map_err(|s| wire::status_error(&s, &self.system))
        })
        .await?
        .into_inner();
        let system = self.system.clone();
        let batches = FlightRecordBatchStream::new_from_flight_data(data.map_err(FlightError::from))
            .map(move |r| r.map_err(|e| wire::flight_error(e, &system)));
        Ok(batches.boxed())
    }

    /// Runs action `kind` with `request`; decodes the one result. Retried like every call.
    async fn action<Resp: Message + Default>(&self, kind: &str, request: &impl Message) -> Result<Resp> {
        with_retries(kind, RETRY_ATTEMPTS, || self.action_once(kind, request)).await
    }

    async fn action_once<Resp: Message + Default>(&self, kind: &str, request: &impl Message) -> Result<Resp> {
        let status = |s: tonic::Status| wire::status_error(&s, &self.system);
        let mut results = self
            .client
            .clone()
            .do_action(Action::new(kind, request.encode_to_vec()))
            .await
            .map_err(status)?
            .into_inner();
        let result = results
            .message()
            .await
            .map_err(status)?
            .ok_or_else(|| wire::protocol_error(&self.system, format!("`{kind}` returned no result")))?;
        Resp::decode(result.body).map_err(|e| wire::protocol_error(&self.system, format!("`{kind}` result: {e}")))
    }
}

/// Tries of a data-plane call that fails as transient or throttled (a worker restarting, busy
/// with its limit of reads, a dropped connection), before its error is the caller's.
const RETRY_ATTEMPTS: u32 = 4;

/// Runs `call` until it succeeds, fails permanently, or has been tried `attempts` times,
/// waiting with capped exponential backoff and jitter between tries. The retry class comes
/// from the error's type (for remote errors, the class the worker sent), never its text.
async fn with_retries<T, F, Fut>(what: &str, attempts: u32, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut failures = 0;
    loop {
        match call().await {
            Err(e) if e.class() != ErrorClass::Permanent && failures + 1 < attempts => {
                failures += 1;
                let wait = crate::worker::backoff(failures);
                tracing::debug!(call = what, class = e.class().as_str(), error = %e, ?wait, "data-plane call failed; retrying");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// A source read on a worker: every call is a Flight call carrying the job spec, and the
/// worker builds the source with its own credentials. The caller never opens the source.
#[derive(Debug, Clone)]
pub struct RemoteSource {
    client: DataPlaneClient,
    source: pb::SourceRef,
}

impl RemoteSource {
    /// The source of `spec_toml` (named `spec_origin` in errors), read by the worker behind
    /// `client`; relative paths in the spec resolve against `base_dir` on the worker.
    pub fn new(client: DataPlaneClient, spec_toml: String, spec_origin: &str, base_dir: &Path) -> Self {
        RemoteSource {
            client,
            source: pb::SourceRef {
                spec_toml,
                spec_origin: spec_origin.to_string(),
                base_dir: base_dir.display().to_string(),
            },
        }
    }

    fn range_request(&self, range: CursorRange) -> pb::RangeRequest {
        pb::RangeRequest {
            source: Some(self.source.clone()),
            range: Some(wire::range_to_pb(range)),
        }
    }
}

impl Source for RemoteSource {
    fn describe(&self) -> BoxFuture<'_, Result<TableDescription>> {
        Box::pin(async move {
            let request = pb::SourceRequest {
                source: Some(self.source.clone()),
            };
            let response: pb::DescribeResponse = self.client.action(wire::DESCRIBE, &request).await?;
            wire::describe_from_pb(response, self.client.system())
        })
    }

    fn prepare(&self, range: CursorRange) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let _: pb::PrepareResponse = self.client.action(wire::PREPARE, &self.range_request(range)).await?;
            Ok(())
        })
    }

    fn density(&self, range: CursorRange) -> BoxFuture<'_, Result<Vec<DensityBucket>>> {
        Box::pin(async move {
            let response: pb::DensityResponse = self.client.action(wire::DENSITY, &self.range_request(range)).await?;
            wire::density_from_pb(response, self.client.system())
        })
    }

    fn extract(&self, range: CursorRange, batch_rows: usize) -> BoxFuture<'_, Result<BatchStream>> {
        let ticket = pb::FlightTicket {
            kind: Some(pb::flight_ticket::Kind::Extract(pb::ExtractTicket {
                source: Some(self.source.clone()),
                range: Some(wire::range_to_pb(range)),
                batch_rows: u32::try_from(batch_rows).unwrap_or(u32::MAX),
            })),
        };
        Box::pin(self.client.do_get(ticket.encode_to_vec()))
    }

    fn activity(&self, query: ActivityQuery) -> BoxFuture<'_, Result<Option<Activity>>> {
        Box::pin(async move {
            let request = wire::activity_query_to_pb(self.source.clone(), &query);
            let response: pb::ActivityResponse = self.client.action(wire::ACTIVITY, &request).await?;
            Ok(wire::activity_from_pb(response))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use backhaul_core::Error;

    use super::*;

    fn unreachable() -> Error {
        Error::Unreachable {
            system: "worker at http://w".into(),
            message: "connection refused".into(),
        }
    }

    #[tokio::test]
    async fn transient_and_throttled_failures_are_retried_then_reported() {
        let calls = AtomicU32::new(0);
        let out = with_retries("describe", 4, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(unreachable()),
                1 => Err(Error::Throttled {
                    system: "worker".into(),
                    message: "busy".into(),
                }),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let out: Result<()> = with_retries("describe", 3, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(unreachable())
        })
        .await;
        assert_eq!(out.unwrap_err().class(), ErrorClass::Transient);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "tried `attempts` times in all");
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = with_retries("describe", 4, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::Remote {
                system: "worker at http://w".into(),
                class: ErrorClass::Permanent,
                kind: "config".into(),
                message: "no such table".into(),
            })
        })
        .await;
        assert_eq!(out.unwrap_err().class(), ErrorClass::Permanent);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
