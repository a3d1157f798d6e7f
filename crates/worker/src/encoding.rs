//! Parquet writer settings: zstd level, row-group bounds, which columns get a dictionary, and
//! which get min/max statistics.
//!
//! A dictionary pays for low-cardinality columns (flags, codes, dates) and costs CPU for
//! nothing on high-cardinality ones (keys, prices, free text): the writer interns every value
//! until the dictionary page outgrows its limit and only then falls back to plain encoding, in
//! every row group again. So each column's dictionary is decided once per chunk from a sample of
//! its first batch. The figures that chose the rule are in docs/benchmarks.md
//! ("Parquet writer settings").
//!
//! Min/max statistics cost a comparison per value; for text and binary columns that is a
//! memcmp per value (about 5% of a lineitem chunk's CPU) for bounds that rarely prune anything
//! (free text, codes in no order). So string and binary columns get none; every other column
//! keeps parquet's page-level statistics, which readers use to skip row groups and pages by
//! the cursor, keys and amounts.

use std::collections::HashSet;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use crate::error::Result;

/// Rows per row group at most; row groups are also bounded by bytes.
pub const MAX_ROW_GROUP_ROWS: usize = 1024 * 1024;

/// parquet's default dictionary page limit: past it a column chunk falls back to plain.
const DICTIONARY_PAGE_LIMIT: usize = 1024 * 1024;

/// Rows of the first batch looked at per column.
const SAMPLE_ROWS: usize = 65_536;

/// Which columns of the chunk get a dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DictionaryPolicy {
    /// Decided per column from a sample of the first batch (the default).
    #[default]
    Sampled,
    /// Every column (parquet's own default).
    Always,
    /// No column.
    Never,
}

/// The writer properties of one chunk's part files.
pub fn writer_properties(
    first_batch: &RecordBatch,
    zstd_level: i32,
    row_group_bytes: usize,
    dictionary: DictionaryPolicy,
) -> Result<WriterProperties> {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(row_group_bytes));
    builder = match dictionary {
        DictionaryPolicy::Always => builder.set_dictionary_enabled(true),
        DictionaryPolicy::Never => builder.set_dictionary_enabled(false),
        DictionaryPolicy::Sampled => sampled_dictionaries(builder, first_batch)?,
    };
    for field in first_batch.schema().fields() {
        if !has_statistics(field.data_type()) {
            builder =
                builder.set_column_statistics_enabled(ColumnPath::from(field.name().as_str()), EnabledStatistics::None);
        }
    }
    Ok(builder.build())
}

/// Whether a column of this type gets min/max statistics (see the module docs).
pub fn has_statistics(data_type: &DataType) -> bool {
    !matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

fn sampled_dictionaries(mut builder: WriterPropertiesBuilder, batch: &RecordBatch) -> Result<WriterPropertiesBuilder> {
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        // Nested columns keep parquet's default: their leaf paths are not the field name.
        if field.data_type().is_nested() {
            continue;
        }
        let sample = column.slice(0, column.len().min(SAMPLE_ROWS));
        let pays = dictionary_pays(&sample, field.data_type())?;
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), pays);
    }
    Ok(builder)
}

/// Whether a dictionary is expected to hold a row group's distinct values of this column
/// within the page limit, and to repeat them.
///
/// A row group's distinct values are estimated from how many new values the sample's second
/// half brought: drawing n values from D equally likely ones finds D·(1 − e^(−n/D)) distinct,
/// so the ratio r of distinct values in the whole sample to those in its first half is
/// 1 + e^(−n/2D), which gives D. Dates or status codes saturate (r near 1); keys and free text
/// never repeat (r near 2) and are projected linearly.
fn dictionary_pays(sample: &arrow::array::ArrayRef, data_type: &DataType) -> Result<bool> {
    let rows = sample.len();
    if rows < 2 || matches!(data_type, DataType::Boolean | DataType::Null) {
        return Ok(false);
    }
    let converter = RowConverter::new(vec![SortField::new(data_type.clone())]).map_err(ParquetError::from)?;
    let encoded = converter
        .convert_columns(std::slice::from_ref(sample))
        .map_err(ParquetError::from)?;
    let half = rows / 2;
    let mut seen = HashSet::with_capacity(rows.min(4096));
    let mut distinct_in_first_half = 0;
    let mut value_bytes = 0usize;
    for (i, row) in encoded.iter().enumerate() {
        if i == half {
            distinct_in_first_half = seen.len();
        }
        let bytes = row.data();
        if seen.insert(bytes) {
            value_bytes += bytes.len();
        }
    }
    let distinct = seen.len() as f64;
    let row_group = MAX_ROW_GROUP_ROWS as f64;
    let growth = distinct / distinct_in_first_half.max(1) as f64 - 1.0;
    let projected = if growth <= 0.0 {
        distinct
    } else if growth >= 0.999 {
        distinct / rows as f64 * row_group
    } else {
        let population = -(rows as f64) / (2.0 * growth.ln());
        population * (1.0 - (-row_group / population).exp())
    };
    let mean_width = value_bytes as f64 / distinct.max(1.0);
    Ok(projected <= row_group * 0.5 && projected * mean_width <= DICTIONARY_PAGE_LIMIT as f64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Date32Array, Int64Array, StringArray};

    use super::*;

    fn pays(array: ArrayRef) -> bool {
        let data_type = array.data_type().clone();
        dictionary_pays(&array, &data_type).unwrap()
    }

    #[test]
    fn low_cardinality_columns_keep_their_dictionary() {
        let modes = ["AIR", "MAIL", "SHIP", "RAIL", "TRUCK", "FOB", "REG AIR"];
        let strings: StringArray = (0..SAMPLE_ROWS).map(|i| Some(modes[i * 7919 % 7])).collect();
        assert!(pays(Arc::new(strings)));
        // 2,526 ship dates in random order, in a batch of 8,192 rows that has not seen them all.
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let dates: Date32Array = (0..8192)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                Some(8000 + (rng % 2526) as i32)
            })
            .collect();
        assert!(pays(Arc::new(dates)));
        // 10,000 supplier keys: repeats, a row group's worth fits the page.
        let suppliers: Int64Array = (0..8192)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                Some((rng % 10_000) as i64)
            })
            .collect();
        assert!(pays(Arc::new(suppliers)));
    }

    #[test]
    fn high_cardinality_columns_go_without() {
        let keys: Int64Array = (0..SAMPLE_ROWS as i64).map(Some).collect();
        assert!(!pays(Arc::new(keys)));
        // Four rows per order, as lineitem's l_orderkey: repeats, but a row group of them
        // outgrows the dictionary page.
        let orders: Int64Array = (0..SAMPLE_ROWS as i64).map(|i| Some(i / 4)).collect();
        assert!(!pays(Arc::new(orders)));
        let text: StringArray = (0..SAMPLE_ROWS).map(|i| Some(format!("comment {i}"))).collect();
        assert!(!pays(Arc::new(text)));
        // 200,000 part keys sampled 8,192 times: almost no repeats yet, far too many values.
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let parts: Int64Array = (0..8192)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                Some((rng % 200_000) as i64)
            })
            .collect();
        assert!(!pays(Arc::new(parts)));
    }

    #[test]
    fn every_flat_column_is_decided_and_the_policy_overrides() {
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from_iter_values(0..5000)) as ArrayRef),
            (
                "flag",
                Arc::new(StringArray::from_iter_values(
                    (0..5000).map(|i| if i % 2 == 0 { "A" } else { "B" }),
                )) as ArrayRef,
            ),
        ])
        .unwrap();
        let sampled = writer_properties(&batch, 3, 1 << 20, DictionaryPolicy::Sampled).unwrap();
        assert!(!sampled.dictionary_enabled(&ColumnPath::from("id")));
        assert!(sampled.dictionary_enabled(&ColumnPath::from("flag")));
        let never = writer_properties(&batch, 3, 1 << 20, DictionaryPolicy::Never).unwrap();
        assert!(!never.dictionary_enabled(&ColumnPath::from("flag")));
        let always = writer_properties(&batch, 3, 1 << 20, DictionaryPolicy::Always).unwrap();
        assert!(always.dictionary_enabled(&ColumnPath::from("id")));
        // Statistics: page level for the key, none for the text column, whatever the policy.
        for props in [&sampled, &never, &always] {
            assert_eq!(
                props.statistics_enabled(&ColumnPath::from("id")),
                EnabledStatistics::Page
            );
            assert_eq!(
                props.statistics_enabled(&ColumnPath::from("flag")),
                EnabledStatistics::None
            );
        }
    }
}
