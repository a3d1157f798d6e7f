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

/// Two mutable tables (`alpha`, `beta`: key, updated_at, v), 30 rows each, 10 minutes apart
/// from 2024-03-01 00:10.
fn two_tables(server: &PostgresServer, db: &str) {
    let mut sql = String::new();
    for t in ["alpha", "beta"] {
        sql.push_str(&format!(
            "CREATE TABLE {t} (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, v text NOT NULL); \
             INSERT INTO {t} SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '10 minutes', 'v' || g \
               FROM generate_series(1, 30) g; ANALYZE {t};"
        ));
    }
    server.psql(db, &sql).unwrap();
}

/// Pipeline `shop` over both tables, dedup with soft deletes, ending at `to`.
fn two_table_pipeline(server: &PostgresServer, db: &str, to: &str) -> String {
    format!(
        r#"version = 1

[pipeline]
name = "shop"
max_source_connections = 2

[source]
kind = "postgres"
host = "{host}"
port = {port}
user = "{user}"
database = "{db}"

[source.password]
file = "{password}"

[range]
from = "2024-03-01"
to = "{to}"

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
lag = "5m"
lookback = "1h"
deletes = "soft"
metadata_columns = true

[[tables]]
table = "alpha"
cursor = "updated_at"

[[tables]]
table = "beta"
cursor = "updated_at"
"#,
        host = server.host(),
        port = server.port(),
        user = server.user(),
        password = server.password_file().display(),
    )
}

/// `(rows, rows flagged deleted)` of a warehouse table.
fn rows_and_deleted(job: &JobDir, table: &str) -> (u64, u64) {
    let v = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        &format!("SELECT count(*) AS n, count(*) FILTER (WHERE _backhaul_deleted) AS d FROM {table}"),
    ]);
    (v[0]["n"].as_u64().unwrap(), v[0]["d"].as_u64().unwrap())
}

/// A pipeline on a coordinator: `sync --coordinator` sends every table's sync and the workers
/// load them; a row deleted at the source is flagged by the coordinator's delete detection
/// (nobody waits for the chunks there); a schedule of the pipeline runs every table's sync;
/// then `replay` (one table or all) and `cost` (per table, total, `--actual`) take the pipeline.
#[test]
fn a_pipeline_syncs_on_a_coordinator_and_on_a_schedule_and_replays_and_costs() {
    use crate::cluster::{Coordinator, client, client_json, start_worker, wait_until};
    use std::time::Duration;

    let server = PostgresServer::shared();
    let db = server.fresh_database();
    two_tables(server, &db);
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let pipeline = job.write_spec("pipeline.toml", &two_table_pipeline(server, &db, "now"));
    let pipeline = pipeline.to_str().unwrap();
    let mut coordinator = Coordinator::start(&job, "127.0.0.1:0", &[]);
    let url = coordinator.url();
    let mut worker = start_worker(&job, &url, "w1", &[]);
    let sync_at = |now: &str| {
        client_json(
            &job,
            &["sync", pipeline, "--now", now, "--coordinator", &url, "--wait"],
            &[],
        )
    };

    let first = sync_at("2024-03-01T06:00:00Z");
    assert_eq!(first["exit_code"], 0, "{first}");
    let tables = first["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 2, "{first}");
    for t in tables {
        assert_eq!(t["result"]["sync"]["outcome"], "backfill", "{first}");
        assert_eq!(t["result"]["status"]["state"], "succeeded", "{first}");
    }
    assert_eq!(rows_and_deleted(&job, "alpha"), (30, 0));
    assert_eq!(rows_and_deleted(&job, "beta"), (30, 0));

    // A hard delete at the source: the coordinator's delete detection flags it once the
    // second sync's chunks committed.
    server.psql(&db, "DELETE FROM alpha WHERE id = 3;").unwrap();
    let second = sync_at("2024-03-01T07:00:00Z");
    assert_eq!(second["exit_code"], 0, "{second}");
    assert_eq!(second["tables"][0]["result"]["sync"]["outcome"], "extended", "{second}");
    wait_until("the coordinator flags the deleted row", Duration::from_secs(90), || {
        rows_and_deleted(&job, "alpha") == (30, 1)
    });
    assert_eq!(rows_and_deleted(&job, "beta"), (30, 0));

    // A schedule of the pipeline (its end fixed, so the run does not reach today): named after
    // the pipeline; run-now syncs every table's job to that end.
    let fixed = job.write_spec(
        "pipeline-fixed.toml",
        &two_table_pipeline(server, &db, "2024-03-01T10:00:00Z"),
    );
    let fixed = fixed.to_str().unwrap();
    let added = client_json(
        &job,
        &["schedule", "add", fixed, "--cron", "0 2 * * *", "--coordinator", &url],
        &[],
    );
    assert_eq!(
        (added["name"].as_str(), added["outcome"].as_str()),
        (Some("shop"), Some("added")),
        "{added}"
    );
    client_json(&job, &["schedule", "run-now", "shop", "--coordinator", &url], &[]);
    let synced_to = |job_id: &str| {
        let out = client(
            &job,
            &["status", job_id, "--coordinator", &url, "--output", "json"],
            &[],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (v["range"]["to"].as_str() == Some("2024-03-01T10:00:00Z")) && v["finished"] == true
    };
    wait_until("the scheduled run syncs both tables", Duration::from_secs(120), || {
        synced_to("shop-alpha") && synced_to("shop-beta")
    });
    let listed = client_json(&job, &["schedule", "list", "--coordinator", &url], &[]);
    assert_eq!(listed["schedules"][0]["last_run_job"], "shop", "{listed}");
    worker.kill9();
    coordinator.proc.kill9();

    // Replay takes the pipeline: one table, or every table.
    let one = job.json(&[
        "replay",
        fixed,
        "--table",
        "beta",
        "--from",
        "2024-03-01T00:00:00Z",
        "--to",
        "2024-03-01T02:00:00Z",
    ]);
    assert_eq!(one["pipeline"], "shop", "{one}");
    let jobs = one["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{one}");
    assert_eq!(jobs[0]["job"], "shop-beta", "{one}");
    let all = job.json(&[
        "replay",
        fixed,
        "--from",
        "2024-03-01T00:00:00Z",
        "--to",
        "2024-03-01T01:00:00Z",
    ]);
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2, "{all}");
    let bad = job.run(&["replay", fixed, "--table", "orders"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(
        err.contains("--table orders") && err.contains("shop-alpha, shop-beta"),
        "{err}"
    );
    // The replayed chunk of alpha holds the source's rows now: the deleted key is gone.
    assert_eq!(rows_and_deleted(&job, "alpha"), (29, 0));
    job.ok(&["verify", fixed]);

    // Cost of the pipeline: every table's estimate and the total; --actual sums the tables.
    let cost = job.json(&["cost", fixed, "--as-of", "2026-11-01", "--actual"]);
    let names: Vec<&str> = cost["estimate"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["public.alpha", "public.beta"], "{cost}");
    assert_eq!(cost["estimate"]["job"], "shop", "{cost}");
    let months = cost["actual"].as_array().unwrap();
    let deleted: u64 = months.iter().map(|m| m["deleted"].as_u64().unwrap()).sum();
    let inserted: u64 = months.iter().map(|m| m["inserted"].as_u64().unwrap()).sum();
    assert_eq!(deleted, 1, "{months:?}");
    // Both tables' 30 keys, less alpha's key 3, which its replayed chunk no longer holds.
    assert_eq!(inserted, 59, "{months:?}");

    // A saved profile of the pipeline prices it again, and is refused once the pipeline changed.
    job.ok(&["profile", fixed, "-o", "shop-profile.json"]);
    let saved = job.json(&["cost", fixed, "--profile", "shop-profile.json", "--as-of", "2026-11-01"]);
    assert_eq!(saved["job"], "shop", "{}", saved["tables"]);
    assert_eq!(saved["tables"].as_array().unwrap().len(), 2);
    let stale = job.run(&["cost", pipeline, "--profile", "shop-profile.json"]);
    assert_eq!(stale.status.code(), Some(1));
    let err = text(&stale.stderr);
    assert!(
        err.contains("shop-profile.json") && err.contains("changed since the profile was taken"),
        "{err}"
    );
}

/// Refusals that need no source: a pipeline with no jobs yet, `--table` with a job, and
/// discover on a source kind that has no catalog.
#[test]
fn pipeline_commands_refuse_clearly_before_any_job_exists() {
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let path = job.write_spec(
        "pipeline.toml",
        "version = 1\n\n[pipeline]\nname = \"shop\"\n\n[source]\nkind = \"postgres\"\n\n[range]\nfrom = \"2024-03-01\"\nto = \"now\"\n\n[stage]\npath = \"stage\"\n\n[destination]\nkind = \"local\"\npath = \"warehouse\"\n\n[[tables]]\ntable = \"orders\"\ncursor = \"updated_at\"\n",
    );
    let path = path.to_str().unwrap();
    for args in [vec!["verify", path], vec!["replay", path]] {
        let out = job.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("pipeline `shop` has no jobs in the state database yet"),
            "{args:?}: {err}"
        );
    }
    let out = job.run(&["replay", "orders", "--table", "orders"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a pipeline spec"),
        "{}",
        text(&out.stderr)
    );

    let demo = job.write_spec("demo.toml", &crate::util::spec_text(&crate::util::JobParams::default()));
    let out = job.run(&["discover", demo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("demo.toml: source.kind") && err.contains("cannot discover tables"),
        "{err}"
    );
}
