//! Distributed throughput: one job run by 1 worker process, then by 2 worker processes (and by
//! 1 process with 2 slots, to separate process from slot scaling), each against its own
//! coordinator process over loopback gRPC. Reports rows/s and the speed-up over one worker.
//!
//! Run: `cargo bench -p backhaul-cli --bench worker_scaling` (optimized build).
//! Optional: `BACKHAUL_BENCH_DAYS=60`, `BACKHAUL_BENCH_ROWS_PER_DAY=2000`.
//!
//! The source is seeded once (not measured); each configuration starts from an empty state
//! database, stage and warehouse, and is timed from the workers' start to their exit (they
//! run with `--job`, so they exit when the job is finished). Nothing is asserted beyond
//! verification: this is a measurement, not a test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_backhaul");

fn spec(days: u32, rows_per_day: u64) -> String {
    let from = chrono::NaiveDate::from_ymd_opt(2023, 1, 1).expect("date");
    let to = from + chrono::Days::new(u64::from(days));
    format!(
        r#"version = 1
name = "scaling"

[source]
kind = "embedded"
path = "source.db"
cursor = "created_at"
rows_per_day = {rows_per_day}
seed = 42

[range]
from = "{from}"
to = "{to}"

[chunking]
policy = "fixed"
every = "1d"

[stage]
path = "stage"

[destination]
kind = "local"
path = "warehouse"
table = "orders"
file_size = "8MiB"
allow_small_files = true
"#
    )
}

fn backhaul(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .arg("--state")
        .arg(dir.join("state.db"))
        .arg("--no-progress")
        .env("RUST_LOG", "warn")
        .env_remove("BACKHAUL_TOKEN")
        .env_remove("BACKHAUL_COORDINATOR");
    c
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(t) = std::fs::read_to_string(path)
            && !t.trim().is_empty()
        {
            return t.trim().to_string();
        }
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the job with `processes` workers of `slots` each; returns (rows, seconds).
fn run(base: &Path, seeded: &Path, processes: usize, slots: usize, text: &str) -> (u64, f64) {
    let dir = base.join(format!("run-{processes}x{slots}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("run dir");
    std::fs::copy(seeded, dir.join("source.db")).expect("copy seeded source");
    std::fs::write(dir.join("job.toml"), text).expect("spec");
    let mut coordinator: Child = backhaul(&dir)
        .args(["coordinator", "--listen", "127.0.0.1:0", "--addr-file", "addr"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("coordinator");
    let url = format!("http://{}", wait_for_file(&dir.join("addr")));
    let out = backhaul(&dir)
        .args(["submit", "job.toml", "--coordinator", &url])
        .output()
        .expect("submit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let started = Instant::now();
    let workers: Vec<Child> = (0..processes)
        .map(|i| {
            backhaul(&dir)
                .args(["worker", "--coordinator", &url, "--job", "scaling", "--id"])
                .arg(format!("bench-{i}"))
                .args(["--slots", &slots.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("worker")
        })
        .collect();
    for mut w in workers {
        assert!(w.wait().expect("wait").success(), "a worker failed");
    }
    let secs = started.elapsed().as_secs_f64();
    let status = backhaul(&dir)
        .args(["status", "scaling", "--coordinator", &url, "--output", "json"])
        .output()
        .expect("status");
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(v["state"], "succeeded", "{v}");
    let _ = coordinator.kill();
    let _ = coordinator.wait();
    let verify = backhaul(&dir).args(["verify", "scaling"]).output().expect("verify");
    assert!(verify.status.success(), "verification failed");
    (v["summary"]["committed_rows"].as_u64().unwrap_or(0), secs)
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let days: u32 = std::env::var("BACKHAUL_BENCH_DAYS")
        .ok()
        .map(|v| v.parse().expect("days"))
        .unwrap_or(60);
    let rows_per_day: u64 = std::env::var("BACKHAUL_BENCH_ROWS_PER_DAY")
        .ok()
        .map(|v| v.parse().expect("rows per day"))
        .unwrap_or(2000);
    let base: PathBuf = std::env::temp_dir().join(format!("backhaul-scaling-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("bench dir");
    let text = spec(days, rows_per_day);
    // Seed once: planning seeds the embedded source; every run copies the seeded file.
    let seed_dir = base.join("seed");
    std::fs::create_dir_all(&seed_dir).expect("seed dir");
    std::fs::write(seed_dir.join("job.toml"), &text).expect("spec");
    let out = backhaul(&seed_dir)
        .args(["plan", "job.toml", "--output", "json"])
        .output()
        .expect("plan");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seeded = seed_dir.join("source.db");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("worker scaling: {days} days x {rows_per_day} rows/day (1-day chunks), {cores} cores, binary={BIN}");
    println!(
        "{:>10} {:>6} {:>12} {:>9} {:>12} {:>9}",
        "processes", "slots", "rows", "seconds", "rows/s", "speed-up"
    );
    let mut base_rate = None;
    for (processes, slots) in [(1, 1), (2, 1), (1, 2)] {
        let (rows, secs) = run(&base, &seeded, processes, slots, &text);
        let rate = rows as f64 / secs;
        let speedup = rate / *base_rate.get_or_insert(rate);
        println!("{processes:>10} {slots:>6} {rows:>12} {secs:>9.2} {rate:>12.0} {speedup:>8.2}x");
    }
    let _ = std::fs::remove_dir_all(&base);
}
