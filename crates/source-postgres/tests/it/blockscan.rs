//! A chunk PostgreSQL would read with a sequential scan is read as parallel block-range scans
//! in one exported snapshot: the planner gives an uncorrelated cursor fewer chunks, the heap is
//! read once, and the rows are exactly those of one snapshot even while the table changes.

use std::collections::BTreeSet;

use arrow::array::{Array, Int64Array};
use backhaul_core::connector::Source;
use backhaul_core::cursor::CursorRange;
use backhaul_testkit::postgres::PostgresServer;
use futures::StreamExt;

use crate::util::{micros, plan_for_two_workers, source, spec};

/// 150,000 rows (about 3,000 heap pages) whose cursor has nothing to do with their order.
const SHUFFLED: &str = r#"
CREATE TABLE wide (id bigint PRIMARY KEY, ts timestamptz NOT NULL, pad text NOT NULL);
INSERT INTO wide
  SELECT g, timestamptz '2024-01-01 00:00:00+00' + (((g * 7919) % 150000)::float8 / 150000 * 100) * interval '1 day',
         repeat(md5(g::text), 3)
  FROM generate_series(0, 149999) g;
CREATE INDEX wide_ts ON wide (ts);
VACUUM ANALYZE wide;
"#;

fn range() -> CursorRange {
    CursorRange::new(micros("2024-01-01T00:00:00Z"), micros("2024-04-11T00:00:00Z"))
}

fn ids(batches: &[arrow::array::RecordBatch]) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for b in batches {
        let col = b
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        for i in 0..col.len() {
            assert!(out.insert(col.value(i)), "id {} read twice", col.value(i));
        }
    }
    out
}

fn server_ids(server: &PostgresServer, db: &str) -> BTreeSet<i64> {
    server
        .psql(db, "SELECT id FROM wide ORDER BY id")
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// COPY statements running now in `db` that read a `ctid` range.
fn block_scans_running(server: &PostgresServer, db: &str) -> usize {
    server
        .psql(
            db,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'COPY%ctid%'",
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_uncorrelated_table_is_planned_as_one_chunk_read_by_two_block_scans_in_one_snapshot() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server.psql(&db, SHUFFLED).unwrap();
    let src = source(&spec(server, &db, "wide", "ts"));
    src.describe().await.unwrap();

    // The source tells the planner it reads a whole-table chunk with two scans, so two
    // workers get one chunk, read once, and nobody idles.
    let order = src.physical_order().await.unwrap().expect("analyzed");
    assert!(order.correlation.abs() < 0.1 && order.heap_pages > 2_048.0, "{order:?}");
    assert_eq!(order.block_scans, 2, "{order:?}");
    let plan = plan_for_two_workers(&src, range(), order, 1).await;
    assert_eq!(plan.chunks.len(), 1, "{:?}", plan.chunks);
    assert!(plan.read_amplification.unwrap() < 1.01);
    assert!(plan.idle_share < 0.01, "{}", plan.idle_share);

    // The chunk runs as two COPYs over block ranges; the table changes after they started
    // and the chunk still returns exactly the rows of the moment it began.
    let before = server_ids(server, &db);
    let mut stream = src.extract(range(), 1_000).await.unwrap();
    let mut batches = vec![stream.next().await.unwrap().unwrap()];
    assert_eq!(block_scans_running(server, &db), 2);
    server
        .psql(
            &db,
            "DELETE FROM wide WHERE id % 10 = 0; \
             UPDATE wide SET pad = 'moved' WHERE id % 10 = 1; \
             INSERT INTO wide SELECT g, timestamptz '2024-02-01 00:00:00+00', 'new' FROM generate_series(200000, 209999) g;",
        )
        .unwrap();
    while let Some(batch) = stream.next().await {
        batches.push(batch.unwrap());
    }
    assert_eq!(ids(&batches), before);
    assert_ne!(server_ids(server, &db), before, "the table did change meanwhile");
}

#[tokio::test]
async fn narrow_chunks_one_scan_setting_and_small_tables_keep_one_copy() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server.psql(&db, SHUFFLED).unwrap();
    let all = server_ids(server, &db);

    // `parallel_scans = 1`: the whole table in one COPY, and the planner is told so.
    let mut one = spec(server, &db, "wide", "ts");
    one.parallel_scans = Some(1);
    let src = source(&one);
    assert_eq!(src.physical_order().await.unwrap().unwrap().block_scans, 1);
    let mut stream = src.extract(range(), 1_000).await.unwrap();
    let mut batches = vec![stream.next().await.unwrap().unwrap()];
    assert_eq!(block_scans_running(server, &db), 0);
    while let Some(batch) = stream.next().await {
        batches.push(batch.unwrap());
    }
    assert_eq!(ids(&batches), all);

    // A chunk of one day: PostgreSQL reads it through the cursor's index, not the whole heap,
    // so it is not split.
    let src = source(&spec(server, &db, "wide", "ts"));
    let day = CursorRange::new(micros("2024-01-10T00:00:00Z"), micros("2024-01-11T00:00:00Z"));
    let mut stream = src.extract(day, 100).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(block_scans_running(server, &db), 0);
    let mut rows = first.num_rows();
    while let Some(batch) = stream.next().await {
        rows += batch.unwrap().num_rows();
    }
    assert_eq!(rows, 1_500);

    // A table of a few pages has too little to share between two connections.
    server
        .psql(&db, "CREATE TABLE tiny AS SELECT * FROM wide LIMIT 1000; ANALYZE tiny;")
        .unwrap();
    let src = source(&spec(server, &db, "tiny", "ts"));
    assert_eq!(src.physical_order().await.unwrap().unwrap().block_scans, 1);
}
