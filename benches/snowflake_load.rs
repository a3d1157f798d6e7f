//! Snowflake destination against a local fakesnow: PUT throughput and the latency of one chunk
//! commit (PUT, BEGIN, DELETE, COPY, fingerprint, control row, COMMIT).
//!
//! Run (debug build; an optimized build of the workspace is not needed for a server-bound
//! measurement): `cargo bench --profile dev -p backhaul-sink-snowflake --bench snowflake_load`.
//! Optional: `BACKHAUL_BENCH_DAYS=4` (one chunk per day of the embedded source) and
//! `BACKHAUL_BENCH_ROWS_PER_DAY=40000`. Needs fakesnow (`scripts/ensure-servers`).
//!
//! fakesnow writes PUT bodies to its local disk and runs COPY in DuckDB, so the figures measure
//! this client and destination plus a local server, not Snowflake's. Nothing is asserted.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use backhaul_conformance::{evidence, stage_batches};
use backhaul_core::connector::{ChunkCommit, Destination, Source};
use backhaul_core::cursor::{CursorKind, CursorRange, SpecBound};
use backhaul_core::stage::Stage;
use backhaul_sink_snowflake::{SnowflakeDestination, SnowflakeDestinationSpec};
use backhaul_snowflake_client::{Client, PutFile, PutOptions};
use backhaul_source_embedded::{EmbeddedSource, EmbeddedSourceSpec};
use backhaul_testkit::fakesnow::FakeSnow;
use futures::TryStreamExt;
use object_store::path::Path;

fn main() {
    // `cargo test --benches` runs bench targets with `--test`-like flags; do nothing then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().expect(name))
        .unwrap_or(default)
}

fn day(n: i64) -> CursorRange {
    let start = SpecBound::parse("2023-03-01")
        .unwrap()
        .to_cursor(CursorKind::Timestamp)
        .unwrap();
    let day = 86_400_000_000;
    CursorRange::new(start + n * day, start + (n + 1) * day)
}

async fn run() {
    let fake = FakeSnow::start().expect("fakesnow is not installed: run scripts/ensure-servers");
    let days = env_number("BACKHAUL_BENCH_DAYS", 4) as i64;
    let rows_per_day = env_number("BACKHAUL_BENCH_ROWS_PER_DAY", 40_000);
    let dir = tempfile::tempdir().unwrap();
    let stage = Stage::local(&dir.path().join("stage")).await.unwrap();
    std::fs::write(dir.path().join("password"), "any\n").unwrap();
    let spec: SnowflakeDestinationSpec = toml::from_str(&format!(
        r#"
account = "bench"
base_url = "{}"
user = "bench"
password_file = "{}"
database = "BENCH"
schema = "PUBLIC"
warehouse = "BENCH_WH"
table = "ORDERS"
stage = "internal:BENCH_STAGE"
file_size = "32MiB"
allow_small_files = true
put_parallel = 1
"#,
        fake.url,
        dir.path().join("password").display()
    ))
    .unwrap();
    let admin = Client::connect(spec.client_config().unwrap()).await.unwrap();
    admin.query("CREATE STAGE IF NOT EXISTS BENCH_STAGE").await.unwrap();

    let source = EmbeddedSource::open(&EmbeddedSourceSpec {
        path: dir.path().join("orders.db"),
        table: "orders".into(),
        cursor: "created_at".into(),
        rows_per_day,
        seed: 7,
    })
    .unwrap();
    let all = CursorRange::new(day(0).from, day(days - 1).to);
    source.prepare(all).await.unwrap();
    let schema = source.describe().await.unwrap().schema;
    let dest: Arc<dyn Destination> = Arc::new(SnowflakeDestination::new(&spec).unwrap());
    dest.prepare("bench", schema.clone()).await.unwrap();

    println!(
        "snowflake load against fakesnow at {}: {days} chunk(s) of one day, rows_per_day={rows_per_day}",
        fake.url
    );
    println!(
        "{:>5} {:>9} {:>6} {:>9} {:>9} {:>10} {:>11}",
        "chunk", "rows", "files", "MB", "PUT s", "PUT MB/s", "commit s"
    );
    let (mut put_bytes, mut put_secs, mut commits) = (0u64, 0f64, Vec::new());
    for n in 0..days {
        let range = day(n);
        let batches: Vec<RecordBatch> = source.extract(range, 8_192).await.unwrap().try_collect().await.unwrap();
        let files = stage_batches(&stage, "bench", n as u64, 1, &schema, &batches, 2)
            .await
            .unwrap();
        let bytes: u64 = files.iter().map(|f| f.bytes).sum();

        // PUT alone, to a prefix of its own.
        let put: Vec<PutFile> = files
            .iter()
            .map(|f| PutFile {
                name: f.path.rsplit('/').next().unwrap().to_string(),
                store: stage.store().clone(),
                path: Path::from(f.path.as_str()),
                size: f.bytes,
            })
            .collect();
        let started = Instant::now();
        admin
            .put(
                &put,
                &format!("@BENCH_STAGE/put-only/{n}/"),
                &PutOptions {
                    parallel: 1,
                    ..PutOptions::default()
                },
            )
            .await
            .unwrap();
        let put_elapsed = started.elapsed().as_secs_f64();

        // The whole commit.
        let commit = ChunkCommit {
            job_id: "bench".into(),
            chunk_id: n as u64,
            attempt: 1,
            range,
            cursor_column: "created_at".into(),
            extracted: evidence(&schema, &batches).unwrap(),
            files,
            sync: None,
        };
        let started = Instant::now();
        dest.commit_chunk(&stage, &commit).await.unwrap();
        let commit_elapsed = started.elapsed().as_secs_f64();

        let mb = bytes as f64 / 1e6;
        println!(
            "{n:>5} {:>9} {:>6} {mb:>9.2} {put_elapsed:>9.3} {:>10.1} {commit_elapsed:>11.3}",
            commit.extracted.summary.rows,
            commit.files.len(),
            mb / put_elapsed
        );
        put_bytes += bytes;
        put_secs += put_elapsed;
        commits.push(commit_elapsed);
    }
    commits.sort_by(f64::total_cmp);
    println!(
        "PUT: {:.1} MB/s over {:.1} MB; commit latency per chunk: median {:.3} s, max {:.3} s",
        put_bytes as f64 / 1e6 / put_secs,
        put_bytes as f64 / 1e6,
        commits[commits.len() / 2],
        commits[commits.len() - 1]
    );
    let _ = admin.close().await;
}
