//! PostgreSQL types and their exact Arrow types (the table is in docs/sources/postgres.md).
//!
//! Types are resolved from the catalog: built-in types by OID, enums and domains (by their base
//! type) and one-dimensional arrays of any mapped type through `pg_type`. Anything without an
//! exact Arrow type is refused at describe time with the column's name, never guessed.

use std::collections::HashMap;
use std::sync::Arc;

use crate::spec::{InfiniteDatetime, SpecialNumeric, UnconstrainedNumeric};
use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use backhaul_core::cursor::CursorKind;

/// Field metadata key naming an Arrow extension type.
pub const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
/// Canonical Arrow JSON extension type (a `Utf8` holding JSON text).
pub const JSON_EXTENSION: &str = "arrow.json";
/// Canonical Arrow UUID extension type (a `FixedSizeBinary(16)`).
pub const UUID_EXTENSION: &str = "arrow.uuid";

/// Largest decimal precision Arrow holds (Decimal256).
const MAX_DECIMAL_PRECISION: i32 = 76;

/// How the source reads one column, decided from its type at describe time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    /// text, varchar, char(n), name, citext, xml and enum labels.
    Text,
    /// json: UTF-8 text.
    Json,
    /// jsonb: a version byte (1), then UTF-8 text.
    Jsonb,
    Bytea,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Uuid,
    /// numeric with a precision: Decimal128 up to 38 digits, Decimal256 up to 76.
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// numeric without precision, read as exact text (policy `text`).
    NumericText,
    /// One-dimensional array of the element kind.
    Array(Box<PgKind>),
}

/// The cursor column's type, which decides how bounds are written in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CursorType {
    Timestamp,
    Timestamptz,
    Date,
    Integer,
}

impl CursorType {
    pub(crate) fn of(kind: &PgKind) -> Option<Self> {
        Some(match kind {
            PgKind::Timestamp => CursorType::Timestamp,
            PgKind::Timestamptz => CursorType::Timestamptz,
            PgKind::Date => CursorType::Date,
            PgKind::Int2 | PgKind::Int4 | PgKind::Int8 => CursorType::Integer,
            _ => return None,
        })
    }

    pub(crate) fn kind(self) -> CursorKind {
        match self {
            CursorType::Timestamp | CursorType::Timestamptz => CursorKind::Timestamp,
            CursorType::Date => CursorKind::Date,
            CursorType::Integer => CursorKind::Integer,
        }
    }

    /// The SQL type statistics values are cast to.
    pub(crate) fn sql_type(self) -> &'static str {
        match self {
            CursorType::Timestamp => "timestamp",
            CursorType::Timestamptz => "timestamptz",
            CursorType::Date => "date",
            CursorType::Integer => "int8",
        }
    }

    /// SQL turning a value `v` of [`CursorType::sql_type`] into cursor units (int8).
    pub(crate) fn to_units_sql(self, v: &str) -> String {
        match self {
            CursorType::Timestamp | CursorType::Timestamptz => format!("(extract(epoch from {v}) * 1000000)::int8"),
            CursorType::Date => format!("({v} - DATE '1970-01-01')::int8"),
            CursorType::Integer => format!("{v}::int8"),
        }
    }

    /// SQL condition that `v` is a finite value.
    pub(crate) fn finite_sql(self, v: &str) -> String {
        match self {
            CursorType::Integer => "true".into(),
            _ => format!("isfinite({v})"),
        }
    }
}

/// The type policies of the spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Policies {
    pub unconstrained_numeric: UnconstrainedNumeric,
    pub infinite_datetime: InfiniteDatetime,
    pub special_numeric: SpecialNumeric,
}

/// A row of `pg_type` needed to resolve non-built-in types.
#[derive(Debug, Clone)]
pub(crate) struct TypeRow {
    pub name: String,
    /// `typtype`: b base, e enum, d domain, c composite, r range, m multirange, p pseudo.
    pub typtype: u8,
    /// `typcategory`: A for arrays.
    pub category: u8,
    pub base: u32,
    pub base_typmod: i32,
    pub elem: u32,
}

/// Why a column's type cannot be read.
pub(crate) type Unsupported = String;

/// Resolves a column type to how it is read. `typmod` is the attribute's (or domain's).
pub(crate) fn resolve(
    oid: u32,
    typmod: i32,
    types: &HashMap<u32, TypeRow>,
    policies: &Policies,
) -> Result<PgKind, Unsupported> {
    Ok(match oid {
        16 => PgKind::Bool,
        17 => PgKind::Bytea,
        19 | 25 | 142 | 1042 | 1043 => PgKind::Text,
        20 => PgKind::Int8,
        21 => PgKind::Int2,
        23 => PgKind::Int4,
        26 => PgKind::Oid,
        114 => PgKind::Json,
        700 => PgKind::Float4,
        701 => PgKind::Float8,
        1082 => PgKind::Date,
        1083 => PgKind::Time,
        1114 => PgKind::Timestamp,
        1184 => PgKind::Timestamptz,
        1186 => PgKind::Interval,
        1700 => numeric(typmod, policies)?,
        2950 => PgKind::Uuid,
        3802 => PgKind::Jsonb,
        _ => {
            let Some(t) = types.get(&oid) else {
                return Err(format!("type oid {oid} is not in pg_type"));
            };
            match t.typtype {
                b'e' => PgKind::Text,
                b'd' => {
                    let typmod = if typmod >= 0 { typmod } else { t.base_typmod };
                    resolve(t.base, typmod, types, policies)?
                }
                b'b' if t.category == b'A' && t.elem != 0 => {
                    let elem = resolve(t.elem, typmod, types, policies)?;
                    if matches!(elem, PgKind::Array(_)) {
                        return Err("arrays of arrays have no exact Arrow type".into());
                    }
                    PgKind::Array(Box::new(elem))
                }
                b'b' if t.name == "citext" => PgKind::Text,
                _ => return Err(format!("type `{}` has no exact Arrow mapping in backhaul", t.name)),
            }
        }
    })
}

/// numeric(p,s) from its typmod; PostgreSQL 15 allows a scale below 0 or above the precision.
fn numeric(typmod: i32, policies: &Policies) -> Result<PgKind, Unsupported> {
    if typmod < 4 {
        return match policies.unconstrained_numeric {
            UnconstrainedNumeric::Error => Err(
                "it is a numeric without declared precision, which no Arrow decimal holds for every value; \
                 set `unconstrained_numeric` in [source] to \"decimal(P,S)\" (values that do not fit fail the chunk) \
                 or \"text\" (exact decimal text)"
                    .into(),
            ),
            UnconstrainedNumeric::Text => Ok(PgKind::NumericText),
            UnconstrainedNumeric::Decimal { precision, scale } => Ok(PgKind::Decimal { precision, scale }),
        };
    }
    let t = typmod - 4;
    let precision = (t >> 16) & 0xffff;
    // The scale is an 11-bit two's complement number since PostgreSQL 15.
    let scale = ((t & 0x7ff) ^ 1024) - 1024;
    // numeric(p,-k) holds multiples of 10^k with p significant digits: p + k digits, scale 0.
    // numeric(p,s>p) holds values below 10^(p-s): s digits, all after the point.
    let (p, s) = if scale < 0 {
        (precision - scale, 0)
    } else {
        (precision.max(scale), scale)
    };
    if p > MAX_DECIMAL_PRECISION {
        return Err(format!(
            "numeric({precision},{scale}) needs {p} digits; Arrow decimals hold at most {MAX_DECIMAL_PRECISION}"
        ));
    }
    Ok(PgKind::Decimal {
        precision: p as u8,
        scale: s as u8,
    })
}

impl PgKind {
    /// The Arrow type, with the field metadata of extension types.
    pub(crate) fn arrow(&self) -> (DataType, Option<&'static str>) {
        let t = match self {
            PgKind::Bool => DataType::Boolean,
            PgKind::Int2 => DataType::Int16,
            PgKind::Int4 => DataType::Int32,
            PgKind::Int8 => DataType::Int64,
            PgKind::Oid => DataType::UInt32,
            PgKind::Float4 => DataType::Float32,
            PgKind::Float8 => DataType::Float64,
            PgKind::Text | PgKind::NumericText => DataType::Utf8,
            PgKind::Json | PgKind::Jsonb => return (DataType::Utf8, Some(JSON_EXTENSION)),
            PgKind::Bytea => DataType::Binary,
            PgKind::Date => DataType::Date32,
            PgKind::Time => DataType::Time64(TimeUnit::Microsecond),
            PgKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgKind::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgKind::Interval => DataType::Struct(interval_fields()),
            PgKind::Uuid => return (DataType::FixedSizeBinary(16), Some(UUID_EXTENSION)),
            PgKind::Decimal { precision, scale } if *precision <= 38 => DataType::Decimal128(*precision, *scale as i8),
            PgKind::Decimal { precision, scale } => DataType::Decimal256(*precision, *scale as i8),
            PgKind::Array(elem) => DataType::List(Arc::new(elem.field("item", true))),
        };
        (t, None)
    }

    /// An Arrow field of this kind.
    pub(crate) fn field(&self, name: &str, nullable: bool) -> Field {
        let (data_type, extension) = self.arrow();
        let field = Field::new(name, data_type, nullable);
        match extension {
            Some(ext) => field.with_metadata(HashMap::from([(EXTENSION_NAME_KEY.to_string(), ext.to_string())])),
            None => field,
        }
    }

    /// The innermost element kind.
    fn leaf(&self) -> &PgKind {
        match self {
            PgKind::Array(e) => e.leaf(),
            other => other,
        }
    }

    /// The opt-in conversions that apply to this column, for the type-fidelity report.
    pub(crate) fn lossy_step(&self, declared_unconstrained: bool, policies: &Policies) -> Option<String> {
        let mut steps = Vec::new();
        let leaf = self.leaf();
        if declared_unconstrained {
            match policies.unconstrained_numeric {
                UnconstrainedNumeric::Decimal { precision, scale } => steps.push(format!(
                    "unconstrained numeric read as decimal({precision},{scale}): a value needing more digits fails the chunk"
                )),
                UnconstrainedNumeric::Text => {
                    steps.push("unconstrained numeric read as its exact decimal text (Utf8)".to_string())
                }
                UnconstrainedNumeric::Error => {}
            }
        }
        if matches!(leaf, PgKind::Decimal { .. } | PgKind::NumericText)
            && policies.special_numeric == SpecialNumeric::Null
        {
            steps.push("NaN, Infinity and -Infinity read as NULL".to_string());
        }
        if matches!(leaf, PgKind::Date | PgKind::Timestamp | PgKind::Timestamptz) {
            match policies.infinite_datetime {
                InfiniteDatetime::Null => steps.push("infinity and -infinity read as NULL".to_string()),
                InfiniteDatetime::Clamp => steps
                    .push("infinity read as 9999-12-31 23:59:59.999999, -infinity as 0001-01-01 00:00:00".to_string()),
                InfiniteDatetime::Error => {}
            }
        }
        (!steps.is_empty()).then(|| steps.join("; "))
    }
}

/// `interval` as a struct of PostgreSQL's own three fields: Parquet cannot store Arrow's
/// `Interval(MonthDayNano)`, and no other Arrow interval holds months, days and microseconds
/// exactly.
pub(crate) fn interval_fields() -> Fields {
    Fields::from(vec![
        Field::new("months", DataType::Int32, false),
        Field::new("days", DataType::Int32, false),
        Field::new("microseconds", DataType::Int64, false),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typmod(p: i32, s: i32) -> i32 {
        ((p << 16) | (s & 0x7ff)) + 4
    }

    #[test]
    fn numeric_typmods() {
        let p = Policies::default();
        let types = HashMap::new();
        assert_eq!(
            resolve(1700, typmod(15, 2), &types, &p),
            Ok(PgKind::Decimal {
                precision: 15,
                scale: 2
            })
        );
        assert_eq!(
            resolve(1700, typmod(5, -3), &types, &p),
            Ok(PgKind::Decimal { precision: 8, scale: 0 })
        );
        assert_eq!(
            resolve(1700, typmod(3, 5), &types, &p),
            Ok(PgKind::Decimal { precision: 5, scale: 5 })
        );
        assert!(resolve(1700, typmod(100, 2), &types, &p).unwrap_err().contains("76"));
        assert!(
            resolve(1700, -1, &types, &p)
                .unwrap_err()
                .contains("unconstrained_numeric")
        );
        let text = Policies {
            unconstrained_numeric: UnconstrainedNumeric::Text,
            ..p
        };
        assert_eq!(resolve(1700, -1, &types, &text), Ok(PgKind::NumericText));
        assert_eq!(
            PgKind::Decimal {
                precision: 60,
                scale: 10
            }
            .arrow()
            .0,
            DataType::Decimal256(60, 10)
        );
    }

    #[test]
    fn arrays_domains_and_enums() {
        let p = Policies::default();
        let mut types = HashMap::new();
        let row = |name: &str, typtype: u8, category: u8, base: u32, elem: u32| TypeRow {
            name: name.into(),
            typtype,
            category,
            base,
            base_typmod: -1,
            elem,
        };
        types.insert(1007, row("_int4", b'b', b'A', 0, 23));
        types.insert(90_000, row("mood", b'e', b'E', 0, 0));
        types.insert(90_001, row("_mood", b'b', b'A', 0, 90_000));
        types.insert(90_002, row("posint", b'd', b'N', 23, 0));
        types.insert(90_003, row("point", b'b', b'G', 0, 0));
        assert_eq!(resolve(1007, -1, &types, &p), Ok(PgKind::Array(Box::new(PgKind::Int4))));
        assert_eq!(
            resolve(90_001, -1, &types, &p),
            Ok(PgKind::Array(Box::new(PgKind::Text)))
        );
        assert_eq!(resolve(90_002, -1, &types, &p), Ok(PgKind::Int4));
        assert!(resolve(90_003, -1, &types, &p).unwrap_err().contains("point"));
        let json = PgKind::Array(Box::new(PgKind::Jsonb)).field("j", true);
        let DataType::List(item) = json.data_type() else {
            panic!()
        };
        assert_eq!(item.metadata()[EXTENSION_NAME_KEY], JSON_EXTENSION);
    }
}
