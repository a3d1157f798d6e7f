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
