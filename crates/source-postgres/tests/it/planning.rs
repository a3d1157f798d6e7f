//! Chunk planning from statistics: skewed tables get evenly sized chunks, whether the sizes
//! come from ANALYZE statistics, from a block sample (never analyzed), or from statistics that
//! predate the newest rows.

use backhaul_core::chunking::{AMPLIFICATION_WARNING, PlanPolicy, PlannedChunk, estimate, plan_chunks};
use backhaul_core::connector::Source;
use backhaul_core::cursor::CursorRange;
use backhaul_testkit::postgres::PostgresServer;

use crate::util::{micros, plan_for_two_workers, source, spec};

/// 20,000 rows over the first 90 days of 2024, 180,000 over the next 10: 90% of the rows in
/// the last 10% of the range.
const SKEWED: &str = r#"
CREATE TABLE events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, payload text NOT NULL);
INSERT INTO events
  SELECT g, timestamptz '2024-01-01 00:00:00+00' + (g::float8 / 20000 * 90) * interval '1 day', md5(g::text)
  FROM generate_series(0, 19999) g;
INSERT INTO events
  SELECT 20000 + g, timestamptz '2024-03-31 00:00:00+00' + (g::float8 / 180000 * 10) * interval '1 day', md5(g::text)
  FROM generate_series(0, 179999) g;
CREATE INDEX events_ts ON events (ts);
"#;

fn range() -> CursorRange {
    CursorRange::new(micros("2024-01-01T00:00:00Z"), micros("2024-04-10T00:00:00Z"))
}

/// Rows actually in each chunk, counted by the server.
fn actual_rows(server: &PostgresServer, db: &str, table: &str, chunks: &[PlannedChunk]) -> Vec<u64> {
    let values: Vec<String> = chunks
        .iter()
        .map(|c| format!("({}, {}::int8, {}::int8)", c.index, c.range.from, c.range.to))
        .collect();
    let sql = format!(
        "SELECT count(e.id) FROM (VALUES {}) AS c(i, a, b) \
         LEFT JOIN {table} e ON e.ts >= timestamptz 'epoch' + c.a * interval '1 microsecond' \
                             AND e.ts < timestamptz 'epoch' + c.b * interval '1 microsecond' \
         GROUP BY c.i ORDER BY c.i",
        values.join(", ")
    );
    server
        .psql(db, &sql)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// Plans the range into about ten chunks from the source's density and checks the real row
/// counts of the chunks are within 2x of each other.
async fn assert_even_chunks(server: &PostgresServer, db: &str, table: &str, total_rows: u64) {
    let src = source(&spec(server, db, table, "ts"));
    let desc = src.describe().await.unwrap();
    assert_eq!(desc.cursor_column, "ts");
    let density = src.density(range()).await.unwrap();
    assert!(!density.is_empty(), "no density buckets");
    let (rows, bytes) = estimate(range(), &density);
    assert!(
        rows > total_rows as f64 / 2.0 && rows < total_rows as f64 * 2.0,
        "estimated {rows} rows, the table holds {total_rows}"
    );
    let chunks = plan_chunks(
        range(),
        PlanPolicy::TargetBytes((bytes / 10.0) as u64),
        &density,
        1_000_000,
    )
    .unwrap();
    assert!(chunks.len() >= 6, "expected about 10 chunks, got {}", chunks.len());
    let actual = actual_rows(server, db, table, &chunks);
    assert_eq!(actual.iter().sum::<u64>(), total_rows);
    let (min, max) = (*actual.iter().min().unwrap(), *actual.iter().max().unwrap());
    assert!(max <= 2 * min, "uneven chunks (rows): {actual:?}");
    // A plan by width alone would be badly uneven: the last tenth holds 90% of the rows.
    let first_tenth = CursorRange::new(range().from, range().from + range().width() / 10);
    assert!(
        chunks.iter().any(|c| first_tenth.width() < c.range.width()),
        "no wide chunk in the sparse part"
    );
}

#[tokio::test]
async fn skewed_table_with_statistics_gets_even_chunks() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server.psql(&db, SKEWED).unwrap();
    server.psql(&db, "ANALYZE events").unwrap();
    assert_even_chunks(server, &db, "events", 200_000).await;
}

#[tokio::test]
async fn never_analyzed_table_is_sampled_and_gets_even_chunks() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server.psql(&db, SKEWED).unwrap();
    // CREATE INDEX sets reltuples; make the table look never analyzed, as a new table does.
    server
        .psql(
            &db,
            "UPDATE pg_class SET reltuples = -1, relpages = 0 WHERE relname = 'events'",
        )
        .unwrap();
    let stats = server
        .psql(&db, "SELECT count(*) FROM pg_stats WHERE tablename = 'events'")
        .unwrap();
    assert_eq!(stats, "0");
    assert_even_chunks(server, &db, "events", 200_000).await;
}

#[tokio::test]
async fn rows_added_after_analyze_are_found_past_the_histogram() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server.psql(&db, SKEWED).unwrap();
    // Statistics see only the sparse first 90 days; the dense last 10 days arrive later.
    server
        .psql(
            &db,
            "CREATE TABLE late AS SELECT * FROM events WHERE ts >= '2024-03-31'; \
             DELETE FROM events WHERE ts >= '2024-03-31'; VACUUM ANALYZE events; \
             INSERT INTO events SELECT * FROM late;",
        )
        .unwrap();
    let src = source(&spec(server, &db, "events", "ts"));
    let density = src.density(range()).await.unwrap();
    let late = CursorRange::new(micros("2024-03-31T00:00:00Z"), range().to);
    let (rows, _) = estimate(late, &density);
    assert!(
        (90_000.0..360_000.0).contains(&rows),
        "estimated {rows} rows after ANALYZE, 180000 were added"
    );
    assert_even_chunks(server, &db, "events", 200_000).await;
}

#[tokio::test]
async fn partitioned_tables_and_date_cursors_have_statistics() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE sales (id int, day date NOT NULL) PARTITION BY RANGE (day); \
             CREATE TABLE sales_2023 PARTITION OF sales FOR VALUES FROM ('2023-01-01') TO ('2024-01-01'); \
             CREATE TABLE sales_2024 PARTITION OF sales FOR VALUES FROM ('2024-01-01') TO ('2025-01-01'); \
             INSERT INTO sales SELECT g, date '2023-01-01' + (g % 700) FROM generate_series(1, 70000) g; \
             ANALYZE sales;",
        )
        .unwrap();
    let src = source(&spec(server, &db, "sales", "day"));
    let range = CursorRange::new(crate::util::days("2023-01-01"), crate::util::days("2025-01-01"));
    let density = src.density(range).await.unwrap();
    let (rows, bytes) = estimate(range, &density);
    assert!((35_000.0..140_000.0).contains(&rows), "estimated {rows} of 70000 rows");
    assert!(bytes > rows, "about 8 bytes per row: {bytes}");
    let half = CursorRange::new(crate::util::days("2023-01-01"), crate::util::days("2023-07-01"));
    let (half_rows, _) = estimate(half, &density);
    assert!(
        (9_000.0..36_000.0).contains(&half_rows),
        "estimated {half_rows} of 18100 rows"
    );
}

/// 100,000 rows over the range: `ordered` stored in cursor order, `shuffled` in an order that
/// has nothing to do with the cursor (a fixed permutation of the row number).
const ORDERED_AND_SHUFFLED: &str = r#"
CREATE TABLE ordered (id bigint PRIMARY KEY, ts timestamptz NOT NULL, payload text NOT NULL);
INSERT INTO ordered
  SELECT g, timestamptz '2024-01-01 00:00:00+00' + (g::float8 / 100000 * 100) * interval '1 day', md5(g::text)
  FROM generate_series(0, 99999) g;
CREATE TABLE shuffled (id bigint PRIMARY KEY, ts timestamptz NOT NULL, payload text NOT NULL);
INSERT INTO shuffled
  SELECT g, timestamptz '2024-01-01 00:00:00+00' + (((g * 7919) % 100000)::float8 / 100000 * 100) * interval '1 day', md5(g::text)
  FROM generate_series(0, 99999) g;
CREATE INDEX ordered_ts ON ordered (ts);
CREATE INDEX shuffled_ts ON shuffled (ts);
ANALYZE ordered;
ANALYZE shuffled;
"#;

#[tokio::test]
async fn the_cursor_s_physical_order_is_read_and_changes_the_plan() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server.psql(&db, ORDERED_AND_SHUFFLED).unwrap();
    let mut plans = Vec::new();
    for table in ["ordered", "shuffled"] {
        let src = source(&spec(server, &db, table, "ts"));
        src.describe().await.unwrap();
        let order = src
            .physical_order()
            .await
            .unwrap()
            .expect("analyzed tables have a correlation");
        assert!(
            (500.0..3_000.0).contains(&order.heap_pages) && (50_000.0..200_000.0).contains(&order.table_rows),
            "{table}: {order:?}"
        );
        let plan = plan_for_two_workers(&src, range(), order, 1_000_000).await;
        let actual = actual_rows(server, &db, table, &plan.chunks);
        assert_eq!(actual.iter().sum::<u64>(), 100_000, "{table}");
        plans.push((order, plan));
    }
    let (ordered, ordered_plan) = &plans[0];
    let (shuffled, shuffled_plan) = &plans[1];
    assert!(ordered.correlation > 0.99, "{ordered:?}");
    assert!(shuffled.correlation.abs() < 0.1, "{shuffled:?}");
    // In physical order the byte target decides (about ten chunks, an even count) and the heap
    // is read about once.
    let n = ordered_plan.chunks.len();
    assert!((8..=12).contains(&n) && n % 2 == 0, "{:?}", ordered_plan.chunks);
    assert!(ordered_plan.read_amplification.unwrap() < 1.2);
    // Uncorrelated, every chunk would read most pages: one chunk per worker instead.
    assert_eq!(shuffled_plan.chunks.len(), 2, "{:?}", shuffled_plan.chunks);
    let amplification = shuffled_plan.read_amplification.unwrap();
    assert!(amplification > AMPLIFICATION_WARNING, "{amplification}");
    assert!(shuffled_plan.idle_share < 0.1, "{}", shuffled_plan.idle_share);
}

#[tokio::test]
async fn a_view_has_no_physical_order() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            &format!("{ORDERED_AND_SHUFFLED} CREATE VIEW recent AS SELECT * FROM ordered;"),
        )
        .unwrap();
    let src = source(&spec(server, &db, "recent", "ts"));
    src.describe().await.unwrap();
    assert_eq!(src.physical_order().await.unwrap(), None);
}
