//! A backfill of the embedded source into Snowflake (a private fakesnow server): every chunk is
//! proven by its fingerprint, an injected crash between COPY and COMMIT is retried to an exact
//! table, `verify` catches a row deleted, a row duplicated and a value changed directly in the
//! table, and a replay repairs the chunk without changing anything else.
//!
//! fakesnow gaps worked around here: no user stage `@~` (a named internal stage is created
//! first), one statement at a time per session (`put_parallel = 1`).

use backhaul_snowflake_client::{Auth, Client, ClientConfig, Secret};
use backhaul_testkit::fakesnow::FakeSnow;

use crate::util::{JobDir, JobParams, expected_rows, spec_text};

const TABLE: &str = "BACKHAUL_E2E.PUBLIC.ORDERS";

fn snowflake_spec(params: &JobParams<'_>, url: &str) -> String {
    let local = spec_text(params);
    let start = local.find("[destination]").unwrap();
    format!(
        r#"{}[destination]
kind = "snowflake"
account = "test"
base_url = "{url}"
user = "loader"
password_file = "password"
database = "BACKHAUL_E2E"
schema = "PUBLIC"
warehouse = "LOAD_WH"
table = "orders"
stage = "internal:BACKHAUL_STAGE"
file_size = "1MiB"
allow_small_files = true
put_parallel = 1
"#,
        &local[..start]
    )
}

pub(crate) struct Sql {
    runtime: tokio::runtime::Runtime,
    config: ClientConfig,
}

impl Sql {
    pub(crate) fn new(url: &str) -> Sql {
        Sql {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            config: ClientConfig {
                base_url: url.into(),
                account: "test".into(),
                user: "loader".into(),
                auth: Auth::Password(Secret::new("any")),
                database: Some("BACKHAUL_E2E".into()),
                schema: Some("PUBLIC".into()),
                warehouse: Some("LOAD_WH".into()),
                role: None,
                session_parameters: Default::default(),
                request_timeout: std::time::Duration::from_secs(20),
                statement_timeout: std::time::Duration::from_secs(60),
                retry: Default::default(),
            },
        }
    }

    /// The first value of the first row, as text.
    pub(crate) fn value(&self, sql: &str) -> String {
        self.column(sql).into_iter().next().unwrap_or_default()
    }

    /// The first column of every row, as text.
    pub(crate) fn column(&self, sql: &str) -> Vec<String> {
        self.runtime.block_on(async {
            let client = Client::connect(self.config.clone()).await.unwrap();
            let result = client.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = client.close().await;
            result
                .batches
                .iter()
                .flat_map(|b| {
                    (0..b.num_rows())
                        .map(move |row| arrow::util::display::array_value_to_string(b.column(0), row).unwrap())
                })
                .collect()
        })
    }

    fn count(&self) -> u64 {
        self.value(&format!("SELECT COUNT(*) FROM {TABLE}")).parse().unwrap()
    }
}

#[test]
fn backfill_into_snowflake_proves_every_chunk_and_verify_catches_changes() {
    let Some(fake) = FakeSnow::start() else { return };
    let params = JobParams {
        to: "2023-03-04",
        ..JobParams::default()
    };
    let mut job = JobDir::new(&params);
    std::fs::write(job.path().join("password"), "any\n").unwrap();
    let spec = job.write_spec("job.toml", &snowflake_spec(&params, &fake.url));
    let sql = Sql::new(&fake.url);
    sql.value("CREATE STAGE IF NOT EXISTS BACKHAUL_STAGE");

    // Two commits crash after COPY, before COMMIT, and are retried.
    job.env
        .push(("BACKHAUL_SNOWFLAKE_FAILPOINT".into(), "after_copy:2".into()));
    let out = job.run(&["backfill", spec.to_str().unwrap(), "--retry-backoff", "100ms"]);
    assert!(out.status.success(), "{}", crate::util::text(&out.stderr));
    job.env.clear();
    let expected = expected_rows(params.rows_per_day, "2023-03-01", params.to);
    assert_eq!(sql.count(), expected, "exact after retries: no row lost or doubled");

    let status = job.json(&["status", "orders", "--chunks"]);
    assert_eq!(status["proofs"][0]["proof"], "fingerprint", "{status}");
    assert_eq!(status["proofs"][0]["chunks"], 3, "{status}");
    let chunks = status["chunks"].as_array().unwrap();
    assert!(chunks.iter().all(|c| c["proof"] == "fingerprint"), "{status}");
    let failures: u64 = chunks.iter().map(|c| c["failures"].as_u64().unwrap()).sum();
    assert_eq!(failures, 2, "the injected crashes were retried: {status}");
    assert_eq!(job.json(&["verify", "orders"])["verified"], true);

    // Damage chunk 1 (2023-03-02) directly in the table; verify names it; a replay repairs it.
    let last_row = format!(
        "CREATED_AT = (SELECT MAX(CREATED_AT) FROM {TABLE} WHERE CREATED_AT >= '2023-03-02 00:00:00 +00:00'::TIMESTAMP_TZ \
         AND CREATED_AT < '2023-03-03 00:00:00 +00:00'::TIMESTAMP_TZ)"
    );
    for (what, damage, measure) in [
        ("a row deleted", format!("DELETE FROM {TABLE} WHERE {last_row}"), "rows"),
        (
            "a row duplicated",
            format!("INSERT INTO {TABLE} SELECT * FROM {TABLE} WHERE {last_row}"),
            "rows",
        ),
        (
            "a value changed",
            format!("UPDATE {TABLE} SET AMOUNT = AMOUNT + 1 WHERE {last_row}"),
            "sum",
        ),
    ] {
        sql.value(&damage);
        let out = job.run(&["verify", "orders", "--output", "json"]);
        assert_eq!(out.status.code(), Some(3), "{what}: {}", crate::util::text(&out.stdout));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let problems = v["result"]["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{what}: {v}");
        assert_eq!(problems[0]["chunk"], 1, "{what}: {v}");
        assert_eq!(problems[0]["problem"], "mismatch", "{what}: {v}");
        let differences = problems[0]["differences"].as_array().unwrap();
        assert!(differences.iter().any(|d| d["measure"] == measure), "{what}: {v}");

        let replay = job.json(&["replay", "orders", "--from", "2023-03-02", "--to", "2023-03-03"]);
        assert_eq!(replay["summary"]["parked"], 0, "{replay}");
        assert_eq!(sql.count(), expected, "{what}: repaired by the replay");
        assert_eq!(job.json(&["verify", "orders"])["verified"], true, "{what}");
    }
}
