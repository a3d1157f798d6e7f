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

use crate::util::{JobDir, JobParams, expected_rows, spec_text, text};

const DATASET: &str = "sales";

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
    let committed = job.committed_chunks("orders");
    assert_eq!(committed.len(), 3);
    let expected = expected_rows(params.rows_per_day, params.from, params.to);
    assert_eq!(committed.iter().map(|c| c.1 as u64).sum::<u64>(), expected);
    assert_eq!(bq.counts(), (expected, expected));
    let status = job.json(&["status", "orders", "--chunks"]);
    assert_eq!(status["proofs"][0]["proof"], "fingerprint", "{status}");
    let clean = job.json(&["verify", "orders"]);
    assert_eq!(clean["verified"], true, "{clean}");

    // Replay: every chunk again, the table unchanged.
    let before = bq.query(&format!(
        "SELECT CAST(SUM(amount) AS STRING), MIN(created_at), MAX(created_at) FROM `{PROJECT}.{DATASET}.orders`"
    ));
    let out = job.json(&["replay", "orders", "--from", "2023-03-01", "--to", "2023-03-04"]);
    assert_eq!(out["summary"]["parked"], 0, "{out}");
    let after = job.committed_chunks("orders");
    assert!(after.iter().zip(&committed).all(|(a, b)| a.3 == b.3 + 1), "{after:?}");
    assert_eq!(bq.counts(), (expected, expected));
    let again = bq.query(&format!(
        "SELECT CAST(SUM(amount) AS STRING), MIN(created_at), MAX(created_at) FROM `{PROJECT}.{DATASET}.orders`"
    ));
    assert_eq!(before, again);
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
fn a_missing_dataset_fails_the_plan_naming_it() {
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
    let out = job.run(&["plan", spec.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("nowhere") && err.contains("does not exist"), "{err}");
}
