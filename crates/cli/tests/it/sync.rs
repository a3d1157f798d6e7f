//! `backhaul sync` from PostgreSQL into the local warehouse: after every sync the warehouse
//! equals the source by key (dedup) or holds every row ever inserted (append). "Now" is given
//! with `--now`, so nothing waits for the clock.

use backhaul_testkit::fakesnow::FakeSnow;
use backhaul_testkit::postgres::PostgresServer;

use crate::util::{JobDir, text};

pub(crate) fn spec(server: &PostgresServer, db: &str, table: &str, cursor: &str, sync: &str) -> String {
    format!(
        r#"version = 1
name = "{table}"

[source]
kind = "postgres"
host = "{host}"
port = {port}
user = "{user}"
database = "{db}"
table = "public.{table}"
cursor = "{cursor}"

[source.password]
file = "{password}"

{rest}"#,
        rest = sections_after_source(table, sync),
        host = server.host(),
        port = server.port(),
        user = server.user(),
        password = server.password_file().display(),
    )
}

/// The spec's sections after `[source]`: hourly chunks from 2024-03-01 to now into the local
/// warehouse, with `sync` as the `[sync]` section.
pub(crate) fn sections_after_source(table: &str, sync: &str) -> String {
    format!(
        r#"
[range]
from = "2024-03-01"
to = "now"

[chunking]
policy = "fixed"
every = "1h"

[stage]
path = "stage"

[destination]
kind = "local"
path = "warehouse"
table = "{table}"
file_size = "1MiB"
allow_small_files = true

[sync]
{sync}
"#
    )
}

/// `id:v` of every row, by id, as the warehouse answers through `backhaul query`.
pub(crate) fn warehouse_rows(job: &JobDir, table: &str) -> Vec<String> {
    let v = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        &format!("SELECT CAST(id AS VARCHAR) || ':' || v AS r FROM {table} ORDER BY id, v"),
    ]);
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| r["r"].as_str().expect("r").to_string())
        .collect()
}

pub(crate) fn source_rows(server: &PostgresServer, db: &str, sql: &str) -> Vec<String> {
    server
        .psql(db, sql)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// (chunk id, range from, range to) of every chunk of the job.
pub(crate) fn chunk_ranges(job: &JobDir, job_id: &str) -> Vec<(i64, i64, i64)> {
    let conn = rusqlite::Connection::open(job.path().join("state.db")).expect("open state");
    let mut stmt = conn
        .prepare("SELECT chunk_id, range_from, range_to FROM chunks WHERE job_id = ?1 ORDER BY chunk_id")
        .expect("prepare");
    stmt.query_map([job_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

#[test]
fn dedup_sync_keeps_the_newest_version_of_every_key_across_syncs() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE items (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, \
               created_at timestamptz NOT NULL, v text NOT NULL); \
             INSERT INTO items SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '5 minutes', \
               timestamptz '2024-03-01 00:00:00+00', 'v' || g FROM generate_series(1, 100) g; ANALYZE items;",
        )
        .unwrap();
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let sync = "mode = \"dedup\"\nlag = \"5m\"\nlookback = \"1h\"";
    let path = job.write_spec("job.toml", &spec(server, &db, "items", "updated_at", sync));
    let path = path.to_str().unwrap();
    let current = "SELECT id || ':' || v FROM items ORDER BY id";

    // First sync: the backfill from range.from to now − lag (ids up to 8:15 are older).
    job.ok(&["sync", path, "--now", "2024-03-01T08:20:00Z"]);
    let first: Vec<String> = source_rows(
        server,
        &db,
        "SELECT id || ':' || v FROM items WHERE updated_at < '2024-03-01 08:15:00+00' ORDER BY id",
    );
    assert_eq!(warehouse_rows(&job, "items"), first);
    let before = chunk_ranges(&job, "items");

    // Updates (bumping updated_at), inserts, and a late row inside the lookback window.
    server
        .psql(
            &db,
            "UPDATE items SET v = 'updated' || id, updated_at = timestamptz '2024-03-01 08:40:00+00' WHERE id <= 10; \
             INSERT INTO items VALUES (1001, timestamptz '2024-03-01 07:50:00+00', timestamptz '2024-03-01 00:00:00+00', 'late');",
        )
        .unwrap();
    job.ok(&["sync", path, "--now", "2024-03-01T12:00:00Z"]);
    assert_eq!(
        warehouse_rows(&job, "items"),
        source_rows(server, &db, current),
        "after the second sync the warehouse holds exactly the source's rows"
    );
    let after = chunk_ranges(&job, "items");
    assert_eq!(
        after[..before.len()],
        before[..],
        "earlier chunks keep their ids and ranges"
    );
    let mark = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp_micros();
    assert_eq!(
        after[before.len()],
        (
            before.len() as i64,
            mark("2024-03-01T07:15:00Z"),
            mark("2024-03-01T08:15:00Z")
        ),
        "the lookback chunk re-reads [mark − lookback, mark) under the next id"
    );

    // A third sync with nothing new still converges, and verify passes on the dedup table.
    server
        .psql(
            &db,
            "UPDATE items SET v = 'again', updated_at = timestamptz '2024-03-01 12:30:00+00' WHERE id = 1001;",
        )
        .unwrap();
    job.ok(&["sync", path, "--now", "2024-03-01T13:00:00Z"]);
    assert_eq!(warehouse_rows(&job, "items"), source_rows(server, &db, current));
    job.ok(&["verify", "items"]);

    // Changing the cursor changes what the job means: refused, nothing planned.
    let planned = chunk_ranges(&job, "items");
    let moved = job.write_spec("moved.toml", &spec(server, &db, "items", "created_at", sync));
    let out = job.run(&["sync", moved.to_str().unwrap(), "--now", "2024-03-01T14:00:00Z"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("different spec"), "{}", text(&out.stderr));
    assert_eq!(chunk_ranges(&job, "items"), planned, "nothing planned");
}

#[test]
fn append_sync_loads_every_inserted_row_once() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE events (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, v text NOT NULL); \
             INSERT INTO events SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '3 minutes', 'e' || g \
               FROM generate_series(1, 100) g; ANALYZE events;",
        )
        .unwrap();
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let path = job.write_spec(
        "job.toml",
        &spec(
            server,
            &db,
            "events",
            "created_at",
            "mode = \"append\"\nmetadata_columns = true",
        ),
    );
    let path = path.to_str().unwrap();
    job.ok(&["sync", path, "--now", "2024-03-01T03:00:00Z"]);
    server
        .psql(
            &db,
            "INSERT INTO events SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '3 minutes', 'e' || g \
               FROM generate_series(101, 150) g;",
        )
        .unwrap();
    job.ok(&["sync", path, "--now", "2024-03-01T09:00:00Z"]);
    assert_eq!(
        warehouse_rows(&job, "events"),
        source_rows(
            server,
            &db,
            "SELECT id || ':' || v FROM events WHERE created_at < '2024-03-01 08:55:00+00' ORDER BY id"
        )
    );
    // The metadata columns in append mode: every row has its chunk's commit time, none is deleted.
    let v = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        "SELECT count(*) AS n, count(_backhaul_synced_at) AS s, count(*) FILTER (WHERE _backhaul_deleted) AS d FROM events",
    ]);
    assert_eq!(v[0]["n"], v[0]["s"], "{v}");
    assert_eq!(v[0]["d"], 0, "{v}");
    job.ok(&["verify", "events"]);
}

#[test]
fn dedup_without_a_primary_key_names_table_and_key_and_writes_nothing() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE nokey (id bigint NOT NULL, updated_at timestamptz NOT NULL, v text NOT NULL); \
             INSERT INTO nokey VALUES (1, '2024-03-01 01:00:00+00', 'a'); ANALYZE nokey;",
        )
        .unwrap();
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let path = job.write_spec(
        "job.toml",
        &spec(server, &db, "nokey", "updated_at", "mode = \"dedup\""),
    );
    let out = job.run(&["sync", path.to_str().unwrap(), "--now", "2024-03-02T00:00:00Z"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("public.nokey") && err.contains("sync.primary_key"),
        "{err}"
    );
    assert!(!job.path().join("warehouse/nokey").exists(), "nothing written");
}

#[test]
fn a_sync_killed_mid_run_resumes_to_exactly_the_source_rows() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE accounts (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, v text NOT NULL); \
             INSERT INTO accounts SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '1 minute', 'v' || g \
               FROM generate_series(1, 600) g; ANALYZE accounts;",
        )
        .unwrap();
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let path = job.write_spec(
        "job.toml",
        &spec(server, &db, "accounts", "updated_at", "mode = \"dedup\""),
    );
    let path = path.to_str().unwrap();
    job.ok(&["sync", path, "--now", "2024-03-01T06:00:00Z"]);
    let before = job.count_committed("accounts");
    // Updates and inserts spread over ten days: the next sync plans 240 hourly chunks.
    server
        .psql(
            &db,
            "UPDATE accounts SET v = 'u' || id, updated_at = updated_at + interval '5 days' WHERE id % 3 = 0; \
             INSERT INTO accounts SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '20 minutes', 'n' || g \
               FROM generate_series(601, 1300) g;",
        )
        .unwrap();
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
        source_rows(
            server,
            &db,
            "SELECT id || ':' || v FROM accounts WHERE updated_at < '2024-03-11 05:55:00+00' ORDER BY id"
        )
    );
    job.ok(&["verify", "accounts"]);
}

/// `sync --coordinator`: the coordinator extends the job (the first time: plans its backfill)
/// and its workers load the new chunks; a sync with nothing new is up to date.
#[test]
fn sync_on_a_coordinator_extends_the_job_and_its_workers_load_it() {
    use crate::cluster::{Coordinator, client_json, start_worker};

    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE items (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, \
               created_at timestamptz NOT NULL, v text NOT NULL); \
             INSERT INTO items SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '5 minutes', \
               timestamptz '2024-03-01 00:00:00+00', 'v' || g FROM generate_series(1, 60) g; ANALYZE items;",
        )
        .unwrap();
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let sync = "mode = \"dedup\"\nlookback = \"1h\"";
    let path = job.write_spec("job.toml", &spec(server, &db, "items", "updated_at", sync));
    let path = path.to_str().unwrap();
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &[]);
    let url = coordinator.url();
    let _worker = start_worker(&job, &url, "w1", &[]);
    let sync_at = |now: &str| {
        client_json(
            &job,
            &["sync", path, "--now", now, "--coordinator", &url, "--wait"],
            &[],
        )
    };

    let first = sync_at("2024-03-01T03:00:00Z");
    assert_eq!(first["sync"]["outcome"], "backfill", "{first}");
    assert_eq!(first["status"]["state"], "succeeded", "{first}");
    server
        .psql(
            &db,
            "UPDATE items SET v = 'updated' || id, updated_at = timestamptz '2024-03-01 04:00:00+00' WHERE id <= 5;",
        )
        .unwrap();
    let second = sync_at("2024-03-01T06:00:00Z");
    assert_eq!(second["sync"]["outcome"], "extended", "{second}");
    assert_eq!(second["sync"]["from_mark"], "2024-03-01T02:55:00Z", "{second}");
    assert!(!second["sync"]["new_chunks"].as_array().unwrap().is_empty());
    assert_eq!(
        warehouse_rows(&job, "items"),
        source_rows(server, &db, "SELECT id || ':' || v FROM items ORDER BY id"),
        "the warehouse holds exactly the source's rows"
    );
    let third = sync_at("2024-03-01T06:00:00Z");
    assert_eq!(third["sync"]["outcome"], "up_to_date", "{third}");
}

/// The same dedup sync into Snowflake (a private fakesnow): the table equals the source by key
/// after every sync, and `verify` re-measures every chunk from the versions table.
#[test]
fn dedup_sync_into_snowflake_keeps_the_newest_version_of_every_key() {
    let Some(fake) = FakeSnow::start() else { return };
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE items (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, v text NOT NULL); \
             INSERT INTO items SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '5 minutes', 'v' || g \
               FROM generate_series(1, 100) g; ANALYZE items;",
        )
        .unwrap();
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    std::fs::write(job.path().join("password"), "any\n").unwrap();
    let local = spec(
        server,
        &db,
        "items",
        "updated_at",
        "mode = \"dedup\"\nlookback = \"1h\"",
    );
    let (start, end) = (local.find("[destination]").unwrap(), local.find("[sync]").unwrap());
    let text = format!(
        "{}[destination]\nkind = \"snowflake\"\naccount = \"test\"\nbase_url = \"{}\"\nuser = \"loader\"\n\
         password_file = \"password\"\ndatabase = \"BACKHAUL_E2E\"\nschema = \"PUBLIC\"\nwarehouse = \"LOAD_WH\"\n\
         table = \"items\"\nstage = \"internal:BACKHAUL_STAGE\"\nfile_size = \"1MiB\"\nallow_small_files = true\n\
         put_parallel = 1\n\n{}",
        &local[..start],
        fake.url,
        &local[end..]
    );
    let path = job.write_spec("job.toml", &text);
    let path = path.to_str().unwrap();
    let sql = crate::snowflake::Sql::new(&fake.url);
    sql.value("CREATE STAGE IF NOT EXISTS BACKHAUL_STAGE");
    let loaded = || sql.column("SELECT \"ID\" || ':' || \"V\" FROM BACKHAUL_E2E.PUBLIC.ITEMS ORDER BY \"ID\"");
    let current = "SELECT id || ':' || v FROM items ORDER BY id";

    job.ok(&["sync", path, "--now", "2024-03-01T08:20:00Z"]);
    assert_eq!(
        loaded(),
        source_rows(
            server,
            &db,
            "SELECT id || ':' || v FROM items WHERE updated_at < '2024-03-01 08:15:00+00' ORDER BY id"
        )
    );
    // Updates (bumping updated_at), and a late row inside the lookback window.
    server
        .psql(
            &db,
            "UPDATE items SET v = 'updated' || id, updated_at = timestamptz '2024-03-01 08:40:00+00' WHERE id <= 10; \
             INSERT INTO items VALUES (1001, timestamptz '2024-03-01 07:50:00+00', 'late');",
        )
        .unwrap();
    job.ok(&["sync", path, "--now", "2024-03-01T12:00:00Z"]);
    assert_eq!(
        loaded(),
        source_rows(server, &db, current),
        "one row per key, the newest"
    );
    job.ok(&["verify", "items"]);
}
