//! A sync job's source table changing between runs (the spec does not change): a column whose
//! type changed fails the run before anything is planned or written, naming the table, the
//! column and both types.

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
