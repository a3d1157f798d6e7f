//! Reading one chunk as parallel block-range scans in one snapshot.
//!
//! When the cursor does not follow the heap's order, a chunk's range query reads most pages
//! of the table whatever its width, so two chunks read the heap twice. Instead the planner
//! makes fewer chunks (`PhysicalOrder::block_scans`), and a chunk that PostgreSQL would read
//! with a sequential scan is read by `source.parallel_scans` connections, each a TID range
//! scan (`ctid >= '(b,0)' AND ctid < '(e,0)'`, PostgreSQL 14+) over its share of the blocks,
//! still filtered by the chunk's cursor range. Each block is read once, by one connection.
//!
//! The chunk stays exactly what one query would return: the first connection exports its
//! snapshot (`pg_export_snapshot`) and the scans import it (`SET TRANSACTION SNAPSHOT`), so
//! together they see the one consistent state a single `COPY` would, every visible row version
//! has one `ctid`, and the last scan has no upper block bound (pages appended later are
//! invisible to the snapshot anyway). A replay reads the chunk's range again in a new snapshot,
//! split or not, exactly like any other chunk.

use backhaul_core::Result;

use crate::catalog::{self, PgTable};
use crate::connect::Conn;
use crate::extract::Chunk;

/// TID range scans need PostgreSQL 14 (`server_version_num`); before, a `ctid` range is a
/// filter over a sequential scan and splitting would read the heap once per scan.
const MIN_SERVER_VERSION: i32 = 140_000;

/// A scan's share below this many blocks (8 MiB of 8 KiB pages) is not worth a connection.
const MIN_BLOCKS_PER_SCAN: i64 = 1024;

/// Which blocks one scan reads: `[from, to)`, `to` open for the last scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocks {
    pub from: i64,
    pub to: Option<i64>,
}

impl Blocks {
    /// The `ctid` predicate, `None` for the whole table.
    pub(crate) fn predicate(self) -> Option<String> {
        match (self.from, self.to) {
            (0, None) => None,
            (0, Some(to)) => Some(format!("ctid < '({to},0)'::tid")),
            (from, None) => Some(format!("ctid >= '({from},0)'::tid")),
            (from, Some(to)) => Some(format!("ctid >= '({from},0)'::tid AND ctid < '({to},0)'::tid")),
        }
    }
}

/// One scan of a chunk: the snapshot it imports and its blocks; `None`s for a plain chunk.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scan {
    pub snapshot: Option<String>,
    pub blocks: Option<Blocks>,
}

/// An exported snapshot and the scans that share it. The exporting transaction must stay
/// open until every scan has imported the snapshot: [`Split::release`] ends it.
pub(crate) struct Split {
    exporter: Conn,
    pub scans: Vec<Scan>,
}

impl Split {
    /// Ends the exporting transaction, once every scan has started its `COPY`.
    pub(crate) async fn release(self) -> Result<()> {
        self.exporter
            .client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| self.exporter.error(&e, "end the exported snapshot"))
    }
}

/// Whether this server can read `table` by block ranges: a plain table on PostgreSQL 14+.
pub(crate) async fn supported(conn: &Conn, table: &PgTable) -> Result<bool> {
    if table.relkind != b'r' {
        return Ok(false);
    }
    Ok(server_version(conn).await? >= MIN_SERVER_VERSION)
}

async fn server_version(conn: &Conn) -> Result<i32> {
    let rows = conn
        .client
        .simple_query("SHOW server_version_num")
        .await
        .map_err(|e| conn.error(&e, "read server_version_num"))?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .unwrap_or(0))
}

/// Decides how `chunk` is read: `Some` when it has more than one scan to give, the server and
/// table support block ranges, and PostgreSQL plans the chunk's query as a sequential scan (it
/// would read every page anyway); then the snapshot is exported and the blocks divided.
pub(crate) async fn split(chunk: &Chunk) -> Result<Option<Split>> {
    if chunk.scans <= 1 {
        return Ok(None);
    }
    let conn = chunk.connector.connect().await?;
    conn.client
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off",
        )
        .await
        .map_err(|e| conn.error(&e, "begin"))?;
    let table = catalog::describe(&conn, &chunk.spec, &chunk.policies).await?;
    if !supported(&conn, &table).await? || !plans_sequential_scan(&conn, &table, chunk).await? {
        return Ok(None);
    }
    // A server that cannot export snapshots (some managed or standby setups) still reads the
    // chunk, with one scan; the connection and its failed transaction are dropped.
    let Ok(row) = conn
        .client
        .query_one(
            "SELECT pg_catalog.pg_export_snapshot(), \
                    pg_catalog.pg_relation_size($1::oid) / pg_catalog.current_setting('block_size')::int8",
            &[&table.oid],
        )
        .await
    else {
        return Ok(None);
    };
    let (snapshot, pages): (String, i64) = (row.get(0), row.get(1));
    let scans = divide(pages, chunk.scans);
    if scans.len() <= 1 {
        return Ok(None);
    }
    Ok(Some(Split {
        exporter: conn,
        scans: scans
            .into_iter()
            .map(|blocks| Scan {
                snapshot: Some(snapshot.clone()),
                blocks: Some(blocks),
            })
            .collect(),
    }))
}

/// Whether PostgreSQL's own plan for the chunk's query is a sequential scan of the table.
async fn plans_sequential_scan(conn: &Conn, table: &PgTable, chunk: &Chunk) -> Result<bool> {
    let sql = format!("EXPLAIN (FORMAT JSON) {}", table.select_sql(chunk.range, None));
    let rows = conn
        .client
        .simple_query(&sql)
        .await
        .map_err(|e| conn.error(&e, "plan the chunk's query"))?;
    let text = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    let plan: Option<serde_json::Value> = text.and_then(|t| serde_json::from_str(&t).ok());
    Ok(plan
        .as_ref()
        .and_then(|p| p.get(0)?.get("Plan")?.get("Node Type")?.as_str())
        .is_some_and(|node| node == "Seq Scan"))
}

/// How many scans a whole-table chunk of a table of `pages` blocks gets, for the planner.
pub(crate) fn scans_for(pages: f64, scans: usize) -> usize {
    divide(pages as i64, scans).len()
}

/// `pages` blocks in at most `scans` ranges of at least [`MIN_BLOCKS_PER_SCAN`]; the last one
/// open-ended.
fn divide(pages: i64, scans: usize) -> Vec<Blocks> {
    let n = (pages / MIN_BLOCKS_PER_SCAN).clamp(1, scans.max(1) as i64);
    (0..n)
        .map(|i| Blocks {
            from: pages * i / n,
            to: (i + 1 < n).then(|| pages * (i + 1) / n),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_divided_evenly_and_the_last_range_is_open() {
        let scans = divide(112_000, 2);
        assert_eq!(
            scans,
            vec![
                Blocks {
                    from: 0,
                    to: Some(56_000)
                },
                Blocks { from: 56_000, to: None }
            ]
        );
        assert_eq!(scans[0].predicate().unwrap(), "ctid < '(56000,0)'::tid");
        assert_eq!(scans[1].predicate().unwrap(), "ctid >= '(56000,0)'::tid");
        let three = divide(100_000, 3);
        assert_eq!(
            three[1].predicate().unwrap(),
            "ctid >= '(33333,0)'::tid AND ctid < '(66666,0)'::tid"
        );
        // Small tables are not split: each scan gets at least MIN_BLOCKS_PER_SCAN blocks.
        assert_eq!(divide(1_000, 4).len(), 1);
        assert_eq!(divide(2_500, 4).len(), 2);
        assert_eq!(scans_for(112_000.0, 2), 2);
        assert_eq!(scans_for(1_500.0, 2), 1);
        assert_eq!(divide(0, 2), vec![Blocks { from: 0, to: None }]);
        assert_eq!(Blocks { from: 0, to: None }.predicate(), None);
    }
}
