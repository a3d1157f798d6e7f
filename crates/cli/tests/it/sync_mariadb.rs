//! `backhaul sync` from MariaDB into the local warehouse, the PostgreSQL scenarios of
//! `sync.rs` against the private MariaDB: after every sync the warehouse equals the source by
//! key (dedup) or holds every row ever inserted (append); killed mid-sync and resumed, the
//! same holds; a cursor that went backwards is refused. "Now" is given with `--now`.

use backhaul_testkit::mariadb::MariaDb;

use crate::sync::{chunk_ranges, sections_after_source, warehouse_rows};
use crate::util::{JobDir, text};

const PASSWORD: &str = "sync-secret-password";

/// A database of its own (and the loader user's rights on it) for one test.
fn database(server: &MariaDb, name: &str, ddl: &str) {
    server.sql(&format!("DROP DATABASE IF EXISTS `{name}`"));
    server.create_database(name);
    server.sql(&format!("USE `{name}`; SET time_zone = '+00:00'; {ddl}"));
    server.create_user(&format!("{name}_loader"), PASSWORD, name);
}

fn spec(server: &MariaDb, job: &JobDir, db: &str, table: &str, cursor: &str, sync: &str) -> String {
    let password = job.path().join("password");
    std::fs::write(&password, PASSWORD).expect("write password");
    format!(
        r#"version = 1
name = "{table}"

[source]
kind = "mysql"
host = "{host}"
port = {port}
user = "{db}_loader"
database = "{db}"
table = "{table}"
cursor = "{cursor}"

[source.password]
file = "{password}"

{rest}"#,
        rest = sections_after_source(table, sync),
        host = server.host(),
        port = server.port(),
        password = password.display(),
    )
}

/// `id:v` of the source rows `filter` selects, by id.
fn source_rows(server: &MariaDb, db: &str, table: &str, filter: &str) -> Vec<String> {
    server
        .sql(&format!(
            "USE `{db}`; SET time_zone = '+00:00'; SELECT CONCAT(id, ':', v) FROM {table} WHERE {filter} ORDER BY id"
        ))
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn mariadb_dedup_sync_keeps_the_newest_version_of_every_key_across_syncs() {
    let server = MariaDb::shared();
    let db = "sync_dedup";
    database(
        server,
        db,
        "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, updated_at DATETIME(6) NOT NULL, \
           v VARCHAR(64) NOT NULL, KEY (updated_at)); \
         INSERT INTO items SELECT seq, '2024-03-01' + INTERVAL seq * 5 MINUTE, CONCAT('v', seq) FROM seq_1_to_100; \
         ANALYZE TABLE items;",
    );
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let sync = "mode = \"dedup\"\nlag = \"5m\"\nlookback = \"1h\"";
    let path = job.write_spec("job.toml", &spec(server, &job, db, "items", "updated_at", sync));
    let path = path.to_str().unwrap();

    // First sync: the backfill from range.from to now − lag.
    job.ok(&["sync", path, "--now", "2024-03-01T08:20:00Z"]);
    assert_eq!(
        warehouse_rows(&job, "items"),
        source_rows(server, db, "items", "updated_at < '2024-03-01 08:15:00'")
    );
    let before = chunk_ranges(&job, "items");

    // Updates (bumping updated_at), a new row, and a late row inside the lookback window.
    server.sql(&format!(
        "USE `{db}`; \
         UPDATE items SET v = CONCAT('updated', id), updated_at = '2024-03-01 08:40:00' WHERE id <= 10; \
         INSERT INTO items VALUES (1001, '2024-03-01 07:50:00', 'late'), (1002, '2024-03-01 09:00:00', 'new');"
    ));
    job.ok(&["sync", path, "--now", "2024-03-01T12:00:00Z"]);
    assert_eq!(
        warehouse_rows(&job, "items"),
        source_rows(server, db, "items", "TRUE"),
        "after the second sync the warehouse holds exactly the source's rows, one per key"
    );
    let after = chunk_ranges(&job, "items");
    assert_eq!(
        after[..before.len()],
        before[..],
        "earlier chunks keep their ids and ranges"
    );

    // A late update inside the lookback of the third sync.
    server.sql(&format!(
        "USE `{db}`; UPDATE items SET v = 'again', updated_at = '2024-03-01 11:30:00' WHERE id = 1001;"
    ));
    job.ok(&["sync", path, "--now", "2024-03-01T13:00:00Z"]);
    assert_eq!(warehouse_rows(&job, "items"), source_rows(server, db, "items", "TRUE"));
    job.ok(&["verify", "items"]);

    // The cursor goes backwards: refused, naming table and key, nothing planned or written.
    let planned = chunk_ranges(&job, "items");
    let loaded = warehouse_rows(&job, "items");
    server.sql(&format!(
        "USE `{db}`; UPDATE items SET updated_at = updated_at - INTERVAL 1 DAY;"
    ));
    let out = job.run(&["sync", path, "--now", "2024-03-01T14:00:00Z"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("source.cursor") && err.contains("items"), "{err}");
    assert_eq!(chunk_ranges(&job, "items"), planned, "nothing planned");
    assert_eq!(warehouse_rows(&job, "items"), loaded, "nothing written");
}

#[test]
fn mariadb_append_sync_loads_every_inserted_row_once() {
    let server = MariaDb::shared();
    let db = "sync_append";
    database(
        server,
        db,
        "CREATE TABLE events (id BIGINT NOT NULL PRIMARY KEY, created_at TIMESTAMP(6) NOT NULL, \
           v VARCHAR(64) NOT NULL, KEY (created_at)); \
         INSERT INTO events SELECT seq, '2024-03-01' + INTERVAL seq * 3 MINUTE, CONCAT('e', seq) FROM seq_1_to_100; \
         ANALYZE TABLE events;",
    );
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let path = job.write_spec(
        "job.toml",
        &spec(server, &job, db, "events", "created_at", "mode = \"append\""),
    );
    let path = path.to_str().unwrap();
    job.ok(&["sync", path, "--now", "2024-03-01T03:00:00Z"]);
    assert_eq!(
        warehouse_rows(&job, "events"),
        source_rows(server, db, "events", "created_at < '2024-03-01 02:55:00'")
    );
    server.sql(&format!(
        "USE `{db}`; SET time_zone = '+00:00'; \
         INSERT INTO events SELECT seq, '2024-03-01' + INTERVAL seq * 3 MINUTE, CONCAT('e', seq) FROM seq_101_to_150;"
    ));
    job.ok(&["sync", path, "--now", "2024-03-01T09:00:00Z"]);
    assert_eq!(
        warehouse_rows(&job, "events"),
        source_rows(server, db, "events", "TRUE"),
        "every row ever inserted, once"
    );
}

#[test]
fn a_mariadb_sync_killed_mid_run_resumes_to_exactly_the_source_rows() {
    let server = MariaDb::shared();
    let db = "sync_kill";
    database(
        server,
        db,
        "CREATE TABLE accounts (id BIGINT NOT NULL PRIMARY KEY, updated_at DATETIME(6) NOT NULL, \
           v VARCHAR(64) NOT NULL, KEY (updated_at)); \
         INSERT INTO accounts SELECT seq, '2024-03-01' + INTERVAL seq MINUTE, CONCAT('v', seq) FROM seq_1_to_600; \
         ANALYZE TABLE accounts;",
    );
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let path = job.write_spec(
        "job.toml",
        &spec(server, &job, db, "accounts", "updated_at", "mode = \"dedup\""),
    );
    let path = path.to_str().unwrap();
    job.ok(&["sync", path, "--now", "2024-03-01T06:00:00Z"]);
    let before = job.count_committed("accounts");
    // Updates and inserts spread over ten days: the next sync plans 240 hourly chunks.
    server.sql(&format!(
        "USE `{db}`; \
         UPDATE accounts SET v = CONCAT('u', id), updated_at = updated_at + INTERVAL 5 DAY WHERE id % 3 = 0; \
         INSERT INTO accounts SELECT seq, '2024-03-01' + INTERVAL seq * 20 MINUTE, CONCAT('n', seq) FROM seq_601_to_1300;"
    ));
    let mut child = job
        .cmd()
        .args(["sync", path, "--now", "2024-03-11T06:00:00Z", "--workers", "2"])
        .spawn()
        .expect("spawn");
    job.wait_for_commits(&mut child, "accounts", before + 5);
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert!(job.count_committed("accounts") < chunk_ranges(&job, "accounts").len());
    job.ok(&["sync", path, "--now", "2024-03-11T06:00:00Z", "--workers", "2"]);
    assert_eq!(
        warehouse_rows(&job, "accounts"),
        source_rows(server, db, "accounts", "updated_at < '2024-03-11 05:55:00'")
    );
    job.ok(&["verify", "accounts"]);
}

/// `id:v:deleted` of every row of the warehouse table, by id.
fn rows_with_deleted(job: &JobDir, table: &str) -> Vec<String> {
    let v = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        &format!(
            "SELECT CAST(id AS VARCHAR) || ':' || v || ':' || CAST(_backhaul_deleted AS VARCHAR) AS r FROM {table} ORDER BY id"
        ),
    ]);
    let mut rows: Vec<(i64, String)> = v
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["r"].as_str().expect("r").to_string())
        .map(|r| (r.split(':').next().unwrap().parse().unwrap(), r))
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, r)| r).collect()
}

/// The source's rows as the warehouse should show them (`id:v:false`), plus the given deleted
/// rows (`id:v`), by id.
fn with_deleted(server: &MariaDb, db: &str, deleted: &[&str]) -> Vec<String> {
    let mut rows: Vec<(i64, String)> = source_rows(server, db, "items", "TRUE")
        .into_iter()
        .map(|r| format!("{r}:false"))
        .chain(deleted.iter().map(|d| format!("{d}:true")))
        .map(|r| (r.split(':').next().unwrap().parse().unwrap(), r))
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, r)| r).collect()
}

/// Hard-delete detection from MariaDB: the MySQL digest, key-list and lookup queries against a
/// real server. Deleted keys are flagged, an update past the mark is a move (not a delete), a
/// re-inserted key is live again, and an unchanged range costs one digest query per side.
#[test]
fn mariadb_soft_deletes_follow_the_source_across_syncs() {
    let server = MariaDb::shared();
    let db = "sync_deletes";
    database(
        server,
        db,
        "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, updated_at DATETIME(6) NOT NULL, \
           v VARCHAR(64) NOT NULL, KEY (updated_at)); \
         INSERT INTO items SELECT seq, '2024-03-01' + INTERVAL seq * 4 MINUTE, CONCAT('v', seq) FROM seq_1_to_100; \
         ANALYZE TABLE items;",
    );
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let sync = "mode = \"dedup\"\nlookback = \"1h\"\ndeletes = \"soft\"\nmetadata_columns = true";
    let path = job.write_spec("job.toml", &spec(server, &job, db, "items", "updated_at", sync));
    let path = path.to_str().unwrap();
    let sync_at = |now: &str| job.json(&["sync", path, "--now", now])["deletes"].clone();
    let unchanged = |d: &serde_json::Value| {
        assert_eq!(d["deleted"], 0, "{d}");
        assert_eq!(d["listings"], 0, "{d}");
        assert_eq!(d["source_digests"], d["ranges_checked"], "{d}");
        assert_eq!(d["destination_digests"], d["ranges_checked"], "{d}");
    };

    let first = sync_at("2024-03-01T08:00:00Z");
    unchanged(&first);
    assert!(first["ranges_checked"].as_u64().unwrap() >= 7, "{first}");
    assert_eq!(rows_with_deleted(&job, "items"), with_deleted(server, db, &[]));

    server.sql(&format!(
        "USE `{db}`; DELETE FROM items WHERE id IN (3, 50, 51); \
         UPDATE items SET v = 'moved', updated_at = '2024-03-01 08:30:00' WHERE id = 7; \
         INSERT INTO items VALUES (200, '2024-03-01 08:10:00', 'new');"
    ));
    let second = sync_at("2024-03-01T09:00:00Z");
    assert_eq!(second["deleted"], 3, "{second}");
    assert_eq!(
        rows_with_deleted(&job, "items"),
        with_deleted(server, db, &["3:v3", "50:v50", "51:v51"])
    );

    server.sql(&format!(
        "USE `{db}`; INSERT INTO items VALUES (3, '2024-03-01 09:10:00', 'back'); \
         UPDATE items SET v = 'late', updated_at = '2024-03-01 10:00:00' WHERE id = 10;"
    ));
    let third = sync_at("2024-03-01T09:40:00Z");
    assert_eq!(third["deleted"], 0, "{third}");
    assert_eq!(third["moved"], 1, "id 10 moved past the mark: {third}");

    let fourth = sync_at("2024-03-01T11:00:00Z");
    unchanged(&fourth);
    assert_eq!(
        rows_with_deleted(&job, "items"),
        with_deleted(server, db, &["50:v50", "51:v51"])
    );
    job.ok(&["verify", "items"]);
}
