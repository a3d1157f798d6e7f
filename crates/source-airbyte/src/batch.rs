//! Records (JSON objects) into Arrow batches of the stream's columns. A value that does not fit
//! its column's declared type fails with the stream, field and value: nothing is coerced.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use backhaul_core::cursor::CursorRange;
use backhaul_core::{Error, Result};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike};
use serde_json::value::RawValue;
use serde_json::{Number, Value};

use crate::schema::{Column, ColumnType};

/// Longest value quoted in an error.
const QUOTED_CHARS: usize = 200;

/// One parsed field value.
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
}

enum ColumnBuilder {
    Int64(Int64Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Utf8(StringBuilder),
    Date32(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Appended: its cursor is inside the range.
    Yes,
    /// Its cursor is outside the range, or NULL.
    Outside,
}

/// Builds batches of one stream's records whose cursor is inside a range.
pub struct BatchBuilder {
    stream: String,
    columns: Arc<Vec<Column>>,
    schema: SchemaRef,
    cursor: usize,
    range: CursorRange,
    builders: Vec<ColumnBuilder>,
    rows: usize,
}

impl BatchBuilder {
    /// Batches of `columns` (Arrow `schema`), keeping records whose column `cursor` is in `range`.
    pub fn new(stream: &str, columns: Arc<Vec<Column>>, schema: SchemaRef, cursor: usize, range: CursorRange) -> Self {
        let builders = columns.iter().map(|c| new_builder(c.ty)).collect();
        BatchBuilder {
            stream: stream.into(),
            columns,
            schema,
            cursor,
            range,
            builders,
            rows: 0,
        }
    }

    /// Appends `data` (a record's JSON object) when its cursor is inside the range.
    pub fn push(&mut self, data: &RawValue) -> Result<Kept> {
        let mut members: HashMap<String, &RawValue> = serde_json::from_str(data.get()).map_err(|e| {
            Error::TypeFidelity(format!(
                "stream `{}`: a record is not a JSON object ({e}): `{}`",
                self.stream,
                quoted(data.get())
            ))
        })?;
        let mut cells = Vec::with_capacity(self.columns.len());
        for column in self.columns.iter() {
            let value = members.remove(&column.name);
            cells.push(self.cell(column, value)?);
        }
        if let Some(field) = members.keys().min() {
            return Err(Error::TypeFidelity(format!(
                "stream `{}`: field `{field}` of a record is not in the stream's catalog schema",
                self.stream
            )));
        }
        match cells[self.cursor] {
            Cell::Int(v) if self.range.from <= v && v < self.range.to => {}
            _ => return Ok(Kept::Outside),
        }
        for (builder, cell) in self.builders.iter_mut().zip(cells) {
            append(builder, cell);
        }
        self.rows += 1;
        Ok(Kept::Yes)
    }

    /// The rows appended so far as a batch; the builder starts empty again.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(finish_builder).collect();
        self.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }

    fn cell(&self, column: &Column, value: Option<&RawValue>) -> Result<Cell> {
        let text = match value {
            None => "null",
            Some(v) => v.get(),
        };
        let bad = || {
            Error::TypeFidelity(format!(
                "stream `{}`, field `{}`: `{}` is not {} (declared {})",
                self.stream,
                column.name,
                quoted(text),
                column.ty.expected(),
                column.source_type
            ))
        };
        if text == "null" {
            return if column.nullable { Ok(Cell::Null) } else { Err(bad()) };
        }
        if column.ty == ColumnType::Json {
            return Ok(Cell::Text(text.to_string()));
        }
        let value: Value = serde_json::from_str(text).map_err(|_| bad())?;
        let cell = match (column.ty, &value) {
            (ColumnType::Int64, Value::Number(n)) => n.as_i64().map(Cell::Int),
            (ColumnType::Float64, Value::Number(n)) => exact_f64(n).map(Cell::Float),
            (ColumnType::Boolean, Value::Bool(b)) => Some(Cell::Bool(*b)),
            (ColumnType::Utf8, Value::String(s)) => Some(Cell::Text(s.clone())),
            (ColumnType::Date32, Value::String(s)) => parse_date(s).map(Cell::Int),
            (ColumnType::Timestamp { utc }, Value::String(s)) => parse_timestamp(s, utc).map(Cell::Int),
            _ => None,
        };
        cell.ok_or_else(bad)
    }
}

/// An integer only when the float holds it exactly.
fn exact_f64(n: &Number) -> Option<f64> {
    if let Some(i) = n.as_i64() {
        let f = i as f64;
        return (f as i64 == i && f.abs() < 9.2e18).then_some(f);
    }
    if let Some(u) = n.as_u64() {
        let f = u as f64;
        return (f as u64 == u && f < 1.8e19).then_some(f);
    }
    n.as_f64()
}

/// Days since the epoch of `YYYY-MM-DD`.
fn parse_date(s: &str) -> Option<i64> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some((d - NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days())
}

/// Microseconds since the epoch (UTC for zoned values, wall clock for naive ones); values
/// finer than a microsecond are refused rather than truncated.
fn parse_timestamp(s: &str, utc: bool) -> Option<i64> {
    let naive = if utc {
        DateTime::parse_from_rfc3339(s).ok()?.naive_utc()
    } else {
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())?
    };
    if naive.nanosecond() % 1_000 != 0 {
        return None;
    }
    Some(naive.and_utc().timestamp_micros())
}

fn quoted(text: &str) -> String {
    let mut q: String = text.chars().take(QUOTED_CHARS).collect();
    if q.len() < text.len() {
        q.push('…');
    }
    q
}

fn new_builder(ty: ColumnType) -> ColumnBuilder {
    match ty {
        ColumnType::Int64 => ColumnBuilder::Int64(Int64Builder::new()),
        ColumnType::Float64 => ColumnBuilder::Float64(Float64Builder::new()),
        ColumnType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::new()),
        ColumnType::Utf8 | ColumnType::Json => ColumnBuilder::Utf8(StringBuilder::new()),
        ColumnType::Date32 => ColumnBuilder::Date32(Date32Builder::new()),
        ColumnType::Timestamp { utc } => {
            let b = TimestampMicrosecondBuilder::new();
            ColumnBuilder::Timestamp(if utc { b.with_timezone("UTC") } else { b })
        }
    }
}

/// Appends a cell already checked against the builder's type.
fn append(builder: &mut ColumnBuilder, cell: Cell) {
    match (builder, cell) {
        (ColumnBuilder::Int64(b), Cell::Int(v)) => b.append_value(v),
        (ColumnBuilder::Float64(b), Cell::Float(v)) => b.append_value(v),
        (ColumnBuilder::Boolean(b), Cell::Bool(v)) => b.append_value(v),
        (ColumnBuilder::Utf8(b), Cell::Text(v)) => b.append_value(v),
        (ColumnBuilder::Date32(b), Cell::Int(v)) => b.append_value(v as i32),
        (ColumnBuilder::Timestamp(b), Cell::Int(v)) => b.append_value(v),
        (ColumnBuilder::Int64(b), _) => b.append_null(),
        (ColumnBuilder::Float64(b), _) => b.append_null(),
        (ColumnBuilder::Boolean(b), _) => b.append_null(),
        (ColumnBuilder::Utf8(b), _) => b.append_null(),
        (ColumnBuilder::Date32(b), _) => b.append_null(),
        (ColumnBuilder::Timestamp(b), _) => b.append_null(),
    }
}

fn finish_builder(builder: &mut ColumnBuilder) -> ArrayRef {
    match builder {
        ColumnBuilder::Int64(b) => Arc::new(b.finish()),
        ColumnBuilder::Float64(b) => Arc::new(b.finish()),
        ColumnBuilder::Boolean(b) => Arc::new(b.finish()),
        ColumnBuilder::Utf8(b) => Arc::new(b.finish()),
        ColumnBuilder::Date32(b) => Arc::new(b.finish()),
        ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Stream;
    use crate::schema::{arrow_schema, columns};
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Date32Type, Float64Type, Int64Type, TimestampMicrosecondType};

    fn builder() -> BatchBuilder {
        let stream: Stream = serde_json::from_str(
            r#"{"name": "users", "json_schema": {"required": ["id", "at"], "properties": {
                "id": {"type": "integer"},
                "at": {"type": "string", "format": "date-time"},
                "local": {"type": ["null", "string"], "format": "date-time", "airbyte_type": "timestamp_without_timezone"},
                "day": {"type": "string", "format": "date"},
                "price": {"type": "number"},
                "ok": {"type": "boolean"},
                "doc": {"type": "object"}
            }}}"#,
        )
        .unwrap();
        let cols = columns(&stream).unwrap();
        let schema = Arc::new(arrow_schema(&cols));
        // 2024-01-01 to 2024-01-02.
        let range = CursorRange::new(1_704_067_200_000_000, 1_704_153_600_000_000);
        BatchBuilder::new("users", Arc::new(cols), schema, 1, range)
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.into()).unwrap()
    }

    #[test]
    fn records_become_typed_rows_inside_the_range() {
        let mut b = builder();
        let kept = b
            .push(&raw(
                r#"{"id": 1, "at": "2024-01-01T10:00:00.123456+02:00", "local": "2024-01-01T10:00:00", "day": "2024-02-29", "price": 1.5, "ok": true, "doc": {"a": 1.50, "b": [1]}}"#,
            ))
            .unwrap();
        assert_eq!(kept, Kept::Yes);
        assert_eq!(
            b.push(&raw(r#"{"id": 2, "at": "2024-01-02T00:00:00Z"}"#)).unwrap(),
            Kept::Outside
        );
        assert_eq!(
            b.push(&raw(r#"{"id": 3, "at": "2024-01-01T00:00:00Z", "doc": null}"#))
                .unwrap(),
            Kept::Yes
        );
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let ints = |i: usize| batch.column(i).as_primitive::<Int64Type>().clone();
        assert_eq!(ints(0).values(), &[1, 3]);
        let at = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.values(), &[1_704_096_000_123_456, 1_704_067_200_000_000]);
        let local = batch.column(2).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(local.value(0), 1_704_103_200_000_000);
        assert!(local.is_null(1));
        assert_eq!(batch.column(3).as_primitive::<Date32Type>().value(0), 19_782);
        assert_eq!(batch.column(4).as_primitive::<Float64Type>().value(0), 1.5);
        assert!(batch.column(5).as_boolean().value(0));
        // JSON stays the connector's text, and JSON null is NULL.
        let doc = batch.column(6).as_string::<i32>();
        assert_eq!(doc.value(0), r#"{"a": 1.50, "b": [1]}"#);
        assert!(doc.is_null(1));
        assert_eq!(b.rows, 0);
    }

    #[test]
    fn values_that_do_not_fit_are_errors_naming_stream_field_and_value() {
        let at = r#""at": "2024-01-01T00:00:00Z""#;
        for (record, field, value) in [
            (format!(r#"{{"id": "7", {at}}}"#), "id", "\"7\""),
            (format!(r#"{{"id": 1.0, {at}}}"#), "id", "1.0"),
            (format!(r#"{{"id": null, {at}}}"#), "id", "null"),
            (format!(r#"{{{at}}}"#), "id", "null"),
            (
                r#"{"id": 1, "at": "2024-01-01T00:00:00"}"#.to_string(),
                "at",
                "2024-01-01T00:00:00",
            ),
            (
                r#"{"id": 1, "at": "2024-01-01T00:00:00.1234567Z"}"#.to_string(),
                "at",
                "1234567",
            ),
            (
                format!(r#"{{"id": 1, {at}, "day": "2024-02-30"}}"#),
                "day",
                "2024-02-30",
            ),
            (
                format!(r#"{{"id": 1, {at}, "price": 9007199254740993}}"#),
                "price",
                "9007199254740993",
            ),
            (format!(r#"{{"id": 1, {at}, "ok": 1}}"#), "ok", "`1`"),
        ] {
            let e = builder().push(&raw(&record)).unwrap_err();
            assert_eq!(e.kind(), "type_fidelity");
            let e = e.to_string();
            assert!(e.contains(&format!("stream `users`, field `{field}`:")), "{e}");
            assert!(e.contains(value), "{value}: {e}");
        }
        let e = builder()
            .push(&raw(&format!(r#"{{"id": 1, {at}, "extra": 1}}"#)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("field `extra` of a record is not in the stream's catalog schema"),
            "{e}"
        );
    }
}
