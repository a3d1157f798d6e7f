//! Coordinator scale: simulated workers (in-process gRPC clients, one connection each) lease
//! and complete every chunk of a large job through the real tonic service and the embedded
//! state store. Reports leases per second and lease latency percentiles per worker count.
//!
//! Run: `cargo bench -p backhaul-coordinator --bench coordinator_scale` (optimized build).
//! Optional: `BACKHAUL_BENCH_CHUNKS=100000`, `BACKHAUL_BENCH_CONCURRENCY=10,100,1000`.
//!
//! A lease and its completion are each one durable state change (synchronous=FULL), so the
//! figure includes fsyncs; the store batches concurrent changes into shared transactions.
//! Nothing is asserted: this is a measurement, not a test.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backhaul_coordinator::{CoordinatorService, JobRow, RetryPolicy, ServeOptions, StateStore, Store, serve};
use backhaul_core::chunking::PlannedChunk;
use backhaul_core::connector::{Connectors, Destination, Source};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::spec::{DestinationSpec, SourceSpec};
use backhaul_proto::ClientConfig;
use backhaul_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

struct NoConnectors;

impl Connectors for NoConnectors {
    fn source(&self, _: &SourceSpec) -> backhaul_core::Result<Arc<dyn Source>> {
        Err(backhaul_core::Error::Internal("not used".into()))
    }

    fn destination(&self, _: &DestinationSpec) -> backhaul_core::Result<Arc<dyn Destination>> {
        Err(backhaul_core::Error::Internal("not used".into()))
    }
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|v| v.trim().parse().expect("comma-separated numbers"))
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn one_run(chunks: u64, workers: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_exclusive(&dir.path().join("state.db")).expect("store");
    let job = JobRow {
        job_id: "bench".into(),
        spec_toml: "spec".into(),
        base_dir: dir.path().into(),
        cursor_kind: CursorKind::Integer,
        range: CursorRange::new(0, chunks as i64),
        created_at_us: 0,
        cancelled_at_us: None,
    };
    let planned: Vec<PlannedChunk> = (0..chunks)
        .map(|i| PlannedChunk {
            index: i,
            range: CursorRange::new(i as i64, i as i64 + 1),
            estimated_rows: 1000,
            estimated_bytes: 100_000,
        })
        .collect();
    StateStore::submit(&store, job, planned).await.expect("submit");
    let service = CoordinatorService::new(
        Arc::new(store.clone()),
        Arc::new(NoConnectors),
        Duration::from_secs(300),
        RetryPolicy::default(),
    );
    let stop = CancellationToken::new();
    let (addr, server) = serve(
        service,
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ServeOptions::default(),
        stop.clone(),
    )
    .await
    .expect("serve");
    let server = tokio::spawn(server);
    let url = format!("http://{addr}");

    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let mut client = ClientConfig::plain(url.clone()).connect_lazy().expect("client");
        set.spawn(async move {
            let mut latencies = Vec::new();
            let mut transport_errors = 0u64;
            loop {
                let asked = Instant::now();
                let resp = match client
                    .lease_chunk(pb::LeaseChunkRequest {
                        worker_id: format!("sim-{w}"),
                        job_id: "bench".into(),
                        flight_url: String::new(),
                    })
                    .await
                {
                    Ok(r) => r.into_inner(),
                    // Like a real worker: a refused or reset connection is retried.
                    Err(_) => {
                        transport_errors += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match resp.outcome.expect("outcome") {
                    pb::lease_chunk_response::Outcome::Lease(l) => {
                        latencies.push(asked.elapsed());
                        let req = pb::CompleteChunkRequest {
                            lease_id: l.lease_id,
                            output: Some(pb::ChunkOutput {
                                files: vec![],
                                extracted_rows: 1000,
                                extracted_checksum: 42,
                                committed_rows: 1000,
                                committed_checksum: 42,
                            }),
                        };
                        while client.complete_chunk(req.clone()).await.is_err() {
                            transport_errors += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    pb::lease_chunk_response::Outcome::NoWork(nw) if nw.job_finished => {
                        return (latencies, transport_errors);
                    }
                    pb::lease_chunk_response::Outcome::NoWork(nw) => {
                        tokio::time::sleep(Duration::from_millis(u64::from(nw.retry_after_ms.min(50)))).await
                    }
                }
            }
        });
    }
    let mut latencies = Vec::with_capacity(chunks as usize);
    let mut transport_errors = 0;
    while let Some(r) = set.join_next().await {
        let (l, e) = r.expect("worker");
        latencies.extend(l);
        transport_errors += e;
    }
    let wall = started.elapsed();
    latencies.sort();
    let summary = StateStore::summary(&store, "bench").await.expect("summary");
    assert_eq!(summary.committed, chunks, "every chunk committed once");
    println!(
        "{:>8} {:>8} {:>10.1} {:>12.0} {:>10.2} {:>10.2} {:>10.2} {:>8}",
        workers,
        chunks,
        wall.as_secs_f64(),
        latencies.len() as f64 / wall.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 1.0).as_secs_f64() * 1e3,
        transport_errors,
    );
    stop.cancel();
    let _ = server.await;
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let chunks = env_list("BACKHAUL_BENCH_CHUNKS", "100000")[0] as u64;
    let concurrency = env_list("BACKHAUL_BENCH_CONCURRENCY", "10,100,1000");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("coordinator scale: {chunks} chunks, lease + complete per chunk, embedded store, loopback gRPC");
    println!(
        "{:>8} {:>8} {:>10} {:>12} {:>10} {:>10} {:>10} {:>8}",
        "workers", "chunks", "seconds", "leases/s", "p50 ms", "p99 ms", "max ms", "retries"
    );
    for workers in concurrency {
        runtime.block_on(one_run(chunks, workers));
    }
}
