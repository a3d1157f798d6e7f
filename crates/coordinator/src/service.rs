//! The tonic service workers and the CLI talk to, and the server around it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backhaul_core::ErrorClass;
use backhaul_core::checksum::RowSummary;
use backhaul_core::connector::{Connectors, ExtractFacts, StagedFile};
use backhaul_core::fidelity::{ColumnFidelity, TypeFidelityReport};
use backhaul_core::fingerprint::ChunkFingerprint;
use backhaul_core::proof::{ChunkEvidence, ChunkProof, ProofLevel};
use backhaul_core::spec::JobSpec;
use backhaul_proto::v1 as pb;
use backhaul_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use backhaul_proto::{AuthLayer, ServerTls, Token};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::breakers::SourceBreakers;
use crate::error::{CoordinatorError, Result};
use crate::metrics::{CoordinatorMetrics, LeaseCall};
use crate::plan::submit_spec;
use crate::pools::RatePools;
use crate::split::{SplitOutcome, WaitingWorkers};
use crate::state::StateStore;
use crate::store::{ChunkRow, ChunkState, Failure, JobRow, JobSummary, Lease, LeaseKey, NoLease, Submitted, now_us};
use crate::sync::{SyncOutcome, SyncPlanned, sync_spec};

/// When and how often failed chunks are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts (failures) after which a chunk is parked.
    pub max_attempts: u32,
    /// First backoff after a transient failure; doubles per failure.
    pub transient_base: Duration,
    /// First backoff after a throttled failure; doubles per failure.
    pub throttled_base: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            transient_base: Duration::from_secs(1),
            throttled_base: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// What a failed attempt leaves its chunk in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterFailure {
    /// `Pending` (retried once the backoff ends) or `Parked`.
    pub state: ChunkState,
    /// When the retry may be leased, microseconds since the epoch; 0 when parked.
    pub not_before_us: i64,
}

impl AfterFailure {
    /// Whether the chunk will run again.
    pub fn retries(&self) -> bool {
        self.state == ChunkState::Pending
    }
}

impl RetryPolicy {
    /// The rule both state stores apply to every counted failure (a worker's report or an
    /// expired lease): the chunk's `failures`-th failure, this one included, parks it when it
    /// is permanent or reaches `max_attempts`; otherwise it is retried after a backoff.
    pub fn after_failure(&self, class: ErrorClass, failures: u32, key: &LeaseKey, now_us: i64) -> AfterFailure {
        if class == ErrorClass::Permanent || failures >= self.max_attempts {
            return AfterFailure {
                state: ChunkState::Parked,
                not_before_us: 0,
            };
        }
        AfterFailure {
            state: ChunkState::Pending,
            not_before_us: now_us + self.backoff_us(class, failures, key),
        }
    }

    /// Exponential backoff with ±25% jitter. The jitter is a hash of the lease, not a random
    /// draw, so retries of different chunks spread out while tests stay reproducible.
    pub fn backoff_us(&self, class: ErrorClass, failures: u32, key: &LeaseKey) -> i64 {
        let base = match class {
            ErrorClass::Throttled => self.throttled_base,
            _ => self.transient_base,
        };
        let exp = base.as_micros() as f64 * 2f64.powi(failures.saturating_sub(1).min(20) as i32);
        let capped = exp.min(self.max_backoff.as_micros() as f64);
        let h = xorshift(key.chunk_id ^ (u64::from(key.attempt) << 32) ^ key.job_id.len() as u64);
        let jitter = 0.75 + (h % 1000) as f64 / 2000.0;
        (capped * jitter) as i64
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The coordinator's gRPC service over a [`StateStore`].
#[derive(Clone)]
pub struct CoordinatorService {
    store: Arc<dyn StateStore>,
    connectors: Arc<dyn Connectors>,
    lease_ttl: Duration,
    retry: RetryPolicy,
    metrics: Arc<CoordinatorMetrics>,
    flight: Arc<FlightEndpoints>,
    /// Where submitted jobs' type-fidelity reports are written, if anywhere.
    reports_dir: Option<PathBuf>,
    /// Woken after schedule changes (a no-op when no scheduler runs).
    scheduler: crate::schedule::SchedulerHandle,
    /// The rate-limit pools workers lease request tokens from.
    pools: Arc<RatePools>,
    /// The jobs' sources' circuit breakers as workers last reported them.
    breakers: Arc<SourceBreakers>,
    /// Jobs whose workers just found nothing to lease: their running chunks are offered a split.
    waiting: Arc<WaitingWorkers>,
}

/// Workers that serve Arrow Flight previews, as they announced themselves when asking for
/// work. Kept in memory: after a coordinator restart, workers announce again within seconds.
#[derive(Default)]
struct FlightEndpoints {
    seen: std::sync::Mutex<std::collections::BTreeMap<String, (String, Instant)>>,
    next: std::sync::atomic::AtomicUsize,
}

/// Most leases one LeaseChunk call hands out, whatever the worker asks for.
pub const MAX_LEASES_PER_CALL: u32 = 64;

/// A worker that has not asked for work for this long is not offered for previews.
const FLIGHT_FRESHNESS: Duration = Duration::from_secs(120);

impl FlightEndpoints {
    fn saw(&self, worker_id: &str, url: &str) {
        // Slots of one worker share its endpoint: key by the worker, not the slot.
        let worker = worker_id.split('#').next().unwrap_or(worker_id);
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(worker.to_string(), (url.to_string(), Instant::now()));
        }
    }

    /// A fresh endpoint, round robin.
    fn pick(&self) -> Option<String> {
        let seen = self.seen.lock().ok()?;
        let fresh: Vec<&String> = seen
            .values()
            .filter(|(_, at)| at.elapsed() < FLIGHT_FRESHNESS)
            .map(|(url, _)| url)
            .collect();
        if fresh.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(fresh[i % fresh.len()].clone())
    }
}

impl CoordinatorService {
    /// A service over `store`; `connectors` plan the jobs clients submit.
    pub fn new(
        store: Arc<dyn StateStore>,
        connectors: Arc<dyn Connectors>,
        lease_ttl: Duration,
        retry: RetryPolicy,
    ) -> Self {
        CoordinatorService {
            store,
            connectors,
            lease_ttl,
            retry,
            metrics: Arc::new(CoordinatorMetrics::default()),
            flight: Arc::new(FlightEndpoints::default()),
            reports_dir: None,
            scheduler: crate::schedule::SchedulerHandle::default(),
            pools: Arc::new(RatePools::new(Arc::new(crate::clock::SystemClock))),
            breakers: Arc::new(SourceBreakers::default()),
            waiting: Arc::new(WaitingWorkers::new(Arc::new(crate::clock::SystemClock))),
        }
    }

    /// Wakes `scheduler` after schedule changes made through the `Schedules` service.
    pub fn with_scheduler(mut self, scheduler: crate::schedule::SchedulerHandle) -> Self {
        self.scheduler = scheduler;
        self
    }

    /// Serves rate-limit leases from `pools` (tests inject one with a manual clock).
    pub fn with_pools(mut self, pools: Arc<RatePools>) -> Self {
        self.pools = pools;
        self
    }

    /// The rate-limit pools (shared with `/metrics` and the status page).
    pub fn pools(&self) -> Arc<RatePools> {
        self.pools.clone()
    }

    /// The jobs' sources' circuit breakers as workers last reported them (a local run shows
    /// them in its report).
    pub fn breakers(&self) -> Arc<SourceBreakers> {
        self.breakers.clone()
    }

    /// Keeps the breaker a worker reported with a chunk of `lease_id`.
    fn note_breaker(&self, lease_id: &str, breaker: Option<pb::SourceBreaker>) {
        if let (Some(breaker), Ok(key)) = (breaker, LeaseKey::parse(lease_id)) {
            self.breakers.record(&key.job_id, breaker, crate::store::now_us());
        }
    }

    /// [`job_status`] with the job's breaker.
    fn job_status_now(&self, job: &JobRow, summary: &JobSummary) -> pb::JobStatus {
        pb::JobStatus {
            breaker: self.breakers.of(&job.job_id),
            ..job_status(job, summary)
        }
    }

    /// Writes each submitted job's type-fidelity report into `<dir>/<job>/` (as local runs do
    /// next to their state database), besides returning it to the submitting client.
    pub fn with_reports_dir(mut self, dir: PathBuf) -> Self {
        self.reports_dir = Some(dir);
        self
    }

    /// The service's counters (shared with `/metrics`).
    pub fn metrics(&self) -> Arc<CoordinatorMetrics> {
        self.metrics.clone()
    }

    /// The state store.
    pub fn store(&self) -> Arc<dyn StateStore> {
        self.store.clone()
    }

    fn ttl_ms(&self) -> u32 {
        self.lease_ttl.as_millis().min(u32::MAX as u128) as u32
    }

    /// Maps a store error of a lease-scoped call to a status, counting stale calls.
    fn lease_status(&self, call: LeaseCall, lease_id: &str, e: CoordinatorError) -> Status {
        if matches!(e, CoordinatorError::StaleLease { .. }) {
            self.metrics.stale(call);
            let key = LeaseKey::parse(lease_id).ok();
            warn!(
                job = key.as_ref().map(|k| k.job_id.as_str()).unwrap_or(""),
                chunk = key.as_ref().map(|k| k.chunk_id),
                attempt = key.as_ref().map(|k| k.attempt),
                call = ?call,
                error = %e,
                "refused a call on a stale lease"
            );
        }
        status(e)
    }
}

/// How the gRPC server authenticates and encrypts.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Shared token every call must carry; `None` accepts any caller (local mode on loopback).
    pub token: Option<Token>,
    /// TLS (and with a client CA, mutual TLS); `None` serves plain HTTP/2.
    pub tls: Option<ServerTls>,
}

/// Binds `addr` (port 0 picks a free one) and serves until `cancel` fires. Returns the bound
/// address and the server future, which the caller awaits in its own task set.
pub async fn serve(
    service: CoordinatorService,
    addr: SocketAddr,
    options: ServeOptions,
    cancel: CancellationToken,
) -> Result<(SocketAddr, impl std::future::Future<Output = Result<()>>)> {
    let listener = listen(addr).map_err(|e| backhaul_core::Error::io(addr.to_string(), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| backhaul_core::Error::io(addr.to_string(), e))?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &options.tls {
        let config = tls.config().map_err(|e| CoordinatorError::Wire(e.to_string()))?;
        builder = builder.tls_config(config)?;
    }
    let schedules = crate::schedule::rpc::ScheduleRpc::server(
        service.store(),
        service.scheduler.clone(),
        Arc::new(crate::clock::SystemClock),
    );
    let router = builder
        .layer(AuthLayer::new(options.token.clone()))
        .add_service(CoordinatorServer::new(service).max_decoding_message_size(16 * 1024 * 1024))
        .add_service(schedules);
    let fut = async move {
        router
            .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
            .await
            .map_err(CoordinatorError::from)
    };
    Ok((local, fut))
}

/// Connections the kernel queues for the accept loop. Workers reconnect all at once after a
/// coordinator restart; a short queue turns that herd into dropped SYNs, second-long retries
/// and reset connections (the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` like `TcpListener::bind`, with a longer accept queue.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn status(e: CoordinatorError) -> Status {
    match &e {
        CoordinatorError::StaleLease { .. } => Status::failed_precondition(e.to_string()),
        CoordinatorError::UnknownJob(_) => Status::not_found(e.to_string()),
        CoordinatorError::Core(backhaul_core::Error::VerificationFailed { .. }) => Status::data_loss(e.to_string()),
        _ if e.class() == ErrorClass::Permanent => Status::internal(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

/// A refused spec as the typed wire error: the parts of a config error stay separate.
pub fn job_error(e: &CoordinatorError) -> pb::JobError {
    let mut out = pb::JobError {
        class: pb::ErrorClass::from(e.class()) as i32,
        message: e.to_string(),
        ..Default::default()
    };
    match e {
        CoordinatorError::Core(core) => {
            out.kind = core.kind().into();
            match core {
                backhaul_core::Error::Config { file, field, message } => {
                    out.file = file.clone();
                    out.field = field.clone();
                    out.message = message.clone();
                }
                backhaul_core::Error::InvalidObject { object, message } => {
                    out.object = object.clone();
                    out.message = message.clone();
                }
                _ => {}
            }
        }
        CoordinatorError::SpecChanged { .. } => {
            out.kind = "spec_changed".into();
            out.field = "name".into();
        }
        _ => out.kind = "coordinator".into(),
    }
    out
}

fn fidelity_pb(report: &TypeFidelityReport) -> pb::TypeFidelity {
    pb::TypeFidelity {
        job_id: report.job.clone(),
        columns: report
            .columns
            .iter()
            .map(|c| pb::ColumnFidelity {
                name: c.name.clone(),
                source_type: c.source_type.clone(),
                arrow_type: c.arrow_type.clone(),
                destination_type: c.destination_type.clone(),
                lossy_steps: c.lossy_steps.clone(),
            })
            .collect(),
    }
}

/// The report as the client received it.
pub fn fidelity_from_pb(report: pb::TypeFidelity) -> TypeFidelityReport {
    TypeFidelityReport {
        job: report.job_id,
        columns: report
            .columns
            .into_iter()
            .map(|c| ColumnFidelity {
                name: c.name,
                source_type: c.source_type,
                arrow_type: c.arrow_type,
                destination_type: c.destination_type,
                lossy_steps: c.lossy_steps,
            })
            .collect(),
    }
}

/// The wire form of a lease.
fn lease_pb(lease: Lease, ttl_ms: u32) -> pb::ChunkLease {
    pb::ChunkLease {
        lease_id: lease.lease_id,
        job_id: lease.job.job_id,
        chunk_id: lease.chunk.chunk_id,
        attempt: lease.chunk.attempt,
        range: Some(pb::CursorRange {
            from: lease.chunk.range.from,
            to: lease.chunk.range.to,
        }),
        job_spec_toml: lease.job.spec_toml,
        spec_base_dir: lease.job.base_dir.display().to_string(),
        lease_ttl_ms: ttl_ms,
        estimated_rows: lease.chunk.estimated_rows,
        estimated_bytes: lease.chunk.estimated_bytes,
    }
}

fn chunk_state_pb(s: ChunkState) -> pb::ChunkState {
    match s {
        ChunkState::Pending => pb::ChunkState::Pending,
        ChunkState::Leased => pb::ChunkState::Leased,
        ChunkState::Committed => pb::ChunkState::Committed,
        ChunkState::Parked => pb::ChunkState::Parked,
        ChunkState::Cancelled => pb::ChunkState::Cancelled,
    }
}

/// The state of a job from its row and summary.
pub fn job_state(job: &JobRow, s: &JobSummary) -> pb::JobState {
    if s.committed == s.chunks {
        pb::JobState::Succeeded
    } else if job.cancelled_at_us.is_some() {
        pb::JobState::Cancelled
    } else if s.is_finished() {
        pb::JobState::Parked
    } else {
        pb::JobState::Running
    }
}

/// The wire status of a job.
/// What a sync did, on the wire.
fn sync_result_pb(outcome: &SyncOutcome) -> pb::SyncResult {
    use pb::sync_result::Outcome;
    let outcome = match outcome {
        SyncOutcome::Backfill(_) => Outcome::Backfill(true),
        SyncOutcome::Extended {
            from_mark,
            to_mark,
            chunks,
        } => Outcome::Extended(pb::SyncExtended {
            from_mark: *from_mark,
            to_mark: *to_mark,
            chunks: chunks.clone(),
        }),
        SyncOutcome::UpToDate => Outcome::UpToDate(true),
    };
    pb::SyncResult { outcome: Some(outcome) }
}

pub fn job_status(job: &JobRow, s: &JobSummary) -> pb::JobStatus {
    pb::JobStatus {
        job_id: job.job_id.clone(),
        state: job_state(job, s) as i32,
        cursor_kind: job.cursor_kind.as_str().into(),
        range: Some(pb::CursorRange {
            from: job.range.from,
            to: job.range.to,
        }),
        range_display: job.range.display(job.cursor_kind),
        created_at_us: job.created_at_us,
        chunks: s.chunks,
        pending: s.pending,
        leased: s.leased,
        committed: s.committed,
        parked: s.parked,
        cancelled: s.cancelled,
        committed_rows: s.committed_rows,
        committed_bytes: s.committed_bytes,
        in_flight_rows: s.in_flight_rows,
        estimated_rows: s.estimated_rows,
        estimated_bytes: s.estimated_bytes,
        failures: s.failures,
        dead_letters: s.dead_letters,
        breaker: None,
    }
}

/// The summary a wire status carries: the way back of [`job_status`], kept beside it.
impl From<&pb::JobStatus> for JobSummary {
    fn from(s: &pb::JobStatus) -> Self {
        JobSummary {
            chunks: s.chunks,
            pending: s.pending,
            leased: s.leased,
            committed: s.committed,
            parked: s.parked,
            cancelled: s.cancelled,
            committed_rows: s.committed_rows,
            committed_bytes: s.committed_bytes,
            in_flight_rows: s.in_flight_rows,
            estimated_rows: s.estimated_rows,
            estimated_bytes: s.estimated_bytes,
            failures: s.failures,
            dead_letters: s.dead_letters,
        }
    }
}

fn chunk_status(c: &ChunkRow) -> pb::ChunkStatus {
    let (rows, bytes) = match c.state {
        ChunkState::Committed => (
            c.committed.as_ref().map_or(0, |p| p.rows),
            c.committed_bytes.unwrap_or(0),
        ),
        _ => (c.progress_rows, c.progress_bytes),
    };
    pb::ChunkStatus {
        chunk_id: c.chunk_id,
        range: Some(pb::CursorRange {
            from: c.range.from,
            to: c.range.to,
        }),
        state: chunk_state_pb(c.state) as i32,
        attempt: c.attempt,
        failures: c.failures,
        estimated_rows: c.estimated_rows,
        rows,
        bytes,
        worker_id: c.lease_worker.clone().unwrap_or_default(),
        last_error: c.last_error.as_ref().map(|(class, kind, message)| pb::ChunkError {
            class: ErrorClass::parse(class)
                .map(pb::ErrorClass::from)
                .unwrap_or(pb::ErrorClass::Unspecified) as i32,
            kind: kind.clone(),
            message: message.clone(),
        }),
        committed_at_us: c.committed_at_us.unwrap_or(0),
        proof_level: c
            .committed
            .as_ref()
            .map_or(pb::ProofLevel::Unspecified, |p| p.level.into()) as i32,
        dead_letters: c.dead_letters,
        split_from: c.split_from,
    }
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn lease_chunk(
        &self,
        req: Request<pb::LeaseChunkRequest>,
    ) -> Result<Response<pb::LeaseChunkResponse>, Status> {
        let started = Instant::now();
        let req = req.into_inner();
        let ttl = self.ttl_ms();
        let filter = (!req.job_id.is_empty()).then_some(req.job_id);
        if !req.flight_url.is_empty() {
            self.flight.saw(&req.worker_id, &req.flight_url);
        }
        let max = req.max_leases.clamp(1, MAX_LEASES_PER_CALL);
        let out = self
            .store
            .lease_many(&req.worker_id, filter.as_deref(), ttl, max, &self.retry)
            .await
            .map_err(status)?;
        let response = match out {
            Ok(leases) if !leases.is_empty() => {
                self.metrics.leases_granted.add(leases.len() as u64);
                let mut leases = leases.into_iter().map(|lease| {
                    tracing::debug!(job = %lease.job.job_id, chunk = lease.chunk.chunk_id, attempt = lease.chunk.attempt, "leased");
                    lease_pb(lease, ttl)
                });
                pb::LeaseChunkResponse {
                    outcome: leases.next().map(pb::lease_chunk_response::Outcome::Lease),
                    more_leases: leases.collect(),
                }
            }
            none => {
                self.metrics.leases_empty.inc();
                // A backend answering with neither a lease nor a reason: ask again soon.
                let (job_finished, retry_after_ms) = match none {
                    Err(NoLease::Finished) => (true, 0),
                    Err(NoLease::RetryAfterMs(ms)) => (false, ms),
                    Ok(_) => (false, 50),
                };
                if !job_finished {
                    self.waiting.saw_waiting(filter.as_deref());
                }
                pb::LeaseChunkResponse {
                    outcome: Some(pb::lease_chunk_response::Outcome::NoWork(pb::NoWork {
                        job_finished,
                        retry_after_ms,
                    })),
                    more_leases: Vec::new(),
                }
            }
        };
        self.metrics.lease_latency.observe(started.elapsed());
        Ok(Response::new(response))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let lease_id = req.into_inner().lease_id;
        let ttl = self.ttl_ms();
        self.store
            .heartbeat(&lease_id, ttl)
            .await
            .map_err(|e| self.lease_status(LeaseCall::Heartbeat, &lease_id, e))?;
        Ok(Response::new(pb::HeartbeatResponse { lease_ttl_ms: ttl }))
    }

    async fn report_progress(
        &self,
        req: Request<pb::ReportProgressRequest>,
    ) -> Result<Response<pb::ReportProgressResponse>, Status> {
        let r = req.into_inner();
        self.store
            .progress(&r.lease_id, r.rows, r.bytes)
            .await
            .map_err(|e| self.lease_status(LeaseCall::Progress, &r.lease_id, e))?;
        let split_wanted = LeaseKey::parse(&r.lease_id).is_ok_and(|key| self.waiting.wanted(&key.job_id));
        Ok(Response::new(pb::ReportProgressResponse { split_wanted }))
    }

    async fn split_chunk(
        &self,
        req: Request<pb::SplitChunkRequest>,
    ) -> Result<Response<pb::SplitChunkResponse>, Status> {
        let r = req.into_inner();
        let outcome = self
            .store
            .split(&r.lease_id, r.at)
            .await
            .map_err(|e| self.lease_status(LeaseCall::Split, &r.lease_id, e))?;
        let response = match outcome {
            SplitOutcome::Split { kept, new_chunk_id } => {
                if let Ok(key) = LeaseKey::parse(&r.lease_id) {
                    self.waiting.served(&key.job_id);
                    tracing::info!(job = %key.job_id, chunk = key.chunk_id, attempt = key.attempt, range = %kept, new_chunk = new_chunk_id, "split a running chunk for waiting workers");
                }
                self.metrics.chunks_split.inc();
                pb::SplitChunkResponse {
                    split: true,
                    range: Some(pb::CursorRange {
                        from: kept.from,
                        to: kept.to,
                    }),
                    new_chunk_id,
                    refused: String::new(),
                }
            }
            SplitOutcome::Refused(why) => pb::SplitChunkResponse {
                split: false,
                range: None,
                new_chunk_id: 0,
                refused: why,
            },
        };
        Ok(Response::new(response))
    }

    async fn complete_chunk(
        &self,
        req: Request<pb::CompleteChunkRequest>,
    ) -> Result<Response<pb::CompleteChunkResponse>, Status> {
        let r = req.into_inner();
        let out = r
            .output
            .ok_or_else(|| Status::invalid_argument("complete_chunk needs an output manifest"))?;
        let files: Vec<StagedFile> = out
            .files
            .into_iter()
            .map(|f| StagedFile {
                path: f.path,
                bytes: f.bytes,
                rows: f.rows,
                xxh3: None,
            })
            .collect();
        let summary = RowSummary {
            rows: out.extracted_rows,
            checksum: out.extracted_checksum,
        };
        let bad = |m: String| Status::invalid_argument(format!("complete_chunk: {m}"));
        // Workers that predate fingerprints send none, and an exact proof in the old fields.
        let extracted = ChunkEvidence {
            summary,
            fingerprint: backhaul_proto::proof::parse_fingerprint(&out.extracted_fingerprint_json)
                .map_err(bad)?
                .unwrap_or(ChunkFingerprint {
                    rows: summary.rows,
                    columns: Vec::new(),
                }),
        };
        let committed = match &out.proof {
            Some(proof) => ChunkProof::try_from(proof).map_err(bad)?,
            None => ChunkProof {
                level: ProofLevel::ExactChecksum,
                rows: out.committed_rows,
                checksum: Some(out.committed_checksum),
                fingerprint: None,
            },
        };
        let lease_id = r.lease_id;
        self.note_breaker(&lease_id, r.breaker);
        let facts = ExtractFacts {
            dead_letters: out.dead_letters,
        };
        match self
            .store
            .complete_with_facts(&lease_id, files, extracted, committed, facts)
            .await
        {
            Ok(()) => {
                self.metrics.completions.inc();
                Ok(Response::new(pb::CompleteChunkResponse {}))
            }
            Err(e) => {
                if matches!(
                    e,
                    CoordinatorError::Core(backhaul_core::Error::VerificationFailed { .. })
                ) {
                    self.metrics.verification_failures.inc();
                }
                Err(self.lease_status(LeaseCall::Complete, &lease_id, e))
            }
        }
    }

    async fn fail_chunk(&self, req: Request<pb::FailChunkRequest>) -> Result<Response<pb::FailChunkResponse>, Status> {
        let r = req.into_inner();
        if r.released {
            let lease_id = r.lease_id;
            self.store
                .release(&lease_id)
                .await
                .map_err(|e| self.lease_status(LeaseCall::Release, &lease_id, e))?;
            self.metrics.released.inc();
            return Ok(Response::new(pb::FailChunkResponse { will_retry: true }));
        }
        let e = r
            .error
            .ok_or_else(|| Status::invalid_argument("fail_chunk needs an error"))?;
        let failure = Failure {
            // An untyped failure is not retried: nobody said retrying could help.
            class: backhaul_proto::error_class(e.class).unwrap_or(ErrorClass::Permanent),
            kind: e.kind,
            message: e.message,
        };
        let class = failure.class;
        let lease_id = r.lease_id;
        self.note_breaker(&lease_id, r.breaker);
        let will_retry = self
            .store
            .fail(&lease_id, failure, self.retry.clone())
            .await
            .map_err(|e| self.lease_status(LeaseCall::Fail, &lease_id, e))?;
        self.metrics.failure(class);
        if will_retry {
            self.metrics.retries.inc();
        } else {
            self.metrics.parked.inc();
        }
        Ok(Response::new(pb::FailChunkResponse { will_retry }))
    }

    async fn submit_job(&self, req: Request<pb::SubmitJobRequest>) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let r = req.into_inner();
        let origin = if r.spec_origin.is_empty() {
            "<submitted spec>".to_string()
        } else {
            r.spec_origin
        };
        let base_dir = if r.base_dir.is_empty() {
            std::env::current_dir().map_err(|e| Status::internal(format!("current directory: {e}")))?
        } else {
            PathBuf::from(r.base_dir)
        };
        let submitted: Result<(JobRow, bool, Option<TypeFidelityReport>, Option<pb::SyncResult>)> = async {
            let spec = JobSpec::from_toml(&r.spec_toml, &origin)?;
            if r.sync {
                let now = if r.sync_now_us == 0 { now_us() } else { r.sync_now_us };
                let SyncPlanned { job, outcome, .. } = sync_spec(
                    self.store.as_ref(),
                    self.connectors.as_ref(),
                    spec,
                    &origin,
                    &base_dir,
                    now,
                )
                .await?;
                let created = matches!(outcome, SyncOutcome::Backfill(Submitted::Created));
                return Ok((job, created, None, Some(sync_result_pb(&outcome))));
            }
            let (job, how, fidelity) =
                submit_spec(self.store.as_ref(), self.connectors.as_ref(), spec, &origin, &base_dir).await?;
            Ok((job, how == Submitted::Created, Some(fidelity), None))
        }
        .await;
        let outcome = match submitted {
            Ok((job, created, fidelity, sync)) => {
                self.metrics.jobs_submitted.inc();
                let summary = self.store.summary(&job.job_id).await.map_err(status)?;
                let lossy = fidelity
                    .iter()
                    .flat_map(|f| &f.columns)
                    .filter(|c| !c.lossy_steps.is_empty())
                    .count();
                info!(job = %job.job_id, chunks = summary.chunks, created, sync = r.sync, lossy_columns = lossy, "job submitted");
                if let (Some(dir), Some(fidelity)) = (&self.reports_dir, &fidelity) {
                    // The job is stored; a report that cannot be written is worth a warning,
                    // not a refused submission (the client gets the report either way).
                    match fidelity.write(dir) {
                        Ok(path) => info!(job = %job.job_id, path = %path.display(), "type-fidelity report written"),
                        Err(e) => warn!(job = %job.job_id, error = %e, "could not write the type-fidelity report"),
                    }
                }
                pb::submit_job_response::Outcome::Job(pb::SubmittedJob {
                    status: Some(job_status(&job, &summary)),
                    created,
                    type_fidelity: fidelity.as_ref().map(fidelity_pb),
                    sync,
                })
            }
            // A broken state database is the coordinator's problem, not the spec's.
            Err(e @ (CoordinatorError::Database { .. } | CoordinatorError::Task(_))) => return Err(status(e)),
            Err(e) => {
                self.metrics.jobs_rejected.inc();
                info!(origin = %origin, kind = %job_error(&e).kind, error = %e, "job spec refused");
                pb::submit_job_response::Outcome::Rejected(job_error(&e))
            }
        };
        Ok(Response::new(pb::SubmitJobResponse { outcome: Some(outcome) }))
    }

    async fn get_job_status(
        &self,
        req: Request<pb::GetJobStatusRequest>,
    ) -> Result<Response<pb::GetJobStatusResponse>, Status> {
        let r = req.into_inner();
        let job = self.store.job(&r.job_id).await.map_err(status)?;
        let summary = self.store.summary(&r.job_id).await.map_err(status)?;
        let chunks = if r.include_chunks {
            self.store.chunks(&r.job_id).await.map_err(status)?
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::GetJobStatusResponse {
            status: Some(self.job_status_now(&job, &summary)),
            chunks: chunks.iter().map(chunk_status).collect(),
        }))
    }

    async fn list_jobs(&self, _req: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let jobs = self
            .store
            .jobs()
            .await
            .map_err(status)?
            .iter()
            .map(|(job, summary)| self.job_status_now(job, summary))
            .collect();
        let pools = self.pools.snapshot().iter().map(crate::pools::pool_status).collect();
        Ok(Response::new(pb::ListJobsResponse { jobs, pools }))
    }

    async fn lease_tokens(
        &self,
        req: Request<pb::LeaseTokensRequest>,
    ) -> Result<Response<pb::LeaseTokensResponse>, Status> {
        self.pools.lease_rpc(req.into_inner()).map(Response::new)
    }

    async fn cancel_job(&self, req: Request<pb::CancelJobRequest>) -> Result<Response<pb::CancelJobResponse>, Status> {
        let job_id = req.into_inner().job_id;
        let n = self.store.cancel(&job_id).await.map_err(status)?;
        let job = self.store.job(&job_id).await.map_err(status)?;
        let summary = self.store.summary(&job_id).await.map_err(status)?;
        info!(job = %job.job_id, chunks = n, "job cancelled");
        self.metrics.jobs_cancelled.inc();
        Ok(Response::new(pb::CancelJobResponse {
            chunks_cancelled: n,
            status: Some(job_status(&job, &summary)),
        }))
    }

    async fn preview_chunk(
        &self,
        req: Request<pb::PreviewChunkRequest>,
    ) -> Result<Response<pb::PreviewChunkResponse>, Status> {
        let r = req.into_inner();
        let job = self.store.job(&r.job_id).await.map_err(status)?;
        let chunk = self
            .store
            .chunks(&r.job_id)
            .await
            .map_err(status)?
            .into_iter()
            .find(|c| c.chunk_id == r.chunk_id)
            .ok_or_else(|| Status::not_found(format!("job `{}` has no chunk {}", r.job_id, r.chunk_id)))?;
        let flight_url = self.flight.pick().ok_or_else(no_flight_worker)?;
        let ticket = pb::PreviewTicket {
            job_id: job.job_id.clone(),
            chunk_id: chunk.chunk_id,
            range: Some(pb::CursorRange {
                from: chunk.range.from,
                to: chunk.range.to,
            }),
            job_spec_toml: job.spec_toml.clone(),
            spec_base_dir: job.base_dir.display().to_string(),
            limit: if r.limit == 0 { 20 } else { r.limit.min(100_000) },
        };
        info!(job = %job.job_id, chunk = chunk.chunk_id, worker = %flight_url, "preview ticket issued");
        let ticket = pb::FlightTicket {
            kind: Some(pb::flight_ticket::Kind::Preview(ticket)),
        };
        Ok(Response::new(pb::PreviewChunkResponse {
            flight_url,
            ticket: prost::Message::encode_to_vec(&ticket),
        }))
    }

    async fn find_data_plane(
        &self,
        _req: Request<pb::FindDataPlaneRequest>,
    ) -> Result<Response<pb::FindDataPlaneResponse>, Status> {
        let flight_url = self.flight.pick().ok_or_else(no_flight_worker)?;
        info!(worker = %flight_url, "data plane offered");
        Ok(Response::new(pb::FindDataPlaneResponse { flight_url }))
    }
}

fn no_flight_worker() -> Status {
    Status::unavailable(
        "no worker serving Arrow Flight has asked for work recently; start workers with --flight-listen",
    )
}

#[cfg(test)]
mod tests {
    use backhaul_core::cursor::{CursorKind, CursorRange};

    use super::*;

    fn job(cancelled: bool) -> JobRow {
        JobRow {
            job_id: "j".into(),
            spec_toml: String::new(),
            base_dir: PathBuf::new(),
            cursor_kind: CursorKind::Integer,
            range: CursorRange::new(0, 10),
            created_at_us: 1,
            cancelled_at_us: cancelled.then_some(2),
            synced_at_us: None,
        }
    }

    #[test]
    fn a_job_status_carries_its_summary_both_ways() {
        let summary = JobSummary {
            chunks: 12,
            pending: 1,
            leased: 2,
            committed: 3,
            parked: 4,
            cancelled: 2,
            committed_rows: 5,
            committed_bytes: 6,
            in_flight_rows: 7,
            estimated_rows: 8,
            estimated_bytes: 9,
            failures: 10,
            dead_letters: 11,
        };
        let back = JobSummary::from(&job_status(&job(false), &summary));
        assert_eq!(format!("{back:?}"), format!("{summary:?}"));
    }

    #[test]
    fn one_rule_names_a_jobs_state() {
        let with = |committed, parked| JobSummary {
            chunks: 2,
            committed,
            parked,
            pending: 2 - committed - parked,
            ..JobSummary::default()
        };
        assert_eq!(job_state(&job(false), &with(2, 0)), pb::JobState::Succeeded);
        assert_eq!(job_state(&job(false), &with(1, 1)), pb::JobState::Parked);
        assert_eq!(job_state(&job(false), &with(1, 0)), pb::JobState::Running);
        assert_eq!(job_state(&job(true), &with(1, 0)), pb::JobState::Cancelled);
        // An empty plan has nothing left to do.
        assert_eq!(job_state(&job(false), &JobSummary::default()), pb::JobState::Succeeded);
        assert!(crate::page::index_page(&[(job(false), with(1, 1))], &[]).contains("<td>parked</td>"));
    }
}
