//! Reading a cursor range with one SQL query and decoding rows straight into Arrow builders.
//!
//! The query runs on a blocking thread and hands batches over a bounded channel, so at most the
//! channel's capacity plus the batch being built are in memory, whatever the range.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use backhaul_core::connector::{BatchStream, TableDescription, channel_stream};
use backhaul_core::cursor::CursorRange;
use backhaul_core::{Error, Result};
use rusqlite::types::ValueRef;
use tokio::sync::mpsc;

use crate::schema::quote;
use crate::{connect, sql_error};

/// Batches queued between the reading thread and the consumer.
const CHANNEL_CAPACITY: usize = 2;
/// How often (in rows) the reader checks whether the consumer went away mid-batch.
const CANCEL_CHECK_ROWS: usize = 4096;

type Item = Result<RecordBatch>;

/// Starts reading `range` and returns the batches as a stream. Rows whose cursor is NULL satisfy
/// no comparison and so belong to no range.
pub(crate) fn stream(
    path: PathBuf,
    table: String,
    desc: TableDescription,
    range: CursorRange,
    batch_rows: usize,
) -> BatchStream {
    let (tx, rx) = mpsc::channel::<Item>(CHANNEL_CAPACITY);
    let sql = select_sql(&table, &desc);
    let batch_rows = batch_rows.max(1);
    let task = tokio::task::spawn_blocking(move || {
        if let Err(e) = read(&path, &sql, range, desc.schema, batch_rows, &tx) {
            // The consumer may be gone already; then nobody needs the error.
            let _ = tx.blocking_send(Err(e));
        }
    });
    channel_stream(rx, task, "embedded extract")
}

fn select_sql(table: &str, desc: &TableDescription) -> String {
    let columns: Vec<String> = desc.schema.fields().iter().map(|f| quote(f.name())).collect();
    let cursor = quote(&desc.cursor_column);
    // Cursor values are stored in cursor units (micros, days, integers), so the bounds compare
    // directly and the index on the cursor column serves the predicate.
    format!(
        "SELECT {} FROM {} WHERE {cursor} >= ?1 AND {cursor} < ?2",
        columns.join(", "),
        quote(table)
    )
}

fn read(
    path: &Path,
    sql: &str,
    range: CursorRange,
    schema: SchemaRef,
    batch_rows: usize,
    tx: &mpsc::Sender<Item>,
) -> Result<()> {
    let conn = connect(path)?;
    let mut stmt = conn.prepare(sql).map_err(|e| sql_error(path, e))?;
    let mut rows = stmt.query([range.from, range.to]).map_err(|e| sql_error(path, e))?;
    let mut columns = schema
        .fields()
        .iter()
        .map(|f| Column::new(f.data_type(), batch_rows))
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut pending = 0usize;
    while let Some(row) = rows.next().map_err(|e| sql_error(path, e))? {
        for (i, column) in columns.iter_mut().enumerate() {
            let value = row.get_ref(i).map_err(|e| sql_error(path, e))?;
            column
                .append(value)
                .map_err(|m| Error::TypeFidelity(format!("column {}: {m}", names[i])))?;
        }
        pending += 1;
        if pending == batch_rows {
            if tx.blocking_send(Ok(finish(&schema, &mut columns)?)).is_err() {
                return Ok(()); // The consumer dropped the stream: stop reading.
            }
            pending = 0;
        } else if pending.is_multiple_of(CANCEL_CHECK_ROWS) && tx.is_closed() {
            return Ok(());
        }
    }
    if pending > 0 {
        let _ = tx.blocking_send(Ok(finish(&schema, &mut columns)?));
    }
    Ok(())
}

fn finish(schema: &SchemaRef, columns: &mut [Column]) -> Result<RecordBatch> {
    let arrays: Vec<ArrayRef> = columns.iter_mut().map(Column::finish).collect();
    Ok(RecordBatch::try_new(Arc::clone(schema), arrays)?)
}

/// One Arrow builder per column, chosen from the column's Arrow type.
enum Column {
    Int64(Int64Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Date32(Date32Builder),
    Decimal { builder: Decimal128Builder, precision: u8 },
}

impl Column {
    fn new(data_type: &DataType, capacity: usize) -> Result<Self> {
        Ok(match data_type {
            DataType::Int64 => Column::Int64(Int64Builder::with_capacity(capacity)),
            DataType::Float64 => Column::Float64(Float64Builder::with_capacity(capacity)),
            DataType::Utf8 => Column::Utf8(StringBuilder::with_capacity(capacity, capacity * 32)),
            DataType::Binary => Column::Binary(BinaryBuilder::with_capacity(capacity, capacity * 32)),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                Column::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone_opt(tz.clone()))
            }
            DataType::Date32 => Column::Date32(Date32Builder::with_capacity(capacity)),
            DataType::Decimal128(p, s) => Column::Decimal {
                builder: Decimal128Builder::with_capacity(capacity).with_precision_and_scale(*p, *s)?,
                precision: *p,
            },
            other => return Err(Error::Internal(format!("no embedded decoder for Arrow type {other}"))),
        })
    }

    /// Appends one stored value; a value of the wrong storage class is a fidelity error rather
    /// than something to coerce.
    fn append(&mut self, value: ValueRef<'_>) -> Result<(), String> {
        let mismatch = |expected: &str| format!("expected {expected}, found {:?}", value.data_type());
        match (self, value) {
            (Column::Int64(b), ValueRef::Null) => b.append_null(),
            (Column::Int64(b), ValueRef::Integer(v)) => b.append_value(v),
            (Column::Float64(b), ValueRef::Null) => b.append_null(),
            (Column::Float64(b), ValueRef::Real(v)) => b.append_value(v),
            (Column::Utf8(b), ValueRef::Null) => b.append_null(),
            (Column::Utf8(b), ValueRef::Text(t)) => {
                b.append_value(std::str::from_utf8(t).map_err(|e| format!("text is not UTF-8: {e}"))?)
            }
            (Column::Binary(b), ValueRef::Null) => b.append_null(),
            (Column::Binary(b), ValueRef::Blob(v)) => b.append_value(v),
            (Column::Timestamp(b), ValueRef::Null) => b.append_null(),
            (Column::Timestamp(b), ValueRef::Integer(v)) => b.append_value(v),
            (Column::Date32(b), ValueRef::Null) => b.append_null(),
            (Column::Date32(b), ValueRef::Integer(v)) => {
                b.append_value(i32::try_from(v).map_err(|_| format!("day {v} is outside the Date32 range"))?)
            }
            (Column::Decimal { builder, .. }, ValueRef::Null) => builder.append_null(),
            (Column::Decimal { builder, precision }, ValueRef::Integer(v)) => {
                if (v as i128).abs() >= 10i128.pow(u32::from(*precision)) {
                    return Err(format!("{v} does not fit DECIMAL precision {precision}"));
                }
                builder.append_value(v as i128)
            }
            (Column::Int64(_), _) => return Err(mismatch("INTEGER")),
            (Column::Float64(_), _) => return Err(mismatch("REAL")),
            (Column::Utf8(_), _) => return Err(mismatch("TEXT")),
            (Column::Binary(_), _) => return Err(mismatch("BLOB")),
            (Column::Timestamp(_), _) => return Err(mismatch("INTEGER microseconds")),
            (Column::Date32(_), _) => return Err(mismatch("INTEGER days")),
            (Column::Decimal { .. }, _) => return Err(mismatch("INTEGER scaled decimal")),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Int64(b) => Arc::new(b.finish()),
            Column::Float64(b) => Arc::new(b.finish()),
            Column::Utf8(b) => Arc::new(b.finish()),
            Column::Binary(b) => Arc::new(b.finish()),
            Column::Timestamp(b) => Arc::new(b.finish()),
            Column::Date32(b) => Arc::new(b.finish()),
            Column::Decimal { builder, .. } => Arc::new(builder.finish()),
        }
    }
}
