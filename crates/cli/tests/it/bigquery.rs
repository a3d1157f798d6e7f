//! Backfills into BigQuery (a private bqemulator) from the CLI: per-chunk fingerprints match,
//! a replay leaves the table unchanged, and `verify` catches a row deleted, a row duplicated
//! and a value changed directly in the table.
//!
//! The emulator's `gs://bkt/…` is a local directory: the job stages there with a local stage
//! and tells the destination where BigQuery sees those files (`stage_gcs_url`), the documented
//! key for stages that are not themselves `gs://`.

use backhaul_sink_bigquery::spec::AuthMethod;
use backhaul_sink_bigquery::{BigQuerySpec, BigQueryTable};
use backhaul_testkit::bqemulator::{BqEmulator, PROJECT};
use backhaul_testkit::postgres::{PostgresOptions, PostgresServer};

use crate::util::{JobDir, JobParams, expected_rows, spec_text, text};

const DATASET: &str = "sales";

/// Committed (chunk, rows, attempt) of `job` from the state database (fingerprint proofs carry
/// no checksum).
fn committed(job: &JobDir, name: &str) -> Vec<(i64, i64, i64)> {
    let conn = rusqlite::Connection::open(job.path().join("state.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT chunk_id, committed_rows, attempt FROM chunks WHERE job_id = ?1 AND state = 'committed' ORDER BY chunk_id")
        .unwrap();
    stmt.query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

struct BigQuery {
    emulator: BqEmulator,
    runtime: tokio::runtime::Runtime,
}

impl BigQuery {
    fn start() -> BigQuery {
        let emulator = BqEmulator::start().unwrap_or_else(|e| panic!("{e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let bq = BigQuery { emulator, runtime };
        bq.runtime.block_on(async {
            let resp = reqwest::Client::new()
                .post(format!("{}/projects/{PROJECT}/datasets", bq.emulator.base_url()))
                .json(&serde_json::json!({"datasetReference": {"projectId": PROJECT, "datasetId": DATASET}}))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        });
        bq
    }

    /// The job's spec with a BigQuery destination and a stage BigQuery reads as `gs://bkt/stage`.
    fn spec(&self, params: &JobParams<'_>) -> String {
        let stage = self.emulator.bucket_dir("bkt").unwrap().join("stage");
        let local = "[destination]\nkind = \"local\"\npath = \"warehouse\"\ntable = \"orders\"\nfile_size = \"1MiB\"\nallow_small_files = true\n";
        spec_text(params)
            .replace("[stage]\npath = \"stage\"\n", &format!("[stage]\npath = \"{}\"\n", stage.display()))
            .replace(
                local,
                &format!(
                    "[destination]\nkind = \"bigquery\"\nproject = \"{PROJECT}\"\ndataset = \"{DATASET}\"\ntable = \"orders\"\nbase_url = \"{}\"\nauth = \"none\"\nfile_size = \"1MiB\"\nallow_small_files = true\njob_timeout = \"2m\"\nstage_gcs_url = \"gs://bkt/stage\"\n",
                    self.emulator.base_url()
                ),
            )
    }

    /// Runs `sql` and returns the rows as text.
    fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let table = BigQueryTable::new({
            let mut spec = BigQuerySpec::new(PROJECT, DATASET, "orders");
            spec.base_url = Some(self.emulator.base_url());
            spec.auth = AuthMethod::None;
            spec.job_timeout = Some("1m".into());
            spec
        })
        .unwrap();
        self.runtime
            .block_on(async { table.rest().await?.query(sql).await })
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// `(count(*), count(DISTINCT order_id))` of the table.
    fn counts(&self) -> (u64, u64) {
        let rows = self.query(&format!(
            "SELECT COUNT(*), COUNT(DISTINCT order_id) FROM `{PROJECT}.{DATASET}.orders`"
        ));
        let n = |i: usize| rows[0][i].as_deref().unwrap().parse().unwrap();
        (n(0), n(1))
    }
}

#[test]
fn backfill_into_bigquery_verifies_replays_and_catches_direct_edits() {
    let bq = BigQuery::start();
    let params = JobParams {
        from: "2023-03-01",
        to: "2023-03-04",
        ..JobParams::default()
    };
    let job = JobDir::new(&params);
    let spec = job.write_spec("bigquery.toml", &bq.spec(&params));

    let plan = job.ok(&["plan", spec.to_str().unwrap()]);
    assert!(plan.contains("3 chunks") || plan.contains("chunks"), "{plan}");
    job.ok(&["backfill", spec.to_str().unwrap()]);
    let before = committed(&job, "orders");
    assert_eq!(before.len(), 3);
    let expected = expected_rows(params.rows_per_day, params.from, params.to);
    assert_eq!(before.iter().map(|c| c.1 as u64).sum::<u64>(), expected);
    assert_eq!(bq.counts(), (expected, expected));
    let status = job.json(&["status", "orders", "--chunks"]);
    assert_eq!(status["proofs"][0]["proof"], "fingerprint", "{status}");
    let clean = job.json(&["verify", "orders"]);
    assert_eq!(clean["verified"], true, "{clean}");

    // Replay: every chunk again, the table unchanged.
    let content = bq.query(&format!(
        "SELECT CAST(SUM(amount) AS STRING), MIN(created_at), MAX(created_at) FROM `{PROJECT}.{DATASET}.orders`"
    ));
    let out = job.json(&["replay", "orders", "--from", "2023-03-01", "--to", "2023-03-04"]);
    assert_eq!(out["summary"]["parked"], 0, "{out}");
    let after = committed(&job, "orders");
    assert!(
        after.iter().zip(&before).all(|(a, b)| a.2 == b.2 + 1 && a.1 == b.1),
        "{after:?}"
    );
    assert_eq!(bq.counts(), (expected, expected));
    let again = bq.query(&format!(
        "SELECT CAST(SUM(amount) AS STRING), MIN(created_at), MAX(created_at) FROM `{PROJECT}.{DATASET}.orders`"
    ));
    assert_eq!(content, again);
    assert_eq!(job.json(&["verify", "orders"])["verified"], true);

    // Direct edits of chunk 1 (2023-03-02): each is caught, then repaired by a replay.
    let table = format!("`{PROJECT}.{DATASET}.orders`");
    let day = "created_at >= TIMESTAMP '2023-03-02 00:00:00+00' AND created_at < TIMESTAMP '2023-03-03 00:00:00+00'";
    let one = format!("{day} AND order_id = (SELECT MAX(order_id) FROM {table} WHERE {day})");
    let edits = [
        ("a row deleted", format!("DELETE FROM {table} WHERE {one}"), None),
        (
            "a row duplicated",
            format!("INSERT INTO {table} SELECT * FROM {table} WHERE {one}"),
            None,
        ),
        (
            "a value changed",
            format!("UPDATE {table} SET amount = amount + 1 WHERE {one}"),
            Some("amount"),
        ),
    ];
    for (what, sql, column) in edits {
        bq.query(&sql);
        let out = job.run(&["verify", "orders", "--output", "json"]);
        assert_eq!(out.status.code(), Some(3), "{what}: {}", text(&out.stdout));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let problems = v["result"]["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{what}: {v}");
        assert_eq!(problems[0]["chunk"].as_u64(), Some(1), "{what}: {v}");
        let differences = problems[0]["differences"].as_array().unwrap();
        match column {
            None => assert!(differences.iter().any(|d| d["measure"] == "rows"), "{what}: {v}"),
            Some(c) => assert!(
                differences.iter().any(|d| d["column"] == c && d["measure"] == "sum"),
                "{what}: {v}"
            ),
        }
        let out = job.json(&["replay", "orders", "--from", "2023-03-02", "--to", "2023-03-03"]);
        assert_eq!(out["summary"]["parked"], 0, "{out}");
        assert_eq!(
            job.json(&["verify", "orders"])["verified"],
            true,
            "after repairing {what}"
        );
    }
    assert_eq!(bq.counts(), (expected, expected));
}

#[test]
fn a_missing_dataset_fails_the_backfill_naming_it() {
    let bq = BigQuery::start();
    let params = JobParams {
        from: "2023-03-01",
        to: "2023-03-02",
        ..JobParams::default()
    };
    let job = JobDir::new(&params);
    let spec = job.write_spec(
        "bigquery.toml",
        &bq.spec(&params).replace("dataset = \"sales\"", "dataset = \"nowhere\""),
    );
    // `plan` is read-only at the destination; `backfill` prepares the table and finds no dataset.
    let out = job.run(&["backfill", spec.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("nowhere") && err.contains("does not exist"), "{err}");
}

/// A ledger in PostgreSQL with the types whose exactness matters: numeric(38,9) (29 digits
/// before the point), timestamptz with microseconds, jsonb, and NULLs in every optional column.
fn ledger(server: &PostgresServer) {
    server
        .psql(
            "postgres",
            "CREATE TABLE ledger (id bigint PRIMARY KEY, ts timestamptz NOT NULL, amount numeric(38,9), \
               doc jsonb, note text); \
             INSERT INTO ledger SELECT g, \
               timestamptz '2024-02-01 00:00:00+00' + g * interval '7 minutes 3.123457 seconds', \
               CASE WHEN g % 5 = 0 THEN NULL ELSE (CASE WHEN g % 2 = 0 THEN 1 ELSE -1 END) * g::numeric * 12345678901234567890.123456789 END, \
               CASE WHEN g % 7 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'name', 'ü' || g, 'tags', jsonb_build_array(g, g + 1)) END, \
               CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END \
             FROM generate_series(1, 800) g; \
             CREATE INDEX ON ledger (ts); ANALYZE ledger;",
        )
        .unwrap();
}

fn ledger_spec(server: &PostgresServer, bq: &BigQuery, name: &str, table: &str, json_columns: &str) -> String {
    let stage = bq.emulator.bucket_dir("bkt").unwrap().join("stage");
    format!(
        r#"version = 1
name = "{name}"

[source]
kind = "postgres"
host = "{host}"
port = {port}
user = "{user}"
database = "postgres"
table = "public.ledger"
cursor = "ts"

[source.password]
file = "{password}"

[range]
from = "2024-02-01"
to = "2024-02-05"

[chunking]
policy = "fixed"
every = "1d"

[stage]
path = "{stage}"

[destination]
kind = "bigquery"
project = "{PROJECT}"
dataset = "{DATASET}"
table = "{table}"
base_url = "{base_url}"
auth = "none"
file_size = "1MiB"
allow_small_files = true
job_timeout = "2m"
json_columns = "{json_columns}"
stage_gcs_url = "gs://bkt/stage"
"#,
        host = server.host(),
        port = server.port(),
        user = server.user(),
        password = server.password_file().display(),
        stage = stage.display(),
        base_url = bq.emulator.base_url(),
    )
}

/// Trailing zeros of a decimal's fraction do not change its value.
fn decimal(text: &str) -> String {
    match text.split_once('.') {
        Some((int, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                int.to_string()
            } else {
                format!("{int}.{frac}")
            }
        }
        None => text.to_string(),
    }
}

#[test]
fn postgres_numeric_timestamptz_jsonb_and_nulls_arrive_exactly() {
    let bq = BigQuery::start();
    let server = PostgresServer::start(PostgresOptions::default()).unwrap();
    ledger(&server);
    let job = JobDir::new(&JobParams::default());
    let spec = job.write_spec("ledger.toml", &ledger_spec(&server, &bq, "ledger", "ledger", "string"));
    job.ok(&["backfill", spec.to_str().unwrap()]);
    assert_eq!(job.json(&["verify", "ledger"])["verified"], true);

    let pg = |sql: &str| server.psql("postgres", sql).unwrap().trim().to_string();
    let range = "ts >= '2024-02-01' AND ts < '2024-02-05'";
    let want = pg(&format!(
        "SELECT count(*) || '|' || count(amount) || '|' || sum(amount) || '|' || count(doc) || '|' || sum(octet_length(doc::text)) || '|' || count(note) || '|' || min((extract(epoch FROM ts) * 1000000)::bigint) || '|' || max((extract(epoch FROM ts) * 1000000)::bigint) FROM ledger WHERE {range}"
    ));
    let got = bq.query(&format!(
        "SELECT COUNT(*), COUNT(amount), CAST(SUM(amount) AS STRING), COUNT(doc), SUM(BYTE_LENGTH(doc)), COUNT(note), MIN(UNIX_MICROS(ts)), MAX(UNIX_MICROS(ts)) FROM `{PROJECT}.{DATASET}.ledger`"
    ));
    let got: Vec<String> = got[0].iter().map(|v| v.clone().unwrap_or_default()).collect();
    let want: Vec<String> = want.split('|').map(str::to_string).collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            decimal(g),
            decimal(w),
            "measure {i}: BigQuery {got:?} vs PostgreSQL {want:?}"
        );
    }
    // One row's values exactly, as text.
    let pg_row = pg("SELECT amount::text || '|' || doc::text FROM ledger WHERE id = 3");
    let bq_row = bq.query(&format!(
        "SELECT CAST(amount AS STRING), doc FROM `{PROJECT}.{DATASET}.ledger` WHERE id = 3"
    ));
    let bq_row = format!("{}|{}", bq_row[0][0].clone().unwrap(), bq_row[0][1].clone().unwrap());
    let (pg_amount, pg_doc) = pg_row.split_once('|').unwrap();
    let (bq_amount, bq_doc) = bq_row.split_once('|').unwrap();
    assert_eq!(decimal(bq_amount), decimal(pg_amount));
    assert_eq!(bq_doc, pg_doc);

    // The same rows into JSON columns (the default): BigQuery prints JSON compact where
    // PostgreSQL's jsonb text has spaces; the fingerprint measures JSON without whitespace, so
    // every chunk proves, and the document is the same.
    let spec = job.write_spec(
        "ledger_json.toml",
        &ledger_spec(&server, &bq, "ledger-json", "ledger_json", "json"),
    );
    let out = job.json(&["backfill", spec.to_str().unwrap()]);
    assert_eq!(out["summary"]["parked"], 0, "{out}");
    assert_eq!(job.json(&["verify", "ledger-json"])["verified"], true);
    let bq_doc = bq.query(&format!(
        "SELECT TO_JSON_STRING(doc) FROM `{PROJECT}.{DATASET}.ledger_json` WHERE id = 3"
    ));
    let parsed = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    assert_eq!(parsed(bq_doc[0][0].as_deref().unwrap()), parsed(pg_doc));
}

#[test]
fn backfill_by_storage_write_verifies_and_replays_unchanged() {
    let bq = BigQuery::start();
    let params = JobParams {
        from: "2023-03-01",
        to: "2023-03-04",
        ..JobParams::default()
    };
    let job = JobDir::new(&params);
    let spec = bq.spec(&params).replace(
        "stage_gcs_url = \"gs://bkt/stage\"\n",
        &format!(
            "write_method = \"storage_write\"\nstorage_write_endpoint = \"{}\"\n",
            bq.emulator.grpc_endpoint()
        ),
    );
    let spec = job.write_spec("storage-write.toml", &spec);
    let plan = job.ok(&["plan", spec.to_str().unwrap()]);
    assert!(plan.contains("PENDING Storage Write stream"), "{plan}");
    job.ok(&["backfill", spec.to_str().unwrap()]);
    let expected = expected_rows(params.rows_per_day, params.from, params.to);
    assert_eq!(committed(&job, "orders").len(), 3);
    assert_eq!(bq.counts(), (expected, expected));
    assert_eq!(job.json(&["verify", "orders"])["verified"], true);
    let out = job.json(&["replay", "orders", "--from", "2023-03-01", "--to", "2023-03-04"]);
    assert_eq!(out["summary"]["parked"], 0, "{out}");
    assert_eq!(bq.counts(), (expected, expected));
    assert_eq!(job.json(&["verify", "orders"])["verified"], true);
}

/// `sync.mode = "full_refresh"` into BigQuery: each sync's version replaces every row in the
/// chunk's one commit transaction; after each sync the table equals the source exactly.
#[test]
fn full_refresh_into_bigquery_replaces_the_table_in_one_transaction() {
    let bq = BigQuery::start();
    let server = PostgresServer::start(PostgresOptions::default()).unwrap();
    ledger(&server);
    let job = JobDir::new(&JobParams::default());
    let text = format!(
        "{}\n[sync]\nmode = \"full_refresh\"\n",
        ledger_spec(&server, &bq, "ledger", "ledger", "string")
    );
    let spec = job.write_spec("ledger.toml", &text);
    let path = spec.to_str().unwrap();
    let loaded = || -> Vec<String> {
        bq.query(&format!(
            "SELECT CONCAT(CAST(id AS STRING), ':', COALESCE(note, '-')) FROM `{PROJECT}.{DATASET}.ledger` ORDER BY id"
        ))
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
    };
    let source = || -> Vec<String> {
        server
            .psql(
                "postgres",
                "SELECT id || ':' || coalesce(note, '-') FROM ledger ORDER BY id",
            )
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };

    job.ok(&["sync", path, "--now", "2024-03-01T00:00:00Z"]);
    assert_eq!(loaded(), source());
    server
        .psql(
            "postgres",
            "UPDATE ledger SET note = 'changed' WHERE id % 10 = 1; DELETE FROM ledger WHERE id > 700; \
             INSERT INTO ledger (id, ts, note) VALUES (5000, '2024-02-02 00:00:00+00', 'new');",
        )
        .unwrap();
    // The range is fixed, so the mark stays; the refresh runs anyway.
    job.ok(&["sync", path, "--now", "2024-03-02T00:00:00Z"]);
    assert_eq!(loaded(), source(), "exactly the new version");
    assert_eq!(committed(&job, "ledger").len(), 2);
    let verified = job.json(&["verify", "ledger"]);
    assert_eq!(verified["result"]["chunks"], 1, "{verified}");
}
