//! MySQL and MariaDB source: one streaming (unbuffered) prepared-statement query per chunk,
//! decoded into Arrow without loss. docs/sources/mysql.md documents keys, types and behaviour.
//!
//! - [`MysqlSource::open`] reads the password (env or file) and keeps the settings; it does not
//!   connect.
//! - [`Source::describe`] reads `information_schema` once per source and maps every column to
//!   an exact Arrow type ([`schema`]).
//! - [`Source::prepare`] refuses a table with NULL (or zero-date) cursors (`null_cursor =
//!   "fail"`), with one indexed probe; skipped when the column is NOT NULL and no date.
//! - [`Source::density`] estimates rows per stretch of the range with `EXPLAIN` index dives
//!   (`density`), never counting or scanning.
//! - [`Source::max_cursor`] reads `max(cursor)`: one index lookup when an index starts with
//!   the cursor, so a sync can tell when the cursor went backwards.
//! - [`Source::extract`] runs `SELECT cols FROM t WHERE cursor >= ? AND cursor < ?` in a
//!   `REPEATABLE READ` consistent-snapshot read-only transaction and streams it
//!   (`extract`).

mod conn;
mod decode;
mod density;
mod discover;
mod extract;
mod keys;
pub mod schema;
pub mod spec;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use backhaul_core::chunking::{DensityBucket, PhysicalOrder};
use backhaul_core::connector::{BatchStream, Source, TableDescription};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::deletes::KeyDigest;
use backhaul_core::{Error, Result};
use futures::future::BoxFuture;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
pub use spec::{MysqlKind, MysqlSourceSpec};

use crate::conn::Connector;
use crate::schema::{ColumnInfo, ResolveInput, Table, TableStats, is_json_check, quote, quote_table};

/// A MySQL or MariaDB table. Cheap to share: every operation opens its own connection.
pub struct MysqlSource {
    spec: MysqlSourceSpec,
    connector: Connector,
    table: tokio::sync::OnceCell<Arc<Table>>,
    cursor_checked: AtomicBool,
}

impl fmt::Debug for MysqlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connector prints the password as `***`; the spec only names where it comes from.
        f.debug_struct("MysqlSource")
            .field("table", &self.spec.connection.table)
            .field("cursor", &self.spec.connection.cursor)
            .field("connector", &self.connector)
            .finish()
    }
}

impl MysqlSource {
    /// Builds the source from its spec section; reads the password (environment or file) but
    /// does not connect.
    pub fn open(spec: &MysqlSourceSpec) -> Result<Self> {
        Ok(MysqlSource {
            spec: spec.clone(),
            connector: Connector::new(spec)?,
            table: tokio::sync::OnceCell::new(),
            cursor_checked: AtomicBool::new(false),
        })
    }

    /// The table as described, read once.
    async fn table(&self) -> Result<Arc<Table>> {
        self.table.get_or_try_init(|| self.load_table()).await.cloned()
    }

    async fn load_table(&self) -> Result<Arc<Table>> {
        let mut conn = self.connector.connect().await?;
        let loaded = self.read_catalog(&mut conn).await;
        let _ = conn.disconnect().await;
        loaded.map(Arc::new)
    }

    async fn read_catalog(&self, conn: &mut Conn) -> Result<Table> {
        let (database, name) = self.spec.qualified_table();
        let shown = format!("{database}.{name}");
        let fail = |e| self.connector.classify(e, &format!("reading the catalog of {shown}"));
        let stats: Option<Row> = conn
            .exec_first(
                "SELECT TABLE_TYPE, TABLE_ROWS, AVG_ROW_LENGTH, DATA_LENGTH, ENGINE FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (database, name),
            )
            .await
            .map_err(fail)?;
        let Some(stats) = stats else {
            return Err(Error::InvalidObject {
                object: format!("mysql table {shown}"),
                message: format!(
                    "no such table at {}, or user `{}` has no privilege on it",
                    self.connector.endpoint(),
                    self.spec.connection.user
                ),
            });
        };
        let stats = TableStats {
            is_view: value_text(stats.as_ref(0)).is_some_and(|t| t.eq_ignore_ascii_case("VIEW")),
            table_rows: stats.as_ref(1).and_then(value_u64).unwrap_or(0),
            avg_row_length: stats.as_ref(2).and_then(value_u64).unwrap_or(0),
            data_length: stats.as_ref(3).and_then(value_u64).unwrap_or(0),
            innodb: value_text(stats.as_ref(4)).is_some_and(|e| e.eq_ignore_ascii_case("InnoDB")),
        };
        let version: Option<String> = conn.query_first("SELECT VERSION()").await.map_err(fail)?;
        let mariadb = version.unwrap_or_default().to_ascii_lowercase().contains("mariadb");
        let json_checked: Vec<String> = if mariadb {
            let checks: Vec<Row> = conn
                .exec(
                    "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                     WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
                    (database, name),
                )
                .await
                .map_err(fail)?;
            checks.iter().filter_map(|r| value_text(r.as_ref(1))).collect()
        } else {
            Vec::new()
        };
        let rows: Vec<Row> = conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE, \
                 DATETIME_PRECISION FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
                (database, name),
            )
            .await
            .map_err(fail)?;
        let columns: Vec<ColumnInfo> = rows
            .iter()
            .map(|r| {
                let name = value_text(r.as_ref(0)).unwrap_or_default();
                let data_type = value_text(r.as_ref(1)).unwrap_or_default().to_ascii_lowercase();
                ColumnInfo {
                    json_check: json_checked.iter().any(|clause| is_json_check(clause, &name)),
                    name,
                    data_type,
                    column_type: value_text(r.as_ref(2)).unwrap_or_default().to_ascii_lowercase(),
                    nullable: value_text(r.as_ref(3)).is_some_and(|n| n.eq_ignore_ascii_case("YES")),
                    numeric_precision: r.as_ref(4).and_then(value_u64),
                    numeric_scale: r.as_ref(5).and_then(value_u64),
                    datetime_precision: r.as_ref(6).and_then(value_u64),
                }
            })
            .collect();
        let key_columns: Vec<String> = conn
            .exec::<Row, _, _>(
                "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
                (database, name),
            )
            .await
            .map_err(fail)?
            .iter()
            .filter_map(|r| value_text(r.as_ref(0)))
            .collect();
        let cursor_name = columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(&self.spec.connection.cursor))
            .map(|c| c.name.clone())
            .unwrap_or_else(|| self.spec.connection.cursor.clone());
        // Prefer the primary key, then unique indexes: their entries are what the rows are.
        let cursor_index: Option<String> = conn
            .exec_first::<Row, _, _>(
                "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 AND SEQ_IN_INDEX = 1 AND COLUMN_NAME = ? ORDER BY INDEX_NAME = 'PRIMARY' DESC, NON_UNIQUE, INDEX_NAME \
                 LIMIT 1",
                (database, name, cursor_name.as_str()),
            )
            .await
            .map_err(fail)?
            .and_then(|r| value_text(r.as_ref(0)));
        schema::resolve(
            &columns,
            ResolveInput {
                database,
                table: name,
                cursor: &self.spec.connection.cursor,
                selected: self.spec.connection.columns.as_deref(),
                key_columns,
                cursor_index,
                stats,
                zero_dates: self.spec.zero_dates,
                unsigned_bigint: self.spec.unsigned_bigint,
            },
        )
    }

    /// `null_cursor = "fail"`: refuses the table when a row's cursor is NULL or a zero date
    /// (which sorts below every date and so is in no range either).
    async fn check_cursor_values(&self) -> Result<()> {
        if self.cursor_checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let table = self.table().await?;
        let cursor = &table.columns[table.cursor];
        let c = quote(&cursor.name);
        let mut conditions = Vec::new();
        if !table.cursor_not_null {
            conditions.push(format!("{c} IS NULL"));
        }
        if cursor.kind.is_calendar() {
            conditions.push(format!("{c} < '0000-01-01'"));
        }
        if !conditions.is_empty() {
            let sql = format!(
                "SELECT 1 FROM {} WHERE {} LIMIT 1",
                quote_table(&table.database, &table.name),
                conditions.join(" OR ")
            );
            let mut conn = self.connector.connect().await?;
            let found: Result<Option<Value>> = conn
                .query_first(sql)
                .await
                .map_err(|e| self.connector.classify(e, "looking for NULL cursor values"));
            let _ = conn.disconnect().await;
            if found?.is_some() {
                let zero = if cursor.kind.is_calendar() {
                    " (or a zero date such as 0000-00-00)"
                } else {
                    ""
                };
                return Err(Error::InvalidObject {
                    object: format!("column {}.{}.{}", table.database, table.name, cursor.name),
                    message: format!(
                        "some rows have a NULL cursor{zero}; such rows are in no range and would never be loaded \
                         (null_cursor = \"fail\"). Give them a cursor value, or choose a NOT NULL cursor column"
                    ),
                });
            }
        }
        self.cursor_checked.store(true, Ordering::Relaxed);
        Ok(())
    }
}

impl Source for MysqlSource {
    fn describe(&self) -> BoxFuture<'_, Result<TableDescription>> {
        Box::pin(async move { Ok(self.table().await?.description.clone()) })
    }

    fn prepare(&self, _range: CursorRange) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.check_cursor_values())
    }

    fn density(&self, range: CursorRange) -> BoxFuture<'_, Result<Vec<DensityBucket>>> {
        Box::pin(async move {
            let table = self.table().await?;
            density::density(&self.connector, &table, range).await
        })
    }

    fn physical_order(&self) -> BoxFuture<'_, Result<Option<PhysicalOrder>>> {
        Box::pin(async move { Ok(density::physical_order(&*self.table().await?)) })
    }

    fn supports_delete_detection(&self) -> bool {
        true
    }

    fn key_digest<'a>(&'a self, range: CursorRange, keys: &'a [String]) -> BoxFuture<'a, Result<KeyDigest>> {
        Box::pin(async move { keys::digest(&self.connector, &*self.table().await?, range, keys).await })
    }

    fn list_keys<'a>(&'a self, range: CursorRange, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move { keys::list(&self.connector, &*self.table().await?, range, keys).await })
    }

    fn existing_keys<'a>(&'a self, keys: &'a [String], candidates: &'a [String]) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move { keys::existing(&self.connector, &*self.table().await?, keys, candidates).await })
    }

    fn max_cursor(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async move {
            let table = self.table().await?;
            let c = format!("max({})", quote(&table.columns[table.cursor].name));
            // In cursor units, computed by the server; the session zone is UTC (conn.rs), so
            // TIMESTAMP and DATETIME values count from the same epoch as extracted ones.
            let units = match table.description.cursor_kind {
                CursorKind::Timestamp => format!("TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {c})"),
                CursorKind::Date => format!("DATEDIFF({c}, '1970-01-01')"),
                CursorKind::Integer => format!("CAST({c} AS SIGNED)"),
            };
            let sql = format!("SELECT {units} FROM {}", quote_table(&table.database, &table.name));
            let mut conn = self.connector.connect().await?;
            let max: Result<Option<Option<i64>>> = conn
                .query_first(sql)
                .await
                .map_err(|e| self.connector.classify(e, "reading the cursor maximum"));
            let _ = conn.disconnect().await;
            Ok(max?.flatten())
        })
    }

    fn extract(&self, range: CursorRange, batch_rows: usize) -> BoxFuture<'_, Result<BatchStream>> {
        Box::pin(async move {
            let table = self.table().await?;
            extract::extract(&self.connector, table, range, batch_rows, self.spec.zero_dates).await
        })
    }
}

/// A text value of a catalog row.
fn value_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        _ => None,
    }
}

/// A non-negative number of a catalog or `EXPLAIN` row, whichever protocol sent it.
pub(crate) fn value_u64(value: &Value) -> Option<u64> {
    match value {
        Value::UInt(u) => Some(*u),
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        Value::Double(d) if *d >= 0.0 => Some(*d as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
