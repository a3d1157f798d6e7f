//! Staging batches the way workers do, and summarizing them the way workers measure them.

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use backhaul_core::checksum::{RowChecksum, RowSummary};
use backhaul_core::connector::StagedFile;
use backhaul_core::fingerprint::FingerprintBuilder;
use backhaul_core::proof::ChunkEvidence;
use backhaul_core::stage::Stage;
use backhaul_core::{Error, Result};
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// The zstd level workers use (`backhaul_worker::runner`), so staged files look the same.
const ZSTD_LEVEL: i32 = 3;

/// Writes the rows of `batches` into the stage as zstd Parquet part files of one attempt of
/// one chunk, at [`Stage::part_path`], and returns them in part order, ready for a
/// [`ChunkCommit`](backhaul_core::connector::ChunkCommit).
///
/// The rows are spread evenly over `parts` files (fewer when there are fewer rows, since
/// workers never write an empty part); zero rows give no files at all, like a worker's empty
/// chunk. Files are written with `schema`, which must match the batches' columns. Existing
/// objects at the same paths are overwritten.
pub async fn stage_batches(
    stage: &Stage,
    job_id: &str,
    chunk_id: u64,
    attempt: u32,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    parts: usize,
) -> Result<Vec<StagedFile>> {
    let all = concat_batches(schema, batches)?;
    let rows = all.num_rows();
    let parts = parts.clamp(1, rows.max(1));
    let mut files = Vec::new();
    let mut start = 0;
    for part in 0..parts {
        // Even split: the first `rows % parts` files get one extra row.
        let len = rows / parts + usize::from(part < rows % parts);
        if len == 0 {
            continue;
        }
        let bytes = parquet_bytes(schema, &all.slice(start, len))?;
        start += len;
        let path = Stage::part_path(job_id, chunk_id, attempt, part as u32);
        let size = bytes.len() as u64;
        stage.store().put(&path, PutPayload::from(bytes)).await?;
        files.push(StagedFile {
            path: path.to_string(),
            bytes: size,
            rows: len as u64,
            // Unhashed, like a writer that vouches for nothing: a destination must measure
            // the rows (the `verification` checks stage files that lie about their rows).
            xxh3: None,
        });
    }
    Ok(files)
}

fn parquet_bytes(schema: &SchemaRef, batch: &RecordBatch) -> Result<Vec<u8>> {
    let encode = || -> parquet::errors::Result<Vec<u8>> {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
            .build();
        let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))?;
        writer.write(batch)?;
        writer.into_inner()
    };
    // The core error has no Parquet variant; encoding in memory can only fail on a bug.
    encode().map_err(|e| Error::Internal(format!("encoding a staged Parquet part: {e}")))
}

/// The [`RowSummary`] of `batches` as a worker measures it while extracting.
pub fn summarize(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RowSummary> {
    let mut checksum = RowChecksum::new(schema)?;
    for batch in batches {
        checksum.update(batch)?;
    }
    Ok(checksum.summary())
}

/// The [`ChunkEvidence`] of `batches` (rows, checksum, fingerprint) as a worker's writer
/// measures it.
pub fn evidence(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<ChunkEvidence> {
    let mut fingerprint = FingerprintBuilder::new(schema);
    for batch in batches {
        fingerprint.update(batch)?;
    }
    Ok(ChunkEvidence {
        summary: summarize(schema, batches)?,
        fingerprint: fingerprint.finish(),
    })
}
