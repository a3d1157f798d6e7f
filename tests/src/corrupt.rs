//! Corruptions of a chunk's rows the proofs must catch: a missing row, a duplicated row, and
//! one changed value in a numeric, a string and a timestamp column. The suite stages them
//! before a commit, destinations' tamper hooks ([`TamperCommitted`]) apply them to committed
//! data, and broken test destinations use them to misbehave.

use std::fmt;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::kernels::numeric::{add, sub};
use arrow::compute::{cast, concat, concat_batches};
use arrow::datatypes::{DataType, SchemaRef};
use backhaul_core::fingerprint::MeasureKind;
use futures::future::BoxFuture;

/// One way to damage a chunk's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    /// The last row is gone.
    DropRow,
    /// The first row appears twice.
    DuplicateRow,
    /// One value of an integer or decimal column is one (unit of its last digit) higher.
    ChangeNumber(String),
    /// One value of a string column is one character longer.
    ChangeString(String),
    /// One value of a timestamp column is one unit earlier.
    ChangeTimestamp(String),
}

impl Corruption {
    /// Whether it changes values rather than the row count (what a count-only proof misses).
    pub fn changes_values(&self) -> bool {
        !matches!(self, Corruption::DropRow | Corruption::DuplicateRow)
    }

    /// The changed column, for value changes.
    pub fn column(&self) -> Option<&str> {
        match self {
            Corruption::DropRow | Corruption::DuplicateRow => None,
            Corruption::ChangeNumber(c) | Corruption::ChangeString(c) | Corruption::ChangeTimestamp(c) => Some(c),
        }
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::DropRow => f.write_str("one row missing"),
            Corruption::DuplicateRow => f.write_str("one row duplicated"),
            Corruption::ChangeNumber(c) => write!(f, "one value of numeric column `{c}` changed"),
            Corruption::ChangeString(c) => write!(f, "one value of string column `{c}` made longer"),
            Corruption::ChangeTimestamp(c) => write!(f, "one value of timestamp column `{c}` changed"),
        }
    }
}

/// Applies a corruption after a chunk committed: damages the destination's committed data of
/// chunk `chunk_id` of `job_id` (e.g. rewrites a file, or runs an `UPDATE`), applying
/// `corruption` to some of the chunk's rows with [`corrupt`]. Destinations implement it in
/// their tests so the suite can check that `read_back` then fails the proof check.
pub trait TamperCommitted: Send + Sync {
    /// Damages the committed chunk; an error says why it could not.
    fn tamper<'a>(
        &'a self,
        job_id: &'a str,
        chunk_id: u64,
        corruption: &'a Corruption,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// The corruptions `rows` allow, columns picked by type (never `avoid`, the cursor column, for
/// numbers and strings; timestamps only move down, so a cursor stays in its range), and a note
/// for each kind of column the rows lack.
pub fn corruptions_for(rows: &RecordBatch, avoid: Option<&str>) -> (Vec<Corruption>, Vec<String>) {
    let schema = rows.schema();
    let mut out = vec![Corruption::DropRow, Corruption::DuplicateRow];
    let mut notes = Vec::new();
    let usable = |i: usize| rows.column(i).null_count() < rows.num_rows();
    let fields = || schema.fields().iter().enumerate().filter(|(i, _)| usable(*i));
    let number = fields().find(|(_, f)| {
        Some(f.name().as_str()) != avoid
            && matches!(
                MeasureKind::of(f),
                MeasureKind::IntegerSum | MeasureKind::DecimalSum { .. }
            )
    });
    let string = fields().find(|(_, f)| {
        Some(f.name().as_str()) != avoid
            && matches!(MeasureKind::of(f), MeasureKind::ByteLength { json: false })
            && matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
    });
    let timestamp = fields()
        .filter(|(_, f)| matches!(f.data_type(), DataType::Timestamp(..)))
        .min_by_key(|(_, f)| Some(f.name().as_str()) == avoid);
    match number {
        Some((_, f)) => out.push(Corruption::ChangeNumber(f.name().clone())),
        None => notes
            .push("the rows have no integer or decimal column with values: a changed number was not checked".into()),
    }
    match string {
        Some((_, f)) => out.push(Corruption::ChangeString(f.name().clone())),
        None => notes.push("the rows have no string column with values: a changed string was not checked".into()),
    }
    match timestamp {
        Some((_, f)) => out.push(Corruption::ChangeTimestamp(f.name().clone())),
        None => notes.push("the rows have no timestamp column with values: a changed timestamp was not checked".into()),
    }
    (out, notes)
}

/// `rows` with `corruption` applied.
pub fn corrupt(rows: &RecordBatch, corruption: &Corruption) -> Result<RecordBatch, String> {
    let n = rows.num_rows();
    if n == 0 {
        return Err("no rows to corrupt".into());
    }
    let err = |e: arrow::error::ArrowError| e.to_string();
    match corruption {
        Corruption::DropRow => Ok(rows.slice(0, n - 1)),
        Corruption::DuplicateRow => concat_batches(&rows.schema(), &[rows.clone(), rows.slice(0, 1)]).map_err(err),
        Corruption::ChangeNumber(c) | Corruption::ChangeString(c) | Corruption::ChangeTimestamp(c) => {
            let schema: SchemaRef = rows.schema();
            let index = schema.index_of(c).map_err(err)?;
            let column = rows.column(index);
            let (row, changed) = match corruption {
                Corruption::ChangeNumber(_) => {
                    let row = first_valid(column).ok_or("the column has only NULLs")?;
                    let value = column.slice(row, 1);
                    let one = cast(&Int64Array::from(vec![1]), column.data_type()).map_err(err)?;
                    let changed = add(&value, &one).or_else(|_| sub(&value, &one)).map_err(err)?;
                    (row, changed)
                }
                Corruption::ChangeString(_) => {
                    let row = first_valid(column).ok_or("the column has only NULLs")?;
                    let text = cast(&column.slice(row, 1), &DataType::Utf8).map_err(err)?;
                    let longer = StringArray::from(vec![format!("{}x", text.as_string::<i32>().value(0))]);
                    (row, cast(&longer, column.data_type()).map_err(err)?)
                }
                _ => {
                    // One unit down, at a row above the column's minimum, so a cursor column
                    // stays inside the chunk's range.
                    let raw = cast(column, &DataType::Int64).map_err(err)?;
                    let raw = raw.as_primitive::<arrow::datatypes::Int64Type>();
                    let min = raw.iter().flatten().min().ok_or("the column has only NULLs")?;
                    let row = (0..n)
                        .find(|&i| raw.is_valid(i) && raw.value(i) > min)
                        .ok_or("every value of the column is the same")?;
                    let lower = Int64Array::from(vec![raw.value(row) - 1]);
                    (row, cast(&lower, column.data_type()).map_err(err)?)
                }
            };
            let spliced: ArrayRef = concat(&[
                column.slice(0, row).as_ref(),
                changed.as_ref(),
                column.slice(row + 1, n - row - 1).as_ref(),
            ])
            .map_err(err)?;
            let mut columns = rows.columns().to_vec();
            columns[index] = spliced;
            RecordBatch::try_new(schema, columns).map_err(err)
        }
    }
}

fn first_valid(column: &ArrayRef) -> Option<usize> {
    (0..column.len()).find(|&i| column.is_valid(i))
}
