//! Bad input fails with a clear, permanent (or throttled) error: wrong password, unknown table
//! or column, a NULL cursor, an unmappable type. The password never shows.

use backhaul_core::ErrorClass;
use backhaul_core::connector::Source;
use backhaul_core::cursor::CursorKind;
use backhaul_core::spec::database::PasswordSpec;
use backhaul_testkit::postgres::PostgresServer;

use crate::util::{all_time, extract_all, source, spec};

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, ts timestamptz NOT NULL, d date, p point);
INSERT INTO t VALUES (1, '2024-01-01', '2024-01-01', '(1,2)'), (2, '2024-01-02', NULL, NULL);";

#[tokio::test]
async fn wrong_password_is_permanent_and_never_printed() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let secret = "definitely-not-the-password-6af1";
    let file = dir.path().join("pw");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let mut s = spec(server, &db, "t", "ts");
    s.connection.columns = Some(vec!["id".into(), "ts".into()]);
    s.connection.password = PasswordSpec {
        env: None,
        file: Some(file),
    };
    let src = source(&s);
    assert!(!format!("{src:?}").contains(secret), "Debug shows the password");
    let e = src.describe().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("authentication failed") && text.contains("28P01"),
        "{text}"
    );
    assert!(!text.contains(secret) && !format!("{e:?}").contains(secret), "{text}");
    // The right password from the file works (trailing newline removed).
    std::fs::write(dir.path().join("pw"), format!("{}\n", server.password())).unwrap();
    server.psql(&db, TABLE).unwrap();
    assert!(!format!("{:?}", source(&s)).contains(server.password()));
    source(&s).describe().await.unwrap();
}

#[tokio::test]
async fn unknown_database_table_and_columns_name_themselves() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server.psql(&db, TABLE).unwrap();

    let e = source(&spec(server, &db, "nope", "ts")).describe().await.unwrap_err();
    assert_eq!((e.class(), e.kind()), (ErrorClass::Permanent, "invalid_object"));
    assert!(
        e.to_string().contains("table nope") && e.to_string().contains("no such table"),
        "{e}"
    );

    let e = source(&spec(server, &db, "a.b.c.d", "ts"))
        .describe()
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");

    let e = source(&spec(server, &db, "t", "created")).describe().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    let text = e.to_string();
    assert!(
        text.contains("column public.t.created") && text.contains("id, ts, d, p"),
        "{text}"
    );

    let mut s = spec(server, &db, "t", "ts");
    s.connection.columns = Some(vec!["id".into(), "ts".into(), "missing".into()]);
    let e = source(&s).describe().await.unwrap_err().to_string();
    assert!(e.contains("public.t.missing") && e.contains("source.columns"), "{e}");

    let e = source(&spec(server, &db, "t", "p"))
        .describe()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("`p` (point)"), "an unmappable type is named: {e}");
    let e = {
        let mut s = spec(server, &db, "t", "id");
        s.connection.columns = Some(vec!["id".into(), "ts".into()]);
        s.connection.cursor = "id".into();
        source(&s).describe().await.unwrap()
    };
    assert_eq!(e.cursor_kind, CursorKind::Integer);

    let mut s = spec(server, &db, "t", "ts");
    s.connection.database = "no_such_db".into();
    let e = source(&s).describe().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(
        e.to_string().contains("no_such_db") && e.to_string().contains("3D000"),
        "{e}"
    );

    // Quoted and schema-qualified names resolve like SQL does.
    server
        .psql(
            &db,
            "CREATE SCHEMA \"Sales EU\"; CREATE TABLE \"Sales EU\".\"Orders\" (ts timestamptz);",
        )
        .unwrap();
    let d = source(&spec(server, &db, "\"Sales EU\".\"Orders\"", "ts"))
        .describe()
        .await
        .unwrap();
    assert_eq!(d.cursor_kind, CursorKind::Timestamp);
}

#[tokio::test]
async fn null_cursor_rows_fail_the_job_at_prepare() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server.psql(&db, TABLE).unwrap();
    let mut s = spec(server, &db, "t", "d");
    s.connection.columns = Some(vec!["id".into(), "d".into()]);
    let src = source(&s);
    let e = src.prepare(all_time()).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    let text = e.to_string();
    assert!(
        text.contains("column public.t.d") && text.contains("NULL cursor"),
        "{text}"
    );
    // Once the NULL is gone, prepare passes.
    server
        .psql(&db, "UPDATE t SET d = '2024-01-02' WHERE d IS NULL")
        .unwrap();
    src.prepare(all_time()).await.unwrap();
}

#[tokio::test]
async fn too_many_connections_is_throttled() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            &format!(
                "{TABLE} CREATE ROLE limited LOGIN PASSWORD 'pw' CONNECTION LIMIT 0; GRANT SELECT ON t TO limited;"
            ),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    let mut s = spec(server, &db, "t", "ts");
    s.connection.user = "limited".into();
    s.connection.password.file = Some(dir.path().join("pw"));
    let e = source(&s).describe().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Throttled, "{e}");
    assert!(e.to_string().contains("53300"), "{e}");

    // Without the privilege: a permanent error naming the user.
    server
        .psql(
            &db,
            "ALTER ROLE limited CONNECTION LIMIT -1; REVOKE SELECT ON t FROM limited;",
        )
        .unwrap();
    let e = source(&s).describe().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(
        e.to_string().contains("limited") && e.to_string().contains("SELECT"),
        "{e}"
    );
    let e = extract_all(&source(&s), all_time(), 10).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
}

/// A `SQL_ASCII` database stores text bytes unchecked, so its text may not be UTF-8. The server
/// refuses to send such text to a UTF-8 client (the source's), so the chunk fails as permanent
/// with the server's words; the decoder's own batch UTF-8 check is a second line of defense
/// (unit-tested in `decode.rs`).
#[tokio::test]
async fn text_that_is_not_utf8_fails_permanently_with_the_server_s_words() {
    let server = PostgresServer::shared();
    server
        .psql(
            "postgres",
            "CREATE DATABASE latin TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'",
        )
        .unwrap();
    server
        .psql(
            "latin",
            "CREATE TABLE t (id int PRIMARY KEY, ts timestamptz NOT NULL, name text); \
             INSERT INTO t SELECT g, '2024-01-01', 'name ' || g FROM generate_series(1, 1000) g; \
             UPDATE t SET name = E'caf\\xe9' WHERE id = 700;",
        )
        .unwrap();
    let src = source(&spec(server, "latin", "t", "ts"));
    let e = extract_all(&src, all_time(), 256).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("invalid byte sequence") && text.contains("22021"),
        "{text}"
    );
}
