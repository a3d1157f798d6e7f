//! Arrow types as Snowflake columns: the mapping `prepare` creates tables with, the names the
//! type-fidelity report shows, and the comparison with an existing table's columns.
//!
//! | Arrow | Snowflake |
//! |---|---|
//! | `Boolean` | `BOOLEAN` |
//! | `Int8` … `Int64`, `UInt8` … `UInt64` | `NUMBER(38,0)` |
//! | `Decimal128(p,s)`, `Decimal256(p,s)` with p ≤ 38 | `NUMBER(p,s)` |
//! | `Float16/32/64` | `FLOAT` |
//! | `Utf8`, `LargeUtf8`, `Utf8View` | `VARCHAR` |
//! | the same with extension `arrow.json` | `VARIANT` (or `VARCHAR` with `json_type = "varchar"`) |
//! | `Binary`, `LargeBinary`, `BinaryView`, `FixedSizeBinary` | `BINARY` |
//! | `Date32`, `Date64` | `DATE` |
//! | `Time32(s/ms)`, `Time64(us/ns)` | `TIME(0/3/6/9)` |
//! | `Timestamp(unit)` without zone | `TIMESTAMP_NTZ(0/3/6/9)` |
//! | `Timestamp(unit, zone)` | `TIMESTAMP_TZ(0/3/6/9)`: the instant, offset of the session (UTC) |
//! | lists, structs, maps | `VARIANT` (NULL counts proven only) |

use arrow::datatypes::{DataType, Field, TimeUnit};
use backhaul_core::connector::DestinationType;
use backhaul_core::fingerprint::{EXTENSION_NAME_KEY, JSON_EXTENSION};

/// How JSON columns (`arrow.json`) are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsonType {
    /// Parsed into `VARIANT` (default): queryable as JSON; the proof measures `TO_JSON(c)`, which
    /// equals the source's text only when the source wrote compact JSON.
    #[default]
    Variant,
    /// Kept as the source's text in `VARCHAR`: byte for byte, so the proof is exact for any source.
    Varchar,
}

/// A Snowflake column type, reduced to what the comparison needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    /// The base type as `INFORMATION_SCHEMA.COLUMNS.DATA_TYPE` spells it: `NUMBER`, `TEXT`,
    /// `FLOAT`, `BOOLEAN`, `DATE`, `TIME`, `TIMESTAMP_NTZ`, `TIMESTAMP_TZ`, `TIMESTAMP_LTZ`,
    /// `BINARY`, `VARIANT`.
    pub base: String,
    /// `NUMBER`'s precision and scale.
    pub number: Option<(u8, i8)>,
}

impl ColumnType {
    fn of(base: &str) -> Self {
        ColumnType {
            base: base.into(),
            number: None,
        }
    }

    /// The type as `CREATE TABLE` writes it.
    pub fn ddl(&self, precision: Option<u8>) -> String {
        match (self.base.as_str(), self.number) {
            ("NUMBER", Some((p, s))) => format!("NUMBER({p},{s})"),
            ("TEXT", _) => "VARCHAR".into(),
            ("TIME" | "TIMESTAMP_NTZ" | "TIMESTAMP_TZ", _) => match precision {
                Some(p) => format!("{}({p})", self.base),
                None => self.base.clone(),
            },
            (base, _) => base.into(),
        }
    }

    /// Whether a column of this (existing) type can hold values of `wanted` without loss.
    pub fn accepts(&self, wanted: &ColumnType) -> bool {
        if self.base != wanted.base {
            return false;
        }
        match (self.number, wanted.number) {
            (Some((p, s)), Some((wp, ws))) => s == ws && p >= wp,
            _ => true,
        }
    }

    /// For messages: `NUMBER(38,9)`, `TIMESTAMP_TZ`.
    pub fn display(&self) -> String {
        match self.number {
            Some((p, s)) => format!("NUMBER({p},{s})"),
            None => self.base.clone(),
        }
    }
}

/// Whether `field` holds JSON text (the canonical `arrow.json` extension).
pub fn is_json(field: &Field) -> bool {
    field.metadata().get(EXTENSION_NAME_KEY).map(String::as_str) == Some(JSON_EXTENSION)
}

fn unit_digits(unit: &TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

/// The Snowflake type of `field`, its fractional-second precision (time types) and the lossy
/// step, if any. `Err` names why the type cannot be loaded.
pub fn snowflake_type(field: &Field, json: JsonType) -> Result<(ColumnType, Option<u8>, Option<String>), String> {
    let number = |p: u8, s: i8| ColumnType {
        base: "NUMBER".into(),
        number: Some((p, s)),
    };
    Ok(match field.data_type() {
        DataType::Boolean => (ColumnType::of("BOOLEAN"), None, None),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => (number(38, 0), None, None),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => {
            if *p > 38 || *s < 0 || *s > 37 {
                return Err(format!(
                    "decimal({p},{s}) does not fit Snowflake's NUMBER (precision ≤ 38, scale 0–37)"
                ));
            }
            (number(*p, *s), None, None)
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => (ColumnType::of("FLOAT"), None, None),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if is_json(field) && json == JsonType::Variant => (
            ColumnType::of("VARIANT"),
            None,
            Some("JSON parsed into VARIANT: whitespace, key order and number spelling are Snowflake's".into()),
        ),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => (ColumnType::of("TEXT"), None, None),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            (ColumnType::of("BINARY"), None, None)
        }
        DataType::Date32 | DataType::Date64 => (ColumnType::of("DATE"), None, None),
        DataType::Time32(u) | DataType::Time64(u) => (ColumnType::of("TIME"), Some(unit_digits(u)), None),
        DataType::Timestamp(u, None) => (ColumnType::of("TIMESTAMP_NTZ"), Some(unit_digits(u)), None),
        DataType::Timestamp(u, Some(_)) => (
            ColumnType::of("TIMESTAMP_TZ"),
            Some(unit_digits(u)),
            Some("the source's zone name is not kept: the instant is, with the session's offset (UTC)".into()),
        ),
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::FixedSizeList(_, _)
        | DataType::Struct(_)
        | DataType::Map(_, _) => (
            ColumnType::of("VARIANT"),
            None,
            Some("nested value loaded as VARIANT; only its NULL count is proven".into()),
        ),
        DataType::Dictionary(_, value) => {
            return snowflake_type(&field.clone().with_data_type(value.as_ref().clone()), json);
        }
        DataType::Null => (ColumnType::of("TEXT"), None, None),
        other => return Err(format!("Arrow type {other} has no Snowflake column type")),
    })
}

/// The column type for the type-fidelity report.
pub fn destination_type(field: &Field, json: JsonType) -> DestinationType {
    match snowflake_type(field, json) {
        Ok((t, precision, lossy_step)) => DestinationType {
            name: t.ddl(precision),
            lossy_step,
        },
        Err(why) => DestinationType {
            name: "(none)".into(),
            lossy_step: Some(why),
        },
    }
}

/// An existing column's type from `INFORMATION_SCHEMA.COLUMNS` (`DATA_TYPE`,
/// `NUMERIC_PRECISION`, `NUMERIC_SCALE`).
pub fn existing_type(data_type: &str, precision: Option<i64>, scale: Option<i64>) -> ColumnType {
    let base = data_type.trim().to_ascii_uppercase();
    // Synonyms as servers report them.
    let base = match base.as_str() {
        "VARCHAR" | "STRING" | "CHAR" | "CHARACTER" => "TEXT".to_string(),
        "DECIMAL" | "NUMERIC" | "INT" | "INTEGER" | "BIGINT" | "SMALLINT" | "TINYINT" | "BYTEINT" => {
            "NUMBER".to_string()
        }
        "DOUBLE" | "DOUBLE PRECISION" | "REAL" | "FLOAT4" | "FLOAT8" => "FLOAT".to_string(),
        "DATETIME" | "TIMESTAMP" => "TIMESTAMP_NTZ".to_string(),
        "VARBINARY" => "BINARY".to_string(),
        "OBJECT" | "ARRAY" => "VARIANT".to_string(),
        _ => base,
    };
    let number = (base == "NUMBER").then(|| {
        (
            precision.and_then(|p| u8::try_from(p).ok()).unwrap_or(38),
            scale.and_then(|s| i8::try_from(s).ok()).unwrap_or(0),
        )
    });
    ColumnType { base, number }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn ddl(data_type: DataType) -> String {
        destination_type(&Field::new("c", data_type, true), JsonType::Variant).name
    }

    #[test]
    fn the_documented_mapping() {
        assert_eq!(ddl(DataType::Int64), "NUMBER(38,0)");
        assert_eq!(ddl(DataType::Decimal128(38, 9)), "NUMBER(38,9)");
        assert_eq!(ddl(DataType::Float64), "FLOAT");
        assert_eq!(ddl(DataType::Utf8), "VARCHAR");
        assert_eq!(ddl(DataType::Binary), "BINARY");
        assert_eq!(ddl(DataType::Boolean), "BOOLEAN");
        assert_eq!(ddl(DataType::Date32), "DATE");
        assert_eq!(ddl(DataType::Time64(TimeUnit::Microsecond)), "TIME(6)");
        assert_eq!(ddl(DataType::Time64(TimeUnit::Nanosecond)), "TIME(9)");
        assert_eq!(
            ddl(DataType::Timestamp(TimeUnit::Microsecond, None)),
            "TIMESTAMP_NTZ(6)"
        );
        assert_eq!(
            ddl(DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))),
            "TIMESTAMP_TZ(6)"
        );
        let json = Field::new("j", DataType::Utf8, true).with_metadata(HashMap::from([(
            EXTENSION_NAME_KEY.to_string(),
            JSON_EXTENSION.to_string(),
        )]));
        assert_eq!(destination_type(&json, JsonType::Variant).name, "VARIANT");
        assert_eq!(destination_type(&json, JsonType::Varchar).name, "VARCHAR");
        let wide = destination_type(&Field::new("d", DataType::Decimal256(60, 2), true), JsonType::Variant);
        assert!(wide.lossy_step.unwrap().contains("precision ≤ 38"));
    }

    #[test]
    fn existing_columns_accept_the_same_or_wider_numbers_only() {
        let (want, _, _) =
            snowflake_type(&Field::new("c", DataType::Decimal128(18, 2), true), JsonType::Variant).unwrap();
        assert!(existing_type("NUMBER", Some(38), Some(2)).accepts(&want));
        assert!(!existing_type("NUMBER", Some(10), Some(2)).accepts(&want));
        assert!(!existing_type("NUMBER", Some(38), Some(3)).accepts(&want));
        assert!(!existing_type("TEXT", None, None).accepts(&want));
        let (text, _, _) = snowflake_type(&Field::new("c", DataType::Utf8, true), JsonType::Variant).unwrap();
        assert!(existing_type("VARCHAR", None, None).accepts(&text));
    }
}
