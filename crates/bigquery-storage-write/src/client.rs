//! The client: connection, PENDING streams, appends at explicit offsets, finalize and
//! batch commit, each retried by class.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use backhaul_core::ErrorClass;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::auth::{TokenError, TokenProvider};
use crate::encode::{self, EncodedPiece, REQUEST_OVERHEAD_BYTES};
use crate::error::Result;
use crate::error::{Error, RowError, StreamError};
use crate::proto::google::cloud::bigquery::storage::v1 as pb;
use pb::big_query_write_client::BigQueryWriteClient;

/// Google's endpoint (TLS).
pub const DEFAULT_ENDPOINT: &str = "https://bigquerystorage.googleapis.com";

/// The AppendRows request size limit (10 MB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 10_000_000;

/// Sent as `trace_id` so server-side logs can tell our appends apart.
const TRACE_ID: &str = "backhaul";

/// The resource name of a table, `projects/{p}/datasets/{d}/tables/{t}`.
pub fn table_path(project: &str, dataset: &str, table: &str) -> String {
    format!("projects/{project}/datasets/{dataset}/tables/{table}")
}

/// Retries of one call (or one append request) that failed transiently or was throttled.
#[derive(Debug, Clone)]
pub struct RetrySettings {
    /// Attempts in all, including the first.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time, with jitter.
    pub base_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
    /// A throttled failure waits this many times longer than a transient one.
    pub throttle_factor: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            throttle_factor: 4,
        }
    }
}

impl RetrySettings {
    /// The wait before attempt `attempt + 1`, between half and all of the exponential delay.
    fn delay(&self, attempt: u32, class: ErrorClass) -> Duration {
        let factor = if class == ErrorClass::Throttled {
            self.throttle_factor.max(1)
        } else {
            1
        };
        let exponential = self
            .base_delay
            .saturating_mul(factor)
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        // Jitter from the std hasher's random keys: no extra dependency for a coin flip.
        let random = std::collections::hash_map::RandomState::new().hash_one(attempt);
        let fraction = 0.5 + (random % 1000) as f64 / 2000.0;
        exponential.mul_f64(fraction)
    }
}

/// Everything needed to talk to the Storage Write API.
#[derive(Clone)]
pub struct ClientConfig {
    /// `https://bigquerystorage.googleapis.com` unless overridden; `http://host:port` for an
    /// emulator (no TLS).
    pub endpoint: String,
    /// Bearer tokens for every call; `None` sends no `authorization` header (emulators).
    pub auth: Option<Arc<dyn TokenProvider>>,
    /// Retries of transient and throttled failures.
    pub retry: RetrySettings,
    /// How long one call, or one append request, may wait for its answer.
    pub request_timeout: Duration,
    /// How long establishing the connection may take.
    pub connect_timeout: Duration,
    /// The AppendRows request size limit; batches are split to stay under it.
    pub max_request_bytes: usize,
    /// Append requests sent on a stream before waiting for the oldest answer. Each is kept
    /// until answered (for a re-send), so a stream holds at most this many requests of up to
    /// `max_request_bytes`.
    pub max_in_flight: usize,
}

impl ClientConfig {
    /// The defaults for `endpoint` and `auth`.
    pub fn new(endpoint: impl Into<String>, auth: Option<Arc<dyn TokenProvider>>) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            auth,
            retry: RetrySettings::default(),
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(20),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_in_flight: 4,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth.as_ref().map(|_| "***"))
            .field("retry", &self.retry)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// What a batch commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The streams' rows became visible at this time, atomically.
    Committed {
        /// The server's commit time.
        commit_time: SystemTime,
    },
    /// Every stream was committed before (a retried commit whose first answer was lost).
    AlreadyCommitted,
}

/// A PENDING write stream: rows appended to it stay invisible until it is finalized and
/// batch-committed. One writer at a time (appends take `&mut`), offsets in order.
pub struct WriteStream {
    name: String,
    table_path: String,
    /// The encoded schema of the last batch, reused while batches keep that schema.
    schema: Option<(SchemaRef, Bytes)>,
    connection: Option<AppendConnection>,
    /// Requests not yet acknowledged, oldest first; the first `sent` of them went out on the
    /// current connection. Kept until acknowledged so a new connection can re-send them.
    unacknowledged: VecDeque<Unacknowledged>,
    sent: usize,
    acknowledged_rows: u64,
}

/// One AppendRows request awaiting its answer.
struct Unacknowledged {
    offset: u64,
    rows: usize,
    request: pb::AppendRowsRequest,
}

impl WriteStream {
    /// The stream's resource name, `projects/…/tables/…/streams/…`: what `batch_commit` takes.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The table the stream writes to.
    pub fn table_path(&self) -> &str {
        &self.table_path
    }
    /// The end of the rows the server has acknowledged: the offset after the last one.
    pub fn acknowledged_rows(&self) -> u64 {
        self.acknowledged_rows
    }
}

impl fmt::Debug for WriteStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteStream")
            .field("name", &self.name)
            .field("acknowledged_rows", &self.acknowledged_rows)
            .field("unacknowledged_requests", &self.unacknowledged.len())
            .field("connected", &self.connection.is_some())
            .finish()
    }
}

/// One open AppendRows call: requests go in through the channel, answers come back in order.
struct AppendConnection {
    requests: mpsc::Sender<pb::AppendRowsRequest>,
    responses: tonic::Streaming<pb::AppendRowsResponse>,
}

/// A Storage Write API client. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct WriteClient {
    grpc: BigQueryWriteClient<Channel>,
    config: Arc<ClientConfig>,
}

impl fmt::Debug for WriteClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteClient").field("config", &self.config).finish()
    }
}

impl WriteClient {
    /// Connects to `endpoint` ([`DEFAULT_ENDPOINT`] for Google) with default settings.
    pub async fn connect(endpoint: impl Into<String>, auth: Option<Arc<dyn TokenProvider>>) -> Result<Self> {
        Self::connect_with(ClientConfig::new(endpoint, auth)).await
    }

    /// Connects with explicit settings. `https://` endpoints use TLS (rustls on ring,
    /// Mozilla roots); `http://` ones do not.
    pub async fn connect_with(config: ClientConfig) -> Result<Self> {
        let invalid = |message: String| Error::InvalidEndpoint {
            endpoint: config.endpoint.clone(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            // Appends are up to 10 MB: let HTTP/2 grow its windows instead of 64 KiB steps.
            .http2_adaptive_window(true);
        if config.endpoint.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_webpki_roots())
                .map_err(|e| invalid(e.to_string()))?;
        } else if !config.endpoint.starts_with("http://") {
            return Err(invalid("expected an https:// or http:// URL".into()));
        }
        let channel = endpoint.connect().await.map_err(|e| Error::Connect {
            endpoint: config.endpoint.clone(),
            message: error_chain(&e),
        })?;
        let grpc = BigQueryWriteClient::new(channel).max_decoding_message_size(64 << 20);
        Ok(WriteClient {
            grpc,
            config: Arc::new(config),
        })
    }

    /// Creates a PENDING stream on `table_path` (`projects/{p}/datasets/{d}/tables/{t}`).
    pub async fn create_pending_stream(&self, table_path: &str) -> Result<WriteStream> {
        let request = pb::CreateWriteStreamRequest {
            parent: table_path.to_string(),
            write_stream: Some(pb::WriteStream {
                r#type: pb::write_stream::Type::Pending as i32,
                ..Default::default()
            }),
        };
        let created = self
            .unary(
                "CreateWriteStream",
                routing("parent", table_path),
                request,
                |mut grpc, request| async move { grpc.create_write_stream(request).await },
            )
            .await?;
        if created.name.is_empty() {
            return Err(Error::Protocol(
                "CreateWriteStream answered a stream without a name".into(),
            ));
        }
        Ok(WriteStream {
            name: created.name,
            table_path: table_path.to_string(),
            schema: None,
            connection: None,
            unacknowledged: VecDeque::new(),
            sent: 0,
            acknowledged_rows: 0,
        })
    }

    /// Appends `batch` at row `offset` of the stream and returns the offset after it.
    ///
    /// The batch is split into requests under the size limit, each at its own offset, and
    /// sent on the stream's connection without waiting for earlier answers, up to
    /// [`ClientConfig::max_in_flight`] unanswered requests. So this returns once the batch is
    /// *sent*; an earlier request's failure can surface here, in [`flush`](Self::flush) or in
    /// [`finalize`](Self::finalize), which wait for every answer.
    ///
    /// A request that fails transiently (or is throttled) is re-sent after a backoff, on a
    /// fresh connection, together with every request after it: from the first offset not
    /// acknowledged. An answer `ALREADY_EXISTS` means an earlier attempt wrote those rows and
    /// counts as success, so a retried request is never applied twice, as long as the caller
    /// appends the same batches at the same offsets. `OUT_OF_RANGE` (a gap) is permanent.
    pub async fn append(&self, stream: &mut WriteStream, offset: u64, batch: &RecordBatch) -> Result<u64> {
        let schema = self.encoded_schema(stream, batch.schema()).await?;
        let max_piece_bytes = self
            .config
            .max_request_bytes
            .saturating_sub(schema.len() + stream.name.len() + REQUEST_OVERHEAD_BYTES)
            .max(1);
        let owned = batch.clone();
        let pieces = tokio::task::spawn_blocking(move || encode::encode_pieces(&owned, max_piece_bytes))
            .await
            .map_err(|e| Error::Encode(format!("encoding task failed: {e}")))??;
        let mut piece_offset = offset;
        for piece in pieces {
            while stream.unacknowledged.len() >= self.config.max_in_flight.max(1) {
                self.receive_one(stream).await?;
            }
            let request = append_request(&stream.name, piece_offset, &schema, &piece);
            stream.unacknowledged.push_back(Unacknowledged {
                offset: piece_offset,
                rows: piece.rows,
                request,
            });
            if self.send_unsent(stream).await.is_err() {
                // Retried with backoff when its answer is awaited, where the error is classified.
                stream.connection = None;
                stream.sent = 0;
            }
            piece_offset += piece.rows as u64;
        }
        Ok(piece_offset)
    }

    /// Waits until every appended row is acknowledged (retrying as [`append`](Self::append)
    /// says).
    pub async fn flush(&self, stream: &mut WriteStream) -> Result<()> {
        while !stream.unacknowledged.is_empty() {
            self.receive_one(stream).await?;
        }
        Ok(())
    }

    /// Finalizes the stream (no more appends) and returns its row count, which the caller
    /// compares with the rows it appended before committing.
    pub async fn finalize(&self, stream: &mut WriteStream) -> Result<u64> {
        self.flush(stream).await?;
        self.close_connection(stream).await;
        let request = pb::FinalizeWriteStreamRequest {
            name: stream.name.clone(),
        };
        let finalized = self
            .unary(
                "FinalizeWriteStream",
                routing("name", &stream.name),
                request,
                |mut grpc, request| async move { grpc.finalize_write_stream(request).await },
            )
            .await?;
        u64::try_from(finalized.row_count).map_err(|_| {
            Error::Protocol(format!(
                "FinalizeWriteStream answered row_count {}",
                finalized.row_count
            ))
        })
    }

    /// Commits finalized PENDING streams of `table_path` atomically: all their rows become
    /// visible at once, or none.
    pub async fn batch_commit(&self, table_path: &str, stream_names: &[impl AsRef<str>]) -> Result<CommitOutcome> {
        let request = pb::BatchCommitWriteStreamsRequest {
            parent: table_path.to_string(),
            write_streams: stream_names.iter().map(|s| s.as_ref().to_string()).collect(),
        };
        let answer = self
            .unary(
                "BatchCommitWriteStreams",
                routing("parent", table_path),
                request,
                |mut grpc, request| async move { grpc.batch_commit_write_streams(request).await },
            )
            .await?;
        commit_outcome(table_path, answer)
    }

    async fn encoded_schema(&self, stream: &mut WriteStream, schema: SchemaRef) -> Result<Bytes> {
        if let Some((cached, bytes)) = &stream.schema
            && (Arc::ptr_eq(cached, &schema) || **cached == *schema)
        {
            return Ok(bytes.clone());
        }
        let bytes = encode::encode_schema(&schema)?;
        stream.schema = Some((schema, bytes.clone()));
        Ok(bytes)
    }

    /// Waits for the answer to the oldest unacknowledged request. On a failure the connection
    /// is dropped and, after a backoff, every unacknowledged request is re-sent on a new one.
    async fn receive_one(&self, stream: &mut WriteStream) -> Result<()> {
        let timeout = self.config.request_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let answer = async {
                self.send_unsent(stream).await?;
                let Some(connection) = stream.connection.as_mut() else {
                    unreachable!("send_unsent leaves a connection");
                };
                match tokio::time::timeout(timeout, connection.responses.message()).await {
                    Err(_) => Err(Error::Timeout {
                        operation: "AppendRows",
                        seconds: timeout.as_secs(),
                    }),
                    Ok(Ok(Some(answer))) => Ok(answer),
                    Ok(Ok(None)) => Err(Error::StreamClosed {
                        stream: stream.name.clone(),
                    }),
                    Ok(Err(status)) => Err(Error::from_status("AppendRows", &status)),
                }
            }
            .await;
            let oldest = stream.unacknowledged.front().expect("awaiting an answer to a request");
            let outcome = answer.and_then(|answer| interpret_append(&stream.name, oldest.offset, oldest.rows, answer));
            match outcome {
                Err(error) if !already_written(&error) => {
                    // The connection's later answers belong to requests that will be re-sent.
                    stream.connection = None;
                    stream.sent = 0;
                    self.backoff_or_fail(attempt, error).await?;
                }
                written => {
                    if written.is_err() {
                        tracing::debug!(stream = %stream.name, offset = oldest.offset, "rows already written by an earlier attempt");
                    }
                    // ALREADY_EXISTS as the call's status ended the call: re-send the rest.
                    let call_ended = matches!(written, Err(Error::Status { .. }));
                    let done = stream.unacknowledged.pop_front().expect("checked above");
                    if call_ended {
                        stream.connection = None;
                        stream.sent = 0;
                    } else {
                        stream.sent = stream.sent.saturating_sub(1);
                    }
                    stream.acknowledged_rows = stream.acknowledged_rows.max(done.offset + done.rows as u64);
                    return Ok(());
                }
            }
        }
    }

    /// Sends the requests not yet sent on the current connection, opening one (whose first
    /// request is the oldest unacknowledged) if there is none.
    async fn send_unsent(&self, stream: &mut WriteStream) -> Result<()> {
        if stream.connection.is_none() {
            let Some(first) = stream.unacknowledged.front() else {
                return Ok(());
            };
            let capacity = self.config.max_in_flight.max(1) + 1;
            stream.connection = Some(self.open_append(&stream.name, first.request.clone(), capacity).await?);
            stream.sent = 1;
        }
        let Some(connection) = stream.connection.as_ref() else {
            return Ok(());
        };
        while stream.sent < stream.unacknowledged.len() {
            let request = stream.unacknowledged[stream.sent].request.clone();
            if connection.requests.send(request).await.is_err() {
                // The call has ended; its answers say how, and the retry re-sends.
                return Ok(());
            }
            stream.sent += 1;
        }
        Ok(())
    }

    /// Opens an AppendRows call whose first request is `first`: queued before the call
    /// starts, so a server that answers headers only with its first message cannot stall us.
    /// `capacity` requests fit in the queue, so sending never waits on a full queue.
    async fn open_append(
        &self,
        stream_name: &str,
        first: pb::AppendRowsRequest,
        capacity: usize,
    ) -> Result<AppendConnection> {
        let (requests, receiver) = mpsc::channel(capacity);
        requests
            .try_send(first)
            .expect("a new channel has room for one request");
        let mut call = tonic::Request::new(ReceiverStream::new(receiver));
        self.decorate(call.metadata_mut(), &routing("write_stream", stream_name))
            .await?;
        let responses = self
            .grpc
            .clone()
            .append_rows(call)
            .await
            .map_err(|status| Error::from_status("AppendRows", &status))?
            .into_inner();
        Ok(AppendConnection { requests, responses })
    }

    /// Ends the stream's append call cleanly: our side closes, the server's side drains.
    async fn close_connection(&self, stream: &mut WriteStream) {
        if let Some(AppendConnection {
            requests,
            mut responses,
        }) = stream.connection.take()
        {
            drop(requests);
            let drain = async { while let Ok(Some(_)) = responses.message().await {} };
            let _ = tokio::time::timeout(self.config.request_timeout.min(Duration::from_secs(10)), drain).await;
        }
    }

    /// One unary call, retried while its failure is transient or throttled.
    async fn unary<Req, Resp, Call, Fut>(
        &self,
        operation: &'static str,
        routing: String,
        message: Req,
        call: Call,
    ) -> Result<Resp>
    where
        Req: Clone,
        Call: Fn(BigQueryWriteClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let timeout = self.config.request_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = tonic::Request::new(message.clone());
            // A token that is unavailable right now is retried like the call itself.
            let error = match self.decorate(request.metadata_mut(), &routing).await {
                Err(error) => error,
                Ok(()) => {
                    request.set_timeout(timeout);
                    match tokio::time::timeout(timeout, call(self.grpc.clone(), request)).await {
                        Ok(Ok(response)) => return Ok(response.into_inner()),
                        Ok(Err(status)) => Error::from_status(operation, &status),
                        Err(_) => Error::Timeout {
                            operation,
                            seconds: timeout.as_secs(),
                        },
                    }
                }
            };
            self.backoff_or_fail(attempt, error).await?;
        }
    }

    /// Waits before the next attempt, or gives the error back when it is permanent or the
    /// attempts are used up.
    async fn backoff_or_fail(&self, attempt: u32, error: Error) -> Result<()> {
        let class = error.class();
        if class == ErrorClass::Permanent || attempt >= self.config.retry.max_attempts {
            return Err(error);
        }
        let delay = self.config.retry.delay(attempt, class);
        tracing::warn!(attempt, ?delay, class = class.as_str(), %error, "retrying");
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Adds the bearer token and Google's routing header to a call.
    async fn decorate(&self, metadata: &mut MetadataMap, routing: &str) -> Result<()> {
        if let Some(auth) = &self.config.auth {
            let token = auth.token().await.map_err(|e| match e {
                TokenError::Unavailable(m) => Error::TokenUnavailable(m),
                TokenError::Refused(m) => Error::TokenRefused(m),
            })?;
            let mut value = MetadataValue::try_from(format!("Bearer {}", token.expose()))
                .map_err(|_| Error::TokenRefused("the token is not a valid header value".into()))?;
            value.set_sensitive(true);
            metadata.insert("authorization", value);
        }
        let value = MetadataValue::try_from(routing)
            .map_err(|_| Error::Protocol(format!("routing header `{routing}` is not a valid header value")))?;
        metadata.insert("x-goog-request-params", value);
        Ok(())
    }
}

/// One AppendRows request for `piece` at `offset`. The schema goes with every request: a
/// retry may open a new connection, and the server needs it on a connection's first request.
fn append_request(stream: &str, offset: u64, schema: &Bytes, piece: &EncodedPiece) -> pb::AppendRowsRequest {
    pb::AppendRowsRequest {
        write_stream: stream.to_string(),
        offset: Some(offset as i64),
        rows: Some(pb::append_rows_request::Rows::ArrowRows(
            pb::append_rows_request::ArrowData {
                writer_schema: Some(pb::ArrowSchema {
                    serialized_schema: schema.clone(),
                }),
                rows: Some(pb::ArrowRecordBatch {
                    serialized_record_batch: piece.bytes.clone(),
                    ..Default::default()
                }),
            },
        )),
        trace_id: TRACE_ID.to_string(),
        ..Default::default()
    }
}

/// Google routes calls by this header: `key=<url-encoded resource name>`.
fn routing(key: &str, resource: &str) -> String {
    let mut encoded = String::with_capacity(resource.len() + 16);
    for byte in resource.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{key}={encoded}")
}

/// Reads one AppendRows answer for the request at `offset` with `rows` rows.
fn interpret_append(stream: &str, offset: u64, rows: usize, answer: pb::AppendRowsResponse) -> Result<()> {
    if !answer.row_errors.is_empty() {
        let errors = answer
            .row_errors
            .iter()
            .map(|e| RowError {
                row: offset + e.index.max(0) as u64,
                message: e.message.clone(),
            })
            .collect();
        return Err(Error::RowErrors {
            stream: stream.to_string(),
            offset,
            errors,
        });
    }
    match answer.response {
        Some(pb::append_rows_response::Response::AppendResult(result)) => match result.offset {
            Some(acknowledged) if acknowledged != offset as i64 => Err(Error::Protocol(format!(
                "append of {rows} rows at offset {offset} was acknowledged at offset {acknowledged}"
            ))),
            _ => Ok(()),
        },
        Some(pb::append_rows_response::Response::Error(status)) => Err(Error::Append {
            stream: stream.to_string(),
            offset,
            code: Code::from_i32(status.code),
            message: status.message,
        }),
        None => Err(Error::Protocol(
            "an AppendRows answer with neither result nor error".into(),
        )),
    }
}

/// `ALREADY_EXISTS` on an append: the server already has rows at that offset.
fn already_written(error: &Error) -> bool {
    matches!(
        error,
        Error::Append {
            code: Code::AlreadyExists,
            ..
        } | Error::Status {
            operation: "AppendRows",
            code: Code::AlreadyExists,
            ..
        }
    )
}

fn commit_outcome(table_path: &str, answer: pb::BatchCommitWriteStreamsResponse) -> Result<CommitOutcome> {
    use pb::storage_error::StorageErrorCode;
    if answer.stream_errors.is_empty() {
        let Some(time) = answer.commit_time else {
            return Err(Error::Protocol(
                "BatchCommitWriteStreams answered neither a commit time nor errors".into(),
            ));
        };
        let since_epoch = Duration::new(time.seconds.max(0) as u64, time.nanos.clamp(0, 999_999_999) as u32);
        return Ok(CommitOutcome::Committed {
            commit_time: SystemTime::UNIX_EPOCH + since_epoch,
        });
    }
    if answer
        .stream_errors
        .iter()
        .all(|e| e.code == StorageErrorCode::StreamAlreadyCommitted as i32)
    {
        return Ok(CommitOutcome::AlreadyCommitted);
    }
    let errors = answer
        .stream_errors
        .into_iter()
        .map(|e| StreamError {
            code: StorageErrorCode::try_from(e.code)
                .map(|c| c.as_str_name().to_string())
                .unwrap_or_else(|_| format!("code {}", e.code)),
            entity: e.entity,
            message: e.error_message,
        })
        .collect();
    Err(Error::Commit {
        table: table_path.to_string(),
        errors,
    })
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_header_encodes_the_resource_name() {
        assert_eq!(
            routing("write_stream", "projects/p/datasets/d/tables/t/streams/abc"),
            "write_stream=projects%2Fp%2Fdatasets%2Fd%2Ftables%2Ft%2Fstreams%2Fabc"
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_throttling_waits_longer() {
        let retry = RetrySettings {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            throttle_factor: 4,
        };
        let first = retry.delay(1, ErrorClass::Transient);
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        assert!(retry.delay(10, ErrorClass::Transient) <= Duration::from_secs(2));
        let throttled = retry.delay(1, ErrorClass::Throttled);
        assert!(throttled >= Duration::from_millis(200), "{throttled:?}");
    }

    #[test]
    fn an_acknowledgement_at_another_offset_is_a_protocol_error() {
        let answer = pb::AppendRowsResponse {
            response: Some(pb::append_rows_response::Response::AppendResult(
                pb::append_rows_response::AppendResult { offset: Some(5) },
            )),
            ..Default::default()
        };
        assert!(matches!(interpret_append("s", 3, 2, answer), Err(Error::Protocol(_))));
    }

    #[test]
    fn commit_errors_are_named_and_already_committed_is_success() {
        use pb::storage_error::StorageErrorCode;
        let refused = pb::BatchCommitWriteStreamsResponse {
            commit_time: None,
            stream_errors: vec![pb::StorageError {
                code: StorageErrorCode::InvalidStreamState as i32,
                entity: "projects/p/datasets/d/tables/t/streams/s".into(),
                error_message: "not finalized".into(),
            }],
        };
        let err = commit_outcome("projects/p/datasets/d/tables/t", refused).unwrap_err();
        assert!(err.to_string().contains("INVALID_STREAM_STATE"), "{err}");
        assert_eq!(err.class(), ErrorClass::Permanent);
        let again = pb::BatchCommitWriteStreamsResponse {
            commit_time: None,
            stream_errors: vec![pb::StorageError {
                code: StorageErrorCode::StreamAlreadyCommitted as i32,
                entity: "s".into(),
                error_message: "committed".into(),
            }],
        };
        assert_eq!(commit_outcome("t", again).unwrap(), CommitOutcome::AlreadyCommitted);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let auth: Arc<dyn TokenProvider> =
            Arc::new(crate::auth::StaticToken(crate::auth::Secret::new("ya29.secret-token")));
        let config = ClientConfig::new(DEFAULT_ENDPOINT, Some(auth));
        assert!(!format!("{config:?}").contains("secret-token"));
    }
}
