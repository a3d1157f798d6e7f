//! PostgreSQL → zstd Parquet, backhaul beside DuckDB's Postgres scanner and the physical limit
//! of a binary `COPY` to `/dev/null`, in one session on one private PostgreSQL.
//!
//! Run: `cargo bench -p backhaul-cli --bench postgres_lineitem` (optimized build; on 2 cores
//! build it in its own target dir with `CARGO_TARGET_DIR`). Needs PostgreSQL binaries (see
//! crates/testkit) and PyPI: the bench calls `scripts/bench-venv`, which installs DuckDB 1.5.5,
//! its Postgres scanner extension wheel and `tpchgen-cli` into `.backhaul-test/venv-bench`.
//!
//! Environment:
//! - `BACKHAUL_BENCH_TABLES`: comma-separated, of `lineitem` and `events` (default both).
//! - `BACKHAUL_BENCH_SF`: TPC-H scale factor of `lineitem` (default `1`, 6,001,215 rows).
//! - `BACKHAUL_BENCH_EVENTS_ROWS`: rows of `events` (default 5,000,000).
//! - `BACKHAUL_BENCH_REPEAT`: rounds (default 3); every figure is printed, and the median.
//! - `BACKHAUL_BENCH_WORKERS`: comma-separated backhaul worker counts (default `1,2`).
//! - `BACKHAUL_BENCH_TARGET_BYTES`: `chunking.target_bytes` (default: the spec default, 512MiB).
//! - `BACKHAUL_BENCH_CHUNKING`: the whole `[chunking]` section instead (`workers` is not
//!   added), e.g. `policy = "fixed"` and `every = "300d"` for a plan whose chunks are far from
//!   equal, to measure splitting running chunks.
//! - `BACKHAUL_BENCH_PARALLEL_SCANS`: `source.parallel_scans` (default: the spec default, 2);
//!   `1` reads every chunk with one `COPY`, as on MySQL, views or PostgreSQL before 14.
//! - `BACKHAUL_BENCH_SPLIT_MIN_ROWS`: also run backhaul with `chunking.split_min_rows` set to
//!   this (splitting running chunks for waiting workers, off by default) beside the default,
//!   with the same worker counts.
//! - `BACKHAUL_BENCH_DUCKDB_THREADS`: DuckDB's `threads` (default 2).
//! - `BACKHAUL_BENCH_BASELINE`: another `backhaul` binary (e.g. main's, built with the same
//!   profile) run beside this one with the same worker counts, so a change is measured against
//!   its baseline in one session.
//!
//! Tables, loaded once, then `VACUUM ANALYZE`d and read once to warm the cache:
//! - `lineitem`: TPC-H, `tpchgen-cli csv --stdout` straight into `\copy … FROM STDIN`, chunked
//!   by `l_shipdate` (physical-order correlation ≈ 0);
//! - `events`: generated server-side (`generate_series`): `id bigint` primary key,
//!   `occurred_at timestamptz` rising with `id`, so in physical order (correlation 1.0) and
//!   spread over 2023, `amount numeric(38,9)`, `payload jsonb`, `note text`, each nullable
//!   column with some NULLs; chunked by `occurred_at`.
//!
//! Each round runs, per table, every tool once, the order rotated by one each round: `psql
//! \copy (SELECT * FROM t) TO '/dev/null' (FORMAT binary)`; DuckDB with its Postgres scanner
//! (`SET threads`) writing ONE zstd Parquet file (`benches/support/duckdb_postgres_to_parquet.py`
//! in the bench venv); `backhaul backfill` to a local stage and warehouse with each worker
//! count (spec: `target_bytes` default, `workers = <N>`). Each is a child process measured by
//! the kernel (`wait4`): wall time, client CPU (user + system), peak RSS; the PostgreSQL
//! server's CPU is measured from `/proc` (benches/support/pg_server_cpu.rs). Every tool's row
//! count is checked against `count(*)`. Nothing is asserted about speed: a measurement, not a
//! test.

#[path = "support/measure.rs"]
mod measure;
#[path = "support/pg_server_cpu.rs"]
mod pg_server_cpu;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use measure::run_measured;
use pg_server_cpu::ServerCpu;

use backhaul_testkit::postgres::{PostgresOptions, PostgresServer};

const BIN: &str = env!("CARGO_BIN_EXE_backhaul");
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const DB: &str = "postgres";

const LINEITEM_DDL: &str = "
CREATE TABLE lineitem (
    l_orderkey      bigint NOT NULL,
    l_partkey       bigint NOT NULL,
    l_suppkey       bigint NOT NULL,
    l_linenumber    integer NOT NULL,
    l_quantity      numeric(15,2) NOT NULL,
    l_extendedprice numeric(15,2) NOT NULL,
    l_discount      numeric(15,2) NOT NULL,
    l_tax           numeric(15,2) NOT NULL,
    l_returnflag    char(1) NOT NULL,
    l_linestatus    char(1) NOT NULL,
    l_shipdate      date NOT NULL,
    l_commitdate    date NOT NULL,
    l_receiptdate   date NOT NULL,
    l_shipinstruct  char(25) NOT NULL,
    l_shipmode      char(10) NOT NULL,
    l_comment       varchar(44) NOT NULL,
    PRIMARY KEY (l_orderkey, l_linenumber)
);
";

/// `events`: `{rows}` rows over 2023 in `occurred_at` order, so the cursor follows the
/// physical order. Values are functions of `id` (`hashint8`, `md5`), the same every run.
const EVENTS_SQL: &str = "
CREATE TABLE events (
    id          bigint PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    amount      numeric(38,9),
    payload     jsonb,
    note        text
);
INSERT INTO events
SELECT g,
       timestamptz '2023-01-01 00:00:00+00' + (g - 1) * (interval '1 second' * (31536000.0 / {rows})::float8),
       CASE WHEN g % 17 = 0 THEN NULL ELSE hashint8(g)::numeric * 1000.123456789 END,
       CASE WHEN g % 11 = 0 THEN NULL
            ELSE jsonb_build_object('user', g % 100000,
                                    'kind', (ARRAY['view', 'click', 'cart', 'buy'])[1 + (g % 4)::int],
                                    'tags', jsonb_build_array(g % 7, g % 13)) END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE 'event ' || left(md5(g::text), 8 + (g % 24)::int) END
FROM generate_series(1, {rows}) AS g;
CREATE INDEX events_occurred_at ON events (occurred_at);
VACUUM ANALYZE events;
";

#[derive(Clone, Copy, PartialEq)]
enum Table {
    Lineitem,
    Events,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Lineitem => "lineitem",
            Table::Events => "events",
        }
    }

    fn cursor(self) -> &'static str {
        match self {
            Table::Lineitem => "l_shipdate",
            Table::Events => "occurred_at",
        }
    }

    /// The spec's `[range]`: all of the table's cursor values.
    fn range(self) -> (&'static str, &'static str) {
        match self {
            Table::Lineitem => ("1992-01-01", "1999-01-01"),
            Table::Events => ("2023-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Copy,
    DuckDb,
    Backhaul(u32),
    /// The `BACKHAUL_BENCH_BASELINE` binary with this many workers.
    Baseline(u32),
    /// This binary with this many workers, splitting running chunks
    /// (`BACKHAUL_BENCH_SPLIT_MIN_ROWS`).
    Split(u32),
}

impl Tool {
    fn label(self, duckdb_threads: u32) -> String {
        match self {
            Tool::Copy => "`psql \\copy … (FORMAT binary)` → /dev/null".into(),
            Tool::DuckDb => format!("DuckDB 1.5.5, {duckdb_threads} threads"),
            Tool::Backhaul(w) => format!("backhaul, {w} worker{}", if w == 1 { "" } else { "s" }),
            Tool::Baseline(w) => format!("baseline backhaul, {w} worker{}", if w == 1 { "" } else { "s" }),
            Tool::Split(w) => format!("backhaul, {w} worker{}, splits", if w == 1 { "" } else { "s" }),
        }
    }
}

struct Options {
    tables: Vec<Table>,
    sf: f64,
    events_rows: u64,
    repeat: usize,
    workers: Vec<u32>,
    target_bytes: Option<String>,
    chunking: Option<String>,
    parallel_scans: Option<u32>,
    split_min_rows: Option<u64>,
    duckdb_threads: u32,
    baseline: Option<PathBuf>,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T, what: &str) -> T {
    match std::env::var(key) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{key}: {what}, not {v:?}")),
        Err(_) => default,
    }
}

impl Options {
    fn from_env() -> Options {
        let tables = std::env::var("BACKHAUL_BENCH_TABLES")
            .unwrap_or_else(|_| "lineitem,events".into())
            .split(',')
            .map(|t| match t.trim() {
                "lineitem" => Table::Lineitem,
                "events" => Table::Events,
                other => panic!("BACKHAUL_BENCH_TABLES: `lineitem` and/or `events`, not {other:?}"),
            })
            .collect();
        let workers = std::env::var("BACKHAUL_BENCH_WORKERS")
            .unwrap_or_else(|_| "1,2".into())
            .split(',')
            .map(|w| {
                w.trim()
                    .parse()
                    .expect("BACKHAUL_BENCH_WORKERS: comma-separated counts")
            })
            .collect();
        let repeat = env_or("BACKHAUL_BENCH_REPEAT", 3usize, "a number of rounds");
        assert!(repeat >= 1, "BACKHAUL_BENCH_REPEAT: at least 1");
        Options {
            tables,
            sf: env_or("BACKHAUL_BENCH_SF", 1.0, "a number such as 1 or 0.01"),
            events_rows: env_or("BACKHAUL_BENCH_EVENTS_ROWS", 5_000_000, "a row count"),
            repeat,
            workers,
            target_bytes: std::env::var("BACKHAUL_BENCH_TARGET_BYTES").ok(),
            chunking: std::env::var("BACKHAUL_BENCH_CHUNKING").ok(),
            parallel_scans: std::env::var("BACKHAUL_BENCH_PARALLEL_SCANS").ok().map(|v| {
                v.trim()
                    .parse()
                    .expect("BACKHAUL_BENCH_PARALLEL_SCANS: a number of scans")
            }),
            split_min_rows: std::env::var("BACKHAUL_BENCH_SPLIT_MIN_ROWS")
                .ok()
                .map(|v| v.trim().parse().expect("BACKHAUL_BENCH_SPLIT_MIN_ROWS: a row count")),
            duckdb_threads: env_or("BACKHAUL_BENCH_DUCKDB_THREADS", 2, "a thread count"),
            baseline: std::env::var_os("BACKHAUL_BENCH_BASELINE").map(PathBuf::from),
        }
    }
}

/// A loaded table and what every tool must read from it.
struct Loaded {
    table: Table,
    rows: u64,
}

/// One measured run of one tool.
struct Measured {
    wall: f64,
    client_cpu: f64,
    server_cpu: f64,
    peak_kib: i64,
    /// What the tool wrote, e.g. chunks and Parquet MB.
    note: String,
}

struct Bench {
    options: Options,
    server: PostgresServer,
    server_cpu: ServerCpu,
    venv: PathBuf,
    scratch: PathBuf,
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let options = Options::from_env();
    let venv = bench_venv();
    let server = PostgresServer::start(PostgresOptions::default()).expect("start PostgreSQL");
    let server_cpu = ServerCpu::new(server.postmaster_pid().expect("PostgreSQL is running"));
    let scratch = std::env::temp_dir().join(format!("backhaul-bench-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let bench = Bench {
        options,
        server,
        server_cpu,
        venv,
        scratch,
    };
    println!("binary={BIN}");
    println!("venv={}", bench.venv.display());

    let loaded: Vec<Loaded> = bench.options.tables.iter().map(|&t| bench.load(t)).collect();

    let mut tools = vec![Tool::Copy, Tool::DuckDb];
    tools.extend(bench.options.workers.iter().map(|&w| Tool::Backhaul(w)));
    if let Some(baseline) = &bench.options.baseline {
        println!("baseline={}", baseline.display());
        tools.extend(bench.options.workers.iter().map(|&w| Tool::Baseline(w)));
    }
    if bench.options.split_min_rows.is_some() {
        tools.extend(bench.options.workers.iter().map(|&w| Tool::Split(w)));
    }
    let threads = bench.options.duckdb_threads;
    // (table index, tool index, round, measurement)
    let mut results: Vec<(usize, usize, usize, Measured)> = Vec::new();
    for round in 0..bench.options.repeat {
        for (ti, table) in loaded.iter().enumerate() {
            for k in 0..tools.len() {
                let tool_index = (k + round) % tools.len();
                let m = bench.measure(table, tools[tool_index]);
                println!(
                    "round {} {:<9} {:<44} wall {:>7.2}s  {:>9.0} rows/s  client CPU {:>6.2}s  server CPU {:>6.2}s  peak {:>5} MiB  {}",
                    round + 1,
                    table.table.name(),
                    tools[tool_index].label(threads),
                    m.wall,
                    table.rows as f64 / m.wall,
                    m.client_cpu,
                    m.server_cpu,
                    m.peak_kib / 1024,
                    m.note
                );
                results.push((ti, tool_index, round, m));
            }
        }
    }

    println!("\nEvery run:\n");
    println!("| table | round | run | wall s | rows/s | client CPU s | PostgreSQL server CPU s | peak RSS | wrote |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|---|");
    for (ti, tool, round, m) in &results {
        println!(
            "| {} | {} | {} | {:.2} | {} | {:.2} | {:.2} | {} MiB | {} |",
            loaded[*ti].table.name(),
            round + 1,
            tools[*tool].label(threads),
            m.wall,
            thousands(loaded[*ti].rows as f64 / m.wall),
            m.client_cpu,
            m.server_cpu,
            m.peak_kib / 1024,
            m.note
        );
    }

    println!(
        "\nMedian of {} round{} (server CPU ×COPY: PostgreSQL CPU over that of the binary COPY):\n",
        bench.options.repeat,
        if bench.options.repeat == 1 { "" } else { "s" }
    );
    println!(
        "| table | run | wall s | rows/s | client CPU s | PostgreSQL server CPU s | server CPU ×COPY | peak RSS |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (ti, table) in loaded.iter().enumerate() {
        let of = |tool: usize, f: fn(&Measured) -> f64| {
            median(
                results
                    .iter()
                    .filter(|r| r.0 == ti && r.1 == tool)
                    .map(|r| f(&r.3))
                    .collect(),
            )
        };
        let copy_server = of(0, |m| m.server_cpu);
        for (tool_index, tool) in tools.iter().enumerate() {
            let wall = of(tool_index, |m| m.wall);
            let server = of(tool_index, |m| m.server_cpu);
            println!(
                "| {} | {} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.0} MiB |",
                table.table.name(),
                tool.label(threads),
                wall,
                thousands(table.rows as f64 / wall),
                of(tool_index, |m| m.client_cpu),
                server,
                server / copy_server,
                of(tool_index, |m| m.peak_kib as f64) / 1024.0
            );
        }
    }
    let _ = std::fs::remove_dir_all(&bench.scratch);
}

impl Bench {
    /// Creates and fills `table`, indexes its cursor, `VACUUM ANALYZE`s it and reads it once
    /// to warm the cache.
    fn load(&self, table: Table) -> Loaded {
        let started = Instant::now();
        match table {
            Table::Lineitem => self.load_lineitem(),
            Table::Events => {
                let sql = EVENTS_SQL.replace("{rows}", &self.options.events_rows.to_string());
                self.server.psql(DB, &sql).expect("generate events");
            }
        }
        let rows = self.count(table);
        let stats = self
            .server
            .psql(
                DB,
                &format!(
                    "SELECT pg_total_relation_size('{t}') / 1e6, relpages, \
                     (SELECT round(correlation::numeric, 3) FROM pg_stats \
                      WHERE tablename = '{t}' AND attname = '{c}') \
                     FROM pg_class WHERE relname = '{t}'",
                    t = table.name(),
                    c = table.cursor()
                ),
            )
            .expect("table statistics");
        let stats: Vec<&str> = stats.split('|').collect();
        let loaded_secs = started.elapsed().as_secs_f64();
        self.copy_to_dev_null(table.name()); // warms the cache
        println!(
            "{}: {rows} rows, {:.0} MB with indexes, {} heap pages, correlation of {} {}; loaded in {loaded_secs:.0}s",
            table.name(),
            stats[0].parse::<f64>().unwrap_or(0.0),
            stats[1],
            table.cursor(),
            stats[2],
        );
        Loaded { table, rows }
    }

    fn load_lineitem(&self) {
        self.server.psql(DB, LINEITEM_DDL).expect("create lineitem");
        let sf = self.options.sf;
        let mut generator = Command::new(self.venv.join("bin/tpchgen-cli"))
            .args(["csv", "-s", &sf.to_string(), "--tables", "lineitem", "--stdout"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tpchgen-cli (scripts/bench-venv)");
        let csv = generator.stdout.take().unwrap();
        let status = self
            .server
            .psql_command(DB)
            .args(["-c", "\\copy lineitem FROM STDIN (FORMAT csv, HEADER true)"])
            .stdin(csv)
            .status()
            .expect("psql");
        assert!(status.success(), "loading lineitem failed");
        assert!(generator.wait().unwrap().success(), "tpchgen-cli failed");
        self.server
            .psql(
                DB,
                "CREATE INDEX lineitem_shipdate ON lineitem (l_shipdate); VACUUM ANALYZE lineitem;",
            )
            .expect("index and analyze");
    }

    fn count(&self, table: Table) -> u64 {
        self.server
            .psql(DB, &format!("SELECT count(*) FROM {}", table.name()))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Runs `cmd` as a measured child; the server's CPU is charged from just before it starts
    /// until the postmaster has reaped every backend it opened.
    fn run(&self, cmd: &mut Command) -> (std::process::Output, Measured) {
        let baseline = self.server_cpu.children();
        let server_before = self.server_cpu.seconds();
        let started = Instant::now();
        let (out, peak_kib, client_cpu) = run_measured(cmd);
        let wall = started.elapsed().as_secs_f64();
        self.server_cpu.settle(&baseline);
        let server_cpu = self.server_cpu.seconds() - server_before;
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let measured = Measured {
            wall,
            client_cpu,
            server_cpu,
            peak_kib,
            note: String::new(),
        };
        (out, measured)
    }

    fn measure(&self, table: &Loaded, tool: Tool) -> Measured {
        match tool {
            Tool::Copy => self.measure_copy(table),
            Tool::DuckDb => self.measure_duckdb(table),
            Tool::Backhaul(w) => self.measure_backhaul(table, w, Path::new(BIN), false),
            Tool::Baseline(w) => {
                let binary = self.options.baseline.as_deref().expect("a baseline tool has a binary");
                self.measure_backhaul(table, w, binary, false)
            }
            Tool::Split(w) => self.measure_backhaul(table, w, Path::new(BIN), true),
        }
    }

    fn measure_copy(&self, table: &Loaded) -> Measured {
        let (out, mut m) = self.run(&mut self.copy_command(table.table.name()));
        // psql prints the `COPY <rows>` tag once QUIET is off (psql_command sets -q).
        let text = String::from_utf8_lossy(&out.stdout);
        let copied: Option<u64> = text
            .lines()
            .find_map(|l| l.strip_prefix("COPY "))
            .and_then(|n| n.trim().parse().ok());
        assert_eq!(
            copied,
            Some(table.rows),
            "psql \\copy of {}: {text}",
            table.table.name()
        );
        m.note = "–".into();
        m
    }

    fn copy_command(&self, table: &str) -> Command {
        let mut cmd = self.server.psql_command(DB);
        cmd.args([
            "-c",
            "\\set QUIET off",
            "-c",
            &format!("\\copy (SELECT * FROM {table}) TO '/dev/null' (FORMAT binary)"),
        ]);
        cmd
    }

    fn copy_to_dev_null(&self, table: &str) {
        let status = self.copy_command(table).stdout(Stdio::null()).status().expect("psql");
        assert!(status.success(), "psql \\copy of {table} failed");
    }

    fn measure_duckdb(&self, table: &Loaded) -> Measured {
        let script = Path::new(REPO).join("benches/support/duckdb_postgres_to_parquet.py");
        let out_file = self.scratch.join(format!("{}.parquet", table.table.name()));
        let _ = std::fs::remove_file(&out_file);
        let python = self.venv.join("bin/python");
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .arg("copy")
            .arg(table.table.name())
            .arg(&out_file)
            .arg(self.options.duckdb_threads.to_string())
            .env("PGHOST", self.server.host())
            .env("PGPORT", self.server.port().to_string())
            .env("PGUSER", self.server.user())
            .env("PGPASSWORD", self.server.password())
            .env("PGDATABASE", DB);
        let (out, mut m) = self.run(&mut cmd);
        let written: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("rows DuckDB wrote");
        // Counted again from the file, outside the measurement.
        let counted = Command::new(&python)
            .arg(&script)
            .arg("count")
            .arg(&out_file)
            .output()
            .expect("count the Parquet file");
        let counted: u64 = String::from_utf8_lossy(&counted.stdout)
            .trim()
            .parse()
            .expect("rows in DuckDB's file");
        assert_eq!(
            (written, counted),
            (table.rows, table.rows),
            "DuckDB wrote {written} rows, its file holds {counted}, of {} in {}",
            table.rows,
            table.table.name()
        );
        let mb = std::fs::metadata(&out_file).map(|f| f.len()).unwrap_or(0) as f64 / 1e6;
        m.note = format!("1 file, {mb:.0} MB Parquet");
        let _ = std::fs::remove_file(&out_file);
        m
    }

    fn measure_backhaul(&self, table: &Loaded, workers: u32, binary: &Path, split: bool) -> Measured {
        let dir = self.scratch.join(format!("backhaul-{}-{workers}", table.table.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("job.toml"), self.spec(table.table, workers, split)).unwrap();
        let (out, mut m) = self.run(
            Command::new(binary)
                .current_dir(&dir)
                .arg("--state")
                .arg(dir.join("state.db"))
                .args([
                    "--no-progress",
                    "--output",
                    "json",
                    "backfill",
                    "job.toml",
                    "--workers",
                    &workers.to_string(),
                ]),
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("backfill --output json");
        let loaded = v["this_run"]["rows"].as_u64().unwrap_or(0);
        assert_eq!(
            loaded,
            table.rows,
            "backfill of {} loaded {loaded} of {} rows: {v}",
            table.table.name(),
            table.rows
        );
        let chunks = v["summary"]["chunks"].as_u64().unwrap_or(0);
        let files = v["files"]["count"].as_u64().unwrap_or(0);
        m.note = format!(
            "{chunks} chunk{}, {files} file{}, {:.0} MB Parquet, {:.2}s after planning",
            if chunks == 1 { "" } else { "s" },
            if files == 1 { "" } else { "s" },
            v["files"]["bytes"].as_f64().unwrap_or(0.0) / 1e6,
            v["this_run"]["seconds"].as_f64().unwrap_or(0.0)
        );
        let _ = std::fs::remove_dir_all(&dir);
        m
    }

    /// The job spec: the default chunking (`target_bytes = 512MiB` unless
    /// `BACKHAUL_BENCH_TARGET_BYTES`), its plan balanced for the `workers` that run it, or
    /// `BACKHAUL_BENCH_CHUNKING`; with `split`, `split_min_rows` from
    /// `BACKHAUL_BENCH_SPLIT_MIN_ROWS`.
    fn spec(&self, table: Table, workers: u32, split: bool) -> String {
        let (from, to) = table.range();
        let target_bytes = self.options.target_bytes.as_deref().unwrap_or("512MiB");
        let mut chunking = match &self.options.chunking {
            Some(section) => section.clone(),
            None => format!("policy = \"target_bytes\"\ntarget_bytes = \"{target_bytes}\"\nworkers = {workers}"),
        };
        if let (true, Some(rows)) = (split, self.options.split_min_rows) {
            chunking.push_str(&format!("\nsplit_min_rows = {rows}"));
        }
        let scans = self
            .options
            .parallel_scans
            .map(|n| format!("parallel_scans = {n}\n"))
            .unwrap_or_default();
        format!(
            r#"version = 1
name = "{name}"

[source]
kind = "postgres"
host = "{host}"
port = {port}
user = "{user}"
database = "{DB}"
table = "public.{name}"
cursor = "{cursor}"
{scans}
[source.password]
file = "{password}"

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
table = "{name}"
"#,
            name = table.name(),
            cursor = table.cursor(),
            host = self.server.host(),
            port = self.server.port(),
            user = self.server.user(),
            password = self.server.password_file().display(),
        )
    }
}

/// Installs (when missing) and returns the bench's virtual environment: `scripts/bench-venv`.
fn bench_venv() -> PathBuf {
    let out = Command::new(Path::new(REPO).join("scripts/bench-venv"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/bench-venv");
    assert!(out.status.success(), "scripts/bench-venv failed");
    PathBuf::from(String::from_utf8(out.stdout).expect("venv path").trim())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `877 k` for rows per second in the tables.
fn thousands(v: f64) -> String {
    format!("{:.0} k", v / 1000.0)
}
