//! End-to-end benchmark of the embedded pipeline: `backhaul demo` at two sizes.
//!
//! Run: `cargo bench -p backhaul-cli --bench embedded_pipeline` (optimized build).
//! Optional: `BACKHAUL_BENCH_DAYS=30,365` and `BACKHAUL_BENCH_ROWS_PER_DAY=2000`.
//!
//! For each size the source is seeded first (not measured), then the backfill runs in a fresh
//! process whose peak RSS is read from the kernel (`wait4`). Reported: rows/s and MB/s of
//! zstd Parquet committed, and peak RSS, so the cost of growth is visible. Nothing is asserted:
//! this is a measurement, not a test.

#[path = "support/measure.rs"]
mod measure;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use measure::run_measured;

const BIN: &str = env!("CARGO_BIN_EXE_backhaul");

fn main() {
    // `cargo test --benches` runs bench targets with `--test`-like flags; do nothing then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let days: Vec<u32> = std::env::var("BACKHAUL_BENCH_DAYS")
        .unwrap_or_else(|_| "30,181".into())
        .split(',')
        .map(|d| {
            d.trim()
                .parse()
                .expect("BACKHAUL_BENCH_DAYS: comma-separated day counts")
        })
        .collect();
    let rows_per_day: u64 = std::env::var("BACKHAUL_BENCH_ROWS_PER_DAY")
        .ok()
        .map(|v| v.parse().expect("rows per day"))
        .unwrap_or(2000);
    let workers = std::env::var("BACKHAUL_BENCH_WORKERS").unwrap_or_else(|_| "2".into());
    println!("embedded pipeline: rows_per_day={rows_per_day} workers={workers} binary={BIN}");
    println!(
        "{:>6} {:>12} {:>8} {:>12} {:>10} {:>8} {:>12} {:>10}",
        "days", "rows", "chunks", "rows/s", "Parquet MB/s", "files", "parquet MB", "peak RSS"
    );
    for d in days {
        let dir = tempfile_dir(d);
        // Seed (and warm the page cache) first: generation is not what we measure.
        let seed = run(&dir, d, rows_per_day, &workers);
        assert!(
            seed.0.status.success(),
            "seeding run failed: {}",
            String::from_utf8_lossy(&seed.0.stderr)
        );
        let started = Instant::now();
        let (out, peak_kib) = run(&dir, d, rows_per_day, &workers);
        let wall = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "benchmark run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("demo --output json");
        let run = &v["run"];
        assert_eq!(v["verify"]["verified"], true, "verification failed: {v}");
        println!(
            "{:>6} {:>12} {:>8} {:>12.0} {:>10.1} {:>8} {:>12.1} {:>7} MiB   (wall {:.1}s incl. start-up)",
            d,
            run["this_run"]["rows"].as_u64().unwrap_or(0),
            run["summary"]["chunks"].as_u64().unwrap_or(0),
            run["this_run"]["rows_per_second"].as_f64().unwrap_or(0.0),
            run["this_run"]["parquet_mb_per_second"].as_f64().unwrap_or(0.0),
            run["files"]["count"].as_u64().unwrap_or(0),
            run["files"]["bytes"].as_f64().unwrap_or(0.0) / 1e6,
            peak_kib / 1024,
            wall,
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn tempfile_dir(days: u32) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("backhaul-bench-{}-{days}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// Runs `backhaul demo` in `dir` and returns its output and peak RSS in KiB.
fn run(dir: &Path, days: u32, rows_per_day: u64, workers: &str) -> (std::process::Output, i64) {
    let (output, peak_kib, _cpu) = run_measured(Command::new(BIN).args(["demo", "--dir"]).arg(dir).args([
        "--days",
        &days.to_string(),
        "--rows-per-day",
        &rows_per_day.to_string(),
        "--workers",
        workers,
        "--output",
        "json",
        "--no-progress",
    ]));
    (output, peak_kib)
}
