//! Local mode: a coordinator and N workers in this process, talking the real gRPC protocol
//! over loopback. Distributed mode runs the same two pieces as separate processes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use backhaul_coordinator::{CoordinatorService, JobSummary, RetryPolicy, ServeOptions, Store, serve};
use backhaul_core::connector::Connectors;
use backhaul_core::limit::{ConnectionLimit, LimitedConnectors};
use backhaul_core::notes::BreakerReport;
use backhaul_proto::ClientConfig;
use backhaul_worker::{CoordinatorBudget, Shutdown, Worker, WorkerConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::connectors::builtin_connectors_with;
use crate::output::RunProgress;

/// Options of a local run.
pub struct LocalRun {
    /// The job to run to completion.
    pub job_id: String,
    /// Worker count.
    pub workers: usize,
    /// Draw a progress bar.
    pub progress: bool,
    /// Lease time-to-live.
    pub lease_ttl: Duration,
    /// Retry policy for failed chunks.
    pub retry: RetryPolicy,
    /// Source connections shared with the other jobs of a pipeline; `None` for a lone job.
    pub connection_limit: Option<ConnectionLimit>,
}

/// What a local run did.
pub struct RunReport {
    /// Job state at the end.
    pub summary: JobSummary,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Rows committed during this run.
    pub rows_this_run: u64,
    /// Parquet bytes committed during this run.
    pub bytes_this_run: u64,
    /// The source's circuit breaker as the workers last reported it, when it is not closed.
    pub breaker: Option<BreakerReport>,
}

/// Runs `job_id` until every chunk is committed or parked, or Ctrl-C. `store` must be opened
/// with [`Store::open_exclusive`].
pub async fn run(store: &Store, opts: LocalRun) -> Result<RunReport> {
    let job = opts.job_id.clone();
    // In local mode every earlier worker lived in an earlier process, which is gone: its
    // leases can be handed out again at once instead of waiting for them to expire. This holds
    // only because this process holds the state lock and serves on a loopback port nobody else
    // knows; a distributed coordinator never does this and lets leases expire instead.
    let released = store
        .call({
            let job = job.clone();
            move |s, c| s.release_all_leases(c, &job)
        })
        .await?;
    if released > 0 {
        tracing::info!(job = %job, chunks = released, "resuming: handed back chunks leased by an earlier run");
    }
    let before = summary(store, &job).await?;
    let started = Instant::now();
    let cancel = CancellationToken::new();
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();

    // API sources lease requests from the in-process coordinator's rate-limit pools, as the
    // workers of a cluster do: one rule for the limit, and the pools show in its metrics.
    let budgets = backhaul_core::ratelimit::Budgets::default();
    let connectors: Arc<dyn Connectors> = match &opts.connection_limit {
        Some(limit) => Arc::new(LimitedConnectors::new(
            Arc::new(builtin_connectors_with(&budgets)),
            limit.clone(),
        )),
        None => Arc::new(builtin_connectors_with(&budgets)),
    };
    let service = CoordinatorService::new(
        Arc::new(store.clone()),
        connectors.clone(),
        opts.lease_ttl,
        opts.retry.clone(),
    );
    let breakers = service.breakers();
    // The server outlives the workers: on Ctrl-C they still need it to hand their chunks back.
    let stop_server = CancellationToken::new();
    let (addr, server) = serve(
        service,
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ServeOptions::default(),
        stop_server.clone(),
    )
    .await?;
    tasks.spawn(async move { server.await.map_err(anyhow::Error::from) });
    let budget_client = ClientConfig::plain(format!("http://{addr}"))
        .connect_lazy()
        .context("connecting the local request budget")?;
    budgets.install(Arc::new(CoordinatorBudget::new(budget_client, "local")));

    let spool_dir = std::env::temp_dir();
    let mut workers: JoinSet<Result<()>> = JoinSet::new();
    for i in 0..opts.workers.max(1) {
        let config = WorkerConfig {
            slots: 1,
            job_filter: Some(job.clone()),
            spool_dir: spool_dir.clone(),
            // The server is in this process: if it stops answering, something is broken.
            give_up_after: Some(8),
            report_deadline: Duration::from_secs(30),
            ..WorkerConfig::new(format!("local-{i}"))
        };
        let client = ClientConfig::plain(format!("http://{addr}"))
            .connect_lazy()
            .context("connecting a local worker")?;
        let worker = Arc::new(Worker::new(client, connectors.clone(), config));
        let shutdown = Shutdown::immediate(cancel.child_token());
        workers.spawn(async move { worker.run(shutdown).await.map_err(anyhow::Error::from) });
    }

    let bar = RunProgress::new(opts.progress, &job, &before);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let log_every = if opts.progress {
        Duration::ZERO
    } else {
        Duration::from_secs(2)
    };
    let mut last_log = Instant::now();
    let mut interrupted = false;
    // One listener for the whole run: a `ctrl_c()` future made anew per loop turn misses a
    // signal that lands between turns, and tokio has already replaced the default action.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut worker_error = None;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => { worker_error.get_or_insert(e); cancel.cancel(); }
                Some(Err(e)) => { worker_error.get_or_insert(anyhow!(e)); cancel.cancel(); }
            },
            _ = tick.tick() => {
                let now = summary(store, &job).await?;
                if last_log.elapsed() >= log_every {
                    bar.update(&now, &before, started.elapsed());
                    last_log = Instant::now();
                }
                // Idle workers poll with backoff; once every chunk is settled there is
                // nothing left to wait for.
                if now.is_finished() {
                    cancel.cancel();
                }
            }
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                tracing::warn!("interrupted: handing running chunks back; run the same command again to resume");
                cancel.cancel();
            }
        }
    }
    cancel.cancel();
    stop_server.cancel();
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| anyhow!(e))??;
    }
    let after = summary(store, &job).await?;
    bar.finish(&after, &before, started.elapsed());
    if let Some(e) = worker_error {
        return Err(e.context("a worker failed"));
    }
    if interrupted {
        return Err(anyhow::Error::new(Interrupted { job }));
    }
    Ok(RunReport {
        rows_this_run: after.committed_rows.saturating_sub(before.committed_rows),
        bytes_this_run: after.committed_bytes.saturating_sub(before.committed_bytes),
        summary: after,
        elapsed: started.elapsed(),
        breaker: breakers
            .of(&job)
            .and_then(|b| b.report())
            .filter(BreakerReport::is_tripped),
    })
}

async fn summary(store: &Store, job: &str) -> Result<JobSummary> {
    let job = job.to_string();
    Ok(store.call(move |s, c| s.summary(c, &job)).await?)
}

/// The run was stopped by Ctrl-C after handing running chunks back.
#[derive(Debug)]
pub struct Interrupted {
    job: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted; committed chunks are kept, resume with `backhaul backfill --resume {}`",
            self.job
        )
    }
}

impl std::error::Error for Interrupted {}
