//! Storage Write API throughput: lineitem-shaped batches (TPC-H columns, synthetic values)
//! appended through PENDING streams to bqemulator, then finalized and batch-committed, as the
//! BigQuery destination does per chunk. Reports rows/s and MB/s of the append phase, the
//! finalize + commit time, and the client's own encoding rate (Arrow IPC and splitting, no
//! network) to show which side bounds the figure.
//!
//! Run: `cargo bench -p backhaul-bigquery-storage-write --bench bigquery_storage_write`
//! (optimized build; needs the bqemulator venv that `scripts/ensure-servers` installs).
//! Optional: `BACKHAUL_BENCH_ROWS=1000000` (rows per run), `BACKHAUL_BENCH_BATCH_ROWS=8192`
//! (rows per appended batch, the sources' batch size), `BACKHAUL_BENCH_STREAMS=1,4` (streams
//! written concurrently, one per chunk, rows split evenly between them),
//! `BACKHAUL_BENCH_IN_FLIGHT=1,4` (append requests sent before waiting for an answer; 1 waits
//! for every answer, a round trip per batch).
//! The emulator is a Python process that decodes every request with pyarrow and buffers the
//! rows until the commit: against it the figure is the emulator's, not BigQuery's.
//! Nothing is asserted: this is a measurement, not a test.

#[path = "../crates/bigquery-storage-write/tests/support/bqemulator.rs"]
mod bqemulator;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use backhaul_bigquery_storage_write::{
    ClientConfig, DEFAULT_MAX_REQUEST_BYTES, WriteClient, encode_pieces, table_path,
};
use serde_json::json;
use tokio::task::JoinSet;

const DATASET: &str = "bench";

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|v| v.trim().parse().expect("comma-separated numbers"))
        .collect()
}

/// `count` lineitem-shaped rows starting at row `first` (deterministic values).
fn lineitem(first: usize, count: usize) -> RecordBatch {
    let row = |i: usize| (first + i) as i64;
    let int =
        |f: &dyn Fn(i64) -> i64| -> ArrayRef { Arc::new(Int64Array::from_iter_values((0..count).map(|i| f(row(i))))) };
    let float = |f: &dyn Fn(i64) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values((0..count).map(|i| f(row(i)))))
    };
    let text = |f: &dyn Fn(i64) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values((0..count).map(|i| f(row(i)))))
    };
    let date = |offset: i64| -> ArrayRef {
        Arc::new(Date32Array::from_iter_values(
            (0..count).map(|i| 8036 + ((row(i) * 7 + offset) % 2526) as i32),
        ))
    };
    let flags = ["A", "N", "R"];
    let instructions = ["DELIVER IN PERSON", "COLLECT COD", "NONE", "TAKE BACK RETURN"];
    let modes = ["REG AIR", "AIR", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB"];
    RecordBatch::try_from_iter([
        ("l_orderkey", int(&|r| r / 4 + 1)),
        ("l_partkey", int(&|r| (r * 7919) % 200_000 + 1)),
        ("l_suppkey", int(&|r| (r * 104_729) % 10_000 + 1)),
        ("l_linenumber", int(&|r| r % 4 + 1)),
        ("l_quantity", float(&|r| (r % 50 + 1) as f64)),
        ("l_extendedprice", float(&|r| ((r * 3571) % 10_000_000) as f64 / 100.0)),
        ("l_discount", float(&|r| (r % 11) as f64 / 100.0)),
        ("l_tax", float(&|r| (r % 9) as f64 / 100.0)),
        ("l_returnflag", text(&|r| flags[(r % 3) as usize].to_string())),
        (
            "l_linestatus",
            text(&|r| if r % 2 == 0 { "O" } else { "F" }.to_string()),
        ),
        ("l_shipdate", date(0)),
        ("l_commitdate", date(30)),
        ("l_receiptdate", date(45)),
        ("l_shipinstruct", text(&|r| instructions[(r % 4) as usize].to_string())),
        ("l_shipmode", text(&|r| modes[(r % 7) as usize].to_string())),
        (
            "l_comment",
            text(&|r| format!("carefully regular packages {r} haggle furiously")),
        ),
    ])
    .unwrap()
}

fn table_fields() -> serde_json::Value {
    let batch = lineitem(0, 1);
    let fields: Vec<_> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let kind = match f.data_type() {
                arrow::datatypes::DataType::Int64 => "INTEGER",
                arrow::datatypes::DataType::Float64 => "FLOAT",
                arrow::datatypes::DataType::Date32 => "DATE",
                _ => "STRING",
            };
            json!({"name": f.name(), "type": kind, "mode": "NULLABLE"})
        })
        .collect();
    json!(fields)
}

/// Writes `rows` rows from `first` through one PENDING stream; returns (append time, stream).
async fn write_chunk(
    client: WriteClient,
    path: String,
    first: usize,
    rows: usize,
    batch_rows: usize,
) -> (Duration, String, u64) {
    let started = Instant::now();
    let mut stream = client.create_pending_stream(&path).await.expect("create stream");
    let mut offset = 0;
    let mut done = 0;
    while done < rows {
        let count = batch_rows.min(rows - done);
        // Built outside the clock's concern: a source hands batches over ready-made.
        let batch = lineitem(first + done, count);
        offset = client.append(&mut stream, offset, &batch).await.expect("append");
        done += count;
    }
    let appended = started.elapsed();
    let finalized = client.finalize(&mut stream).await.expect("finalize");
    assert_eq!(finalized, rows as u64);
    (appended, stream.name().to_string(), finalized)
}

fn main() {
    let rows = env_list("BACKHAUL_BENCH_ROWS", "1000000")[0];
    let batch_rows = env_list("BACKHAUL_BENCH_BATCH_ROWS", "8192")[0];
    let stream_counts = env_list("BACKHAUL_BENCH_STREAMS", "1,4");
    let in_flight_counts = env_list("BACKHAUL_BENCH_IN_FLIGHT", "1,4");

    // The client's own work: encode and split every batch, no network.
    let started = Instant::now();
    let mut encoded_bytes = 0usize;
    let mut done = 0;
    while done < rows {
        let count = batch_rows.min(rows - done);
        let batch = lineitem(done, count);
        let pieces = encode_pieces(&batch, DEFAULT_MAX_REQUEST_BYTES - 64 * 1024).unwrap();
        encoded_bytes += pieces.iter().map(|p| p.bytes.len()).sum::<usize>();
        done += count;
    }
    let encode_time = started.elapsed();
    let mb = encoded_bytes as f64 / 1e6;
    println!(
        "client encoding (build + IPC-encode {rows} rows in batches of {batch_rows}): {:.2} s, {:.0} rows/s, {:.1} MB/s, {:.1} MB, {:.0} B/row",
        encode_time.as_secs_f64(),
        rows as f64 / encode_time.as_secs_f64(),
        mb / encode_time.as_secs_f64(),
        mb,
        encoded_bytes as f64 / rows as f64
    );

    let emulator = bqemulator::emulator();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        emulator.create_dataset(DATASET).await;
        for (&streams, &in_flight) in
            stream_counts.iter().flat_map(|s| in_flight_counts.iter().map(move |f| (s, f)))
        {
            let mut config = ClientConfig::new(emulator.grpc.clone(), None);
            config.max_in_flight = in_flight;
            let client = WriteClient::connect_with(config).await.unwrap();
            let table = format!("lineitem_{streams}_{in_flight}");
            emulator.create_table(DATASET, &table, table_fields()).await;
            let path = table_path(bqemulator::PROJECT, DATASET, &table);
            let per_stream = rows / streams;
            let started = Instant::now();
            let mut writers = JoinSet::new();
            for s in 0..streams {
                writers.spawn(write_chunk(client.clone(), path.clone(), s * per_stream, per_stream, batch_rows));
            }
            let mut names = Vec::new();
            while let Some(result) = writers.join_next().await {
                let (_, name, _) = result.expect("writer");
                names.push(name);
            }
            let appended_at = started.elapsed();
            let commit_started = Instant::now();
            client.batch_commit(&path, &names).await.expect("commit");
            let commit = commit_started.elapsed();
            let total = started.elapsed();
            let written = per_stream * streams;
            let count = emulator.count(DATASET, &table).await;
            assert_eq!(count, written as u64);
            println!(
                "streams={streams} in_flight={in_flight} rows={written} batch_rows={batch_rows}: create+append+finalize {:.2} s ({:.0} rows/s, \
                 {:.1} MB/s), commit {:.2} s, end to end {:.2} s ({:.0} rows/s)",
                appended_at.as_secs_f64(),
                written as f64 / appended_at.as_secs_f64(),
                mb * written as f64 / rows as f64 / appended_at.as_secs_f64(),
                commit.as_secs_f64(),
                total.as_secs_f64(),
                written as f64 / total.as_secs_f64()
            );
        }
    });
}
