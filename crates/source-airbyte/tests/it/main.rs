//! The Airbyte source against real connector processes: a hand-written fake connector
//! (`fake_source.py`, run by `python3`) for exact windows, checkpoints, resume and bad input,
//! and Airbyte's own `source-faker` (installed by `scripts/ensure-servers`).

mod fake;
mod faker;

use std::collections::BTreeSet;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use backhaul_core::connector::Source;
use backhaul_core::cursor::{CursorKind, CursorRange, SpecBound};
use backhaul_core::{Error, Result};
use backhaul_source_airbyte::{AirbyteSource, AirbyteSourceSpec};
use futures::StreamExt;

/// A source from the TOML of a `[source]` section (without `kind`).
fn source(section: &str) -> AirbyteSource {
    let spec: AirbyteSourceSpec = toml::from_str(section).unwrap();
    backhaul_core::registry::SourceConfig::validate(&spec, "job.toml").unwrap();
    AirbyteSource::open(spec).unwrap()
}

/// `[from, to)` of a timestamp cursor from spec bounds.
fn range(from: &str, to: &str) -> CursorRange {
    let b = |t: &str| SpecBound::parse(t).unwrap().to_cursor(CursorKind::Timestamp).unwrap();
    CursorRange::new(b(from), b(to))
}

/// Every batch of one extract.
async fn read_all(source: &AirbyteSource, range: CursorRange, batch_rows: usize) -> Result<Vec<RecordBatch>> {
    let mut stream = source.extract(range, batch_rows).await?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch?);
    }
    Ok(batches)
}

/// The `id` column of every batch, checked to be unique.
fn ids(batches: &[RecordBatch]) -> BTreeSet<i64> {
    let mut ids = BTreeSet::new();
    for b in batches {
        for id in b.column_by_name("id").unwrap().as_primitive::<Int64Type>().values() {
            assert!(ids.insert(*id), "id {id} read twice");
        }
    }
    ids
}

/// The error of an extract that must fail.
async fn extract_error(source: &AirbyteSource, range: CursorRange) -> Error {
    match read_all(source, range, 100).await {
        Ok(b) => panic!("expected a failure, read {} batches", b.len()),
        Err(e) => e,
    }
}
