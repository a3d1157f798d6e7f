//! Coordinator metrics for Prometheus: counters kept in memory by the service, and gauges read
//! from the state database on each scrape (chunks by state, rows and bytes per job).

use backhaul_core::ErrorClass;
use backhaul_proto::metrics::{Counter, Exposition, Histogram};

use crate::error::Result;
use crate::pools::PoolSnapshot;
use crate::state::StateStore;

/// Calls that carry a lease id and can be refused as stale.
#[derive(Debug, Clone, Copy)]
pub enum LeaseCall {
    /// Heartbeat.
    Heartbeat,
    /// ReportProgress.
    Progress,
    /// CompleteChunk.
    Complete,
    /// FailChunk (a failure).
    Fail,
    /// FailChunk (a hand-back).
    Release,
    /// SplitChunk.
    Split,
}

impl LeaseCall {
    const ALL: [LeaseCall; 6] = [
        LeaseCall::Heartbeat,
        LeaseCall::Progress,
        LeaseCall::Complete,
        LeaseCall::Fail,
        LeaseCall::Release,
        LeaseCall::Split,
    ];

    fn name(self) -> &'static str {
        match self {
            LeaseCall::Heartbeat => "heartbeat",
            LeaseCall::Progress => "progress",
            LeaseCall::Complete => "complete",
            LeaseCall::Fail => "fail",
            LeaseCall::Release => "release",
            LeaseCall::Split => "split",
        }
    }
}

/// In-memory counters since the coordinator started.
#[derive(Debug, Default)]
pub struct CoordinatorMetrics {
    /// Leases handed out.
    pub leases_granted: Counter,
    /// Lease requests answered with "no work".
    pub leases_empty: Counter,
    /// Time to answer a lease request.
    pub lease_latency: Histogram,
    /// Chunks committed.
    pub completions: Counter,
    /// Completions refused because extracted and committed rows or checksums differ.
    pub verification_failures: Counter,
    stale: [Counter; 6],
    failures: [Counter; 3],
    /// Failures that will be retried after a backoff.
    pub retries: Counter,
    /// Chunks parked.
    pub parked: Counter,
    /// Chunks handed back by draining workers.
    pub released: Counter,
    /// Running chunks whose tail was cut off for waiting workers.
    pub chunks_split: Counter,
    /// Jobs accepted by SubmitJob (new or existing).
    pub jobs_submitted: Counter,
    /// Specs refused by SubmitJob.
    pub jobs_rejected: Counter,
    /// Jobs cancelled.
    pub jobs_cancelled: Counter,
    /// The latest results of the jobs' checks, as the check monitor last evaluated them.
    checks: std::sync::Mutex<Vec<crate::checks::JobChecks>>,
}

fn class_index(c: ErrorClass) -> usize {
    match c {
        ErrorClass::Transient => 0,
        ErrorClass::Throttled => 1,
        ErrorClass::Permanent => 2,
    }
}

impl CoordinatorMetrics {
    /// Counts a call refused because its lease is not current.
    pub fn stale(&self, call: LeaseCall) {
        self.stale[call as usize].inc();
    }

    /// Stale calls of a kind so far.
    pub fn stale_count(&self, call: LeaseCall) -> u64 {
        self.stale[call as usize].get()
    }

    /// Counts a chunk failure reported by a worker.
    pub fn failure(&self, class: ErrorClass) {
        self.failures[class_index(class)].inc();
    }

    /// Keeps the latest check results (the check monitor's), for `/metrics` and the status page.
    pub fn set_checks(&self, results: Vec<crate::checks::JobChecks>) {
        if let Ok(mut checks) = self.checks.lock() {
            *checks = results;
        }
    }

    /// The latest check results.
    pub fn checks(&self) -> Vec<crate::checks::JobChecks> {
        self.checks.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Renders every metric, reading per-job gauges from `store`, with the rate-limit `pools`.
    pub async fn render(&self, store: &dyn StateStore, pools: &[PoolSnapshot]) -> Result<String> {
        let jobs: Vec<_> = store
            .jobs()
            .await?
            .into_iter()
            .map(|(job, summary)| (job.job_id, summary))
            .collect();
        let mut e = Exposition::new();
        e.family("backhaul_coordinator_chunks", "gauge", "Chunks of each job by state.");
        for (job, s) in &jobs {
            for (state, n) in [
                ("pending", s.pending),
                ("leased", s.leased),
                ("committed", s.committed),
                ("parked", s.parked),
                ("cancelled", s.cancelled),
            ] {
                e.sample(
                    "backhaul_coordinator_chunks",
                    &[("job", job), ("state", state)],
                    n as f64,
                );
            }
        }
        e.family(
            "backhaul_coordinator_committed_rows",
            "gauge",
            "Rows committed at the destination, per job.",
        );
        for (job, s) in &jobs {
            e.sample(
                "backhaul_coordinator_committed_rows",
                &[("job", job)],
                s.committed_rows as f64,
            );
        }
        e.family(
            "backhaul_coordinator_committed_bytes",
            "gauge",
            "Parquet bytes committed at the destination, per job.",
        );
        for (job, s) in &jobs {
            e.sample(
                "backhaul_coordinator_committed_bytes",
                &[("job", job)],
                s.committed_bytes as f64,
            );
        }
        e.family(
            "backhaul_coordinator_in_flight_rows",
            "gauge",
            "Rows extracted so far by running chunks, per job.",
        );
        for (job, s) in &jobs {
            e.sample(
                "backhaul_coordinator_in_flight_rows",
                &[("job", job)],
                s.in_flight_rows as f64,
            );
        }
        e.counter(
            "backhaul_coordinator_leases_granted_total",
            "Leases handed out.",
            self.leases_granted.get(),
        );
        e.counter(
            "backhaul_coordinator_lease_requests_empty_total",
            "Lease requests answered with no work.",
            self.leases_empty.get(),
        );
        e.family(
            "backhaul_coordinator_lease_latency_seconds",
            "histogram",
            "Time to answer a lease request, state transaction included.",
        )
        .histogram("backhaul_coordinator_lease_latency_seconds", &[], &self.lease_latency);
        e.counter(
            "backhaul_coordinator_chunks_committed_total",
            "Chunks committed since start.",
            self.completions.get(),
        );
        e.counter(
            "backhaul_coordinator_verification_failures_total",
            "Completions refused because extracted and committed rows or checksums differ.",
            self.verification_failures.get(),
        );
        e.family(
            "backhaul_coordinator_stale_calls_total",
            "counter",
            "Calls refused because the caller's lease is no longer current (fencing at work).",
        );
        for call in LeaseCall::ALL {
            e.sample(
                "backhaul_coordinator_stale_calls_total",
                &[("call", call.name())],
                self.stale_count(call) as f64,
            );
        }
        e.family(
            "backhaul_coordinator_chunk_failures_total",
            "counter",
            "Chunk failures reported by workers, by error class.",
        );
        for class in [ErrorClass::Transient, ErrorClass::Throttled, ErrorClass::Permanent] {
            e.sample(
                "backhaul_coordinator_chunk_failures_total",
                &[("class", class.as_str())],
                self.failures[class_index(class)].get() as f64,
            );
        }
        e.counter(
            "backhaul_coordinator_retries_total",
            "Failed chunks scheduled for a retry after a backoff.",
            self.retries.get(),
        );
        e.counter(
            "backhaul_coordinator_parked_total",
            "Chunks parked (permanent error or too many failures).",
            self.parked.get(),
        );
        e.counter(
            "backhaul_coordinator_released_total",
            "Chunks handed back by draining workers.",
            self.released.get(),
        );
        e.counter(
            "backhaul_coordinator_chunks_split_total",
            "Running chunks whose unread tail became a chunk of its own for waiting workers.",
            self.chunks_split.get(),
        );
        e.counter(
            "backhaul_coordinator_jobs_submitted_total",
            "Jobs accepted by SubmitJob.",
            self.jobs_submitted.get(),
        );
        e.counter(
            "backhaul_coordinator_jobs_rejected_total",
            "Job specs refused by SubmitJob.",
            self.jobs_rejected.get(),
        );
        e.counter(
            "backhaul_coordinator_jobs_cancelled_total",
            "Jobs cancelled by CancelJob.",
            self.jobs_cancelled.get(),
        );
        self.render_checks(&mut e);
        pool_metrics(&mut e, pools);
        Ok(e.finish())
    }

    fn render_checks(&self, e: &mut Exposition) {
        let checks = self.checks();
        e.family(
            "backhaul_coordinator_check_ok",
            "gauge",
            "1 when a job's check passes, 0 when it fails (freshness, volume).",
        );
        for c in &checks {
            if let Some(f) = &c.freshness {
                let value = if f.ok { 1.0 } else { 0.0 };
                e.sample(
                    "backhaul_coordinator_check_ok",
                    &[("job", &c.job_id), ("check", "freshness")],
                    value,
                );
            }
            if let Some(v) = &c.volume {
                let ok = !matches!(v.verdict, crate::checks::Volume::Anomaly { .. });
                e.sample(
                    "backhaul_coordinator_check_ok",
                    &[("job", &c.job_id), ("check", "volume")],
                    if ok { 1.0 } else { 0.0 },
                );
            }
        }
        e.family(
            "backhaul_coordinator_freshness_age_seconds",
            "gauge",
            "Age of the newest cursor value loaded, per job with a freshness SLA.",
        );
        for c in &checks {
            if let Some(age) = c.freshness.as_ref().and_then(|f| f.age_s) {
                e.sample(
                    "backhaul_coordinator_freshness_age_seconds",
                    &[("job", &c.job_id)],
                    age as f64,
                );
            }
        }
        e.family(
            "backhaul_coordinator_volume_day_rows",
            "gauge",
            "Rows loaded for the latest complete cursor-day, per job with checks.",
        );
        for c in &checks {
            if let Some(v) = &c.volume {
                e.sample("backhaul_coordinator_volume_day_rows", &[("job", &c.job_id)], v.rows);
            }
        }
    }
}

/// One value of a pool's snapshot.
type PoolValue = fn(&PoolSnapshot) -> f64;

/// Per rate-limit pool: use since start and the rate in force.
fn pool_metrics(e: &mut Exposition, pools: &[PoolSnapshot]) {
    let families: [(&str, &str, &str, PoolValue); 6] = [
        (
            "backhaul_coordinator_pool_tokens_granted_total",
            "counter",
            "Request tokens leased to workers, per rate-limit pool.",
            |p| p.tokens_granted as f64,
        ),
        (
            "backhaul_coordinator_pool_lease_waits_total",
            "counter",
            "Token lease calls answered with nothing (the worker waited), per pool.",
            |p| p.waits as f64,
        ),
        (
            "backhaul_coordinator_pool_throttled_total",
            "counter",
            "429 responses workers reported, per pool.",
            |p| p.throttled_reported as f64,
        ),
        (
            "backhaul_coordinator_pool_rate",
            "gauge",
            "Requests per second in force (lowered by 429s, recovering), per pool.",
            |p| p.current_rate,
        ),
        (
            "backhaul_coordinator_pool_configured_rate",
            "gauge",
            "Requests per second declared (the strictest of the jobs naming the pool).",
            |p| p.declared.requests_per_second,
        ),
        (
            "backhaul_coordinator_pool_daily_used",
            "gauge",
            "Tokens granted in the current UTC day, per pool.",
            |p| p.daily_used as f64,
        ),
    ];
    for (name, kind, help, value) in families {
        e.family(name, kind, help);
        for p in pools {
            e.sample(name, &[("pool", p.declared.name.as_str())], value(p));
        }
    }
}
