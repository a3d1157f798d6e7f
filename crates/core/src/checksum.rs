//! Order-independent row checksums.
//!
//! Each row is hashed to 64 bits and the hashes are added with wrapping arithmetic. Addition
//! makes the sum independent of row and file order, lets parts of a chunk be combined, and —
//! unlike xor — still changes when a row appears twice.
//!
//! How a row is hashed is versioned ([`ChecksumVersion`]), because checksums outlive the
//! process that made them (the local warehouse keeps them in its manifests, and `verify`
//! recomputes them from the files years later):
//! - [`ChecksumVersion::RowFormat`] (1): xxh3 of the row's Arrow row-format encoding. Simple,
//!   but it encodes every row into a buffer first: about a tenth of a PostgreSQL chunk's
//!   client CPU.
//! - [`ChecksumVersion::Columnar`] (2, written today): column by column, each value is folded
//!   into its row's running hash with one 64×64→128-bit multiply (text and binary values by
//!   their xxh3 first); a NULL takes a different step, so no value can stand for it. Types
//!   without a fast path (nested ones) contribute the xxh3 of their row-format encoding.
//!   Measured at about a third of the cost of version 1 (docs/benchmarks.md).

use std::fmt;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::Result;

/// Row count and checksum of a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowSummary {
    /// Number of rows.
    pub rows: u64,
    /// Wrapping sum of per-row hashes.
    pub checksum: u64,
}

impl RowSummary {
    /// Adds another set of rows.
    pub fn merge(&mut self, other: RowSummary) {
        self.rows += other.rows;
        self.checksum = self.checksum.wrapping_add(other.checksum);
    }
}

/// How rows are hashed; see the module docs. Serialized as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
pub enum ChecksumVersion {
    /// 1: xxh3 of each row's Arrow row format.
    RowFormat,
    /// 2: column by column folded multiplies.
    Columnar,
}

impl ChecksumVersion {
    /// The version new checksums are made with.
    pub const CURRENT: ChecksumVersion = ChecksumVersion::Columnar;

    /// The version of checksums stored before versions were recorded.
    pub fn first() -> ChecksumVersion {
        ChecksumVersion::RowFormat
    }
}

impl From<ChecksumVersion> for u32 {
    fn from(v: ChecksumVersion) -> u32 {
        match v {
            ChecksumVersion::RowFormat => 1,
            ChecksumVersion::Columnar => 2,
        }
    }
}

impl TryFrom<u32> for ChecksumVersion {
    type Error = String;
    fn try_from(v: u32) -> std::result::Result<Self, String> {
        match v {
            1 => Ok(ChecksumVersion::RowFormat),
            2 => Ok(ChecksumVersion::Columnar),
            n => Err(format!(
                "row checksum version {n} is newer than this backhaul knows (1 and 2); upgrade backhaul"
            )),
        }
    }
}

impl fmt::Display for ChecksumVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", u32::from(*self))
    }
}

/// Accumulates a [`RowSummary`] over batches of one schema.
pub struct RowChecksum {
    version: ChecksumVersion,
    /// Version 1: every column; version 2: one per column without a fast path, by index.
    converters: Vec<Option<RowConverter>>,
    /// The row encoding of the last batch, kept so its buffers are reused, not reallocated.
    rows: Vec<Option<Rows>>,
    /// Version 2: the running hash of each row of the batch.
    row_hashes: Vec<u64>,
    summary: RowSummary,
}

impl RowChecksum {
    /// A checksum of the current version for batches of `schema`.
    pub fn new(schema: &SchemaRef) -> Result<Self> {
        Self::with_version(schema, ChecksumVersion::CURRENT)
    }

    /// A checksum of `version`, to recompute one made then.
    pub fn with_version(schema: &SchemaRef, version: ChecksumVersion) -> Result<Self> {
        let converters = match version {
            ChecksumVersion::RowFormat => {
                let fields = schema
                    .fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect();
                vec![Some(RowConverter::new(fields)?)]
            }
            ChecksumVersion::Columnar => schema
                .fields()
                .iter()
                .map(|f| match has_fast_path(f.data_type()) {
                    true => Ok(None),
                    false => RowConverter::new(vec![SortField::new(f.data_type().clone())]).map(Some),
                })
                .collect::<std::result::Result<_, _>>()?,
        };
        Ok(RowChecksum {
            version,
            rows: converters.iter().map(|_| None).collect(),
            converters,
            row_hashes: Vec::new(),
            summary: RowSummary::default(),
        })
    }

    /// The version this checksum is made with.
    pub fn version(&self) -> ChecksumVersion {
        self.version
    }

    /// Adds the rows of one batch.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let sum = match self.version {
            ChecksumVersion::RowFormat => self.row_format_sum(batch.columns())?,
            ChecksumVersion::Columnar => self.columnar_sum(batch)?,
        };
        self.summary.merge(RowSummary {
            rows: batch.num_rows() as u64,
            checksum: sum,
        });
        Ok(())
    }

    /// The summary so far.
    pub fn summary(&self) -> RowSummary {
        self.summary
    }

    fn row_format_sum(&mut self, columns: &[ArrayRef]) -> Result<u64> {
        let converter = self.converters[0].as_ref().expect("version 1 has one converter");
        let rows = self.rows[0].get_or_insert_with(|| converter.empty_rows(columns[0].len(), 0));
        rows.clear();
        converter.append(rows, columns)?;
        Ok(rows
            .iter()
            .fold(0u64, |sum, row| sum.wrapping_add(xxh3_64(row.as_ref()))))
    }

    fn columnar_sum(&mut self, batch: &RecordBatch) -> Result<u64> {
        let hashes = &mut self.row_hashes;
        hashes.clear();
        hashes.resize(batch.num_rows(), SEED);
        for (i, column) in batch.columns().iter().enumerate() {
            match &self.converters[i] {
                None => fold_column(column, hashes),
                Some(converter) => {
                    let rows = self.rows[i].get_or_insert_with(|| converter.empty_rows(column.len(), 0));
                    rows.clear();
                    converter.append(rows, std::slice::from_ref(column))?;
                    for (h, row) in hashes.iter_mut().zip(rows.iter()) {
                        *h = fold(*h, xxh3_64(row.as_ref()));
                    }
                }
            }
        }
        Ok(hashes.iter().fold(0u64, |sum, &h| sum.wrapping_add(finish(h))))
    }
}

/// Start of every row's hash (the first 64 bits of π's fraction).
const SEED: u64 = 0x243f_6a88_85a3_08d3;
/// Multiplier of a value's step (odd, from the digits of e).
const VALUE_KEY: u64 = 0xb7e1_5162_8aed_2a6b;
/// Multiplier of a NULL's step: another key, so no value word can take a NULL's place.
const NULL_KEY: u64 = 0x9e37_79b9_7f4a_7c15;

/// The 128-bit product of `a` and `b`, its halves xored: every input bit reaches every output
/// bit in one multiply.
#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Folds one 64-bit word of a value into a row's running hash.
#[inline(always)]
fn fold(hash: u64, word: u64) -> u64 {
    folded_multiply(hash ^ word, VALUE_KEY)
}

/// Folds a NULL into a row's running hash.
#[inline(always)]
fn fold_null(hash: u64) -> u64 {
    folded_multiply(hash ^ SEED, NULL_KEY)
}

/// The row's final hash (murmur3's finalizer): spreads the last fold's bits before summing.
#[inline(always)]
fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Whether version 2 folds this type's values directly (else through the row format).
fn has_fast_path(data_type: &DataType) -> bool {
    matches!(data_type.primitive_width(), Some(1 | 2 | 4 | 8 | 16 | 32)) && data_type.is_primitive()
        || matches!(
            data_type,
            DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::Utf8View
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_)
        )
}

/// Folds every value of one column into its row's hash: fixed-width values as their
/// little-endian 64-bit words, booleans as 0 or 1, text and binary as their xxh3.
fn fold_column(column: &ArrayRef, hashes: &mut [u64]) {
    let nulls = column.logical_nulls().filter(|n| n.null_count() > 0);
    let nulls = nulls.as_ref();
    match column.data_type() {
        DataType::Boolean => {
            let values = column.as_boolean();
            fold_values(hashes, nulls, |i| values.value(i) as u64)
        }
        DataType::Utf8 => {
            let values = column.as_string::<i32>();
            fold_values(hashes, nulls, |i| xxh3_64(values.value(i).as_bytes()))
        }
        DataType::LargeUtf8 => {
            let values = column.as_string::<i64>();
            fold_values(hashes, nulls, |i| xxh3_64(values.value(i).as_bytes()))
        }
        DataType::Binary => {
            let values = column.as_binary::<i32>();
            fold_values(hashes, nulls, |i| xxh3_64(values.value(i)))
        }
        DataType::LargeBinary => {
            let values = column.as_binary::<i64>();
            fold_values(hashes, nulls, |i| xxh3_64(values.value(i)))
        }
        DataType::Utf8View => {
            let values = column.as_string_view();
            fold_values(hashes, nulls, |i| xxh3_64(values.value(i).as_bytes()))
        }
        DataType::BinaryView => {
            let values = column.as_binary_view();
            fold_values(hashes, nulls, |i| xxh3_64(values.value(i)))
        }
        DataType::FixedSizeBinary(_) => {
            let values = column.as_fixed_size_binary();
            fold_values(hashes, nulls, |i| xxh3_64(values.value(i)))
        }
        data_type => {
            let width = data_type.primitive_width().expect("checked by has_fast_path");
            let data = column.to_data();
            let start = data.offset() * width;
            let bytes = &data.buffers()[0].as_slice()[start..start + column.len() * width];
            match width {
                8 => fold_values(hashes, nulls, |i| word::<8>(&bytes[i * 8..])),
                4 => fold_values(hashes, nulls, |i| word::<4>(&bytes[i * 4..])),
                2 => fold_values(hashes, nulls, |i| word::<2>(&bytes[i * 2..])),
                1 => fold_values(hashes, nulls, |i| u64::from(bytes[i])),
                // 128- and 256-bit values (decimals, intervals): their 64-bit words in order.
                _ => {
                    for (i, (h, value)) in hashes.iter_mut().zip(bytes.chunks_exact(width)).enumerate() {
                        *h = match nulls.is_none_or(|n| n.is_valid(i)) {
                            true => value.chunks_exact(8).fold(*h, |h, w| fold(h, word::<8>(w))),
                            false => fold_null(*h),
                        };
                    }
                }
            }
        }
    }
}

/// Folds `word(i)` into row i's hash, or a NULL where `nulls` says so.
#[inline(always)]
fn fold_values(hashes: &mut [u64], nulls: Option<&NullBuffer>, word: impl Fn(usize) -> u64) {
    match nulls {
        None => {
            for (i, h) in hashes.iter_mut().enumerate() {
                *h = fold(*h, word(i));
            }
        }
        Some(nulls) => {
            for (i, h) in hashes.iter_mut().enumerate() {
                *h = if nulls.is_valid(i) {
                    fold(*h, word(i))
                } else {
                    fold_null(*h)
                };
            }
        }
    }
}

/// `N` ≤ 8 little-endian bytes as a zero-extended word.
#[inline(always)]
fn word<const N: usize>(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..N].copy_from_slice(&bytes[..N]);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Decimal128Array, Decimal256Array, FixedSizeBinaryArray, Float64Array,
        Int8Array, Int16Array, Int32Array, Int64Array, LargeStringArray, ListArray, StringArray,
        TimestampMicrosecondArray, UInt64Array,
    };
    use arrow::datatypes::{Field, Int32Type, Schema, i256};

    use super::*;

    fn batch(ids: &[i64], names: &[Option<&str>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap()
    }

    fn sum_with(version: ChecksumVersion, batches: &[RecordBatch]) -> RowSummary {
        let mut c = RowChecksum::with_version(&batches[0].schema(), version).unwrap();
        batches.iter().for_each(|b| c.update(b).unwrap());
        c.summary()
    }

    const VERSIONS: [ChecksumVersion; 2] = [ChecksumVersion::RowFormat, ChecksumVersion::Columnar];

    /// One column of every kind version 2 hashes: each fast path, and nested types through
    /// the row format. Every third row is NULL in every nullable column.
    fn every_type(n: i64) -> RecordBatch {
        let ids: Vec<i64> = (0..n).collect();
        let opt = |i: &i64| i % 3 != 1;
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(
            ids.iter().map(|i| opt(i).then(|| vec![Some(*i as i32), None, Some(7)])),
        );
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "i8",
                Arc::new(Int8Array::from_iter(ids.iter().map(|i| opt(i).then_some(*i as i8)))),
            ),
            (
                "i16",
                Arc::new(Int16Array::from_iter(ids.iter().map(|i| opt(i).then_some(-*i as i16)))),
            ),
            (
                "i32",
                Arc::new(Int32Array::from_iter(
                    ids.iter().map(|i| opt(i).then_some(*i as i32 * 1000)),
                )),
            ),
            (
                "u64",
                Arc::new(UInt64Array::from_iter(
                    ids.iter().map(|i| opt(i).then_some(u64::MAX - *i as u64)),
                )),
            ),
            (
                "f64",
                Arc::new(Float64Array::from_iter(
                    ids.iter().map(|i| opt(i).then_some(*i as f64 / 3.0)),
                )),
            ),
            (
                "b",
                Arc::new(BooleanArray::from_iter(
                    ids.iter().map(|i| opt(i).then_some(i % 2 == 0)),
                )),
            ),
            (
                "d",
                Arc::new(Date32Array::from_iter(
                    ids.iter().map(|i| opt(i).then_some(19_000 + *i as i32)),
                )),
            ),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from_iter(ids.iter().map(|i| opt(i).then_some(i * 1_000_003)))
                        .with_timezone("+02:00"),
                ),
            ),
            (
                "dec",
                Arc::new(
                    Decimal128Array::from_iter(ids.iter().map(|i| opt(i).then_some(i128::from(*i) << 70)))
                        .with_precision_and_scale(38, 9)
                        .unwrap(),
                ),
            ),
            (
                "dec256",
                Arc::new(
                    Decimal256Array::from_iter(ids.iter().map(|i| opt(i).then(|| i256::from_i128(-i128::from(*i)))))
                        .with_precision_and_scale(76, 0)
                        .unwrap(),
                ),
            ),
            (
                "s",
                Arc::new(StringArray::from_iter(
                    ids.iter().map(|i| opt(i).then(|| "é".repeat(*i as usize % 40))),
                )),
            ),
            (
                "ls",
                Arc::new(LargeStringArray::from_iter(
                    ids.iter().map(|i| opt(i).then(|| format!("{i}"))),
                )),
            ),
            (
                "bin",
                Arc::new(BinaryArray::from_iter(
                    ids.iter().map(|i| opt(i).then(|| vec![*i as u8; 3])),
                )),
            ),
            (
                "uuid",
                Arc::new(
                    FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                        ids.iter().map(|i| opt(i).then_some([*i as u8; 16])),
                        16,
                    )
                    .unwrap(),
                ),
            ),
            ("list", Arc::new(list)),
        ];
        let schema = Schema::new(
            columns
                .iter()
                .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(Arc::new(schema), columns.into_iter().map(|(_, a)| a).collect()).unwrap()
    }

    #[test]
    fn independent_of_order_batching_and_slicing() {
        let all = every_type(100);
        // Slices start at offsets inside the buffers, as read-back batches do.
        let parts = [all.slice(60, 40), all.slice(0, 7), all.slice(7, 53)];
        for version in VERSIONS {
            assert_eq!(
                sum_with(version, std::slice::from_ref(&all)),
                sum_with(version, &parts),
                "version {version}"
            );
            let a = sum_with(version, &[batch(&[1, 2, 3], &[Some("a"), None, Some("c")])]);
            let b = sum_with(
                version,
                &[batch(&[3], &[Some("c")]), batch(&[2, 1], &[None, Some("a")])],
            );
            assert_eq!(a, b, "version {version}");
        }
    }

    #[test]
    fn detects_duplicates_changes_and_nulls() {
        for version in VERSIONS {
            let sum = |ids: &[i64], names: &[Option<&str>]| sum_with(version, &[batch(ids, names)]);
            let a = sum(&[1, 2], &[Some("a"), Some("b")]);
            assert_ne!(a, sum(&[1, 1, 2], &[Some("a"), Some("a"), Some("b")]));
            assert_ne!(a, sum(&[1, 2], &[Some("a"), Some("B")]));
            assert_ne!(a, sum(&[1, 2], &[Some("a"), None]));
            // A value moved to another row, and the empty string against NULL.
            assert_ne!(a, sum(&[1, 2], &[Some("b"), Some("a")]));
            assert_ne!(sum(&[1], &[Some("")]), sum(&[1], &[None]));
        }
        // Every column of every type: one changed or NULLed value shows.
        let all = every_type(30);
        for version in VERSIONS {
            let base = sum_with(version, std::slice::from_ref(&all));
            for c in 0..all.num_columns() {
                let mut columns = all.columns().to_vec();
                // Row 1 is NULL in every column, row 0 is not: swapping them changes both.
                let take = arrow::array::UInt32Array::from_iter_values([1u32, 0].into_iter().chain(2..30));
                columns[c] = arrow::compute::take(&columns[c], &take, None).unwrap();
                let changed = RecordBatch::try_new(all.schema(), columns).unwrap();
                assert_ne!(base, sum_with(version, &[changed]), "version {version}, column {c}");
            }
        }
    }

    /// The checksums of data committed by earlier versions must still be recomputable
    /// years later: both definitions are pinned.
    #[test]
    fn both_versions_are_stable() {
        let all = every_type(50);
        assert_eq!(
            sum_with(ChecksumVersion::RowFormat, std::slice::from_ref(&all)).checksum,
            4368209726324444978
        );
        assert_eq!(
            sum_with(ChecksumVersion::Columnar, &[all]).checksum,
            5547539018538223174
        );
    }

    #[test]
    fn versions_serialize_as_numbers() {
        assert_eq!(serde_json::to_string(&ChecksumVersion::Columnar).unwrap(), "2");
        assert_eq!(
            serde_json::from_str::<ChecksumVersion>("1").unwrap(),
            ChecksumVersion::RowFormat
        );
        let e = serde_json::from_str::<ChecksumVersion>("3").unwrap_err().to_string();
        assert!(e.contains("newer than this backhaul knows"), "{e}");
    }
}
