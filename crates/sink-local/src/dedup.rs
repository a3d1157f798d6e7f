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
use std::path::{Path, PathBuf};

use arrow::array::ArrayRef;
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
    /// `sync.metadata_columns`: readers see `_backhaul_deleted` and `_backhaul_synced_at`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub metadata_columns: bool,
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
        metadata_columns: sync.metadata_columns,
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
        for_each_batch(path, key_columns, |columns| {
            let rows = converter
                .convert_columns(columns)
                .map_err(|e| Error::Internal(format!("key encoding: {e}")))?;
            keys.extend(rows.iter().map(|r| r.as_ref().to_vec()));
            Ok(())
        })?;
    }
    Ok(())
}

/// Calls `f` with `columns` (in that order) of every batch of the Parquet file at `path`,
/// reading only those columns.
pub(crate) fn for_each_batch(
    path: &Path,
    columns: &[String],
    mut f: impl FnMut(&[ArrayRef]) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let bad = |message: String| Error::InvalidObject {
        object: path.display().to_string(),
        message,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(e.to_string()))?;
    let indices: Vec<usize> = columns
        .iter()
        .filter_map(|c| builder.schema().index_of(c).ok())
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let arrays = columns
            .iter()
            .map(|c| {
                batch
                    .column_by_name(c)
                    .cloned()
                    .ok_or_else(|| bad(format!("column `{c}` is missing")))
            })
            .collect::<Result<Vec<_>>>()?;
        f(&arrays)?;
    }
    Ok(())
}

/// One committed chunk as the dedup view reads it.
pub(crate) struct ViewChunk {
    pub chunk_id: u64,
    /// The chunk's table in the view's private session.
    pub table: String,
    /// When the chunk committed (`_backhaul_synced_at`), µs since the epoch.
    pub committed_at_us: Option<i64>,
}

/// Name of the metadata column flagging rows deleted at the source.
pub const DELETED_COLUMN: &str = "_backhaul_deleted";
/// Name of the metadata column holding the commit time of the chunk that wrote the row.
pub const SYNCED_AT_COLUMN: &str = "_backhaul_synced_at";

/// The SQL of a dedup table's view over its chunks: one row per key, the newest by cursor,
/// ties to the highest chunk id. With the metadata columns, each row also gets
/// `_backhaul_deleted` (a soft-delete file, registered as `deletes` when `has_deletes`, flags
/// its key through a chunk id at least the row's) and `_backhaul_synced_at`.
pub(crate) fn dedup_view_sql(
    columns: &[String],
    dedup: &DedupManifest,
    chunks: &[ViewChunk],
    has_deletes: bool,
) -> String {
    let unions: Vec<String> = chunks
        .iter()
        .map(|c| {
            let synced = if dedup.metadata_columns {
                format!(", {} AS {SYNCED}", synced_at(c))
            } else {
                String::new()
            };
            format!(
                "SELECT *, CAST({} AS BIGINT) AS {CHUNK}{synced} FROM {}",
                c.chunk_id,
                quote(&c.table)
            )
        })
        .collect();
    let keys: Vec<String> = dedup.key_columns.iter().map(|c| quote(c)).collect();
    let mut select: Vec<String> = columns.iter().map(|c| format!("ranked.{}", quote(c))).collect();
    let mut join = String::new();
    if dedup.metadata_columns {
        let deleted = if has_deletes {
            let on: Vec<String> = keys.iter().map(|k| format!("ranked.{k} = d.{k}")).collect();
            join = format!(
                " LEFT JOIN (SELECT {keys}, MAX({THROUGH}) AS {THROUGH} FROM {DELETES} GROUP BY {keys}) AS d ON {} AND d.{THROUGH} >= ranked.{CHUNK}",
                on.join(" AND "),
                keys = keys.join(", "),
            );
            format!("d.{THROUGH} IS NOT NULL")
        } else {
            "false".to_string()
        };
        select.push(format!("{deleted} AS {}", quote(DELETED_COLUMN)));
        select.push(format!("ranked.{SYNCED} AS {}", quote(SYNCED_AT_COLUMN)));
    }
    format!(
        "SELECT {} FROM (SELECT *, row_number() OVER (PARTITION BY {} ORDER BY {} DESC, {CHUNK} DESC) AS {RANK} FROM ({}) AS chunks) AS ranked{join} WHERE ranked.{RANK} = 1",
        select.join(", "),
        keys.join(", "),
        quote(&dedup.cursor_column),
        unions.join(" UNION ALL ")
    )
}

/// The SQL of an append table's view when it shows the metadata columns: every chunk's rows
/// as they are, with `_backhaul_synced_at` (its commit time) and `_backhaul_deleted` (always
/// false: deletes are detected in dedup mode only).
pub(crate) fn append_view_sql(columns: &[String], chunks: &[ViewChunk]) -> String {
    let select: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let unions: Vec<String> = chunks
        .iter()
        .map(|c| {
            format!(
                "SELECT {}, false AS {}, {} AS {} FROM {}",
                select.join(", "),
                quote(DELETED_COLUMN),
                synced_at(c),
                quote(SYNCED_AT_COLUMN),
                quote(&c.table)
            )
        })
        .collect();
    unions.join(" UNION ALL ")
}

/// A quoted SQL identifier.
fn quote(c: &str) -> String {
    format!("\"{}\"", c.replace('"', "\"\""))
}

/// The commit time of `chunk` as a UTC timestamp literal (NULL for manifests written before
/// commit times were recorded).
fn synced_at(chunk: &ViewChunk) -> String {
    let micros = chunk.committed_at_us.map_or("NULL".to_string(), |us| us.to_string());
    format!("arrow_cast(CAST({micros} AS BIGINT), 'Timestamp(Microsecond, Some(\"UTC\"))')")
}

const CHUNK: &str = "__backhaul_chunk";
const RANK: &str = "__backhaul_rank";
const SYNCED: &str = "__backhaul_synced";
/// The table of soft-delete rows in the view's private session.
pub(crate) const DELETES: &str = "__backhaul_deletes";
/// Column of a soft-delete file: the key is deleted in every version from chunks up to this id.
pub(crate) const THROUGH: &str = "__backhaul_through";
