//! Coordinator scale: simulated workers (in-process gRPC clients, one connection each) lease
//! and complete every chunk of a large job through the real tonic service and the embedded
//! state store. Reports leases per second and lease latency percentiles per worker count.
//!
//! Run: `cargo bench -p backhaul-coordinator --bench coordinator_scale` (optimized build).
//! Optional: `BACKHAUL_BENCH_CHUNKS=100000`, `BACKHAUL_BENCH_CONCURRENCY=10,100,1000`,
//! `BACKHAUL_BENCH_LEASES_PER_REQUEST=1,8` (a worker with that many free slots asks for that
//! many leases per call and completes them concurrently, one CompleteChunk call each),
//! `BACKHAUL_BENCH_COLD_START=1` (workers connect inside the clock, like a fleet reconnecting).
//!
//! A lease and its completion are each one durable state change (synchronous=FULL), so the
//! figure includes fsyncs; the store batches concurrent changes into shared transactions.
//! Latency is per lease call, from asking to holding the leases it returned. Unless the start
//! is cold, every worker has its connection open before the clock starts.
//! CPU µs/lease is the whole process's CPU time (server and simulated workers) per lease: on
//! a machine shared with other work it varies less than leases per second. Store µs is the
//! part of it spent on the state store's writer thread (SQLite, commits; Linux only).
//! Nothing is asserted: this is a measurement, not a test.

#[path = "../crates/coordinator/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backhaul_coordinator::StateStore;
use backhaul_coordinator::service::MAX_LEASES_PER_CALL;
use backhaul_coordinator::store::EXPIRY_SWEEP_INTERVAL;
use backhaul_proto::ClientConfig;
use backhaul_proto::v1 as pb;

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

/// What one simulated worker saw: latency per lease call, leases held, and transport
/// failures (retried) by gRPC code.
#[derive(Default)]
struct WorkerLog {
    latencies: Vec<Duration>,
    leases: u64,
    transport_errors: BTreeMap<String, u64>,
}

impl WorkerLog {
    fn transport_error(&mut self, status: &tonic::Status) {
        let mut source = String::new();
        let mut next = std::error::Error::source(status);
        while let Some(e) = next {
            source.push_str(&format!(": {e}"));
            next = e.source();
        }
        let what = format!("{:?} ({}{source})", status.code(), status.message());
        *self.transport_errors.entry(what).or_default() += 1;
    }
}

const LEASE_TTL: Duration = Duration::from_secs(300);

/// CPU time of the state store's writer thread(s) so far (SQLite work, commits), from
/// `/proc/self/task/*/stat`; zero where that is not readable.
fn store_cpu_time() -> Duration {
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": utime and stime are the 12th and 13th fields after comm.
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        if !comm.ends_with("(backhaul-state") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) {
            ticks += utime.parse::<u64>().unwrap_or(0) + stime.parse::<u64>().unwrap_or(0);
        }
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_second)
}

/// CPU time (user + system) this process used so far: server and simulated workers together.
fn cpu_time() -> Duration {
    // SAFETY: rusage is plain data that getrusage fills for this process.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

async fn simulated_worker(
    mut client: backhaul_proto::Client,
    w: usize,
    leases_per_request: u32,
    cold_start: bool,
    start: Arc<tokio::sync::Barrier>,
) -> WorkerLog {
    let mut log = WorkerLog::default();
    let worker_id = format!("sim-{w}");
    // Connected before the clock starts: this measures leasing, not a thousand handshakes.
    // Asking about a job that does not exist is the cheapest call that reaches the store.
    if !cold_start {
        loop {
            let probe = client
                .get_job_status(pb::GetJobStatusRequest {
                    job_id: "no-such-job".into(),
                    include_chunks: false,
                })
                .await;
            match probe {
                Err(s) if s.code() != tonic::Code::NotFound => log.transport_error(&s),
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    start.wait().await;
    loop {
        let asked = Instant::now();
        let resp = match client
            .lease_chunk(pb::LeaseChunkRequest {
                worker_id: worker_id.clone(),
                job_id: "bench".into(),
                flight_url: String::new(),
                max_leases: leases_per_request,
            })
            .await
        {
            Ok(r) => r.into_inner(),
            // Like a real worker: a refused or reset connection is retried.
            Err(s) => {
                log.transport_error(&s);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match resp.outcome.expect("outcome") {
            pb::lease_chunk_response::Outcome::Lease(first) => {
                log.latencies.push(asked.elapsed());
                let leases: Vec<pb::ChunkLease> = std::iter::once(first).chain(resp.more_leases).collect();
                log.leases += leases.len() as u64;
                let completions = leases.into_iter().map(|l| {
                    let mut client = client.clone();
                    async move {
                        let req = pb::CompleteChunkRequest {
                            lease_id: l.lease_id,
                            output: Some(pb::ChunkOutput {
                                files: vec![],
                                extracted_rows: 1000,
                                extracted_checksum: 42,
                                committed_rows: 1000,
                                committed_checksum: 42,
                                // No proof: read as the exact proof of the fields above.
                                ..Default::default()
                            }),
                            breaker: None,
                        };
                        let mut errors = Vec::new();
                        while let Err(s) = client.complete_chunk(req.clone()).await {
                            errors.push(s);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        errors
                    }
                });
                for s in futures::future::join_all(completions).await.iter().flatten() {
                    log.transport_error(s);
                }
            }
            pb::lease_chunk_response::Outcome::NoWork(nw) if nw.job_finished => return log,
            pb::lease_chunk_response::Outcome::NoWork(nw) => {
                tokio::time::sleep(Duration::from_millis(u64::from(nw.retry_after_ms.min(50)))).await
            }
        }
    }
}

async fn one_run(chunks: u64, workers: usize, leases_per_request: u32, cold_start: bool) {
    let served = support::serve_job("bench", chunks, LEASE_TTL).await;
    let (store, url) = (served.store.clone(), served.url.clone());

    let mut set = tokio::task::JoinSet::new();
    let start = Arc::new(tokio::sync::Barrier::new(workers + 1));
    for w in 0..workers {
        let client = ClientConfig::plain(url.clone()).connect_lazy().expect("client");
        set.spawn(simulated_worker(
            client,
            w,
            leases_per_request,
            cold_start,
            start.clone(),
        ));
    }
    start.wait().await;
    let started = Instant::now();
    let cpu_at_start = cpu_time();
    let store_cpu_at_start = store_cpu_time();
    let mut latencies = Vec::with_capacity(chunks as usize);
    let mut leases = 0;
    let mut transport_errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        let log = r.expect("worker");
        latencies.extend(log.latencies);
        leases += log.leases;
        for (code, n) in log.transport_errors {
            *transport_errors.entry(code).or_default() += n;
        }
    }
    let wall = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_at_start);
    let store_cpu = store_cpu_time().saturating_sub(store_cpu_at_start);
    latencies.sort();
    let summary = StateStore::summary(&store, "bench").await.expect("summary");
    assert_eq!(summary.committed, chunks, "every chunk committed once");
    let retries: u64 = transport_errors.values().sum();
    println!(
        "{:>8} {:>8} {:>8} {:>10.1} {:>12.0} {:>10.2} {:>10.2} {:>10.2} {:>12.0} {:>10.1} {:>8}",
        workers,
        leases_per_request,
        chunks,
        wall.as_secs_f64(),
        leases as f64 / wall.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 1.0).as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e6 / leases.max(1) as f64,
        store_cpu.as_secs_f64() * 1e6 / leases.max(1) as f64,
        retries,
    );
    if retries > 0 {
        println!("         retried transport failures by gRPC code: {transport_errors:?}");
    }
    served.stop.cancel();
    let _ = served.server.await;
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let chunks = env_list("BACKHAUL_BENCH_CHUNKS", "100000")[0] as u64;
    let concurrency = env_list("BACKHAUL_BENCH_CONCURRENCY", "10,100,1000");
    let per_request = env_list("BACKHAUL_BENCH_LEASES_PER_REQUEST", "1");
    // Every worker connecting at once, inside the clock: a fleet reconnecting after a restart.
    let cold_start = std::env::var("BACKHAUL_BENCH_COLD_START").is_ok_and(|v| v == "1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("coordinator scale: {chunks} chunks, lease + complete per chunk, embedded store, loopback gRPC");
    println!(
        "options: workers {concurrency:?}, leases per request {per_request:?} (coordinator cap {MAX_LEASES_PER_CALL}), \
         one CompleteChunk call per lease, {}, lease TTL {}s, \
         expiry sweep every {} ms, SQLite WAL synchronous=FULL, {} cores",
        if cold_start {
            "cold start (every worker connects inside the clock)"
        } else {
            "connections open before the clock starts"
        },
        LEASE_TTL.as_secs(),
        EXPIRY_SWEEP_INTERVAL.as_millis(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    );
    println!(
        "{:>8} {:>8} {:>8} {:>10} {:>12} {:>10} {:>10} {:>10} {:>12} {:>10} {:>8}",
        "workers",
        "per req",
        "chunks",
        "seconds",
        "leases/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "CPU µs/lease",
        "store µs",
        "retries"
    );
    for &k in &per_request {
        for &workers in &concurrency {
            runtime.block_on(one_run(chunks, workers, k as u32, cold_start));
        }
    }
}
