//! Order-independent row checksums.
//!
//! Each row is encoded with Arrow's row format (a canonical byte encoding that depends only on
//! the values and their types), hashed with xxh3, and the hashes are added with wrapping
//! arithmetic. Addition makes the sum independent of row and file order, lets parts of a chunk
//! be combined, and — unlike xor — still changes when a row appears twice.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Row count and checksum of a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowSummary {
    /// Number of rows.
    pub rows: u64,
    /// Wrapping sum of per-row xxh3 hashes.
    pub checksum: u64,
}

impl RowSummary {
    /// Adds another set of rows.
    pub fn merge(&mut self, other: RowSummary) {
        self.rows += other.rows;
        self.checksum = self.checksum.wrapping_add(other.checksum);
    }
}

/// Accumulates a [`RowSummary`] over batches of one schema.
pub struct RowChecksum {
    converter: RowConverter,
    /// The row encoding of the last batch, kept so its buffers are reused, not reallocated.
    rows: Option<Rows>,
    summary: RowSummary,
}

impl RowChecksum {
    /// A checksum for batches of `schema`.
    pub fn new(schema: &SchemaRef) -> Result<Self> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(RowChecksum {
            converter: RowConverter::new(fields)?,
            rows: None,
            summary: RowSummary::default(),
        })
    }

    /// Adds the rows of one batch.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = self
            .rows
            .get_or_insert_with(|| self.converter.empty_rows(batch.num_rows(), 0));
        rows.clear();
        self.converter.append(rows, batch.columns())?;
        let mut sum = 0u64;
        for row in rows.iter() {
            sum = sum.wrapping_add(xxhash_rust::xxh3::xxh3_64(row.as_ref()));
        }
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

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

    fn sum(batches: &[RecordBatch]) -> RowSummary {
        let mut c = RowChecksum::new(&batches[0].schema()).unwrap();
        batches.iter().for_each(|b| c.update(b).unwrap());
        c.summary()
    }

    #[test]
    fn independent_of_order_and_batching() {
        let a = sum(&[batch(&[1, 2, 3], &[Some("a"), None, Some("c")])]);
        let b = sum(&[batch(&[3], &[Some("c")]), batch(&[2, 1], &[None, Some("a")])]);
        assert_eq!(a, b);
    }

    #[test]
    fn detects_duplicates_and_changes() {
        let a = sum(&[batch(&[1, 2], &[Some("a"), Some("b")])]);
        let dup = sum(&[batch(&[1, 1, 2], &[Some("a"), Some("a"), Some("b")])]);
        let changed = sum(&[batch(&[1, 2], &[Some("a"), Some("B")])]);
        let null = sum(&[batch(&[1, 2], &[Some("a"), None])]);
        assert_ne!(a, dup);
        assert_ne!(a, changed);
        assert_ne!(a, null);
    }
}
