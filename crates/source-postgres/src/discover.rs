//! `backhaul discover`: the tables of one schema with their columns, primary keys and cursor
//! candidates, from `pg_catalog` in one query.

use backhaul_core::Result;
use backhaul_core::cursor::CursorKind;
use backhaul_core::discover::{Catalog, CatalogRow, DiscoveredColumn};

use crate::connect::Connector;
use crate::sql::quote_ident;

/// Tables, partitioned tables, views, materialized views and foreign tables of the schema
/// (not partitions: their parent is the table), columns in order, each column's place in the
/// primary key.
const CATALOG_SQL: &str = "\
SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, t.typname::text,
       (SELECT array_position(i.indkey::int2[], a.attnum)
          FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
 ORDER BY c.relname, a.attnum";

/// Reads the catalog of `schema`.
pub(crate) async fn discover(connector: &Connector, schema: &str) -> Result<Catalog> {
    let conn = connector.connect().await?;
    let rows = conn
        .client
        .query(CATALOG_SQL, &[&schema])
        .await
        .map_err(|e| conn.error(&e, &format!("read the catalog of schema {schema}")))?;
    let rows = rows.iter().map(|row| CatalogRow {
        table: row.get(0),
        column: DiscoveredColumn {
            name: row.get(1),
            source_type: row.get(2),
            nullable: !row.get::<_, bool>(3),
            cursor_kind: cursor_kind(row.get(4)),
        },
        key_position: row.get::<_, Option<i32>>(5).and_then(|p| u64::try_from(p).ok()),
    });
    Ok(Catalog::from_rows(schema, rows, |name| {
        format!("{}.{}", spec_ident(schema), spec_ident(name))
    }))
}

/// The cursor kinds this source reads (`types::CursorType`), by `pg_type.typname`.
fn cursor_kind(type_name: &str) -> Option<CursorKind> {
    match type_name {
        "timestamp" | "timestamptz" => Some(CursorKind::Timestamp),
        "date" => Some(CursorKind::Date),
        "int2" | "int4" | "int8" => Some(CursorKind::Integer),
        _ => None,
    }
}

/// A name as the spec's `table` key reads it: plain lower-case names as they are, any other
/// quoted (the key folds unquoted parts to lower case).
fn spec_ident(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { name.to_string() } else { quote_ident(name) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_only_when_they_must() {
        assert_eq!(spec_ident("orders_2024"), "orders_2024");
        assert_eq!(spec_ident("Orders"), "\"Orders\"");
        assert_eq!(spec_ident("1st"), "\"1st\"");
        assert_eq!(cursor_kind("timestamptz"), Some(CursorKind::Timestamp));
        assert_eq!(cursor_kind("numeric"), None);
    }
}
