//! A private BigQuery for tests: `bqemulator` (PyPI, pinned in `scripts/ensure-servers`, which
//! installs it into `.backhaul-test/venv-bqemulator` with DuckDB 1.5.5 and its spatial
//! extension wheel).
//!
//! [`BqEmulator::start`] gives the server a private HOME whose DuckDB extension folder holds the
//! spatial extension (offline, DuckDB cannot download it), and a private `gs://` root
//! (`BQEMU_GCS_LOCAL_ROOT`): `gs://bucket/path` reads `<gcs_root>/bucket/path`. REST and gRPC
//! listen on ports the OS picks (`--rest-port 0 --grpc-port 0`); both are read back from the
//! log, so there is no race for a port. The server stops when the handle drops and dies with
//! the test process (`PR_SET_PDEATHSIG`).
//!
//! The emulator accepts any bearer token. Known differences from BigQuery (worked around in
//! tests, never in production code): Parquet loads match columns by position, there is no
//! Parquet schema autodetect, `outputRows` is the table's total, a second `jobs.insert` with the
//! same job id loads again instead of answering 409, BIGNUMERIC columns fail with HTTP 500.

use crate::tool;
use std::io::{self, BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long the emulator may take to start (imports, DuckDB start, UDF registration).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The DuckDB version the venv pins; the extension folder is named after it.
const DUCKDB_VERSION: &str = "1.5.5";
/// The project the emulator serves by default.
pub const PROJECT: &str = "test-project";

/// A running private bqemulator.
#[derive(Debug)]
pub struct BqEmulator {
    child: Child,
    rest_port: u16,
    grpc_port: u16,
    dir: TempDir,
}

impl BqEmulator {
    /// Starts a server with an empty `gs://` root and no datasets.
    pub fn start() -> io::Result<BqEmulator> {
        let venv = venv_path()?;
        let dir = tempfile::Builder::new().prefix("bqemulator-").tempdir()?;
        let home = dir.path().join("home");
        let extensions = home.join(format!(".duckdb/extensions/v{DUCKDB_VERSION}/linux_amd64"));
        std::fs::create_dir_all(&extensions)?;
        std::fs::create_dir_all(dir.path().join("gcs"))?;
        let spatial = spatial_extension(&venv)?;
        std::fs::copy(&spatial, extensions.join("spatial.duckdb_extension"))?;
        let mut child = spawn(&venv.join("bin/bqemulator"), &home, &dir.path().join("gcs"))?;
        match read_ports(&mut child) {
            Ok((rest_port, grpc_port)) => Ok(BqEmulator {
                child,
                rest_port,
                grpc_port,
                dir,
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// The REST v2 base URL, for `[destination] base_url`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/bigquery/v2", self.rest_port)
    }

    /// The gRPC endpoint of the Storage Read/Write API.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// The REST port.
    pub fn rest_port(&self) -> u16 {
        self.rest_port
    }

    /// The local directory behind `gs://`: `gs://bucket/path` is `<gcs_root>/bucket/path`.
    pub fn gcs_root(&self) -> PathBuf {
        self.dir.path().join("gcs")
    }

    /// The local directory that `gs://bucket` reads, created when missing.
    pub fn bucket_dir(&self, bucket: &str) -> io::Result<PathBuf> {
        let dir = self.gcs_root().join(bucket);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

impl Drop for BqEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$BACKHAUL_BQEMULATOR_VENV`, else the venv `scripts/ensure-servers` makes.
fn venv_path() -> io::Result<PathBuf> {
    tool::installed(
        "BACKHAUL_BQEMULATOR_VENV",
        "venv-bqemulator",
        "bin/bqemulator",
        "the BigQuery tests",
    )
}

/// The spatial extension the `duckdb-extension-spatial` wheel ships.
fn spatial_extension(venv: &Path) -> io::Result<PathBuf> {
    let lib = venv.join("lib");
    for entry in std::fs::read_dir(&lib)? {
        let candidate = entry?.path().join(format!(
            "site-packages/duckdb_extension_spatial/extensions/v{DUCKDB_VERSION}/spatial.duckdb_extension"
        ));
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "the DuckDB {DUCKDB_VERSION} spatial extension is missing under {}: run scripts/ensure-servers",
            lib.display()
        ),
    ))
}

fn spawn(bin: &Path, home: &Path, gcs_root: &Path) -> io::Result<Child> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "start",
        "--rest-host",
        "127.0.0.1",
        "--rest-port",
        "0",
        "--grpc-host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--project",
        PROJECT,
        "--log-format",
        "json",
        "--log-level",
        "info",
    ])
    .env("HOME", home)
    .env("BQEMU_GCS_LOCAL_ROOT", gcs_root)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    tool::spawn_dying_with_parent(cmd)
}

/// What a log line says about a listening port.
fn port_in(line: &str) -> Option<(&'static str, u16)> {
    let number_after = |marker: &str| {
        line.split(marker)
            .nth(1)
            .and_then(|rest| {
                rest.trim_start_matches(['"', ' '])
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
            })
            .and_then(|p| p.parse().ok())
    };
    if line.contains("rest.listen") {
        return number_after("\"port\":").map(|p| ("rest", p));
    }
    if line.contains("grpc.listen") {
        return number_after("\"port\":").map(|p| ("grpc", p));
    }
    None
}

/// Reads both logs until REST and gRPC ports are known; the logs keep being drained on
/// threads so the server never blocks on a full pipe.
fn read_ports(child: &mut Child) -> io::Result<(u16, u16)> {
    let (tx, rx) = std::sync::mpsc::channel::<Result<(&'static str, u16), String>>();
    let streams: Vec<Box<dyn io::Read + Send>> = vec![
        Box::new(child.stdout.take().expect("stdout is piped")),
        Box::new(child.stderr.take().expect("stderr is piped")),
    ];
    for stream in streams {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("bqemulator-log".into())
            .spawn(move || {
                let mut seen = String::new();
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    match port_in(&line) {
                        Some(found) => {
                            let _ = tx.send(Ok(found));
                        }
                        None if seen.len() < 20_000 => {
                            seen.push_str(&line);
                            seen.push('\n');
                        }
                        None => {}
                    }
                }
                let _ = tx.send(Err(seen));
            })?;
    }
    drop(tx);
    let deadline = Instant::now() + START_TIMEOUT;
    let (mut rest, mut grpc) = (None, None);
    let mut logs = String::new();
    while rest.is_none() || grpc.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(("rest", p))) => rest = Some(p),
            Ok(Ok((_, p))) => grpc = Some(p),
            Ok(Err(log)) => {
                logs.push_str(&log);
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(io::Error::other(format!(
                        "bqemulator exited during start-up ({status}):\n{logs}"
                    )));
                }
            }
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("bqemulator did not start within {START_TIMEOUT:?}:\n{logs}"),
                ));
            }
        }
    }
    let (rest, grpc) = (rest.unwrap_or_default(), grpc.unwrap_or_default());
    while TcpStream::connect(("127.0.0.1", rest)).is_err() {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "bqemulator never accepted a connection",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((rest, grpc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_read_from_json_log_lines() {
        let rest = r#"{"host": "127.0.0.1", "port": 41495, "event": "rest.listen", "level": "info"}"#;
        assert_eq!(port_in(rest), Some(("rest", 41495)));
        let grpc = r#"{"host":"127.0.0.1","port":39047,"event":"grpc.listen"}"#;
        assert_eq!(port_in(grpc), Some(("grpc", 39047)));
        assert_eq!(port_in("Uvicorn running on http://127.0.0.1:41495"), None);
    }

    #[test]
    fn starts_answers_and_stops() {
        let server = BqEmulator::start().unwrap();
        assert!(server.base_url().ends_with("/bigquery/v2"));
        assert!(server.bucket_dir("bkt").unwrap().is_dir());
        let port = server.rest_port();
        drop(server);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "stopped on drop");
    }
}
