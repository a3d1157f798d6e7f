//! `sync.mode = "full_refresh"` from PostgreSQL into the local warehouse: every sync reads the
//! whole range again as one new version of the table, swapped in atomically when committed.
//! After every sync the warehouse equals the source exactly (inserts, updates and deletes
//! included); a refresh killed mid-way leaves the previous version queryable, and the next sync
//! completes that refresh exactly once.

use backhaul_testkit::fakesnow::FakeSnow;
use backhaul_testkit::postgres::PostgresServer;

use crate::sync::{chunk_ranges, source_rows, spec, warehouse_rows};
use crate::util::{JobDir, text};

const CURRENT: &str = "SELECT id || ':' || v FROM tags ORDER BY id";

/// A small table whose cursor (`created_at`) says nothing about changes: updates keep it.
fn tags(server: &PostgresServer, db: &str, rows: u32, pad: usize) {
    server
        .psql(
            db,
            &format!(
                "CREATE TABLE tags (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, v text NOT NULL, pad text NOT NULL); \
                 INSERT INTO tags SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '1 second', 'v' || g, repeat('x', {pad}) \
                   FROM generate_series(1, {rows}) g; ANALYZE tags;"
            ),
        )
        .unwrap();
}

/// Data files in the table's `data/` directory.
fn data_files(job: &JobDir, table: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(job.path().join("warehouse").join(table).join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_full_refresh_makes_the_warehouse_equal_the_source() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    tags(server, &db, 50, 1);
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let path = job.write_spec(
        "job.toml",
        &spec(server, &db, "tags", "created_at", "mode = \"full_refresh\""),
    );
    let path = path.to_str().unwrap();

    job.ok(&["sync", path, "--now", "2024-03-02T00:00:00Z"]);
    assert_eq!(warehouse_rows(&job, "tags"), source_rows(server, &db, CURRENT));
    let mark = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp_micros();
    let from = mark("2024-03-01T00:00:00Z");
    assert_eq!(
        chunk_ranges(&job, "tags"),
        [(0, from, mark("2024-03-01T23:55:00Z"))],
        "a refresh is one chunk over the whole range, whatever the chunking says"
    );

    // Updates that leave the cursor alone, inserts and deletes: a refresh sees them all.
    server
        .psql(
            &db,
            "UPDATE tags SET v = 'changed' || id WHERE id % 5 = 0; DELETE FROM tags WHERE id BETWEEN 20 AND 29; \
             INSERT INTO tags VALUES (1001, timestamptz '2024-03-01 12:00:00+00', 'new', 'x');",
        )
        .unwrap();
    job.ok(&["sync", path, "--now", "2024-03-03T00:00:00Z"]);
    assert_eq!(
        warehouse_rows(&job, "tags"),
        source_rows(server, &db, CURRENT),
        "the second version is exactly the source"
    );
    assert_eq!(
        chunk_ranges(&job, "tags"),
        [
            (0, from, mark("2024-03-01T23:55:00Z")),
            (1, from, mark("2024-03-02T23:55:00Z"))
        ],
        "each refresh is a new chunk under the next id; the earlier one keeps its id and range"
    );
    assert!(
        data_files(&job, "tags").iter().all(|f| f.starts_with("tags-c000001-")),
        "the superseded version's files are gone: {:?}",
        data_files(&job, "tags")
    );
    job.ok(&["verify", "tags"]);

    // Everything deleted but one row, then a refresh at the same `now` (the mark stays): still exact.
    server.psql(&db, "DELETE FROM tags WHERE id <> 1001;").unwrap();
    job.ok(&["sync", path, "--now", "2024-03-03T00:00:00Z"]);
    assert_eq!(warehouse_rows(&job, "tags"), ["1001:new"]);
    assert_eq!(chunk_ranges(&job, "tags").len(), 3);
    let verified = job.json(&["verify", "tags"]);
    assert_eq!(
        verified["result"]["chunks"], 1,
        "verify checks the current version: {verified}"
    );
    assert_eq!(verified["result"]["rows"], 1, "{verified}");
}

#[test]
fn a_refresh_killed_mid_way_leaves_the_old_version_and_the_rerun_completes_it_once() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    // Big enough that the refresh is still extracting when the test kills it.
    tags(server, &db, 200_000, 200);
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let path = job.write_spec(
        "job.toml",
        &spec(server, &db, "tags", "created_at", "mode = \"full_refresh\""),
    );
    let path = path.to_str().unwrap();
    job.ok(&["sync", path, "--now", "2024-03-10T00:00:00Z"]);
    let old = source_rows(server, &db, CURRENT);
    assert_eq!(warehouse_rows(&job, "tags").len(), old.len());

    server
        .psql(
            &db,
            "UPDATE tags SET v = 'second' WHERE id <= 1000; DELETE FROM tags WHERE id > 150000;",
        )
        .unwrap();
    let mut child = job
        .cmd()
        .args(["sync", path, "--now", "2024-03-11T00:00:00Z"])
        .spawn()
        .expect("spawn");
    // Killed once the new version's first part is staged: extracted, not committed.
    let staged = job.path().join("stage/tags/chunk-000001");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !staged.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the refresh ended before the test could kill it"
        );
        assert!(std::time::Instant::now() < deadline, "nothing staged within 120 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert_eq!(job.count_committed("tags"), 1, "the new version did not commit");
    assert_eq!(
        warehouse_rows(&job, "tags"),
        old,
        "the previous version is still the table"
    );

    // The rerun plans nothing new: it completes the killed refresh, which becomes the table.
    job.ok(&["sync", path, "--now", "2024-03-12T00:00:00Z"]);
    assert_eq!(
        chunk_ranges(&job, "tags").len(),
        2,
        "no second refresh beside the killed one"
    );
    assert_eq!(job.count_committed("tags"), 2);
    assert_eq!(warehouse_rows(&job, "tags"), source_rows(server, &db, CURRENT));
    job.ok(&["verify", "tags"]);
}

#[test]
fn full_refresh_refuses_dedup_settings_naming_the_key_and_writes_nothing() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    tags(server, &db, 5, 1);
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    for (sync, key) in [
        ("mode = \"full_refresh\"\nlookback = \"1h\"", "sync.lookback"),
        (
            "mode = \"full_refresh\"\ndeletes = \"soft\"\nmetadata_columns = true",
            "sync.deletes",
        ),
        (
            "mode = \"full_refresh\"\nmetadata_columns = true",
            "sync.metadata_columns",
        ),
    ] {
        let path = job.write_spec("job.toml", &spec(server, &db, "tags", "created_at", sync));
        let out = job.run(&["sync", path.to_str().unwrap(), "--now", "2024-03-02T00:00:00Z"]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains(&format!("job.toml: {key}:")), "{err}");
        assert!(!job.path().join("warehouse/tags").exists(), "nothing written");
    }
}

#[test]
fn discover_proposes_full_refresh_for_a_table_without_a_time_cursor_and_the_pipeline_runs_it() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE codes (id bigint PRIMARY KEY, v text NOT NULL); \
             INSERT INTO codes SELECT g, 'c' || g FROM generate_series(1, 30) g; \
             CREATE TABLE orders (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, v text NOT NULL); \
             INSERT INTO orders SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '10 minutes', 'o' || g \
               FROM generate_series(1, 20) g; ANALYZE;",
        )
        .unwrap();
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let source = format!(
        r#"[source]
kind = "postgres"
host = "{host}"
port = {port}
user = "{user}"
database = "{db}"

[source.password]
file = "{password}"

[range]
from = "2024-03-01"
to = "now"

[chunking]
policy = "fixed"
every = "2h"

[stage]
path = "stage"

[destination]
kind = "local"
path = "warehouse"
file_size = "1MiB"
allow_small_files = true

[sync]
mode = "dedup"
lookback = "1h"
"#,
        host = server.host(),
        port = server.port(),
        user = server.user(),
        password = server.password_file().display(),
    );
    let source = job.write_spec("source.toml", &source);
    job.ok(&[
        "discover",
        source.to_str().unwrap(),
        "--write",
        "pipeline.toml",
        "--name",
        "shop",
    ]);
    let written = std::fs::read_to_string(job.path().join("pipeline.toml")).unwrap();
    assert!(
        written.contains("table = \"public.codes\"\ncursor = \"id\"")
            && written.contains("sync_mode = \"full_refresh\"")
            && written.contains("[tables.range]"),
        "{written}"
    );
    let path = job.path().join("pipeline.toml");
    let path = path.to_str().unwrap();
    let codes = |job: &JobDir| {
        job.json(&[
            "query",
            "--warehouse",
            "warehouse",
            "SELECT CAST(id AS VARCHAR) || ':' || v AS r FROM codes ORDER BY id",
        ])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["r"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
    };
    let current = "SELECT id || ':' || v FROM codes ORDER BY id";

    // The shared [sync] is dedup with a lookback; the full_refresh table does without it.
    job.ok(&["sync", path, "--now", "2024-03-02T00:00:00Z"]);
    assert_eq!(codes(&job), source_rows(server, &db, current));
    server
        .psql(
            &db,
            "UPDATE codes SET v = 'renamed' WHERE id = 3; DELETE FROM codes WHERE id > 25; INSERT INTO codes VALUES (99, 'new');",
        )
        .unwrap();
    // The fixed integer range keeps the mark where it is; the refresh runs anyway.
    job.ok(&["sync", path, "--now", "2024-03-03T00:00:00Z"]);
    assert_eq!(codes(&job), source_rows(server, &db, current));
    assert_eq!(chunk_ranges(&job, "shop-codes").len(), 2);
    job.ok(&["verify", path]);
}

/// The same refreshes into Snowflake (a private fakesnow): each commit deletes every row and
/// loads the new version in one transaction; the table equals the source after every sync.
#[test]
fn full_refresh_into_snowflake_replaces_the_table_in_one_transaction() {
    let Some(fake) = FakeSnow::start() else { return };
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    tags(server, &db, 40, 1);
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    std::fs::write(job.path().join("password"), "any\n").unwrap();
    let local = spec(server, &db, "tags", "created_at", "mode = \"full_refresh\"");
    let (start, end) = (local.find("[destination]").unwrap(), local.find("[sync]").unwrap());
    let text = format!(
        "{}[destination]\nkind = \"snowflake\"\naccount = \"test\"\nbase_url = \"{}\"\nuser = \"loader\"\n\
         password_file = \"password\"\ndatabase = \"BACKHAUL_E2E\"\nschema = \"PUBLIC\"\nwarehouse = \"LOAD_WH\"\n\
         table = \"tags\"\nstage = \"internal:BACKHAUL_STAGE\"\nfile_size = \"1MiB\"\nallow_small_files = true\n\
         put_parallel = 1\n\n{}",
        &local[..start],
        fake.url,
        &local[end..]
    );
    let path = job.write_spec("job.toml", &text);
    let path = path.to_str().unwrap();
    let sql = crate::snowflake::Sql::new(&fake.url);
    sql.value("CREATE STAGE IF NOT EXISTS BACKHAUL_STAGE");
    let loaded = || sql.column("SELECT \"ID\" || ':' || \"V\" FROM BACKHAUL_E2E.PUBLIC.TAGS ORDER BY \"ID\"");

    job.ok(&["sync", path, "--now", "2024-03-02T00:00:00Z"]);
    assert_eq!(loaded(), source_rows(server, &db, CURRENT));
    server
        .psql(
            &db,
            "UPDATE tags SET v = 'changed' WHERE id % 4 = 0; DELETE FROM tags WHERE id > 30; \
             INSERT INTO tags VALUES (500, timestamptz '2024-03-01 06:00:00+00', 'new', 'x');",
        )
        .unwrap();
    job.ok(&["sync", path, "--now", "2024-03-03T00:00:00Z"]);
    assert_eq!(loaded(), source_rows(server, &db, CURRENT), "exactly the new version");
    assert_eq!(chunk_ranges(&job, "tags").len(), 2);
    let verified = job.json(&["verify", "tags"]);
    assert_eq!(verified["result"]["chunks"], 1, "{verified}");
}
