//! Helpers: a job directory with a spec, running the binary, reading state.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use backhaul_core::cursor::CursorRange;
use backhaul_core::cursor::{CursorKind, SpecBound};

pub const BIN: &str = env!("CARGO_BIN_EXE_backhaul");

/// A temporary directory holding one job's spec, state, source, stage and warehouse.
pub struct JobDir {
    pub dir: tempfile::TempDir,
    /// `--state` of every command: `<dir>/state.db` unless set (to a PostgreSQL URL).
    pub state: Option<String>,
    /// Environment of every command (a state password).
    pub env: Vec<(String, String)>,
}

pub struct JobParams<'a> {
    pub name: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub rows_per_day: u64,
    pub chunking: &'a str,
}

impl Default for JobParams<'_> {
    fn default() -> Self {
        JobParams {
            name: "orders",
            from: "2023-03-01",
            to: "2023-03-11",
            rows_per_day: 300,
            chunking: "policy = \"fixed\"\nevery = \"1d\"",
        }
    }
}

pub fn spec_text(p: &JobParams<'_>) -> String {
    format!(
        r#"version = 1
name = "{name}"

[source]
kind = "embedded"
path = "source.db"
cursor = "created_at"
rows_per_day = {rpd}
seed = 7

[range]
from = "{from}"
to = "{to}"

[chunking]
{chunking}

[stage]
path = "stage"

[destination]
kind = "local"
path = "warehouse"
table = "orders"
file_size = "1MiB"
allow_small_files = true
"#,
        name = p.name,
        rpd = p.rows_per_day,
        from = p.from,
        to = p.to,
        chunking = p.chunking
    )
}

impl JobDir {
    pub fn new(p: &JobParams<'_>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("job.toml"), spec_text(p)).expect("write spec");
        JobDir::in_dir(dir)
    }

    /// A job directory with nothing in it yet.
    pub fn in_dir(dir: tempfile::TempDir) -> Self {
        JobDir {
            dir,
            state: None,
            env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn spec(&self) -> PathBuf {
        self.path().join("job.toml")
    }

    pub fn write_spec(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).expect("write spec");
        p
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        let state = self
            .state
            .clone()
            .unwrap_or_else(|| self.path().join("state.db").display().to_string());
        c.current_dir(self.path())
            .arg("--state")
            .arg(state)
            .arg("--no-progress");
        c.env_remove("BACKHAUL_STATE")
            .env_remove("BACKHAUL_STATE_PASSWORD")
            .env_remove("BACKHAUL_STATE_PASSWORD_FILE")
            .env_remove("BACKHAUL_WAREHOUSE")
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn backhaul")
    }

    /// Runs and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "backhaul {args:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("json output")
    }

    /// Committed (chunk, rows, checksum, attempt) rows from the state database.
    pub fn committed_chunks(&self, job: &str) -> Vec<(i64, i64, i64, i64)> {
        let conn = rusqlite::Connection::open(self.path().join("state.db")).expect("open state");
        let mut stmt = conn
            .prepare("SELECT chunk_id, committed_rows, committed_checksum, attempt FROM chunks WHERE job_id = ?1 AND state = 'committed' ORDER BY chunk_id")
            .expect("prepare");
        stmt.query_map([job], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    }

    /// Waits until `n` chunks of `job` are committed while `child` runs; panics if the child
    /// exits first (the job is too short for the test) or after 120 s without reaching `n`.
    pub fn wait_for_commits(&self, child: &mut std::process::Child, job: &str, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while self.count_committed(job) < n {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("backfill ended ({status}) before {n} chunks were committed; make the job longer");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "fewer than {n} chunks committed within 120 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn count_committed(&self, job: &str) -> usize {
        match rusqlite::Connection::open(self.path().join("state.db")) {
            Ok(conn) => conn
                .query_row(
                    "SELECT count(*) FROM chunks WHERE job_id = ?1 AND state = 'committed'",
                    [job],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as usize)
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// `SELECT count(*), count(DISTINCT order_id)` over the warehouse.
    pub fn counts(&self) -> (u64, u64) {
        let v = self.json(&[
            "query",
            "--warehouse",
            "warehouse",
            "SELECT count(*) AS n, count(DISTINCT order_id) AS d FROM orders",
        ]);
        (v[0]["n"].as_u64().expect("n"), v[0]["d"].as_u64().expect("d"))
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Rows the generator puts in `[from, to)` (whole days).
pub fn expected_rows(rows_per_day: u64, from: &str, to: &str) -> u64 {
    let b = |t: &str| SpecBound::parse(t).unwrap().to_cursor(CursorKind::Timestamp).unwrap();
    backhaul_source_embedded::generator::expected_rows(7, rows_per_day, CursorRange::new(b(from), b(to)))
}
