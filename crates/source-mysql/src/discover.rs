//! `backhaul discover`: the tables of one database with their columns, primary keys and cursor
//! candidates, from `information_schema` in one query. Which columns can be a cursor follows
//! the same type mapping as `describe` ([`kind_of`]).

use arrow::datatypes::DataType;
use backhaul_core::Result;
use backhaul_core::cursor::CursorKind;
use backhaul_core::discover::{Catalog, CatalogRow, DiscoveredColumn};
use mysql_async::Row;
use mysql_async::prelude::Queryable;

use crate::conn::Connector;
use crate::schema::{ColumnInfo, kind_of};
use crate::spec::UnsignedBigintMapping;
use crate::{value_text, value_u64};

const CATALOG_SQL: &str = "\
SELECT c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, c.IS_NULLABLE, c.NUMERIC_PRECISION, \
       c.NUMERIC_SCALE, c.DATETIME_PRECISION, s.SEQ_IN_INDEX \
  FROM information_schema.COLUMNS c \
  LEFT JOIN information_schema.STATISTICS s \
    ON s.TABLE_SCHEMA = c.TABLE_SCHEMA AND s.TABLE_NAME = c.TABLE_NAME \
   AND s.COLUMN_NAME = c.COLUMN_NAME AND s.INDEX_NAME = 'PRIMARY' \
 WHERE c.TABLE_SCHEMA = ? \
 ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION";

/// Reads the catalog of `database`; tables of the connection's own `home` database are named
/// unqualified, others `database.table`.
pub(crate) async fn discover(connector: &Connector, database: &str, home: &str) -> Result<Catalog> {
    let mut conn = connector.connect().await?;
    let rows: std::result::Result<Vec<Row>, _> = conn.exec(CATALOG_SQL, (database,)).await;
    let _ = conn.disconnect().await;
    let rows = rows.map_err(|e| connector.classify(e, &format!("reading the catalog of database {database}")))?;
    let rows = rows.iter().map(|row| {
        let table = value_text(row.as_ref(0)).unwrap_or_default();
        let info = ColumnInfo {
            name: value_text(row.as_ref(1)).unwrap_or_default(),
            data_type: value_text(row.as_ref(2)).unwrap_or_default().to_ascii_lowercase(),
            column_type: value_text(row.as_ref(3)).unwrap_or_default().to_ascii_lowercase(),
            nullable: value_text(row.as_ref(4)).is_some_and(|n| n.eq_ignore_ascii_case("YES")),
            numeric_precision: row.as_ref(5).and_then(value_u64),
            numeric_scale: row.as_ref(6).and_then(value_u64),
            datetime_precision: row.as_ref(7).and_then(value_u64),
            json_check: false,
        };
        let cursor_kind = cursor_kind(&info, &table);
        CatalogRow {
            table,
            column: DiscoveredColumn {
                name: info.name,
                source_type: info.column_type,
                nullable: info.nullable,
                cursor_kind,
            },
            key_position: row.as_ref(8).and_then(value_u64),
        }
    });
    Ok(Catalog::from_rows(database, rows, |name| {
        if database == home {
            name.to_string()
        } else {
            format!("{database}.{name}")
        }
    }))
}

/// The cursor a column could be, by the type `describe` would read it as.
fn cursor_kind(info: &ColumnInfo, table: &str) -> Option<CursorKind> {
    let arrow: DataType = kind_of(info, table, UnsignedBigintMapping::default())
        .ok()?
        .arrow_type();
    CursorKind::of(&arrow)
}
