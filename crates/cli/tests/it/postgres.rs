//! `backhaul backfill` from a private PostgreSQL server to the local warehouse: exact counts,
//! and a database that goes away mid-job (a terminated COPY session, a server restart) only
//! costs retries.

use std::time::{Duration, Instant};

use backhaul_testkit::postgres::{PostgresOptions, PostgresServer};

use crate::util::{JobDir, JobParams, text};

const ROWS: u64 = 240_000;

/// 240,000 events over ten days, growing towards the end, with wide rows so that a chunk takes
/// long enough to be interrupted.
fn events(server: &PostgresServer, db: &str) {
    server
        .psql(
            db,
            &format!(
                "CREATE TABLE events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, amount numeric(12,2) NOT NULL, \
                   payload text, attrs jsonb); \
                 INSERT INTO events SELECT g, \
                   timestamptz '2024-02-01 00:00:00+00' + sqrt((g - 1)::float8 / {ROWS}) * interval '10 days', \
                   (g % 100000) / 100.0, repeat(md5(g::text), 4), jsonb_build_object('g', g, 'ü', true) \
                 FROM generate_series(1, {ROWS}) g; \
                 CREATE INDEX ON events (ts); ANALYZE events;"
            ),
        )
        .unwrap();
}

fn spec(server: &PostgresServer, db: &str, chunking: &str) -> String {
    format!(
        r#"version = 1
name = "events"

[source]
kind = "postgres"
host = "{host}"
port = {port}
user = "{user}"
database = "{db}"
table = "public.events"
cursor = "ts"

[source.password]
file = "{password}"

[range]
from = "2024-02-01"
to = "2024-02-11"

[chunking]
{chunking}

[stage]
path = "stage"

[destination]
kind = "local"
path = "warehouse"
table = "events"
file_size = "4MiB"
allow_small_files = true
"#,
        host = server.host(),
        port = server.port(),
        user = server.user(),
        password = server.password_file().display(),
    )
}

fn warehouse_counts(job: &JobDir) -> (u64, u64) {
    let v = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM events",
    ]);
    (v[0]["n"].as_u64().expect("n"), v[0]["d"].as_u64().expect("d"))
}

/// Terminates the backend running a COPY as soon as one shows up.
fn terminate_a_copy(server: &PostgresServer, db: &str, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let killed = server
            .psql(
                db,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND backend_type = 'client backend' AND query LIKE 'COPY%'",
            )
            .unwrap();
        if killed != "0" {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("backfill ended ({status}) before a COPY could be interrupted");
        }
        assert!(Instant::now() < deadline, "no COPY seen within 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn postgres_backfill_survives_the_database_going_away_with_exact_counts() {
    let server = PostgresServer::start(PostgresOptions::default()).unwrap();
    let db = "postgres";
    events(&server, db);
    let job = JobDir::new(&JobParams::default());
    let spec = job.write_spec("events.toml", &spec(&server, db, "policy = \"fixed\"\nevery = \"1d\""));
    let mut child = job
        .cmd()
        .args([
            "backfill",
            spec.to_str().unwrap(),
            "--workers",
            "2",
            "--retry-backoff",
            "200ms",
        ])
        .spawn()
        .expect("spawn");
    job.wait_for_commits(&mut child, "events", 1);
    // A COPY session killed by an administrator mid-chunk.
    terminate_a_copy(&server, db, &mut child);
    // Then the whole server restarts while chunks run.
    job.wait_for_commits(&mut child, "events", 3);
    server.restart().unwrap();

    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "backfill failed after the database came back: {status}"
    );
    let chunks = job.json(&["status", "events", "--chunks"]);
    let failures: u64 = chunks["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["failures"].as_u64().unwrap())
        .sum();
    assert!(failures >= 1, "no chunk recorded a transient failure: {chunks}");
    assert_eq!(chunks["summary"]["parked"], 0, "{chunks}");
    assert_eq!(chunks["chunks"].as_array().unwrap().len(), 10);
    assert_eq!(job.json(&["verify", "events"])["verified"], true);
    assert_eq!(warehouse_counts(&job), (ROWS, ROWS));
}

#[test]
fn postgres_backfill_plans_by_statistics_and_refuses_null_cursors() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    events(server, &db);
    let job = JobDir::new(&JobParams::default());
    // Target-bytes planning from pg_stats: rows pile up towards the end of the range, chunk
    // widths shrink accordingly.
    let spec_path = job.write_spec(
        "events.toml",
        &spec(server, &db, "policy = \"target_bytes\"\ntarget_bytes = \"8MiB\""),
    );
    let plan = job.json(&["plan", spec_path.to_str().unwrap()]);
    let chunks = plan["chunks"]
        .as_array()
        .unwrap_or_else(|| panic!("plan output: {plan}"));
    assert!(chunks.len() >= 4, "{plan}");
    // The type-fidelity report shows PostgreSQL's own type names and no lossy step.
    let columns = plan["type_fidelity"]["columns"]
        .as_array()
        .unwrap_or_else(|| panic!("{plan}"));
    let source_type = |name: &str| {
        columns
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {plan}"))["source_type"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(source_type("amount"), "numeric(12,2)");
    assert_eq!(source_type("ts"), "timestamp with time zone");
    assert_eq!(source_type("attrs"), "jsonb");
    assert!(
        columns.iter().all(|c| c["lossy_steps"].as_array().unwrap().is_empty()),
        "{plan}"
    );
    job.ok(&["backfill", spec_path.to_str().unwrap(), "--workers", "2"]);
    assert_eq!(job.json(&["verify", "events"])["verified"], true);
    assert_eq!(warehouse_counts(&job), (ROWS, ROWS));

    // A NULL cursor: refused before anything is written, naming the column.
    let db2 = server.fresh_database();
    events(server, &db2);
    server
        .psql(
            &db2,
            "ALTER TABLE events ALTER ts DROP NOT NULL; UPDATE events SET ts = NULL WHERE id = 7",
        )
        .unwrap();
    let job2 = JobDir::new(&JobParams::default());
    let path = job2.write_spec("events.toml", &spec(server, &db2, "policy = \"fixed\"\nevery = \"1d\""));
    let out = job2.run(&["backfill", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("public.events.ts") && err.contains("NULL cursor"), "{err}");
    assert!(!job2.path().join("warehouse/events").exists(), "nothing may be written");
}

#[test]
fn plan_reads_the_cursor_s_physical_order_and_warns_when_chunks_reread_the_table() {
    let server = PostgresServer::shared();
    let job = JobDir::new(&JobParams::default());
    let chunking = "policy = \"target_bytes\"\ntarget_bytes = \"8MiB\"";
    // Inserted in cursor order: chunks read their own pages.
    let ordered = server.fresh_database();
    events(server, &ordered);
    let spec_path = job.write_spec("ordered.toml", &spec(server, &ordered, chunking));
    let plan = job.json(&["plan", spec_path.to_str().unwrap()]);
    assert!(plan["physical_order"]["correlation"].as_f64().unwrap() > 0.9, "{plan}");
    assert!(plan["estimated_read_amplification"].as_f64().unwrap() < 1.2, "{plan}");
    assert!(plan["chunks"].as_array().unwrap().len() >= 4, "{plan}");
    assert_eq!(plan["warnings"], serde_json::json!([]), "{plan}");

    // The same rows stored in an order unrelated to the cursor.
    let shuffled = server.fresh_database();
    events(server, &shuffled);
    server
        .psql(
            &shuffled,
            "CREATE TABLE s AS SELECT * FROM events ORDER BY md5(id::text); DROP TABLE events; \
             ALTER TABLE s RENAME TO events; ALTER TABLE events ADD PRIMARY KEY (id); \
             CREATE INDEX ON events (ts); ANALYZE events;",
        )
        .unwrap();
    // By default PostgreSQL reads a whole-table chunk with two block-range scans, so two
    // workers get one chunk, read once, and nothing is warned about.
    let spec_path = job.write_spec("shuffled.toml", &spec(server, &shuffled, chunking));
    let plan = job.json(&["plan", spec_path.to_str().unwrap()]);
    assert!(
        plan["physical_order"]["correlation"].as_f64().unwrap().abs() < 0.1,
        "{plan}"
    );
    assert_eq!(plan["physical_order"]["block_scans"], 2, "{plan}");
    assert_eq!(plan["chunks"].as_array().unwrap().len(), 1, "{plan}");
    assert!(plan["estimated_read_amplification"].as_f64().unwrap() < 1.01, "{plan}");
    assert!(plan["estimated_idle_share"].as_f64().unwrap() < 0.01, "{plan}");
    assert_eq!(plan["warnings"], serde_json::json!([]), "{plan}");
    let out = job.run(&["plan", spec_path.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains("is read by 2 block-range scans"),
        "{}",
        text(&out.stdout)
    );
    let backfill = job.json(&["backfill", spec_path.to_str().unwrap(), "--workers", "2"]);
    assert_eq!(backfill["this_run"]["rows"], ROWS, "{backfill}");
    assert_eq!(job.json(&["verify", "events"])["verified"], true);
    assert_eq!(warehouse_counts(&job), (ROWS, ROWS));

    // Without splitting (`parallel_scans = 1`): one chunk per worker, each reading the table.
    let one_scan =
        spec(server, &shuffled, chunking).replace("cursor = \"ts\"\n", "cursor = \"ts\"\nparallel_scans = 1\n");
    let spec_path = job.write_spec("one_scan.toml", &one_scan);
    let plan = job.json(&["plan", spec_path.to_str().unwrap()]);
    assert_eq!(plan["physical_order"]["block_scans"], 1, "{plan}");
    assert_eq!(
        plan["chunks"].as_array().unwrap().len(),
        2,
        "one chunk per worker: {plan}"
    );
    assert!(plan["estimated_read_amplification"].as_f64().unwrap() > 1.5, "{plan}");
    let warning = plan["warnings"][0].as_str().unwrap_or_else(|| panic!("{plan}"));
    assert!(warning.contains("read the source table about"), "{warning}");
    let out = job.run(&["plan", spec_path.to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: the chunks' range queries read the source table"),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).contains("reads its table about"),
        "{}",
        text(&out.stdout)
    );
}

/// A chunk that turns out too large is split while it runs: two workers, one chunk over the
/// whole table. The source stalls halfway (a view whose filter waits on an advisory lock the
/// test holds) until the state shows the split, so the second worker, finding nothing to
/// lease, gets the chunk's unread tail. Both parts commit exactly once and verify.
#[test]
fn a_running_chunk_is_split_for_a_waiting_worker_and_both_parts_commit_exactly_once() {
    use std::io::Write;

    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL); \
             INSERT INTO t SELECT g, md5(g::text) FROM generate_series(0, 39999) g; \
             CREATE FUNCTION gate(id bigint) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$ \
               BEGIN IF id = 20000 THEN PERFORM pg_advisory_lock_shared(4242); \
               PERFORM pg_advisory_unlock_shared(4242); END IF; RETURN true; END $$; \
             CREATE VIEW gated AS SELECT id, v FROM t WHERE gate(id);",
        )
        .unwrap();
    // The gate: held by a session of the test's own until the split shows.
    let mut gate = server
        .psql_command(&db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    let mut gate_in = gate.stdin.take().unwrap();
    writeln!(gate_in, "SELECT pg_advisory_lock(4242);").unwrap();
    let held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted";
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.psql(&db, held).unwrap().trim() != "1" {
        assert!(Instant::now() < deadline, "the gate's lock was not taken");
        std::thread::sleep(Duration::from_millis(20));
    }

    let job = JobDir::new(&JobParams::default());
    let text = spec(server, &db, "policy = \"fixed\"\nevery = 40000\nsplit_min_rows = 1000")
        .replace(
            "table = \"public.events\"\ncursor = \"ts\"",
            "table = \"public.gated\"\ncursor = \"id\"",
        )
        .replace(
            "from = \"2024-02-01\"\nto = \"2024-02-11\"",
            "from = \"0\"\nto = \"40000\"",
        );
    let spec_path = job.write_spec("split.toml", &text);
    let mut backfill = job
        .cmd()
        .args([
            "backfill",
            spec_path.to_str().unwrap(),
            "--workers",
            "2",
            "--output",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn backhaul");
    let chunks = |job: &JobDir| -> Vec<(i64, i64, i64, Option<i64>)> {
        let Ok(conn) = rusqlite::Connection::open(job.path().join("state.db")) else {
            return Vec::new();
        };
        let Ok(mut stmt) =
            conn.prepare("SELECT chunk_id, range_from, range_to, split_from FROM chunks ORDER BY chunk_id")
        else {
            return Vec::new();
        };
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map(|rows| rows.filter_map(|r| r.ok()).collect())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let split = loop {
        let now = chunks(&job);
        if now.len() == 2 {
            break now;
        }
        if let Some(status) = backfill.try_wait().unwrap() {
            panic!("backfill ended ({status}) before the chunk was split: {now:?}");
        }
        assert!(Instant::now() < deadline, "no split within 120 s: {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(gate_in);
    gate.wait().unwrap();

    // The worker had passed on two batches (ids below 16,384) when it was told of the
    // waiting worker: it kept half of the rest, the tail went to a new chunk.
    let (kept, tail) = (split[0], split[1]);
    assert_eq!((kept.0, kept.1, kept.3), (0, 0, None), "{split:?}");
    assert_eq!((tail.0, tail.2, tail.3), (1, 40_000, Some(0)), "{split:?}");
    assert_eq!(kept.2, tail.1, "{split:?}");
    assert!(kept.2 > 16_384 && kept.2 < 40_000, "{split:?}");

    let out = backfill.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", super::util::text(&out.stdout));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["this_run"]["rows"], 40_000, "{summary}");
    let status = job.json(&["status", "events", "--chunks"]);
    let ranges: Vec<_> = status["chunks"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"))
        .iter()
        .map(|c| (c["state"].clone(), c["split_from"].clone()))
        .collect();
    assert_eq!(
        ranges,
        vec![
            (serde_json::json!("committed"), serde_json::Value::Null),
            (serde_json::json!("committed"), serde_json::json!(0)),
        ],
        "{status}"
    );
    assert_eq!(job.json(&["verify", "events"])["verified"], true);
    assert_eq!(warehouse_counts(&job), (40_000, 40_000));
}
