//! The tonic service workers talk to.

use std::net::SocketAddr;
use std::time::Duration;

use backhaul_core::ErrorClass;
use backhaul_core::checksum::RowSummary;
use backhaul_core::connector::StagedFile;
use backhaul_proto::v1 as pb;
use backhaul_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::{CoordinatorError, Result};
use crate::store::{Failure, LeaseKey, NoLease, Store};

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

impl RetryPolicy {
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

/// The coordinator's gRPC service over a [`Store`].
#[derive(Clone)]
pub struct CoordinatorService {
    store: Store,
    lease_ttl: Duration,
    retry: RetryPolicy,
}

impl CoordinatorService {
    /// A service over `store`.
    pub fn new(store: Store, lease_ttl: Duration, retry: RetryPolicy) -> Self {
        CoordinatorService {
            store,
            lease_ttl,
            retry,
        }
    }

    fn ttl_ms(&self) -> u32 {
        self.lease_ttl.as_millis().min(u32::MAX as u128) as u32
    }
}

/// Binds `addr` (port 0 picks a free one) and serves until `cancel` fires. Returns the bound
/// address and the server future, which the caller awaits in its own task set.
pub async fn serve(
    service: CoordinatorService,
    addr: SocketAddr,
    cancel: CancellationToken,
) -> Result<(SocketAddr, impl std::future::Future<Output = Result<()>>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| backhaul_core::Error::io(addr.to_string(), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| backhaul_core::Error::io(addr.to_string(), e))?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let fut = async move {
        tonic::transport::Server::builder()
            .add_service(CoordinatorServer::new(service))
            .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
            .await
            .map_err(CoordinatorError::from)
    };
    Ok((local, fut))
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

fn class_from_pb(c: i32) -> ErrorClass {
    match pb::ErrorClass::try_from(c) {
        Ok(pb::ErrorClass::Transient) => ErrorClass::Transient,
        Ok(pb::ErrorClass::Throttled) => ErrorClass::Throttled,
        _ => ErrorClass::Permanent,
    }
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn lease_chunk(
        &self,
        req: Request<pb::LeaseChunkRequest>,
    ) -> Result<Response<pb::LeaseChunkResponse>, Status> {
        let req = req.into_inner();
        let ttl = self.ttl_ms();
        let filter = (!req.job_id.is_empty()).then_some(req.job_id);
        let out = self
            .store
            .call(move |s, c| s.lease(c, &req.worker_id, filter.as_deref(), ttl))
            .await
            .map_err(status)?;
        let outcome = match out {
            Ok(lease) => pb::lease_chunk_response::Outcome::Lease(pb::ChunkLease {
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
                lease_ttl_ms: ttl,
                estimated_rows: lease.chunk.estimated_rows,
                estimated_bytes: lease.chunk.estimated_bytes,
            }),
            Err(NoLease::Finished) => pb::lease_chunk_response::Outcome::NoWork(pb::NoWork {
                job_finished: true,
                retry_after_ms: 0,
            }),
            Err(NoLease::RetryAfterMs(ms)) => pb::lease_chunk_response::Outcome::NoWork(pb::NoWork {
                job_finished: false,
                retry_after_ms: ms,
            }),
        };
        Ok(Response::new(pb::LeaseChunkResponse { outcome: Some(outcome) }))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let lease_id = req.into_inner().lease_id;
        let ttl = self.ttl_ms();
        self.store
            .call(move |s, c| s.heartbeat(c, &lease_id, ttl))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::HeartbeatResponse { lease_ttl_ms: ttl }))
    }

    async fn report_progress(
        &self,
        req: Request<pb::ReportProgressRequest>,
    ) -> Result<Response<pb::ReportProgressResponse>, Status> {
        let r = req.into_inner();
        self.store
            .call(move |s, c| s.progress(c, &r.lease_id, r.rows, r.bytes))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ReportProgressResponse {}))
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
            })
            .collect();
        let extracted = RowSummary {
            rows: out.extracted_rows,
            checksum: out.extracted_checksum,
        };
        let committed = RowSummary {
            rows: out.committed_rows,
            checksum: out.committed_checksum,
        };
        self.store
            .call(move |s, c| s.complete(c, &r.lease_id, &files, extracted, committed))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CompleteChunkResponse {}))
    }

    async fn fail_chunk(&self, req: Request<pb::FailChunkRequest>) -> Result<Response<pb::FailChunkResponse>, Status> {
        let r = req.into_inner();
        if r.released {
            let lease_id = r.lease_id;
            self.store
                .call(move |s, c| s.release(c, &lease_id))
                .await
                .map_err(status)?;
            return Ok(Response::new(pb::FailChunkResponse { will_retry: true }));
        }
        let e = r
            .error
            .ok_or_else(|| Status::invalid_argument("fail_chunk needs an error"))?;
        let failure = Failure {
            class: class_from_pb(e.class),
            kind: e.kind,
            message: e.message,
        };
        let policy = self.retry.clone();
        let lease_id = r.lease_id;
        let will_retry = self
            .store
            .call(move |s, c| s.fail(c, &lease_id, &failure, &policy))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::FailChunkResponse { will_retry }))
    }
}
