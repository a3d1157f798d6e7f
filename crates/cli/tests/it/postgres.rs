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
