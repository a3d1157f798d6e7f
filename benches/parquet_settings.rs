//! Parquet writer settings, measured: which columns get a dictionary, and the zstd level.
//!
//! Run: `cargo bench -p backhaul-cli --bench parquet_settings` (optimized build; on 2 cores
//! build it in its own target dir with `CARGO_TARGET_DIR`).
//!
//! Environment:
//! - `BACKHAUL_BENCH_PARQUET`: a Parquet file to re-encode (e.g. a chunk file backhaul wrote).
//!   Without it, TPC-H `lineitem` is generated with `tpchgen-cli` (`pip install tpchgen-cli`).
//! - `BACKHAUL_BENCH_SF`: scale factor of the generated lineitem (default `1`).
//! - `BACKHAUL_BENCH_REPEAT`: rounds, variants alternating within each (default `3`); the median
//!   is reported.
//! - `BACKHAUL_BENCH_LEVELS`: zstd levels (default `1,3`).
//!
//! Each variant encodes the same Arrow batches with the worker's own `writer_properties` on one
//! thread, as a chunk's writer does, into a file on disk; reported are seconds, rows/s and the
//! output size. Nothing is asserted: a measurement, not a test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use arrow::array::RecordBatch;
use backhaul_worker::encoding::{DictionaryPolicy, writer_properties};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The worker's row-group bound at the default file size.
const ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let repeat: usize = env_or("BACKHAUL_BENCH_REPEAT", "3")
        .parse()
        .expect("BACKHAUL_BENCH_REPEAT");
    let levels: Vec<i32> = env_or("BACKHAUL_BENCH_LEVELS", "1,3")
        .split(',')
        .map(|l| l.trim().parse().expect("BACKHAUL_BENCH_LEVELS: comma-separated levels"))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let input = match std::env::var("BACKHAUL_BENCH_PARQUET") {
        Ok(path) => PathBuf::from(path),
        Err(_) => generate_lineitem(dir.path(), &env_or("BACKHAUL_BENCH_SF", "1")),
    };
    let batches = read_batches(&input);
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let memory: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    println!(
        "input {}: {rows} rows, {} columns, {:.0} MB in memory",
        input.display(),
        batches[0].num_columns(),
        memory as f64 / 1e6
    );

    let policies = [
        ("sampled", DictionaryPolicy::Sampled),
        ("always", DictionaryPolicy::Always),
        ("never", DictionaryPolicy::Never),
    ];
    let variants: Vec<(String, DictionaryPolicy, i32)> = levels
        .iter()
        .flat_map(|&level| {
            policies
                .iter()
                .map(move |(name, p)| (format!("dictionary {name}, zstd {level}"), *p, level))
        })
        .collect();
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut sizes = vec![0u64; variants.len()];
    for _ in 0..repeat {
        for (i, (_, policy, level)) in variants.iter().enumerate() {
            let out = dir.path().join(format!("variant-{i}.parquet"));
            let t = Instant::now();
            encode(&batches, &out, *policy, *level);
            seconds[i].push(t.elapsed().as_secs_f64());
            sizes[i] = std::fs::metadata(&out).unwrap().len();
            std::fs::remove_file(&out).unwrap();
        }
    }
    let props = writer_properties(&batches[0], 3, ROW_GROUP_BYTES, DictionaryPolicy::Sampled).unwrap();
    let with: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .filter(|f| props.dictionary_enabled(&parquet::schema::types::ColumnPath::from(f.name().as_str())))
        .map(|f| f.name().clone())
        .collect();
    println!("the sampled rule keeps a dictionary for: {}", with.join(", "));
    println!();
    println!("| settings | median s | rows/s | output MB | all runs s |");
    println!("|---|---:|---:|---:|---|");
    for (i, (name, _, _)) in variants.iter().enumerate() {
        let mut runs = seconds[i].clone();
        runs.sort_by(f64::total_cmp);
        let median = runs[runs.len() / 2];
        println!(
            "| {name} | {median:.2} | {:.0} | {:.1} | {} |",
            rows as f64 / median,
            sizes[i] as f64 / 1e6,
            seconds[i]
                .iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn encode(batches: &[RecordBatch], out: &Path, policy: DictionaryPolicy, level: i32) {
    let props = writer_properties(&batches[0], level, ROW_GROUP_BYTES, policy).expect("writer properties");
    let file = File::create(out).expect("create output");
    let mut writer = ArrowWriter::try_new(file, batches[0].schema(), Some(props)).expect("writer");
    for batch in batches {
        writer.write(batch).expect("write");
    }
    writer.close().expect("close");
}

fn read_batches(path: &Path) -> Vec<RecordBatch> {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("a Parquet file")
        .with_batch_size(8192)
        .build()
        .expect("reader")
        .map(|b| b.expect("batch"))
        .collect()
}

/// TPC-H lineitem as Parquet, from tpchgen-cli.
fn generate_lineitem(dir: &Path, sf: &str) -> PathBuf {
    let status = Command::new("tpchgen-cli")
        .args(["parquet", "-s", sf, "--tables", "lineitem", "--output-dir"])
        .arg(dir)
        .status()
        .expect("tpchgen-cli (pip install tpchgen-cli)");
    assert!(status.success(), "tpchgen-cli failed");
    dir.join("lineitem.parquet")
}
