//! Durable coordinator state in SQLite: jobs, chunks, attempts, leases and outputs.
//!
//! Every state change is one transaction, so a process killed at any instant leaves either the
//! old or the new state. Lease ids are `job/chunk/attempt`; the attempt number fences workers:
//! only the holder of the chunk's current attempt may heartbeat, complete or fail it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use backhaul_core::ErrorClass;
use backhaul_core::checksum::RowSummary;
use backhaul_core::chunking::PlannedChunk;
use backhaul_core::connector::{ExtractFacts, StagedFile};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::fingerprint::ChunkFingerprint;
use backhaul_core::proof::{ChunkEvidence, ChunkProof, ProofLevel};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::clock::{Clock, SystemClock};
use crate::error::{CoordinatorError, Result};
use crate::service::RetryPolicy;
use crate::split::{self, SplitFacts, SplitOutcome, SplitStep};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS jobs (
    job_id        TEXT PRIMARY KEY,
    spec_toml     TEXT NOT NULL,
    base_dir      TEXT NOT NULL,
    cursor_kind   TEXT NOT NULL,
    range_from    INTEGER NOT NULL,
    range_to      INTEGER NOT NULL,
    created_at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    job_id            TEXT NOT NULL REFERENCES jobs(job_id),
    chunk_id          INTEGER NOT NULL,
    range_from        INTEGER NOT NULL,
    range_to          INTEGER NOT NULL,
    estimated_rows    INTEGER NOT NULL,
    estimated_bytes   INTEGER NOT NULL,
    state             TEXT NOT NULL,
    attempt           INTEGER NOT NULL DEFAULT 0,
    failures          INTEGER NOT NULL DEFAULT 0,
    lease_worker      TEXT,
    lease_expires_us  INTEGER,
    not_before_us     INTEGER NOT NULL DEFAULT 0,
    progress_rows     INTEGER NOT NULL DEFAULT 0,
    progress_bytes    INTEGER NOT NULL DEFAULT 0,
    extracted_rows    INTEGER,
    extracted_checksum INTEGER,
    committed_rows    INTEGER,
    committed_checksum INTEGER,
    committed_bytes   INTEGER,
    committed_at_us   INTEGER,
    last_error_class  TEXT,
    last_error_kind   TEXT,
    last_error        TEXT,
    PRIMARY KEY (job_id, chunk_id)
);
-- Leasing walks pending chunks in plan order, and expiry finds the leases that ran out,
-- without scanning the table: both stay cheap with a million chunks.
DROP INDEX IF EXISTS chunks_runnable;
CREATE INDEX IF NOT EXISTS chunks_lease_order ON chunks(state, job_id, chunk_id);
CREATE INDEX IF NOT EXISTS chunks_lease_expiry ON chunks(state, lease_expires_us);
CREATE TABLE IF NOT EXISTS attempts (
    job_id        TEXT NOT NULL,
    chunk_id      INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    worker_id     TEXT NOT NULL,
    started_at_us INTEGER NOT NULL,
    ended_at_us   INTEGER,
    outcome       TEXT,
    error_class   TEXT,
    error_kind    TEXT,
    error_message TEXT,
    PRIMARY KEY (job_id, chunk_id, attempt)
);
CREATE TABLE IF NOT EXISTS outputs (
    job_id   TEXT NOT NULL,
    chunk_id INTEGER NOT NULL,
    part     INTEGER NOT NULL,
    attempt  INTEGER NOT NULL,
    path     TEXT NOT NULL,
    bytes    INTEGER NOT NULL,
    rows     INTEGER NOT NULL,
    PRIMARY KEY (job_id, chunk_id, part)
);
"#;

/// Columns added after the first release, with their definitions; added on open when missing.
pub(crate) const MIGRATIONS: &[(&str, &str, &str)] = &[
    ("jobs", "cancelled_at_us", "INTEGER"),
    // Proofs per chunk. Chunks committed before these existed read as exact-checksum proofs
    // (what was checked then) with an evidence fingerprint of rows only.
    ("chunks", "proof_level", "TEXT"),
    ("chunks", "extracted_fingerprint", "TEXT"),
    ("chunks", "committed_fingerprint", "TEXT"),
    // Incremental syncs: when `backhaul sync` last extended the job's range (its end,
    // `range_to`, is the job's high-water mark).
    ("jobs", "synced_at_us", "INTEGER"),
    // Records a committed chunk's source wrote to a dead-letter file (NULL, read as 0, for
    // chunks committed before the column existed).
    ("chunks", "dead_letters", "INTEGER"),
    // The chunk a chunk was cut from while it ran (`split`); NULL for planned chunks.
    ("chunks", "split_from", "INTEGER"),
];

/// Life cycle of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkState {
    /// Waiting for a worker (possibly until a retry backoff ends).
    Pending,
    /// Held by a worker under a lease.
    Leased,
    /// Loaded and verified at the destination.
    Committed,
    /// Failed permanently or too often; needs a person.
    Parked,
    /// Its job was cancelled before it committed.
    Cancelled,
}

impl ChunkState {
    /// Stable lower-case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkState::Pending => "pending",
            ChunkState::Leased => "leased",
            ChunkState::Committed => "committed",
            ChunkState::Parked => "parked",
            ChunkState::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "leased" => ChunkState::Leased,
            "committed" => ChunkState::Committed,
            "parked" => ChunkState::Parked,
            "cancelled" => ChunkState::Cancelled,
            _ => ChunkState::Pending,
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// Job name.
    pub job_id: String,
    /// Canonical spec TOML as submitted.
    #[serde(skip)]
    pub spec_toml: String,
    /// Where relative spec paths resolve.
    pub base_dir: PathBuf,
    /// Cursor kind of the job's range.
    pub cursor_kind: CursorKind,
    /// The job's whole range.
    pub range: CursorRange,
    /// When the job was submitted, microseconds since epoch.
    pub created_at_us: i64,
    /// When the job was cancelled, if it was.
    pub cancelled_at_us: Option<i64>,
    /// When a sync last extended the job's range, if one did. The end of the range is the
    /// job's high-water mark ([`JobRow::high_water`]).
    pub synced_at_us: Option<i64>,
}

impl JobRow {
    /// The high-water mark: the end of the last planned range, where the next sync starts.
    pub fn high_water(&self) -> i64 {
        self.range.to
    }
}

/// A sync's extension of a job's range ([`crate::StateStore::extend`]).
#[derive(Debug, Clone)]
pub struct Extension {
    /// The job.
    pub job_id: String,
    /// The canonical spec as of this sync (the same job; only `range.to` and sync bookkeeping
    /// may differ from the stored one, which the caller checked).
    pub spec_toml: String,
    /// The high-water mark the plan was made from; the extension is refused when the stored
    /// one moved meanwhile (another sync extended the job).
    pub from_mark: i64,
    /// The new mark: the end of the extended range (never before `from_mark`; equal for a
    /// full refresh of a fixed range).
    pub to_mark: i64,
    /// The new chunks (the new range, and a lookback chunk in dedup mode); they get the next
    /// chunk ids, whatever their `index`.
    pub chunks: Vec<PlannedChunk>,
    /// When the sync planned it.
    pub at_us: i64,
}

/// A chunk as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkRow {
    /// Index in the plan.
    pub chunk_id: u64,
    /// Cursor range.
    pub range: CursorRange,
    /// Planner estimate.
    pub estimated_rows: u64,
    /// Planner estimate.
    pub estimated_bytes: u64,
    /// Current state.
    pub state: ChunkState,
    /// Leases handed out so far.
    pub attempt: u32,
    /// Failed attempts so far.
    pub failures: u32,
    /// Rows extracted so far by the current attempt.
    pub progress_rows: u64,
    /// Bytes written so far by the current attempt.
    pub progress_bytes: u64,
    /// Rows, checksum and fingerprint the writer measured (committed chunks).
    pub extracted: Option<ChunkEvidence>,
    /// The destination's proof of the committed data, checked against `extracted` when the
    /// chunk committed (committed chunks).
    pub committed: Option<ChunkProof>,
    /// Parquet bytes committed.
    pub committed_bytes: Option<u64>,
    /// Last error class, kind and message.
    pub last_error: Option<(String, String, String)>,
    /// The worker holding the lease (leased chunks).
    pub lease_worker: Option<String>,
    /// When the chunk was committed, microseconds since epoch.
    pub committed_at_us: Option<i64>,
    /// Records the source wrote to a dead-letter file instead of the chunk's rows (committed
    /// chunks; 0 otherwise).
    pub dead_letters: u64,
    /// The chunk this one was cut from while it ran ([`crate::StateStore::split`]); `None`
    /// for planned chunks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_from: Option<u64>,
}

/// Counts and totals of one job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobSummary {
    /// All chunks.
    pub chunks: u64,
    /// Chunks waiting.
    pub pending: u64,
    /// Chunks running.
    pub leased: u64,
    /// Chunks done.
    pub committed: u64,
    /// Chunks needing attention.
    pub parked: u64,
    /// Chunks of a cancelled job that will not run.
    pub cancelled: u64,
    /// Rows committed.
    pub committed_rows: u64,
    /// Parquet bytes committed.
    pub committed_bytes: u64,
    /// Rows extracted by running chunks.
    pub in_flight_rows: u64,
    /// Estimated rows of the whole job.
    pub estimated_rows: u64,
    /// Estimated Parquet bytes of the whole job.
    pub estimated_bytes: u64,
    /// Failed attempts over all chunks.
    pub failures: u64,
    /// Records of committed chunks written to dead-letter files.
    pub dead_letters: u64,
}

impl JobSummary {
    /// Every chunk is committed, parked or cancelled: nothing will run any more.
    pub fn is_finished(&self) -> bool {
        self.committed + self.parked + self.cancelled == self.chunks
    }
}

/// What submitting a job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// A new job was stored.
    Created,
    /// The same job (same spec) already existed; it continues.
    Existing,
}

/// A lease handed to a worker.
#[derive(Debug, Clone)]
pub struct Lease {
    /// `job/chunk/attempt`.
    pub lease_id: String,
    /// The job.
    pub job: JobRow,
    /// The chunk.
    pub chunk: ChunkRow,
}

/// Why no lease was handed out.
#[derive(Debug, Clone, Copy)]
pub enum NoLease {
    /// Every chunk (of the filtered job) is committed or parked.
    Finished,
    /// Try again after this many milliseconds.
    RetryAfterMs(u32),
}

/// A worker's report that a chunk failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Retry class.
    pub class: ErrorClass,
    /// Stable kind.
    pub kind: String,
    /// Message.
    pub message: String,
}

impl Failure {
    /// Kind of the failure an expired lease counts.
    pub const WORKER_LOST: &'static str = "worker_lost";

    /// The failure an expired lease counts: its worker died (out of memory, a crashing
    /// decoder), hung, or was cut off. `times` counts every expired lease of the chunk, this
    /// one included.
    pub fn worker_lost(times: u64) -> Self {
        let plural = if times == 1 { "" } else { "s" };
        Failure {
            class: ErrorClass::Transient,
            kind: Self::WORKER_LOST.into(),
            message: format!("worker lost {times} time{plural} (its lease expired without a heartbeat)"),
        }
    }
}

/// A chunk's failures once the failure of the attempt that holds it is counted. An attempt
/// counts once: a chunk already back to pending under that attempt was counted when its lease
/// expired (or was handed back, which never counts).
pub(crate) fn failures_counting(failures: u32, state: ChunkState) -> u32 {
    if state == ChunkState::Pending {
        failures
    } else {
        failures + 1
    }
}

/// The SQLite-backed state store.
///
/// One writer thread owns the connection. [`Store::call`] hands it closures; it runs every
/// closure queued at that moment inside one transaction (each closure in its own savepoint,
/// so a failing one rolls back alone) and commits once, then answers them all. Nobody is
/// answered before the commit is durable (`synchronous=FULL`), so batching changes the cost
/// of an fsync per change into one per batch without weakening what an answer promises.
#[derive(Clone)]
pub struct Store {
    /// `None` in the writer thread's own view of the store.
    writer: Option<Arc<Writer>>,
    path: String,
    /// Held (never read) while this store serves leases; see [`Store::open_exclusive`].
    _lock: Option<Arc<std::fs::File>>,
    /// What leasing keeps between calls; shared by every clone, including the writer's view.
    leasing: Arc<Leasing>,
}

/// Leasing's memory between calls: when expired leases were last swept, and the job rows it
/// hands out with every lease; and the clock every state change reads.
struct Leasing {
    /// Where "now" comes from; see [`Store::set_clock`].
    clock: std::sync::RwLock<Arc<dyn Clock>>,
    /// Expired leases are swept at most this often while pending chunks remain.
    sweep_interval_us: AtomicI64,
    /// When the next sweep is due (microseconds since the epoch); 0 sweeps on the next lease.
    next_sweep_us: AtomicI64,
    /// Job rows by id. A job's row never changes once stored except `cancelled_at_us`, which
    /// only this store's `cancel` and `replay` change (they drop the entry), so leasing reads a
    /// job's spec once instead of once per lease.
    jobs: Mutex<HashMap<String, JobRow>>,
}

/// How often leasing looks for expired leases while pending chunks remain. An expired lease
/// goes back to pending at most this long after it expired (at once when nothing else is
/// pending); its holder's calls are accepted until then, as they are until any re-lease.
pub const EXPIRY_SWEEP_INTERVAL: Duration = Duration::from_millis(200);

/// Job rows cached for leasing beyond this many are dropped (all at once; they are re-read).
const MAX_CACHED_JOBS: usize = 1024;

impl Default for Leasing {
    fn default() -> Self {
        Leasing {
            clock: std::sync::RwLock::new(Arc::new(SystemClock)),
            sweep_interval_us: AtomicI64::new(EXPIRY_SWEEP_INTERVAL.as_micros() as i64),
            next_sweep_us: AtomicI64::new(0),
            jobs: Mutex::new(HashMap::new()),
        }
    }
}

/// Parsed lease id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseKey {
    /// The job.
    pub job_id: String,
    /// The chunk.
    pub chunk_id: u64,
    /// The attempt.
    pub attempt: u32,
}

/// A closure for the writer thread; it returns what to do once the batch commit is known.
type Job = Box<dyn FnOnce(&Store, &mut Connection) -> Finish + Send>;
/// Answers a caller given the batch's commit error, if any.
type Finish = Box<dyn FnOnce(Option<&str>) + Send>;

/// Most closures run in one transaction; bounds the latency a huge queue adds to its first.
const MAX_BATCH: usize = 512;

/// The writer thread and its queue. Dropping the last [`Store`] closes the queue and joins
/// the thread after it answers what is queued.
struct Writer {
    queue: Mutex<Option<tokio::sync::mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

fn write_loop(mut conn: Connection, view: Store, mut queue: tokio::sync::mpsc::Receiver<Job>) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Without the batch transaction (BEGIN failed) each closure's savepoint commits alone.
        let batched = conn.execute_batch("BEGIN IMMEDIATE").is_ok();
        let mut finishers = Vec::with_capacity(batch.len());
        for job in batch {
            // A panicking closure loses only its own answer (its caller sees the writer stop).
            if let Ok(finish) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&view, &mut conn))) {
                finishers.push(finish);
            }
        }
        let commit_error = if batched {
            conn.execute_batch("COMMIT").err().map(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                e.to_string()
            })
        } else {
            None
        };
        for finish in finishers {
            finish(commit_error.as_deref());
        }
    }
}

impl LeaseKey {
    /// Parses `job/chunk/attempt`.
    pub fn parse(lease_id: &str) -> Result<Self> {
        let bad = || CoordinatorError::StaleLease {
            lease_id: lease_id.into(),
            reason: "malformed lease id".into(),
        };
        let mut parts = lease_id.rsplitn(3, '/');
        let attempt = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let chunk_id = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let job_id = parts.next().filter(|s| !s.is_empty()).ok_or_else(bad)?.to_string();
        Ok(LeaseKey {
            job_id,
            chunk_id,
            attempt,
        })
    }

    /// Formats the lease id.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.job_id, self.chunk_id, self.attempt)
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Store {
    /// Opens (creating when missing) the state database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let display = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| backhaul_core::Error::io(dir, e))?;
        }
        let db = |source| CoordinatorError::Database {
            path: display.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db)?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        // Durability is untouched by these. A batch's savepoint journals stay in memory
        // instead of spilling to a temporary file, and a fixed query plan spares re-preparing
        // the lease statement every time its bound time changes (SQLite otherwise re-prepares
        // statements whose plan could depend on a bound value: ~40% of a lease's SQLite time).
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(db)?;
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        conn.execute_batch(crate::schedule::SQLITE_SCHEMA).map_err(db)?;
        for (table, column, definition) in MIGRATIONS {
            let present: bool = conn
                .query_row(
                    &format!("SELECT count(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
                    [column],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if !present {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {definition}"))
                    .map_err(db)?;
            }
        }
        let leasing = Arc::new(Leasing::default());
        let view = Store {
            writer: None,
            path: display.clone(),
            _lock: None,
            leasing: leasing.clone(),
        };
        let (queue, jobs) = tokio::sync::mpsc::channel(4 * MAX_BATCH);
        let thread = std::thread::Builder::new()
            .name("backhaul-state".into())
            .spawn(move || write_loop(conn, view, jobs))
            .map_err(|e| CoordinatorError::Task(format!("starting the state writer: {e}")))?;
        Ok(Store {
            writer: Some(Arc::new(Writer {
                queue: Mutex::new(Some(queue)),
                thread: Mutex::new(Some(thread)),
            })),
            path: display,
            _lock: None,
            leasing,
        })
    }

    /// Opens the state database for serving leases: takes an exclusive lock on `<path>.lock`
    /// first, so two coordinators (or a coordinator and a local run) never hand out leases of
    /// the same state. Readers (`status`, `verify`) use [`Store::open`] and need no lock. The
    /// lock is the kernel's, so a killed coordinator releases it with its process.
    pub fn open_exclusive(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| backhaul_core::Error::io(dir, e))?;
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| backhaul_core::Error::io(&lock_path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CoordinatorError::StateLocked {
                    path: path.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(backhaul_core::Error::io(&lock_path, e).into()),
        }
        let mut store = Store::open(path)?;
        store._lock = Some(Arc::new(file));
        Ok(store)
    }

    /// Reads time from `clock` from now on (tests move a [`crate::clock::ManualClock`] instead
    /// of sleeping through lease TTLs and backoffs).
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        *self.leasing.clock.write().unwrap_or_else(|e| e.into_inner()) = clock;
    }

    /// Now, by this store's clock.
    fn now_us(&self) -> i64 {
        self.leasing.clock.read().unwrap_or_else(|e| e.into_inner()).now_us()
    }

    /// Where the database lives.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn db_err(&self, source: rusqlite::Error) -> CoordinatorError {
        CoordinatorError::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` with the connection on the writer thread (SQLite stays off the IO runtime) and
    /// answers once the transaction it ran in is committed.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store, &mut Connection) -> Result<T> + Send + 'static,
    {
        let stopped = || CoordinatorError::Task("the state writer stopped".into());
        let queue = self
            .writer
            .as_ref()
            .and_then(|w| w.queue.lock().ok().and_then(|q| q.clone()))
            .ok_or_else(stopped)?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |store, conn| {
            let out = f(store, conn);
            Box::new(move |commit_error| {
                let result = match commit_error {
                    None => out,
                    Some(e) => Err(CoordinatorError::Task(format!("committing state: {e}"))),
                };
                let _ = answer.send(result);
            })
        });
        queue.send(job).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// Stores a new job with its chunks, or confirms an identical one exists.
    pub fn submit(&self, conn: &mut Connection, job: &JobRow, chunks: &[PlannedChunk]) -> Result<Submitted> {
        let tx = conn.savepoint().map_err(|e| self.db_err(e))?;
        let existing: Option<String> = tx
            .query_row("SELECT spec_toml FROM jobs WHERE job_id = ?1", [&job.job_id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.db_err(e))?;
        if let Some(spec) = existing {
            if spec != job.spec_toml {
                return Err(CoordinatorError::SpecChanged {
                    job_id: job.job_id.clone(),
                    state: self.path.clone(),
                });
            }
            return Ok(Submitted::Existing);
        }
        tx.execute(
            "INSERT INTO jobs (job_id, spec_toml, base_dir, cursor_kind, range_from, range_to, created_at_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![job.job_id, job.spec_toml, job.base_dir.display().to_string(), job.cursor_kind.as_str(), job.range.from, job.range.to, job.created_at_us],
        )
        .map_err(|e| self.db_err(e))?;
        self.insert_chunks(&tx, &job.job_id, chunks, |_, c| c.index as i64)?;
        tx.commit().map_err(|e| self.db_err(e))?;
        self.forget_job(&job.job_id);
        Ok(Submitted::Created)
    }

    /// Inserts `chunks` of `job_id` as pending, chunk `i` under the id `id_of(i, chunk)`.
    fn insert_chunks(
        &self,
        tx: &Connection,
        job_id: &str,
        chunks: &[PlannedChunk],
        id_of: impl Fn(usize, &PlannedChunk) -> i64,
    ) -> Result<()> {
        let mut stmt = tx
            .prepare("INSERT INTO chunks (job_id, chunk_id, range_from, range_to, estimated_rows, estimated_bytes, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending')")
            .map_err(|e| self.db_err(e))?;
        for (i, c) in chunks.iter().enumerate() {
            stmt.execute(params![
                job_id,
                id_of(i, c),
                c.range.from,
                c.range.to,
                c.estimated_rows as i64,
                c.estimated_bytes as i64
            ])
            .map_err(|e| self.db_err(e))?;
        }
        Ok(())
    }

    /// Extends a job's range to `ext.to_mark` with `ext.chunks`, numbered after the job's last
    /// chunk, in one transaction; returns the new chunk ids. Earlier chunks are untouched.
    pub fn extend(&self, conn: &mut Connection, ext: &Extension) -> Result<Vec<u64>> {
        let tx = conn.savepoint().map_err(|e| self.db_err(e))?;
        let job = self.job(&tx, &ext.job_id)?;
        check_extension(&job, ext)?;
        let next: i64 = tx
            .query_row(
                "SELECT coalesce(max(chunk_id) + 1, 0) FROM chunks WHERE job_id = ?1",
                [&ext.job_id],
                |r| r.get(0),
            )
            .map_err(|e| self.db_err(e))?;
        tx.execute(
            "UPDATE jobs SET spec_toml = ?2, range_to = ?3, synced_at_us = ?4 WHERE job_id = ?1",
            params![ext.job_id, ext.spec_toml, ext.to_mark, ext.at_us],
        )
        .map_err(|e| self.db_err(e))?;
        let ids: Vec<u64> = (0..ext.chunks.len()).map(|i| (next + i as i64) as u64).collect();
        self.insert_chunks(&tx, &ext.job_id, &ext.chunks, |i, _| next + i as i64)?;
        tx.commit().map_err(|e| self.db_err(e))?;
        self.forget_job(&ext.job_id);
        Ok(ids)
    }

    /// A job by id.
    pub fn job(&self, conn: &Connection, job_id: &str) -> Result<JobRow> {
        conn.query_row(JOB_BY_ID, [job_id], |r| job_from_row(r))
            .optional()
            .map_err(|e| self.db_err(e))?
            .ok_or_else(|| CoordinatorError::UnknownJob(job_id.into()))
    }

    /// All jobs, oldest first.
    pub fn jobs(&self, conn: &Connection) -> Result<Vec<JobRow>> {
        let mut stmt = conn
            .prepare(&format!("{JOB_SELECT} ORDER BY created_at_us, job_id"))
            .map_err(|e| self.db_err(e))?;
        let rows = stmt.query_map([], |r| job_from_row(r)).map_err(|e| self.db_err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.db_err(e))
    }

    /// All chunks of a job, in plan order.
    pub fn chunks(&self, conn: &Connection, job_id: &str) -> Result<Vec<ChunkRow>> {
        let mut stmt = conn
            .prepare(&format!("{CHUNK_SELECT} WHERE job_id = ?1 ORDER BY chunk_id"))
            .map_err(|e| self.db_err(e))?;
        let rows = stmt
            .query_map([job_id], |r| chunk_from_row(r))
            .map_err(|e| self.db_err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.db_err(e))
    }

    /// Counts and totals of a job.
    pub fn summary(&self, conn: &Connection, job_id: &str) -> Result<JobSummary> {
        conn.query_row(
            "SELECT count(*),
                    coalesce(sum(state = 'pending'), 0), coalesce(sum(state = 'leased'), 0),
                    coalesce(sum(state = 'committed'), 0), coalesce(sum(state = 'parked'), 0),
                    coalesce(sum(CASE WHEN state = 'committed' THEN committed_rows END), 0),
                    coalesce(sum(CASE WHEN state = 'committed' THEN committed_bytes END), 0),
                    coalesce(sum(CASE WHEN state = 'leased' THEN progress_rows END), 0),
                    coalesce(sum(estimated_rows), 0),
                    coalesce(sum(state = 'cancelled'), 0),
                    coalesce(sum(estimated_bytes), 0),
                    coalesce(sum(failures), 0),
                    coalesce(sum(CASE WHEN state = 'committed' THEN dead_letters END), 0)
             FROM chunks WHERE job_id = ?1",
            [job_id],
            |r| {
                Ok(JobSummary {
                    chunks: r.get::<_, i64>(0)? as u64,
                    pending: r.get::<_, i64>(1)? as u64,
                    leased: r.get::<_, i64>(2)? as u64,
                    committed: r.get::<_, i64>(3)? as u64,
                    parked: r.get::<_, i64>(4)? as u64,
                    committed_rows: r.get::<_, i64>(5)? as u64,
                    committed_bytes: r.get::<_, i64>(6)? as u64,
                    in_flight_rows: r.get::<_, i64>(7)? as u64,
                    estimated_rows: r.get::<_, i64>(8)? as u64,
                    cancelled: r.get::<_, i64>(9)? as u64,
                    estimated_bytes: r.get::<_, i64>(10)? as u64,
                    failures: r.get::<_, i64>(11)? as u64,
                    dead_letters: r.get::<_, i64>(12)? as u64,
                })
            },
        )
        .map_err(|e| self.db_err(e))
    }

    /// Returns every leased chunk of `job_id` to pending. Only for a coordinator that knows no
    /// worker can still hold a lease (local mode after a restart: its workers died with it).
    pub fn release_all_leases(&self, conn: &mut Connection, job_id: &str) -> Result<u64> {
        let tx = conn.savepoint().map_err(|e| self.db_err(e))?;
        let now = self.now_us();
        tx.execute(
            "UPDATE attempts SET ended_at_us = ?2, outcome = 'abandoned'
             WHERE ended_at_us IS NULL AND job_id = ?1",
            params![job_id, now],
        )
        .map_err(|e| self.db_err(e))?;
        let n = tx
            .execute(
                "UPDATE chunks SET state = 'pending', lease_worker = NULL, lease_expires_us = NULL, progress_rows = 0, progress_bytes = 0
                 WHERE job_id = ?1 AND state = 'leased'",
                [job_id],
            )
            .map_err(|e| self.db_err(e))?;
        tx.commit().map_err(|e| self.db_err(e))?;
        Ok(n as u64)
    }

    /// Hands out the next runnable chunk. Expired leases count as failures under `policy`
    /// first when a sweep is due ([`EXPIRY_SWEEP_INTERVAL`]) or when nothing else is pending.
    pub fn lease(
        &self,
        conn: &mut Connection,
        worker_id: &str,
        job_filter: Option<&str>,
        ttl_ms: u32,
        policy: &RetryPolicy,
    ) -> Result<std::result::Result<Lease, NoLease>> {
        let leases = self.lease_many(conn, worker_id, job_filter, ttl_ms, 1, policy)?;
        // `lease_many` answers with at least one lease or with the reason there is none.
        Ok(leases.and_then(|leases| leases.into_iter().next().ok_or(NoLease::RetryAfterMs(50))))
    }

    /// Hands out up to `max` runnable chunks (at least one) in one atomic change. Each lease
    /// is exactly what [`Store::lease`] would hand out: its own attempt, lease id and TTL.
    pub fn lease_many(
        &self,
        conn: &mut Connection,
        worker_id: &str,
        job_filter: Option<&str>,
        ttl_ms: u32,
        max: usize,
        policy: &RetryPolicy,
    ) -> Result<std::result::Result<Vec<Lease>, NoLease>> {
        let now = self.now_us();
        let tx = conn.savepoint().map_err(|e| self.db_err(e))?;
        let mut swept = now >= self.leasing.next_sweep_us.load(Ordering::Relaxed);
        if swept {
            self.expire_leases(&tx, now, policy)?;
        }
        let mut leases = Vec::new();
        while leases.len() < max.max(1) {
            match self.lease_next(&tx, worker_id, job_filter, ttl_ms, now)? {
                Some(lease) => leases.push(lease),
                // Nothing pending: leases that ran out since the last sweep may be runnable.
                None if !swept => {
                    swept = true;
                    if self.expire_leases(&tx, now, policy)? == 0 {
                        break;
                    }
                }
                None => break,
            }
        }
        let outcome = if leases.is_empty() {
            Err(self.no_lease(&tx, job_filter, now)?)
        } else {
            Ok(leases)
        };
        tx.commit().map_err(|e| self.db_err(e))?;
        if swept {
            let interval = self.leasing.sweep_interval_us.load(Ordering::Relaxed);
            self.leasing
                .next_sweep_us
                .store(now.saturating_add(interval), Ordering::Relaxed);
        }
        Ok(outcome)
    }

    /// Sets how often leasing sweeps expired leases while pending chunks remain (default
    /// [`EXPIRY_SWEEP_INTERVAL`]); zero sweeps on every lease call.
    pub fn set_expiry_sweep_interval(&self, interval: Duration) {
        let us = interval.as_micros().min(i64::MAX as u128) as i64;
        self.leasing.sweep_interval_us.store(us, Ordering::Relaxed);
    }

    /// Counts every lease that ran out as a failure of its chunk ([`Failure::worker_lost`]):
    /// the chunk goes back to pending after the policy's backoff, or is parked once it failed
    /// `max_attempts` times, so a chunk that kills its worker every time is not leased forever.
    /// Returns how many leases expired. Their attempt number stays, so the dead holder is still
    /// fenced out once the chunk is leased again (the new lease gets attempt + 1).
    fn expire_leases(&self, tx: &Connection, now: i64, policy: &RetryPolicy) -> Result<usize> {
        let expired: Vec<(String, i64, u32, u32)> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT job_id, chunk_id, attempt, failures FROM chunks INDEXED BY chunks_lease_expiry
                     WHERE state = 'leased' AND lease_expires_us < ?1",
                )
                .map_err(|e| self.db_err(e))?;
            let rows = stmt
                .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(|e| self.db_err(e))?;
            rows.collect::<rusqlite::Result<_>>().map_err(|e| self.db_err(e))?
        };
        for (job_id, chunk_id, attempt, failures) in &expired {
            let key = LeaseKey {
                job_id: job_id.clone(),
                chunk_id: *chunk_id as u64,
                attempt: *attempt,
            };
            let lost_before: i64 = self
                .row(
                    tx,
                    "SELECT count(*) FROM attempts WHERE job_id = ?1 AND chunk_id = ?2 AND outcome = 'expired'",
                    params![job_id, chunk_id],
                    |r| r.get(0),
                )?
                .unwrap_or(0);
            let failure = Failure::worker_lost(lost_before as u64 + 1);
            let failures = failures + 1;
            let next = policy.after_failure(failure.class, failures, &key, now);
            self.end_attempt(tx, &key, now, "expired", Some(&failure))?;
            self.exec(
                tx,
                "UPDATE chunks SET state = ?3, failures = ?4, not_before_us = ?5, lease_worker = NULL, lease_expires_us = NULL,
                    last_error_class = ?6, last_error_kind = ?7, last_error = ?8
                 WHERE job_id = ?1 AND chunk_id = ?2",
                params![job_id, chunk_id, next.state.as_str(), failures, next.not_before_us, failure.class.as_str(), failure.kind, failure.message],
            )?;
        }
        Ok(expired.len())
    }

    /// Leases the first pending chunk in plan order whose backoff is over, if any.
    fn lease_next(
        &self,
        tx: &Connection,
        worker_id: &str,
        job_filter: Option<&str>,
        ttl_ms: u32,
        now: i64,
    ) -> Result<Option<Lease>> {
        let expires = now + i64::from(ttl_ms) * 1000;
        // One statement picks the chunk, takes it and returns it.
        let leased = match job_filter {
            Some(job) => self.row(
                tx,
                LEASE_NEXT_OF_JOB,
                params![now, job, worker_id, expires],
                leased_from_row,
            ),
            None => self.row(
                tx,
                LEASE_NEXT_OF_ANY_JOB,
                params![now, worker_id, expires],
                leased_from_row,
            ),
        }?;
        let Some((job_id, chunk)) = leased else {
            return Ok(None);
        };
        self.exec(
            tx,
            "INSERT OR REPLACE INTO attempts (job_id, chunk_id, attempt, worker_id, started_at_us) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![job_id, chunk.chunk_id as i64, chunk.attempt, worker_id, now],
        )?;
        let job = self.leasing_job(tx, &job_id)?;
        let lease_id = LeaseKey {
            job_id,
            chunk_id: chunk.chunk_id,
            attempt: chunk.attempt,
        }
        .id();
        Ok(Some(Lease { lease_id, job, chunk }))
    }

    /// Why nothing could be leased: the job (or every job) is finished, or when to ask again.
    fn no_lease(&self, tx: &Connection, job_filter: Option<&str>, now: i64) -> Result<NoLease> {
        let (open, soonest): (i64, Option<i64>) = self
            .row(
                tx,
                "SELECT count(*), min(CASE WHEN state = 'pending' THEN not_before_us ELSE lease_expires_us END)
                 FROM chunks WHERE state IN ('pending', 'leased') AND (?1 = '' OR job_id = ?1)",
                [job_filter.unwrap_or("")],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .unwrap_or((0, None));
        if open == 0 {
            return Ok(NoLease::Finished);
        }
        let wait_ms = soonest.map(|t| ((t - now) / 1000).clamp(50, 1000)).unwrap_or(500);
        Ok(NoLease::RetryAfterMs(wait_ms as u32))
    }

    /// The row of a job being leased, read once and then kept (see [`Leasing::jobs`]).
    fn leasing_job(&self, tx: &Connection, job_id: &str) -> Result<JobRow> {
        if let Some(job) = self.leasing.jobs.lock().ok().and_then(|jobs| jobs.get(job_id).cloned()) {
            return Ok(job);
        }
        let job = self
            .row(tx, JOB_BY_ID, [job_id], |r| job_from_row(r))?
            .ok_or_else(|| CoordinatorError::UnknownJob(job_id.into()))?;
        if let Ok(mut jobs) = self.leasing.jobs.lock() {
            if jobs.len() >= MAX_CACHED_JOBS {
                jobs.clear();
            }
            jobs.insert(job_id.to_string(), job.clone());
        }
        Ok(job)
    }

    /// Drops a job's cached row after a change to it.
    fn forget_job(&self, job_id: &str) {
        if let Ok(mut jobs) = self.leasing.jobs.lock() {
            jobs.remove(job_id);
        }
    }

    /// Checks `lease_id` is the chunk's current attempt and not finished; returns its key.
    fn current(&self, tx: &Connection, lease_id: &str, allow_pending: bool) -> Result<LeaseKey> {
        let key = LeaseKey::parse(lease_id)?;
        let row: Option<(String, u32)> = self.row(
            tx,
            "SELECT state, attempt FROM chunks WHERE job_id = ?1 AND chunk_id = ?2",
            params![key.job_id, key.chunk_id as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let stale = |reason: String| CoordinatorError::StaleLease {
            lease_id: lease_id.into(),
            reason,
        };
        let Some((state, attempt)) = row else {
            return Err(stale("no such chunk".into()));
        };
        if attempt != key.attempt {
            return Err(stale(format!("the chunk was leased again (attempt {attempt})")));
        }
        // An expired lease whose chunk nobody has taken since is still the newest attempt, so
        // its result is as good as any: accepting it saves redoing the chunk.
        match ChunkState::parse(&state) {
            ChunkState::Leased => Ok(key),
            ChunkState::Pending if allow_pending => Ok(key),
            other => Err(stale(format!("the chunk is {}", other.as_str()))),
        }
    }

    /// Runs `f` in one immediate transaction after checking `lease_id` is the chunk's current
    /// attempt, and commits only when `f` succeeds. Every lease-scoped change goes through here.
    fn with_lease<T>(
        &self,
        conn: &mut Connection,
        lease_id: &str,
        allow_pending: bool,
        f: impl FnOnce(&Connection, &LeaseKey) -> Result<T>,
    ) -> Result<T> {
        let tx = conn.savepoint().map_err(|e| self.db_err(e))?;
        let key = self.current(&tx, lease_id, allow_pending)?;
        let out = f(&tx, &key)?;
        tx.commit().map_err(|e| self.db_err(e))?;
        Ok(out)
    }

    /// Executes one statement, naming the database in errors.
    fn exec(&self, conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<usize> {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute(params))
            .map_err(|e| self.db_err(e))
    }

    /// Reads one row with a cached statement; `None` when there is none.
    fn row<T>(
        &self,
        conn: &Connection,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.query_row(params, f).optional())
            .map_err(|e| self.db_err(e))
    }

    /// Closes the lease's attempt record with its outcome (and error, for failures).
    fn end_attempt(
        &self,
        conn: &Connection,
        key: &LeaseKey,
        now: i64,
        outcome: &str,
        error: Option<&Failure>,
    ) -> Result<usize> {
        self.exec(
            conn,
            "UPDATE attempts SET ended_at_us = ?4, outcome = ?5, error_class = ?6, error_kind = ?7, error_message = ?8
             WHERE job_id = ?1 AND chunk_id = ?2 AND attempt = ?3",
            params![
                key.job_id,
                key.chunk_id as i64,
                key.attempt,
                now,
                outcome,
                error.map(|f| f.class.as_str()),
                error.map(|f| f.kind.as_str()),
                error.map(|f| f.message.as_str())
            ],
        )
    }

    /// Extends a lease.
    pub fn heartbeat(&self, conn: &mut Connection, lease_id: &str, ttl_ms: u32) -> Result<()> {
        self.with_lease(conn, lease_id, false, |tx, key| {
            self.exec(
                tx,
                "UPDATE chunks SET lease_expires_us = ?3 WHERE job_id = ?1 AND chunk_id = ?2",
                params![
                    key.job_id,
                    key.chunk_id as i64,
                    self.now_us() + i64::from(ttl_ms) * 1000
                ],
            )
            .map(drop)
        })
    }

    /// Records progress of a running chunk.
    pub fn progress(&self, conn: &mut Connection, lease_id: &str, rows: u64, bytes: u64) -> Result<()> {
        self.with_lease(conn, lease_id, false, |tx, key| {
            self.exec(
                tx,
                "UPDATE chunks SET progress_rows = ?3, progress_bytes = ?4 WHERE job_id = ?1 AND chunk_id = ?2",
                params![key.job_id, key.chunk_id as i64, rows as i64, bytes as i64],
            )
            .map(drop)
        })
    }

    /// Marks a chunk committed with its output manifest. Refuses a stale lease and a proof that
    /// fails [`ChunkProof::check`] against what was extracted.
    pub fn complete(
        &self,
        conn: &mut Connection,
        lease_id: &str,
        files: &[StagedFile],
        extracted: &ChunkEvidence,
        committed: &ChunkProof,
        facts: &ExtractFacts,
    ) -> Result<()> {
        match self.complete_current(conn, lease_id, files, extracted, committed, facts) {
            // A retried completion whose first try was committed but whose answer was lost
            // (coordinator restart, network cut) is the same completion: acknowledge it.
            Err(CoordinatorError::StaleLease { .. }) if self.committed_by(conn, lease_id)? => Ok(()),
            other => other,
        }
    }

    /// Whether the chunk of `lease_id` is committed by exactly that attempt.
    fn committed_by(&self, conn: &Connection, lease_id: &str) -> Result<bool> {
        let Ok(key) = LeaseKey::parse(lease_id) else {
            return Ok(false);
        };
        let row: Option<(String, u32)> = conn
            .query_row(
                "SELECT state, attempt FROM chunks WHERE job_id = ?1 AND chunk_id = ?2",
                params![key.job_id, key.chunk_id as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;
        Ok(row.is_some_and(|(state, attempt)| state == "committed" && attempt == key.attempt))
    }

    fn complete_current(
        &self,
        conn: &mut Connection,
        lease_id: &str,
        files: &[StagedFile],
        extracted: &ChunkEvidence,
        committed: &ChunkProof,
        facts: &ExtractFacts,
    ) -> Result<()> {
        let key = LeaseKey::parse(lease_id)?;
        let proof = match StoredProof::checked(&key, extracted, committed) {
            Ok(p) => p,
            Err(e) => {
                // A stale lease is refused as stale, whatever it reports.
                self.current(conn, lease_id, true)?;
                return Err(e);
            }
        };
        let tx = conn.savepoint().map_err(|e| self.db_err(e))?;
        let bytes: u64 = files.iter().map(|f| f.bytes).sum();
        let now = self.now_us();
        // The fencing check is part of the update: only the current attempt of a leased (or
        // expired, not re-leased: still pending) chunk changes anything.
        let changed = self.exec(
            &tx,
            "UPDATE chunks SET state = 'committed', lease_worker = NULL, lease_expires_us = NULL,
                extracted_rows = ?3, extracted_checksum = ?4, committed_rows = ?5, committed_checksum = ?6,
                committed_bytes = ?7, committed_at_us = ?8, progress_rows = ?3, last_error_class = NULL, last_error_kind = NULL, last_error = NULL,
                proof_level = ?10, extracted_fingerprint = ?11, committed_fingerprint = ?12, dead_letters = ?13
             WHERE job_id = ?1 AND chunk_id = ?2 AND attempt = ?9 AND state IN ('leased', 'pending')",
            params![key.job_id, key.chunk_id as i64, proof.extracted_rows, proof.extracted_checksum, proof.committed_rows, proof.committed_checksum, bytes as i64, now, key.attempt, proof.level, proof.extracted_fingerprint, proof.committed_fingerprint, facts.dead_letters as i64],
        )?;
        if changed == 0 {
            // Not current: say why.
            self.current(&tx, lease_id, true)?;
            return Err(CoordinatorError::Task(format!("lease {lease_id} changed nothing")));
        }
        self.exec(
            &tx,
            "DELETE FROM outputs WHERE job_id = ?1 AND chunk_id = ?2",
            params![key.job_id, key.chunk_id as i64],
        )?;
        for (part, f) in files.iter().enumerate() {
            self.exec(
                &tx,
                "INSERT INTO outputs (job_id, chunk_id, part, attempt, path, bytes, rows) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![key.job_id, key.chunk_id as i64, part as i64, key.attempt, f.path, f.bytes as i64, f.rows as i64],
            )?;
        }
        self.end_attempt(&tx, &key, now, "committed", None)?;
        tx.commit().map_err(|e| self.db_err(e))
    }

    /// Cuts `[at, to)` off the running chunk of `lease_id` into a new pending chunk, numbered
    /// after the job's last one; the rule is [`crate::split::decide`].
    pub fn split(&self, conn: &mut Connection, lease_id: &str, at: i64) -> Result<SplitOutcome> {
        self.with_lease(conn, lease_id, false, |tx, key| {
            let chunk = key.chunk_id as i64;
            let (from, to, rows, bytes): (i64, i64, i64, i64) = tx
                .query_row(
                    "SELECT range_from, range_to, estimated_rows, estimated_bytes FROM chunks WHERE job_id = ?1 AND chunk_id = ?2",
                    params![key.job_id, chunk],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .map_err(|e| self.db_err(e))?;
            let expired: i64 = self
                .row(
                    tx,
                    "SELECT count(*) FROM attempts WHERE job_id = ?1 AND chunk_id = ?2 AND attempt < ?3
                       AND (outcome IS NULL OR outcome = 'expired')",
                    params![key.job_id, chunk, key.attempt],
                    |r| r.get(0),
                )?
                .unwrap_or(0);
            let tail_at: Option<i64> = self.row(
                tx,
                "SELECT chunk_id FROM chunks WHERE job_id = ?1 AND split_from = ?2 AND range_from = ?3",
                params![key.job_id, chunk, at],
                |r| r.get(0),
            )?;
            let facts = SplitFacts {
                range: CursorRange { from, to },
                estimated_rows: rows as u64,
                estimated_bytes: bytes as u64,
                earlier_lease_expired: expired > 0,
                tail_at: tail_at.map(|id| id as u64),
            };
            let cut = match split::decide(&facts, at) {
                SplitStep::Answer(outcome) => return Ok(outcome),
                SplitStep::Cut(cut) => cut,
            };
            let next: i64 = self
                .row(
                    tx,
                    "SELECT coalesce(max(chunk_id) + 1, 0) FROM chunks WHERE job_id = ?1",
                    [&key.job_id],
                    |r| r.get(0),
                )?
                .unwrap_or(0);
            self.exec(
                tx,
                "UPDATE chunks SET range_to = ?3, estimated_rows = ?4, estimated_bytes = ?5 WHERE job_id = ?1 AND chunk_id = ?2",
                params![key.job_id, chunk, cut.kept.to, cut.kept_rows as i64, cut.kept_bytes as i64],
            )?;
            self.exec(
                tx,
                "INSERT INTO chunks (job_id, chunk_id, range_from, range_to, estimated_rows, estimated_bytes, state, split_from)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7)",
                params![key.job_id, next, cut.tail.from, cut.tail.to, cut.tail_rows as i64, cut.tail_bytes as i64, chunk],
            )?;
            Ok(SplitOutcome::Split {
                kept: cut.kept,
                new_chunk_id: next as u64,
            })
        })
    }

    /// Hands a leased chunk back without counting a failure (its worker is shutting down).
    pub fn release(&self, conn: &mut Connection, lease_id: &str) -> Result<()> {
        self.with_lease(conn, lease_id, true, |tx, key| {
            self.exec(
                tx,
                "UPDATE chunks SET state = 'pending', lease_worker = NULL, lease_expires_us = NULL, progress_rows = 0, progress_bytes = 0
                 WHERE job_id = ?1 AND chunk_id = ?2",
                params![key.job_id, key.chunk_id as i64],
            )?;
            self.end_attempt(tx, key, self.now_us(), "released", None).map(drop)
        })
    }

    /// Records a failure; returns whether the chunk will be retried (else it is parked).
    pub fn fail(&self, conn: &mut Connection, lease_id: &str, failure: &Failure, policy: &RetryPolicy) -> Result<bool> {
        self.with_lease(conn, lease_id, true, |tx, key| {
            let (state, failures): (String, u32) = tx
                .query_row(
                    "SELECT state, failures FROM chunks WHERE job_id = ?1 AND chunk_id = ?2",
                    params![key.job_id, key.chunk_id as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(|e| self.db_err(e))?;
            let failures = failures_counting(failures, ChunkState::parse(&state));
            let now = self.now_us();
            let next = policy.after_failure(failure.class, failures, key, now);
            let (state, not_before) = (next.state.as_str(), next.not_before_us);
            self.exec(
                tx,
                "UPDATE chunks SET state = ?3, failures = ?4, not_before_us = ?5, lease_worker = NULL, lease_expires_us = NULL,
                    last_error_class = ?6, last_error_kind = ?7, last_error = ?8, progress_rows = 0, progress_bytes = 0
                 WHERE job_id = ?1 AND chunk_id = ?2",
                params![key.job_id, key.chunk_id as i64, state, failures, not_before, failure.class.as_str(), failure.kind, failure.message],
            )?;
            self.end_attempt(tx, key, now, "failed", Some(failure))?;
            Ok(next.retries())
        })
    }

    /// Puts the chunks of `job_id` that overlap `range` (all when `None`) back to pending so
    /// they run again; committed data is replaced chunk by chunk when they do. Returns the
    /// chunks queued. Chunks running now are left alone.
    pub fn replay(&self, conn: &mut Connection, job_id: &str, range: Option<CursorRange>) -> Result<Vec<u64>> {
        let tx = conn.savepoint().map_err(|e| self.db_err(e))?;
        let (from, to) = range.map(|r| (r.from, r.to)).unwrap_or((i64::MIN, i64::MAX));
        let ids: Vec<u64> = {
            let mut stmt = tx
                .prepare("SELECT chunk_id FROM chunks WHERE job_id = ?1 AND range_from < ?3 AND range_to > ?2 AND state IN ('committed', 'parked', 'pending', 'cancelled') ORDER BY chunk_id")
                .map_err(|e| self.db_err(e))?;
            let rows = stmt
                .query_map(params![job_id, from, to], |r| r.get::<_, i64>(0))
                .map_err(|e| self.db_err(e))?;
            rows.map(|r| r.map(|v| v as u64))
                .collect::<rusqlite::Result<_>>()
                .map_err(|e| self.db_err(e))?
        };
        tx.execute(
            "UPDATE chunks SET state = 'pending', failures = 0, not_before_us = 0, progress_rows = 0, progress_bytes = 0
             WHERE job_id = ?1 AND range_from < ?3 AND range_to > ?2 AND state IN ('committed', 'parked', 'pending', 'cancelled')",
            params![job_id, from, to],
        )
        .map_err(|e| self.db_err(e))?;
        // Replaying a cancelled job's range resumes the job.
        tx.execute("UPDATE jobs SET cancelled_at_us = NULL WHERE job_id = ?1", [job_id])
            .map_err(|e| self.db_err(e))?;
        tx.commit().map_err(|e| self.db_err(e))?;
        self.forget_job(job_id);
        Ok(ids)
    }
}

impl Store {
    /// Cancels a job: its pending and leased chunks become `cancelled`, so no lease is handed
    /// out for them and the holders of running leases are refused at their next call. Committed
    /// and parked chunks keep their state. Returns the chunks cancelled; cancelling twice is
    /// harmless.
    pub fn cancel(&self, conn: &mut Connection, job_id: &str) -> Result<u64> {
        let tx = conn.savepoint().map_err(|e| self.db_err(e))?;
        let now = self.now_us();
        let found = tx
            .execute(
                "UPDATE jobs SET cancelled_at_us = coalesce(cancelled_at_us, ?2) WHERE job_id = ?1",
                params![job_id, now],
            )
            .map_err(|e| self.db_err(e))?;
        if found == 0 {
            return Err(CoordinatorError::UnknownJob(job_id.into()));
        }
        tx.execute(
            "UPDATE attempts SET ended_at_us = ?2, outcome = 'cancelled'
             WHERE ended_at_us IS NULL AND job_id = ?1",
            params![job_id, now],
        )
        .map_err(|e| self.db_err(e))?;
        let n = tx
            .execute(
                "UPDATE chunks SET state = 'cancelled', lease_worker = NULL, lease_expires_us = NULL
                 WHERE job_id = ?1 AND state IN ('pending', 'leased')",
                [job_id],
            )
            .map_err(|e| self.db_err(e))?;
        tx.commit().map_err(|e| self.db_err(e))?;
        self.forget_job(job_id);
        Ok(n as u64)
    }

    /// Every attempt of a job, in chunk and attempt order: the history the status page draws.
    pub fn attempts(&self, conn: &Connection, job_id: &str) -> Result<Vec<AttemptRow>> {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE job_id = ?1 ORDER BY chunk_id, attempt"
            ))
            .map_err(|e| self.db_err(e))?;
        let rows = stmt
            .query_map([job_id], |r| attempt_from_row(r))
            .map_err(|e| self.db_err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.db_err(e))
    }

    /// Every committed output file of a job, in chunk and part order.
    pub fn outputs(&self, conn: &Connection, job_id: &str) -> Result<Vec<OutputRow>> {
        let mut stmt = conn
            .prepare("SELECT chunk_id, part, path, bytes, rows FROM outputs WHERE job_id = ?1 ORDER BY chunk_id, part")
            .map_err(|e| self.db_err(e))?;
        let rows = stmt
            .query_map([job_id], |r| {
                Ok(OutputRow {
                    chunk_id: r.get::<_, i64>(0)? as u64,
                    part: r.get(1)?,
                    path: r.get(2)?,
                    bytes: r.get::<_, i64>(3)? as u64,
                    rows: r.get::<_, i64>(4)? as u64,
                })
            })
            .map_err(|e| self.db_err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.db_err(e))
    }
}

/// One lease of a chunk and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    /// The chunk.
    pub chunk_id: u64,
    /// The attempt number (lease count of the chunk when it was handed out).
    pub attempt: u32,
    /// The worker (slot) that held the lease.
    pub worker_id: String,
    /// When the lease was handed out.
    pub started_at_us: i64,
    /// When it ended; `None` while it runs.
    pub ended_at_us: Option<i64>,
    /// `committed`, `failed`, `released`, `expired`, `abandoned`, `cancelled`; `None` while it runs.
    pub outcome: Option<String>,
    /// Error class of a failed attempt.
    pub error_class: Option<String>,
    /// Error message of a failed attempt.
    pub error_message: Option<String>,
}

/// One committed output file.
#[derive(Debug, Clone, Serialize)]
pub struct OutputRow {
    /// The chunk.
    pub chunk_id: u64,
    /// Part number within the chunk.
    pub part: u32,
    /// Stage path the file was committed from.
    pub path: String,
    /// File size.
    pub bytes: u64,
    /// Rows in the file.
    pub rows: u64,
}

/// The columns [`chunk_from_row`] reads, in its order.
macro_rules! chunk_columns {
    () => {
        "chunk_id, range_from, range_to, estimated_rows, estimated_bytes, state, attempt, failures,
    progress_rows, progress_bytes, extracted_rows, extracted_checksum, committed_rows, committed_checksum, committed_bytes,
    last_error_class, last_error_kind, last_error, lease_worker, committed_at_us,
    proof_level, extracted_fingerprint, committed_fingerprint, dead_letters, split_from"
    };
}

pub(crate) const CHUNK_SELECT: &str = concat!("SELECT ", chunk_columns!(), " FROM chunks");

/// Leases the first runnable chunk of job ?2 (now ?1, worker ?3, expiry ?4) and returns it
/// with its job id (read by [`leased_from_row`]).
const LEASE_NEXT_OF_JOB: &str = concat!(
    "UPDATE chunks SET state = 'leased', attempt = attempt + 1, lease_worker = ?3, lease_expires_us = ?4,
        progress_rows = 0, progress_bytes = 0
     WHERE rowid = (SELECT rowid FROM chunks INDEXED BY chunks_lease_order
                    WHERE state = 'pending' AND job_id = ?2 AND not_before_us <= ?1 ORDER BY chunk_id LIMIT 1)
     RETURNING ",
    chunk_columns!(),
    ", job_id"
);

/// [`LEASE_NEXT_OF_JOB`] over every job, in job and plan order (now ?1, worker ?2, expiry ?3).
const LEASE_NEXT_OF_ANY_JOB: &str = concat!(
    "UPDATE chunks SET state = 'leased', attempt = attempt + 1, lease_worker = ?2, lease_expires_us = ?3,
        progress_rows = 0, progress_bytes = 0
     WHERE rowid = (SELECT rowid FROM chunks INDEXED BY chunks_lease_order
                    WHERE state = 'pending' AND not_before_us <= ?1 ORDER BY job_id, chunk_id LIMIT 1)
     RETURNING ",
    chunk_columns!(),
    ", job_id"
);

/// A chunk and its job id as returned by the lease statements.
fn leased_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, ChunkRow)> {
    Ok((r.get(25)?, chunk_from_row(r)?))
}

/// A result row read by column index, whichever backend produced it. Both stores select the
/// same columns in the same order ([`CHUNK_SELECT`], [`JOB_SELECT`], attempts), so one set of
/// readers below maps them for both.
pub(crate) trait StateRow {
    /// The driver's error.
    type Error;
    /// A non-null integer column.
    fn int(&self, i: usize) -> std::result::Result<i64, Self::Error>;
    /// A nullable integer column.
    fn opt_int(&self, i: usize) -> std::result::Result<Option<i64>, Self::Error>;
    /// A non-null text column.
    fn text(&self, i: usize) -> std::result::Result<String, Self::Error>;
    /// A nullable text column.
    fn opt_text(&self, i: usize) -> std::result::Result<Option<String>, Self::Error>;
}

impl StateRow for rusqlite::Row<'_> {
    type Error = rusqlite::Error;

    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }

    fn opt_int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }

    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }

    fn opt_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
}

/// A row of [`CHUNK_SELECT`].
pub(crate) fn chunk_from_row<R: StateRow + ?Sized>(r: &R) -> std::result::Result<ChunkRow, R::Error> {
    let last_error = match (r.opt_text(15)?, r.opt_text(16)?, r.opt_text(17)?) {
        (Some(class), Some(kind), Some(message)) => Some((class, kind, message)),
        _ => None,
    };
    // A stored fingerprint that does not parse reads as absent: a proof then fails its check
    // instead of passing unchecked.
    let fingerprint = |json: Option<String>| json.and_then(|j| serde_json::from_str::<ChunkFingerprint>(&j).ok());
    let extracted = match (r.opt_int(10)?, r.opt_int(11)?) {
        (Some(rows), Some(checksum)) => {
            let summary = RowSummary {
                rows: rows as u64,
                checksum: checksum as u64,
            };
            Some(ChunkEvidence {
                summary,
                fingerprint: fingerprint(r.opt_text(21)?).unwrap_or(ChunkFingerprint {
                    rows: summary.rows,
                    columns: Vec::new(),
                }),
            })
        }
        _ => None,
    };
    let committed = match r.opt_int(12)? {
        Some(rows) => Some(ChunkProof {
            level: r
                .opt_text(20)?
                .and_then(|l| ProofLevel::parse(&l))
                .unwrap_or(ProofLevel::ExactChecksum),
            rows: rows as u64,
            checksum: r.opt_int(13)?.map(|c| c as u64),
            fingerprint: fingerprint(r.opt_text(22)?),
        }),
        None => None,
    };
    Ok(ChunkRow {
        chunk_id: r.int(0)? as u64,
        range: CursorRange {
            from: r.int(1)?,
            to: r.int(2)?,
        },
        estimated_rows: r.int(3)? as u64,
        estimated_bytes: r.int(4)? as u64,
        state: ChunkState::parse(&r.text(5)?),
        attempt: r.int(6)? as u32,
        failures: r.int(7)? as u32,
        progress_rows: r.int(8)? as u64,
        progress_bytes: r.int(9)? as u64,
        extracted,
        committed,
        committed_bytes: r.opt_int(14)?.map(|b| b as u64),
        last_error,
        lease_worker: r.opt_text(18)?,
        committed_at_us: r.opt_int(19)?,
        dead_letters: r.opt_int(23)?.unwrap_or(0) as u64,
        split_from: r.opt_int(24)?.map(|id| id as u64),
    })
}

/// The columns `complete` writes for a chunk's proof, in both backends; built only from a
/// proof that passed [`ChunkProof::check`] (the one rule).
pub(crate) struct StoredProof {
    pub extracted_rows: i64,
    pub extracted_checksum: i64,
    pub committed_rows: i64,
    pub committed_checksum: Option<i64>,
    pub level: &'static str,
    pub extracted_fingerprint: String,
    pub committed_fingerprint: Option<String>,
}

impl StoredProof {
    /// Checks `committed` against `extracted` and returns what to store, or the
    /// verification failure naming the chunk and every difference.
    pub(crate) fn checked(key: &LeaseKey, extracted: &ChunkEvidence, committed: &ChunkProof) -> Result<Self> {
        committed.verify(extracted, format!("chunk {} of job {}", key.chunk_id, key.job_id))?;
        let json = |f: &ChunkFingerprint| serde_json::to_string(f).expect("a fingerprint always serializes");
        Ok(StoredProof {
            extracted_rows: extracted.summary.rows as i64,
            extracted_checksum: extracted.summary.checksum as i64,
            committed_rows: committed.rows as i64,
            committed_checksum: committed.checksum.map(|c| c as i64),
            level: committed.level.as_str(),
            extracted_fingerprint: json(&extracted.fingerprint),
            committed_fingerprint: committed.fingerprint.as_ref().map(json),
        })
    }
}

/// Refuses an extension of `job` planned from another mark than its current one, or one that
/// does not move the mark forward.
pub(crate) fn check_extension(job: &JobRow, ext: &Extension) -> Result<()> {
    // An extension to the same mark is a full refresh of a fixed range: new chunks, same range.
    if job.high_water() != ext.from_mark || ext.to_mark < ext.from_mark {
        return Err(CoordinatorError::MarkMoved {
            job_id: ext.job_id.clone(),
            planned_from: job.cursor_kind.format(ext.from_mark),
            stored: job.cursor_kind.format(job.high_water()),
        });
    }
    Ok(())
}

/// A row of [`JOB_SELECT`].
pub(crate) fn job_from_row<R: StateRow + ?Sized>(r: &R) -> std::result::Result<JobRow, R::Error> {
    let kind = match r.text(3)?.as_str() {
        "date" => CursorKind::Date,
        "integer" => CursorKind::Integer,
        _ => CursorKind::Timestamp,
    };
    Ok(JobRow {
        job_id: r.text(0)?,
        spec_toml: r.text(1)?,
        base_dir: PathBuf::from(r.text(2)?),
        cursor_kind: kind,
        range: CursorRange {
            from: r.int(4)?,
            to: r.int(5)?,
        },
        created_at_us: r.int(6)?,
        cancelled_at_us: r.opt_int(7)?,
        synced_at_us: r.opt_int(8)?,
    })
}

/// The columns [`attempt_from_row`] reads, in its order.
pub(crate) const ATTEMPT_COLUMNS: &str =
    "chunk_id, attempt, worker_id, started_at_us, ended_at_us, outcome, error_class, error_message";

/// A row of [`ATTEMPT_COLUMNS`].
pub(crate) fn attempt_from_row<R: StateRow + ?Sized>(r: &R) -> std::result::Result<AttemptRow, R::Error> {
    Ok(AttemptRow {
        chunk_id: r.int(0)? as u64,
        attempt: r.int(1)? as u32,
        worker_id: r.text(2)?,
        started_at_us: r.int(3)?,
        ended_at_us: r.opt_int(4)?,
        outcome: r.opt_text(5)?,
        error_class: r.opt_text(6)?,
        error_message: r.opt_text(7)?,
    })
}

macro_rules! job_select {
    () => {
        "SELECT job_id, spec_toml, base_dir, cursor_kind, range_from, range_to, created_at_us, cancelled_at_us, synced_at_us FROM jobs"
    };
}

pub(crate) const JOB_SELECT: &str = job_select!();
const JOB_BY_ID: &str = concat!(job_select!(), " WHERE job_id = ?1");

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use backhaul_core::chunking::PlannedChunk;

    use super::*;
    use crate::clock::ManualClock;

    /// Job `j` (spec `spec`) over [0, 10 × chunks) in chunks of 10 (10 rows, 100 bytes each).
    pub(crate) fn job_with_chunks(base_dir: &Path, chunks: u64) -> (JobRow, Vec<PlannedChunk>) {
        let job = JobRow {
            job_id: "j".into(),
            spec_toml: "spec".into(),
            base_dir: base_dir.into(),
            cursor_kind: CursorKind::Integer,
            range: CursorRange::new(0, chunks as i64 * 10),
            created_at_us: 0,
            cancelled_at_us: None,
            synced_at_us: None,
        };
        let planned = (0..chunks)
            .map(|i| PlannedChunk {
                index: i,
                range: CursorRange::new(i as i64 * 10, (i as i64 + 1) * 10),
                estimated_rows: 10,
                estimated_bytes: 100,
            })
            .collect();
        (job, planned)
    }

    /// A store on a [`ManualClock`] holding job `j` with `chunks` chunks.
    fn store_with_job(chunks: u64) -> (tempfile::TempDir, Store, Connection, Arc<ManualClock>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).unwrap();
        let clock = Arc::new(ManualClock::starting_now());
        store.set_clock(clock.clone());
        let mut conn = Connection::open(&path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let (job, planned) = job_with_chunks(dir.path(), chunks);
        assert_eq!(store.submit(&mut conn, &job, &planned).unwrap(), Submitted::Created);
        assert_eq!(store.submit(&mut conn, &job, &planned).unwrap(), Submitted::Existing);
        let changed = JobRow {
            spec_toml: "other".into(),
            ..job
        };
        assert!(matches!(
            store.submit(&mut conn, &changed, &planned),
            Err(CoordinatorError::SpecChanged { .. })
        ));
        (dir, store, conn, clock)
    }

    /// Retries at once: these tests are about fencing and sweeping, not backoff.
    fn no_backoff() -> RetryPolicy {
        RetryPolicy {
            transient_base: Duration::ZERO,
            throttled_base: Duration::ZERO,
            max_backoff: Duration::ZERO,
            ..RetryPolicy::default()
        }
    }

    fn lease(store: &Store, conn: &mut Connection, ttl_ms: u32) -> Lease {
        store
            .lease(conn, "w", Some("j"), ttl_ms, &no_backoff())
            .unwrap()
            .expect("a lease")
    }

    const EV: ChunkEvidence = ChunkEvidence {
        summary: RowSummary { rows: 10, checksum: 42 },
        fingerprint: ChunkFingerprint {
            rows: 10,
            columns: Vec::new(),
        },
    };
    const PROOF: ChunkProof = ChunkProof {
        level: ProofLevel::ExactChecksum,
        rows: 10,
        checksum: Some(42),
        fingerprint: None,
    };

    /// Evidence of `rows` rows with `checksum`, and an exact proof of the same.
    pub(crate) fn proven(rows: u64, checksum: u64) -> (ChunkEvidence, ChunkProof) {
        let evidence = ChunkEvidence {
            summary: RowSummary { rows, checksum },
            fingerprint: ChunkFingerprint {
                rows,
                columns: Vec::new(),
            },
        };
        let proof = ChunkProof::from_evidence(ProofLevel::ExactChecksum, &evidence);
        (evidence, proof)
    }

    #[test]
    fn stale_lease_cannot_complete_after_re_lease() {
        let (_d, store, mut conn, clock) = store_with_job(1);
        let first = lease(&store, &mut conn, 1);
        clock.advance(Duration::from_millis(5));
        // The first lease expired; the chunk goes to a second worker with attempt 2.
        let second = lease(&store, &mut conn, 60_000);
        assert_eq!(second.chunk.attempt, 2);
        let err = store
            .complete(&mut conn, &first.lease_id, &[], &EV, &PROOF, &ExtractFacts::default())
            .unwrap_err();
        assert!(matches!(err, CoordinatorError::StaleLease { .. }), "{err}");
        assert!(store.heartbeat(&mut conn, &first.lease_id, 1000).is_err());
        store
            .complete(&mut conn, &second.lease_id, &[], &EV, &PROOF, &ExtractFacts::default())
            .unwrap();
        // A retried completion of the committing attempt is acknowledged (its first answer
        // may have been lost); the stale attempt stays refused, and nobody can fail it now.
        store
            .complete(&mut conn, &second.lease_id, &[], &EV, &PROOF, &ExtractFacts::default())
            .unwrap();
        assert!(
            store
                .complete(&mut conn, &first.lease_id, &[], &EV, &PROOF, &ExtractFacts::default())
                .is_err()
        );
        let failure = Failure {
            class: ErrorClass::Transient,
            kind: "x".into(),
            message: "late".into(),
        };
        assert!(
            store
                .fail(&mut conn, &second.lease_id, &failure, &RetryPolicy::default())
                .is_err()
        );
        let s = store.summary(&conn, "j").unwrap();
        assert_eq!((s.committed, s.committed_rows), (1, 10));
        assert!(matches!(
            store.lease(&mut conn, "w", Some("j"), 1000, &no_backoff()).unwrap(),
            Err(NoLease::Finished)
        ));
    }

    #[test]
    fn expired_but_not_re_leased_completion_is_accepted() {
        let (_d, store, mut conn, clock) = store_with_job(2);
        let first = lease(&store, &mut conn, 1);
        clock.advance(Duration::from_millis(5));
        // A lease call for another job expires the first lease without re-leasing its chunk.
        assert!(matches!(
            store.lease(&mut conn, "w", Some("other"), 1000, &no_backoff()).unwrap(),
            Err(NoLease::Finished)
        ));
        assert_eq!(store.chunks(&conn, "j").unwrap()[0].state, ChunkState::Pending);
        store
            .complete(&mut conn, &first.lease_id, &[], &EV, &PROOF, &ExtractFacts::default())
            .unwrap();
        assert_eq!(store.chunks(&conn, "j").unwrap()[0].state, ChunkState::Committed);
    }

    #[test]
    fn chunks_committed_before_proofs_read_as_exact_proofs_after_migration() {
        let (dir, store, mut conn, _clock) = store_with_job(1);
        let l = lease(&store, &mut conn, 60_000);
        store
            .complete(&mut conn, &l.lease_id, &[], &EV, &PROOF, &ExtractFacts::default())
            .unwrap();
        drop((store, conn));
        // A state database from before proofs: without the proof columns.
        let path = dir.path().join("state.db");
        let old = Connection::open(&path).unwrap();
        for column in ["proof_level", "extracted_fingerprint", "committed_fingerprint"] {
            old.execute_batch(&format!("ALTER TABLE chunks DROP COLUMN {column}"))
                .unwrap();
        }
        drop(old);
        let store = Store::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let chunk = &store.chunks(&conn, "j").unwrap()[0];
        assert_eq!(chunk.committed.as_ref(), Some(&PROOF));
        assert_eq!(chunk.extracted.as_ref(), Some(&EV));
        assert_eq!(PROOF.check(&EV), Ok(()));
    }

    #[test]
    fn mismatching_output_is_refused() {
        let (_d, store, mut conn, _clock) = store_with_job(1);
        let l = lease(&store, &mut conn, 60_000);
        let bad = ChunkProof { rows: 9, ..PROOF };
        let err = store
            .complete(&mut conn, &l.lease_id, &[], &EV, &bad, &ExtractFacts::default())
            .unwrap_err();
        assert!(
            matches!(
                err,
                CoordinatorError::Core(backhaul_core::Error::VerificationFailed { .. })
            ),
            "{err}"
        );
        assert_eq!(store.summary(&conn, "j").unwrap().committed, 0);
    }

    #[test]
    fn transient_failures_back_off_then_park() {
        let (_d, store, mut conn, clock) = store_with_job(1);
        let policy = RetryPolicy {
            max_attempts: 3,
            transient_base: Duration::from_millis(1),
            throttled_base: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        };
        let failure = Failure {
            class: ErrorClass::Transient,
            kind: "unreachable".into(),
            message: "reset".into(),
        };
        for expected_retry in [true, true, false] {
            clock.advance(Duration::from_millis(5));
            let l = lease(&store, &mut conn, 60_000);
            assert_eq!(
                store.fail(&mut conn, &l.lease_id, &failure, &policy).unwrap(),
                expected_retry
            );
        }
        let chunk = &store.chunks(&conn, "j").unwrap()[0];
        assert_eq!(chunk.state, ChunkState::Parked);
        assert_eq!(chunk.failures, 3);
        assert_eq!(chunk.last_error.as_ref().unwrap().1, "unreachable");
        assert!(matches!(
            store.lease(&mut conn, "w", Some("j"), 1000, &no_backoff()).unwrap(),
            Err(NoLease::Finished)
        ));
    }

    #[test]
    fn permanent_failure_parks_at_once_and_replay_requeues() {
        let (_d, store, mut conn, _clock) = store_with_job(3);
        let l = lease(&store, &mut conn, 60_000);
        let failure = Failure {
            class: ErrorClass::Permanent,
            kind: "config".into(),
            message: "bad".into(),
        };
        assert!(
            !store
                .fail(&mut conn, &l.lease_id, &failure, &RetryPolicy::default())
                .unwrap()
        );
        let queued = store.replay(&mut conn, "j", Some(CursorRange::new(0, 15))).unwrap();
        assert_eq!(queued, vec![0, 1]);
        let s = store.summary(&conn, "j").unwrap();
        assert_eq!((s.pending, s.parked), (3, 0));
    }

    #[test]
    fn released_chunks_run_again_without_counting_a_failure() {
        let (_d, store, mut conn, _clock) = store_with_job(1);
        for _ in 0..10 {
            let l = lease(&store, &mut conn, 60_000);
            store.release(&mut conn, &l.lease_id).unwrap();
            assert!(
                store.release(&mut conn, &l.lease_id).is_ok(),
                "a second release of the same attempt is harmless"
            );
        }
        let chunk = &store.chunks(&conn, "j").unwrap()[0];
        assert_eq!(
            (chunk.state, chunk.failures, chunk.attempt),
            (ChunkState::Pending, 0, 10)
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        let key = LeaseKey {
            job_id: "j".into(),
            chunk_id: 1,
            attempt: 1,
        };
        let b1 = p.backoff_us(ErrorClass::Transient, 1, &key);
        let b3 = p.backoff_us(ErrorClass::Transient, 3, &key);
        let b30 = p.backoff_us(ErrorClass::Transient, 30, &key);
        assert!(b3 > b1);
        assert!(b30 <= (p.max_backoff.as_micros() as f64 * 1.25) as i64);
        assert!(p.backoff_us(ErrorClass::Throttled, 1, &key) > b1);
    }

    #[test]
    fn expired_leases_wait_for_the_sweep_while_chunks_are_pending() {
        let (_d, store, mut conn, clock) = store_with_job(2);
        store.set_expiry_sweep_interval(Duration::from_secs(3600));
        let first = lease(&store, &mut conn, 1);
        assert_eq!((first.chunk.chunk_id, first.chunk.attempt), (0, 1));
        clock.advance(Duration::from_millis(5));
        // Chunk 0's lease ran out, but no sweep is due and chunk 1 is pending.
        let second = lease(&store, &mut conn, 60_000);
        assert_eq!((second.chunk.chunk_id, second.chunk.attempt), (1, 1));
        // Nothing pending: the sweep runs now, whatever the interval.
        let third = lease(&store, &mut conn, 60_000);
        assert_eq!((third.chunk.chunk_id, third.chunk.attempt), (0, 2));
        let err = store
            .complete(&mut conn, &first.lease_id, &[], &EV, &PROOF, &ExtractFacts::default())
            .unwrap_err();
        assert!(matches!(err, CoordinatorError::StaleLease { .. }), "{err}");
        let history = store.attempts(&conn, "j").unwrap();
        assert_eq!(history[0].outcome.as_deref(), Some("expired"));
    }

    #[test]
    fn expired_lease_is_swept_within_one_interval() {
        let (_d, store, mut conn, clock) = store_with_job(3);
        let first = lease(&store, &mut conn, 1);
        clock.advance(Duration::from_millis(5));
        let second = lease(&store, &mut conn, 60_000);
        assert_eq!(second.chunk.chunk_id, 1, "swept before the interval was over");
        clock.advance(EXPIRY_SWEEP_INTERVAL);
        // Chunk 2 is pending, yet the expired chunk 0 comes first: the sweep was due.
        let again = lease(&store, &mut conn, 60_000);
        assert_eq!(
            (again.chunk.chunk_id, again.chunk.attempt),
            (0, 2),
            "first was {first:?}"
        );
    }

    #[test]
    fn zero_sweep_interval_expires_on_every_lease() {
        let (_d, store, mut conn, clock) = store_with_job(2);
        store.set_expiry_sweep_interval(Duration::ZERO);
        lease(&store, &mut conn, 1);
        clock.advance(Duration::from_millis(5));
        let again = lease(&store, &mut conn, 60_000);
        assert_eq!((again.chunk.chunk_id, again.chunk.attempt), (0, 2));
    }

    #[test]
    fn batch_leases_are_fenced_one_by_one() {
        let (_d, store, mut conn, clock) = store_with_job(3);
        store.set_expiry_sweep_interval(Duration::from_secs(3600));
        let batch = store
            .lease_many(&mut conn, "w", Some("j"), 1, 5, &no_backoff())
            .unwrap()
            .unwrap();
        let got: Vec<(u64, u32)> = batch.iter().map(|l| (l.chunk.chunk_id, l.chunk.attempt)).collect();
        assert_eq!(got, [(0, 1), (1, 1), (2, 1)], "as many as are runnable");
        assert!(batch.iter().all(|l| l.job.spec_toml == "spec"));
        clock.advance(Duration::from_millis(5));
        // The batch ran out and nothing is pending, so the sweep returns all three; asking
        // for none means one.
        let mut again = store
            .lease_many(&mut conn, "w2", Some("j"), 60_000, 0, &no_backoff())
            .unwrap()
            .unwrap();
        again.extend(
            store
                .lease_many(&mut conn, "w2", Some("j"), 60_000, 10, &no_backoff())
                .unwrap()
                .unwrap(),
        );
        let got: Vec<(u64, u32)> = again.iter().map(|l| (l.chunk.chunk_id, l.chunk.attempt)).collect();
        assert_eq!(got, [(0, 2), (1, 2), (2, 2)]);
        for (old, new) in batch.iter().zip(&again) {
            let err = store
                .complete(&mut conn, &old.lease_id, &[], &EV, &PROOF, &ExtractFacts::default())
                .unwrap_err();
            assert!(matches!(err, CoordinatorError::StaleLease { .. }), "{err}");
            assert!(store.heartbeat(&mut conn, &old.lease_id, 1000).is_err());
            store.heartbeat(&mut conn, &new.lease_id, 60_000).unwrap();
        }
        store
            .complete(
                &mut conn,
                &again[1].lease_id,
                &[],
                &EV,
                &PROOF,
                &ExtractFacts::default(),
            )
            .unwrap();
        assert!(matches!(
            store
                .lease_many(&mut conn, "w", Some("j"), 60_000, 10, &no_backoff())
                .unwrap(),
            Err(NoLease::RetryAfterMs(_))
        ));
        let s = store.summary(&conn, "j").unwrap();
        assert_eq!((s.committed, s.leased), (1, 2));
    }

    #[test]
    fn cancelled_and_replayed_jobs_lease_their_current_row() {
        let (_d, store, mut conn, _clock) = store_with_job(2);
        let first = lease(&store, &mut conn, 60_000);
        assert_eq!(first.job.cancelled_at_us, None);
        store.cancel(&mut conn, "j").unwrap();
        assert!(matches!(
            store.lease(&mut conn, "w", Some("j"), 1000, &no_backoff()).unwrap(),
            Err(NoLease::Finished)
        ));
        store.replay(&mut conn, "j", None).unwrap();
        let again = lease(&store, &mut conn, 60_000);
        assert_eq!((again.job.job_id.as_str(), again.job.cancelled_at_us), ("j", None));
    }

    #[test]
    fn lease_ids_round_trip_and_reject_garbage() {
        let k = LeaseKey {
            job_id: "a/b".into(),
            chunk_id: 7,
            attempt: 3,
        };
        assert_eq!(LeaseKey::parse(&k.id()).unwrap(), k);
        assert!(LeaseKey::parse("nope").is_err());
        assert!(LeaseKey::parse("j/x/1").is_err());
    }
}
