//! Reading a table's columns from `information_schema` and mapping each MySQL type to the
//! Arrow type that holds every value of it exactly (docs/sources/mysql.md has the table).

use std::collections::HashMap;
use std::sync::Arc;

use crate::spec::{UnsignedBigintMapping, ZeroDatePolicy};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use backhaul_core::connector::{ColumnOrigin, TableDescription};
use backhaul_core::cursor::CursorKind;
use backhaul_core::{Error, Result};
use mysql_async::consts::{ColumnFlags, ColumnType};

/// Field metadata key naming an Arrow extension type.
pub const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
/// The canonical Arrow JSON extension type name (the embedded source uses the same).
pub const JSON_EXTENSION: &str = "arrow.json";

/// How one column's values are decoded, chosen from its declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    /// `BIGINT UNSIGNED` read as `Decimal128(20, 0)` (`unsigned_bigint = "decimal"`).
    UInt64AsDecimal,
    Float32,
    Float64,
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// `BIT(1)`.
    Bool,
    /// `BIT(2..64)`: the bit pattern as an unsigned integer.
    Bits,
    /// `YEAR`: 0 or 1901-2155.
    Year,
    Text,
    Json,
    Binary,
    Date,
    /// `DATETIME(fsp)`: wall-clock time without zone.
    DateTime {
        fsp: u8,
    },
    /// `TIMESTAMP(fsp)`: an instant, read in the session zone, which is forced to UTC.
    Timestamp {
        fsp: u8,
    },
    /// `TIME(fsp)`: -838:59:59 to 838:59:59, so a duration rather than a time of day.
    Time,
}

impl Kind {
    /// The Arrow type values are decoded into.
    pub(crate) fn arrow_type(self) -> DataType {
        match self {
            Kind::Int8 => DataType::Int8,
            Kind::Int16 | Kind::Year => DataType::Int16,
            Kind::Int32 => DataType::Int32,
            Kind::Int64 => DataType::Int64,
            Kind::UInt8 => DataType::UInt8,
            Kind::UInt16 => DataType::UInt16,
            Kind::UInt32 => DataType::UInt32,
            Kind::UInt64 | Kind::Bits => DataType::UInt64,
            Kind::UInt64AsDecimal => DataType::Decimal128(20, 0),
            Kind::Float32 => DataType::Float32,
            Kind::Float64 => DataType::Float64,
            Kind::Decimal { precision, scale } if precision <= 38 => DataType::Decimal128(precision, scale),
            Kind::Decimal { precision, scale } => DataType::Decimal256(precision, scale),
            Kind::Bool => DataType::Boolean,
            Kind::Text | Kind::Json => DataType::Utf8,
            Kind::Binary => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::DateTime { .. } => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::Timestamp { .. } => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::Time => DataType::Duration(TimeUnit::Microsecond),
        }
    }

    /// Whether the column can hold zero dates such as `0000-00-00`.
    pub(crate) fn is_calendar(self) -> bool {
        matches!(self, Kind::Date | Kind::DateTime { .. } | Kind::Timestamp { .. })
    }

    /// Smallest step between two values in cursor units (µs for times, days, 1), so range
    /// bounds can be aligned to values the column can hold.
    pub(crate) fn cursor_step(self) -> i64 {
        match self {
            Kind::DateTime { fsp } | Kind::Timestamp { fsp } => 10i64.pow(6 - u32::from(fsp.min(6))),
            _ => 1,
        }
    }

    /// The column types the server may send for this kind in a binary result set, and whether
    /// the unsigned flag must be set (`None`: either).
    fn wire_types(self) -> (&'static [ColumnType], Option<bool>) {
        use ColumnType::*;
        const TEXT: &[ColumnType] = &[
            MYSQL_TYPE_STRING,
            MYSQL_TYPE_VAR_STRING,
            MYSQL_TYPE_VARCHAR,
            MYSQL_TYPE_TINY_BLOB,
            MYSQL_TYPE_BLOB,
            MYSQL_TYPE_MEDIUM_BLOB,
            MYSQL_TYPE_LONG_BLOB,
            MYSQL_TYPE_ENUM,
            MYSQL_TYPE_SET,
            MYSQL_TYPE_JSON,
        ];
        match self {
            Kind::Int8 => (&[MYSQL_TYPE_TINY], Some(false)),
            Kind::UInt8 => (&[MYSQL_TYPE_TINY], Some(true)),
            Kind::Int16 => (&[MYSQL_TYPE_SHORT], Some(false)),
            Kind::UInt16 => (&[MYSQL_TYPE_SHORT], Some(true)),
            Kind::Int32 => (&[MYSQL_TYPE_LONG, MYSQL_TYPE_INT24], Some(false)),
            Kind::UInt32 => (&[MYSQL_TYPE_LONG, MYSQL_TYPE_INT24], Some(true)),
            Kind::Int64 => (&[MYSQL_TYPE_LONGLONG], Some(false)),
            Kind::UInt64 | Kind::UInt64AsDecimal => (&[MYSQL_TYPE_LONGLONG], Some(true)),
            Kind::Float32 => (&[MYSQL_TYPE_FLOAT], None),
            Kind::Float64 => (&[MYSQL_TYPE_DOUBLE], None),
            Kind::Decimal { .. } => (&[MYSQL_TYPE_NEWDECIMAL, MYSQL_TYPE_DECIMAL], None),
            Kind::Bool | Kind::Bits => (&[MYSQL_TYPE_BIT], None),
            Kind::Year => (&[MYSQL_TYPE_YEAR], None),
            Kind::Text | Kind::Json | Kind::Binary => (TEXT, None),
            Kind::Date => (&[MYSQL_TYPE_DATE, MYSQL_TYPE_NEWDATE], None),
            Kind::DateTime { .. } => (&[MYSQL_TYPE_DATETIME], None),
            Kind::Timestamp { .. } => (&[MYSQL_TYPE_TIMESTAMP], None),
            Kind::Time => (&[MYSQL_TYPE_TIME], None),
        }
    }

    /// Checks the server's result-set metadata against the kind the job was planned with.
    pub(crate) fn matches_wire(self, column_type: ColumnType, flags: ColumnFlags) -> bool {
        let (types, unsigned) = self.wire_types();
        types.contains(&column_type) && unsigned.is_none_or(|u| u == flags.contains(ColumnFlags::UNSIGNED_FLAG))
    }
}

/// One column as `information_schema.COLUMNS` declares it.
#[derive(Debug, Clone)]
pub(crate) struct ColumnInfo {
    pub name: String,
    /// `DATA_TYPE`, lower case: `bigint`, `decimal`, `longtext`.
    pub data_type: String,
    /// `COLUMN_TYPE`, lower case: `bigint(20) unsigned`, `decimal(65,30)`, `enum('a','b')`.
    pub column_type: String,
    pub nullable: bool,
    pub numeric_precision: Option<u64>,
    pub numeric_scale: Option<u64>,
    pub datetime_precision: Option<u64>,
    /// MariaDB stores `JSON` as `LONGTEXT` with a `json_valid` CHECK constraint.
    pub json_check: bool,
}

/// A described column ready for extraction.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedColumn {
    pub name: String,
    pub kind: Kind,
    /// Declared type for messages and the type-fidelity report.
    pub source_type: String,
}

/// Everything extraction and planning need about the table.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub database: String,
    pub name: String,
    /// Extracted columns, in schema order.
    pub columns: Vec<ResolvedColumn>,
    /// Index into `columns` of the cursor.
    pub cursor: usize,
    /// Whether the cursor column is declared NOT NULL.
    pub cursor_not_null: bool,
    /// Primary-key columns (names), for error messages that name a row.
    pub key_columns: Vec<String>,
    /// An index whose first column is the cursor, when there is one.
    pub cursor_index: Option<String>,
    /// Table statistics from `information_schema.TABLES`.
    pub stats: TableStats,
    /// Share of the average row the extracted columns make up, from declared widths.
    pub width_share: f64,
    pub description: TableDescription,
}

/// `information_schema.TABLES` figures; estimates maintained by the storage engine.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TableStats {
    pub table_rows: u64,
    pub avg_row_length: u64,
    pub data_length: u64,
    pub is_view: bool,
    /// InnoDB stores rows in primary-key order (the clustered index).
    pub innodb: bool,
}

/// Quotes an identifier with backticks, doubling any backtick inside.
pub(crate) fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// `` `db`.`table` ``.
pub(crate) fn quote_table(database: &str, table: &str) -> String {
    format!("{}.{}", quote(database), quote(table))
}

/// The kind of a declared column, or a fidelity error naming it.
pub(crate) fn kind_of(c: &ColumnInfo, table: &str, unsigned_bigint: UnsignedBigintMapping) -> Result<Kind> {
    let unsigned = c.column_type.contains("unsigned");
    let fsp = || c.datetime_precision.unwrap_or(0).min(6) as u8;
    let kind = match c.data_type.as_str() {
        "tinyint" if unsigned => Kind::UInt8,
        "tinyint" => Kind::Int8,
        "smallint" if unsigned => Kind::UInt16,
        "smallint" => Kind::Int16,
        "mediumint" | "int" | "integer" if unsigned => Kind::UInt32,
        "mediumint" | "int" | "integer" => Kind::Int32,
        "bigint" if unsigned => match unsigned_bigint {
            UnsignedBigintMapping::Uint64 => Kind::UInt64,
            UnsignedBigintMapping::Decimal => Kind::UInt64AsDecimal,
        },
        "bigint" => Kind::Int64,
        "decimal" | "numeric" | "fixed" => {
            let precision = c.numeric_precision.unwrap_or(10);
            let scale = c.numeric_scale.unwrap_or(0);
            if !(1..=76).contains(&precision) || scale > precision {
                return Err(unmapped(table, c, "its precision and scale are out of range"));
            }
            Kind::Decimal {
                precision: precision as u8,
                scale: scale as i8,
            }
        }
        "float" => Kind::Float32,
        "double" | "real" | "double precision" => Kind::Float64,
        "bit" => match c.numeric_precision.unwrap_or(1) {
            1 => Kind::Bool,
            2..=64 => Kind::Bits,
            _ => return Err(unmapped(table, c, "BIT is at most 64 bits wide")),
        },
        "year" => Kind::Year,
        "longtext" if c.json_check => Kind::Json,
        "json" => Kind::Json,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => Kind::Text,
        // MariaDB's own types, read in their canonical text form.
        "uuid" | "inet4" | "inet6" => Kind::Text,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Binary,
        "date" => Kind::Date,
        "datetime" => Kind::DateTime { fsp: fsp() },
        "timestamp" => Kind::Timestamp { fsp: fsp() },
        "time" => Kind::Time,
        _ => return Err(unmapped(table, c, "backhaul has no exact Arrow mapping for it")),
    };
    Ok(kind)
}

fn unmapped(table: &str, c: &ColumnInfo, why: &str) -> Error {
    Error::TypeFidelity(format!(
        "column {table}.{}: type `{}` cannot be extracted: {why}; leave the column out with `source.columns`",
        c.name, c.column_type
    ))
}

/// The declared type as shown in the type-fidelity report.
fn source_type(c: &ColumnInfo) -> String {
    if c.json_check && c.data_type == "longtext" {
        // MariaDB's JSON alias: what the user declared.
        "json".into()
    } else {
        c.column_type.clone()
    }
}

/// Rough stored width of a column, only to split a table's average row length among columns.
fn declared_width(c: &ColumnInfo) -> f64 {
    match c.data_type.as_str() {
        "tinyint" | "bit" | "year" => 1.0,
        "smallint" => 2.0,
        "mediumint" | "date" | "time" => 3.0,
        "int" | "integer" | "float" | "timestamp" => 4.0,
        "bigint" | "double" | "real" | "datetime" => 8.0,
        "decimal" | "numeric" => (c.numeric_precision.unwrap_or(10) as f64 / 2.0).max(1.0),
        "char" | "binary" => c.numeric_precision.unwrap_or(16) as f64,
        "enum" | "set" => 2.0,
        _ => 32.0,
    }
}

/// Inputs of [`resolve`] besides the columns.
pub(crate) struct ResolveInput<'a> {
    pub database: &'a str,
    pub table: &'a str,
    pub cursor: &'a str,
    pub selected: Option<&'a [String]>,
    pub key_columns: Vec<String>,
    pub cursor_index: Option<String>,
    pub stats: TableStats,
    pub zero_dates: ZeroDatePolicy,
    pub unsigned_bigint: UnsignedBigintMapping,
}

/// Builds the extraction plan and the [`TableDescription`] from the declared columns.
pub(crate) fn resolve(all: &[ColumnInfo], input: ResolveInput<'_>) -> Result<Table> {
    let shown = format!("{}.{}", input.database, input.table);
    let by_name = |name: &str| all.iter().find(|c| c.name.eq_ignore_ascii_case(name));
    let no_column = |name: &str| Error::InvalidObject {
        object: format!("column {shown}.{name}"),
        message: format!(
            "no such column; the columns are: {}",
            all.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    let chosen: Vec<&ColumnInfo> = match input.selected {
        None => all.iter().collect(),
        Some(names) => names
            .iter()
            .map(|n| by_name(n).ok_or_else(|| no_column(n)))
            .collect::<Result<_>>()?,
    };
    let cursor_info = by_name(input.cursor).ok_or_else(|| no_column(input.cursor))?;
    let mut columns = Vec::with_capacity(chosen.len());
    let mut fields = Vec::with_capacity(chosen.len());
    let mut origins = Vec::with_capacity(chosen.len());
    for c in &chosen {
        let kind = kind_of(c, &shown, input.unsigned_bigint)?;
        let is_cursor = c.name == cursor_info.name;
        // Zero dates read as NULL make the column nullable; the cursor never is (a zero-date
        // cursor is always an error, see decode).
        let zero_null = kind.is_calendar() && input.zero_dates == ZeroDatePolicy::Null && !is_cursor;
        let mut field = Field::new(&c.name, kind.arrow_type(), c.nullable || zero_null);
        if kind == Kind::Json {
            field = field.with_metadata(HashMap::from([(
                EXTENSION_NAME_KEY.to_string(),
                JSON_EXTENSION.to_string(),
            )]));
        }
        fields.push(field);
        origins.push(ColumnOrigin {
            name: c.name.clone(),
            source_type: source_type(c),
            lossy_step: zero_null.then(|| "zero dates (0000-00-00) read as NULL (zero_dates = \"null\")".to_string()),
        });
        columns.push(ResolvedColumn {
            name: c.name.clone(),
            kind,
            source_type: source_type(c),
        });
    }
    let cursor = columns
        .iter()
        .position(|c| c.name == cursor_info.name)
        .ok_or_else(|| Error::config("<spec>", "source.columns", "must include the cursor column"))?;
    let cursor_arrow = columns[cursor].kind.arrow_type();
    let cursor_kind = CursorKind::of(&cursor_arrow).ok_or_else(|| Error::InvalidObject {
            object: format!("column {shown}.{}", cursor_info.name),
            message: format!(
                "its type `{}` cannot bound chunks; use a DATETIME, TIMESTAMP, DATE or integer column (BIGINT UNSIGNED cannot: cursor values are signed 64-bit)",
                cursor_info.column_type
            ),
        })?;
    let all_width: f64 = all.iter().map(declared_width).sum();
    let chosen_width: f64 = chosen.iter().map(|c| declared_width(c)).sum();
    let width_share = if all_width > 0.0 {
        (chosen_width / all_width).clamp(0.01, 1.0)
    } else {
        1.0
    };
    let schema = Arc::new(Schema::new(fields));
    let description = TableDescription {
        schema,
        cursor_column: columns[cursor].name.clone(),
        cursor_kind,
        key_columns: input
            .key_columns
            .iter()
            .filter(|k| columns.iter().any(|c| &c.name == *k))
            .cloned()
            .collect(),
        columns: origins,
    };
    Ok(Table {
        database: input.database.to_string(),
        name: input.table.to_string(),
        columns,
        cursor,
        cursor_not_null: !cursor_info.nullable,
        key_columns: input.key_columns,
        cursor_index: input.cursor_index,
        stats: input.stats,
        width_share,
        description,
    })
}

/// Whether a MariaDB CHECK clause is exactly `json_valid(`column`)`.
pub(crate) fn is_json_check(clause: &str, column: &str) -> bool {
    let compact: String = clause.chars().filter(|c| !c.is_whitespace()).collect();
    compact.eq_ignore_ascii_case(&format!("json_valid({})", quote(column)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, data_type: &str, column_type: &str) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            nullable: true,
            numeric_precision: None,
            numeric_scale: None,
            datetime_precision: None,
            json_check: false,
        }
    }

    #[test]
    fn maps_declared_types() {
        let k = |c: ColumnInfo| kind_of(&c, "t", UnsignedBigintMapping::Uint64).map(Kind::arrow_type);
        assert_eq!(k(col("a", "bigint", "bigint(20) unsigned")).unwrap(), DataType::UInt64);
        assert_eq!(k(col("a", "tinyint", "tinyint(1)")).unwrap(), DataType::Int8);
        let mut d = col("a", "decimal", "decimal(65,30)");
        d.numeric_precision = Some(65);
        d.numeric_scale = Some(30);
        assert_eq!(k(d).unwrap(), DataType::Decimal256(65, 30));
        let mut d = col("a", "decimal", "decimal(38,0)");
        d.numeric_precision = Some(38);
        d.numeric_scale = Some(0);
        assert_eq!(k(d).unwrap(), DataType::Decimal128(38, 0));
        let mut j = col("a", "longtext", "longtext");
        j.json_check = true;
        assert_eq!(kind_of(&j, "t", UnsignedBigintMapping::Uint64).unwrap(), Kind::Json);
        assert!(k(col("g", "geometry", "geometry")).is_err());
        assert_eq!(
            kind_of(
                &col("a", "bigint", "bigint(20) unsigned"),
                "t",
                UnsignedBigintMapping::Decimal
            )
            .unwrap()
            .arrow_type(),
            DataType::Decimal128(20, 0)
        );
    }

    #[test]
    fn recognizes_json_checks_and_quotes() {
        assert!(is_json_check("json_valid(`doc`)", "doc"));
        assert!(is_json_check("JSON_VALID( `doc` )", "doc"));
        assert!(!is_json_check("json_valid(`doc`) and 1", "doc"));
        assert_eq!(quote("a`b"), "`a``b`");
        assert_eq!(quote_table("d", "t"), "`d`.`t`");
    }

    #[test]
    fn cursor_steps_follow_fractional_precision() {
        assert_eq!(Kind::DateTime { fsp: 0 }.cursor_step(), 1_000_000);
        assert_eq!(Kind::Timestamp { fsp: 3 }.cursor_step(), 1_000);
        assert_eq!(Kind::DateTime { fsp: 6 }.cursor_step(), 1);
        assert_eq!(Kind::Int32.cursor_step(), 1);
    }
}
