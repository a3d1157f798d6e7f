//! A sync job's source table changing between runs (the spec does not change): an added column
//! joins the table, a dropped one stays (NULL from then on), both in the run's report; a column
//! whose type changed fails the run before anything is planned or written, naming the table,
//! the column and both types.

use backhaul_testkit::fakesnow::FakeSnow;
use backhaul_testkit::postgres::PostgresServer;

use crate::sync::{chunk_ranges, spec, warehouse_rows};
use crate::util::{JobDir, text};

#[test]
fn a_column_whose_type_changed_fails_the_sync_naming_column_and_both_types() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE retyped (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, v text NOT NULL, n integer); \
             INSERT INTO retyped SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '5 minutes', 'v' || g, g \
               FROM generate_series(1, 50) g; ANALYZE retyped;",
        )
        .unwrap();
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let path = job.write_spec(
        "job.toml",
        &spec(server, &db, "retyped", "updated_at", "mode = \"dedup\""),
    );
    let path = path.to_str().unwrap();
    job.ok(&["sync", path, "--now", "2024-03-01T06:00:00Z"]);
    let planned = chunk_ranges(&job, "retyped");
    let loaded = warehouse_rows(&job, "retyped");

    server
        .psql(
            &db,
            "ALTER TABLE retyped ALTER COLUMN n TYPE bigint; \
             INSERT INTO retyped VALUES (51, '2024-03-01 06:30:00+00', 'new', 51);",
        )
        .unwrap();
    let out = job.run(&["sync", path, "--now", "2024-03-01T08:00:00Z"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("retyped") && err.contains("`n`") && err.contains("Int32") && err.contains("Int64"),
        "{err}"
    );
    assert_eq!(chunk_ranges(&job, "retyped"), planned, "nothing planned");
    assert_eq!(warehouse_rows(&job, "retyped"), loaded, "nothing written");
}

/// A lookback short enough that row 51 (06:30) is not re-read after `gone` is dropped, so it
/// keeps its value there (a re-read would load its newer version, with `gone` NULL).
const LOOKBACK_10M: &str = "mode = \"dedup\"\nlookback = \"10m\"";

/// `SELECT id, gone, note` of the warehouse table, as `id:gone:note` with `-` for NULL.
fn evolved_rows(job: &JobDir) -> Vec<String> {
    let v = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        "SELECT CAST(id AS VARCHAR) || ':' || coalesce(gone, '-') || ':' || coalesce(note, '-') AS r \
         FROM evolving WHERE id IN (1, 2, 51) ORDER BY id",
    ]);
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| r["r"].as_str().expect("r").to_string())
        .collect()
}

#[test]
fn added_and_dropped_columns_are_followed_and_reported_and_every_chunk_still_verifies() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE evolving (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, v text NOT NULL, gone text NOT NULL); \
             INSERT INTO evolving SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '5 minutes', 'v' || g, 'g' || g \
               FROM generate_series(1, 50) g; ANALYZE evolving;",
        )
        .unwrap();
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let path = job.write_spec("job.toml", &spec(server, &db, "evolving", "updated_at", LOOKBACK_10M));
    let path = path.to_str().unwrap();
    let first = job.json(&["sync", path, "--now", "2024-03-01T06:00:00Z"]);
    assert_eq!(
        first["schema_changes"],
        serde_json::json!({"added": [], "dropped": [], "retyped": []})
    );

    // A column added at the source joins the table; rows loaded before read it as NULL.
    server
        .psql(
            &db,
            "ALTER TABLE evolving ADD COLUMN note text; \
             INSERT INTO evolving VALUES (51, '2024-03-01 06:30:00+00', 'v51', 'g51', 'n51');",
        )
        .unwrap();
    let out = job.ok(&["sync", path, "--now", "2024-03-01T07:00:00Z"]);
    assert!(out.contains("schema    added `note`"), "{out}");

    // A column dropped at the source stays; rows loaded from now on read it as NULL.
    server
        .psql(
            &db,
            "ALTER TABLE evolving DROP COLUMN gone; \
             UPDATE evolving SET note = 'n1', updated_at = '2024-03-01 07:30:00+00' WHERE id = 1;",
        )
        .unwrap();
    let third = job.json(&["sync", path, "--now", "2024-03-01T08:00:00Z"]);
    assert_eq!(
        third["schema_changes"],
        serde_json::json!({"added": [], "dropped": ["gone"], "retyped": []})
    );
    assert_eq!(evolved_rows(&job), ["1:-:n1", "2:g2:-", "51:g51:n51"]);
    assert_eq!(warehouse_rows(&job, "evolving").len(), 51, "one row per key");
    // Each change is reported once, by the sync that first saw it.
    let fourth = job.json(&["sync", path, "--now", "2024-03-01T08:30:00Z"]);
    assert_eq!(
        fourth["schema_changes"],
        serde_json::json!({"added": [], "dropped": [], "retyped": []})
    );

    // Chunks of all three schemas prove against what they extracted.
    assert_eq!(job.json(&["verify", "evolving"])["verified"], true);
    let row = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        "SELECT * FROM evolving WHERE id = 51",
    ]);
    let mut columns: Vec<&str> = row[0].as_object().expect("a row").keys().map(String::as_str).collect();
    columns.sort();
    assert_eq!(columns, ["gone", "id", "note", "updated_at", "v"]);
}

/// The same changes synced into Snowflake (a private fakesnow): the added column is added to the
/// table and its versions table, the dropped one stays NULL for new rows, both are reported,
/// and `verify` measures every chunk in the columns it committed with.
#[test]
fn snowflake_follows_added_and_dropped_columns() {
    let Some(fake) = FakeSnow::start() else { return };
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE evolving (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, v text NOT NULL, gone text NOT NULL); \
             INSERT INTO evolving SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '5 minutes', 'v' || g, 'g' || g \
               FROM generate_series(1, 50) g; ANALYZE evolving;",
        )
        .unwrap();
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    std::fs::write(job.path().join("password"), "any\n").unwrap();
    let local = spec(server, &db, "evolving", "updated_at", LOOKBACK_10M);
    let (start, end) = (local.find("[destination]").unwrap(), local.find("[sync]").unwrap());
    let text = format!(
        "{}[destination]\nkind = \"snowflake\"\naccount = \"test\"\nbase_url = \"{}\"\nuser = \"loader\"\n\
         password_file = \"password\"\ndatabase = \"BACKHAUL_E2E\"\nschema = \"PUBLIC\"\nwarehouse = \"LOAD_WH\"\n\
         table = \"evolving\"\nstage = \"internal:BACKHAUL_STAGE\"\nfile_size = \"1MiB\"\nallow_small_files = true\n\
         put_parallel = 1\n\n{}",
        &local[..start],
        fake.url,
        &local[end..]
    );
    let path = job.write_spec("job.toml", &text);
    let path = path.to_str().unwrap();
    let sql = crate::snowflake::Sql::new(&fake.url);
    sql.value("CREATE STAGE IF NOT EXISTS BACKHAUL_STAGE");
    job.ok(&["sync", path, "--now", "2024-03-01T06:00:00Z"]);

    server
        .psql(
            &db,
            "ALTER TABLE evolving ADD COLUMN note text; \
             INSERT INTO evolving VALUES (51, '2024-03-01 06:30:00+00', 'v51', 'g51', 'n51');",
        )
        .unwrap();
    let second = job.json(&["sync", path, "--now", "2024-03-01T07:00:00Z"]);
    assert_eq!(
        second["schema_changes"]["added"],
        serde_json::json!(["note"]),
        "{second}"
    );

    server
        .psql(
            &db,
            "ALTER TABLE evolving DROP COLUMN gone; \
             UPDATE evolving SET note = 'n1', updated_at = '2024-03-01 07:30:00+00' WHERE id = 1;",
        )
        .unwrap();
    let third = job.json(&["sync", path, "--now", "2024-03-01T08:00:00Z"]);
    assert_eq!(
        third["schema_changes"]["dropped"],
        serde_json::json!(["gone"]),
        "{third}"
    );
    let rows = sql.column(
        "SELECT \"ID\" || ':' || COALESCE(\"GONE\", '-') || ':' || COALESCE(\"NOTE\", '-') \
         FROM BACKHAUL_E2E.PUBLIC.EVOLVING WHERE \"ID\" IN (1, 2, 51) ORDER BY \"ID\"",
    );
    assert_eq!(rows, ["1:-:n1", "2:g2:-", "51:g51:n51"]);
    assert_eq!(sql.value("SELECT COUNT(*) FROM BACKHAUL_E2E.PUBLIC.EVOLVING"), "51");
    assert_eq!(job.json(&["verify", "evolving"])["verified"], true);
}
