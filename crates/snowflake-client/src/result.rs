//! Result rowsets decoded into exact Arrow types.
//!
//! The schema comes from the response's `rowtype` (Snowflake's column types), so the Arrow
//! (`rowsetBase64`, Arrow IPC stream) and JSON (`rowset`, strings) encodings of one result
//! decode to the same schema:
//!
//! | Snowflake | Arrow |
//! |---|---|
//! | NUMBER(p≤18, 0) | Int64 |
//! | NUMBER(p>18, 0), NUMBER(p, s>0) | Decimal128(p, s) |
//! | REAL/FLOAT | Float64 |
//! | TEXT | Utf8 |
//! | BINARY | Binary |
//! | BOOLEAN | Boolean |
//! | DATE | Date32 |
//! | TIME(s) | Time64 (µs for s ≤ 6, else ns) |
//! | TIMESTAMP_NTZ(s) | Timestamp(unit of s) |
//! | TIMESTAMP_LTZ(s), TIMESTAMP_TZ(s) | Timestamp(unit of s, "UTC") — the instant; a TZ value's own offset is not kept |
//! | VARIANT, OBJECT, ARRAY | Utf8 with `ARROW:extension:name = arrow.json` |
//! | anything else | Utf8 (the server's text) |
//!
//! The unit of s is seconds for s = 0, ms for s ≤ 3, µs for s ≤ 6, else ns: always at least
//! as fine as the column's scale, so no value is rounded. Every field also carries the
//! server's type in `snowflake:type` (and `snowflake:precision`/`snowflake:scale`).
//!
//! Arrow encodings accepted (real Snowflake, per the official connectors' converters, and
//! fakesnow): NUMBER as any integer width holding the value scaled by 10^scale, or as
//! decimal128; timestamps as int64 in units of 10^-scale s, or as a struct of
//! `epoch` (s) + `fraction` (ns) [+ `timezone`], or (TZ) `epoch` (scaled) + `timezone`; TIME
//! as int32/int64 in units of 10^-scale s; DATE as date32.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Array, Decimal128Builder,
    Float64Builder, Int64Array, Int64Builder, PrimitiveArray, RecordBatch, RecordBatchOptions, StringBuilder,
    StructArray, Time64MicrosecondArray, Time64NanosecondArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Int8Type, Int16Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
};
use backhaul_core::fingerprint::{EXTENSION_NAME_KEY, JSON_EXTENSION};
use base64::Engine;
use serde::Deserialize;

use crate::error::{Error, Result};

/// One column of the response's `rowtype`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RowType {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default)]
    pub precision: Option<i64>,
    #[serde(default)]
    pub scale: Option<i64>,
    #[serde(default = "yes")]
    pub nullable: bool,
}

fn yes() -> bool {
    true
}

/// What a column decodes to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Int,
    Decimal {
        precision: u8,
        scale: i8,
    },
    Float,
    Text,
    Json,
    Binary,
    Boolean,
    Date,
    Time {
        unit: TimeUnit,
        scale: u32,
    },
    Timestamp {
        unit: TimeUnit,
        scale: u32,
        utc: bool,
        tz: bool,
    },
}

impl RowType {
    fn kind(&self) -> Result<Kind> {
        let scale = self.scale.unwrap_or(0).clamp(0, 9) as u32;
        let kind = match self.type_name.to_ascii_uppercase().as_str() {
            "FIXED" | "NUMBER" | "DECIMAL" => {
                let precision = self.precision.unwrap_or(38).clamp(1, 38) as u8;
                if scale == 0 && precision <= 18 {
                    Kind::Int
                } else {
                    Kind::Decimal {
                        precision,
                        scale: scale.min(u32::from(precision)) as i8,
                    }
                }
            }
            "REAL" | "FLOAT" | "DOUBLE" => Kind::Float,
            "BINARY" => Kind::Binary,
            "BOOLEAN" => Kind::Boolean,
            "DATE" => Kind::Date,
            "TIME" => Kind::Time {
                unit: if scale <= 6 {
                    TimeUnit::Microsecond
                } else {
                    TimeUnit::Nanosecond
                },
                scale,
            },
            "TIMESTAMP_NTZ" | "TIMESTAMP" | "DATETIME" => Kind::Timestamp {
                unit: unit_of(scale),
                scale,
                utc: false,
                tz: false,
            },
            "TIMESTAMP_LTZ" => Kind::Timestamp {
                unit: unit_of(scale),
                scale,
                utc: true,
                tz: false,
            },
            "TIMESTAMP_TZ" => Kind::Timestamp {
                unit: unit_of(scale),
                scale,
                utc: true,
                tz: true,
            },
            "VARIANT" | "OBJECT" | "ARRAY" => Kind::Json,
            _ => Kind::Text,
        };
        Ok(kind)
    }

    fn field(&self) -> Result<Field> {
        let kind = self.kind()?;
        let data_type = match kind {
            Kind::Int => DataType::Int64,
            Kind::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            Kind::Float => DataType::Float64,
            Kind::Text | Kind::Json => DataType::Utf8,
            Kind::Binary => DataType::Binary,
            Kind::Boolean => DataType::Boolean,
            Kind::Date => DataType::Date32,
            Kind::Time { unit, .. } => DataType::Time64(unit),
            Kind::Timestamp { unit, utc, .. } => DataType::Timestamp(unit, utc.then(|| "UTC".into())),
        };
        let mut metadata = HashMap::from([("snowflake:type".to_string(), self.type_name.to_ascii_uppercase())]);
        if let Some(precision) = self.precision {
            metadata.insert("snowflake:precision".into(), precision.to_string());
        }
        if let Some(scale) = self.scale {
            metadata.insert("snowflake:scale".into(), scale.to_string());
        }
        if kind == Kind::Json {
            metadata.insert(EXTENSION_NAME_KEY.into(), JSON_EXTENSION.into());
        }
        Ok(Field::new(&self.name, data_type, self.nullable).with_metadata(metadata))
    }
}

fn unit_of(scale: u32) -> TimeUnit {
    match scale {
        0 => TimeUnit::Second,
        1..=3 => TimeUnit::Millisecond,
        4..=6 => TimeUnit::Microsecond,
        _ => TimeUnit::Nanosecond,
    }
}

fn unit_digits(unit: TimeUnit) -> u32 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

/// The schema of a result from its `rowtype`.
pub(crate) fn schema_of(row_types: &[RowType]) -> Result<SchemaRef> {
    let fields = row_types.iter().map(RowType::field).collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Decodes one Arrow IPC stream (a `rowsetBase64` or a downloaded chunk) into batches of
/// `schema`.
pub(crate) fn decode_arrow_stream(bytes: &[u8], row_types: &[RowType], schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = with_nullable_fields(bytes)?;
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(&bytes[..]), None)
        .map_err(|e| Error::Protocol(format!("result is not an Arrow IPC stream: {e}")))?;
    let mut batches = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| Error::Protocol(format!("reading the Arrow result: {e}")))?;
        if batch.num_columns() != row_types.len() {
            return Err(Error::Protocol(format!(
                "Arrow result has {} columns, rowtype {}",
                batch.num_columns(),
                row_types.len()
            )));
        }
        let columns = batch
            .columns()
            .iter()
            .zip(row_types)
            .zip(schema.fields())
            .map(|((column, row_type), field)| {
                convert_arrow(column, row_type.kind()?, field.data_type())
                    .map_err(|e| Error::Protocol(format!("column {}: {e}", row_type.name)))
            })
            .collect::<Result<Vec<_>>>()?;
        batches.push(make_batch(schema, columns, batch.num_rows())?);
    }
    Ok(batches)
}

/// The stream with its schema message rewritten so that every field, nested ones included,
/// is nullable. NULLs are decided by the data and the rowtype, not by the stream's
/// declarations: fakesnow declares the children of its timestamp structs non-null and then
/// sends NULL timestamps as null children, which arrow's reader would otherwise refuse.
/// Only the schema message changes; the batches are read as they are.
fn with_nullable_fields(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions, write_message};
    let protocol = |e: arrow::error::ArrowError| Error::Protocol(format!("reading the Arrow result's schema: {e}"));
    let schema = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(protocol)?
        .schema();
    if schema.fields().iter().all(|f| all_nullable(f)) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    // The first message's frame: [0xFFFFFFFF] <length: i32 LE> <flatbuffer of `length` bytes>.
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")))
    };
    let (start, length) = match word(0) {
        Some(0xFFFF_FFFF) => (8, word(4)),
        _ => (4, word(0)),
    };
    let end = length
        .map(|length| start + length as usize)
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| Error::Protocol("truncated Arrow schema message".into()))?;
    let relaxed = Schema::new_with_metadata(
        schema.fields().iter().map(|f| nullable(f)).collect::<Vec<_>>(),
        schema.metadata().clone(),
    );
    let options = IpcWriteOptions::default();
    let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
        &relaxed,
        &mut DictionaryTracker::new(false),
        &options,
    );
    let mut out = Vec::with_capacity(bytes.len() + 64);
    write_message(&mut out, encoded, &options).map_err(protocol)?;
    out.extend_from_slice(&bytes[end..]);
    Ok(std::borrow::Cow::Owned(out))
}

fn all_nullable(field: &Field) -> bool {
    field.is_nullable()
        && match field.data_type() {
            DataType::Struct(children) => children.iter().all(|c| all_nullable(c)),
            DataType::List(child) | DataType::LargeList(child) => all_nullable(child),
            _ => true,
        }
}

fn nullable(field: &Field) -> Field {
    let data_type = match field.data_type() {
        DataType::Struct(children) => DataType::Struct(children.iter().map(|c| nullable(c)).collect()),
        DataType::List(child) => DataType::List(Arc::new(nullable(child))),
        DataType::LargeList(child) => DataType::LargeList(Arc::new(nullable(child))),
        other => other.clone(),
    };
    field.clone().with_data_type(data_type).with_nullable(true)
}

/// Decodes a base64 `rowsetBase64`.
pub(crate) fn decode_base64_rowset(text: &str, row_types: &[RowType], schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| Error::Protocol(format!("rowsetBase64 is not base64: {e}")))?;
    decode_arrow_stream(&bytes, row_types, schema)
}

fn make_batch(schema: &SchemaRef, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| Error::Protocol(format!("building the result batch: {e}")))
}

fn convert_arrow(column: &ArrayRef, kind: Kind, target: &DataType) -> std::result::Result<ArrayRef, String> {
    if column.data_type() == target {
        return Ok(column.clone());
    }
    match kind {
        Kind::Int | Kind::Decimal { .. } => {
            let unscaled = unscaled_i128(column)?;
            match kind {
                Kind::Int => {
                    let values: Int64Array = unscaled
                        .iter()
                        .map(|v| v.map(i64::try_from).transpose())
                        .collect::<std::result::Result<_, _>>()
                        .map_err(|_| "a NUMBER value does not fit Int64".to_string())?;
                    Ok(Arc::new(values))
                }
                Kind::Decimal { precision, scale } => {
                    let (source_scale, values) = match column.data_type() {
                        DataType::Decimal128(_, s) => (*s, unscaled),
                        _ => (scale, unscaled),
                    };
                    let values = rescale_decimal(values, source_scale, scale)?;
                    let array = Decimal128Array::from(values)
                        .with_precision_and_scale(precision, scale)
                        .map_err(|e| e.to_string())?;
                    Ok(Arc::new(array))
                }
                _ => unreachable!(),
            }
        }
        Kind::Timestamp { unit, scale, .. } => {
            let values = timestamp_values(column, scale, unit)?;
            Ok(timestamp_array(values, target))
        }
        Kind::Time { unit, scale } => {
            let scaled = integers(column)?;
            let factor = 10i64.pow(unit_digits(unit) - scale.min(unit_digits(unit)));
            let values: Vec<Option<i64>> = scaled.iter().map(|v| v.and_then(|v| v.checked_mul(factor))).collect();
            Ok(match unit {
                TimeUnit::Microsecond => Arc::new(Time64MicrosecondArray::from(values)),
                _ => Arc::new(Time64NanosecondArray::from(values)),
            })
        }
        Kind::Date => match column.data_type() {
            DataType::Int32 => Ok(Arc::new(
                column.as_primitive::<Int32Type>().reinterpret_cast::<Date32Type>(),
            )),
            _ => arrow::compute::cast(column, target).map_err(|e| e.to_string()),
        },
        Kind::Float | Kind::Text | Kind::Json | Kind::Binary | Kind::Boolean => {
            arrow::compute::cast(column, target).map_err(|e| e.to_string())
        }
    }
}

/// Any integer or decimal128 column as i128 values (unscaled).
fn unscaled_i128(column: &ArrayRef) -> std::result::Result<Vec<Option<i128>>, String> {
    Ok(match column.data_type() {
        DataType::Decimal128(..) => column.as_primitive::<Decimal128Type>().iter().collect(),
        _ => integers(column)?.into_iter().map(|v| v.map(i128::from)).collect(),
    })
}

/// Any integer column as i64 values.
fn integers(column: &ArrayRef) -> std::result::Result<Vec<Option<i64>>, String> {
    fn widen<T: arrow::datatypes::ArrowPrimitiveType>(array: &PrimitiveArray<T>) -> Vec<Option<i64>>
    where
        T::Native: Into<i64>,
    {
        array.iter().map(|v| v.map(Into::into)).collect()
    }
    Ok(match column.data_type() {
        DataType::Int8 => widen(column.as_primitive::<Int8Type>()),
        DataType::Int16 => widen(column.as_primitive::<Int16Type>()),
        DataType::Int32 => widen(column.as_primitive::<Int32Type>()),
        DataType::Int64 => widen(column.as_primitive::<Int64Type>()),
        DataType::Decimal128(_, 0) => column
            .as_primitive::<Decimal128Type>()
            .iter()
            .map(|v| v.map(i64::try_from).transpose())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| "an integer value does not fit Int64".to_string())?,
        other => return Err(format!("expected an integer column, got {other}")),
    })
}

fn rescale_decimal(values: Vec<Option<i128>>, from: i8, to: i8) -> std::result::Result<Vec<Option<i128>>, String> {
    if from == to {
        return Ok(values);
    }
    if from > to {
        return Err(format!("decimal scale {from} is finer than the column's scale {to}"));
    }
    let factor = 10i128.pow((to - from) as u32);
    values
        .into_iter()
        .map(|v| {
            v.map(|v| v.checked_mul(factor).ok_or_else(|| "decimal overflow".to_string()))
                .transpose()
        })
        .collect()
}

/// Timestamp values in `unit` from any of Snowflake's timestamp encodings.
fn timestamp_values(column: &ArrayRef, scale: u32, unit: TimeUnit) -> std::result::Result<Vec<Option<i64>>, String> {
    let digits = unit_digits(unit);
    let overflow = || "timestamp out of range".to_string();
    match column.data_type() {
        DataType::Struct(fields) => {
            let array: &StructArray = column.as_struct();
            let child = |name: &str, position: usize| -> std::result::Result<Vec<Option<i64>>, String> {
                let index = fields
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(name))
                    .unwrap_or(position);
                integers(array.column(index))
            };
            let epoch = child("epoch", 0)?;
            let with_fraction = fields.len() >= 3 || fields.iter().any(|f| f.name().eq_ignore_ascii_case("fraction"));
            let fraction = if with_fraction {
                Some(child("fraction", 1)?)
            } else {
                None
            };
            (0..array.len())
                .map(|row| {
                    // A NULL is a null struct, or (fakesnow) a null epoch in a valid struct.
                    if array.is_null(row) {
                        return Ok(None);
                    }
                    let Some(epoch) = epoch[row] else { return Ok(None) };
                    match &fraction {
                        // epoch in seconds, fraction in nanoseconds
                        Some(fraction) => {
                            let nanos = fraction[row].unwrap_or(0);
                            let whole = epoch.checked_mul(10i64.pow(digits)).ok_or_else(overflow)?;
                            Ok(Some(whole + nanos / 10i64.pow(9 - digits)))
                        }
                        // epoch in units of 10^-scale s
                        None => scaled_to_unit(epoch, scale, digits).map(Some).ok_or_else(overflow),
                    }
                })
                .collect()
        }
        DataType::Timestamp(..) => {
            let same_unit =
                arrow::compute::cast(column, &DataType::Timestamp(unit, None)).map_err(|e| e.to_string())?;
            let ints = arrow::compute::cast(&same_unit, &DataType::Int64).map_err(|e| e.to_string())?;
            Ok(ints.as_primitive::<Int64Type>().iter().collect())
        }
        _ => integers(column)?
            .into_iter()
            .map(|v| {
                v.map(|v| scaled_to_unit(v, scale, digits).ok_or_else(overflow))
                    .transpose()
            })
            .collect(),
    }
}

/// A value in units of 10^-scale s, in units of 10^-digits s (digits ≥ scale: exact).
fn scaled_to_unit(value: i64, scale: u32, digits: u32) -> Option<i64> {
    if digits >= scale {
        value.checked_mul(10i64.pow(digits - scale))
    } else {
        Some(value / 10i64.pow(scale - digits))
    }
}

/// Decodes a JSON `rowset` (rows of strings or nulls) into one batch of `schema`.
pub(crate) fn decode_json_rowset(
    rows: &[Vec<Option<String>>],
    row_types: &[RowType],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let columns = row_types
        .iter()
        .enumerate()
        .map(|(index, row_type)| {
            let cells = rows.iter().map(|row| row.get(index).and_then(|cell| cell.as_deref()));
            json_column(cells, row_type.kind()?, schema.field(index).data_type(), rows.len())
                .map_err(|e| Error::Protocol(format!("column {}: {e}", row_type.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column)
            } else {
                arrow::compute::cast(&column, field.data_type()).map_err(|e| Error::Protocol(e.to_string()))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    make_batch(schema, columns, rows.len())
}

fn json_column<'a>(
    cells: impl Iterator<Item = Option<&'a str>>,
    kind: Kind,
    target: &DataType,
    rows: usize,
) -> std::result::Result<ArrayRef, String> {
    let bad = |what: &str, cell: &str| format!("{what} {cell:?} is not valid");
    Ok(match kind {
        Kind::Int => {
            let mut b = Int64Builder::with_capacity(rows);
            for cell in cells {
                b.append_option(
                    cell.map(|c| c.parse::<i64>().map_err(|_| bad("NUMBER", c)))
                        .transpose()?,
                );
            }
            Arc::new(b.finish())
        }
        Kind::Decimal { precision, scale } => {
            let mut b = Decimal128Builder::with_capacity(rows);
            for cell in cells {
                b.append_option(
                    cell.map(|c| {
                        arrow::compute::kernels::cast_utils::parse_decimal::<Decimal128Type>(c, precision, scale)
                            .map_err(|_| bad("NUMBER", c))
                    })
                    .transpose()?,
                );
            }
            Arc::new(
                b.finish()
                    .with_precision_and_scale(precision, scale)
                    .map_err(|e| e.to_string())?,
            )
        }
        Kind::Float => {
            let mut b = Float64Builder::with_capacity(rows);
            for cell in cells {
                b.append_option(cell.map(|c| c.parse::<f64>().map_err(|_| bad("REAL", c))).transpose()?);
            }
            Arc::new(b.finish())
        }
        Kind::Text | Kind::Json => {
            let mut b = StringBuilder::with_capacity(rows, 0);
            for cell in cells {
                b.append_option(cell);
            }
            Arc::new(b.finish())
        }
        Kind::Binary => {
            let mut b = BinaryBuilder::with_capacity(rows, 0);
            for cell in cells {
                b.append_option(
                    cell.map(|c| hex_decode(c).ok_or_else(|| bad("BINARY", c)))
                        .transpose()?,
                );
            }
            Arc::new(b.finish())
        }
        Kind::Boolean => {
            let mut b = BooleanBuilder::with_capacity(rows);
            for cell in cells {
                b.append_option(
                    cell.map(|c| match c.to_ascii_lowercase().as_str() {
                        "1" | "true" => Ok(true),
                        "0" | "false" => Ok(false),
                        _ => Err(bad("BOOLEAN", c)),
                    })
                    .transpose()?,
                );
            }
            Arc::new(b.finish())
        }
        Kind::Date => {
            let mut b = Date32Builder::with_capacity(rows);
            for cell in cells {
                b.append_option(cell.map(|c| c.parse::<i32>().map_err(|_| bad("DATE", c))).transpose()?);
            }
            Arc::new(b.finish())
        }
        Kind::Time { unit, .. } => {
            let digits = unit_digits(unit);
            let values = cells
                .map(|cell| {
                    cell.map(|c| seconds_to_unit(c, digits).ok_or_else(|| bad("TIME", c)))
                        .transpose()
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            match unit {
                TimeUnit::Microsecond => Arc::new(Time64MicrosecondArray::from(values)),
                _ => Arc::new(Time64NanosecondArray::from(values)),
            }
        }
        Kind::Timestamp { unit, .. } => {
            let digits = unit_digits(unit);
            // TIMESTAMP_TZ cells are "<seconds.fraction> <offset minutes + 1440>"; the first
            // part is the instant (UTC) already.
            let values = cells
                .map(|cell| {
                    cell.map(|c| {
                        let instant = c.split_whitespace().next().unwrap_or("");
                        seconds_to_unit(instant, digits).ok_or_else(|| bad("TIMESTAMP", c))
                    })
                    .transpose()
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            timestamp_array(values, target)
        }
    })
}

/// A timestamp array of `target`'s type (unit and zone) from values in that unit. The zone is
/// set, not cast to: the values are UTC instants already.
fn timestamp_array(values: Vec<Option<i64>>, target: &DataType) -> ArrayRef {
    let DataType::Timestamp(unit, zone) = target else {
        unreachable!("timestamp kinds have timestamp fields")
    };
    let zone = zone.clone();
    match unit {
        TimeUnit::Second => Arc::new(TimestampSecondArray::from(values).with_timezone_opt(zone)),
        TimeUnit::Millisecond => Arc::new(TimestampMillisecondArray::from(values).with_timezone_opt(zone)),
        TimeUnit::Microsecond => Arc::new(TimestampMicrosecondArray::from(values).with_timezone_opt(zone)),
        TimeUnit::Nanosecond => Arc::new(TimestampNanosecondArray::from(values).with_timezone_opt(zone)),
    }
}

/// `"-12.345"` seconds as an integer count of 10^-digits s, exactly (extra digits must be 0).
fn seconds_to_unit(text: &str, digits: u32) -> Option<i64> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (kept, dropped) = fraction.split_at(fraction.len().min(digits as usize));
    if dropped.bytes().any(|b| b != b'0') {
        return None;
    }
    let mut value = whole.parse::<i64>().ok()?.checked_mul(10i64.pow(digits))?;
    if !kept.is_empty() {
        let padded = kept.parse::<i64>().ok()? * 10i64.pow(digits - kept.len() as u32);
        value = value.checked_add(padded)?;
    }
    Some(if negative { -value } else { value })
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_exactly() {
        assert_eq!(seconds_to_unit("1704164645.123456", 6), Some(1_704_164_645_123_456));
        assert_eq!(seconds_to_unit("1704164645.1", 9), Some(1_704_164_645_100_000_000));
        assert_eq!(seconds_to_unit("-1.5", 3), Some(-1500));
        assert_eq!(seconds_to_unit("12", 0), Some(12));
        assert_eq!(seconds_to_unit("1.1234", 3), None, "would round");
        assert_eq!(seconds_to_unit("1.1230", 3), Some(1123));
        assert_eq!(seconds_to_unit("x", 3), None);
    }

    #[test]
    fn seconds_round_trip_at_every_unit() {
        // Deterministic spread of values, negative ones and extremes included.
        let mut value: i64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..2000 {
            value ^= value << 13;
            value ^= value >> 7;
            value ^= value << 17;
            for digits in [0u32, 3, 6, 9] {
                let scale = 10i64.pow(digits);
                let (whole, fraction) = (value / scale, (value % scale).abs());
                let sign = if value < 0 && whole == 0 { "-" } else { "" };
                let text = if digits == 0 {
                    format!("{whole}")
                } else {
                    format!("{sign}{whole}.{fraction:0width$}", width = digits as usize)
                };
                assert_eq!(seconds_to_unit(&text, digits), Some(value), "{text} at {digits} digits");
            }
        }
    }

    #[test]
    fn hex_decodes() {
        assert_eq!(hex_decode("ABcd"), Some(vec![0xab, 0xcd]));
        assert_eq!(hex_decode("abc"), None);
    }
}
