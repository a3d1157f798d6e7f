//! Decoding binary-protocol values straight into Arrow builders.
//!
//! Each column gets one builder of its exact Arrow type; a value that does not fit (a decimal
//! beyond its precision, text that is not UTF-8, a zero date under `zero_dates = "error"`) is
//! reported with enough context for the caller to name the row.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder,
    DurationMicrosecondBuilder, Float32Builder, Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder, UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{SchemaRef, i256};
use backhaul_core::Result;
use chrono::{Datelike, NaiveDate};
use mysql_async::Value;

use crate::schema::Kind;

/// Days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
const EPOCH_DAYS_FROM_CE: i32 = 719_163;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Why a value could not be appended.
#[derive(Debug)]
pub(crate) enum Problem {
    /// A date that is no calendar day (`0000-00-00`, `2024-00-10`), shown as MySQL prints it.
    ZeroDate(String),
    /// Anything else that does not fit the column's type.
    Unfit(String),
}

/// One column being decoded.
pub(crate) struct ColumnDecoder {
    kind: Kind,
    /// `zero_dates = "null"` for this column.
    zero_as_null: bool,
    builder: Builder,
}

enum Builder {
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    UInt8(UInt8Builder),
    UInt16(UInt16Builder),
    UInt32(UInt32Builder),
    UInt64(UInt64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal128 {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
    },
    Decimal256 {
        builder: Decimal256Builder,
        precision: u8,
        scale: i8,
    },
    Boolean(BooleanBuilder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date32(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Duration(DurationMicrosecondBuilder),
}

impl ColumnDecoder {
    /// A decoder for `kind`; `zero_as_null` reads zero dates as NULL.
    pub(crate) fn new(kind: Kind, zero_as_null: bool, capacity: usize) -> Result<Self> {
        let builder = match kind {
            Kind::Int8 => Builder::Int8(Int8Builder::with_capacity(capacity)),
            Kind::Int16 | Kind::Year => Builder::Int16(Int16Builder::with_capacity(capacity)),
            Kind::Int32 => Builder::Int32(Int32Builder::with_capacity(capacity)),
            Kind::Int64 => Builder::Int64(Int64Builder::with_capacity(capacity)),
            Kind::UInt8 => Builder::UInt8(UInt8Builder::with_capacity(capacity)),
            Kind::UInt16 => Builder::UInt16(UInt16Builder::with_capacity(capacity)),
            Kind::UInt32 => Builder::UInt32(UInt32Builder::with_capacity(capacity)),
            Kind::UInt64 | Kind::Bits => Builder::UInt64(UInt64Builder::with_capacity(capacity)),
            Kind::Float32 => Builder::Float32(Float32Builder::with_capacity(capacity)),
            Kind::Float64 => Builder::Float64(Float64Builder::with_capacity(capacity)),
            Kind::UInt64AsDecimal => Builder::Decimal128 {
                builder: Decimal128Builder::with_capacity(capacity).with_precision_and_scale(20, 0)?,
                precision: 20,
                scale: 0,
            },
            Kind::Decimal { precision, scale } if precision <= 38 => Builder::Decimal128 {
                builder: Decimal128Builder::with_capacity(capacity).with_precision_and_scale(precision, scale)?,
                precision,
                scale,
            },
            Kind::Decimal { precision, scale } => Builder::Decimal256 {
                builder: Decimal256Builder::with_capacity(capacity).with_precision_and_scale(precision, scale)?,
                precision,
                scale,
            },
            Kind::Bool => Builder::Boolean(BooleanBuilder::with_capacity(capacity)),
            Kind::Text | Kind::Json => Builder::Utf8(StringBuilder::with_capacity(capacity, capacity * 16)),
            Kind::Binary => Builder::Binary(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Kind::Date => Builder::Date32(Date32Builder::with_capacity(capacity)),
            Kind::DateTime { .. } => Builder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity)),
            Kind::Timestamp { .. } => {
                Builder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"))
            }
            Kind::Time => Builder::Duration(DurationMicrosecondBuilder::with_capacity(capacity)),
        };
        Ok(ColumnDecoder {
            kind,
            zero_as_null,
            builder,
        })
    }

    /// Appends one value and returns the bytes it added (roughly), or why it cannot.
    pub(crate) fn append(&mut self, value: &Value) -> Result<usize, Problem> {
        if matches!(value, Value::NULL) {
            self.append_null();
            return Ok(1);
        }
        let unfit = |expected: &str| Problem::Unfit(format!("expected {expected}, the server sent {value:?}"));
        macro_rules! int {
            ($b:expr, $t:ty) => {{
                let v = match value {
                    Value::Int(v) => <$t>::try_from(*v).ok(),
                    Value::UInt(v) => <$t>::try_from(*v).ok(),
                    _ => return Err(unfit("an integer")),
                };
                let v = v.ok_or_else(|| Problem::Unfit(format!("{value:?} does not fit {}", stringify!($t))))?;
                $b.append_value(v);
                Ok(std::mem::size_of::<$t>())
            }};
        }
        match &mut self.builder {
            Builder::Int8(b) => int!(b, i8),
            Builder::Int16(b) => int!(b, i16),
            Builder::Int32(b) => int!(b, i32),
            Builder::Int64(b) => int!(b, i64),
            Builder::UInt8(b) => int!(b, u8),
            Builder::UInt16(b) => int!(b, u16),
            Builder::UInt32(b) => int!(b, u32),
            Builder::UInt64(b) if self.kind == Kind::Bits => match value {
                Value::Bytes(bytes) if bytes.len() <= 8 => {
                    b.append_value(bytes.iter().fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte)));
                    Ok(8)
                }
                _ => Err(unfit("BIT bytes")),
            },
            Builder::UInt64(b) => int!(b, u64),
            Builder::Float32(b) => match value {
                Value::Float(v) => {
                    b.append_value(*v);
                    Ok(4)
                }
                _ => Err(unfit("a FLOAT")),
            },
            Builder::Float64(b) => match value {
                Value::Double(v) => {
                    b.append_value(*v);
                    Ok(8)
                }
                _ => Err(unfit("a DOUBLE")),
            },
            Builder::Decimal128 {
                builder,
                precision,
                scale,
            } => {
                let v = match value {
                    // BIGINT UNSIGNED read as DECIMAL(20,0).
                    Value::UInt(v) => i128::from(*v),
                    Value::Int(v) => i128::from(*v),
                    Value::Bytes(text) => parse_decimal(text, *precision, *scale)?
                        .to_i128()
                        .ok_or_else(|| Problem::Unfit("decimal overflows 128 bits".into()))?,
                    _ => return Err(unfit("a DECIMAL")),
                };
                builder.append_value(v);
                Ok(16)
            }
            Builder::Decimal256 {
                builder,
                precision,
                scale,
            } => match value {
                Value::Bytes(text) => {
                    builder.append_value(parse_decimal(text, *precision, *scale)?);
                    Ok(32)
                }
                _ => Err(unfit("a DECIMAL")),
            },
            Builder::Boolean(b) => match value {
                Value::Bytes(bytes) if bytes.len() == 1 => {
                    b.append_value(bytes[0] != 0);
                    Ok(1)
                }
                _ => Err(unfit("BIT(1) bytes")),
            },
            Builder::Utf8(b) => match value {
                Value::Bytes(bytes) => {
                    let text = std::str::from_utf8(bytes)
                        .map_err(|e| Problem::Unfit(format!("text is not valid UTF-8: {e}")))?;
                    b.append_value(text);
                    Ok(bytes.len())
                }
                _ => Err(unfit("text")),
            },
            Builder::Binary(b) => match value {
                Value::Bytes(bytes) => {
                    b.append_value(bytes);
                    Ok(bytes.len())
                }
                _ => Err(unfit("bytes")),
            },
            Builder::Date32(b) => match *value {
                Value::Date(y, m, d, ..) => match days_since_epoch(y, m, d) {
                    Some(days) => {
                        b.append_value(days);
                        Ok(4)
                    }
                    None if self.zero_as_null => {
                        b.append_null();
                        Ok(1)
                    }
                    None => Err(Problem::ZeroDate(format!("{y:04}-{m:02}-{d:02}"))),
                },
                _ => Err(unfit("a DATE")),
            },
            Builder::Timestamp(b) => match *value {
                Value::Date(y, mo, d, h, mi, s, us) => match days_since_epoch(y, mo, d) {
                    Some(days) if h < 24 && mi < 60 && s < 60 && us < 1_000_000 => {
                        let secs = i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
                        b.append_value(i64::from(days) * MICROS_PER_DAY + secs * 1_000_000 + i64::from(us));
                        Ok(8)
                    }
                    Some(_) => Err(Problem::Unfit(format!("{value:?} is not a valid time of day"))),
                    None if self.zero_as_null => {
                        b.append_null();
                        Ok(1)
                    }
                    None => Err(Problem::ZeroDate(format!(
                        "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"
                    ))),
                },
                _ => Err(unfit("a DATETIME/TIMESTAMP")),
            },
            Builder::Duration(b) => match *value {
                Value::Time(negative, days, h, m, s, us) => {
                    let secs = (i64::from(days) * 24 + i64::from(h)) * 3600 + i64::from(m) * 60 + i64::from(s);
                    let micros = secs * 1_000_000 + i64::from(us);
                    b.append_value(if negative { -micros } else { micros });
                    Ok(8)
                }
                _ => Err(unfit("a TIME")),
            },
        }
    }

    fn append_null(&mut self) {
        match &mut self.builder {
            Builder::Int8(b) => b.append_null(),
            Builder::Int16(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::UInt8(b) => b.append_null(),
            Builder::UInt16(b) => b.append_null(),
            Builder::UInt32(b) => b.append_null(),
            Builder::UInt64(b) => b.append_null(),
            Builder::Float32(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Decimal128 { builder, .. } => builder.append_null(),
            Builder::Decimal256 { builder, .. } => builder.append_null(),
            Builder::Boolean(b) => b.append_null(),
            Builder::Utf8(b) => b.append_null(),
            Builder::Binary(b) => b.append_null(),
            Builder::Date32(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::Duration(b) => b.append_null(),
        }
    }

    fn builder(&mut self) -> &mut dyn ArrayBuilder {
        match &mut self.builder {
            Builder::Int8(b) => b,
            Builder::Int16(b) => b,
            Builder::Int32(b) => b,
            Builder::Int64(b) => b,
            Builder::UInt8(b) => b,
            Builder::UInt16(b) => b,
            Builder::UInt32(b) => b,
            Builder::UInt64(b) => b,
            Builder::Float32(b) => b,
            Builder::Float64(b) => b,
            Builder::Decimal128 { builder, .. } => builder,
            Builder::Decimal256 { builder, .. } => builder,
            Builder::Boolean(b) => b,
            Builder::Utf8(b) => b,
            Builder::Binary(b) => b,
            Builder::Date32(b) => b,
            Builder::Timestamp(b) => b,
            Builder::Duration(b) => b,
        }
    }

    /// Rows appended since the last [`ColumnDecoder::finish`].
    pub(crate) fn len(&mut self) -> usize {
        self.builder().len()
    }

    /// The values appended so far, leaving the builder empty.
    pub(crate) fn finish(&mut self) -> ArrayRef {
        self.builder().finish()
    }
}

/// Builds a batch from the decoders, leaving them empty.
pub(crate) fn finish_batch(schema: &SchemaRef, columns: &mut [ColumnDecoder]) -> Result<RecordBatch> {
    let arrays: Vec<ArrayRef> = columns.iter_mut().map(ColumnDecoder::finish).collect();
    Ok(RecordBatch::try_new(Arc::clone(schema), arrays)?)
}

/// Days since 1970-01-01 of a calendar date, or `None` for zero dates and other non-days.
pub(crate) fn days_since_epoch(year: u16, month: u8, day: u8) -> Option<i32> {
    let date = NaiveDate::from_ymd_opt(i32::from(year), u32::from(month), u32::from(day))?;
    Some(date.num_days_from_ce() - EPOCH_DAYS_FROM_CE)
}

/// The calendar date of a day count, for range bounds.
pub(crate) fn date_of_days(days: i64) -> Option<NaiveDate> {
    let ce = i32::try_from(days).ok()?.checked_add(EPOCH_DAYS_FROM_CE)?;
    NaiveDate::from_num_days_from_ce_opt(ce)
}

/// Parses MySQL's decimal text (`-12.3400`) as an integer scaled by `10^scale`, checking it
/// fits `precision` digits. The server sends exactly `scale` fraction digits; fewer are padded,
/// more are refused rather than rounded.
pub(crate) fn parse_decimal(text: &[u8], precision: u8, scale: i8) -> Result<i256, Problem> {
    let bad = || {
        Problem::Unfit(format!(
            "`{}` is not a DECIMAL({precision},{scale})",
            String::from_utf8_lossy(text)
        ))
    };
    let (negative, body) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let (int_part, frac_part) = match body.iter().position(|b| *b == b'.') {
        Some(dot) => (&body[..dot], &body[dot + 1..]),
        None => (body, &body[..0]),
    };
    let scale = scale.max(0) as usize;
    if int_part.is_empty() && frac_part.is_empty()
        || frac_part.len() > scale
        || !int_part.iter().chain(frac_part).all(u8::is_ascii_digit)
    {
        return Err(bad());
    }
    let int_digits = int_part.iter().skip_while(|b| **b == b'0').count();
    if int_digits > usize::from(precision).saturating_sub(scale) {
        return Err(Problem::Unfit(format!(
            "`{}` has more than {} integer digits, beyond DECIMAL({precision},{scale})",
            String::from_utf8_lossy(text),
            usize::from(precision).saturating_sub(scale)
        )));
    }
    let ten = i256::from_i128(10);
    let mut value = i256::ZERO;
    let padding = std::iter::repeat_n(&b'0', scale - frac_part.len());
    for digit in int_part.iter().chain(frac_part).chain(padding) {
        value = value
            .wrapping_mul(ten)
            .wrapping_add(i256::from_i128(i128::from(digit - b'0')));
    }
    Ok(if negative { value.wrapping_neg() } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str, p: u8, s: i8) -> Result<i256, String> {
        parse_decimal(text.as_bytes(), p, s).map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn parses_decimals_exactly() {
        assert_eq!(dec("-12.3400", 10, 4).unwrap(), i256::from_i128(-123_400));
        assert_eq!(dec("0.5", 3, 2).unwrap(), i256::from_i128(50));
        assert_eq!(dec("7", 3, 0).unwrap(), i256::from_i128(7));
        let max38 = "9".repeat(38);
        assert_eq!(dec(&max38, 38, 0).unwrap().to_i128().unwrap(), 10i128.pow(38) - 1);
        let max65 = format!("{}.{}", "9".repeat(35), "9".repeat(30));
        let want = i256::from_string(&"9".repeat(65)).unwrap();
        assert_eq!(dec(&max65, 65, 30).unwrap(), want);
        assert_eq!(dec(&format!("-{max65}"), 65, 30).unwrap(), want.wrapping_neg());
        assert!(dec("123", 4, 2).is_err(), "3 integer digits do not fit DECIMAL(4,2)");
        assert!(
            dec("1.234", 4, 2).is_err(),
            "extra fraction digits are refused, not rounded"
        );
        assert!(dec("1e5", 9, 0).is_err());
        assert!(dec("", 9, 0).is_err());
    }

    #[test]
    fn converts_calendar_dates() {
        assert_eq!(days_since_epoch(1970, 1, 1), Some(0));
        assert_eq!(days_since_epoch(1969, 12, 31), Some(-1));
        assert_eq!(days_since_epoch(0, 0, 0), None);
        assert_eq!(days_since_epoch(2024, 0, 10), None);
        assert_eq!(date_of_days(0).unwrap().to_string(), "1970-01-01");
    }

    #[test]
    fn zero_dates_follow_the_policy() {
        let zero = Value::Date(0, 0, 0, 0, 0, 0, 0);
        let mut strict = ColumnDecoder::new(Kind::Date, false, 4).unwrap();
        assert!(matches!(strict.append(&zero), Err(Problem::ZeroDate(s)) if s == "0000-00-00"));
        let mut lenient = ColumnDecoder::new(Kind::DateTime { fsp: 0 }, true, 4).unwrap();
        lenient.append(&zero).unwrap();
        assert_eq!(lenient.finish().null_count(), 1);
    }

    #[test]
    fn decodes_bits_times_and_unsigned() {
        let mut bits = ColumnDecoder::new(Kind::Bits, false, 1).unwrap();
        bits.append(&Value::Bytes(vec![0x01, 0x02])).unwrap();
        let a = bits.finish();
        let a = a.as_any().downcast_ref::<arrow::array::UInt64Array>().unwrap();
        assert_eq!(a.value(0), 0x0102);
        let mut time = ColumnDecoder::new(Kind::Time, false, 1).unwrap();
        time.append(&Value::Time(true, 34, 22, 59, 59, 0)).unwrap();
        let a = time.finish();
        let a = a
            .as_any()
            .downcast_ref::<arrow::array::DurationMicrosecondArray>()
            .unwrap();
        assert_eq!(a.value(0), -((838 * 3600 + 59 * 60 + 59) * 1_000_000));
        let mut big = ColumnDecoder::new(Kind::UInt64, false, 1).unwrap();
        big.append(&Value::UInt(u64::MAX)).unwrap();
        let mut small = ColumnDecoder::new(Kind::Int8, false, 1).unwrap();
        assert!(small.append(&Value::Int(300)).is_err());
    }
}
