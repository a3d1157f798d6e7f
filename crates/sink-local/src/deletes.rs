//! Soft deletes of dedup tables, and the key digests delete detection compares
//! (`backhaul_core::deletes`).
//!
//! Marking keys deleted rewrites no chunk: it adds one file `_deletes/deletes-NNNNNN.parquet`
//! holding the keys (typed like the table's key columns) and `__backhaul_through`, the highest
//! chunk id committed when they were marked. A key is deleted while its newest version comes
//! from a chunk at or below a `through` of one of its delete rows, so a newer version (the key
//! re-inserted at the source, read by a later chunk) un-deletes it. Chunk proofs are untouched:
//! they cover the chunks' own files. The file appears by rename under the table lock, so
//! readers see it whole or not at all. Each file also records when it was written (Parquet
//! metadata `backhaul.marked_at_us`), for the monthly counts.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use backhaul_core::cursor::CursorRange;
use backhaul_core::deletes::{cursor_values, key_texts};
use backhaul_core::{Error, Result};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::dedup::{DedupManifest, THROUGH, for_each_batch};
use crate::meta::{ChunkManifest, TablePaths, read_all_manifests, temp_path_for};
use crate::table::now_us;

/// Parquet metadata key of a delete file: when its keys were marked, µs since the epoch.
const MARKED_AT: &str = "backhaul.marked_at_us";

/// The schema of a delete file: the table's key fields, then `__backhaul_through`.
pub(crate) fn deletes_schema(table: &SchemaRef, keys: &[String]) -> Result<SchemaRef> {
    let mut fields = keys
        .iter()
        .map(|k| {
            table
                .field_with_name(k)
                .map(|f| f.as_ref().clone().with_nullable(false))
                .map_err(|_| Error::Internal(format!("key column `{k}` is not in the table")))
        })
        .collect::<Result<Vec<Field>>>()?;
    fields.push(Field::new(THROUGH, DataType::Int64, false));
    Ok(Arc::new(Schema::new(fields)))
}

/// The table's delete files, in the order they were written.
pub(crate) fn delete_files(paths: &TablePaths) -> Result<Vec<PathBuf>> {
    let dir = paths.deletes_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("deletes-") && n.ends_with(".parquet"))
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// The newest version of one key.
#[derive(Debug, Clone, Copy)]
struct Version {
    cursor: i64,
    chunk: u64,
    deleted: bool,
}

/// The newest version of every key of the table (as the dedup view picks it: largest cursor,
/// then highest chunk id), with whether it is deleted. Blocking; reads the key and cursor
/// columns of the whole table.
fn current_versions(paths: &TablePaths, schema: &SchemaRef, keys: &[String]) -> Result<HashMap<String, Version>> {
    let manifests = read_all_manifests(paths)?;
    let Some(dedup) = manifests.iter().find_map(|m| m.dedup.as_ref()) else {
        return Ok(HashMap::new());
    };
    check_keys(dedup, keys)?;
    let key_fields = key_fields(schema, keys)?;
    let mut columns = keys.to_vec();
    columns.push(dedup.cursor_column.clone());
    let mut current: HashMap<String, Version> = HashMap::new();
    for manifest in &manifests {
        for file in &manifest.files {
            for_each_batch(&paths.data_file(&file.name), &columns, |arrays| {
                let texts = key_texts(&key_fields, &arrays[..keys.len()])?;
                let cursors = cursor_values(&arrays[keys.len()])?;
                for (text, cursor) in texts.into_iter().zip(cursors) {
                    let version = Version {
                        cursor: cursor.unwrap_or(i64::MIN),
                        chunk: manifest.chunk_id,
                        deleted: false,
                    };
                    current
                        .entry(text)
                        .and_modify(|v| {
                            if (version.cursor, version.chunk) > (v.cursor, v.chunk) {
                                *v = version;
                            }
                        })
                        .or_insert(version);
                }
                Ok(())
            })?;
        }
    }
    let mut columns = keys.to_vec();
    columns.push(THROUGH.to_string());
    for path in delete_files(paths)? {
        for_each_batch(&path, &columns, |arrays| {
            let texts = key_texts(&key_fields, &arrays[..keys.len()])?;
            let through = cursor_values(&arrays[keys.len()])?;
            for (text, through) in texts.into_iter().zip(through) {
                if let Some(v) = current.get_mut(&text)
                    && through.is_some_and(|t| t >= v.chunk as i64)
                {
                    v.deleted = true;
                }
            }
            Ok(())
        })?;
    }
    Ok(current)
}

fn key_fields(schema: &SchemaRef, keys: &[String]) -> Result<Vec<arrow::datatypes::FieldRef>> {
    keys.iter()
        .map(|k| {
            schema
                .field_with_name(k)
                .map(|f| Arc::new(f.clone()))
                .map_err(|_| Error::InvalidObject {
                    object: format!("key column {k}"),
                    message: "is not a column of the table".into(),
                })
        })
        .collect()
}

fn check_keys(dedup: &DedupManifest, keys: &[String]) -> Result<()> {
    if dedup.key_columns != keys {
        return Err(Error::InvalidObject {
            object: format!("key columns {}", keys.join(", ")),
            message: format!(
                "the table's dedup key is {}; delete detection must compare the same key",
                dedup.key_columns.join(", ")
            ),
        });
    }
    Ok(())
}

/// Keys of the current, not deleted rows whose cursor is in `range`. Blocking.
pub(crate) fn live_keys(
    paths: &TablePaths,
    schema: &SchemaRef,
    keys: &[String],
    range: CursorRange,
) -> Result<Vec<String>> {
    Ok(current_versions(paths, schema, keys)?
        .into_iter()
        .filter(|(_, v)| !v.deleted && v.cursor >= range.from && v.cursor < range.to)
        .map(|(k, _)| k)
        .collect())
}

/// Marks the current versions of `deleted` deleted by writing one delete file; returns the keys
/// marked (those that are current and not deleted yet). Blocking; call under the table lock.
pub(crate) fn mark_deleted(paths: &TablePaths, schema: &SchemaRef, keys: &[String], deleted: &[String]) -> Result<u64> {
    let current = current_versions(paths, schema, keys)?;
    let mut wanted: HashSet<&str> = deleted
        .iter()
        .map(String::as_str)
        .filter(|k| current.get(*k).is_some_and(|v| !v.deleted))
        .collect();
    if wanted.is_empty() {
        return Ok(0);
    }
    let marked = wanted.len() as u64;
    let manifests = read_all_manifests(paths)?;
    let through = manifests.iter().map(|m| m.chunk_id).max().unwrap_or(0) as i64;
    let key_fields = key_fields(schema, keys)?;
    let out_schema = deletes_schema(schema, keys)?;
    // The typed key values come from the chunk files: the first row found for each key.
    let mut batches = Vec::new();
    for file in manifests.iter().flat_map(|m: &ChunkManifest| m.files.iter()) {
        if wanted.is_empty() {
            break;
        }
        for_each_batch(&paths.data_file(&file.name), keys, |arrays| {
            let texts = key_texts(&key_fields, arrays)?;
            let mask: BooleanArray = texts.iter().map(|t| Some(wanted.remove(t.as_str()))).collect();
            if mask.true_count() == 0 {
                return Ok(());
            }
            let mut columns = arrays
                .iter()
                .map(|a| arrow::compute::filter(a, &mask))
                .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
            columns.push(Arc::new(Int64Array::from(vec![through; mask.true_count()])));
            batches.push(RecordBatch::try_new(out_schema.clone(), columns)?);
            Ok(())
        })?;
    }
    write_delete_file(paths, &out_schema, &batches)?;
    Ok(marked)
}

/// Writes the delete file by temporary file and rename, with the next free number.
fn write_delete_file(paths: &TablePaths, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let dir = paths.deletes_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let target = dir.join(format!("deletes-{:06}.parquet", delete_files(paths)?.len() + 1));
    let tmp = temp_path_for(&target);
    let written = write_parquet(&tmp, schema, batches);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))
}

/// Writes `batches` to a new Parquet file at `path`, stamped with the time they were marked.
fn write_parquet(path: &Path, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let file = std::fs::File::create_new(path).map_err(|e| Error::io(path, e))?;
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![KeyValue::new(MARKED_AT.to_string(), now_us().to_string())]))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(parquet_error(path))?;
    for batch in batches {
        writer.write(batch).map_err(parquet_error(path))?;
    }
    writer.close().map_err(parquet_error(path))?;
    Ok(())
}

fn parquet_error(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
    move |e| Error::InvalidObject {
        object: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Rows and mark time of every delete file, for the monthly counts. Blocking.
pub(crate) fn delete_marks(paths: &TablePaths) -> Result<Vec<(Option<i64>, u64)>> {
    let mut out = Vec::new();
    for path in delete_files(paths)? {
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let reader = SerializedFileReader::new(file).map_err(parquet_error(&path))?;
        let meta = reader.metadata().file_metadata();
        let marked_at = meta
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == MARKED_AT))
            .and_then(|k| k.value.as_deref()?.parse().ok());
        out.push((marked_at, u64::try_from(meta.num_rows()).unwrap_or(0)));
    }
    Ok(out)
}

/// The table's inserted/updated rows per commit month (from dedup manifests, and from every
/// full refresh, superseded ones included) and deleted keys per month marked (from delete
/// files). Blocking.
pub(crate) fn monthly_changes(paths: &TablePaths) -> Result<Vec<backhaul_core::changes::MonthChanges>> {
    let commits: Vec<(Option<i64>, u64, u64, u64)> = read_all_manifests(paths)?
        .iter()
        .filter_map(|m| {
            let d = m.dedup.as_ref()?;
            Some((m.committed_at_us, d.rows_inserted, d.rows_updated, 0))
        })
        .collect();
    let marks = delete_marks(paths)?.into_iter().map(|(at, rows)| (at, 0, 0, rows));
    let refreshes = crate::refresh::refresh_counts(paths)?
        .into_iter()
        .map(|(at, inserted, updated)| (at, inserted, updated, 0));
    Ok(backhaul_core::changes::by_month(
        commits.into_iter().chain(refreshes).chain(marks),
    ))
}
