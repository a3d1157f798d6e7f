//! Hard-delete detection for `dedup` sync jobs (`sync.deletes = "soft"`, docs/pipelines.md).
//!
//! A row deleted at the source leaves no trace a cursor can find, so after a sync the keys
//! whose newest version has its cursor in a committed range are compared between the source
//! and the destination. Each side answers a [`KeyDigest`] (count and sum of key hashes) of a
//! range with one query; equal digests end the range's check, so an unchanged range costs one
//! query on each side. A range that differs is bisected (the right half's digest is the
//! parent's minus the left half's: one query per side per step) down to [`LIST_ROWS`] keys,
//! where both sides list their keys. Destination keys missing from the source's range are
//! candidates; a candidate is deleted only when the key is nowhere at the source (a row updated
//! since the sync moved to a later cursor, it was not deleted), asked in batches of
//! [`EXIST_BATCH`] keys. The algorithm is here once; sources and destinations only answer
//! digests and key lists.
//!
//! **Canonical key text**, the same on every side: each key column as text (integers in
//! decimal, text as is, UUIDs lowercase with hyphens), joined by U+001F. **Key hash**: the
//! first 60 bits of the MD5 of that text (`('x' || substr(md5(k), 1, 15))::bit(60)::bigint` in
//! PostgreSQL, `CONV(SUBSTRING(MD5(k), 1, 15), 16, 10)` in MySQL). **Digest**: the key count
//! and the sum of hashes modulo 2^64.

use std::collections::{BTreeMap, HashSet};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Int64Type, Schema};
use md5::{Digest, Md5};
use serde::Serialize;

use crate::connector::{Destination, Source};
use crate::cursor::CursorRange;
use crate::error::{Error, Result};

/// Separator of key columns in the canonical key text (ASCII unit separator).
pub const KEY_SEPARATOR: char = '\u{1f}';
/// A differing range is listed (not bisected further) once both sides hold at most this many keys.
pub const LIST_ROWS: u64 = 1000;
/// Candidates looked up at the source per query.
pub const EXIST_BATCH: usize = 500;

/// Count and hash sum of the keys of a range (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KeyDigest {
    /// Keys in the range.
    pub count: u64,
    /// Sum of the keys' 60-bit hashes, modulo 2^64.
    pub sum: u64,
}

impl KeyDigest {
    /// The digest of `keys` (canonical key texts).
    pub fn of<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let mut digest = KeyDigest::default();
        for key in keys {
            digest.count += 1;
            digest.sum = digest.sum.wrapping_add(key_hash(key));
        }
        digest
    }

    /// A digest from a database's answer: the count and the exact decimal sum of the hashes
    /// (which may exceed 64 bits; only its value modulo 2^64 counts).
    pub fn from_sql(count: i64, sum: &str) -> Result<Self> {
        let sum = sum.trim();
        let exact: u128 = if sum.is_empty() {
            0
        } else {
            sum.parse()
                .map_err(|e| Error::Internal(format!("key digest sum `{sum}` is not an integer: {e}")))?
        };
        Ok(KeyDigest {
            count: u64::try_from(count).map_err(|_| Error::Internal(format!("key digest count {count}")))?,
            sum: exact as u64,
        })
    }

    /// The digest of the keys in `self` but not in `part` (a sub-range of `self`).
    pub fn minus(self, part: KeyDigest) -> KeyDigest {
        KeyDigest {
            count: self.count.saturating_sub(part.count),
            sum: self.sum.wrapping_sub(part.sum),
        }
    }
}

/// The first 60 bits of the MD5 of `key`, as an unsigned integer.
pub fn key_hash(key: &str) -> u64 {
    let digest = Md5::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) >> 4
}

/// Whether a key column of this type can be compared across systems by its canonical text.
fn supported_key_type(field: &arrow::datatypes::Field) -> bool {
    match field.data_type() {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View => true,
        DataType::FixedSizeBinary(16) => is_uuid(field),
        _ => false,
    }
}

fn is_uuid(field: &arrow::datatypes::Field) -> bool {
    field.metadata().get("ARROW:extension:name").map(String::as_str) == Some("arrow.uuid")
}

/// Refuses key columns delete detection cannot compare (only integers, text and UUIDs),
/// naming the file, the key (`sync.deletes`) and the column.
pub fn check_key_types(schema: &Schema, keys: &[String], origin: &str, table: &str) -> Result<()> {
    for key in keys {
        let field = schema.field_with_name(key).map_err(|_| {
            Error::config(
                origin,
                "sync.primary_key",
                format!("key column `{key}` is not a column of table `{table}`"),
            )
        })?;
        if !supported_key_type(field) {
            return Err(Error::config(
                origin,
                "sync.deletes",
                format!(
                    "key column `{key}` of table `{table}` has type {}: delete detection compares integer, text and uuid keys only",
                    field.data_type()
                ),
            ));
        }
    }
    Ok(())
}

/// The canonical key text of every row of `columns` (the key columns, in key order).
pub fn key_texts(fields: &[arrow::datatypes::FieldRef], columns: &[ArrayRef]) -> Result<Vec<String>> {
    let rows = columns.first().map_or(0, |c| c.len());
    let mut out = vec![String::new(); rows];
    for (i, (field, column)) in fields.iter().zip(columns).enumerate() {
        let texts = column_texts(field, column)?;
        for (row, text) in out.iter_mut().zip(texts) {
            if i > 0 {
                row.push(KEY_SEPARATOR);
            }
            row.push_str(&text);
        }
    }
    Ok(out)
}

fn column_texts(field: &arrow::datatypes::Field, column: &ArrayRef) -> Result<Vec<String>> {
    if column.null_count() > 0 {
        return Err(Error::InvalidObject {
            object: format!("key column {}", field.name()),
            message: "holds NULL values; a primary key cannot".into(),
        });
    }
    let unsupported = || Error::InvalidObject {
        object: format!("key column {}", field.name()),
        message: format!("type {} cannot be compared by delete detection", field.data_type()),
    };
    if !supported_key_type(field) {
        return Err(unsupported());
    }
    Ok(match column.data_type() {
        DataType::Utf8 => column
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap_or("").to_string())
            .collect(),
        DataType::LargeUtf8 => column
            .as_string::<i64>()
            .iter()
            .map(|v| v.unwrap_or("").to_string())
            .collect(),
        DataType::Utf8View => column
            .as_string_view()
            .iter()
            .map(|v| v.unwrap_or("").to_string())
            .collect(),
        DataType::FixedSizeBinary(16) => column
            .as_fixed_size_binary()
            .iter()
            .map(|v| uuid_text(v.unwrap_or(&[0; 16])))
            .collect(),
        DataType::UInt64 => column
            .as_primitive::<arrow::datatypes::UInt64Type>()
            .values()
            .iter()
            .map(u64::to_string)
            .collect(),
        _ => {
            let wide = arrow::compute::cast(column, &DataType::Int64)?;
            wide.as_primitive::<Int64Type>()
                .values()
                .iter()
                .map(i64::to_string)
                .collect()
        }
    })
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase, as PostgreSQL prints a uuid.
fn uuid_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Cursor values of an Arrow cursor column in cursor units (µs since the epoch, days, or the
/// integer), `None` for NULL.
pub fn cursor_values(column: &ArrayRef) -> Result<Vec<Option<i64>>> {
    use arrow::datatypes::TimeUnit;
    let as_i64 = |array: &ArrayRef| -> Result<Vec<Option<i64>>> {
        let wide = arrow::compute::cast(array, &DataType::Int64)?;
        Ok(wide.as_primitive::<Int64Type>().iter().collect())
    };
    match column.data_type() {
        DataType::Timestamp(_, _) => {
            let micros = arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            as_i64(&micros)
        }
        DataType::Date32 => as_i64(column),
        DataType::Date64 => Ok(as_i64(column)?
            .into_iter()
            .map(|v| v.map(|ms| ms.div_euclid(86_400_000)))
            .collect()),
        _ => as_i64(column),
    }
}

/// The ranges to check: the committed chunks' ranges made disjoint (a lookback chunk re-reads
/// a stretch an earlier chunk covers; it is checked once), sorted.
pub fn disjoint_ranges(chunks: &[CursorRange]) -> Vec<CursorRange> {
    let mut sorted: Vec<CursorRange> = chunks.to_vec();
    sorted.sort_by_key(|r| (r.from, r.to));
    let mut out = Vec::new();
    let mut covered = i64::MIN;
    for range in sorted {
        let from = range.from.max(covered);
        if from < range.to {
            out.push(CursorRange::new(from, range.to));
            covered = range.to;
        }
    }
    out
}

/// What one detection found and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeleteReport {
    /// Ranges checked.
    pub ranges_checked: u64,
    /// Digest queries sent to the source (one per unchanged range).
    pub source_digests: u64,
    /// Digest queries sent to the destination.
    pub destination_digests: u64,
    /// Key listings (each side) of small differing ranges.
    pub listings: u64,
    /// Destination keys missing from their range at the source.
    pub candidates: u64,
    /// Candidates that still exist at the source (moved to a later cursor): not deleted.
    pub moved: u64,
    /// Keys marked deleted at the destination.
    pub deleted: u64,
    /// Ranges where keys were marked deleted, with how many.
    pub deleted_by_range: Vec<RangeDeletes>,
}

/// Keys marked deleted in one checked range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RangeDeletes {
    /// The checked range.
    pub range: CursorRange,
    /// Keys marked deleted.
    pub deleted: u64,
}

/// Detects keys deleted at the source among `ranges` (see [`disjoint_ranges`]) and marks
/// them deleted at the destination. `keys` are the key columns.
pub async fn detect_deletes(
    source: &dyn Source,
    destination: &dyn Destination,
    job_id: &str,
    keys: &[String],
    ranges: &[CursorRange],
) -> Result<DeleteReport> {
    let mut report = DeleteReport::default();
    // Candidates by the checked range they were found in.
    let mut candidates: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (index, range) in ranges.iter().enumerate() {
        report.ranges_checked += 1;
        let src = source.key_digest(*range, keys).await?;
        let dst = destination.key_digest(job_id, *range, keys).await?;
        report.source_digests += 1;
        report.destination_digests += 1;
        let mut pending = vec![(*range, src, dst)];
        while let Some((range, src, dst)) = pending.pop() {
            if src == dst || dst.count == 0 {
                continue;
            }
            if src.count.max(dst.count) <= LIST_ROWS || range.width() <= 1 {
                report.listings += 1;
                let at_source: HashSet<String> = source.list_keys(range, keys).await?.into_iter().collect();
                let missing: Vec<String> = destination
                    .list_keys(job_id, range, keys)
                    .await?
                    .into_iter()
                    .filter(|k| !at_source.contains(k))
                    .collect();
                candidates.entry(index).or_default().extend(missing);
                continue;
            }
            let mid = range.from + range.width() / 2;
            let left = CursorRange::new(range.from, mid);
            let right = CursorRange::new(mid, range.to);
            let src_left = source.key_digest(left, keys).await?;
            let dst_left = destination.key_digest(job_id, left, keys).await?;
            report.source_digests += 1;
            report.destination_digests += 1;
            pending.push((right, src.minus(src_left), dst.minus(dst_left)));
            pending.push((left, src_left, dst_left));
        }
    }
    let mut deleted = Vec::new();
    for (index, found) in candidates {
        report.candidates += found.len() as u64;
        let mut gone = Vec::new();
        for batch in found.chunks(EXIST_BATCH) {
            let existing: HashSet<String> = source.existing_keys(keys, batch).await?.into_iter().collect();
            gone.extend(batch.iter().filter(|k| !existing.contains(*k)).cloned());
        }
        report.moved += (found.len() - gone.len()) as u64;
        if !gone.is_empty() {
            report.deleted_by_range.push(RangeDeletes {
                range: ranges[index],
                deleted: gone.len() as u64,
            });
        }
        deleted.extend(gone);
    }
    if !deleted.is_empty() {
        report.deleted = destination.mark_deleted(job_id, keys, &deleted).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{FixedSizeBinaryArray, Int32Array, StringArray};
    use arrow::datatypes::Field;

    use super::*;

    #[test]
    fn hash_is_the_first_60_bits_of_md5() {
        // md5("1") = c4ca4238a0b923820dcc509a6f75849b; its first 15 hex digits:
        assert_eq!(key_hash("1"), 0xc4ca4238a0b9238);
        let d = KeyDigest::of(["1", "2"]);
        assert_eq!(d.count, 2);
        assert_eq!(d.minus(KeyDigest::of(["2"])), KeyDigest::of(["1"]));
        let big = (u128::from(u64::MAX) + 5).to_string();
        assert_eq!(KeyDigest::from_sql(3, &big).unwrap().sum, 4);
        assert_eq!(KeyDigest::from_sql(0, "").unwrap(), KeyDigest::default());
    }

    #[test]
    fn key_texts_join_columns_canonically() {
        let uuid = Field::new("u", DataType::FixedSizeBinary(16), false).with_metadata(
            [("ARROW:extension:name".to_string(), "arrow.uuid".to_string())]
                .into_iter()
                .collect(),
        );
        let fields = vec![
            Arc::new(Field::new("a", DataType::Int32, false)),
            Arc::new(Field::new("b", DataType::Utf8, false)),
            Arc::new(uuid),
        ];
        let bytes: Vec<u8> = (0u8..16).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![-7])),
            Arc::new(StringArray::from(vec!["x y"])),
            Arc::new(FixedSizeBinaryArray::try_from_iter([bytes].into_iter()).unwrap()),
        ];
        assert_eq!(
            key_texts(&fields, &columns).unwrap(),
            ["-7\u{1f}x y\u{1f}00010203-0405-0607-0809-0a0b0c0d0e0f"]
        );
    }

    #[test]
    fn unsupported_key_types_name_the_column() {
        let schema = Schema::new(vec![Field::new("price", DataType::Float64, false)]);
        let e = check_key_types(&schema, &["price".into()], "job.toml", "public.t")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("job.toml: sync.deletes:") && e.contains("`price`") && e.contains("Float64"),
            "{e}"
        );
    }

    #[test]
    fn lookback_ranges_are_checked_once() {
        let r = |a, b| CursorRange::new(a, b);
        assert_eq!(
            disjoint_ranges(&[r(0, 10), r(10, 20), r(15, 20), r(20, 30)]),
            [r(0, 10), r(10, 20), r(20, 30)]
        );
        assert_eq!(disjoint_ranges(&[r(0, 10), r(5, 12)]), [r(0, 10), r(10, 12)]);
    }
}
