//! A private Snowflake-protocol server for tests: `fakesnow` in server mode (PyPI
//! `fakesnow[server]`, pinned in `scripts/ensure-servers`, which installs it into
//! `.backhaul-test/venv-fakesnow`).
//!
//! [`FakeSnow::start`] starts one on `127.0.0.1` and a port the OS picks (`-p 0`: uvicorn binds
//! it and logs `Uvicorn running on http://127.0.0.1:<port>`, which is read back, so there is no
//! race for the port), and waits until it accepts connections. The server stops when the
//! handle drops, and dies with the test process (`PR_SET_PDEATHSIG`) if nothing drops it.
//!
//! fakesnow accepts any user, password or JWT, and keeps one in-memory DuckDB shared by all
//! sessions of one server: give each test its own database name (or its own server).
//!
//! When the venv is missing, [`FakeSnow::start`] returns `None` so a developer without Python
//! can still run the other tests, unless `BACKHAUL_REQUIRE_SERVERS` is set (as `scripts/test`
//! does): then a missing fakesnow is an error telling to run `scripts/ensure-servers`.

use crate::tool;
use std::io::{self, BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long fakesnow may take to start (it imports DuckDB, sqlglot and the connector).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Set (to anything) to turn a missing fakesnow into an error instead of a skip.
pub const REQUIRE_SERVERS_ENV: &str = "BACKHAUL_REQUIRE_SERVERS";

/// A running private fakesnow server.
#[derive(Debug)]
pub struct FakeSnow {
    /// `http://127.0.0.1:<port>`: the client's base URL.
    pub url: String,
    /// The port.
    pub port: u16,
    child: Child,
}

impl FakeSnow {
    /// Starts a server. `None` (with a note on stderr) only when fakesnow is not installed and
    /// `BACKHAUL_REQUIRE_SERVERS` is unset; panics when it is installed but does not start, or
    /// when it is required and missing.
    pub fn start() -> Option<FakeSnow> {
        let bin = match fakesnow_path() {
            Ok(bin) => bin,
            Err(e) if std::env::var_os(REQUIRE_SERVERS_ENV).is_none() => {
                eprintln!("skipping: {e}");
                return None;
            }
            Err(e) => panic!("{e} ({REQUIRE_SERVERS_ENV} is set)"),
        };
        Some(FakeSnow::start_at(&bin).unwrap_or_else(|e| panic!("fakesnow did not start: {e}")))
    }

    /// Starts the server binary `bin`.
    pub fn start_at(bin: &PathBuf) -> io::Result<FakeSnow> {
        let mut child = spawn_with_death_signal(bin)?;
        match read_port(&mut child) {
            Ok(port) => Ok(FakeSnow {
                url: format!("http://127.0.0.1:{port}"),
                port,
                child,
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }
}

impl Drop for FakeSnow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$BACKHAUL_FAKESNOW`, else the venv `scripts/ensure-servers` makes.
fn fakesnow_path() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("BACKHAUL_FAKESNOW") {
        return Ok(path.into());
    }
    tool::installed(
        "BACKHAUL_FAKESNOW",
        "venv-fakesnow",
        "bin/fakesnow",
        "the Snowflake tests",
    )
    .map(|venv| venv.join("bin/fakesnow"))
}

fn spawn_with_death_signal(bin: &PathBuf) -> io::Result<Child> {
    let mut cmd = Command::new(bin);
    cmd.args(["-s", "--host", "127.0.0.1", "-p", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tool::spawn_dying_with_parent(cmd)
}

/// Reads the server's output until uvicorn says where it listens. Both pipes keep being
/// drained on threads, so a chatty server never blocks on a full pipe.
fn read_port(child: &mut Child) -> io::Result<u16> {
    let (tx, rx) = std::sync::mpsc::channel::<Result<u16, String>>();
    let stderr = child.stderr.take().expect("stderr is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let out_tx = tx.clone();
    std::thread::Builder::new()
        .name("fakesnow-stdout".into())
        .spawn(move || scan_for_port(BufReader::new(stdout), out_tx))?;
    std::thread::Builder::new()
        .name("fakesnow-stderr".into())
        .spawn(move || scan_for_port(BufReader::new(stderr), tx))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let mut logs = String::new();
    // Two scanners: one may end (its pipe closed) without the port while the other finds it.
    for _ in 0..2 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(port)) => {
                while TcpStream::connect(("127.0.0.1", port)).is_err() {
                    if Instant::now() > deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "fakesnow never accepted a connection",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Ok(port);
            }
            Ok(Err(log)) => logs.push_str(&log),
            Err(_) => break,
        }
    }
    if logs.is_empty() {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("fakesnow did not start within {START_TIMEOUT:?}"),
        ))
    } else {
        Err(io::Error::other(format!("fakesnow exited during start-up:\n{logs}")))
    }
}

fn scan_for_port(reader: impl BufRead, tx: std::sync::mpsc::Sender<Result<u16, String>>) {
    let mut seen = String::new();
    let mut told = false;
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if told {
            continue;
        }
        if let Some(port) = port_in(&line) {
            told = true;
            let _ = tx.send(Ok(port));
        } else {
            seen.push_str(&line);
            seen.push('\n');
        }
    }
    if !told {
        let _ = tx.send(Err(seen));
    }
}

/// The port of uvicorn's `running on http://127.0.0.1:<port>` line.
fn port_in(line: &str) -> Option<u16> {
    line.split("http://127.0.0.1:")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
        .filter(|port| *port != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_uvicorns_line() {
        assert_eq!(
            port_in("INFO:     Uvicorn running on http://127.0.0.1:41235 (Press CTRL+C to quit)"),
            Some(41235)
        );
        assert_eq!(port_in("INFO:     Started server process [1]"), None);
        assert_eq!(port_in("Uvicorn running on http://127.0.0.1:0"), None);
    }

    #[test]
    fn starts_answers_and_stops() {
        let Some(server) = FakeSnow::start() else { return };
        let port = server.port;
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        drop(server);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "stopped on drop");
    }
}
