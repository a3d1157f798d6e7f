//! The lease loop: pull a chunk, run it under heartbeats, report the outcome, repeat.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use backhaul_core::connector::Connectors;
use backhaul_core::cursor::CursorRange;
use backhaul_core::{Error, ErrorClass};
use backhaul_proto::v1 as pb;
use backhaul_proto::v1::coordinator_client::CoordinatorClient;
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::error::{Result, WorkerError};
use crate::runner::{ChunkProgress, ChunkTask, JobContext, run_chunk};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Name reported to the coordinator and in logs.
    pub worker_id: String,
    /// Chunks run at once by this worker.
    pub slots: usize,
    /// Only lease chunks of this job, and stop when it is finished; `None` serves forever.
    pub job_filter: Option<String>,
    /// Where part files are spooled before staging.
    pub spool_dir: PathBuf,
}

/// A worker connected to one coordinator.
pub struct Worker {
    client: CoordinatorClient<Channel>,
    connectors: Arc<dyn Connectors>,
    config: WorkerConfig,
    jobs: Mutex<HashMap<String, Arc<JobContext>>>,
}

impl Worker {
    /// Connects to the coordinator at `url` (e.g. `http://127.0.0.1:7070`).
    pub async fn connect(url: String, connectors: Arc<dyn Connectors>, config: WorkerConfig) -> Result<Self> {
        let client = CoordinatorClient::connect(url).await?;
        Ok(Worker {
            client,
            connectors,
            config,
            jobs: Mutex::new(HashMap::new()),
        })
    }

    /// Runs the slots until the filtered job is finished or `cancel` fires. On cancel, running
    /// chunks are abandoned and handed back as transient failures, so they run again elsewhere.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<()> {
        let mut slots = JoinSet::new();
        for slot in 0..self.config.slots.max(1) {
            let this = self.clone();
            let cancel = cancel.clone();
            slots.spawn(async move { this.slot_loop(slot, cancel).await });
        }
        let mut first_error = None;
        while let Some(joined) = slots.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(WorkerError::Task(e.to_string()));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn slot_loop(&self, slot: usize, cancel: CancellationToken) -> Result<()> {
        let worker_id = format!("{}#{slot}", self.config.worker_id);
        let mut rpc_failures = 0u32;
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let req = pb::LeaseChunkRequest {
                worker_id: worker_id.clone(),
                job_id: self.config.job_filter.clone().unwrap_or_default(),
            };
            let resp = match self.client.clone().lease_chunk(req).await {
                Ok(r) => {
                    rpc_failures = 0;
                    r.into_inner()
                }
                Err(status) => {
                    rpc_failures += 1;
                    if rpc_failures > 8 {
                        return Err(status.into());
                    }
                    warn!(worker = %worker_id, error = %status, "lease request failed; retrying");
                    sleep_or_cancel(backoff(rpc_failures), &cancel).await;
                    continue;
                }
            };
            match resp.outcome {
                Some(pb::lease_chunk_response::Outcome::Lease(lease)) => {
                    self.run_lease(&worker_id, lease, &cancel).await
                }
                Some(pb::lease_chunk_response::Outcome::NoWork(nw)) => {
                    if nw.job_finished && self.config.job_filter.is_some() {
                        return Ok(());
                    }
                    sleep_or_cancel(Duration::from_millis(u64::from(nw.retry_after_ms.max(50))), &cancel).await;
                }
                None => return Err(tonic::Status::internal("lease response without outcome").into()),
            }
        }
    }

    async fn context(&self, lease: &pb::ChunkLease) -> Result<Arc<JobContext>> {
        let mut jobs = self.jobs.lock().await;
        if let Some(ctx) = jobs.get(&lease.job_id) {
            return Ok(ctx.clone());
        }
        let ctx = Arc::new(
            JobContext::build(
                &lease.job_id,
                &lease.job_spec_toml,
                Path::new(&lease.spec_base_dir),
                self.connectors.as_ref(),
            )
            .await?,
        );
        jobs.insert(lease.job_id.clone(), ctx.clone());
        Ok(ctx)
    }

    async fn run_lease(&self, worker_id: &str, lease: pb::ChunkLease, cancel: &CancellationToken) {
        let range = lease
            .range
            .map(|r| CursorRange { from: r.from, to: r.to })
            .unwrap_or(CursorRange { from: 0, to: 0 });
        let task = ChunkTask {
            chunk_id: lease.chunk_id,
            attempt: lease.attempt,
            range,
        };
        let progress = Arc::new(ChunkProgress::default());
        let ttl = Duration::from_millis(u64::from(lease.lease_ttl_ms.max(300)));
        let work = async {
            let ctx = self.context(&lease).await?;
            run_chunk(&ctx, &task, &self.config.spool_dir, progress.clone()).await
        };
        let outcome = tokio::select! {
            r = work => r,
            e = self.keep_lease(&lease.lease_id, ttl, progress.clone()) => Err(e),
            _ = cancel.cancelled() => Err(Error::Cancelled.into()),
        };
        let mut client = self.client.clone();
        match outcome {
            Ok(out) => {
                let files = out
                    .files
                    .iter()
                    .map(|f| pb::OutputFile {
                        path: f.path.clone(),
                        bytes: f.bytes,
                        rows: f.rows,
                    })
                    .collect();
                let output = pb::ChunkOutput {
                    files,
                    extracted_rows: out.extracted.rows,
                    extracted_checksum: out.extracted.checksum,
                    committed_rows: out.committed.rows,
                    committed_checksum: out.committed.checksum,
                };
                match client
                    .complete_chunk(pb::CompleteChunkRequest {
                        lease_id: lease.lease_id.clone(),
                        output: Some(output),
                    })
                    .await
                {
                    Ok(_) => {
                        info!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, attempt = lease.attempt, rows = out.extracted.rows, "chunk committed")
                    }
                    Err(s) => {
                        warn!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, error = %s, "coordinator refused completion")
                    }
                }
            }
            Err(e) => {
                let class = match e.class() {
                    ErrorClass::Transient => pb::ErrorClass::Transient,
                    ErrorClass::Throttled => pb::ErrorClass::Throttled,
                    ErrorClass::Permanent => pb::ErrorClass::Permanent,
                };
                // A cancelled chunk is handed back, not failed: shutdowns must not park chunks.
                let released = matches!(e, WorkerError::Core(Error::Cancelled));
                if released {
                    info!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, "handing chunk back");
                } else {
                    warn!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, attempt = lease.attempt, class = e.class().as_str(), error = %e, "chunk failed");
                }
                let error = pb::ChunkError {
                    class: class as i32,
                    kind: e.kind().into(),
                    message: e.to_string(),
                };
                if let Err(s) = client
                    .fail_chunk(pb::FailChunkRequest {
                        lease_id: lease.lease_id.clone(),
                        error: Some(error),
                        released,
                    })
                    .await
                {
                    warn!(worker = %worker_id, chunk = lease.chunk_id, error = %s, "could not report failure; the lease will expire");
                }
            }
        }
    }

    /// Heartbeats and reports progress until the lease is lost; never returns otherwise.
    /// Progress goes out twice a second (cheap, feeds progress bars); heartbeats at a quarter
    /// of the TTL, so three can be lost before the lease expires.
    async fn keep_lease(&self, lease_id: &str, ttl: Duration, progress: Arc<ChunkProgress>) -> WorkerError {
        let mut client = self.client.clone();
        let heartbeat_every = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let tick = heartbeat_every.min(Duration::from_millis(500));
        let mut last_beat = tokio::time::Instant::now();
        let mut last_ok = last_beat;
        let mut reported = (0, 0);
        loop {
            tokio::time::sleep(tick).await;
            if last_beat.elapsed() >= heartbeat_every {
                last_beat = tokio::time::Instant::now();
                match client
                    .heartbeat(pb::HeartbeatRequest {
                        lease_id: lease_id.into(),
                    })
                    .await
                {
                    Ok(_) => last_ok = last_beat,
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                        return Error::LeaseLost {
                            lease_id: lease_id.into(),
                            message: s.message().into(),
                        }
                        .into();
                    }
                    Err(s) => {
                        // Past the TTL without a heartbeat the coordinator may re-lease the chunk.
                        if last_ok.elapsed() >= ttl {
                            let message = format!("no heartbeat accepted for {ttl:?}: {s}");
                            return Error::LeaseLost {
                                lease_id: lease_id.into(),
                                message,
                            }
                            .into();
                        }
                        continue;
                    }
                }
            }
            let now = (
                progress.rows.load(Ordering::Relaxed),
                progress.bytes.load(Ordering::Relaxed),
            );
            if now != reported {
                let req = pb::ReportProgressRequest {
                    lease_id: lease_id.into(),
                    rows: now.0,
                    bytes: now.1,
                };
                if client.report_progress(req).await.is_ok() {
                    reported = now;
                }
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis((100u64 << failures.min(6)).min(5_000))
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = cancel.cancelled() => {}
    }
}
