//! Measuring rows, checksums and fingerprints of Parquet files on disk, decoding each file
//! once for both; and, where the writer's content hash already vouches for the bytes, only
//! their footers. Blocking: call from `spawn_blocking`.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use backhaul_core::checksum::{ChecksumVersion, RowChecksum};
use backhaul_core::fingerprint::FingerprintBuilder;
use backhaul_core::proof::ChunkEvidence;
use backhaul_core::{Error, Result};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use backhaul_core::schema::schema_difference;

/// Rows per decoded batch; with the row group size of the files this bounds memory.
const READ_BATCH_ROWS: usize = 8192;

/// Everything in `files` together: the files of one chunk.
pub(crate) fn merged(per_file: &[ChunkEvidence], schema: &SchemaRef) -> Result<ChunkEvidence> {
    let mut total = ChunkEvidence {
        summary: Default::default(),
        fingerprint: FingerprintBuilder::new(schema).finish(),
    };
    for e in per_file {
        total.merge(e)?;
    }
    Ok(total)
}

/// Reads every file completely and returns what it holds (rows, checksum, fingerprint), in
/// order. A file that is
/// missing, unreadable as Parquet or not of `schema` fails verification naming the file.
pub(crate) fn measure_files(
    files: &[PathBuf],
    schema: &SchemaRef,
    checksum: ChecksumVersion,
) -> Result<Vec<ChunkEvidence>> {
    files.iter().map(|f| measure_file(f, schema, checksum)).collect()
}

/// The Arrow schema a Parquet file was written with. A missing or unreadable file fails
/// verification naming it.
pub(crate) fn file_schema(path: &PathBuf) -> Result<SchemaRef> {
    Ok(open_footer(path)?.schema().clone())
}

/// Opens a data file and reads its footer: the file must exist and be Parquet.
fn open_footer(path: &PathBuf) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_verified(path, "the data file is missing".into()));
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| not_verified(path, format!("not readable as Parquet: {e}")))
}

fn not_verified(path: &Path, message: String) -> Error {
    Error::VerificationFailed {
        what: path.display().to_string(),
        message,
    }
}

/// Rows of each file from its Parquet footer, which must be readable and of `schema`; reads
/// the footer only, no data page. A file failing that fails verification naming the file.
pub(crate) fn footer_rows(files: &[PathBuf], schema: &SchemaRef) -> Result<Vec<u64>> {
    files
        .iter()
        .map(|f| {
            let builder = open_checked(f, schema)?;
            Ok(u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0))
        })
        .collect()
}

/// Opens a data file and reads its footer: the file must exist, be Parquet, and be of `schema`.
fn open_checked(path: &PathBuf, schema: &SchemaRef) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let builder = open_footer(path)?;
    // The checksum encodes values by type, so a file of another schema could not be compared
    // meaningfully, and DataFusion would have to coerce it at query time.
    if let Some(diff) = schema_difference(schema, builder.schema()) {
        return Err(not_verified(
            path,
            format!("the file's schema differs from its chunk's (chunk vs file): {diff}"),
        ));
    }
    Ok(builder)
}

fn measure_file(path: &PathBuf, schema: &SchemaRef, version: ChecksumVersion) -> Result<ChunkEvidence> {
    let failed = |message: String| not_verified(path, message);
    let reader = open_checked(path, schema)?
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(|e| failed(format!("not readable as Parquet: {e}")))?;
    let mut checksum = RowChecksum::with_version(schema, version)?;
    let mut fingerprint = FingerprintBuilder::new(schema);
    for batch in reader {
        let batch = batch.map_err(|e| failed(format!("reading rows: {e}")))?;
        checksum.update(&batch)?;
        fingerprint.update(&batch)?;
    }
    Ok(ChunkEvidence {
        summary: checksum.summary(),
        fingerprint: fingerprint.finish(),
    })
}
