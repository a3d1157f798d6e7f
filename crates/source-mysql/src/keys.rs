//! Key digests, key lists and key lookups for hard-delete detection (`backhaul_core::deletes`):
//! the canonical key text is `CONCAT_WS(CHAR(31), k1, …)`, its hash the first 60 bits of its
//! `MD5`; each answer is one query.

use backhaul_core::cursor::CursorRange;
use backhaul_core::deletes::{KEY_SEPARATOR, KeyDigest};
use backhaul_core::{Error, Result};
use mysql_async::Value;
use mysql_async::prelude::Queryable;

use crate::conn::Connector;
use crate::extract::{Bounds, bounds, predicate};
use crate::schema::{Table, quote, quote_table};

fn key_text(table: &Table, keys: &[String]) -> Result<String> {
    for k in keys {
        if !table.columns.iter().any(|c| &c.name == k) {
            return Err(Error::InvalidObject {
                object: format!("table {}.{}", table.database, table.name),
                message: format!("key column `{k}` is not a column the job reads"),
            });
        }
    }
    let parts: Vec<String> = keys.iter().map(|k| quote(k)).collect();
    Ok(format!("CONCAT_WS(CHAR(31 USING utf8mb4), {})", parts.join(", ")))
}

/// `WHERE` text and parameters of `range`, `None` when no row can be in it.
fn range_condition(table: &Table, range: CursorRange) -> Option<(String, Vec<Value>)> {
    let cursor = &table.columns[table.cursor];
    let bounds = bounds(table.description.cursor_kind, cursor.kind.cursor_step(), range);
    let condition = predicate(&cursor.name, &bounds)?;
    let params = match bounds {
        Bounds::Between(lower, Some(upper)) => vec![lower, upper],
        Bounds::Between(lower, None) => vec![lower],
        Bounds::Empty => return None,
    };
    Some((condition, params))
}

/// Runs `sql` with `params` on a connection of its own; rows as `T`.
async fn rows<T: mysql_async::prelude::FromRow + Send + 'static>(
    connector: &Connector,
    sql: String,
    params: Vec<Value>,
    doing: &str,
) -> Result<Vec<T>> {
    let mut conn = connector.connect().await?;
    let result = conn.exec::<T, _, _>(sql, params).await;
    let _ = conn.disconnect().await;
    result.map_err(|e| connector.classify(e, doing))
}

/// Count and hash sum of the keys with cursor in `range`.
pub(crate) async fn digest(
    connector: &Connector,
    table: &Table,
    range: CursorRange,
    keys: &[String],
) -> Result<KeyDigest> {
    let text = key_text(table, keys)?;
    let Some((condition, params)) = range_condition(table, range) else {
        return Ok(KeyDigest::default());
    };
    let sql = format!(
        "SELECT COUNT(*), CAST(COALESCE(SUM(CAST(CONV(SUBSTRING(MD5({text}), 1, 15), 16, 10) AS UNSIGNED)), 0) AS CHAR) \
         FROM {} WHERE {condition}",
        quote_table(&table.database, &table.name)
    );
    let found: Vec<(i64, String)> = rows(connector, sql, params, "key digest").await?;
    let (count, sum) = found.into_iter().next().unwrap_or((0, String::new()));
    KeyDigest::from_sql(count, &sum)
}

/// The keys with cursor in `range`.
pub(crate) async fn list(
    connector: &Connector,
    table: &Table,
    range: CursorRange,
    keys: &[String],
) -> Result<Vec<String>> {
    let text = key_text(table, keys)?;
    let Some((condition, params)) = range_condition(table, range) else {
        return Ok(Vec::new());
    };
    let sql = format!(
        "SELECT {text} FROM {} WHERE {condition}",
        quote_table(&table.database, &table.name)
    );
    rows(connector, sql, params, "list keys").await
}

/// Which of `candidates` exist, looked up by the key columns (the primary key's index).
pub(crate) async fn existing(
    connector: &Connector,
    table: &Table,
    keys: &[String],
    candidates: &[String],
) -> Result<Vec<String>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let text = key_text(table, keys)?;
    let names: Vec<String> = keys.iter().map(|k| quote(k)).collect();
    let tuple = format!("({})", vec!["?"; keys.len()].join(", "));
    let mut params = Vec::with_capacity(candidates.len() * keys.len());
    for candidate in candidates {
        let parts: Vec<&str> = candidate.split(KEY_SEPARATOR).collect();
        if parts.len() != keys.len() {
            continue; // not a key of this table: it cannot exist
        }
        params.extend(parts.into_iter().map(|p| Value::from(p.to_string())));
    }
    if params.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {text} FROM {} WHERE ({}) IN ({})",
        quote_table(&table.database, &table.name),
        names.join(", "),
        vec![tuple; params.len() / keys.len()].join(", ")
    );
    rows(connector, sql, params, "look up keys").await
}
