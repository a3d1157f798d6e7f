//! Delete detection compares key digests of one range across systems, so PostgreSQL and
//! MariaDB must answer the same digest, key list and lookups for the same keys: integer,
//! text (non-ASCII too) and UUID parts of a composite key, each equal to core's own digest of
//! the canonical key texts.

use backhaul_core::connector::Source;
use backhaul_core::cursor::CursorRange;
use backhaul_core::deletes::{KEY_SEPARATOR, KeyDigest};
use backhaul_core::spec::database::{ConnectionSpec, PasswordSpec};
use backhaul_source_mysql::MysqlSource;
use backhaul_source_mysql::spec::MysqlSourceSpec;
use backhaul_source_postgres::{PostgresSource, PostgresSourceSpec};
use backhaul_testkit::mariadb::MariaDb;
use backhaul_testkit::postgres::PostgresServer;

use crate::micros;

const DATABASE: &str = "digests";
/// Rows `g` = 1..=300: key (g, 'k-ü-g', uuid from g), updated every minute from 2024-03-01.
const ROWS: i64 = 300;

fn uuid(g: i64) -> String {
    format!("00000000-0000-4000-8000-{g:012x}")
}

fn key_text(g: i64) -> String {
    format!("{g}{KEY_SEPARATOR}k-ü-{g}{KEY_SEPARATOR}{}", uuid(g))
}

fn postgres() -> PostgresSource {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            &format!(
                "CREATE TABLE items (id bigint NOT NULL, code text NOT NULL, u uuid NOT NULL, \
                   updated_at timestamptz NOT NULL, PRIMARY KEY (id, code, u)); \
                 INSERT INTO items SELECT g, 'k-ü-' || g, ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, \
                   timestamptz '2024-03-01 00:00:00+00' + g * interval '1 minute' FROM generate_series(1, {ROWS}) g; \
                 ANALYZE items;"
            ),
        )
        .unwrap();
    PostgresSource::open(&PostgresSourceSpec {
        connection: ConnectionSpec {
            host: server.host().into(),
            port: Some(server.port()),
            user: server.user().into(),
            database: db,
            password: PasswordSpec {
                env: None,
                file: Some(server.password_file()),
            },
            table: "public.items".into(),
            cursor: "updated_at".into(),
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

fn mariadb() -> MysqlSource {
    let server = MariaDb::shared();
    server.create_database(DATABASE);
    server.sql(&format!(
        "USE `{DATABASE}`; SET time_zone = '+00:00'; DROP TABLE IF EXISTS items;
         CREATE TABLE items (id BIGINT NOT NULL, code VARCHAR(40) CHARACTER SET utf8mb4 NOT NULL, u UUID NOT NULL,
             updated_at DATETIME(6) NOT NULL, PRIMARY KEY (id, code, u), KEY (updated_at));
         INSERT INTO items SELECT seq, CONCAT('k-ü-', seq), CONCAT('00000000-0000-4000-8000-', LPAD(LOWER(HEX(seq)), 12, '0')),
             '2024-03-01 00:00:00' + INTERVAL seq MINUTE FROM seq_1_to_{ROWS};"
    ));
    MysqlSource::open(&MysqlSourceSpec {
        connection: ConnectionSpec {
            host: server.host().into(),
            port: Some(server.port()),
            user: server.root_user().into(),
            database: DATABASE.into(),
            password: PasswordSpec::default(),
            table: format!("{DATABASE}.items"),
            cursor: "updated_at".into(),
            columns: None,
            tls: Default::default(),
            null_cursor: Default::default(),
        },
        zero_dates: Default::default(),
        unsigned_bigint: Default::default(),
    })
    .unwrap()
}

#[tokio::test]
async fn postgres_and_mariadb_answer_the_same_digests_for_the_same_keys() {
    let sources: [(&str, Box<dyn Source>); 2] = [("postgres", Box::new(postgres())), ("mariadb", Box::new(mariadb()))];
    let keys: Vec<String> = ["id", "code", "u"].map(String::from).to_vec();
    // Rows 1..=120 (updated 00:01 to 02:00), and the first 30 of them.
    let range = CursorRange::new(micros("2024-03-01T00:00:00Z"), micros("2024-03-01T02:00:30Z"));
    let part = CursorRange::new(micros("2024-03-01T00:00:00Z"), micros("2024-03-01T00:30:30Z"));
    let texts = |n: i64| (1..=n).map(key_text).collect::<Vec<_>>();
    let want = KeyDigest::of(texts(120).iter().map(String::as_str));
    let want_part = KeyDigest::of(texts(30).iter().map(String::as_str));
    let mut answers = Vec::new();
    for (name, source) in &sources {
        assert!(source.supports_delete_detection(), "{name}");
        let digest = source.key_digest(range, &keys).await.unwrap();
        let part_digest = source.key_digest(part, &keys).await.unwrap();
        assert_eq!((digest, part_digest), (want, want_part), "{name}");
        let mut listed = source.list_keys(part, &keys).await.unwrap();
        listed.sort();
        let mut expected = texts(30);
        expected.sort();
        assert_eq!(listed, expected, "{name}");
        let asked = vec![
            key_text(7),
            key_text(250),
            key_text(1000),
            format!("7{KEY_SEPARATOR}k-ü-8{KEY_SEPARATOR}{}", uuid(7)),
        ];
        let mut found = source.existing_keys(&keys, &asked).await.unwrap();
        found.sort();
        assert_eq!(found, vec![key_text(250), key_text(7)], "{name}");
        answers.push(digest);
    }
    assert_eq!(
        answers[0], answers[1],
        "PostgreSQL and MariaDB digests of the same keys"
    );
}
