//! Worker metrics for Prometheus: what this process ran and how it ended.

use std::sync::atomic::{AtomicI64, Ordering};

use backhaul_core::ErrorClass;
use backhaul_proto::metrics::{Counter, Exposition, Histogram};

/// Counters since the worker started.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Leases received.
    pub leases: Counter,
    /// Time from asking for a lease to getting one (or "no work").
    pub lease_latency: Histogram,
    /// Chunks committed and acknowledged by the coordinator.
    pub committed: Counter,
    /// Completions the coordinator refused (stale lease or verification).
    pub completions_refused: Counter,
    failures: [Counter; 3],
    /// Chunks handed back on drain.
    pub released: Counter,
    /// Leases lost while running (heartbeats refused or unanswered for the TTL).
    pub leases_lost: Counter,
    /// Running chunks whose unread tail this worker cut off for waiting workers.
    pub splits: Counter,
    /// Rows extracted by chunks that were committed.
    pub rows: Counter,
    /// Parquet bytes of chunks that were committed.
    pub bytes: Counter,
    /// Coordinator calls retried after a transport error.
    pub rpc_retries: Counter,
    /// Chunks running now.
    pub busy_slots: AtomicI64,
    /// Wall time of committed chunks.
    pub chunk_seconds: Histogram,
}

fn class_index(c: ErrorClass) -> usize {
    match c {
        ErrorClass::Transient => 0,
        ErrorClass::Throttled => 1,
        ErrorClass::Permanent => 2,
    }
}

/// Buckets for chunk durations, 10 ms to 30 min.
const CHUNK_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0];

impl WorkerMetrics {
    /// Fresh counters.
    pub fn new() -> Self {
        WorkerMetrics {
            chunk_seconds: Histogram::new(CHUNK_BUCKETS),
            ..Default::default()
        }
    }

    /// Counts a chunk failure.
    pub fn failure(&self, class: ErrorClass) {
        self.failures[class_index(class)].inc();
    }

    /// Failures of a class so far.
    pub fn failures(&self, class: ErrorClass) -> u64 {
        self.failures[class_index(class)].get()
    }

    /// The `/metrics` text; `slots` is the configured concurrency.
    pub fn render(&self, slots: usize) -> String {
        let mut e = Exposition::new();
        e.gauge(
            "backhaul_worker_slots",
            "Chunks this worker runs at once.",
            slots as f64,
        );
        e.gauge(
            "backhaul_worker_busy_slots",
            "Chunks running now.",
            self.busy_slots.load(Ordering::Relaxed) as f64,
        );
        e.counter("backhaul_worker_leases_total", "Leases received.", self.leases.get());
        e.family(
            "backhaul_worker_lease_latency_seconds",
            "histogram",
            "Time to get an answer to a lease request.",
        )
        .histogram("backhaul_worker_lease_latency_seconds", &[], &self.lease_latency);
        e.counter(
            "backhaul_worker_chunks_committed_total",
            "Chunks committed and acknowledged by the coordinator.",
            self.committed.get(),
        );
        e.counter(
            "backhaul_worker_completions_refused_total",
            "Completions the coordinator refused (stale lease or verification).",
            self.completions_refused.get(),
        );
        e.family(
            "backhaul_worker_chunk_failures_total",
            "counter",
            "Chunks that failed here, by error class.",
        );
        for class in [ErrorClass::Transient, ErrorClass::Throttled, ErrorClass::Permanent] {
            e.sample(
                "backhaul_worker_chunk_failures_total",
                &[("class", class.as_str())],
                self.failures(class) as f64,
            );
        }
        e.counter(
            "backhaul_worker_chunks_released_total",
            "Chunks handed back on drain.",
            self.released.get(),
        );
        e.counter(
            "backhaul_worker_leases_lost_total",
            "Leases lost while running.",
            self.leases_lost.get(),
        );
        e.counter(
            "backhaul_worker_chunk_splits_total",
            "Running chunks whose unread tail was cut off for waiting workers.",
            self.splits.get(),
        );
        e.counter(
            "backhaul_worker_rows_total",
            "Rows of chunks committed by this worker.",
            self.rows.get(),
        );
        e.counter(
            "backhaul_worker_bytes_total",
            "Parquet bytes of chunks committed by this worker.",
            self.bytes.get(),
        );
        e.counter(
            "backhaul_worker_rpc_retries_total",
            "Coordinator calls retried after a transport error.",
            self.rpc_retries.get(),
        );
        e.family(
            "backhaul_worker_chunk_seconds",
            "histogram",
            "Wall time of committed chunks.",
        )
        .histogram("backhaul_worker_chunk_seconds", &[], &self.chunk_seconds);
        e.finish()
    }
}
