//! How rows spread over the cursor range, from the storage engine's own estimates: never a
//! `COUNT(*)` and never a scan.
//!
//! For each stretch of the range, `EXPLAIN SELECT 1 FROM t FORCE INDEX (cursor index) WHERE
//! cursor >= a AND cursor < b` reports the rows the optimizer expects. InnoDB answers that with
//! two "index dives" (root-to-leaf descents of the B-tree at both ends, counting or sampling
//! the leaf pages between), so each probe costs a few page reads however large the table.
//!
//! The range is first cut into [`INITIAL_BUCKETS`] stretches of equal width; then the
//! stretch holding the most rows is cut into four, again and again, until no stretch holds
//! more than 1/[`FINE_SHARE`] of the rows or [`MAX_PROBES`] probes were made. Rows piled up in
//! a short stretch of time (a skewed table) thus end up in many narrow buckets, and the planner,
//! which assumes rows spread evenly within a bucket, cuts chunks of even size. Refining the
//! heaviest stretch also undoes InnoDB's cap of an estimate at half the table.
//!
//! InnoDB never estimates a range as empty (it says 1 row); such a probe is checked with one
//! `SELECT 1 … LIMIT 1` on the index, so empty stretches count 0 rows.
//!
//! Bytes per row come from `information_schema.TABLES` (`AVG_ROW_LENGTH`), scaled by the
//! share of the declared column widths the job extracts.
//!
//! Physical order ([`physical_order`]): InnoDB stores rows in primary-key order, so a cursor
//! that leads the primary key is in physical order (correlation 1) and each chunk reads only
//! its own pages. For any other cursor MySQL keeps no statistic like PostgreSQL's
//! `pg_stats.correlation`, so the order is unknown and the planner keeps the byte target.
//!
//! Without an index led by the cursor (or on a view), the optimizer cannot estimate a range
//! without scanning; then the whole range is one bucket of `TABLE_ROWS` rows, the chunks are
//! even in width only, and each chunk scans the table: a warning says so.

use backhaul_core::Result;
use backhaul_core::chunking::{DensityBucket, PhysicalOrder};
use backhaul_core::cursor::CursorRange;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use crate::conn::Connector;
use crate::extract::{Bounds, bounds};
use crate::schema::{Table, quote, quote_table};
use crate::value_u64;

/// Equal-width stretches probed first.
pub(crate) const INITIAL_BUCKETS: i64 = 32;
/// Refinement stops once the heaviest stretch holds at most this share of the rows.
pub(crate) const FINE_SHARE: f64 = 64.0;
/// At most this many `EXPLAIN`s per call.
pub(crate) const MAX_PROBES: usize = 320;
/// Bytes per row when the table has no statistics yet.
const DEFAULT_ROW_BYTES: f64 = 100.0;

/// InnoDB's clustered page size; `DATA_LENGTH` over it is the table's pages.
const INNODB_PAGE_BYTES: f64 = 16_384.0;

/// See the module documentation: known only for an InnoDB cursor leading the primary key.
pub(crate) fn physical_order(table: &Table) -> Option<PhysicalOrder> {
    let clustered = table.stats.innodb && !table.stats.is_view && table.cursor_index.as_deref() == Some("PRIMARY");
    (clustered && table.stats.table_rows > 0).then(|| PhysicalOrder {
        correlation: 1.0,
        heap_pages: (table.stats.data_length as f64 / INNODB_PAGE_BYTES).max(1.0),
        table_rows: table.stats.table_rows as f64,
        block_scans: 1,
    })
}

/// See the module documentation.
pub(crate) async fn density(connector: &Connector, table: &Table, range: CursorRange) -> Result<Vec<DensityBucket>> {
    let row_bytes = row_bytes(table);
    let Some(index) = table.cursor_index.as_deref().filter(|_| !table.stats.is_view) else {
        tracing::warn!(
            table = %format!("{}.{}", table.database, table.name),
            cursor = %table.columns[table.cursor].name,
            "no index starts with the cursor column: chunks are planned by width only and every chunk scans the table"
        );
        if table.stats.table_rows == 0 {
            return Ok(Vec::new());
        }
        let rows = table.stats.table_rows as f64;
        return Ok(vec![DensityBucket {
            range,
            rows,
            bytes: rows * row_bytes,
        }]);
    };
    let mut conn = connector.connect().await?;
    let probe = Probe {
        connector,
        table,
        index,
        step: table.columns[table.cursor].kind.cursor_step(),
    };
    let result = probe.buckets(&mut conn, range).await;
    let _ = conn.disconnect().await;
    Ok(result?
        .into_iter()
        .map(|(range, rows)| DensityBucket {
            range,
            rows,
            bytes: rows * row_bytes,
        })
        .collect())
}

/// Estimated source bytes of one extracted row.
fn row_bytes(table: &Table) -> f64 {
    let s = table.stats;
    let whole_row = if s.avg_row_length > 0 {
        s.avg_row_length as f64
    } else if s.table_rows > 0 && s.data_length > 0 {
        s.data_length as f64 / s.table_rows as f64
    } else {
        DEFAULT_ROW_BYTES
    };
    (whole_row * table.width_share).max(1.0)
}

struct Probe<'a> {
    connector: &'a Connector,
    table: &'a Table,
    index: &'a str,
    step: i64,
}

impl Probe<'_> {
    async fn buckets(&self, conn: &mut Conn, range: CursorRange) -> Result<Vec<(CursorRange, f64)>> {
        let mut buckets = Vec::new();
        for part in split(range, INITIAL_BUCKETS, self.step) {
            buckets.push((part, self.rows(conn, part).await?));
        }
        let mut probes = buckets.len();
        while probes + 4 <= MAX_PROBES {
            let total: f64 = buckets.iter().map(|b| b.1).sum();
            let Some((at, &(heaviest, rows))) = buckets
                .iter()
                .enumerate()
                .filter(|(_, (r, _))| r.width() >= 2 * self.step)
                .max_by(|a, b| a.1.1.total_cmp(&b.1.1))
            else {
                break;
            };
            if rows <= total / FINE_SHARE || rows < 2.0 {
                break;
            }
            let mut parts = Vec::new();
            for part in split(heaviest, 4, self.step) {
                parts.push((part, self.rows(conn, part).await?));
                probes += 1;
            }
            buckets.splice(at..=at, parts);
        }
        Ok(buckets)
    }

    /// The optimizer's row estimate for one stretch.
    async fn rows(&self, conn: &mut Conn, range: CursorRange) -> Result<f64> {
        let cursor = &self.table.columns[self.table.cursor].name;
        let condition = match bounds(self.table.description.cursor_kind, self.step, range) {
            Bounds::Empty => return Ok(0.0),
            Bounds::Between(lo, Some(hi)) => format!(
                "{c} >= {} AND {c} < {}",
                lo.as_sql(true),
                hi.as_sql(true),
                c = quote(cursor)
            ),
            Bounds::Between(lo, None) => format!("{} >= {}", quote(cursor), lo.as_sql(true)),
        };
        let from = format!(
            "{} FORCE INDEX ({}) WHERE {condition}",
            quote_table(&self.table.database, &self.table.name),
            quote(self.index)
        );
        let doing = format!("estimating rows of {}.{}", self.table.database, self.table.name);
        let plan: Vec<mysql_async::Row> = conn
            .query(format!("EXPLAIN SELECT 1 FROM {from}"))
            .await
            .map_err(|e| self.connector.classify(e, &doing))?;
        // One row for a one-table SELECT; `rows` is NULL when the optimizer proved the range
        // empty.
        let rows = plan
            .iter()
            .filter_map(|row| {
                let at = row.columns_ref().iter().position(|c| c.name_str() == "rows")?;
                row.as_ref(at).and_then(value_u64)
            })
            .max()
            .unwrap_or(0);
        if rows > 1 {
            return Ok(rows as f64);
        }
        // InnoDB never estimates 0 (it says 1 for an empty range); one index lookup tells.
        let any: Option<u8> = conn
            .query_first(format!("SELECT 1 FROM {from} LIMIT 1"))
            .await
            .map_err(|e| self.connector.classify(e, &doing))?;
        Ok(if any.is_some() { 1.0 } else { 0.0 })
    }
}

/// `range` cut into up to `parts` pieces of equal width, each at least `step` wide.
fn split(range: CursorRange, parts: i64, step: i64) -> Vec<CursorRange> {
    let width = range.width();
    let parts = parts.min(width / step.max(1)).max(1);
    let mut out = Vec::with_capacity(parts as usize);
    let mut start = range.from;
    for i in 1..=parts {
        let end = if i == parts {
            range.to
        } else {
            range.from + ((width as i128 * i as i128) / parts as i128) as i64
        };
        if end > start {
            out.push(CursorRange::new(start, end));
            start = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_the_range() {
        let r = CursorRange::new(-7, 100);
        let parts = split(r, 4, 1);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0].from, -7);
        assert_eq!(parts[3].to, 100);
        for w in parts.windows(2) {
            assert_eq!(w[0].to, w[1].from);
        }
        assert_eq!(split(CursorRange::new(0, 3), 32, 1).len(), 3);
        assert_eq!(split(CursorRange::new(0, 3_000_000), 32, 1_000_000).len(), 3);
        assert_eq!(split(CursorRange::new(0, 1), 32, 1_000_000).len(), 1);
        let wide = split(CursorRange::new(i64::MIN / 2, i64::MAX / 2), 32, 1);
        assert_eq!(wide.len(), 32);
    }
}
