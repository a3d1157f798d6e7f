//! Dedup (replace-by-key) for tables of `[sync] mode = "dedup"` jobs.
//!
//! Chunks are committed exactly as any other (their own files, their own manifest, their own
//! proof), and each manifest of a dedup commit records the key and cursor columns. Readers
//! ([`crate::query`]) then see one row per key: the version with the newest cursor, and among
//! versions with the same cursor (a lookback chunk re-reading a row) the one of the highest
//! chunk id, which read the source last. So replacing by key needs no rewrite of other chunks'
//! files and stays atomic with the per-chunk manifest rename: every committed set of manifests
//! is a consistent table, and a chunk's proof still covers exactly what the chunk wrote.
//!
//! At commit time, under the table lock, the chunk's keys are compared with the keys of every
//! other committed chunk to record rows inserted (new keys) and updated (keys already loaded)
//! in the manifest. That reads the key columns of the whole table, once per chunk: fine for a
//! local warehouse, documented in docs/destinations/local.md.

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;

use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use backhaul_core::connector::ChunkCommit;
use backhaul_core::dedup::dedup_sync;
use backhaul_core::{Error, Result};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::meta::{TablePaths, read_all_manifests};

/// What a dedup commit records in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupManifest {
    /// The primary key columns.
    pub key_columns: Vec<String>,
    /// The cursor column: the newest version of a key is the one with the largest cursor.
    pub cursor_column: String,
    /// Keys of this chunk that no other committed chunk held when it committed.
    pub rows_inserted: u64,
    /// Keys of this chunk that another committed chunk already held (a newer version, or the
    /// same version re-read by a lookback chunk).
    pub rows_updated: u64,
}

/// The dedup part of a commit's manifest, or `None` for a plain commit. `files` are the
/// chunk's verified files (not yet installed); `schema` the table's. Blocking; call under the
/// table lock, so the counts see every other commit whole.
pub(crate) fn dedup_manifest(
    paths: &TablePaths,
    table: &str,
    schema: &SchemaRef,
    commit: &ChunkCommit,
    files: &[PathBuf],
) -> Result<Option<DedupManifest>> {
    let Some(sync) = dedup_sync(commit, table, |c| schema.index_of(c).is_ok())? else {
        return Ok(None);
    };
    let mut others = HashSet::new();
    for manifest in read_all_manifests(paths)?
        .iter()
        .filter(|m| m.chunk_id != commit.chunk_id)
    {
        let files: Vec<PathBuf> = manifest.files.iter().map(|f| paths.data_file(&f.name)).collect();
        collect_keys(&files, schema, &sync.key_columns, &mut others)?;
    }
    let mut mine = HashSet::new();
    collect_keys(files, schema, &sync.key_columns, &mut mine)?;
    let rows_updated = mine.iter().filter(|k| others.contains(*k)).count() as u64;
    Ok(Some(DedupManifest {
        key_columns: sync.key_columns.clone(),
        cursor_column: commit.cursor_column.clone(),
        rows_inserted: mine.len() as u64 - rows_updated,
        rows_updated,
    }))
}

/// Adds the row-encoded keys of every row in `files` to `keys`, reading only the key columns.
fn collect_keys(
    files: &[PathBuf],
    schema: &SchemaRef,
    key_columns: &[String],
    keys: &mut HashSet<Vec<u8>>,
) -> Result<()> {
    let fields = key_columns
        .iter()
        .map(|c| {
            Ok(SortField::new(
                schema
                    .field_with_name(c)
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .data_type()
                    .clone(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let converter = RowConverter::new(fields).map_err(|e| Error::Internal(format!("key encoding: {e}")))?;
    for path in files {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let bad = |e: parquet::errors::ParquetError| Error::InvalidObject {
            object: path.display().to_string(),
            message: e.to_string(),
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(bad)?;
        let indices: Vec<usize> = key_columns
            .iter()
            .filter_map(|c| builder.schema().index_of(c).ok())
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(8192)
            .build()
            .map_err(bad)?;
        for batch in reader {
            let batch = batch.map_err(|e| Error::InvalidObject {
                object: path.display().to_string(),
                message: e.to_string(),
            })?;
            let columns = key_columns
                .iter()
                .map(|c| {
                    batch.column_by_name(c).cloned().ok_or_else(|| Error::InvalidObject {
                        object: path.display().to_string(),
                        message: format!("key column `{c}` is missing"),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let rows = converter
                .convert_columns(&columns)
                .map_err(|e| Error::Internal(format!("key encoding: {e}")))?;
            keys.extend(rows.iter().map(|r| r.as_ref().to_vec()));
        }
    }
    Ok(())
}

/// The SQL of a dedup table's view over its chunks, each registered as `chunk_tables[i].1`:
/// one row per key, the newest by cursor, ties to the highest chunk id.
pub(crate) fn dedup_view_sql(columns: &[String], dedup: &DedupManifest, chunk_tables: &[(u64, String)]) -> String {
    let quote = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
    let unions: Vec<String> = chunk_tables
        .iter()
        .map(|(id, t)| format!("SELECT *, CAST({id} AS BIGINT) AS {CHUNK} FROM {}", quote(t)))
        .collect();
    let keys: Vec<String> = dedup.key_columns.iter().map(|c| quote(c)).collect();
    let select: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    format!(
        "SELECT {} FROM (SELECT *, row_number() OVER (PARTITION BY {} ORDER BY {} DESC, {CHUNK} DESC) AS {RANK} FROM ({}) AS chunks) AS ranked WHERE {RANK} = 1",
        select.join(", "),
        keys.join(", "),
        quote(&dedup.cursor_column),
        unions.join(" UNION ALL ")
    )
}

const CHUNK: &str = "__backhaul_chunk";
const RANK: &str = "__backhaul_rank";
