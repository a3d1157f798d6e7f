//! `backhaul verify` against the local warehouse: it re-measures each committed chunk's proof
//! and exits 3 naming chunk, column and both values when committed data was changed after the
//! commit: a missing row, a duplicated row, one changed number, string or timestamp.

use std::fs::File;

use arrow::array::{RecordBatch, RecordBatchReader};
use backhaul_conformance::corrupt::{Corruption, corrupt, corruptions_for};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::util::{JobDir, JobParams, text};

/// The first data file of committed chunk `chunk`, from its manifest.
fn first_file(job: &JobDir, chunk: u64) -> std::path::PathBuf {
    let table = job.path().join("warehouse/orders");
    let manifest = std::fs::read_to_string(table.join(format!("_manifests/chunk-{chunk:06}.json"))).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    table.join("data").join(manifest["files"][0]["name"].as_str().unwrap())
}

fn read(path: &std::path::Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

fn write(path: &std::path::Path, rows: &RecordBatch) {
    let tmp = path.with_extension("tampered");
    let mut w = ArrowWriter::try_new(File::create(&tmp).unwrap(), rows.schema(), None).unwrap();
    w.write(rows).unwrap();
    w.close().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn verify_names_chunk_column_and_values_of_every_change_after_commit() {
    let job = JobDir::new(&JobParams {
        to: "2023-03-04",
        ..JobParams::default()
    });
    job.ok(&["backfill", job.spec().to_str().unwrap()]);
    let clean = job.json(&["verify", "orders"]);
    assert_eq!(clean["verified"], true, "{clean}");
    assert_eq!(clean["result"]["proved"][0]["proof"], "exact_checksum", "{clean}");
    let status = job.json(&["status", "orders", "--chunks"]);
    assert_eq!(status["proofs"][0]["proof"], "exact_checksum", "{status}");
    assert_eq!(status["proofs"][0]["chunks"], 3, "{status}");
    assert!(
        status["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["proof"] == "exact_checksum"),
        "{status}"
    );

    let victim = first_file(&job, 1);
    let original = std::fs::read(&victim).unwrap();
    let rows = read(&victim);
    let (corruptions, notes) = corruptions_for(&rows, Some("created_at"));
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(corruptions.len(), 5, "{corruptions:?}");
    for corruption in &corruptions {
        write(&victim, &corrupt(&rows, corruption).unwrap());
        let out = job.run(&["verify", "orders", "--output", "json"]);
        assert_eq!(out.status.code(), Some(3), "{corruption}: {}", text(&out.stdout));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["verified"], false);
        let problems = v["result"]["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{corruption}: {v}");
        assert_eq!(
            (problems[0]["chunk"].as_u64(), problems[0]["problem"].as_str()),
            (Some(1), Some("mismatch"))
        );
        let differences = problems[0]["differences"].as_array().unwrap();
        let named = |column: Option<&str>, measure: &str| {
            differences
                .iter()
                .any(|d| d["column"].as_str() == column && d["measure"] == measure)
        };
        match corruption {
            Corruption::DropRow | Corruption::DuplicateRow => assert!(named(None, "rows"), "{corruption}: {v}"),
            _ => {
                let column = corruption.column().unwrap();
                let measure = if matches!(corruption, Corruption::ChangeString(_)) {
                    "byte_length"
                } else {
                    "sum"
                };
                assert!(named(None, "checksum"), "{corruption}: {v}");
                assert!(named(Some(column), measure), "{corruption}: {v}");
                let d = differences
                    .iter()
                    .find(|d| d["column"].as_str() == Some(column))
                    .unwrap();
                assert_ne!(d["expected"], d["actual"]);
                // The text output names chunk, column and both values too.
                let out = job.run(&["verify", "orders"]);
                let shown = text(&out.stdout);
                assert!(
                    shown.contains("chunk      1")
                        && shown.contains(&format!(
                            "column `{column}` {measure}: expected {}, found {}",
                            d["expected"].as_str().unwrap(),
                            d["actual"].as_str().unwrap()
                        )),
                    "{shown}"
                );
            }
        }
        std::fs::write(&victim, &original).unwrap();
    }
    assert_eq!(job.json(&["verify", "orders"])["verified"], true);
}
