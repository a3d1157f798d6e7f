//! Arrow → BigQuery column types (the table of `docs/destinations/bigquery.md`), and the
//! fingerprint SQL dialect of BigQuery.

use arrow::datatypes::{DataType, Field, TimeUnit};
use backhaul_core::fingerprint::FingerprintDialect;
use backhaul_core::fingerprint::{EXTENSION_NAME_KEY, EpochUnit, JSON_EXTENSION};

use crate::error::{BigQueryError, Result};

/// NUMERIC: 38 digits, 9 after the point (29 before).
const NUMERIC_SCALE: i8 = 9;
const NUMERIC_INTEGER_DIGITS: i16 = 29;
/// BIGNUMERIC: 76.76 digits, 38 after the point (38 before, fully).
const BIGNUMERIC_SCALE: i8 = 38;
const BIGNUMERIC_INTEGER_DIGITS: i16 = 38;

/// A BigQuery column type as the REST schema spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BqType {
    /// INT64.
    Int64,
    /// FLOAT64.
    Float64,
    /// NUMERIC (38, 9).
    Numeric,
    /// BIGNUMERIC (76.76, 38).
    BigNumeric,
    /// BOOL.
    Bool,
    /// STRING.
    String,
    /// BYTES.
    Bytes,
    /// JSON.
    Json,
    /// DATE.
    Date,
    /// TIME.
    Time,
    /// DATETIME: a civil time without zone.
    DateTime,
    /// TIMESTAMP: an instant (UTC).
    Timestamp,
}

impl BqType {
    /// The type's name in the REST schema and in SQL.
    pub fn name(self) -> &'static str {
        match self {
            BqType::Int64 => "INT64",
            BqType::Float64 => "FLOAT64",
            BqType::Numeric => "NUMERIC",
            BqType::BigNumeric => "BIGNUMERIC",
            BqType::Bool => "BOOL",
            BqType::String => "STRING",
            BqType::Bytes => "BYTES",
            BqType::Json => "JSON",
            BqType::Date => "DATE",
            BqType::Time => "TIME",
            BqType::DateTime => "DATETIME",
            BqType::Timestamp => "TIMESTAMP",
        }
    }

    /// Reads a type name from a table's REST schema (legacy names included).
    pub fn from_rest(name: &str) -> Option<Self> {
        Some(match name {
            "INT64" | "INTEGER" => BqType::Int64,
            "FLOAT64" | "FLOAT" => BqType::Float64,
            "NUMERIC" | "DECIMAL" => BqType::Numeric,
            "BIGNUMERIC" | "BIGDECIMAL" => BqType::BigNumeric,
            "BOOL" | "BOOLEAN" => BqType::Bool,
            "STRING" => BqType::String,
            "BYTES" => BqType::Bytes,
            "JSON" => BqType::Json,
            "DATE" => BqType::Date,
            "TIME" => BqType::Time,
            "DATETIME" => BqType::DateTime,
            "TIMESTAMP" => BqType::Timestamp,
            _ => return None,
        })
    }
}

/// The column type of an Arrow field, and what is lost storing it, if anything.
pub fn bq_type(field: &Field) -> Result<(BqType, Option<String>)> {
    let unsupported = |message: String| BigQueryError::Unsupported {
        column: field.name().clone(),
        message,
    };
    let t = match field.data_type() {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => BqType::Int64,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => BqType::Int64,
        DataType::UInt64 => {
            return Ok((
                BqType::Int64,
                Some("UInt64 stored as INT64: values above 2^63-1 fail the load".into()),
            ));
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => BqType::Float64,
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => decimal(*p, *s)
            .ok_or_else(|| unsupported(format!("decimal({p},{s}) fits neither NUMERIC nor BIGNUMERIC")))?,
        DataType::Decimal256(p, s) => decimal(*p, *s)
            .ok_or_else(|| unsupported(format!("decimal({p},{s}) fits neither NUMERIC nor BIGNUMERIC")))?,
        DataType::Boolean => BqType::Bool,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            if field.metadata().get(EXTENSION_NAME_KEY).map(String::as_str) == Some(JSON_EXTENSION) {
                BqType::Json
            } else {
                BqType::String
            }
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => BqType::Bytes,
        DataType::Date32 | DataType::Date64 => BqType::Date,
        DataType::Time32(_) | DataType::Time64(TimeUnit::Microsecond) => BqType::Time,
        DataType::Time64(_) => {
            return Ok((
                BqType::Time,
                Some("nanosecond time stored at microsecond precision: sub-microsecond digits fail the proof".into()),
            ));
        }
        DataType::Timestamp(unit, zone) => {
            let t = if zone.is_some() {
                BqType::Timestamp
            } else {
                BqType::DateTime
            };
            if *unit == TimeUnit::Nanosecond {
                return Ok((
                    t,
                    Some(
                        "nanosecond timestamp stored at microsecond precision: sub-microsecond digits fail the proof"
                            .into(),
                    ),
                ));
            }
            t
        }
        other => return Err(unsupported(format!("Arrow type {other} has no BigQuery mapping yet"))),
    };
    Ok((t, None))
}

/// NUMERIC when the digits fit (scale ≤ 9, ≤ 29 before the point), else BIGNUMERIC (scale ≤
/// 38, ≤ 38 before the point).
fn decimal(precision: u8, scale: i8) -> Option<BqType> {
    let integer_digits = i16::from(precision) - i16::from(scale);
    if (0..=NUMERIC_SCALE).contains(&scale) && integer_digits <= NUMERIC_INTEGER_DIGITS {
        Some(BqType::Numeric)
    } else if (0..=BIGNUMERIC_SCALE).contains(&scale) && integer_digits <= BIGNUMERIC_INTEGER_DIGITS {
        Some(BqType::BigNumeric)
    } else {
        None
    }
}

/// Whether a column of type `table` can take values loaded as `source` (equal types, or the
/// widening BigQuery applies itself: NUMERIC into BIGNUMERIC).
pub fn compatible(table: BqType, source: BqType) -> bool {
    table == source || (table == BqType::BigNumeric && source == BqType::Numeric)
}

/// BigQuery's fingerprint SQL. Sums are taken in `NUMERIC(29+s, s)` when the column's values
/// allow it (integers, NUMERIC columns, temporal epochs: 29 digits before the point) and in
/// `BIGNUMERIC(38+s, s)` for BIGNUMERIC columns and scales above 9; BigQuery fails a sum that
/// overflows rather than rounding it, so a sum is exact or the query fails. All sums are cast
/// to STRING so the REST answer never passes through a JSON float. (NUMERIC where it suffices
/// also keeps the query runnable on servers without BIGNUMERIC, such as bqemulator: one SQL,
/// exact on both.)
#[derive(Debug, Clone, Default)]
pub struct BigQueryDialect {
    /// Quoted names of the columns stored as BIGNUMERIC.
    bignumeric: std::collections::HashSet<String>,
    /// JSON columns are stored as STRING (their text as the source gave it).
    json_as_string: bool,
}

impl BigQueryDialect {
    /// The dialect for a table of `schema`'s columns.
    pub fn for_schema(schema: &arrow::datatypes::Schema, json_as_string: bool) -> Self {
        let bignumeric = schema
            .fields()
            .iter()
            .filter(|f| matches!(bq_type(f), Ok((BqType::BigNumeric, _))))
            .map(|f| BigQueryDialect::default().quote_ident(f.name()))
            .collect();
        BigQueryDialect {
            bignumeric,
            json_as_string,
        }
    }
}

impl FingerprintDialect for BigQueryDialect {
    fn quote_ident(&self, name: &str) -> String {
        format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
    }

    fn exact_sum(&self, expr: &str, scale: i8) -> String {
        // Parameterized casts: the widest NUMERIC (or BIGNUMERIC) at the column's scale. A bare
        // `NUMERIC` would do on BigQuery, but some servers read it as a narrower default.
        let wide = if scale > NUMERIC_SCALE || self.bignumeric.contains(expr) {
            format!("BIGNUMERIC({}, {scale})", BIGNUMERIC_INTEGER_DIGITS + i16::from(scale))
        } else {
            format!("NUMERIC({}, {scale})", NUMERIC_INTEGER_DIGITS + i16::from(scale))
        };
        format!("CAST(SUM(CAST({expr} AS {wide})) AS STRING)")
    }

    fn epoch(&self, expr: &str, data_type: &DataType, unit: EpochUnit) -> String {
        match data_type {
            DataType::Date32 => format!("UNIX_DATE({expr})"),
            DataType::Date64 => format!("(UNIX_DATE({expr}) * 86400000)"),
            DataType::Time32(_) | DataType::Time64(_) => {
                let micros = format!("TIME_DIFF({expr}, TIME '00:00:00', MICROSECOND)");
                scale_micros(&micros, unit)
            }
            DataType::Timestamp(_, zone) => {
                // A DATETIME is read as if it were UTC: its civil fields are the Arrow value's.
                let ts = if zone.is_some() {
                    expr.to_string()
                } else {
                    format!("TIMESTAMP({expr}, 'UTC')")
                };
                scale_micros(&format!("UNIX_MICROS({ts})"), unit)
            }
            _ => expr.to_string(),
        }
    }

    fn not_nan(&self, expr: &str) -> String {
        format!("IF(IS_NAN({expr}), NULL, {expr})")
    }

    fn byte_length(&self, expr: &str, _data_type: &DataType, json: bool) -> String {
        // JSON is measured without whitespace (`fingerprint::json_bytes`): TRANSLATE drops the
        // characters that have no counterpart (BigQuery reads `\t` in a literal as a tab).
        match (json, self.json_as_string) {
            (true, false) => format!("BYTE_LENGTH(TRANSLATE(TO_JSON_STRING({expr}), ' \\t\\n\\r', ''))"),
            (true, true) => format!("BYTE_LENGTH(TRANSLATE({expr}, ' \\t\\n\\r', ''))"),
            (false, _) => format!("BYTE_LENGTH({expr})"),
        }
    }

    fn count_true(&self, expr: &str) -> String {
        format!("COUNTIF({expr})")
    }
}

/// A microsecond count in `unit`.
fn scale_micros(micros: &str, unit: EpochUnit) -> String {
    match unit {
        EpochUnit::Second => format!("DIV({micros}, 1000000)"),
        EpochUnit::Millisecond => format!("DIV({micros}, 1000)"),
        EpochUnit::Nanosecond => format!("({micros} * 1000)"),
        EpochUnit::Microsecond | EpochUnit::Day => micros.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn of(dt: DataType) -> BqType {
        bq_type(&Field::new("c", dt, true)).unwrap().0
    }

    #[test]
    fn decimals_by_precision_and_scale() {
        assert_eq!(of(DataType::Decimal128(38, 9)), BqType::Numeric);
        assert_eq!(of(DataType::Decimal128(18, 2)), BqType::Numeric);
        assert_eq!(of(DataType::Decimal128(38, 0)), BqType::BigNumeric);
        assert_eq!(of(DataType::Decimal128(38, 10)), BqType::BigNumeric);
        assert_eq!(of(DataType::Decimal256(76, 38)), BqType::BigNumeric);
        assert!(bq_type(&Field::new("c", DataType::Decimal256(76, 0), true)).is_err());
    }

    #[test]
    fn zoned_timestamps_are_instants_naive_are_civil() {
        assert_eq!(
            of(DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))),
            BqType::Timestamp
        );
        assert_eq!(of(DataType::Timestamp(TimeUnit::Microsecond, None)), BqType::DateTime);
        assert_eq!(of(DataType::Date32), BqType::Date);
        assert_eq!(of(DataType::Time64(TimeUnit::Microsecond)), BqType::Time);
        let json = Field::new("j", DataType::Utf8, true).with_metadata(HashMap::from([(
            EXTENSION_NAME_KEY.to_string(),
            JSON_EXTENSION.to_string(),
        )]));
        assert_eq!(bq_type(&json).unwrap().0, BqType::Json);
        assert_eq!(of(DataType::Binary), BqType::Bytes);
        assert_eq!(of(DataType::Boolean), BqType::Bool);
        assert_eq!(of(DataType::Float32), BqType::Float64);
        assert_eq!(of(DataType::Int16), BqType::Int64);
        assert_eq!(of(DataType::Utf8), BqType::String);
        let e = bq_type(&Field::new("l", DataType::new_list(DataType::Int32, true), true)).unwrap_err();
        assert!(e.to_string().starts_with("column `l`"), "{e}");
    }

    #[test]
    fn dialect_renderings() {
        let d = BigQueryDialect::for_schema(
            &arrow::datatypes::Schema::new(vec![Field::new("big", DataType::Decimal128(38, 0), true)]),
            false,
        );
        assert_eq!(
            d.exact_sum("`big`", 0),
            "CAST(SUM(CAST(`big` AS BIGNUMERIC(38, 0))) AS STRING)"
        );
        assert_eq!(d.quote_ident("a`b"), "`a\\`b`");
        assert_eq!(
            d.exact_sum("`x`", 2),
            "CAST(SUM(CAST(`x` AS NUMERIC(31, 2))) AS STRING)"
        );
        assert_eq!(
            d.exact_sum("`x`", 18),
            "CAST(SUM(CAST(`x` AS BIGNUMERIC(56, 18))) AS STRING)"
        );
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(d.epoch("`t`", &ts, EpochUnit::Microsecond), "UNIX_MICROS(`t`)");
        let naive = DataType::Timestamp(TimeUnit::Millisecond, None);
        assert_eq!(
            d.epoch("`t`", &naive, EpochUnit::Millisecond),
            "DIV(UNIX_MICROS(TIMESTAMP(`t`, 'UTC')), 1000)"
        );
        assert_eq!(d.epoch("`d`", &DataType::Date32, EpochUnit::Day), "UNIX_DATE(`d`)");
        assert_eq!(d.count_true("`b`"), "COUNTIF(`b`)");
        assert_eq!(
            d.byte_length("`j`", &DataType::Utf8, true),
            r"BYTE_LENGTH(TRANSLATE(TO_JSON_STRING(`j`), ' \t\n\r', ''))"
        );
    }
}
