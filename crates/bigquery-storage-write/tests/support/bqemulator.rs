//! The shared bqemulator of a test binary: `backhaul-testkit`'s launcher (venv from
//! `scripts/ensure-servers`, private HOME with DuckDB's spatial extension, ports the OS picks),
//! plus the few REST calls these tests need (datasets, tables, queries).
//!
//! One emulator serves every test of a binary: the launcher's handle is kept by a thread that
//! lives as long as the process, so the server's parent-death signal fires only when the test
//! process ends. Tests keep apart by using their own dataset.

use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use backhaul_testkit::bqemulator::BqEmulator;
use serde_json::{Value, json};

/// The project the emulator serves.
pub const PROJECT: &str = backhaul_testkit::bqemulator::PROJECT;

/// Where a running emulator listens.
#[derive(Debug, Clone)]
pub struct Emulator {
    /// The REST v2 base URL, `http://127.0.0.1:<port>/bigquery/v2`.
    pub rest: String,
    /// `http://127.0.0.1:<port>`, the Storage Read/Write gRPC API.
    pub grpc: String,
}

/// The shared emulator of this test binary, started on first use. A missing venv is an error
/// saying how to install it: these tests never skip silently.
pub fn emulator() -> Emulator {
    static SHARED: OnceLock<Result<Emulator, String>> = OnceLock::new();
    SHARED
        .get_or_init(start_shared)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn start_shared() -> Result<Emulator, String> {
    let (tx, rx) = mpsc::channel();
    // The parent-death signal follows the thread that spawned the child: this one never ends.
    std::thread::Builder::new()
        .name("bqemulator".into())
        .spawn(move || match BqEmulator::start() {
            Ok(server) => {
                let _ = tx.send(Ok(Emulator {
                    rest: server.base_url(),
                    grpc: server.grpc_endpoint(),
                }));
                loop {
                    std::thread::park();
                }
            }
            Err(e) => {
                let _ = tx.send(Err(format!("cannot start bqemulator: {e}")));
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv_timeout(Duration::from_secs(180))
        .map_err(|_| "bqemulator did not start in time".to_string())?
}

impl Emulator {
    fn url(&self, path: &str) -> String {
        format!("{}/projects/{PROJECT}/{path}", self.rest)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .timeout(Duration::from_secs(60))
            .json(&body)
            .send()
            .await
            .expect("emulator REST request");
        let status = response.status();
        let answer: Value = response.json().await.expect("JSON answer");
        assert!(status.is_success(), "POST {path}: HTTP {status}: {answer}");
        answer
    }

    /// Creates a dataset.
    pub async fn create_dataset(&self, dataset: &str) {
        self.post(
            "datasets",
            json!({"datasetReference": {"projectId": PROJECT, "datasetId": dataset}}),
        )
        .await;
    }

    /// Creates a table with `fields` (`[{"name":…,"type":…,"mode":…}]`).
    pub async fn create_table(&self, dataset: &str, table: &str, fields: Value) {
        self.post(
            &format!("datasets/{dataset}/tables"),
            json!({
                "tableReference": {"projectId": PROJECT, "datasetId": dataset, "tableId": table},
                "schema": {"fields": fields},
            }),
        )
        .await;
    }

    /// Runs a query and returns its rows as strings (`None` for NULL).
    pub async fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let answer = self
            .post(
                "queries",
                json!({"query": sql, "useLegacySql": false, "timeoutMs": 60000}),
            )
            .await;
        assert_eq!(answer["jobComplete"], json!(true), "query not complete: {answer}");
        answer["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| {
                        row["f"]
                            .as_array()
                            .expect("cells")
                            .iter()
                            .map(|cell| cell["v"].as_str().map(String::from))
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `SELECT COUNT(*)` of a table.
    pub async fn count(&self, dataset: &str, table: &str) -> u64 {
        let rows = self
            .query(&format!("SELECT COUNT(*) FROM `{PROJECT}.{dataset}.{table}`"))
            .await;
        rows[0][0].as_deref().expect("a count").parse().expect("a number")
    }
}
