//! Hard-delete detection (`sync.deletes = "soft"`) from PostgreSQL into the local warehouse:
//! after every sync the warehouse's rows not flagged `_backhaul_deleted` equal the source's rows
//! by key, keys deleted at the source are flagged, a re-inserted key is un-deleted, no key
//! appears twice, and a range nothing changed in costs one digest query on each side (counted
//! by the detection itself and reported in the sync's JSON).

use backhaul_testkit::postgres::PostgresServer;

use crate::sync::{source_rows, spec};
use crate::util::{JobDir, text};

const SYNC: &str = "mode = \"dedup\"\nlookback = \"1h\"\ndeletes = \"soft\"\nmetadata_columns = true";

/// `id:v:deleted` of every row of the warehouse table, by id.
fn warehouse_rows(job: &JobDir, table: &str) -> Vec<String> {
    let v = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        &format!(
            "SELECT CAST(id AS VARCHAR) || ':' || v || ':' || CAST(_backhaul_deleted AS VARCHAR) AS r \
             FROM {table} ORDER BY id"
        ),
    ]);
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| r["r"].as_str().expect("r").to_string())
        .collect()
}

/// The source's rows as the warehouse should show them, plus the given deleted rows.
fn expected(server: &PostgresServer, db: &str, deleted: &[&str]) -> Vec<String> {
    let mut rows: Vec<(i64, String)> = source_rows(server, db, "SELECT id || ':' || v || ':false' FROM items")
        .into_iter()
        .chain(deleted.iter().map(|d| format!("{d}:true")))
        .map(|r| (r.split(':').next().unwrap().parse().unwrap(), r))
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, r)| r).collect()
}

fn sync(job: &JobDir, path: &str, now: &str) -> serde_json::Value {
    let out = job.json(&["sync", path, "--now", now]);
    out["deletes"].clone()
}

/// Every range nothing changed in cost exactly one digest query per side.
fn assert_unchanged(deletes: &serde_json::Value) {
    assert_eq!(deletes["deleted"], 0, "{deletes}");
    assert_eq!(deletes["listings"], 0, "{deletes}");
    assert_eq!(deletes["source_digests"], deletes["ranges_checked"], "{deletes}");
    assert_eq!(deletes["destination_digests"], deletes["ranges_checked"], "{deletes}");
}

#[test]
fn soft_deletes_follow_the_source_across_syncs() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE items (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, \
               created_at timestamptz NOT NULL, v text NOT NULL); \
             INSERT INTO items SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '4 minutes', \
               timestamptz '2024-03-01 00:00:00+00', 'v' || g FROM generate_series(1, 100) g; ANALYZE items;",
        )
        .unwrap();
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let path = job.write_spec("job.toml", &spec(server, &db, "items", "updated_at", SYNC));
    let path = path.to_str().unwrap();

    // First sync: the backfill; nothing deleted, every range checked with one digest each side.
    let first = sync(&job, path, "2024-03-01T08:00:00Z");
    assert_unchanged(&first);
    assert!(first["ranges_checked"].as_u64().unwrap() >= 7, "{first}");
    assert_eq!(warehouse_rows(&job, "items"), expected(server, &db, &[]));

    // Hard deletes, an update (moves to a later cursor: not a delete), an insert.
    server
        .psql(
            &db,
            "DELETE FROM items WHERE id IN (3, 50, 51); \
             UPDATE items SET v = 'moved', updated_at = timestamptz '2024-03-01 08:30:00+00' WHERE id = 7; \
             INSERT INTO items VALUES (200, timestamptz '2024-03-01 08:10:00+00', timestamptz '2024-03-01 00:00:00+00', 'new');",
        )
        .unwrap();
    let second = sync(&job, path, "2024-03-01T09:00:00Z");
    assert_eq!(second["deleted"], 3, "{second}");
    assert_eq!(
        warehouse_rows(&job, "items"),
        expected(server, &db, &["3:v3", "50:v50", "51:v51"])
    );
    let by_range = second["deleted_by_range"].as_array().unwrap();
    assert_eq!(
        by_range.iter().map(|r| r["deleted"].as_u64().unwrap()).sum::<u64>(),
        3,
        "{second}"
    );

    // A deleted key re-inserted at the source is un-deleted by its newer version; a key
    // updated after the sync read it (still at the source) is not deleted.
    server
        .psql(
            &db,
            "INSERT INTO items VALUES (3, timestamptz '2024-03-01 09:10:00+00', timestamptz '2024-03-01 00:00:00+00', 'back'); \
             UPDATE items SET v = 'late', updated_at = timestamptz '2024-03-01 10:00:00+00' WHERE id = 10;",
        )
        .unwrap();
    let third = sync(&job, path, "2024-03-01T09:40:00Z");
    assert_eq!(third["deleted"], 0, "{third}");
    assert_eq!(
        third["moved"], 1,
        "id 10 moved past the mark: a candidate, not a delete: {third}"
    );
    let mut want = expected(server, &db, &["50:v50", "51:v51"]);
    // id 10's new version is past this sync's end: the warehouse still has its old one.
    let ten = want.iter().position(|r| r.starts_with("10:")).unwrap();
    want[ten] = "10:v10:false".into();
    assert_eq!(warehouse_rows(&job, "items"), want);

    // Nothing changed: one digest per range and side, nothing listed or marked.
    let fourth = sync(&job, path, "2024-03-01T11:00:00Z");
    assert_eq!(
        warehouse_rows(&job, "items"),
        expected(server, &db, &["50:v50", "51:v51"])
    );
    assert_unchanged(&fourth);

    // Deleting the newest row leaves the source's newest cursor older than the newest loaded
    // one: with delete detection that is a delete to flag, not a cursor that went backwards.
    server.psql(&db, "DELETE FROM items WHERE id = 10;").unwrap();
    let fifth = sync(&job, path, "2024-03-01T11:30:00Z");
    assert_eq!(fifth["deleted"], 1, "{fifth}");
    assert_eq!(
        warehouse_rows(&job, "items"),
        expected(server, &db, &["10:late", "50:v50", "51:v51"])
    );

    // No key twice, every row has its commit time, and proofs still hold.
    let v = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        "SELECT count(*) AS n, count(DISTINCT id) AS k, count(_backhaul_synced_at) AS s FROM items",
    ]);
    assert_eq!(v[0]["n"], v[0]["k"], "{v}");
    assert_eq!(v[0]["n"], v[0]["s"], "{v}");
    job.ok(&["verify", "items"]);
}

#[test]
fn deletes_need_dedup_and_comparable_keys_and_write_nothing() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE prices (id numeric(10,2) PRIMARY KEY, updated_at timestamptz NOT NULL, v text NOT NULL); \
             INSERT INTO prices VALUES (1.5, '2024-03-01 01:00:00+00', 'a'); ANALYZE prices;",
        )
        .unwrap();
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let append = job.write_spec(
        "append.toml",
        &spec(
            server,
            &db,
            "prices",
            "updated_at",
            "mode = \"append\"\ndeletes = \"soft\"\nmetadata_columns = true",
        ),
    );
    let out = job.run(&["sync", append.to_str().unwrap(), "--now", "2024-03-02T00:00:00Z"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("append.toml") && err.contains("sync.deletes"), "{err}");

    let numeric = job.write_spec("numeric.toml", &spec(server, &db, "prices", "updated_at", SYNC));
    let out = job.run(&["sync", numeric.to_str().unwrap(), "--now", "2024-03-02T00:00:00Z"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("sync.deletes") && err.contains("`id`") && err.contains("public.prices"),
        "{err}"
    );
    assert!(!job.path().join("warehouse/prices").exists(), "nothing written");
}
