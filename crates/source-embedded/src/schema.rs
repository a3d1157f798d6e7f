//! The SQLite schema of the embedded database and the mapping of declared types to Arrow.
//!
//! SQLite stores few types of its own, so the declared column type carries the meaning and the
//! stored value is in a fixed unit: timestamps are INTEGER microseconds since the epoch UTC,
//! dates INTEGER days since the epoch, `DECIMAL(p,s)` an INTEGER scaled by `10^s`, JSON text.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use backhaul_core::connector::{ColumnOrigin, TableDescription};
use backhaul_core::cursor::CursorKind;
use backhaul_core::{Error, Result};
use rusqlite::{Connection, OptionalExtension};

use crate::sql_error;

/// The generated table.
pub const ORDERS_TABLE: &str = "orders";
/// Seeded days with their row count and estimated bytes: the source's catalog statistics.
pub const SEEDED_DAYS_TABLE: &str = "_backhaul_seeded_days";
/// Generator parameters the database was seeded with.
pub const META_TABLE: &str = "_backhaul_meta";
/// Field metadata key naming an Arrow extension type.
pub const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
/// The canonical Arrow JSON extension type name.
pub const JSON_EXTENSION: &str = "arrow.json";

/// Creates the backhaul tables when missing; idempotent.
pub(crate) const DDL: &str = "
CREATE TABLE IF NOT EXISTS orders (
    order_id    INTEGER PRIMARY KEY NOT NULL,
    customer_id BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    amount      DECIMAL(18,2) NOT NULL,
    currency    TEXT NOT NULL,
    status      TEXT NOT NULL,
    attributes  JSON,
    note        TEXT,
    shipped_on  DATE
);
CREATE INDEX IF NOT EXISTS orders_created_at ON orders(created_at);
CREATE TABLE IF NOT EXISTS _backhaul_seeded_days (
    day   INTEGER PRIMARY KEY,
    rows  INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS _backhaul_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Quotes an identifier for SQL (doubling embedded quotes, though specs only allow plain names).
pub(crate) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Arrow type of a declared SQLite column type, or `None` when backhaul cannot map it exactly.
pub fn arrow_type(declared: &str) -> Option<DataType> {
    let upper = declared.trim().to_ascii_uppercase();
    let t = match upper.as_str() {
        "INTEGER" | "INT" | "BIGINT" => DataType::Int64,
        "TIMESTAMPTZ" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "DATE" => DataType::Date32,
        "TEXT" | "JSON" => DataType::Utf8,
        "REAL" | "DOUBLE" => DataType::Float64,
        "BLOB" => DataType::Binary,
        other => return decimal_type(other),
    };
    Some(t)
}

/// `DECIMAL(p,s)` / `NUMERIC(p,s)` with `1 <= p <= 38` and `0 <= s <= p`.
fn decimal_type(upper: &str) -> Option<DataType> {
    let args = upper
        .strip_prefix("DECIMAL")
        .or_else(|| upper.strip_prefix("NUMERIC"))?;
    let inner = args.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    let precision: u8 = p.trim().parse().ok()?;
    let scale: i8 = s.trim().parse().ok()?;
    let valid = (1..=38).contains(&precision) && scale >= 0 && scale as u8 <= precision;
    valid.then_some(DataType::Decimal128(precision, scale))
}

/// The Arrow field of one column; JSON columns carry the `arrow.json` extension name.
fn field(name: &str, declared: &str, nullable: bool) -> Result<Field> {
    let data_type = arrow_type(declared).ok_or_else(|| {
        Error::TypeFidelity(format!(
            "column {name}: declared type `{declared}` has no exact Arrow mapping"
        ))
    })?;
    let field = Field::new(name, data_type, nullable);
    if declared.trim().eq_ignore_ascii_case("JSON") {
        let meta = HashMap::from([(EXTENSION_NAME_KEY.to_string(), JSON_EXTENSION.to_string())]);
        return Ok(field.with_metadata(meta));
    }
    Ok(field)
}

struct ColumnInfo {
    name: String,
    declared: String,
    not_null: bool,
    pk: i64,
}

fn table_info(conn: &Connection, path: &Path, table: &str) -> Result<Vec<ColumnInfo>> {
    let exists = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?1",
            [table],
            |_| Ok(()),
        )
        .optional()
        .map_err(|e| sql_error(path, e))?;
    if exists.is_none() {
        return Err(no_such_table(path, table));
    }
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({})", quote(table)))
        .map_err(|e| sql_error(path, e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(ColumnInfo {
                name: r.get(1)?,
                declared: r.get(2)?,
                not_null: r.get::<_, i64>(3)? != 0,
                pk: r.get(5)?,
            })
        })
        .map_err(|e| sql_error(path, e))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| sql_error(path, e))
}

/// The error for a table that is not in the database file.
pub(crate) fn no_such_table(path: &Path, table: &str) -> Error {
    Error::InvalidObject {
        object: format!("table {table}"),
        message: format!("no such table in {}", path.display()),
    }
}

/// Reads `table`'s columns and checks `cursor` exists and can bound chunks.
pub(crate) fn describe(conn: &Connection, path: &Path, table: &str, cursor: &str) -> Result<TableDescription> {
    let columns = table_info(conn, path, table)?;
    let mut fields = Vec::with_capacity(columns.len());
    for c in &columns {
        // An INTEGER PRIMARY KEY aliases the rowid, which is never NULL.
        let rowid = c.pk > 0 && c.declared.eq_ignore_ascii_case("INTEGER");
        fields.push(field(&c.name, &c.declared, !(c.not_null || rowid))?);
    }
    let schema = Arc::new(Schema::new(fields));
    let object = format!("column {table}.{cursor}");
    let cursor_field = schema.field_with_name(cursor).map_err(|_| {
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        Error::InvalidObject {
            object: object.clone(),
            message: format!("no such column; the columns are: {}", names.join(", ")),
        }
    })?;
    let cursor_kind = CursorKind::of(cursor_field.data_type()).ok_or_else(|| Error::InvalidObject {
        object,
        message: format!(
            "its type {} is not orderable as a cursor; use a timestamp, date or integer column",
            cursor_field.data_type()
        ),
    })?;
    let mut keys: Vec<&ColumnInfo> = columns.iter().filter(|c| c.pk > 0).collect();
    keys.sort_by_key(|c| c.pk);
    Ok(TableDescription {
        schema,
        cursor_column: cursor.to_string(),
        cursor_kind,
        key_columns: keys.into_iter().map(|c| c.name.clone()).collect(),
        columns: columns
            .iter()
            .map(|c| ColumnOrigin {
                name: c.name.clone(),
                source_type: c.declared.to_lowercase(),
                lossy_step: None,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_declared_types() {
        assert_eq!(arrow_type("decimal(18, 2)"), Some(DataType::Decimal128(18, 2)));
        assert_eq!(arrow_type("DECIMAL(39,2)"), None);
        assert_eq!(arrow_type("DECIMAL(4,5)"), None);
        assert_eq!(arrow_type("bigint"), Some(DataType::Int64));
        assert_eq!(arrow_type("VARCHAR(10)"), None);
        assert!(field("x", "GEOMETRY", true).is_err());
    }
}
