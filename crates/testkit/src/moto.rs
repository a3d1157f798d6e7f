//! A private S3 server for tests: `moto_server` (PyPI `moto[server]`, pinned in
//! `scripts/ensure-servers`, which installs it into `.backhaul-test/venv-moto`).
//!
//! [`MotoServer::start`] starts one on `127.0.0.1` and a port the OS picks (`-p 0`: moto binds
//! it and logs `Running on http://127.0.0.1:<port>`, which is read back, so there is no race
//! for the port), waits until it answers, and creates a bucket. The server stops when the
//! handle drops, and dies with the test process (`PR_SET_PDEATHSIG`) if nothing drops it: keep
//! the handle on the test's own thread.
//!
//! moto accepts any credentials; [`MotoServer::env`] gives the variables the code under test
//! reads them from. A missing moto is an error telling to run `scripts/ensure-servers`: tests
//! that need S3 never skip silently.

use crate::tool;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto may take to start (Python imports every AWS service model it serves).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The access key moto is given; any value works.
pub const ACCESS_KEY_ID: &str = "backhaul-test-key";
/// The secret moto is given; tests check it is never printed.
pub const SECRET_ACCESS_KEY: &str = "backhaul-test-secret-not-for-printing";

/// A running private moto S3 server with one bucket.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
    bucket: String,
}

impl MotoServer {
    /// Starts a server and creates the bucket `bucket` in it.
    pub fn start(bucket: &str) -> io::Result<MotoServer> {
        let bin = moto_server_path()?;
        let mut child = spawn_with_death_signal(&bin)?;
        let port = match read_port(&mut child) {
            Ok(port) => port,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let server = MotoServer {
            child,
            port,
            bucket: bucket.into(),
        };
        server.create_bucket(bucket)?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`, for `[stage] endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Credentials and region as environment variables, for the code under test.
    pub fn env() -> [(&'static str, &'static str); 3] {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
            ("AWS_REGION", "us-east-1"),
        ]
    }

    /// Creates another bucket.
    pub fn create_bucket(&self, name: &str) -> io::Result<()> {
        let (status, body) = self.request("PUT", &format!("/{name}"))?;
        if status != 200 {
            return Err(io::Error::other(format!("create bucket {name}: HTTP {status}: {body}")));
        }
        Ok(())
    }

    /// Keys in the bucket under `prefix` (ListObjectsV2; at most 1000, enough for tests).
    pub fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let (status, body) = self.request(
            "GET",
            &format!("/{}?list-type=2&prefix={}", self.bucket, encode_query(prefix)),
        )?;
        if status != 200 {
            return Err(io::Error::other(format!("list {prefix}: HTTP {status}: {body}")));
        }
        Ok(body
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(String::from)
            .collect())
    }

    /// One unsigned HTTP/1.1 request (moto does not check signatures); returns status and body.
    fn request(&self, method: &str, target: &str) -> io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not an HTTP response: {head}")))?;
        let chunked = head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
        let body = if chunked { dechunk(body) } else { body.to_string() };
        Ok((status, body))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$BACKHAUL_MOTO_SERVER`, else the venv `scripts/ensure-servers` makes.
fn moto_server_path() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("BACKHAUL_MOTO_SERVER") {
        return Ok(path.into());
    }
    tool::installed("BACKHAUL_MOTO_SERVER", "venv-moto", "bin/moto_server", "the S3 tests")
        .map(|venv| venv.join("bin/moto_server"))
}

fn spawn_with_death_signal(bin: &PathBuf) -> io::Result<Child> {
    let mut cmd = Command::new(bin);
    cmd.args(["-H", "127.0.0.1", "-p", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    tool::spawn_dying_with_parent(cmd)
}

/// Reads moto's log until it says where it listens. The log keeps being drained on a thread,
/// so a chatty server never blocks on a full pipe.
fn read_port(child: &mut Child) -> io::Result<u16> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel::<Result<u16, String>>();
    std::thread::Builder::new().name("moto-log".into()).spawn(move || {
        let mut seen = String::new();
        let mut told = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !told {
                if let Some(port) = line
                    .split("Running on http://127.0.0.1:")
                    .nth(1)
                    .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|p| p.parse().ok())
                {
                    told = true;
                    let _ = tx.send(Ok(port));
                } else {
                    seen.push_str(&line);
                    seen.push('\n');
                }
            }
        }
        if !told {
            let _ = tx.send(Err(seen));
        }
    })?;
    let deadline = Instant::now() + START_TIMEOUT;
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(port)) => {
            // Bound before it logged; wait until HTTP answers all the same.
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "moto never accepted a connection",
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(port)
        }
        Ok(Err(log)) => Err(io::Error::other(format!("moto_server exited during start-up:\n{log}"))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("moto_server did not start within {START_TIMEOUT:?}"),
        )),
    }
}

fn encode_query(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_creates_a_bucket_lists_and_stops() {
        let server = MotoServer::start("testkit-bucket").unwrap();
        assert!(server.list("").unwrap().is_empty());
        server.create_bucket("another-bucket").unwrap();
        let port = server.port();
        drop(server);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "stopped on drop");
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }
}
