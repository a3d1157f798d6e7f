//! Declared column types, and JSON values read into them exactly: from each field's raw text,
//! so decimals never pass through a float and a value of the wrong JSON type is refused with a
//! reason (the record then goes to the dead letters), never coerced.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Field metadata key naming an Arrow extension type.
pub const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
/// Arrow's canonical JSON extension type: `Utf8` holding JSON text, as the database sources
/// tag `json`/`jsonb` (docs/types.md).
pub const JSON_EXTENSION: &str = "arrow.json";

/// How a timestamp is written in JSON or in a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// An RFC 3339 string with a zone, e.g. `2024-01-31T12:00:00Z`.
    #[default]
    Rfc3339,
    /// Whole seconds since the Unix epoch (a JSON integer).
    UnixSeconds,
    /// Whole milliseconds since the Unix epoch (a JSON integer).
    UnixMillis,
}

impl TimeFormat {
    /// Writes `micros` (since the epoch, UTC) in this format; `round_up` rounds a bound that
    /// falls inside a second (or millisecond) up, so an exclusive end never cuts a record off.
    pub fn render(self, micros: i64, round_up: bool) -> String {
        let unit = match self {
            TimeFormat::UnixSeconds => 1_000_000,
            TimeFormat::UnixMillis => 1_000,
            TimeFormat::Rfc3339 => return backhaul_core::cursor::CursorKind::Timestamp.format(micros),
        };
        let v = if round_up {
            micros.div_euclid(unit) + i64::from(micros.rem_euclid(unit) != 0)
        } else {
            micros.div_euclid(unit)
        };
        v.to_string()
    }
}

/// A declared column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A JSON integer in the `i64` range.
    Int64,
    /// A JSON number, as `f64`.
    Float64,
    /// A JSON string.
    String,
    /// A JSON boolean.
    Bool,
    /// A timestamp (format per column), stored as UTC microseconds.
    Timestamp,
    /// A `YYYY-MM-DD` string.
    Date,
    /// A decimal from a JSON number or string, read from its text.
    Decimal {
        /// Total digits (1..=38).
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
    /// Any JSON value, kept as its JSON text.
    Json,
}

impl ColumnType {
    /// Parses a declared type name.
    pub fn parse(text: &str) -> Result<ColumnType, String> {
        let t = text.trim();
        Ok(match t {
            "int64" => ColumnType::Int64,
            "float64" => ColumnType::Float64,
            "string" => ColumnType::String,
            "bool" => ColumnType::Bool,
            "timestamp" => ColumnType::Timestamp,
            "date" => ColumnType::Date,
            "json" => ColumnType::Json,
            _ => {
                let inner = t
                    .strip_prefix("decimal(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| {
                        format!(
                            "unknown type `{text}`; use int64, float64, string, bool, timestamp, date, json or decimal(p,s)"
                        )
                    })?;
                let (p, s) = inner
                    .split_once(',')
                    .ok_or_else(|| format!("`{text}`: write decimal(p,s)"))?;
                let precision: u8 = p.trim().parse().map_err(|_| format!("`{text}`: bad precision"))?;
                let scale: u8 = s.trim().parse().map_err(|_| format!("`{text}`: bad scale"))?;
                if !(1..=38).contains(&precision) || scale > precision {
                    return Err(format!(
                        "`{text}`: precision must be 1..=38 and scale at most the precision"
                    ));
                }
                ColumnType::Decimal {
                    precision,
                    scale: scale as i8,
                }
            }
        })
    }

    /// The Arrow field of a column of this type.
    pub fn field(self, name: &str, nullable: bool) -> Field {
        let data_type = match self {
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::String | ColumnType::Json => DataType::Utf8,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Date => DataType::Date32,
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
        };
        let field = Field::new(name, data_type, nullable);
        if self == ColumnType::Json {
            field.with_metadata(HashMap::from([(EXTENSION_NAME_KEY.into(), JSON_EXTENSION.into())]))
        } else {
            field
        }
    }
}

/// One column as extraction reads it.
#[derive(Debug, Clone)]
pub struct Column {
    /// Field name.
    pub name: String,
    /// Declared type.
    pub column_type: ColumnType,
    /// Missing or `null` allowed.
    pub nullable: bool,
    /// For timestamps.
    pub format: TimeFormat,
}

/// One typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Missing or `null`.
    Null,
    /// `int64`.
    Int(i64),
    /// `float64`.
    Float(f64),
    /// `string` or `json` text.
    Text(String),
    /// `bool`.
    Bool(bool),
    /// `timestamp`, UTC microseconds.
    Micros(i64),
    /// `date`, days since the epoch.
    Days(i32),
    /// `decimal`, unscaled.
    Decimal(i128),
}

/// The JSON type of a raw value, for messages.
fn json_kind(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'"') => "string",
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

impl Column {
    /// Reads one field's raw JSON (`None`: missing) as this column; `Err` is the reason the
    /// record is refused.
    pub fn read(&self, raw: Option<&RawValue>) -> Result<Cell, String> {
        let text = raw.map(|r| r.get().trim());
        let Some(text) = text.filter(|t| *t != "null") else {
            return if self.nullable {
                Ok(Cell::Null)
            } else {
                Err(format!("`{}` is missing or null but not nullable", self.name))
            };
        };
        let kind = json_kind(text);
        let wrong = |want: &str| format!("`{}` is a JSON {kind}, declared {want}", self.name);
        let string = || -> Result<String, String> {
            if kind != "string" {
                return Err(wrong("as a string"));
            }
            serde_json::from_str::<String>(text).map_err(|e| format!("`{}`: {e}", self.name))
        };
        match self.column_type {
            ColumnType::Int64 => {
                if kind != "number" {
                    return Err(wrong("int64"));
                }
                text.parse::<i64>()
                    .map(Cell::Int)
                    .map_err(|_| format!("`{}` = {text} is not an int64", self.name))
            }
            ColumnType::Float64 => {
                if kind != "number" {
                    return Err(wrong("float64"));
                }
                text.parse::<f64>()
                    .map(Cell::Float)
                    .map_err(|_| format!("`{}` = {text} is not a number", self.name))
            }
            ColumnType::String => string().map(Cell::Text),
            ColumnType::Json => Ok(Cell::Text(text.to_string())),
            ColumnType::Bool => match text {
                "true" => Ok(Cell::Bool(true)),
                "false" => Ok(Cell::Bool(false)),
                _ => Err(wrong("bool")),
            },
            ColumnType::Date => {
                let s = string()?;
                NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                    .map(|d| Cell::Days((d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32))
                    .map_err(|_| format!("`{}` = {s:?} is not a YYYY-MM-DD date", self.name))
            }
            ColumnType::Timestamp => self.timestamp(text, kind).map(Cell::Micros),
            ColumnType::Decimal { precision, scale } => {
                let digits = match kind {
                    "number" => text.to_string(),
                    "string" => string()?,
                    _ => return Err(wrong("a decimal (number or string)")),
                };
                parse_decimal(&digits, precision, scale)
                    .map(Cell::Decimal)
                    .map_err(|m| format!("`{}` = {digits}: {m}", self.name))
            }
        }
    }

    fn timestamp(&self, text: &str, kind: &str) -> Result<i64, String> {
        let bad = |m: &str| format!("`{}` = {text}: {m}", self.name);
        match self.format {
            TimeFormat::Rfc3339 => {
                if kind != "string" {
                    return Err(format!(
                        "`{}` is a JSON {kind}, declared an RFC 3339 timestamp string",
                        self.name
                    ));
                }
                let s: String = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.timestamp_micros())
                    .map_err(|_| bad("not an RFC 3339 timestamp with a zone"))
            }
            TimeFormat::UnixSeconds | TimeFormat::UnixMillis => {
                if kind != "number" {
                    return Err(format!(
                        "`{}` is a JSON {kind}, declared an integer epoch timestamp",
                        self.name
                    ));
                }
                let v: i64 = text.parse().map_err(|_| bad("not an integer"))?;
                let factor = if self.format == TimeFormat::UnixSeconds {
                    1_000_000
                } else {
                    1_000
                };
                v.checked_mul(factor).ok_or_else(|| bad("out of range"))
            }
        }
    }
}

/// Parses decimal text (`-12.50`, `1.2e3`) into its unscaled value at `scale`, refusing
/// digits the column cannot hold instead of rounding.
pub fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let t = text.trim();
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exponent) = match t.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().map_err(|_| "bad exponent".to_string())?),
        None => (t, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err("not a decimal number".into());
    }
    let mut digits = format!("{int_part}{frac_part}");
    let shift = i32::from(scale) + exponent - frac_part.len() as i32;
    if shift >= 0 {
        digits.extend(std::iter::repeat_n('0', shift as usize));
    } else {
        let cut = (-shift) as usize;
        let keep = digits.len().saturating_sub(cut);
        if digits[keep..].bytes().any(|b| b != b'0') {
            return Err(format!("more than {scale} digits after the point"));
        }
        digits.truncate(keep);
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > usize::from(precision) {
        return Err(format!("more than {precision} digits for decimal({precision},{scale})"));
    }
    let v: i128 = if significant.is_empty() {
        0
    } else {
        significant.parse().map_err(|_| "out of range".to_string())?
    };
    Ok(if negative { -v } else { v })
}

/// Builds one batch of `rows` (each in column order) with `schema`.
pub fn build_batch(schema: &SchemaRef, columns: &[Column], rows: &[Vec<Cell>]) -> arrow::error::Result<RecordBatch> {
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let cells = rows.iter().map(|r| &r[i]);
            let array: ArrayRef = match c.column_type {
                ColumnType::Int64 => {
                    let mut b = Int64Builder::with_capacity(rows.len());
                    cells.for_each(|v| b.append_option(if let Cell::Int(x) = v { Some(*x) } else { None }));
                    Arc::new(b.finish())
                }
                ColumnType::Float64 => {
                    let mut b = Float64Builder::with_capacity(rows.len());
                    cells.for_each(|v| b.append_option(if let Cell::Float(x) = v { Some(*x) } else { None }));
                    Arc::new(b.finish())
                }
                ColumnType::String | ColumnType::Json => {
                    let mut b = StringBuilder::new();
                    cells.for_each(|v| b.append_option(if let Cell::Text(x) = v { Some(x.as_str()) } else { None }));
                    Arc::new(b.finish())
                }
                ColumnType::Bool => {
                    let mut b = BooleanBuilder::with_capacity(rows.len());
                    cells.for_each(|v| b.append_option(if let Cell::Bool(x) = v { Some(*x) } else { None }));
                    Arc::new(b.finish())
                }
                ColumnType::Timestamp => {
                    let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
                    cells.for_each(|v| b.append_option(if let Cell::Micros(x) = v { Some(*x) } else { None }));
                    Arc::new(b.finish())
                }
                ColumnType::Date => {
                    let mut b = Date32Builder::with_capacity(rows.len());
                    cells.for_each(|v| b.append_option(if let Cell::Days(x) = v { Some(*x) } else { None }));
                    Arc::new(b.finish())
                }
                ColumnType::Decimal { precision, scale } => {
                    let mut b =
                        Decimal128Builder::with_capacity(rows.len()).with_precision_and_scale(precision, scale)?;
                    cells.for_each(|v| b.append_option(if let Cell::Decimal(x) = v { Some(*x) } else { None }));
                    Arc::new(b.finish())
                }
            };
            Ok(array)
        })
        .collect::<arrow::error::Result<_>>()?;
    RecordBatch::try_new(schema.clone(), arrays)
}

/// The Arrow schema of `columns`.
pub fn schema_of(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| c.column_type.field(&c.name, c.nullable))
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    fn col(t: &str, nullable: bool, format: TimeFormat) -> Column {
        Column {
            name: "c".into(),
            column_type: ColumnType::parse(t).unwrap(),
            nullable,
            format,
        }
    }

    #[test]
    fn decimals_keep_every_digit_and_refuse_extra_ones() {
        assert_eq!(
            parse_decimal("12345678901234567890.12", 38, 2),
            Ok(1234567890123456789012)
        );
        assert_eq!(parse_decimal("-1.5", 10, 3), Ok(-1500));
        assert_eq!(parse_decimal("1.2e3", 10, 0), Ok(1200));
        assert_eq!(parse_decimal("1.2300", 10, 2), Ok(123));
        assert!(parse_decimal("1.234", 10, 2).unwrap_err().contains("after the point"));
        assert!(
            parse_decimal("123456", 5, 0)
                .unwrap_err()
                .contains("more than 5 digits")
        );
        assert!(parse_decimal("abc", 5, 0).is_err());
        let c = col("decimal(38,2)", false, TimeFormat::Rfc3339);
        assert_eq!(c.read(Some(&raw("\"0.10\""))), Ok(Cell::Decimal(10)));
        assert_eq!(
            c.read(Some(&raw("99999999999999999999999999999999999.99"))),
            Ok(Cell::Decimal(9999999999999999999999999999999999999))
        );
    }

    #[test]
    fn values_of_the_wrong_json_type_are_refused_with_a_reason() {
        let int = col("int64", false, TimeFormat::Rfc3339);
        assert_eq!(int.read(Some(&raw("42"))), Ok(Cell::Int(42)));
        assert!(
            int.read(Some(&raw("\"42\"")))
                .unwrap_err()
                .contains("is a JSON string, declared int64")
        );
        assert!(int.read(Some(&raw("4.2"))).is_err());
        assert!(int.read(None).unwrap_err().contains("not nullable"));
        assert_eq!(col("int64", true, TimeFormat::Rfc3339).read(None), Ok(Cell::Null));
        let ts = col("timestamp", false, TimeFormat::Rfc3339);
        assert_eq!(
            ts.read(Some(&raw("\"2024-01-01T01:00:00+01:00\""))),
            Ok(Cell::Micros(1_704_067_200_000_000))
        );
        assert!(ts.read(Some(&raw("\"2024-01-01 00:00\""))).is_err());
        let unix = col("timestamp", false, TimeFormat::UnixSeconds);
        assert_eq!(
            unix.read(Some(&raw("1704067200"))),
            Ok(Cell::Micros(1_704_067_200_000_000))
        );
        let json = col("json", true, TimeFormat::Rfc3339);
        assert_eq!(
            json.read(Some(&raw("{\"a\": [1, 2]}"))),
            Ok(Cell::Text("{\"a\": [1, 2]}".into()))
        );
        assert_eq!(
            col("date", false, TimeFormat::Rfc3339).read(Some(&raw("\"1970-01-03\""))),
            Ok(Cell::Days(2))
        );
    }

    #[test]
    fn bounds_render_in_the_windows_format() {
        let t = 1_704_067_200_500_000;
        assert_eq!(TimeFormat::UnixSeconds.render(t, false), "1704067200");
        assert_eq!(TimeFormat::UnixSeconds.render(t, true), "1704067201");
        assert_eq!(TimeFormat::UnixMillis.render(t, true), "1704067200500");
        assert_eq!(TimeFormat::Rfc3339.render(t, false), "2024-01-01T00:00:00.500000Z");
    }

    #[test]
    fn json_columns_are_tagged_like_the_database_sources() {
        let f = ColumnType::Json.field("attrs", true);
        assert_eq!(
            f.metadata().get(EXTENSION_NAME_KEY).map(String::as_str),
            Some("arrow.json")
        );
    }
}
