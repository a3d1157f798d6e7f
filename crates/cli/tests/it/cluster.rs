//! Helpers for distributed-mode tests: coordinator and worker processes of the real binary,
//! a TCP proxy that can stop forwarding, and readers of the coordinator's state.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util::{JobDir, text};

/// A child process killed (SIGKILL) when dropped, with its stderr in a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    name: String,
}

impl Proc {
    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill {} {sig}", self.name);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own; panics after `timeout` with its log.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit within {timeout:?}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static LOGS: AtomicUsize = AtomicUsize::new(0);

fn spawn(job: &JobDir, name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    let log = job
        .path()
        .join(format!("{name}-{}.log", LOGS.fetch_add(1, Ordering::Relaxed)));
    let file = std::fs::File::create(&log).expect("log file");
    let mut cmd = job.cmd();
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env_remove("BACKHAUL_TOKEN")
        .env_remove("BACKHAUL_TOKEN_FILE")
        .env_remove("BACKHAUL_COORDINATOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn backhaul");
    Proc {
        child,
        log,
        name: name.into(),
    }
}

/// Polls `cond` every 20 ms; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads an address file once its writer has renamed it into place.
pub fn read_addr(path: &Path, proc: &mut Proc) -> SocketAddr {
    let mut addr = None;
    wait_until("the address file", Duration::from_secs(60), || {
        assert!(
            proc.is_running(),
            "process exited before listening; log:\n{}",
            proc.log_text()
        );
        addr = std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok());
        addr.is_some()
    });
    addr.expect("address")
}

/// A coordinator process on the job's state database.
pub struct Coordinator {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub http: Option<SocketAddr>,
    /// The token given with `--token-file`, sent as a bearer token by [`Coordinator::http_get`].
    pub token: Option<String>,
}

impl Coordinator {
    /// Starts `backhaul coordinator --listen <listen>` with `extra` flags; waits until it listens.
    pub fn start(job: &JobDir, listen: &str, extra: &[&str]) -> Self {
        Self::start_with_env(job, listen, extra, &[])
    }

    pub fn start_with_env(job: &JobDir, listen: &str, extra: &[&str], envs: &[(&str, &str)]) -> Self {
        let addr_file = job.path().join("coordinator.addr");
        let http_file = job.path().join("coordinator.http");
        let _ = std::fs::remove_file(&addr_file);
        let _ = std::fs::remove_file(&http_file);
        let mut args = vec![
            "coordinator",
            "--listen",
            listen,
            "--addr-file",
            addr_file.to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
            "--http-addr-file",
            http_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut proc = spawn(job, "coordinator", &args, envs);
        let addr = read_addr(&addr_file, &mut proc);
        let http = Some(read_addr(&http_file, &mut proc));
        // The HTTP paths take the coordinator's token, like its gRPC calls.
        let token = extra
            .iter()
            .position(|a| *a == "--token-file")
            .and_then(|i| extra.get(i + 1))
            .map(|path| std::fs::read_to_string(path).expect("token file").trim().to_string());
        Coordinator {
            proc,
            addr,
            http,
            token,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET path` on the HTTP listener.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        http_get_authorized(self.http.expect("http listener"), path, bearer.as_deref())
    }

    /// The value of an unlabelled or exactly-labelled sample in `/metrics`.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{body}"))
    }
}

/// Starts `backhaul worker --coordinator <url> --id <id>` with `extra` flags.
pub fn start_worker(job: &JobDir, url: &str, id: &str, extra: &[&str]) -> Proc {
    start_worker_with_env(job, url, id, extra, &[])
}

pub fn start_worker_with_env(job: &JobDir, url: &str, id: &str, extra: &[&str], envs: &[(&str, &str)]) -> Proc {
    let mut args = vec!["worker", "--coordinator", url, "--id", id];
    args.extend_from_slice(extra);
    spawn(job, id, &args, envs)
}

/// Runs a client command against the coordinator.
pub fn client(job: &JobDir, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = job.cmd();
    cmd.args(args)
        .env_remove("BACKHAUL_TOKEN")
        .env_remove("BACKHAUL_TOKEN_FILE")
        .env_remove("BACKHAUL_COORDINATOR");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn backhaul")
}

/// Runs a client command with `--output json` and parses stdout, asserting success.
pub fn client_json(job: &JobDir, args: &[&str], envs: &[(&str, &str)]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = client(job, &all, envs);
    assert!(
        out.status.success(),
        "backhaul {all:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_str(&text(&out.stdout)).expect("json output")
}

/// Minimal HTTP/1.1 GET, with an `Authorization` header value when given; returns the status
/// code and body.
pub fn http_get_authorized(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read http");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// One row of the coordinator's `chunks` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkState {
    pub chunk: i64,
    pub state: String,
    pub attempt: i64,
    pub worker: Option<String>,
}

pub fn chunks(job: &JobDir, job_id: &str) -> Vec<ChunkState> {
    let Ok(conn) = rusqlite::Connection::open(job.path().join("state.db")) else {
        return Vec::new();
    };
    let Ok(mut stmt) =
        conn.prepare("SELECT chunk_id, state, attempt, lease_worker FROM chunks WHERE job_id = ?1 ORDER BY chunk_id")
    else {
        return Vec::new();
    };
    stmt.query_map([job_id], |r| {
        Ok(ChunkState {
            chunk: r.get(0)?,
            state: r.get(1)?,
            attempt: r.get(2)?,
            worker: r.get(3)?,
        })
    })
    .map(|rows| rows.filter_map(|r| r.ok()).collect())
    .unwrap_or_default()
}

/// (attempt, worker, outcome) of every attempt of a chunk.
pub fn attempts(job: &JobDir, job_id: &str, chunk: i64) -> Vec<(i64, String, Option<String>)> {
    let conn = rusqlite::Connection::open(job.path().join("state.db")).expect("open state");
    let mut stmt = conn
        .prepare(
            "SELECT attempt, worker_id, outcome FROM attempts WHERE job_id = ?1 AND chunk_id = ?2 ORDER BY attempt",
        )
        .expect("prepare");
    stmt.query_map(rusqlite::params![job_id, chunk], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .expect("query")
    .map(|r| r.expect("row"))
    .collect()
}

/// Waits for a chunk leased by a worker whose id starts with `worker`; returns the chunk.
pub fn wait_for_lease_by(job: &JobDir, job_id: &str, worker: &str) -> i64 {
    let mut found = None;
    wait_until(&format!("a chunk leased by {worker}"), Duration::from_secs(60), || {
        found = chunks(job, job_id)
            .into_iter()
            .find(|c| c.state == "leased" && c.worker.as_deref().is_some_and(|w| w.starts_with(worker)))
            .map(|c| c.chunk);
        found.is_some()
    });
    found.expect("leased chunk")
}

/// Holds an exclusive lock on the embedded source database: readers block (up to the source's
/// 10 s busy timeout) until it is dropped. Freezes a worker mid-chunk, deterministically.
pub struct SourceLock {
    conn: Option<rusqlite::Connection>,
}

impl SourceLock {
    pub fn take(job: &JobDir) -> Self {
        let conn = rusqlite::Connection::open(job.path().join("source.db")).expect("open source");
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE").unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        SourceLock { conn: Some(conn) }
    }

    pub fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.execute_batch("COMMIT").unwrap();
        }
    }
}

impl Drop for SourceLock {
    fn drop(&mut self) {
        self.release();
    }
}

/// A TCP proxy on 127.0.0.1 that forwards to `upstream` until paused: while paused it keeps
/// every connection open but moves no bytes in either direction, like a network partition
/// that neither side notices at once.
pub struct Proxy {
    pub addr: SocketAddr,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (paused.clone(), stop.clone());
        let acceptor = std::thread::spawn(move || {
            let mut pumps = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((down, _)) => {
                        let Ok(up) = TcpStream::connect(upstream) else { continue };
                        for (from, to) in [(down.try_clone().unwrap(), up.try_clone().unwrap()), (up, down)] {
                            let (p, s) = (p.clone(), s.clone());
                            pumps.push(std::thread::spawn(move || pump(from, to, &p, &s)));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for t in pumps {
                let _ = t.join();
            }
        });
        Proxy {
            addr,
            paused,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, paused: &AtomicBool, stop: &AtomicBool) {
    from.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if paused.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Bytes read just before a pause are held until it ends.
                while paused.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}
