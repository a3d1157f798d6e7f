//! Arrow batches to zstd Parquet part files, rolled at a target size.
//!
//! Runs on a blocking thread fed by a bounded channel: encoding and compression are CPU work
//! and must not stall the IO runtime. Memory is bounded by the channel depth plus one row
//! group, whatever the chunk size: row groups are flushed by size, files rolled by size.
//!
//! Each finished part is handed to the uploader at once, so part N uploads while part N+1 is
//! written. The writer reserves the hand-over slot (a channel of depth 1) before it starts a
//! part, so it never runs more than one part ahead: at most two part files are on disk.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use backhaul_core::checksum::RowChecksum;
use backhaul_core::fingerprint::FingerprintBuilder;
use backhaul_core::localfile::HashingWriter;
use backhaul_core::proof::ChunkEvidence;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::encoding::{DictionaryPolicy, writer_properties};
use crate::error::Result;

/// How part files are written.
#[derive(Debug, Clone)]
pub struct PartWriterConfig {
    /// Roll to a new file once a file reaches this many bytes.
    pub target_file_bytes: u64,
    /// zstd level; 3 is zstd's own default and a good speed/size balance for bulk loads.
    pub zstd_level: i32,
    /// Which columns get a dictionary.
    pub dictionary: DictionaryPolicy,
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
    /// xxh3-64 of the file's bytes, hashed as they were written.
    pub xxh3: u64,
}

/// What the writer measured over everything it wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenParts {
    /// Parts handed to the uploader.
    pub parts: usize,
    /// Rows, checksum and fingerprint of every row written.
    pub evidence: ChunkEvidence,
}

/// Where finished parts go, and how the writer learns that the chunk failed elsewhere.
pub struct PartSink {
    /// Finished parts, in order; depth 1.
    pub parts: mpsc::Sender<SpooledPart>,
    /// Cancelled when extraction or upload failed: the writer stops without finishing its part.
    pub cancel: CancellationToken,
}

/// Largest row group we buffer before flushing: bounds memory per writer.
const MAX_ROW_GROUP_BYTES: u64 = 64 * 1024 * 1024;

/// Writes every batch received on `rx` into part files under `dir`, rolling at the target
/// size, and hands each finished part to `sink`; returns how many parts and the evidence
/// (rows, checksum, fingerprint) of everything written, measured on this thread next to the
/// encoding. `written_bytes` is
/// updated as files grow, for progress reports.
///
/// Stops with [`Error::Cancelled`](backhaul_core::Error::Cancelled) when `sink` is cancelled
/// or its receiver is gone: whoever did that reports the cause.
pub fn write_parts(
    mut rx: mpsc::Receiver<RecordBatch>,
    schema: SchemaRef,
    dir: &Path,
    config: &PartWriterConfig,
    written_bytes: Arc<AtomicU64>,
    sink: PartSink,
) -> Result<WrittenParts> {
    let row_group_bytes = MAX_ROW_GROUP_BYTES.min((config.target_file_bytes / 2).max(64 * 1024));
    // Decided from the chunk's first rows, then kept for all its parts.
    let mut props: Option<WriterProperties> = None;
    let mut checksum = RowChecksum::new(&schema)?;
    let mut fingerprint = FingerprintBuilder::new(&schema);
    let mut parts = 0usize;
    let mut open: Option<OpenPart<'_>> = None;
    let mut closed_bytes = 0u64;
    while let Some(batch) = rx.blocking_recv() {
        if sink.cancel.is_cancelled() {
            return Err(backhaul_core::Error::Cancelled.into());
        }
        if batch.num_rows() == 0 {
            continue;
        }
        checksum.update(&batch)?;
        fingerprint.update(&batch)?;
        if props.is_none() {
            props = Some(writer_properties(
                &batch,
                config.zstd_level,
                row_group_bytes as usize,
                config.dictionary,
            )?);
        }
        if open.is_none() {
            // Wait until the uploader took the previous part: at most one part waits.
            let slot =
                futures::executor::block_on(sink.parts.reserve()).map_err(|_| backhaul_core::Error::Cancelled)?;
            let path = dir.join(format!("part-{parts:04}.parquet"));
            let file = File::create(&path).map_err(|e| backhaul_core::Error::io(&path, e))?;
            open = Some(OpenPart {
                writer: ArrowWriter::try_new(HashingWriter::new(file), schema.clone(), props.clone())?,
                path,
                rows: 0,
                slot,
            });
        }
        let part = open.as_mut().expect("opened above");
        part.writer.write(&batch)?;
        part.rows += batch.num_rows() as u64;
        let size = part.writer.bytes_written() as u64 + part.writer.in_progress_size() as u64;
        written_bytes.store(closed_bytes + part.writer.bytes_written() as u64, Ordering::Relaxed);
        if size >= config.target_file_bytes {
            closed_bytes += open.take().expect("open").finish()?;
            parts += 1;
        }
    }
    if sink.cancel.is_cancelled() {
        return Err(backhaul_core::Error::Cancelled.into());
    }
    if let Some(part) = open.take() {
        closed_bytes += part.finish()?;
        parts += 1;
    }
    written_bytes.store(closed_bytes, Ordering::Relaxed);
    let evidence = ChunkEvidence {
        summary: checksum.summary(),
        fingerprint: fingerprint.finish(),
    };
    Ok(WrittenParts { parts, evidence })
}

/// The part being written, with its reserved place in the hand-over channel.
struct OpenPart<'a> {
    writer: ArrowWriter<HashingWriter<File>>,
    path: PathBuf,
    rows: u64,
    slot: mpsc::Permit<'a, SpooledPart>,
}

impl OpenPart<'_> {
    /// Closes the file and hands it to the uploader; returns its size.
    fn finish(self) -> Result<u64> {
        // Writes the footer and flushes: the hash has seen every byte of the file.
        let file = self.writer.into_inner()?;
        let hash = file.hash();
        drop(file.into_inner());
        self.slot.send(SpooledPart {
            path: self.path,
            bytes: hash.bytes,
            rows: self.rows,
            xxh3: hash.xxh3,
        });
        Ok(hash.bytes)
    }
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
        let (parts_tx, mut parts_rx) = mpsc::channel(1);
        let sch = schema.clone();
        let d = dir.path().to_path_buf();
        let handle = std::thread::spawn(move || {
            let cfg = PartWriterConfig {
                target_file_bytes: 256 * 1024,
                zstd_level: 3,
                dictionary: DictionaryPolicy::default(),
            };
            let sink = PartSink {
                parts: parts_tx,
                cancel: CancellationToken::new(),
            };
            write_parts(rx, sch, &d, &cfg, Arc::new(AtomicU64::new(0)), sink)
        });
        // The uploader's side: takes each part as it finishes and moves it out of the spool
        // ("uploads" it); the writer never has more than two parts on disk.
        let uploaded = tempfile::tempdir().unwrap();
        let spool = dir.path().to_path_buf();
        let target = uploaded.path().to_path_buf();
        let uploader = std::thread::spawn(move || {
            let mut parts = Vec::new();
            while let Some(mut p) = parts_rx.blocking_recv() {
                let on_disk = std::fs::read_dir(&spool).unwrap().count();
                assert!(on_disk <= 2, "{on_disk} part files in the spool");
                let moved = target.join(p.path.file_name().unwrap());
                std::fs::rename(&p.path, &moved).unwrap();
                p.path = moved;
                parts.push(p);
            }
            parts
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
        let written = handle.join().unwrap().unwrap();
        let parts = uploader.join().unwrap();
        let summary = written.evidence.summary;
        assert_eq!(summary, expected.summary());
        assert_eq!(written.evidence.fingerprint, expected_fingerprint.finish());
        assert_eq!(written.parts, parts.len());
        assert!(parts.len() > 2, "expected several parts, got {}", parts.len());
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
        for p in &parts {
            let on_disk = backhaul_core::localfile::hash_file(&p.path).unwrap();
            assert_eq!((on_disk.bytes, on_disk.xxh3), (p.bytes, p.xxh3), "{}", p.path.display());
        }
        assert_eq!(parts.iter().map(|p| p.rows).sum::<u64>(), 400_000);
    }
}

#[cfg(test)]
mod cancel_tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(schema: &SchemaRef) -> RecordBatch {
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from_iter_values(0..1000))]).unwrap()
    }

    #[test]
    fn a_cancelled_chunk_hands_over_no_unfinished_part() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(4);
        let (parts_tx, mut parts_rx) = mpsc::channel(1);
        let cancel = CancellationToken::new();
        tx.blocking_send(batch(&schema)).unwrap();
        // Extraction fails after one batch: the feed cancels, then closes its channel.
        cancel.cancel();
        drop(tx);
        let sink = PartSink {
            parts: parts_tx,
            cancel,
        };
        let cfg = PartWriterConfig {
            target_file_bytes: 1 << 30,
            zstd_level: 3,
            dictionary: DictionaryPolicy::default(),
        };
        let e = write_parts(rx, schema, dir.path(), &cfg, Arc::new(AtomicU64::new(0)), sink).unwrap_err();
        assert!(e.to_string().contains("cancelled"), "{e}");
        assert!(parts_rx.blocking_recv().is_none(), "no part was handed over");
    }

    #[test]
    fn a_gone_uploader_stops_the_writer() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(4);
        let (parts_tx, parts_rx) = mpsc::channel(1);
        drop(parts_rx);
        tx.blocking_send(batch(&schema)).unwrap();
        drop(tx);
        let sink = PartSink {
            parts: parts_tx,
            cancel: CancellationToken::new(),
        };
        let cfg = PartWriterConfig {
            target_file_bytes: 1 << 30,
            zstd_level: 3,
            dictionary: DictionaryPolicy::default(),
        };
        let e = write_parts(rx, schema, dir.path(), &cfg, Arc::new(AtomicU64::new(0)), sink).unwrap_err();
        assert!(e.to_string().contains("cancelled"), "{e}");
    }
}
