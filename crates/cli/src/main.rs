//! `backhaul`: distributed, verifiable bulk backfills into warehouses.

mod commands;
mod connectors;
mod local;
mod output;
mod pipeline;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes, documented in `backhaul --help` and the README.
pub mod exit {
    /// Something failed (bad input, unreachable system, internal error).
    pub const FAILURE: u8 = 1;
    /// Verification found a mismatch or a missing chunk.
    pub const VERIFY_MISMATCH: u8 = 3;
    /// The job ended with parked chunks (failed permanently or too often).
    pub const PARKED: u8 = 4;
    /// A job's checks failed (`status --check`, or `sync` after loading: stale table or volume
    /// anomaly).
    pub const CHECKS_FAILED: u8 = 5;
    /// Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Parser, Debug)]
#[command(
    name = "backhaul",
    version,
    about = "Backfill years of history into your warehouse, chunk by chunk, exactly once.",
    long_about = "backhaul cuts a backfill into time-bounded chunks, extracts them in parallel into zstd \
Parquet, stages the files and commits each chunk exactly once at the destination, proving rows \
and a checksum or column fingerprint per chunk. Job state lives in an embedded database, so a killed run resumes where it \
stopped.\n\nStart with `backhaul demo` (no servers needed), then write a job spec (docs/job-spec.md).",
    after_help = "Exit codes: 0 success, 1 failure, 2 usage error, 3 verification mismatch, 4 chunks parked, 5 checks failed, 130 interrupted.\n\n\
Examples:\n  backhaul demo\n  backhaul plan job.toml\n  backhaul backfill job.toml --workers 2\n  \
backhaul verify orders\n  backhaul query \"SELECT count(*) FROM orders\""
)]
struct Cli {
    /// State database holding jobs, chunks, attempts and outputs: a file (embedded SQLite), or
    /// for `coordinator`, `status` and `verify` a postgres://user@host/db?sslmode=... URL.
    #[arg(long, global = true, env = "BACKHAUL_STATE", default_value = ".backhaul/state.db")]
    state: PathBuf,
    /// File holding the password of a postgres:// --state URL (else $BACKHAUL_STATE_PASSWORD),
    /// so the password need not be in the URL.
    #[arg(long, global = true, env = "BACKHAUL_STATE_PASSWORD_FILE", value_name = "PATH")]
    state_password_file: Option<PathBuf>,
    /// Output format for results.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// Disable the progress bar even on a terminal.
    #[arg(long, global = true)]
    no_progress: bool,
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log line format on stderr: `text` for people, `json` (one object per line with the
    /// job, chunk, attempt and worker fields) for log collectors.
    #[arg(long, global = true, value_enum, env = "BACKHAUL_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and sentences for people.
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, message, fields, spans).
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the built-in demo: seed an embedded source, backfill, verify, summarize.
    #[command(
        after_help = "Example:\n  backhaul demo\n  backhaul demo --days 30 --rows-per-day 2000 --workers 2\n\n\
Everything goes under .backhaul/demo (source database, stage, warehouse, state); the seeded source is \
kept between runs, the rest is started afresh. No server is needed."
    )]
    Demo(commands::demo::DemoArgs),
    /// List a database source's tables with columns, primary keys and ranked cursor candidates;
    /// write a pipeline spec to edit.
    #[command(
        after_help = "Examples:\n  backhaul discover source.toml\n  backhaul discover source.toml --schema sales --output json\n  \
backhaul discover source.toml --write pipeline.toml --name shop\n\n\
source.toml holds a [source] section with the connection only (postgres or mysql). Cursor candidates are \
ranked: last-modified timestamps (updated_at, ...) first, then creation timestamps, then an integer primary key."
    )]
    Discover(commands::discover::DiscoverArgs),
    /// Print the chunks a job would run, with estimated rows and bytes, without extracting.
    #[command(
        after_help = "Example:\n  backhaul plan job.toml\n  backhaul plan job.toml --output json | jq '.chunks | length'"
    )]
    Plan(commands::plan::PlanArgs),
    /// Run (or resume) a backfill with a coordinator and N workers in this process.
    #[command(
        after_help = "Examples:\n  backhaul backfill job.toml --workers 4\n  backhaul backfill --resume orders\n\n\
Re-running the same command after a crash or kill resumes the job: committed chunks are kept, \
the rest run again, nothing is loaded twice."
    )]
    Backfill(commands::backfill::BackfillArgs),
    /// Extend a sync job from its high-water mark to now − lag and load the new chunks.
    #[command(
        after_help = "Examples:\n  backhaul sync orders.toml\n  backhaul sync orders.toml --workers 4\n\n\
The first sync backfills from range.from; each later one plans only [mark, now − lag) (plus a \
lookback chunk in dedup mode). Killed, it resumes like backfill: run it again."
    )]
    Sync(commands::sync::SyncArgs),
    /// Show jobs, or one job's chunks and their states.
    #[command(
        after_help = "Examples:\n  backhaul status\n  backhaul status orders --chunks\n  backhaul status orders --output json\n  \
backhaul status orders --coordinator http://coordinator:7070 --follow\n  \
backhaul status --check --state postgres://backhaul@db/backhaul   # exit 5 when a job's [checks] fail"
    )]
    Status(commands::status::StatusArgs),
    /// Re-measure every committed chunk's proof at the destination and check it against what was extracted.
    #[command(
        after_help = "Example:\n  backhaul verify orders && echo verified\n\nEach chunk is checked at its destination's proof level (exact checksum, fingerprint or rows only; \
see docs/verification.md). Exits 3 when any chunk is missing or differs, naming chunk, column and both values."
    )]
    Verify(commands::verify::VerifyArgs),
    /// Re-run the chunks of a range; each replaces exactly its own data at the destination.
    #[command(after_help = "Example:\n  backhaul replay orders --from 2024-02-01 --to 2024-02-08")]
    Replay(commands::replay::ReplayArgs),
    /// Serve jobs to workers over gRPC (distributed mode), with durable state in --state.
    #[command(
        after_help = "Examples:\n  backhaul coordinator --listen 0.0.0.0:7070 --state /var/lib/backhaul/state.db --token-file /run/secrets/token --http-listen 0.0.0.0:9090\n  \
backhaul coordinator --listen 127.0.0.1:0 --addr-file coordinator.addr\n\n\
Stops on SIGTERM (exit 0) or SIGINT (exit 130); restarting it on the same state resumes every job. \
Workers keep their leases across a restart if it is shorter than the lease TTL."
    )]
    Coordinator(commands::coordinator::CoordinatorArgs),
    /// Lease chunks from a coordinator and run them (distributed mode).
    #[command(
        after_help = "Example:\n  backhaul worker --coordinator http://coordinator:7070 --slots 4 --token-file /run/secrets/token\n\n\
On SIGTERM or SIGINT the worker drains: it takes no new chunks and lets running ones finish for \
--drain-timeout, then hands the rest back; a second signal hands them back at once."
    )]
    Worker(commands::worker::WorkerArgs),
    /// Send a job spec to a coordinator, which plans and runs it on its workers.
    #[command(
        after_help = "Examples:\n  backhaul submit job.toml --coordinator http://coordinator:7070\n  \
backhaul submit job.toml --coordinator http://coordinator:7070 --wait\n\n\
A spec the coordinator refuses exits 1 with the file, field and message (JSON with --output json)."
    )]
    Submit(commands::submit::SubmitArgs),
    /// Show a chunk's first rows, read from the source by a worker and sent over Arrow Flight.
    #[command(
        after_help = "Example:\n  backhaul preview orders --chunk 3 --limit 10 --coordinator http://coordinator:7070\n\n\
Needs a worker started with --flight-listen; this machine never connects to the source. An https:// \
Flight port is checked with --tls-ca (and --tls-cert/--tls-key for mutual TLS)."
    )]
    Preview(commands::preview::PreviewArgs),
    /// Manage a coordinator's schedules: add, list, pause, resume, run-now, remove.
    #[command(
        after_help = "Examples:\n  backhaul schedule add job.toml --cron \"0 2 * * *\" --tz Europe/Berlin --coordinator http://coordinator:7070\n  \
backhaul schedule list --coordinator http://coordinator:7070 --output json\n  \
backhaul schedule run-now orders --coordinator http://coordinator:7070\n\n\
The coordinator starts a run on each tick, never two of one schedule at once; ticks missed while it was \
down make one run when it is back (docs/pipelines.md)."
    )]
    Schedule(commands::schedule::ScheduleArgs),
    /// Cancel a job on a coordinator: no new chunks start, running ones stop at their next heartbeat.
    #[command(after_help = "Example:\n  backhaul cancel orders --coordinator http://coordinator:7070")]
    Cancel(commands::cancel::CancelArgs),
    /// Run SQL over a local Parquet warehouse with DataFusion.
    #[command(
        after_help = "Examples:\n  backhaul query \"SELECT status, count(*) FROM orders GROUP BY status\"\n  \
backhaul query --warehouse .backhaul/demo/warehouse \"SELECT * FROM orders LIMIT 5\" --output json"
    )]
    Query(commands::query::QueryArgs),
    /// Measure a job's table for the cost planner (rows, bytes per row, change activity).
    #[command(after_help = "Examples:\n  backhaul profile job.toml -o profile.toml\n  \
backhaul profile job.toml --updated-at updated_at --soft-delete deleted_at -o profile.json\n  \
backhaul profile job.toml --coordinator https://coordinator:7070 --tls-ca ca.pem --token-file token\n\n\
Read-only at the source and bounded: statistics plus a sample of random sub-ranges (--exact reads everything). \
With --coordinator a worker of the cluster (started with --flight-listen) reads the source and sends Arrow batches; \
this machine needs no source credentials. Options: --config cost.toml (docs/cost.md).")]
    Profile(commands::profile::ProfileArgs),
    /// Estimate what loading a job costs with Fivetran, Airbyte Cloud, or backhaul into Snowflake or BigQuery.
    #[command(after_help = "Examples:\n  backhaul cost job.toml\n  \
backhaul cost job.toml --profile profile.toml --as-of 2026-10-01 --overlay contract.toml --html report.html\n  \
backhaul cost job.toml --profile profile.toml --strict --output json\n  \
backhaul cost job.toml --coordinator http://coordinator:7070 --token-file token\n\n\
Prices come from versioned tables (cost-models/, built in); every line cites its rows. --strict refuses unconfirmed prices. \
Without --profile the source is profiled first, on a worker with --coordinator (see `backhaul profile --help`).")]
    Cost(commands::cost::CostArgs),
    /// Check price tables (cost-models/): parse, units, sources, non-overlapping periods.
    #[command(
        name = "cost-models",
        after_help = "Example:\n  backhaul cost-models check cost-models"
    )]
    CostModels(commands::cost::CostModelsArgs),
}

/// Shared, parsed global options.
pub struct Globals {
    /// State database path or URL.
    pub state: PathBuf,
    /// File with the password of a PostgreSQL state URL.
    pub state_password_file: Option<PathBuf>,
    /// Output format.
    pub output: OutputFormat,
    /// Whether to draw progress bars.
    pub progress: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let progress = !cli.no_progress && cli.output == OutputFormat::Text && std::io::stderr().is_terminal();
    init_logging(cli.verbose, progress, cli.log_format);
    let globals = Globals {
        state: cli.state,
        state_password_file: cli.state_password_file,
        output: cli.output,
        progress,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(a) => commands::demo::run(&globals, a).await,
            Command::Discover(a) => commands::discover::run(&globals, a).await,
            Command::Plan(a) => commands::plan::run(&globals, a).await,
            Command::Backfill(a) => commands::backfill::run(&globals, a).await,
            Command::Sync(a) => commands::sync::run(&globals, a).await,
            Command::Status(a) => commands::status::run(&globals, a).await,
            Command::Verify(a) => commands::verify::run(&globals, a).await,
            Command::Replay(a) => commands::replay::run(&globals, a).await,
            Command::Query(a) => commands::query::run(&globals, a).await,
            Command::Profile(a) => commands::profile::run(&globals, a).await,
            Command::Cost(a) => commands::cost::run(&globals, a).await,
            Command::CostModels(a) => commands::cost::run_models(&globals, a).await,
            Command::Coordinator(a) => commands::coordinator::run(&globals, a).await,
            Command::Worker(a) => commands::worker::run(&globals, a).await,
            Command::Submit(a) => commands::submit::run(&globals, a).await,
            Command::Cancel(a) => commands::cancel::run(&globals, a).await,
            Command::Schedule(a) => commands::schedule::run(&globals, a).await,
            Command::Preview(a) => commands::preview::run(&globals, a).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            output::print_error(&globals, &e);
            if e.downcast_ref::<local::Interrupted>().is_some() {
                return ExitCode::from(exit::INTERRUPTED);
            }
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn init_logging(verbose: u8, progress: bool, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // With a progress bar the bar is the report; without one, info lines are.
    let default = match (verbose, progress) {
        (0, true) => "warn",
        (0, false) | (1, _) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},h2=warn,tower=warn,hyper=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        // Flattened event fields and the current span's fields (job, chunk, attempt, worker)
        // make each line self-contained for collectors such as Loki or Cloud Logging.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
