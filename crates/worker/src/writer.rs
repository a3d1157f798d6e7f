//! Arrow batches to zstd Parquet part files, rolled at a target size.
//!
//! Runs on a blocking thread fed by a bounded channel: encoding and compression are CPU work
//! and must not stall the IO runtime. Memory is bounded by the channel depth plus one row
//! group, whatever the chunk size: row groups are flushed by size, files rolled by size.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use backhaul_core::checksum::RowChecksum;
use backhaul_core::fingerprint::FingerprintBuilder;
use backhaul_core::proof::ChunkEvidence;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tokio::sync::mpsc;

use crate::error::Result;

/// How part files are written.
#[derive(Debug, Clone)]
pub struct PartWriterConfig {
    /// Roll to a new file once a file reaches this many bytes.
    pub target_file_bytes: u64,
    /// zstd level; 3 is zstd's own default and a good speed/size balance for bulk loads.
    pub zstd_level: i32,
}

/// A finished part file in the local spool directory.
#[derive(Debug, Clone)]
pub struct SpooledPart {
    /// Local path.
    pub path: PathBuf,
    /// File size.
    pub bytes: u64,
    /// Rows in the file.
    pub rows: u64,
}

/// Largest row group we buffer before flushing: bounds memory per writer.
const MAX_ROW_GROUP_BYTES: u64 = 64 * 1024 * 1024;

/// Writes every batch received on `rx` into part files under `dir`, rolling at the target
/// size; returns the parts and the evidence (rows, checksum, fingerprint) of everything
/// written, measured on this thread next to the encoding. `written_bytes` is
/// updated as files grow, for progress reports.
pub fn write_parts(
    mut rx: mpsc::Receiver<RecordBatch>,
    schema: SchemaRef,
    dir: &Path,
    config: &PartWriterConfig,
    written_bytes: Arc<AtomicU64>,
) -> Result<(Vec<SpooledPart>, ChunkEvidence)> {
    let row_group_bytes = MAX_ROW_GROUP_BYTES.min((config.target_file_bytes / 2).max(64 * 1024));
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(config.zstd_level)?))
        .set_max_row_group_row_count(Some(1024 * 1024))
        .set_max_row_group_bytes(Some(row_group_bytes as usize))
        .build();
    let mut checksum = RowChecksum::new(&schema)?;
    let mut fingerprint = FingerprintBuilder::new(&schema);
    let mut parts: Vec<SpooledPart> = Vec::new();
    let mut open: Option<(ArrowWriter<File>, PathBuf, u64)> = None;
    let mut closed_bytes = 0u64;
    while let Some(batch) = rx.blocking_recv() {
        if batch.num_rows() == 0 {
            continue;
        }
        checksum.update(&batch)?;
        fingerprint.update(&batch)?;
        if open.is_none() {
            let path = dir.join(format!("part-{:04}.parquet", parts.len()));
            let file = File::create(&path).map_err(|e| backhaul_core::Error::io(&path, e))?;
            open = Some((
                ArrowWriter::try_new(file, schema.clone(), Some(props.clone()))?,
                path,
                0,
            ));
        }
        let (writer, _, rows) = open.as_mut().expect("opened above");
        writer.write(&batch)?;
        *rows += batch.num_rows() as u64;
        let size = writer.bytes_written() as u64 + writer.in_progress_size() as u64;
        written_bytes.store(closed_bytes + writer.bytes_written() as u64, Ordering::Relaxed);
        if size >= config.target_file_bytes {
            let part = close(open.take().expect("open"))?;
            closed_bytes += part.bytes;
            parts.push(part);
        }
    }
    if let Some(w) = open.take() {
        parts.push(close(w)?);
    }
    written_bytes.store(parts.iter().map(|p| p.bytes).sum(), Ordering::Relaxed);
    let evidence = ChunkEvidence {
        summary: checksum.summary(),
        fingerprint: fingerprint.finish(),
    };
    Ok((parts, evidence))
}

fn close((writer, path, rows): (ArrowWriter<File>, PathBuf, u64)) -> Result<SpooledPart> {
    writer.close()?;
    let bytes = std::fs::metadata(&path)
        .map_err(|e| backhaul_core::Error::io(&path, e))?
        .len();
    Ok(SpooledPart { path, bytes, rows })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    #[test]
    fn rolls_files_at_target_and_keeps_every_row() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(4);
        let sch = schema.clone();
        let d = dir.path().to_path_buf();
        let handle = std::thread::spawn(move || {
            let cfg = PartWriterConfig {
                target_file_bytes: 256 * 1024,
                zstd_level: 3,
            };
            write_parts(rx, sch, &d, &cfg, Arc::new(AtomicU64::new(0)))
        });
        let mut expected = RowChecksum::new(&schema).unwrap();
        let mut expected_fingerprint = FingerprintBuilder::new(&schema);
        for i in 0..40 {
            let ids: Vec<i64> = (i * 10_000..(i + 1) * 10_000).collect();
            let strs: Vec<String> = ids
                .iter()
                .map(|v| format!("row-{}", v.wrapping_mul(2654435761) % 1_000_003))
                .collect();
            let b = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(strs))],
            )
            .unwrap();
            expected.update(&b).unwrap();
            expected_fingerprint.update(&b).unwrap();
            tx.blocking_send(b).unwrap();
        }
        drop(tx);
        let (parts, evidence) = handle.join().unwrap().unwrap();
        let summary = evidence.summary;
        assert_eq!(summary, expected.summary());
        assert_eq!(evidence.fingerprint, expected_fingerprint.finish());
        assert!(parts.len() > 1, "expected several parts, got {}", parts.len());
        let mut reread = RowChecksum::new(&schema).unwrap();
        for p in &parts {
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&p.path).unwrap())
                .unwrap()
                .build()
                .unwrap();
            for b in reader {
                reread.update(&b.unwrap()).unwrap();
            }
        }
        assert_eq!(reread.summary(), summary);
        assert_eq!(parts.iter().map(|p| p.rows).sum::<u64>(), 400_000);
    }
}
