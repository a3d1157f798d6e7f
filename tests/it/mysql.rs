//! The conformance suite against a private MariaDB server (backhaul-testkit), with DATETIME,
//! TIMESTAMP(3), DATE and integer cursors.

use std::sync::OnceLock;

use backhaul_conformance::source::check_source;
use backhaul_core::Result;
use backhaul_core::chunking::DensityBucket;
use backhaul_core::connector::{BatchStream, Source, TableDescription};
use backhaul_core::cursor::{CursorKind, CursorRange, SpecBound};
use backhaul_core::deletes::KeyDigest;
use backhaul_core::spec::database::{ConnectionSpec, NullCursorPolicy, PasswordSpec, TlsSpec};
use backhaul_source_mysql::MysqlSource;
use backhaul_source_mysql::spec::MysqlSourceSpec;
use backhaul_testkit::mariadb::MariaDb;
use futures::future::BoxFuture;

const DATABASE: &str = "conformance";

/// 6,000 events: pairs of rows share a DATETIME second (so a split lands on two rows), every
/// row has its own TIMESTAMP(3) millisecond, 200 rows a day, and every third integer.
fn server() -> &'static MariaDb {
    static LOADED: OnceLock<&'static MariaDb> = OnceLock::new();
    LOADED.get_or_init(|| {
        let server = MariaDb::shared();
        server.create_database(DATABASE);
        server.sql(&format!(
            "USE `{DATABASE}`; SET time_zone = '+00:00';
             CREATE TABLE events (
                 id BIGINT NOT NULL PRIMARY KEY,
                 created_at DATETIME NOT NULL,
                 logged_at TIMESTAMP(3) NOT NULL,
                 day DATE NOT NULL,
                 seq INT UNSIGNED NOT NULL,
                 amount DECIMAL(12,3),
                 note VARCHAR(40),
                 doc JSON,
                 flag BIT(1),
                 KEY (created_at), KEY (logged_at), KEY (day), KEY (seq)
             );
             INSERT INTO events SELECT
                 seq,
                 '2023-03-13 12:00:00' + INTERVAL ((seq DIV 2) * 131) SECOND,
                 '2023-03-13 12:00:00' + INTERVAL (seq * 65537000) MICROSECOND,
                 '2023-03-01' + INTERVAL (seq DIV 200) DAY,
                 seq * 3,
                 IF(seq % 7 = 0, NULL, seq * 1.125),
                 IF(seq % 5 = 0, NULL, CONCAT('note ', seq, ' ü')),
                 JSON_OBJECT('seq', seq, 'even', seq % 2 = 0),
                 seq % 2
             FROM seq_1_to_6000;"
        ));
        server
    })
}

fn spec(cursor: &str) -> MysqlSourceSpec {
    let server = server();
    MysqlSourceSpec {
        connection: ConnectionSpec {
            host: server.host().into(),
            port: Some(server.port()),
            user: server.root_user().into(),
            database: DATABASE.into(),
            password: PasswordSpec::default(),
            table: format!("{DATABASE}.events"),
            cursor: cursor.into(),
            columns: None,
            tls: TlsSpec::default(),
            null_cursor: NullCursorPolicy::Fail,
        },
        zero_dates: Default::default(),
        unsigned_bigint: Default::default(),
    }
}

fn time(text: &str) -> i64 {
    SpecBound::parse(text)
        .unwrap()
        .to_cursor(CursorKind::Timestamp)
        .unwrap()
}

fn day(text: &str) -> i64 {
    SpecBound::parse(text).unwrap().to_cursor(CursorKind::Date).unwrap()
}

fn three_days() -> CursorRange {
    CursorRange::new(time("2023-03-14T06:30:00Z"), time("2023-03-17T06:30:00Z"))
}

#[tokio::test]
async fn mysql_source_conforms_with_a_datetime_cursor() {
    let source = MysqlSource::open(&spec("created_at")).unwrap();
    let report = check_source(&source, three_days()).await.unwrap();
    assert_eq!(report.description.cursor_kind, CursorKind::Timestamp);
    assert!(report.split_on_row, "{:?}", report.split_points);
    assert!(report.estimated_rows.is_some());
    assert!(
        !report.skipped.iter().any(|s| s.starts_with("deletes")),
        "the delete-detection methods were checked: {:?}",
        report.skipped
    );
    // Seconds 66,600 to 325,800 after 12:00 on the 13th, two rows per 131 s step.
    let first = (66_600_i64 + 130) / 131;
    let last = (325_800 - 1) / 131;
    let pairs = (last - first + 1) as u64;
    assert_eq!(report.rows, pairs * 2);
}

#[tokio::test]
async fn mysql_source_conforms_with_a_timestamp_cursor() {
    let source = MysqlSource::open(&spec("logged_at")).unwrap();
    let report = check_source(&source, three_days()).await.unwrap();
    assert_eq!(report.description.cursor_kind, CursorKind::Timestamp);
    assert!(report.split_on_row, "{:?}", report.split_points);
    let step_us = 65_537_000_i64;
    let start = time("2023-03-13T12:00:00Z");
    let expected = (1..=6000_i64)
        .map(|s| start + s * step_us)
        .filter(|t| (three_days().from..three_days().to).contains(t))
        .count() as u64;
    assert_eq!(report.rows, expected);
}

#[tokio::test]
async fn mysql_source_conforms_with_a_date_cursor() {
    let source = MysqlSource::open(&spec("day")).unwrap();
    let range = CursorRange::new(day("2023-03-14"), day("2023-03-17"));
    let report = check_source(&source, range).await.unwrap();
    assert_eq!(report.description.cursor_kind, CursorKind::Date);
    assert_eq!(report.rows, 600);
    assert!(report.split_points.len() >= 2, "{:?}", report.split_points);
}

#[tokio::test]
async fn mysql_source_conforms_with_an_integer_cursor() {
    let source = MysqlSource::open(&spec("seq")).unwrap();
    let report = check_source(&source, CursorRange::new(3_000, 12_000)).await.unwrap();
    assert_eq!(report.description.cursor_kind, CursorKind::Integer);
    assert_eq!(report.rows, 3_000);
    assert!(report.split_on_row);
}

/// A source whose key digest counts the range's upper bound too (`[from, to]`): the digests of
/// two halves then overlap on a row at the split, which the `deletes` check catches.
struct InclusiveDigest(MysqlSource);

impl Source for InclusiveDigest {
    fn describe(&self) -> BoxFuture<'_, Result<TableDescription>> {
        self.0.describe()
    }
    fn prepare(&self, range: CursorRange) -> BoxFuture<'_, Result<()>> {
        self.0.prepare(range)
    }
    fn density(&self, range: CursorRange) -> BoxFuture<'_, Result<Vec<DensityBucket>>> {
        self.0.density(range)
    }
    fn extract(&self, range: CursorRange, batch_rows: usize) -> BoxFuture<'_, Result<BatchStream>> {
        self.0.extract(range, batch_rows)
    }
    fn supports_delete_detection(&self) -> bool {
        true
    }
    fn key_digest<'a>(&'a self, range: CursorRange, keys: &'a [String]) -> BoxFuture<'a, Result<KeyDigest>> {
        self.0
            .key_digest(CursorRange::new(range.from, range.to + 1_000_000), keys)
    }
    fn list_keys<'a>(&'a self, range: CursorRange, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<String>>> {
        self.0.list_keys(range, keys)
    }
    fn existing_keys<'a>(&'a self, keys: &'a [String], candidates: &'a [String]) -> BoxFuture<'a, Result<Vec<String>>> {
        self.0.existing_keys(keys, candidates)
    }
}

#[tokio::test]
async fn the_suite_catches_a_key_digest_that_includes_the_upper_bound() {
    let broken = InclusiveDigest(MysqlSource::open(&spec("created_at")).unwrap());
    let violations = check_source(&broken, three_days()).await.unwrap_err();
    assert!(violations.has("deletes"), "{violations}");
}
