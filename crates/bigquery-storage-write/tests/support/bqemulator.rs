//! A private `bqemulator` (PyPI) for this crate's tests, until the shared launcher in
//! `backhaul-testkit` exists. The venv comes from `$BACKHAUL_BQEMULATOR` or
//! `.backhaul-test/venv-bqemulator` (install: `../shared/reference/standins.md` §2a, plus
//! `numpy`, which bqemulator's UDFs import). The server runs with a per-process HOME holding
//! DuckDB's spatial extension (offline it cannot download it), on ports the OS picks
//! (`--rest-port 0 --grpc-port 0`, read back from its JSON log).
//!
//! One emulator serves every test of a test binary: it is started by a thread that lives as
//! long as the process, so `PR_SET_PDEATHSIG` kills it when the test process ends. Tests keep
//! apart by using their own dataset.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

/// The project the emulator serves.
pub const PROJECT: &str = "test-project";

/// How long the emulator may take to start (Python imports, DuckDB extensions).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Where a running emulator listens.
#[derive(Debug, Clone)]
pub struct Emulator {
    /// `http://127.0.0.1:<port>`, the REST API (`/bigquery/v2/...`).
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
    let bin = bqemulator_path()?;
    let (tx, rx) = mpsc::channel();
    // The parent-death signal follows the thread that spawned the child: this one never ends.
    std::thread::Builder::new()
        .name("bqemulator".into())
        .spawn(move || {
            let result = spawn(&bin);
            let failed = result.is_err();
            let _ = tx.send(result);
            if !failed {
                loop {
                    std::thread::park();
                }
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv_timeout(START_TIMEOUT + Duration::from_secs(5))
        .map_err(|_| "bqemulator did not start in time".to_string())?
}

fn bqemulator_path() -> Result<PathBuf, String> {
    let venv = match std::env::var_os("BACKHAUL_BQEMULATOR") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.backhaul-test/venv-bqemulator"),
    };
    let bin = venv.join("bin/bqemulator");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "bqemulator not found at {} (set BACKHAUL_BQEMULATOR to its venv): install it as \
             ../shared/reference/standins.md §2a says, e.g. `python3 -m venv {v} && {v}/bin/pip install \
             bqemulator pyarrow numpy && {v}/bin/pip install duckdb==1.5.5 duckdb-extension-spatial==1.5.5`",
            bin.display(),
            v = venv.display()
        ))
    }
}

/// A HOME with DuckDB's spatial extension where DuckDB looks for it, so nothing is downloaded.
fn private_home(bin: &Path) -> Result<PathBuf, String> {
    let venv = bin.parent().and_then(Path::parent).ok_or("bad venv path")?;
    let lib = venv.join("lib");
    let site = std::fs::read_dir(&lib)
        .map_err(|e| format!("{}: {e}", lib.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("site-packages")))
        .find(|p| p.exists())
        .ok_or("no site-packages in the venv")?;
    let extensions = site.join("duckdb_extension_spatial/extensions");
    let version_dir = std::fs::read_dir(&extensions)
        .map_err(|e| {
            format!(
                "{} (install duckdb-extension-spatial==1.5.5): {e}",
                extensions.display()
            )
        })?
        .filter_map(Result::ok)
        .next()
        .ok_or("no spatial extension in duckdb_extension_spatial")?;
    let home = std::env::temp_dir().join(format!("backhaul-bqemulator-{}", std::process::id()));
    let target = home
        .join(".duckdb/extensions")
        .join(version_dir.file_name())
        .join("linux_amd64");
    std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
    std::fs::copy(
        version_dir.path().join("spatial.duckdb_extension"),
        target.join("spatial.duckdb_extension"),
    )
    .map_err(|e| format!("copy spatial extension: {e}"))?;
    Ok(home)
}

fn spawn(bin: &Path) -> Result<Emulator, String> {
    use std::os::unix::process::CommandExt;
    let home = private_home(bin)?;
    let mut command = Command::new(bin);
    command
        .args([
            "start",
            "--rest-host",
            "127.0.0.1",
            "--rest-port",
            "0",
            "--grpc-host",
            "127.0.0.1",
        ])
        .args([
            "--grpc-port",
            "0",
            "--project",
            PROJECT,
            "--log-format",
            "json",
            "--log-level",
            "info",
        ])
        .env("HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    drain(child.stdout.take().expect("piped"), lines_tx.clone());
    drain(child.stderr.take().expect("piped"), lines_tx);
    let (mut rest, mut grpc) = (None, None);
    let mut log = String::new();
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while rest.is_none() || grpc.is_none() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = lines_rx.recv_timeout(left) else {
            let _ = child.kill();
            return Err(format!("bqemulator did not report its ports; its log:\n{log}"));
        };
        if let Ok(event) = serde_json::from_str::<Value>(&line) {
            let port = event["port"].as_u64();
            match event["event"].as_str() {
                Some("rest.listen") => rest = port,
                Some("grpc.listen") => grpc = port,
                _ => {}
            }
        }
        log.push_str(&line);
        log.push('\n');
    }
    // Keep the child's handle alive with this (parked) thread; the pipes drain on their own.
    std::mem::forget(child);
    Ok(Emulator {
        rest: format!("http://127.0.0.1:{}", rest.unwrap()),
        grpc: format!("http://127.0.0.1:{}", grpc.unwrap()),
    })
}

/// Reads a pipe to its end so the server never blocks on a full pipe; lines go to `tx` while
/// someone listens.
fn drain(pipe: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
}

impl Emulator {
    fn url(&self, path: &str) -> String {
        format!("{}/bigquery/v2/projects/{PROJECT}/{path}", self.rest)
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
