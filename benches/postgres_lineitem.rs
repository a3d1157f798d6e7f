//! PostgreSQL source benchmark: TPC-H `lineitem` from a private PostgreSQL, against the
//! physical limit of a binary `COPY` to `/dev/null`.
//!
//! Run: `cargo bench -p backhaul-cli --bench postgres_lineitem` (optimized build; on 2 cores
//! build it in its own target dir with `CARGO_TARGET_DIR`).
//! Needs `tpchgen-cli` on the PATH (`pip install tpchgen-cli`) and PostgreSQL binaries
//! (see crates/testkit).
//!
//! Environment:
//! - `BACKHAUL_BENCH_SF`: TPC-H scale factor (default `1`, about 6M rows); `0.01` smoke-runs in
//!   seconds.
//! - `BACKHAUL_BENCH_WORKERS`: comma-separated worker counts (default `1,2`).
//! - `BACKHAUL_BENCH_TARGET_BYTES`: `chunking.target_bytes` (default 32 MiB × SF, at least 1 MiB).
//!
//! In one run: generate `lineitem` (`tpchgen-cli csv --stdout | psql \copy ... FROM STDIN`),
//! index `l_shipdate`, `ANALYZE`, `VACUUM`; warm the cache with one COPY; then measure
//! `psql \copy (SELECT * FROM lineitem) TO '/dev/null' (FORMAT binary)`, and `backhaul backfill`
//! of lineitem chunked by `l_shipdate` to local zstd Parquet with each worker count, each in a
//! fresh process whose peak RSS is read from the kernel (`wait4`). Reported: rows/s, MB/s of
//! binary COPY data (the same bytes for every line, so the rates compare), the ratio to the
//! COPY limit, peak RSS and the CPU seconds backhaul used. Nothing is asserted: a measurement,
//! not a test.

#[path = "support/measure.rs"]
mod measure;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

use measure::run_measured;

use backhaul_testkit::postgres::{PostgresOptions, PostgresServer};

const BIN: &str = env!("CARGO_BIN_EXE_backhaul");
const DB: &str = "postgres";

const DDL: &str = "
CREATE TABLE lineitem (
    l_orderkey      bigint NOT NULL,
    l_partkey       bigint NOT NULL,
    l_suppkey       bigint NOT NULL,
    l_linenumber    integer NOT NULL,
    l_quantity      numeric(15,2) NOT NULL,
    l_extendedprice numeric(15,2) NOT NULL,
    l_discount      numeric(15,2) NOT NULL,
    l_tax           numeric(15,2) NOT NULL,
    l_returnflag    char(1) NOT NULL,
    l_linestatus    char(1) NOT NULL,
    l_shipdate      date NOT NULL,
    l_commitdate    date NOT NULL,
    l_receiptdate   date NOT NULL,
    l_shipinstruct  char(25) NOT NULL,
    l_shipmode      char(10) NOT NULL,
    l_comment       varchar(44) NOT NULL,
    PRIMARY KEY (l_orderkey, l_linenumber)
);
";

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let sf: f64 = std::env::var("BACKHAUL_BENCH_SF")
        .ok()
        .map(|v| v.parse().expect("BACKHAUL_BENCH_SF: a number such as 1 or 0.01"))
        .unwrap_or(1.0);
    let workers: Vec<u32> = std::env::var("BACKHAUL_BENCH_WORKERS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .map(|w| {
            w.trim()
                .parse()
                .expect("BACKHAUL_BENCH_WORKERS: comma-separated counts")
        })
        .collect();
    let target_bytes = std::env::var("BACKHAUL_BENCH_TARGET_BYTES")
        .unwrap_or_else(|_| format!("{}MiB", ((32.0 * sf).round() as u64).max(1)));

    let server = PostgresServer::start(PostgresOptions::default()).expect("start PostgreSQL");
    let started = Instant::now();
    load(&server, sf);
    let rows: u64 = server
        .psql(DB, "SELECT count(*) FROM lineitem")
        .unwrap()
        .parse()
        .unwrap();
    let table_mb: f64 = server
        .psql(DB, "SELECT pg_total_relation_size('lineitem') / 1e6")
        .unwrap()
        .parse()
        .unwrap();
    println!(
        "postgres lineitem: SF {sf}, {rows} rows, table {table_mb:.0} MB, loaded in {:.0}s; binary={BIN}",
        started.elapsed().as_secs_f64()
    );
    let copy_bytes = binary_copy_bytes(&server);

    // Warm the page cache, then the physical limit.
    copy_to_dev_null(&server);
    let copy_secs = copy_to_dev_null(&server);
    println!(
        "{:<28} {:>12} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "run", "rows/s", "COPY MB/s", "vs COPY", "peak RSS", "time", "CPU"
    );
    let copy_rate = rows as f64 / copy_secs;
    println!(
        "{:<28} {:>12.0} {:>10.1} {:>8} {:>10} {:>9.1}s {:>10}",
        "psql \\copy binary > null",
        copy_rate,
        copy_bytes as f64 / 1e6 / copy_secs,
        "1.00",
        "-",
        copy_secs,
        "-"
    );
    for w in workers {
        let dir = std::env::temp_dir().join(format!("backhaul-bench-pg-{}-{w}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("job.toml"), spec(&server, &target_bytes, w)).unwrap();
        let t = Instant::now();
        let (out, peak_kib, cpu_secs) = run_measured(
            Command::new(BIN)
                .current_dir(&dir)
                .arg("--state")
                .arg(dir.join("state.db"))
                .args([
                    "--no-progress",
                    "--output",
                    "json",
                    "backfill",
                    "job.toml",
                    "--workers",
                    &w.to_string(),
                ]),
        );
        let wall = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "backfill failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("backfill --output json");
        let loaded = v["this_run"]["rows"].as_u64().unwrap_or(0);
        assert_eq!(loaded, rows, "backfill loaded {loaded} of {rows} rows: {v}");
        let secs = v["this_run"]["seconds"].as_f64().unwrap_or(wall);
        let rate = rows as f64 / secs;
        println!(
            "{:<28} {:>12.0} {:>10.1} {:>8.2} {:>6} MiB {:>9.1}s {:>9.1}s  ({} chunks, {:.0} MB Parquet, wall incl. planning {:.1}s)",
            format!("backhaul backfill, {w} worker{}", if w == 1 { "" } else { "s" }),
            rate,
            copy_bytes as f64 / 1e6 / secs,
            rate / copy_rate,
            peak_kib / 1024,
            secs,
            cpu_secs,
            v["summary"]["chunks"].as_u64().unwrap_or(0),
            v["files"]["bytes"].as_f64().unwrap_or(0.0) / 1e6,
            wall
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Generates lineitem with tpchgen-cli straight into `COPY ... FROM STDIN`, then indexes and
/// analyzes it.
fn load(server: &PostgresServer, sf: f64) {
    server.psql(DB, DDL).expect("create lineitem");
    let mut generator = Command::new("tpchgen-cli")
        .args(["csv", "-s", &sf.to_string(), "--tables", "lineitem", "--stdout"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tpchgen-cli (pip install tpchgen-cli)");
    let csv = generator.stdout.take().unwrap();
    let status = server
        .psql_command(DB)
        .args(["-c", "\\copy lineitem FROM STDIN (FORMAT csv, HEADER true)"])
        .stdin(csv)
        .status()
        .expect("psql");
    assert!(status.success(), "loading lineitem failed");
    assert!(generator.wait().unwrap().success(), "tpchgen-cli failed");
    server
        .psql(
            DB,
            "CREATE INDEX lineitem_shipdate ON lineitem (l_shipdate); VACUUM ANALYZE lineitem;",
        )
        .expect("index and analyze");
}

/// Size of the binary COPY output (not timed).
fn binary_copy_bytes(server: &PostgresServer) -> u64 {
    let mut child = server
        .psql_command(DB)
        .args(["-c", "\\copy (SELECT * FROM lineitem) TO STDOUT (FORMAT binary)"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("psql");
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert!(child.wait().unwrap().success());
    total
}

/// Seconds for `\copy (SELECT * FROM lineitem) TO '/dev/null' (FORMAT binary)`.
fn copy_to_dev_null(server: &PostgresServer) -> f64 {
    let t = Instant::now();
    let status = server
        .psql_command(DB)
        .args(["-c", "\\copy (SELECT * FROM lineitem) TO '/dev/null' (FORMAT binary)"])
        .status()
        .expect("psql");
    assert!(status.success());
    t.elapsed().as_secs_f64()
}

/// The job spec, its plan balanced for the `workers` that run it.
fn spec(server: &PostgresServer, target_bytes: &str, workers: u32) -> String {
    format!(
        r#"version = 1
name = "lineitem"

[source]
kind = "postgres"
host = "{host}"
port = {port}
user = "{user}"
database = "{DB}"
table = "public.lineitem"
cursor = "l_shipdate"

[source.password]
file = "{password}"

[range]
from = "1992-01-01"
to = "1999-01-01"

[chunking]
policy = "target_bytes"
target_bytes = "{target_bytes}"
workers = {workers}

[stage]
path = "stage"

[destination]
kind = "local"
path = "warehouse"
table = "lineitem"
"#,
        host = server.host(),
        port = server.port(),
        user = server.user(),
        password = server.password_file().display(),
    )
}
