//! The conformance suite against a private PostgreSQL server (crates/testkit), with a
//! timestamptz, a date and an integer cursor over the same table.

use backhaul_conformance::source::check_source;
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::spec::database::{ConnectionSpec, PasswordSpec};
use backhaul_source_postgres::PostgresSource;
use backhaul_source_postgres::PostgresSourceSpec;
use backhaul_testkit::postgres::PostgresServer;

use crate::{days, micros};

/// 6,000 orders over about five days of March 2023 at irregular intervals (so microsecond gaps
/// exist), shipped 0-4 days later, with a sparse integer sequence; NULLs in the other columns
/// but none in the cursors. Analyzed, so `density` has statistics.
const ORDERS: &str = r#"
CREATE TABLE orders (
    id          bigint PRIMARY KEY,
    created_at  timestamptz NOT NULL,
    shipped_on  date,
    seq         integer NOT NULL,
    amount      numeric(18,2) NOT NULL,
    note        text,
    attributes  jsonb,
    tags        text[]
);
INSERT INTO orders
SELECT g,
       timestamptz '2023-03-13 00:00:00+00' + (g * 70 + (g * g) % 61) * interval '1 second' + (g % 7) * interval '1 microsecond',
       date '2023-03-13' + ((g * 70) / 86400) + (g % 5),
       g * 3,
       (g * 12345 % 1000000) / 100.0,
       CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g || ' ✓' END,
       CASE WHEN g % 4 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'tag', 'ü') END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE ARRAY['a', NULL, g::text] END
FROM generate_series(1, 6000) g;
CREATE INDEX ON orders (created_at);
ANALYZE orders;
"#;

fn database() -> &'static (&'static PostgresServer, String) {
    static DB: std::sync::OnceLock<(&'static PostgresServer, String)> = std::sync::OnceLock::new();
    DB.get_or_init(|| {
        let server = PostgresServer::shared();
        let db = server.fresh_database();
        server.psql(&db, ORDERS).expect("create orders");
        (server, db)
    })
}

fn source(cursor: &str) -> PostgresSource {
    let (server, db) = database();
    PostgresSource::open(&PostgresSourceSpec {
        connection: ConnectionSpec {
            host: server.host().into(),
            port: Some(server.port()),
            user: server.user().into(),
            database: db.clone(),
            password: PasswordSpec {
                env: None,
                file: Some(server.password_file()),
            },
            table: "public.orders".into(),
            cursor: cursor.into(),
            columns: None,
            tls: Default::default(),
            null_cursor: Default::default(),
        },
        unconstrained_numeric: Default::default(),
        infinite_datetime: Default::default(),
        special_numeric: Default::default(),
        parallel_scans: None,
    })
    .unwrap()
}

#[tokio::test]
async fn postgres_source_conforms_with_a_timestamptz_cursor() {
    let range = CursorRange::new(micros("2023-03-14T06:30:00Z"), micros("2023-03-17T06:30:00Z"));
    let report = check_source(&source("created_at"), range).await.unwrap();
    assert!(
        !report.skipped.iter().any(|s| s.starts_with("deletes")),
        "the delete-detection methods were checked: {:?}",
        report.skipped
    );
    assert_eq!(report.description.cursor_kind, CursorKind::Timestamp);
    assert!(report.rows > 3_000, "{} rows", report.rows);
    assert!(report.split_on_row, "{:?}", report.split_points);
    assert!(report.estimated_rows.is_some(), "analyzed: statistics expected");
    assert!(!report.empty_ranges.is_empty());
}

#[tokio::test]
async fn postgres_source_conforms_with_a_date_cursor() {
    let range = CursorRange::new(days("2023-03-14"), days("2023-03-17"));
    let report = check_source(&source("shipped_on"), range).await.unwrap();
    assert_eq!(report.description.cursor_kind, CursorKind::Date);
    assert!(report.split_on_row);
    assert!(report.estimated_rows.is_some());
}

#[tokio::test]
async fn postgres_source_conforms_with_an_integer_cursor() {
    let range = CursorRange::new(3_000, 12_001);
    let report = check_source(&source("seq"), range).await.unwrap();
    assert_eq!(report.description.cursor_kind, CursorKind::Integer);
    assert_eq!(report.rows, 3_001, "seq = 3g for g in 1000..=4000");
    assert!(report.split_on_row);
}
