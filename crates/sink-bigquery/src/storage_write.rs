//! `write_method = "storage_write"`: a chunk's staged Parquet files are read back from the
//! stage and appended, at explicit offsets, to ONE PENDING stream of the Storage Write API
//! (`backhaul-bigquery-storage-write`) on the chunk's staging table; finalize and batch-commit
//! make them visible there atomically. The rest of the commit (fingerprint of the staging
//! table, the replacing transaction, the control table) is the load-job path's.
//!
//! Batches are cast to the Arrow types BigQuery expects for each column type (NUMERIC as
//! `Decimal128(38, 9)`, BIGNUMERIC as `Decimal256(76, 38)`, TIMESTAMP as microseconds in UTC, …):
//! exact, because the column type was chosen to hold the source's values.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use backhaul_bigquery_storage_write::{
    CommitOutcome, Secret, TokenError, TokenProvider, WriteClient, WriteStream, table_path,
};
use backhaul_core::connector::StagedFile;
use backhaul_core::stage::Stage;
use futures::future::BoxFuture;
use gcp_bigquery_client::auth::Authenticator;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{BigQueryError, Result};
use crate::types::BqType;

/// Rows per decoded batch handed to the stream.
const BATCH_ROWS: usize = 8192;

/// The destination's token source, as the Storage Write client asks for it.
pub struct Tokens(pub Arc<dyn Authenticator>);

impl TokenProvider for Tokens {
    fn token(&self) -> BoxFuture<'_, std::result::Result<Secret, TokenError>> {
        Box::pin(async move {
            self.0
                .access_token()
                .await
                .map(Secret::new)
                .map_err(|e| TokenError::Unavailable(e.to_string()))
        })
    }
}

/// The Arrow type BigQuery's `arrow_rows` take for a column of type `t`.
pub fn write_type(t: BqType) -> DataType {
    match t {
        BqType::Int64 => DataType::Int64,
        BqType::Float64 => DataType::Float64,
        BqType::Numeric => DataType::Decimal128(38, 9),
        BqType::BigNumeric => DataType::Decimal256(76, 38),
        BqType::Bool => DataType::Boolean,
        BqType::String | BqType::Json => DataType::Utf8,
        BqType::Bytes => DataType::Binary,
        BqType::Date => DataType::Date32,
        BqType::Time => DataType::Time64(TimeUnit::Microsecond),
        BqType::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
        BqType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// Writes `files` into `staging` through one PENDING stream and commits it; returns the rows
/// the stream holds. `types` are the staging table's column types, in file column order.
pub async fn write_files(
    client: &WriteClient,
    stage: &Stage,
    files: &[StagedFile],
    project: &str,
    dataset: &str,
    staging: &str,
    types: &[BqType],
) -> Result<u64> {
    let path = table_path(project, dataset, staging);
    let mut stream = client.create_pending_stream(&path).await.map_err(storage_error)?;
    let mut offset = 0u64;
    let mut target: Option<SchemaRef> = None;
    for file in files {
        offset = append_file(client, &mut stream, stage, file, offset, types, &mut target).await?;
    }
    client.flush(&mut stream).await.map_err(storage_error)?;
    let rows = client.finalize(&mut stream).await.map_err(storage_error)?;
    if rows != offset {
        return Err(BigQueryError::Protocol(format!(
            "stream {} finalized with {rows} rows, {offset} were appended",
            stream.name()
        )));
    }
    match client
        .batch_commit(&path, &[stream.name()])
        .await
        .map_err(storage_error)?
    {
        CommitOutcome::Committed { .. } | CommitOutcome::AlreadyCommitted => Ok(rows),
    }
}

/// Appends one staged file's rows from `offset`; returns the next offset. The file is fetched
/// whole (at most `file_size`) and decoded on a blocking thread, batches passed over a channel
/// of depth 2, so decoding never runs on the IO runtime.
async fn append_file(
    client: &WriteClient,
    stream: &mut WriteStream,
    stage: &Stage,
    file: &StagedFile,
    mut offset: u64,
    types: &[BqType],
    target: &mut Option<SchemaRef>,
) -> Result<u64> {
    let unreadable = |e: String| BigQueryError::Protocol(format!("staged file {}: {e}", file.path));
    let location = object_store::path::Path::from(file.path.as_str());
    let bytes = stage
        .store()
        .get(&location)
        .await
        .map_err(|e| BigQueryError::Core(e.into()))?
        .bytes()
        .await
        .map_err(|e| BigQueryError::Core(e.into()))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::result::Result<RecordBatch, String>>(2);
    let decoder = tokio::task::spawn_blocking(move || -> std::result::Result<(), String> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
            .map_err(|e| e.to_string())?;
        for batch in reader {
            if tx.blocking_send(batch.map_err(|e| e.to_string())).is_err() {
                break; // The appender stopped: its error is the one reported.
            }
        }
        Ok(())
    });
    let mut appended: Result<()> = Ok(());
    while let Some(batch) = rx.recv().await {
        let step = async {
            let batch = batch.map_err(unreadable)?;
            let schema = target.get_or_insert_with(|| target_schema(batch.schema_ref(), types));
            let batch = cast_batch(&batch, schema)?;
            client.append(stream, offset, &batch).await.map_err(storage_error)
        };
        match step.await {
            Ok(next) => offset = next,
            Err(e) => {
                appended = Err(e);
                break;
            }
        }
    }
    drop(rx);
    let decoded = decoder.await.map_err(|e| unreadable(e.to_string()))?;
    appended?;
    decoded.map_err(unreadable)?;
    Ok(offset)
}

/// The schema of the batches sent: the file's column names with BigQuery's write types.
fn target_schema(file: &SchemaRef, types: &[BqType]) -> SchemaRef {
    let fields: Vec<Field> = file
        .fields()
        .iter()
        .zip(types)
        .map(|(f, t)| Field::new(f.name(), write_type(*t), true))
        .collect();
    Arc::new(Schema::new(fields))
}

fn cast_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            cast(c, f.data_type())
                .map_err(|e| BigQueryError::Protocol(format!("column `{}` to {}: {e}", f.name(), f.data_type())))
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| BigQueryError::Protocol(format!("batch: {e}")))
}

/// A Storage Write error, class kept (decided by its gRPC code in that crate).
fn storage_error(e: backhaul_bigquery_storage_write::Error) -> BigQueryError {
    BigQueryError::StorageWrite {
        class: e.class(),
        message: e.to_string(),
    }
}
