//! The server going away mid-chunk fails the chunk as transient; the chunk reads completely
//! once the server is back. A dropped stream ends its COPY on the server.

use std::time::{Duration, Instant};

use backhaul_core::ErrorClass;
use backhaul_core::connector::Source;
use backhaul_testkit::postgres::{PostgresOptions, PostgresServer};
use futures::StreamExt;

use crate::util::{all_time, extract_all, rows, source, spec};

const ROWS: usize = 200_000;

fn big_table(server: &PostgresServer, db: &str) {
    server
        .psql(
            db,
            &format!(
                "CREATE TABLE big (id bigint PRIMARY KEY, ts timestamptz NOT NULL, pad text NOT NULL); \
                 INSERT INTO big SELECT g, timestamptz '2024-01-01' + g * interval '1 second', repeat('x', 100) \
                 FROM generate_series(1, {ROWS}) g;"
            ),
        )
        .unwrap();
}

/// Reads one batch, runs `disrupt`, then reads on and returns the error the stream ends with.
async fn error_after_first_batch(src: &dyn Source, disrupt: impl FnOnce()) -> backhaul_core::Error {
    let mut stream = src.extract(all_time(), 1_000).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.num_rows(), 1_000);
    disrupt();
    let mut read = first.num_rows();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
            Ok(Some(Ok(batch))) => read += batch.num_rows(),
            Ok(Some(Err(e))) => {
                assert!(read < ROWS, "the whole chunk was read before the disruption");
                return e;
            }
            Ok(None) => panic!("the stream ended cleanly after {read} rows despite the disruption"),
            Err(_) => panic!("the stream hung after the disruption"),
        }
    }
}

#[tokio::test]
async fn server_crash_and_restart_mid_chunk_are_transient() {
    let server = PostgresServer::start(PostgresOptions::default()).unwrap();
    big_table(&server, "postgres");
    let src = source(&spec(&server, "postgres", "big", "ts"));

    // Immediate shutdown: connections drop without a goodbye, like a crash.
    let e = error_after_first_batch(&src, || server.stop_immediately().unwrap()).await;
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    // While it is down: connection refused, also transient.
    let e = src.describe().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    server.start_again().unwrap();
    assert_eq!(rows(&extract_all(&src, all_time(), 8192).await.unwrap()), ROWS);

    // Fast shutdown: the server ends sessions with admin_shutdown (57P01).
    let e = error_after_first_batch(&src, || server.stop().unwrap()).await;
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    server.start_again().unwrap();
    assert_eq!(rows(&extract_all(&src, all_time(), 8192).await.unwrap()), ROWS);
}

#[tokio::test]
async fn terminated_backend_is_transient() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    big_table(server, &db);
    let src = source(&spec(server, &db, "big", "ts"));
    let e = error_after_first_batch(&src, || {
        let killed = server
            .psql(
                &db,
                "SELECT count(pg_terminate_backend(pid)) FROM (SELECT pid FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'COPY%' AND backend_type = 'client backend' \
                 LIMIT 1) one",
            )
            .unwrap();
        assert_eq!(killed, "1");
    })
    .await;
    // The table is read by two block-range scans; losing either one fails the chunk. The
    // server may get its admin_shutdown (57P01) message out before the socket closes, or the
    // reset may arrive first: transient either way.
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
}

#[tokio::test]
async fn dropping_the_stream_ends_the_copy_on_the_server() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    big_table(server, &db);
    let src = source(&spec(server, &db, "big", "ts"));
    let copying = || {
        server
            .psql(
                &db,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY%'",
            )
            .unwrap()
    };
    let mut stream = src.extract(all_time(), 1_000).await.unwrap();
    stream.next().await.unwrap().unwrap();
    assert_ne!(copying(), "0");
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(20);
    while copying() != "0" {
        assert!(
            Instant::now() < deadline,
            "the COPY still runs after the stream was dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
