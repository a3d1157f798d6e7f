//! How rows spread over the cursor range, from catalog statistics; never `COUNT(*)`.
//!
//! 1. Table size: `pg_class.reltuples` (summed over partitions), scaled by the current size
//!    over `relpages` the way the planner does, so growth since the last ANALYZE counts.
//! 2. Shape: `pg_stats` of the cursor column. Histogram buckets are equi-depth: each holds the
//!    same share of the non-NULL, non-most-common rows, so narrow buckets mean dense data; the
//!    most common values add their own rows at their exact value.
//! 3. Rows added since ANALYZE usually sit past the histogram's end (append-only tables). When
//!    the cursor is indexed, one index probe reads the current maximum and the extra rows are
//!    spread between the histogram's end and it.
//! 4. No statistics (never analyzed, or no `pg_stats` row): a `TABLESAMPLE SYSTEM` sample of
//!    about [`SAMPLE_PAGES`] pages of the range (whole table when smaller), reduced to
//!    percentiles on the server, with `REPEATABLE` so the same table plans the same way.
//! 5. Views have neither: no buckets, and the planner makes one chunk (use fixed chunking).
//!
//! Bytes per row: the sum of `avg_width × (1 − null_frac)` of the extracted columns, else the
//! table's size per row.
//!
//! Physical order ([`physical_order`]): `pg_stats.correlation` of the cursor column (the
//! parent's inherited statistics for a partitioned table) with the current pages and rows as
//! above. A cursor uncorrelated with physical order makes each chunk's range query a bitmap
//! heap scan over most pages; the planner reads this to keep the heap read about once.

use backhaul_core::Result;
use backhaul_core::chunking::{DensityBucket, PhysicalOrder};
use backhaul_core::cursor::CursorRange;

use crate::catalog::PgTable;
use crate::connect::Conn;
use crate::sql::quote_ident;

/// Pages a sample reads when there are no statistics.
const SAMPLE_PAGES: f64 = 2000.0;
/// Percentiles the sample is reduced to.
const SAMPLE_QUANTILES: u32 = 100;

/// Estimated rows over one stretch of cursor values; stretches may overlap until
/// [`partition`] spreads them over disjoint buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Piece {
    pub from: i64,
    pub to: i64,
    pub rows: f64,
}

struct SizeStats {
    /// Rows at the last ANALYZE/VACUUM.
    reltuples: f64,
    /// Whether some relation was never analyzed or vacuumed.
    never_analyzed: bool,
    relpages: i64,
    bytes: i64,
    block_size: i64,
}

struct ColumnStats {
    null_frac: f64,
    histogram: Vec<i64>,
    mcv: Vec<i64>,
    mcv_freq: Vec<f64>,
}

pub(crate) async fn density(conn: &Conn, table: &PgTable, range: CursorRange) -> Result<Vec<DensityBucket>> {
    if !matches!(table.relkind, b'r' | b'p' | b'm') {
        return Ok(Vec::new());
    }
    let size = size_stats(conn, table).await?;
    let pages_now = size.bytes as f64 / size.block_size.max(1) as f64;
    if pages_now <= 0.0 {
        return Ok(Vec::new()); // empty table
    }
    let rows_now = if size.relpages > 0 && size.reltuples > 0.0 {
        size.reltuples / size.relpages as f64 * pages_now
    } else {
        size.reltuples
    };
    let column = if size.never_analyzed || size.reltuples <= 0.0 {
        None
    } else {
        column_stats(conn, table).await?
    };
    let Some(column) = column.filter(|c| c.histogram.len() >= 2 || !c.mcv.is_empty()) else {
        return sample(conn, table, range, pages_now).await;
    };
    let row_bytes = match row_width(conn, table).await? {
        Some(w) => w,
        None => size.bytes as f64 / rows_now.max(1.0),
    };

    // Rows the statistics describe, and rows added since, placed after the histogram when the
    // current maximum is known to lie beyond it.
    let described_max = column
        .histogram
        .last()
        .copied()
        .into_iter()
        .chain(column.mcv.iter().copied())
        .max();
    let grown = rows_now - size.reltuples;
    let mut base_rows = rows_now;
    let mut pieces = Vec::new();
    if grown > size.reltuples * 0.02
        && let Some(stats_max) = described_max
        && let Some(max) = current_max(conn, table).await?
        && max > stats_max
    {
        base_rows = size.reltuples;
        pieces.push(Piece {
            from: stats_max + 1,
            to: max + 1,
            rows: grown,
        });
    }
    pieces.extend(stats_pieces(&column, base_rows));
    Ok(partition(&pieces, range, row_bytes))
}

/// How the cursor follows the heap's order; `None` for views, empty tables and columns
/// without statistics (never analyzed).
pub(crate) async fn physical_order(conn: &Conn, table: &PgTable) -> Result<Option<PhysicalOrder>> {
    if !matches!(table.relkind, b'r' | b'p' | b'm') {
        return Ok(None);
    }
    let size = size_stats(conn, table).await?;
    let pages_now = size.bytes as f64 / size.block_size.max(1) as f64;
    if pages_now <= 0.0 || size.never_analyzed || size.reltuples <= 0.0 {
        return Ok(None);
    }
    let rows_now = if size.relpages > 0 {
        size.reltuples / size.relpages as f64 * pages_now
    } else {
        size.reltuples
    };
    let correlation: Option<f32> = conn
        .client
        .query(
            "SELECT s.correlation FROM pg_catalog.pg_stats s \
             WHERE s.schemaname = $1 AND s.tablename = $2 AND s.attname = $3 \
             ORDER BY s.inherited DESC LIMIT 1",
            &[&table.schema, &table.name, &table.cursor_name()],
        )
        .await
        .map_err(|e| conn.error(&e, "read cursor correlation"))?
        .first()
        .and_then(|r| r.get(0));
    Ok(correlation.map(|c| PhysicalOrder {
        correlation: f64::from(c),
        heap_pages: pages_now,
        table_rows: rows_now,
        block_scans: 1,
    }))
}

/// Histogram and most-common-value pieces for `rows` rows in total.
fn stats_pieces(column: &ColumnStats, rows: f64) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mcv_share: f64 = column.mcv_freq.iter().sum();
    for (v, f) in column.mcv.iter().zip(&column.mcv_freq) {
        pieces.push(Piece {
            from: *v,
            to: v.saturating_add(1),
            rows: rows * f,
        });
    }
    let h = &column.histogram;
    if h.len() >= 2 {
        let share = (1.0 - column.null_frac - mcv_share).max(0.0);
        let per_bucket = rows * share / (h.len() - 1) as f64;
        for i in 0..h.len() - 1 {
            let last = i == h.len() - 2;
            // The histogram's last bound is the maximum itself: include it.
            let to = if last { h[i + 1].saturating_add(1) } else { h[i + 1] };
            pieces.push(Piece {
                from: h[i],
                to: to.max(h[i].saturating_add(1)),
                rows: per_bucket,
            });
        }
    }
    pieces
}

/// Spreads possibly overlapping pieces (rows even within each) over disjoint buckets inside
/// `range`; stretches without rows are left out.
pub(crate) fn partition(pieces: &[Piece], range: CursorRange, row_bytes: f64) -> Vec<DensityBucket> {
    let mut points: Vec<i64> = vec![range.from, range.to];
    for p in pieces {
        for x in [p.from, p.to] {
            if x > range.from && x < range.to {
                points.push(x);
            }
        }
    }
    points.sort_unstable();
    points.dedup();
    let mut buckets = Vec::new();
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        let rows: f64 = pieces
            .iter()
            .filter(|p| p.from < b && a < p.to && p.to > p.from)
            .map(|p| {
                let overlap = (p.to.min(b) as f64) - (p.from.max(a) as f64);
                p.rows * overlap / (p.to as f64 - p.from as f64)
            })
            .sum();
        if rows > 0.0 && rows.is_finite() {
            buckets.push(DensityBucket {
                range: CursorRange::new(a, b),
                rows,
                bytes: rows * row_bytes,
            });
        }
    }
    buckets
}

async fn size_stats(conn: &Conn, table: &PgTable) -> Result<SizeStats> {
    let row = conn
        .client
        .query_one(
            "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::float8, coalesce(bool_or(c.reltuples < 0), false), \
                    coalesce(sum(c.relpages), 0)::int8, \
                    coalesce(sum(pg_catalog.pg_relation_size(c.oid)), 0)::int8, \
                    pg_catalog.current_setting('block_size')::int8 \
             FROM pg_catalog.pg_class c \
             WHERE c.relkind IN ('r', 'm') \
               AND (c.oid = $1 OR c.oid IN (SELECT relid FROM pg_catalog.pg_partition_tree($1)))",
            &[&table.oid],
        )
        .await
        .map_err(|e| conn.error(&e, "read table statistics"))?;
    Ok(SizeStats {
        reltuples: row.get(0),
        never_analyzed: row.get(1),
        relpages: row.get(2),
        bytes: row.get(3),
        block_size: row.get(4),
    })
}

async fn column_stats(conn: &Conn, table: &PgTable) -> Result<Option<ColumnStats>> {
    let ty = table.cursor_type.sql_type();
    let units = |v: &str| table.cursor_type.to_units_sql(v);
    let finite = |v: &str| table.cursor_type.finite_sql(v);
    // anyarray statistics are cast through text to the cursor's type, then to cursor units;
    // infinite values lie outside every range and are left out.
    let sql = format!(
        "SELECT s.null_frac::float8, \
           ARRAY(SELECT {hb} FROM unnest(s.histogram_bounds::text::{ty}[]) WITH ORDINALITY AS u(b, o) \
                 WHERE {hf} ORDER BY o), \
           ARRAY(SELECT {mv} FROM unnest(s.most_common_vals::text::{ty}[], s.most_common_freqs) AS u(v, f) \
                 WHERE {mf} ORDER BY v), \
           ARRAY(SELECT f::float8 FROM unnest(s.most_common_vals::text::{ty}[], s.most_common_freqs) AS u(v, f) \
                 WHERE {mf} ORDER BY v) \
         FROM pg_catalog.pg_stats s \
         WHERE s.schemaname = $1 AND s.tablename = $2 AND s.attname = $3 \
         ORDER BY s.inherited DESC LIMIT 1",
        hb = units("b"),
        hf = finite("b"),
        mv = units("v"),
        mf = finite("v"),
    );
    let rows = conn
        .client
        .query(&sql, &[&table.schema, &table.name, &table.cursor_name()])
        .await
        .map_err(|e| conn.error(&e, "read cursor statistics"))?;
    Ok(rows.first().map(|r| ColumnStats {
        null_frac: r.get(0),
        histogram: r.get(1),
        mcv: r.get(2),
        mcv_freq: r.get(3),
    }))
}

/// Average bytes per row of the extracted columns, when every one has statistics.
async fn row_width(conn: &Conn, table: &PgTable) -> Result<Option<f64>> {
    let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let row = conn
        .client
        .query_one(
            "SELECT count(*)::int8, coalesce(sum(w), 0)::float8 FROM ( \
               SELECT DISTINCT ON (s.attname) s.avg_width * (1 - s.null_frac) AS w \
               FROM pg_catalog.pg_stats s \
               WHERE s.schemaname = $1 AND s.tablename = $2 AND s.attname = ANY($3) \
               ORDER BY s.attname, s.inherited DESC) x",
            &[&table.schema, &table.name, &names],
        )
        .await
        .map_err(|e| conn.error(&e, "read column widths"))?;
    let (count, width): (i64, f64) = (row.get(0), row.get(1));
    Ok((count as usize == names.len() && width > 0.0).then_some(width))
}

/// The current largest finite cursor value, when an index makes that one cheap probe.
async fn current_max(conn: &Conn, table: &PgTable) -> Result<Option<i64>> {
    let indexed: bool = conn
        .client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a \
               ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = $1 AND a.attname = $2 AND i.indpred IS NULL AND i.indexprs IS NULL)",
            &[&table.oid, &table.cursor_name()],
        )
        .await
        .map_err(|e| conn.error(&e, "look for a cursor index"))?
        .get(0);
    if !indexed {
        return Ok(None);
    }
    max_cursor(conn, table).await
}

/// The largest finite cursor value in cursor units; `None` for an empty table. `max()` over a
/// column with an index is one backward index probe (PostgreSQL rewrites it to `ORDER BY …
/// DESC LIMIT 1`); without one it scans the table.
pub(crate) async fn max_cursor(conn: &Conn, table: &PgTable) -> Result<Option<i64>> {
    let c = quote_ident(table.cursor_name());
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        table.cursor_type.to_units_sql(&format!("max({c})")),
        table.sql_name(),
        table.cursor_type.finite_sql(&c),
    );
    let row = conn
        .client
        .query_one(&sql, &[])
        .await
        .map_err(|e| conn.error(&e, "read the cursor maximum"))?;
    Ok(row.get::<_, Option<i64>>(0))
}

/// Percentiles of a block sample of the range, when there are no statistics.
async fn sample(conn: &Conn, table: &PgTable, range: CursorRange, pages: f64) -> Result<Vec<DensityBucket>> {
    let percent = (100.0 * SAMPLE_PAGES / pages.max(1.0)).min(100.0);
    let c = quote_ident(table.cursor_name());
    let quantiles: Vec<String> = (0..=SAMPLE_QUANTILES)
        .map(|q| format!("{}", f64::from(q) / f64::from(SAMPLE_QUANTILES)))
        .collect();
    let sql = format!(
        "SELECT count(*)::int8, coalesce(avg(pg_catalog.pg_column_size(t.*)), 0)::float8, \
                percentile_disc(ARRAY[{q}]::float8[]) WITHIN GROUP (ORDER BY {u}) \
         FROM {table} AS t TABLESAMPLE SYSTEM ({percent:.6}) REPEATABLE (0) \
         WHERE {pred} AND {finite}",
        q = quantiles.join(","),
        u = table.cursor_type.to_units_sql(&format!("t.{c}")),
        table = table.sql_name(),
        pred = table.range_predicate(range),
        finite = table.cursor_type.finite_sql(&format!("t.{c}")),
    );
    let row = conn
        .client
        .query_one(&sql, &[])
        .await
        .map_err(|e| conn.error(&e, "sample the table"))?;
    let count: i64 = row.get(0);
    let row_bytes: f64 = row.get(1);
    let Some(points) = row.get::<_, Option<Vec<Option<i64>>>>(2) else {
        return Ok(Vec::new()); // no row sampled in the range
    };
    let points: Vec<i64> = points.into_iter().flatten().collect();
    if count == 0 || points.is_empty() {
        return Ok(Vec::new());
    }
    let total = count as f64 * 100.0 / percent;
    let histogram = ColumnStats {
        null_frac: 0.0,
        histogram: points,
        mcv: Vec::new(),
        mcv_freq: Vec::new(),
    };
    let pieces = if histogram.histogram.len() >= 2 {
        stats_pieces(&histogram, total)
    } else {
        vec![Piece {
            from: histogram.histogram[0],
            to: histogram.histogram[0].saturating_add(1),
            rows: total,
        }]
    };
    Ok(partition(&pieces, range, row_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_spreads_overlaps_and_clips() {
        let pieces = [
            Piece {
                from: 0,
                to: 100,
                rows: 100.0,
            },
            Piece {
                from: 50,
                to: 51,
                rows: 40.0,
            },
            Piece {
                from: 200,
                to: 300,
                rows: 10.0,
            },
        ];
        let b = partition(&pieces, CursorRange::new(25, 250), 10.0);
        let shape: Vec<(i64, i64, f64)> = b.iter().map(|b| (b.range.from, b.range.to, b.rows)).collect();
        assert_eq!(
            shape,
            vec![(25, 50, 25.0), (50, 51, 41.0), (51, 100, 49.0), (200, 250, 5.0)]
        );
        assert_eq!(b[0].bytes, 250.0);
    }

    #[test]
    fn histogram_buckets_are_equi_depth_and_include_the_maximum() {
        let stats = ColumnStats {
            null_frac: 0.5,
            histogram: vec![0, 10, 10, 100],
            mcv: vec![5],
            mcv_freq: vec![0.2],
        };
        let pieces = stats_pieces(&stats, 1000.0);
        assert_eq!(
            pieces[0],
            Piece {
                from: 5,
                to: 6,
                rows: 200.0
            }
        );
        assert_eq!(
            &pieces[1..],
            &[
                Piece {
                    from: 0,
                    to: 10,
                    rows: 100.0
                },
                Piece {
                    from: 10,
                    to: 11,
                    rows: 100.0
                },
                Piece {
                    from: 10,
                    to: 101,
                    rows: 100.0
                },
            ]
        );
        let total: f64 = partition(&pieces, CursorRange::new(-5, 500), 1.0)
            .iter()
            .map(|b| b.rows)
            .sum();
        assert!((total - 500.0).abs() < 1e-9, "{total}");
    }
}
