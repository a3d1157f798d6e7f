//! A tiny in-process Storage Write server with the published PENDING semantics (offsets in
//! order; a written offset answers ALREADY_EXISTS, a gap OUT_OF_RANGE; finalize; atomic batch
//! commit) plus injected faults the emulator cannot produce: a connection that drops after the
//! server applied an append (so its answer is lost), UNAVAILABLE, RESOURCE_EXHAUSTED, rows
//! refused with `row_errors`. It records the headers it saw.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arrow::ipc::reader::StreamReader;
use backhaul_bigquery_storage_write::proto::google::cloud::bigquery::storage::v1 as pb;
use backhaul_bigquery_storage_write::proto::google::rpc;
use futures::{Stream, StreamExt};
use pb::big_query_write_server::{BigQueryWrite, BigQueryWriteServer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status, Streaming};

/// What to do with the next AppendRows request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Behave normally.
    Pass,
    /// Apply the rows, then end the call with this status: the client never sees the answer.
    AfterApply(Code),
    /// End the call with this status without applying anything.
    Before(Code),
    /// Answer with an in-stream error status (the call stays open).
    InStream(Code),
    /// Refuse the request's rows at these indexes (nothing applied).
    RowErrors(Vec<i64>),
    /// Apply the rows and never answer (the call stays open, silent).
    Silent,
}

#[derive(Debug, Default)]
struct FakeStream {
    table: String,
    rows: u64,
    finalized: bool,
    committed: bool,
}

/// What the server holds and saw.
#[derive(Debug, Default)]
pub struct State {
    streams: HashMap<String, FakeStream>,
    /// Rows visible per table (committed).
    pub visible: HashMap<String, u64>,
    /// Faults for the next AppendRows requests, in order.
    pub faults: VecDeque<Fault>,
    /// Every AppendRows request that arrived: (offset, rows).
    pub appends: Vec<(i64, u64)>,
    /// The `authorization` header of every call.
    pub authorizations: Vec<Option<String>>,
    /// The `x-goog-request-params` header of every call.
    pub routings: Vec<Option<String>>,
    next_id: u64,
}

impl State {
    /// Rows held by all streams, committed or not.
    pub fn rows_of_streams(&self) -> u64 {
        self.streams.values().map(|s| s.rows).sum()
    }
}

/// A running fake server; stops when dropped.
pub struct FakeServer {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The server's state, for setting faults and checking results.
    pub state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// Starts a server on a port the OS picks.
    pub async fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let service = BigQueryWriteServer::new(Fake { state: state.clone() });
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        FakeServer {
            endpoint: format!("http://{address}"),
            state,
            task,
        }
    }

    /// Queues faults for the next AppendRows requests.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.extend(faults);
    }

    /// Rows committed into `table`.
    pub fn visible(&self, table: &str) -> u64 {
        self.state.lock().unwrap().visible.get(table).copied().unwrap_or(0)
    }
}

struct Fake {
    state: Arc<Mutex<State>>,
}

impl Fake {
    fn record<T>(&self, request: &Request<T>) {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let mut state = self.state.lock().unwrap();
        state.authorizations.push(header("authorization"));
        state.routings.push(header("x-goog-request-params"));
    }
}

/// Rows in an `arrow_rows` payload, decoded as a server would (schema message + batch).
fn decoded_rows(request: &pb::AppendRowsRequest) -> Result<u64, Status> {
    let Some(pb::append_rows_request::Rows::ArrowRows(data)) = &request.rows else {
        return Err(Status::invalid_argument("expected arrow_rows"));
    };
    let schema = data
        .writer_schema
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("no writer_schema"))?;
    let batch = data.rows.as_ref().ok_or_else(|| Status::invalid_argument("no rows"))?;
    let bytes = [
        schema.serialized_schema.as_ref(),
        batch.serialized_record_batch.as_ref(),
    ]
    .concat();
    let mut reader =
        StreamReader::try_new(bytes.as_slice(), None).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let batch = reader
        .next()
        .ok_or_else(|| Status::invalid_argument("no record batch"))?
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(batch.num_rows() as u64)
}

fn error_answer(stream: &str, code: Code, message: String) -> pb::AppendRowsResponse {
    pb::AppendRowsResponse {
        response: Some(pb::append_rows_response::Response::Error(rpc::Status {
            code: code as i32,
            message,
            details: vec![],
        })),
        write_stream: stream.to_string(),
        ..Default::default()
    }
}

/// One AppendRows request: `Ok(answer)` keeps the call open, `Err(status)` ends it.
fn handle_append(state: &Mutex<State>, request: pb::AppendRowsRequest) -> Result<pb::AppendRowsResponse, Status> {
    let rows = decoded_rows(&request)?;
    let offset = request
        .offset
        .ok_or_else(|| Status::invalid_argument("this fake wants offsets"))?;
    let mut state = state.lock().unwrap();
    state.appends.push((offset, rows));
    let fault = state.faults.pop_front();
    let name = request.write_stream.clone();
    match &fault {
        Some(Fault::Before(code)) => return Err(Status::new(*code, "injected before apply")),
        Some(Fault::InStream(code)) => return Ok(error_answer(&name, *code, "injected in-stream error".into())),
        Some(Fault::RowErrors(indexes)) => {
            let mut answer = error_answer(&name, Code::InvalidArgument, "rows refused".into());
            answer.row_errors = indexes
                .iter()
                .map(|&index| pb::RowError {
                    index,
                    code: pb::row_error::RowErrorCode::FieldsError as i32,
                    message: format!("field `amount` of row {index} is not a number"),
                })
                .collect();
            return Ok(answer);
        }
        _ => {}
    }
    let stream = state
        .streams
        .get_mut(&name)
        .ok_or_else(|| Status::not_found(format!("no stream {name}")))?;
    if stream.finalized {
        return Ok(error_answer(&name, Code::FailedPrecondition, "stream finalized".into()));
    }
    let expected = stream.rows as i64;
    if offset < expected {
        return Ok(error_answer(
            &name,
            Code::AlreadyExists,
            format!("offset {offset} already written"),
        ));
    }
    if offset > expected {
        return Ok(error_answer(
            &name,
            Code::OutOfRange,
            format!("offset {offset} past the end {expected}"),
        ));
    }
    stream.rows += rows;
    if let Some(Fault::AfterApply(code)) = fault {
        return Err(Status::new(code, "injected after apply: the answer is lost"));
    }
    if let Some(Fault::Silent) = fault {
        return Err(Status::new(Code::Ok, SILENT));
    }
    Ok(pb::AppendRowsResponse {
        response: Some(pb::append_rows_response::Response::AppendResult(
            pb::append_rows_response::AppendResult { offset: Some(offset) },
        )),
        write_stream: name,
        ..Default::default()
    })
}

/// Marks the status that means "answer nothing, keep the call open".
const SILENT: &str = "silent";

type AnswerStream = Pin<Box<dyn Stream<Item = Result<pb::AppendRowsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl BigQueryWrite for Fake {
    async fn create_write_stream(
        &self,
        request: Request<pb::CreateWriteStreamRequest>,
    ) -> Result<Response<pb::WriteStream>, Status> {
        self.record(&request);
        let request = request.into_inner();
        if request.parent.ends_with("/missing") {
            return Err(Status::not_found(format!(
                "Requested entity was not found. Entity: {}",
                request.parent
            )));
        }
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let name = format!("{}/streams/s{}", request.parent, state.next_id);
        state.streams.insert(
            name.clone(),
            FakeStream {
                table: request.parent,
                ..Default::default()
            },
        );
        Ok(Response::new(pb::WriteStream {
            name,
            ..Default::default()
        }))
    }

    type AppendRowsStream = AnswerStream;

    async fn append_rows(
        &self,
        request: Request<Streaming<pb::AppendRowsRequest>>,
    ) -> Result<Response<Self::AppendRowsStream>, Status> {
        self.record(&request);
        let state = self.state.clone();
        let requests = request.into_inner();
        // Answer each request in turn; a status ends the call.
        let answers = futures::stream::unfold(Some(requests), move |requests| {
            let state = state.clone();
            async move {
                let mut requests = requests?;
                match requests.message().await {
                    Ok(Some(request)) => match handle_append(&state, request) {
                        Ok(answer) => Some((Ok(answer), Some(requests))),
                        Err(status) if status.code() == Code::Ok && status.message() == SILENT => {
                            // Hold the call open without answering until the client gives up.
                            futures::future::pending::<()>().await;
                            None
                        }
                        Err(status) => Some((Err(status), None)),
                    },
                    Ok(None) => None,
                    Err(status) => Some((Err(status), None)),
                }
            }
        });
        Ok(Response::new(answers.boxed()))
    }

    async fn get_write_stream(
        &self,
        _request: Request<pb::GetWriteStreamRequest>,
    ) -> Result<Response<pb::WriteStream>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn finalize_write_stream(
        &self,
        request: Request<pb::FinalizeWriteStreamRequest>,
    ) -> Result<Response<pb::FinalizeWriteStreamResponse>, Status> {
        self.record(&request);
        let name = request.into_inner().name;
        let mut state = self.state.lock().unwrap();
        let stream = state
            .streams
            .get_mut(&name)
            .ok_or_else(|| Status::not_found(name.clone()))?;
        stream.finalized = true;
        Ok(Response::new(pb::FinalizeWriteStreamResponse {
            row_count: stream.rows as i64,
        }))
    }

    async fn batch_commit_write_streams(
        &self,
        request: Request<pb::BatchCommitWriteStreamsRequest>,
    ) -> Result<Response<pb::BatchCommitWriteStreamsResponse>, Status> {
        use pb::storage_error::StorageErrorCode;
        self.record(&request);
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        let mut errors = Vec::new();
        for name in &request.write_streams {
            let code = match state.streams.get(name) {
                None => Some(StorageErrorCode::StreamNotFound),
                Some(s) if s.committed => Some(StorageErrorCode::StreamAlreadyCommitted),
                Some(s) if !s.finalized => Some(StorageErrorCode::InvalidStreamState),
                Some(s) if s.table != request.parent => Some(StorageErrorCode::InvalidStreamState),
                Some(_) => None,
            };
            if let Some(code) = code {
                errors.push(pb::StorageError {
                    code: code as i32,
                    entity: name.clone(),
                    error_message: code.as_str_name().into(),
                });
            }
        }
        if !errors.is_empty() {
            return Ok(Response::new(pb::BatchCommitWriteStreamsResponse {
                commit_time: None,
                stream_errors: errors,
            }));
        }
        let mut rows = 0;
        for name in &request.write_streams {
            let stream = state.streams.get_mut(name).expect("checked above");
            stream.committed = true;
            rows += stream.rows;
        }
        *state.visible.entry(request.parent).or_default() += rows;
        Ok(Response::new(pb::BatchCommitWriteStreamsResponse {
            commit_time: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            stream_errors: vec![],
        }))
    }

    async fn flush_rows(
        &self,
        _request: Request<pb::FlushRowsRequest>,
    ) -> Result<Response<pb::FlushRowsResponse>, Status> {
        Err(Status::unimplemented("PENDING streams are not flushed"))
    }
}
