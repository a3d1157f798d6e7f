//! Key digests, key lists and key lookups for hard-delete detection (`backhaul_core::deletes`):
//! the canonical key text is `concat_ws(chr(31), k1::text, …)`, its hash the first 60 bits of
//! its `md5`; each answer is one query.

use backhaul_core::cursor::CursorRange;
use backhaul_core::deletes::KeyDigest;
use backhaul_core::{Error, Result};

use crate::catalog::PgTable;
use crate::connect::Conn;
use crate::sql::quote_ident;

/// The key columns of `table` named by `keys`, refused when one is not extracted.
fn key_columns<'a>(table: &'a PgTable, keys: &[String]) -> Result<Vec<&'a crate::catalog::PgColumn>> {
    keys.iter()
        .map(|k| {
            table
                .columns
                .iter()
                .find(|c| &c.name == k)
                .ok_or_else(|| Error::InvalidObject {
                    object: format!("table {}", table.display_name()),
                    message: format!("key column `{k}` is not a column the job reads"),
                })
        })
        .collect()
}

/// The canonical key text expression.
fn key_text(table: &PgTable, keys: &[String]) -> Result<String> {
    let parts: Vec<String> = key_columns(table, keys)?
        .iter()
        .map(|c| format!("{}::text", quote_ident(&c.name)))
        .collect();
    Ok(format!("concat_ws(chr(31), {})", parts.join(", ")))
}

/// Count and hash sum of the keys with cursor in `range`.
pub(crate) async fn digest(conn: &Conn, table: &PgTable, range: CursorRange, keys: &[String]) -> Result<KeyDigest> {
    let sql = format!(
        "SELECT count(*), coalesce(sum(('x' || substr(md5({}), 1, 15))::bit(60)::bigint), 0)::text FROM {} WHERE {}",
        key_text(table, keys)?,
        table.sql_name(),
        table.range_predicate(range)
    );
    let row = conn
        .client
        .query_one(&sql, &[])
        .await
        .map_err(|e| conn.error(&e, "key digest"))?;
    KeyDigest::from_sql(row.get(0), row.get::<_, &str>(1))
}

/// The keys with cursor in `range`.
pub(crate) async fn list(conn: &Conn, table: &PgTable, range: CursorRange, keys: &[String]) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        key_text(table, keys)?,
        table.sql_name(),
        table.range_predicate(range)
    );
    let rows = conn
        .client
        .query(&sql, &[])
        .await
        .map_err(|e| conn.error(&e, "list keys"))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Which of `candidates` exist. The candidates are split back into typed key values, so the
/// lookup uses the primary key's index.
pub(crate) async fn existing(
    conn: &Conn,
    table: &PgTable,
    keys: &[String],
    candidates: &[String],
) -> Result<Vec<String>> {
    let columns = key_columns(table, keys)?;
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let typed: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("split_part(candidate, chr(31), {})::{}", i + 1, c.source_type))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE ({}) IN (SELECT {} FROM unnest($1::text[]) AS candidate)",
        key_text(table, keys)?,
        table.sql_name(),
        names.join(", "),
        typed.join(", ")
    );
    let candidates: Vec<&str> = candidates.iter().map(String::as_str).collect();
    let rows = conn
        .client
        .query(&sql, &[&candidates])
        .await
        .map_err(|e| conn.error(&e, "look up keys"))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}
