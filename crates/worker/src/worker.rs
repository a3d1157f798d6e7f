//! The lease loop: pull a chunk, run it under heartbeats, report the outcome, repeat.
//!
//! Shutdown has two stages. `drain` stops asking for new chunks and lets running ones finish;
//! `abort` stops running chunks too and hands them back to the coordinator, which leases them
//! again at once without counting a failure. A worker that loses its coordinator keeps
//! retrying with capped backoff, and retries the report of a finished chunk until the
//! coordinator answers: the coordinator alone decides whether that report still counts.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backhaul_core::Error;
use backhaul_core::connector::{Connectors, Source};
use backhaul_core::cursor::CursorRange;
use backhaul_core::spec::JobSpec;
use backhaul_proto::Client;
use backhaul_proto::v1 as pb;
use tokio::sync::{Mutex, MutexGuard, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{Result, WorkerError};
use crate::job_cache::{IDLE_EVICTION, InUse, JobCache};
use crate::metrics::WorkerMetrics;
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
    /// Consecutive failed lease requests after which the worker gives up; `None` retries
    /// forever (a distributed worker waits out coordinator restarts).
    pub give_up_after: Option<u32>,
    /// How long the completion or failure of a finished chunk is retried while the
    /// coordinator cannot be reached.
    pub report_deadline: Duration,
    /// This worker's Arrow Flight endpoint for previews, announced when asking for work.
    pub flight_url: Option<String>,
}

impl WorkerConfig {
    /// Defaults for `worker_id`: one slot, any job, the system temp dir, retrying forever.
    pub fn new(worker_id: impl Into<String>) -> Self {
        WorkerConfig {
            worker_id: worker_id.into(),
            slots: 1,
            job_filter: None,
            spool_dir: std::env::temp_dir(),
            give_up_after: None,
            report_deadline: Duration::from_secs(600),
            flight_url: None,
        }
    }
}

/// The two stages of stopping a worker; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop leasing; finish running chunks.
    pub drain: CancellationToken,
    /// Hand running chunks back now.
    pub abort: CancellationToken,
}

impl Shutdown {
    /// One token for both stages: cancelling it stops leasing and hands chunks back at once.
    pub fn immediate(token: CancellationToken) -> Self {
        Shutdown {
            drain: token.clone(),
            abort: token,
        }
    }
}

/// A worker connected to one coordinator.
pub struct Worker {
    client: Client,
    connectors: Arc<dyn Connectors>,
    config: WorkerConfig,
    jobs: JobCache<JobContext>,
    metrics: Arc<WorkerMetrics>,
    /// Idle slots share one lease request: the slot whose turn it is asks for a lease per free
    /// slot and leaves the extra ones in `spare_leases` for the others.
    asking: Mutex<()>,
    /// Leases asked for on behalf of other slots, not yet running.
    spare_leases: std::sync::Mutex<VecDeque<pb::ChunkLease>>,
    /// Wakes slots waiting out a "no work" answer when spare leases arrive.
    spares_arrived: Notify,
    /// Slots whose loop still runs.
    live_slots: AtomicUsize,
}

/// Transport-level failures a retry can fix; anything else is the coordinator's answer.
fn retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::Aborted
            | tonic::Code::ResourceExhausted
    )
}

impl Worker {
    /// A worker using `client` (see [`backhaul_proto::ClientConfig::connect_lazy`]).
    pub fn new(client: Client, connectors: Arc<dyn Connectors>, config: WorkerConfig) -> Self {
        Worker {
            client,
            connectors,
            config,
            jobs: JobCache::new(IDLE_EVICTION),
            metrics: Arc::new(WorkerMetrics::new()),
            asking: Mutex::new(()),
            spare_leases: std::sync::Mutex::new(VecDeque::new()),
            spares_arrived: Notify::new(),
            live_slots: AtomicUsize::new(0),
        }
    }

    /// This worker's counters (shared with `/metrics`).
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.metrics.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Runs the slots until the filtered job is finished or `shutdown` says stop.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) -> Result<()> {
        let mut slots = JoinSet::new();
        self.live_slots.fetch_add(self.config.slots.max(1), Ordering::Relaxed);
        for slot in 0..self.config.slots.max(1) {
            let this = self.clone();
            let shutdown = shutdown.clone();
            slots.spawn(async move { this.slot_loop(slot, shutdown).await });
        }
        let mut first_error = None;
        while let Some(joined) = slots.join_next().await {
            self.live_slots.fetch_sub(1, Ordering::Relaxed);
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
        // Spare leases nobody took (every slot stopped): hand them back now, not at expiry.
        self.hand_back_spares(&self.config.worker_id).await;
        first_error.map_or(Ok(()), Err)
    }

    async fn slot_loop(&self, slot: usize, shutdown: Shutdown) -> Result<()> {
        let worker_id = format!("{}#{slot}", self.config.worker_id);
        let mut rpc_failures = 0u32;
        loop {
            if shutdown.drain.is_cancelled() {
                self.hand_back_spares(&worker_id).await;
                return Ok(());
            }
            let turn = tokio::select! {
                turn = self.asking.lock() => turn,
                _ = shutdown.drain.cancelled() => continue,
            };
            if let Some(lease) = self.take_spare() {
                self.run_leased(&worker_id, lease, turn, &shutdown).await;
                continue;
            }
            // One lease per free slot (this one included); the others are on their way to
            // their turn and will find theirs among the spares. Slots count as busy from
            // before they give up the turn, so this never asks for more than will run.
            let busy = self.metrics.busy_slots.load(Ordering::Relaxed).max(0) as usize;
            let free = self.live_slots.load(Ordering::Relaxed).saturating_sub(busy).max(1);
            let req = pb::LeaseChunkRequest {
                // Leases taken for several slots are the worker's, not this slot's.
                worker_id: if free > 1 {
                    self.config.worker_id.clone()
                } else {
                    worker_id.clone()
                },
                job_id: self.config.job_filter.clone().unwrap_or_default(),
                flight_url: self.config.flight_url.clone().unwrap_or_default(),
                max_leases: free as u32,
            };
            let asked = Instant::now();
            let resp = match self.client.clone().lease_chunk(req).await {
                Ok(r) => {
                    self.metrics.lease_latency.observe(asked.elapsed());
                    if rpc_failures > 0 {
                        info!(worker = %worker_id, "coordinator reachable again");
                    }
                    rpc_failures = 0;
                    r.into_inner()
                }
                Err(status) => {
                    drop(turn);
                    rpc_failures += 1;
                    if self.config.give_up_after.is_some_and(|n| rpc_failures > n) {
                        return Err(status.into());
                    }
                    self.metrics.rpc_retries.inc();
                    let wait = backoff(rpc_failures);
                    warn!(worker = %worker_id, code = ?status.code(), error = %status.message(), retry_in = ?wait, "lease request failed; retrying");
                    sleep_or_cancel(wait, &shutdown.drain).await;
                    continue;
                }
            };
            match resp.outcome {
                Some(pb::lease_chunk_response::Outcome::Lease(lease)) => {
                    self.metrics.leases.add(1 + resp.more_leases.len() as u64);
                    if !resp.more_leases.is_empty() {
                        self.spare_leases
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend(resp.more_leases);
                        self.spares_arrived.notify_waiters();
                    }
                    self.run_leased(&worker_id, lease, turn, &shutdown).await;
                }
                Some(pb::lease_chunk_response::Outcome::NoWork(nw)) => {
                    drop(turn);
                    if nw.job_finished && self.config.job_filter.is_some() {
                        return Ok(());
                    }
                    tokio::select! {
                        _ = sleep_or_cancel(Duration::from_millis(u64::from(nw.retry_after_ms.max(50))), &shutdown.drain) => {}
                        _ = self.spares_arrived.notified() => {}
                    }
                }
                None => return Err(tonic::Status::internal("lease response without outcome").into()),
            }
        }
    }

    /// Runs a lease this slot holds, or hands it back when the worker is draining. The slot
    /// counts as busy before it gives up its turn to ask.
    async fn run_leased(&self, worker_id: &str, lease: pb::ChunkLease, turn: MutexGuard<'_, ()>, shutdown: &Shutdown) {
        if shutdown.drain.is_cancelled() {
            drop(turn);
            // Drained while the lease was on its way: give it straight back.
            self.hand_back(worker_id, &lease, &shutdown.abort).await;
            return;
        }
        self.metrics.busy_slots.fetch_add(1, Ordering::Relaxed);
        drop(turn);
        self.run_lease(worker_id, lease, &shutdown.abort).await;
        self.metrics.busy_slots.fetch_sub(1, Ordering::Relaxed);
    }

    fn take_spare(&self) -> Option<pb::ChunkLease> {
        self.spare_leases.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }

    /// Hands back every spare lease, each within [`HAND_BACK_GRACE`].
    async fn hand_back_spares(&self, worker_id: &str) {
        while let Some(lease) = self.take_spare() {
            let grace = CancellationToken::new();
            tokio::select! {
                _ = self.hand_back(worker_id, &lease, &grace) => {}
                _ = tokio::time::sleep(HAND_BACK_GRACE) => {
                    warn!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, "coordinator did not take the chunk back in time; its lease will expire");
                }
            }
        }
    }

    /// The job's context (source, destination, stage), built once per job and reused while
    /// the job keeps running chunks here (see [`crate::job_cache`]).
    pub async fn job_context(&self, job_id: &str, spec_toml: &str, base_dir: &Path) -> Result<Arc<JobContext>> {
        Ok(self.lend_job_context(job_id, spec_toml, base_dir).await?.clone())
    }

    /// [`Worker::job_context`], counting the job as running until the result is dropped.
    async fn lend_job_context(&self, job_id: &str, spec_toml: &str, base_dir: &Path) -> Result<InUse<JobContext>> {
        let connectors = self.connectors.clone();
        self.jobs
            .get(job_id, Instant::now(), || async move {
                JobContext::build(job_id, spec_toml, base_dir, connectors.as_ref()).await
            })
            .await
    }

    /// The source a spec names, built with this worker's connectors (and so its credentials
    /// and network path), for data-plane calls that need no stored job.
    pub fn open_source(&self, spec_toml: &str, origin: &str, base_dir: &Path) -> Result<Arc<dyn Source>, Error> {
        let spec = JobSpec::from_toml(spec_toml, origin)?;
        let mut checked = self.connectors.check(&spec, origin)?;
        checked.resolve_paths(base_dir);
        checked.source.build()
    }

    async fn context(&self, lease: &pb::ChunkLease) -> Result<InUse<JobContext>> {
        self.lend_job_context(&lease.job_id, &lease.job_spec_toml, Path::new(&lease.spec_base_dir))
            .await
    }

    async fn hand_back(&self, worker_id: &str, lease: &pb::ChunkLease, abort: &CancellationToken) {
        let req = pb::FailChunkRequest {
            lease_id: lease.lease_id.clone(),
            error: Some(pb::ChunkError {
                class: pb::ErrorClass::Transient as i32,
                kind: Error::Cancelled.kind().into(),
                message: "worker shutting down".into(),
            }),
            released: true,
            breaker: None,
        };
        match self
            .report(abort, |mut c| {
                let req = req.clone();
                async move { c.fail_chunk(req).await }
            })
            .await
        {
            Ok(_) => {
                self.metrics.released.inc();
                info!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, attempt = lease.attempt, "handed chunk back");
            }
            Err(s) => {
                warn!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, error = %s, "could not hand the chunk back; its lease will expire")
            }
        }
    }

    /// Calls the coordinator, retrying transport failures with backoff until it answers, the
    /// report deadline passes, or `abort` fires.
    async fn report<T, F, Fut>(&self, abort: &CancellationToken, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.config.report_deadline;
        let mut failures = 0;
        loop {
            match call(self.client.clone()).await {
                Ok(r) => {
                    if failures > 0 {
                        info!(worker = %self.config.worker_id, "coordinator reachable again");
                    }
                    return Ok(r.into_inner());
                }
                Err(s) if retryable(&s) && Instant::now() < deadline && !abort.is_cancelled() => {
                    failures += 1;
                    self.metrics.rpc_retries.inc();
                    if failures == 1 {
                        warn!(worker = %self.config.worker_id, code = ?s.code(), error = %s.message(), "coordinator call failed; retrying until it answers");
                    } else {
                        debug!(code = ?s.code(), error = %s.message(), "coordinator call failed; retrying");
                    }
                    sleep_or_cancel(backoff(failures), abort).await;
                }
                Err(s) => return Err(s),
            }
        }
    }

    async fn run_lease(&self, worker_id: &str, lease: pb::ChunkLease, abort: &CancellationToken) {
        let started = Instant::now();
        debug!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, attempt = lease.attempt, "chunk leased");
        let progress = Arc::new(ChunkProgress::default());
        let ttl = Duration::from_millis(u64::from(lease.lease_ttl_ms.max(300)));
        // The job's source, once built: its circuit breaker goes out with the chunk's report.
        let mut source = None;
        let outcome = match chunk_task(&lease) {
            // Reported as a failure below; nothing runs, so nothing can be committed.
            Err(e) => Err(e),
            Ok(task) => {
                let work = async {
                    let ctx = self.context(&lease).await?;
                    source = Some(ctx.source.clone());
                    run_chunk(&ctx, &task, &self.config.spool_dir, progress.clone()).await
                };
                tokio::select! {
                    r = work => r,
                    e = self.keep_lease(&lease.lease_id, ttl, progress.clone()) => Err(e),
                    _ = abort.cancelled() => Err(Error::Cancelled.into()),
                }
            }
        };
        let breaker = source
            .and_then(|s| s.circuit_breaker())
            .map(|b| pb::SourceBreaker::from(&b));
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
                let req = pb::CompleteChunkRequest {
                    lease_id: lease.lease_id.clone(),
                    output: Some(pb::ChunkOutput {
                        files,
                        extracted_rows: out.extracted.summary.rows,
                        extracted_checksum: out.extracted.summary.checksum,
                        committed_rows: out.committed.rows,
                        // Read by coordinators that predate proofs; they can only check exact ones.
                        committed_checksum: out.committed.checksum.unwrap_or_default(),
                        extracted_fingerprint_json: backhaul_proto::proof::fingerprint_json(&out.extracted.fingerprint),
                        proof: Some(pb::ChunkProof::from(&out.committed)),
                        dead_letters: out.facts.dead_letters,
                    }),
                    breaker,
                };
                let bytes: u64 = out.files.iter().map(|f| f.bytes).sum();
                match self
                    .report(abort, |mut c| {
                        let req = req.clone();
                        async move { c.complete_chunk(req).await }
                    })
                    .await
                {
                    Ok(_) => {
                        self.metrics.committed.inc();
                        self.metrics.rows.add(out.extracted.summary.rows);
                        self.metrics.bytes.add(bytes);
                        self.metrics.chunk_seconds.observe(started.elapsed());
                        info!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, attempt = lease.attempt, rows = out.extracted.summary.rows, dead_letters = out.facts.dead_letters, proof = %out.committed.level, "chunk committed")
                    }
                    Err(s) => {
                        self.metrics.completions_refused.inc();
                        warn!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, attempt = lease.attempt, code = ?s.code(), error = %s.message(), "coordinator refused completion")
                    }
                }
            }
            Err(WorkerError::Core(Error::LeaseLost { message, .. })) => {
                // Nothing to report: the lease is gone, whoever holds the chunk now reports it.
                self.metrics.leases_lost.inc();
                warn!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, attempt = lease.attempt, reason = %message, "lease lost; chunk abandoned");
            }
            Err(WorkerError::Core(Error::Cancelled)) => {
                // A cancelled chunk is handed back, not failed: shutdowns must not park chunks.
                // The hand-back gets its own short grace, since `abort` has already fired.
                let grace = CancellationToken::new();
                tokio::select! {
                    _ = self.hand_back(worker_id, &lease, &grace) => {}
                    _ = tokio::time::sleep(HAND_BACK_GRACE) => {
                        warn!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, "coordinator did not take the chunk back in time; its lease will expire");
                    }
                }
            }
            Err(e) => {
                let class = e.class();
                self.metrics.failure(class);
                warn!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, attempt = lease.attempt, class = class.as_str(), kind = e.kind(), error = %e, "chunk failed");
                let req = pb::FailChunkRequest {
                    lease_id: lease.lease_id.clone(),
                    error: Some(pb::ChunkError {
                        class: pb::ErrorClass::from(class) as i32,
                        kind: e.kind().into(),
                        message: e.to_string(),
                    }),
                    released: false,
                    breaker,
                };
                if let Err(s) = self
                    .report(abort, |mut c| {
                        let req = req.clone();
                        async move { c.fail_chunk(req).await }
                    })
                    .await
                {
                    warn!(worker = %worker_id, job = %lease.job_id, chunk = lease.chunk_id, code = ?s.code(), error = %s.message(), "could not report failure; the lease will expire");
                }
            }
        }
    }

    /// Heartbeats and reports progress until the lease is lost; never returns otherwise.
    /// Progress goes out twice a second (cheap, feeds progress bars); heartbeats at a quarter
    /// of the TTL, so three can be lost before the lease expires. A heartbeat that gets no
    /// answer within half the TTL counts as lost; once none was accepted for a whole TTL the
    /// coordinator may have leased the chunk to someone else, so the worker stops it.
    async fn keep_lease(&self, lease_id: &str, ttl: Duration, progress: Arc<ChunkProgress>) -> WorkerError {
        let mut client = self.client.clone();
        let heartbeat_every = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let call_timeout = (ttl / 2).max(Duration::from_millis(200));
        let tick = heartbeat_every.min(Duration::from_millis(500));
        let mut last_beat = tokio::time::Instant::now();
        let mut last_ok = last_beat;
        let mut reported = (0, 0);
        let mut last_report = last_beat;
        loop {
            tokio::time::sleep(tick).await;
            if last_beat.elapsed() >= heartbeat_every {
                last_beat = tokio::time::Instant::now();
                let beat = client.heartbeat(pb::HeartbeatRequest {
                    lease_id: lease_id.into(),
                });
                let answer = tokio::time::timeout(call_timeout, beat)
                    .await
                    .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("heartbeat unanswered")));
                match answer {
                    Ok(_) => last_ok = last_beat,
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                        return Error::LeaseLost {
                            lease_id: lease_id.into(),
                            message: s.message().into(),
                        }
                        .into();
                    }
                    Err(s) => {
                        if last_ok.elapsed() >= ttl {
                            let message = format!("no heartbeat accepted for {ttl:?}: {}", s.message());
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
            // With splitting on, unchanged progress still goes out now and then: its answer
            // says whether workers wait, which matters most when the source is slow.
            let quiet_due = last_report.elapsed() >= QUIET_REPORT_EVERY && progress.bounds.lock().await.is_some();
            if now != reported || quiet_due {
                let req = pb::ReportProgressRequest {
                    lease_id: lease_id.into(),
                    rows: now.0,
                    bytes: now.1,
                };
                if let Ok(Ok(answer)) = tokio::time::timeout(call_timeout, client.report_progress(req)).await {
                    reported = now;
                    last_report = tokio::time::Instant::now();
                    if answer.into_inner().split_wanted
                        && let Err(e) = self.cut_tail(lease_id, &progress, call_timeout, ttl).await
                    {
                        return e;
                    }
                }
            }
        }
    }

    /// Cuts the unread tail off the chunk of `lease_id` when the rows so far predict one worth
    /// a chunk of its own ([`crate::split`]). Holds the chunk's bounds until the coordinator
    /// has answered, so the feed passes no row meanwhile. Asking again is safe (the same point
    /// gets the same answer); with no answer within the TTL the worker can no longer know
    /// which range it owns, so it gives the chunk up.
    async fn cut_tail(
        &self,
        lease_id: &str,
        progress: &ChunkProgress,
        call_timeout: Duration,
        ttl: Duration,
    ) -> Result<(), WorkerError> {
        let mut bounds = progress.bounds.lock().await;
        let Some(b) = bounds.as_mut() else {
            return Ok(());
        };
        let Some(at) = b.split_point() else {
            return Ok(());
        };
        let started = tokio::time::Instant::now();
        let mut failures = 0;
        let answer = loop {
            let req = pb::SplitChunkRequest {
                lease_id: lease_id.into(),
                at,
            };
            let status = match tokio::time::timeout(call_timeout, self.client.clone().split_chunk(req)).await {
                Ok(Ok(answer)) => break answer.into_inner(),
                Ok(Err(s)) => s,
                Err(_) => tonic::Status::deadline_exceeded("split request unanswered"),
            };
            match status.code() {
                tonic::Code::FailedPrecondition => {
                    return Err(Error::LeaseLost {
                        lease_id: lease_id.into(),
                        message: status.message().into(),
                    }
                    .into());
                }
                // A coordinator that predates splitting (it would not have asked).
                tonic::Code::Unimplemented => return Ok(()),
                _ if started.elapsed() < ttl => {
                    failures += 1;
                    tokio::time::sleep(backoff(failures)).await;
                }
                _ => {
                    return Err(Error::LeaseLost {
                        lease_id: lease_id.into(),
                        message: format!(
                            "no answer to splitting the chunk at {at} within {ttl:?} ({}); its range is unknown",
                            status.message()
                        ),
                    }
                    .into());
                }
            }
        };
        if !answer.split {
            debug!(lease = %lease_id, at, reason = %answer.refused, "coordinator did not split the chunk");
            return Ok(());
        }
        let kept = answer.range.map(|r| CursorRange { from: r.from, to: r.to });
        if kept
            != Some(CursorRange {
                from: b.range.from,
                to: at,
            })
        {
            return Err(WorkerError::Protocol(format!(
                "split of lease {lease_id} at {at} answered with range {kept:?}, not [{}, {at})",
                b.range.from
            )));
        }
        b.range.to = at;
        self.metrics.splits.inc();
        info!(lease = %lease_id, at, new_chunk = answer.new_chunk_id, "cut the unread tail off the chunk for waiting workers");
        Ok(())
    }
}

/// The chunk a lease names. A lease without a range is refused: read as `[0, 0)` it would
/// commit an empty chunk over whatever the range holds.
fn chunk_task(lease: &pb::ChunkLease) -> Result<ChunkTask> {
    let range = lease.range.ok_or_else(|| {
        WorkerError::Protocol(format!(
            "lease {} (job {}, chunk {}) has no cursor range; refusing to run it",
            lease.lease_id, lease.job_id, lease.chunk_id
        ))
    })?;
    Ok(ChunkTask {
        chunk_id: lease.chunk_id,
        attempt: lease.attempt,
        range: CursorRange {
            from: range.from,
            to: range.to,
        },
    })
}

/// How often a running chunk that may be split reports progress that did not change.
const QUIET_REPORT_EVERY: Duration = Duration::from_secs(2);

/// How long a stopping worker tries to hand a chunk back before leaving it to lease expiry.
const HAND_BACK_GRACE: Duration = Duration::from_secs(10);

/// Capped exponential backoff with jitter from the clock's low bits, so workers that lost
/// the coordinator together do not all come back in the same millisecond.
pub(crate) fn backoff(failures: u32) -> Duration {
    let base = (100u64 << failures.min(6)).min(5_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 0.75 + f64::from(nanos % 1000) / 2000.0;
    Duration::from_millis((base as f64 * jitter) as u64)
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = cancel.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::AtomicU64;

    use backhaul_core::ErrorClass;
    use backhaul_core::registry::Registry;
    use backhaul_proto::ClientConfig;
    use backhaul_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
    use tonic::{Request, Response, Status};

    use super::*;

    /// A coordinator with `chunks` chunks that records what workers ask and report.
    #[derive(Default)]
    struct FakeCoordinator {
        chunks: u64,
        leased: AtomicU64,
        /// `max_leases` of every lease call that got leases.
        asked: StdMutex<Vec<u32>>,
        /// `(lease id, released)` of every FailChunk.
        reported: StdMutex<Vec<(String, bool)>>,
        /// Drained while the first lease call is answered, when set.
        drain: Option<CancellationToken>,
        /// Leases leave out their range, as a broken coordinator might.
        no_range: bool,
        /// `(class, kind)` of every failure reported.
        errors: StdMutex<Vec<(ErrorClass, String)>>,
        /// Answers to SplitChunk, in order (unimplemented once they run out).
        split_answers: StdMutex<VecDeque<Result<pb::SplitChunkResponse, Status>>>,
        /// `at` of every SplitChunk.
        split_asked: StdMutex<Vec<i64>>,
    }

    #[tonic::async_trait]
    impl Coordinator for FakeCoordinator {
        async fn lease_chunk(
            &self,
            req: Request<pb::LeaseChunkRequest>,
        ) -> Result<Response<pb::LeaseChunkResponse>, Status> {
            let max = u64::from(req.get_ref().max_leases.max(1));
            let first = self.leased.fetch_add(max, Ordering::SeqCst).min(self.chunks);
            let leases: Vec<pb::ChunkLease> = (first..(first + max).min(self.chunks))
                .map(|chunk_id| pb::ChunkLease {
                    lease_id: format!("j/{chunk_id}/1"),
                    job_id: "j".into(),
                    chunk_id,
                    attempt: 1,
                    job_spec_toml: "not a spec".into(),
                    lease_ttl_ms: 60_000,
                    range: (!self.no_range).then_some(pb::CursorRange {
                        from: chunk_id as i64 * 10,
                        to: chunk_id as i64 * 10 + 10,
                    }),
                    ..Default::default()
                })
                .collect();
            if leases.is_empty() {
                return Ok(Response::new(pb::LeaseChunkResponse {
                    outcome: Some(pb::lease_chunk_response::Outcome::NoWork(pb::NoWork {
                        job_finished: true,
                        retry_after_ms: 0,
                    })),
                    more_leases: vec![],
                }));
            }
            self.asked.lock().unwrap().push(req.get_ref().max_leases);
            if let Some(drain) = &self.drain {
                drain.cancel();
            }
            let mut leases = leases.into_iter();
            Ok(Response::new(pb::LeaseChunkResponse {
                outcome: leases.next().map(pb::lease_chunk_response::Outcome::Lease),
                more_leases: leases.collect(),
            }))
        }

        async fn fail_chunk(
            &self,
            req: Request<pb::FailChunkRequest>,
        ) -> Result<Response<pb::FailChunkResponse>, Status> {
            let r = req.into_inner();
            if let Some(e) = &r.error
                && !r.released
            {
                let class = backhaul_proto::error_class(e.class).expect("a typed class");
                self.errors.lock().unwrap().push((class, e.kind.clone()));
            }
            self.reported.lock().unwrap().push((r.lease_id, r.released));
            Ok(Response::new(pb::FailChunkResponse { will_retry: false }))
        }

        async fn heartbeat(&self, _: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
            Ok(Response::new(pb::HeartbeatResponse { lease_ttl_ms: 60_000 }))
        }

        async fn report_progress(
            &self,
            _: Request<pb::ReportProgressRequest>,
        ) -> Result<Response<pb::ReportProgressResponse>, Status> {
            Ok(Response::new(pb::ReportProgressResponse::default()))
        }

        async fn split_chunk(
            &self,
            req: Request<pb::SplitChunkRequest>,
        ) -> Result<Response<pb::SplitChunkResponse>, Status> {
            self.split_asked.lock().unwrap().push(req.get_ref().at);
            match self.split_answers.lock().unwrap().pop_front() {
                Some(answer) => answer.map(Response::new),
                None => Err(Status::unimplemented("no splits here")),
            }
        }

        async fn complete_chunk(
            &self,
            _: Request<pb::CompleteChunkRequest>,
        ) -> Result<Response<pb::CompleteChunkResponse>, Status> {
            Err(Status::unimplemented("no chunk can succeed here"))
        }

        async fn submit_job(
            &self,
            _: Request<pb::SubmitJobRequest>,
        ) -> Result<Response<pb::SubmitJobResponse>, Status> {
            Err(Status::unimplemented("not for workers"))
        }

        async fn get_job_status(
            &self,
            _: Request<pb::GetJobStatusRequest>,
        ) -> Result<Response<pb::GetJobStatusResponse>, Status> {
            Err(Status::unimplemented("not for workers"))
        }

        async fn list_jobs(&self, _: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
            Err(Status::unimplemented("not for workers"))
        }

        async fn cancel_job(
            &self,
            _: Request<pb::CancelJobRequest>,
        ) -> Result<Response<pb::CancelJobResponse>, Status> {
            Err(Status::unimplemented("not for workers"))
        }

        async fn preview_chunk(
            &self,
            _: Request<pb::PreviewChunkRequest>,
        ) -> Result<Response<pb::PreviewChunkResponse>, Status> {
            Err(Status::unimplemented("not for workers"))
        }

        async fn find_data_plane(
            &self,
            _: Request<pb::FindDataPlaneRequest>,
        ) -> Result<Response<pb::FindDataPlaneResponse>, Status> {
            Err(Status::unimplemented("not for workers"))
        }

        async fn lease_tokens(
            &self,
            _: Request<pb::LeaseTokensRequest>,
        ) -> Result<Response<pb::LeaseTokensResponse>, Status> {
            Err(Status::unimplemented("not for workers"))
        }
    }

    /// Runs a three-slot worker for job `j` against `fake` until it stops.
    async fn run_worker(fake: Arc<FakeCoordinator>, shutdown: Shutdown) {
        let (client, stop, mut tasks) = serve_fake(fake).await;
        let config = WorkerConfig {
            slots: 3,
            job_filter: Some("j".into()),
            give_up_after: Some(3),
            ..WorkerConfig::new("w")
        };
        // No connector kinds: every lease's spec is refused, so every chunk fails at once and is
        // reported.
        let worker = Arc::new(Worker::new(client, Arc::new(Registry::new()), config));
        let ran = tokio::time::timeout(Duration::from_secs(30), worker.run(shutdown)).await;
        stop.cancel();
        ran.expect("the worker stopped").expect("the worker ran");
        while tasks.join_next().await.is_some() {}
    }

    /// Serves `fake` on a port from the OS: a client of it, what stops it, and its task.
    async fn serve_fake(fake: Arc<FakeCoordinator>) -> (Client, CancellationToken, JoinSet<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(CoordinatorServer::from_arc(fake))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stop.clone().cancelled_owned(),
            );
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let _ = server.await;
        });
        (ClientConfig::plain(url).connect_lazy().unwrap(), stop, tasks)
    }

    /// A worker whose client talks to `fake`, and what stops the fake.
    async fn serving(fake: Arc<FakeCoordinator>) -> (Worker, CancellationToken, JoinSet<()>) {
        let (client, stop, tasks) = serve_fake(fake).await;
        let worker = Worker::new(client, Arc::new(Registry::new()), WorkerConfig::new("w"));
        (worker, stop, tasks)
    }

    /// A chunk over [0, 1000) whose first 100 rows (ids 0..100) reached the writer: the worker
    /// would cut it at 550.
    async fn running_chunk() -> ChunkProgress {
        let progress = ChunkProgress::default();
        let mut bounds = crate::split::Bounds::new(CursorRange::new(0, 1000), 10);
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
            "id",
            arrow::datatypes::DataType::Int64,
            false,
        )]));
        let ids = arrow::array::Int64Array::from_iter_values(0..100);
        let batch = arrow::array::RecordBatch::try_new(schema, vec![Arc::new(ids)]).unwrap();
        bounds.admit(batch, 0).unwrap();
        *progress.bounds.lock().await = Some(bounds);
        progress
    }

    fn split_at(to: i64) -> pb::SplitChunkResponse {
        pb::SplitChunkResponse {
            split: true,
            range: Some(pb::CursorRange { from: 0, to }),
            new_chunk_id: 7,
            refused: String::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_split_answer_is_asked_for_again_with_the_same_point() {
        let fake = Arc::new(FakeCoordinator::default());
        fake.split_answers
            .lock()
            .unwrap()
            .extend([Err(Status::unavailable("connection reset")), Ok(split_at(550))]);
        let (worker, stop, _tasks) = serving(fake.clone()).await;
        let progress = running_chunk().await;
        let (call, ttl) = (Duration::from_secs(5), Duration::from_secs(30));
        worker.cut_tail("j/0/1", &progress, call, ttl).await.unwrap();
        assert_eq!(*fake.split_asked.lock().unwrap(), [550, 550]);
        assert_eq!(
            progress.bounds.lock().await.as_ref().unwrap().range,
            CursorRange::new(0, 550)
        );
        assert_eq!(worker.metrics.splits.get(), 1);
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_split_keeps_the_range_and_odd_answers_stop_the_chunk() {
        let fake = Arc::new(FakeCoordinator::default());
        let refused = pb::SplitChunkResponse {
            refused: "an earlier lease of the chunk expired".into(),
            ..Default::default()
        };
        fake.split_answers.lock().unwrap().extend([
            Ok(refused),
            Ok(split_at(600)),
            Err(Status::failed_precondition("the chunk was leased again (attempt 2)")),
        ]);
        let (worker, stop, _tasks) = serving(fake.clone()).await;
        let progress = running_chunk().await;
        let (call, ttl) = (Duration::from_secs(5), Duration::from_secs(30));
        let whole = CursorRange::new(0, 1000);
        let range = || async { progress.bounds.lock().await.as_ref().unwrap().range };
        worker.cut_tail("j/0/1", &progress, call, ttl).await.unwrap();
        assert_eq!(range().await, whole, "refused: the chunk runs as leased");
        let odd = worker.cut_tail("j/0/1", &progress, call, ttl).await.unwrap_err();
        assert_eq!(odd.kind(), "protocol", "{odd}");
        assert_eq!(range().await, whole);
        let lost = worker.cut_tail("j/0/1", &progress, call, ttl).await.unwrap_err();
        assert!(matches!(lost, WorkerError::Core(Error::LeaseLost { .. })), "{lost}");
        assert_eq!(range().await, whole);
        // A coordinator that keeps failing: after the TTL the range is unknown, so the chunk
        // is given up.
        fake.split_answers
            .lock()
            .unwrap()
            .extend((0..20).map(|_| Err(Status::unavailable("connection reset"))));
        let gone = worker
            .cut_tail(
                "j/0/1",
                &progress,
                Duration::from_millis(100),
                Duration::from_millis(300),
            )
            .await
            .unwrap_err();
        assert!(matches!(gone, WorkerError::Core(Error::LeaseLost { .. })), "{gone}");
        assert!(gone.to_string().contains("range is unknown"), "{gone}");
        assert_eq!(range().await, whole);
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn free_slots_share_one_lease_request_and_run_every_lease() {
        let fake = Arc::new(FakeCoordinator {
            chunks: 3,
            ..Default::default()
        });
        run_worker(fake.clone(), Shutdown::default()).await;
        assert_eq!(*fake.asked.lock().unwrap(), [3], "one call for three idle slots");
        let mut reported = fake.reported.lock().unwrap().clone();
        reported.sort();
        let failed: Vec<(String, bool)> = (0..3).map(|c| (format!("j/{c}/1"), false)).collect();
        assert_eq!(reported, failed, "every lease ran (and failed on its spec)");
    }

    #[test]
    fn a_lease_without_a_range_is_a_protocol_error() {
        let lease = pb::ChunkLease {
            lease_id: "j/3/1".into(),
            job_id: "j".into(),
            chunk_id: 3,
            attempt: 1,
            ..Default::default()
        };
        let Err(err) = chunk_task(&lease) else {
            panic!("a lease without a range was accepted");
        };
        assert_eq!((err.class(), err.kind()), (ErrorClass::Permanent, "protocol"));
        assert!(
            err.to_string().contains("j/3/1") && err.to_string().contains("no cursor range"),
            "{err}"
        );
        let ranged = pb::ChunkLease {
            range: Some(pb::CursorRange { from: 30, to: 40 }),
            ..lease
        };
        assert_eq!(chunk_task(&ranged).unwrap().range, CursorRange { from: 30, to: 40 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leases_without_a_range_fail_as_permanent_protocol_errors_and_never_run() {
        let fake = Arc::new(FakeCoordinator {
            chunks: 2,
            no_range: true,
            ..Default::default()
        });
        run_worker(fake.clone(), Shutdown::default()).await;
        let errors = fake.errors.lock().unwrap().clone();
        let protocol = (ErrorClass::Permanent, "protocol".to_string());
        assert_eq!(
            errors,
            vec![protocol.clone(), protocol],
            "refused before the spec is read"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn draining_worker_hands_back_spare_leases() {
        let drain = CancellationToken::new();
        let fake = Arc::new(FakeCoordinator {
            chunks: 3,
            drain: Some(drain.clone()),
            ..Default::default()
        });
        let shutdown = Shutdown {
            drain,
            abort: CancellationToken::new(),
        };
        run_worker(fake.clone(), shutdown).await;
        assert_eq!(*fake.asked.lock().unwrap(), [3]);
        let mut reported = fake.reported.lock().unwrap().clone();
        reported.sort();
        let released: Vec<(String, bool)> = (0..3).map(|c| (format!("j/{c}/1"), true)).collect();
        assert_eq!(reported, released, "all three handed back, none run");
    }
}
