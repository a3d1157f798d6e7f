//! Pipelines of many tables: `discover --write` proposes a pipeline for a PostgreSQL schema of
//! 22 tables, the pipeline syncs every table into the local warehouse as a role the server
//! allows only 3 connections (so a run that opened more would fail), a second sync is
//! incremental, and bad pipelines are refused naming the table and key before anything is
//! written. "Now" is given with `--now`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use backhaul_testkit::mariadb::MariaDb;
use backhaul_testkit::postgres::PostgresServer;

use crate::util::{JobDir, text};

const TABLES: usize = 20;
const ROLE_PASSWORD: &str = "pipeline-secret";

/// A schema of 20 mutable tables (`t_01`..`t_20`: key, updated_at, created_at), an insert-only
/// table without a key (`events`) and a lookup table without any time column (`lookup`), and
/// a role limited to 3 connections that can read them.
fn schema(server: &PostgresServer, db: &str, role: &str) {
    let mut sql = String::new();
    for i in 1..=TABLES {
        sql.push_str(&format!(
            "CREATE TABLE t_{i:02} (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, \
               created_at timestamptz NOT NULL, v text NOT NULL); \
             INSERT INTO t_{i:02} SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '10 minutes', \
               timestamptz '2024-03-01 00:00:00+00', 'v' || g FROM generate_series(1, {rows}) g;",
            rows = 20 + i
        ));
    }
    sql.push_str(
        "CREATE TABLE events (created_at timestamptz NOT NULL, kind text); \
         INSERT INTO events SELECT timestamptz '2024-03-01 00:00:00+00' + g * interval '7 minutes', 'e' FROM generate_series(1, 50) g; \
         CREATE TABLE lookup (code text PRIMARY KEY, name text); \
         INSERT INTO lookup VALUES ('a', 'A'); ANALYZE;",
    );
    sql.push_str(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{ROLE_PASSWORD}' CONNECTION LIMIT 3; \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
    ));
    server.psql(db, &sql).unwrap();
}

/// The connection and the shared sections discover copies into the pipeline it writes.
fn source_toml(server: &PostgresServer, db: &str, role: &str) -> String {
    format!(
        r#"[source]
kind = "postgres"
host = "{host}"
port = {port}
user = "{role}"
database = "{db}"

[source.password]
file = "role-password"

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
mode = "append"
lag = "5m"
"#,
        host = server.host(),
        port = server.port(),
    )
}

/// Rows per table in the warehouse, in one query.
fn warehouse_counts(job: &JobDir, tables: &[String]) -> Vec<(String, u64)> {
    let sql = tables
        .iter()
        .map(|t| format!("SELECT '{t}' AS t, count(*) AS n FROM {t}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows = job.json(&["query", "--warehouse", "warehouse", &format!("{sql} ORDER BY t")]);
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["t"].as_str().unwrap().to_string(), r["n"].as_u64().unwrap()))
        .collect()
}

/// Rows per table at the source below `before`.
fn source_counts(server: &PostgresServer, db: &str, tables: &[String], before: &str) -> Vec<(String, u64)> {
    let sql = tables
        .iter()
        .map(|t| {
            let cursor = if t == "events" { "created_at" } else { "updated_at" };
            format!("SELECT '{t}' AS t, count(*) FROM {t} WHERE {cursor} < '{before}'")
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    server
        .psql(db, &format!("{sql} ORDER BY t"))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (t, n) = l.split_once('|').unwrap();
            (t.to_string(), n.parse().unwrap())
        })
        .collect()
}

/// Samples the role's connections in `pg_stat_activity` until dropped; keeps the maximum.
struct ConnectionSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ConnectionSampler {
    fn start(server: &'static PostgresServer, db: &str, role: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicUsize::new(0));
        let (db, role) = (db.to_string(), role.to_string());
        let thread = std::thread::spawn({
            let (stop, max) = (stop.clone(), max.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let n: usize = server
                        .psql(
                            &db,
                            &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'"),
                        )
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    max.fetch_max(n, Ordering::Relaxed);
                }
            }
        });
        ConnectionSampler {
            stop,
            max,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.max.load(Ordering::Relaxed)
    }
}

#[test]
fn a_discovered_pipeline_of_22_tables_syncs_within_three_connections() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    let role = format!("{db}_loader");
    schema(server, &db, &role);
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    std::fs::write(job.path().join("role-password"), ROLE_PASSWORD).unwrap();
    let source = job.write_spec("source.toml", &source_toml(server, &db, &role));
    let source = source.to_str().unwrap();

    // Discover: every table, candidates ranked, as JSON.
    let catalog = job.json(&["discover", source]);
    let tables = catalog["tables"].as_array().unwrap();
    assert_eq!(tables.len(), TABLES + 2, "{catalog}");
    let t01 = tables.iter().find(|t| t["name"] == "t_01").unwrap();
    assert_eq!(t01["table"], "public.t_01");
    assert_eq!(t01["primary_key"], serde_json::json!(["id"]));
    let ranked: Vec<&str> = t01["cursor_candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["column"].as_str().unwrap())
        .collect();
    assert_eq!(ranked, ["updated_at", "created_at", "id"]);

    // Write the pipeline; the user's one edit is the connection limit.
    job.ok(&["discover", source, "--write", "pipeline.toml", "--name", "shop"]);
    let written = std::fs::read_to_string(job.path().join("pipeline.toml")).unwrap();
    assert_eq!(written.matches("\n[[tables]]").count(), TABLES + 1, "{written}");
    assert!(
        written.contains("# [[tables]]\n# table = \"public.lookup\""),
        "{written}"
    );
    assert!(
        written.contains("table = \"public.t_07\"\ncursor = \"updated_at\""),
        "{written}"
    );
    assert!(written.contains("sync_mode = \"dedup\""), "{written}");
    let written = written.replace("max_source_connections = 4", "max_source_connections = 3");
    let pipeline = job.write_spec("pipeline.toml", &written);
    let pipeline = pipeline.to_str().unwrap();
    let e = job.run(&["discover", source, "--write", "pipeline.toml"]);
    assert!(!e.status.success(), "an existing file is not overwritten");

    let plan = job.json(&["plan", pipeline, "--now", "2024-03-01T06:00:00Z"]);
    assert_eq!(plan["tables"].as_array().unwrap().len(), TABLES + 1, "{plan}");

    // First sync: the backfill of every table, never more than 3 connections of the role.
    let sampler = ConnectionSampler::start(server, &db, &role);
    let first = job.json(&["sync", pipeline, "--now", "2024-03-01T06:00:00Z", "--workers", "2"]);
    let most = sampler.finish();
    assert!(most <= 3, "the role had {most} connections at once");
    assert_eq!(first["exit_code"], 0, "{first}");
    let results = first["tables"].as_array().unwrap();
    assert_eq!(results.len(), TABLES + 1);
    assert!(results.iter().all(|t| t["exit_code"] == 0), "{first}");
    let mut names: Vec<String> = (1..=TABLES).map(|i| format!("t_{i:02}")).collect();
    names.push("events".into());
    names.sort();
    assert_eq!(
        warehouse_counts(&job, &names),
        source_counts(server, &db, &names, "2024-03-01 05:55:00+00")
    );

    // New and updated rows; the second sync reads only them.
    server
        .psql(
            &db,
            "INSERT INTO t_01 VALUES (1000, timestamptz '2024-03-01 07:00:00+00', timestamptz '2024-03-01 07:00:00+00', 'new'); \
             UPDATE t_02 SET v = 'changed', updated_at = timestamptz '2024-03-01 07:30:00+00' WHERE id = 1;",
        )
        .unwrap();
    let second = job.json(&["sync", pipeline, "--now", "2024-03-01T12:00:00Z"]);
    assert_eq!(second["exit_code"], 0, "{second}");
    let this_run = |job: &str| {
        second["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["job"] == job)
            .unwrap()["result"]["this_run"]["rows"]
            .as_u64()
            .unwrap()
    };
    // t_01: rows 36..=41 (05:55 to 11:55) and the new row; nothing loaded before is read
    // again except the one-hour lookback.
    let t01_new = this_run("shop-t_01");
    assert!(t01_new < 21, "t_01 loaded {t01_new} rows: not incremental");
    assert_eq!(
        warehouse_counts(&job, &names),
        source_counts(server, &db, &names, "2024-03-01 11:55:00+00")
    );
    let status = job.json(&["status", pipeline]);
    assert_eq!(status["jobs"].as_array().unwrap().len(), TABLES + 1, "{status}");
    // `verify` of the pipeline re-measures every table's chunks at the warehouse.
    let verified = job.json(&["verify", pipeline]);
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["jobs"].as_array().unwrap().len(), TABLES + 1, "{verified}");
}

/// A pipeline spec over the same schema with `tables` written in by the test.
fn pipeline_with(server: &PostgresServer, db: &str, role: &str, tables: &str) -> String {
    format!(
        "version = 1\n\n[pipeline]\nname = \"bad\"\n\n{}\n{tables}\n",
        source_toml(server, db, role)
    )
}

#[test]
fn bad_pipelines_name_the_table_and_key_and_write_nothing() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    let role = format!("{db}_loader");
    schema(server, &db, &role);
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    std::fs::write(job.path().join("role-password"), ROLE_PASSWORD).unwrap();
    let cases = [
        (
            "[[tables]]\ntable = \"t_01\"\ncursor = \"updated_at\"\n\n[[tables]]\ntable = \"orders\"\ncursor = \"updated_at\"\n",
            "tables[1].table: table `orders` does not exist in `public`",
        ),
        (
            "[[tables]]\ntable = \"events\"\ncursor = \"created_at\"\nsync_mode = \"dedup\"\n",
            "tables[0].primary_key: table `public.events` syncs in dedup mode but declares no primary key",
        ),
        (
            "[[tables]]\ntable = \"t_01\"\ncursor = \"changed_at\"\n",
            "tables[0].cursor: table `public.t_01` has no column `changed_at`",
        ),
        (
            "[schema]\ninclude = [\"t_[0-9]*\"]\n",
            "schema.include[0]: `t_[0-9]*`: `[` is not allowed",
        ),
    ];
    for (tables, expected) in cases {
        let path = job.write_spec("bad.toml", &pipeline_with(server, &db, &role, tables));
        let path = path.to_str().unwrap();
        let runs: [&[&str]; 2] = [&["sync", path, "--now", "2024-03-01T06:00:00Z"], &["backfill", path]];
        for args in runs {
            let command = args[0];
            let out = job.run(args);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command} {tables}: {stderr}");
            assert!(stderr.contains(&format!("bad.toml: {expected}")), "{command}: {stderr}");
        }
    }
    assert!(!job.path().join("state.db").exists(), "no state was written");
    assert!(!job.path().join("warehouse").exists(), "no destination was written");
}

#[test]
fn mariadb_discover_lists_keys_and_ranked_cursors() {
    const DB: &str = "pipeline_discover";
    let server = MariaDb::shared();
    server.create_database(DB);
    server.sql(&format!(
        "USE `{DB}`;
         DROP TABLE IF EXISTS orders, order_lines;
         CREATE TABLE orders (id BIGINT NOT NULL PRIMARY KEY, created_at DATETIME(6) NOT NULL,
             modified_at TIMESTAMP(3) NULL, amount DECIMAL(10,2));
         CREATE TABLE order_lines (order_id BIGINT NOT NULL, line INT NOT NULL, inserted_at DATE NOT NULL,
             PRIMARY KEY (order_id, line));"
    ));
    server.create_user("discoverer", "discover-password", DB);
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let source = job.write_spec(
        "source.toml",
        &format!(
            "[source]\nkind = \"mysql\"\nhost = \"{}\"\nport = {}\nuser = \"discoverer\"\ndatabase = \"{DB}\"\n\n[source.password]\nenv = \"DISCOVER_PASSWORD\"\n",
            server.host(),
            server.port()
        ),
    );
    let out = job
        .cmd()
        .args(["discover", source.to_str().unwrap(), "--output", "json"])
        .env("DISCOVER_PASSWORD", "discover-password")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let catalog: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(catalog["schema"], DB);
    let table = |name: &str| {
        catalog["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == name)
            .unwrap_or_else(|| panic!("{name} in {catalog}"))
            .clone()
    };
    let candidates = |t: &serde_json::Value| -> Vec<(String, String)> {
        t["cursor_candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["column"].as_str().unwrap().into(), c["role"].as_str().unwrap().into()))
            .collect()
    };
    let orders = table("orders");
    assert_eq!(orders["primary_key"], serde_json::json!(["id"]));
    assert_eq!(
        candidates(&orders),
        [
            ("modified_at".to_string(), "updated_at".to_string()),
            ("created_at".into(), "created_at".into()),
            ("id".into(), "integer_key".into())
        ]
    );
    let lines = table("order_lines");
    assert_eq!(lines["primary_key"], serde_json::json!(["order_id", "line"]));
    assert_eq!(
        candidates(&lines),
        [("inserted_at".to_string(), "created_at".to_string())]
    );
    assert_eq!(lines["columns"][2]["cursor_kind"], "date");
}

#[test]
fn sync_on_a_coordinator_refuses_a_pipeline_before_calling_it() {
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let path = job.write_spec("pipeline.toml", "version = 1\n\n[pipeline]\nname = \"shop\"\n");
    // Nothing listens on port 1: the refusal must come before any call.
    let out = job.run(&["sync", path.to_str().unwrap(), "--coordinator", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("not a pipeline"), "{err}");
}
