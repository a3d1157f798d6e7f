//! Coordinator state in PostgreSQL: the tables, columns and rules of the embedded store
//! ([`crate::store`]) on a database server, for a coordinator that must survive losing its disk.
//!
//! PostgreSQL runs changes concurrently, so the rules are kept with row locks instead of one
//! writer thread: leasing takes the next chunk in plan order with `FOR UPDATE SKIP LOCKED`
//! (two leasers never wait for each other nor get the same chunk), and every lease-scoped
//! change locks its chunk row (`FOR UPDATE`) before it checks the attempt. Transactions run at
//! READ COMMITTED; one that PostgreSQL rolls back as a deadlock victim runs again.
//!
//! Only one coordinator serves a database (and schema) at a time: a serving store holds a
//! session-level advisory lock and checks, in every transaction that changes state, that the
//! serving epoch is still the one it set (see the private `pg_connect` module).

use std::sync::Arc;
use std::time::Duration;

use backhaul_core::chunking::PlannedChunk;
use backhaul_core::connector::{ExtractFacts, StagedFile};
use backhaul_core::cursor::CursorRange;
use backhaul_core::proof::{ChunkEvidence, ChunkProof};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, IsolationLevel, Row, Transaction};

use crate::clock::{Clock, SystemClock};
use crate::error::{CoordinatorError, Result};
use crate::pg_connect::{Connector, Fence, LockSession, Pool, keep_serving_lock};
use crate::service::RetryPolicy;
use crate::split::{self, SplitFacts, SplitOutcome, SplitStep};
use crate::state::StateStore;
use crate::store::{
    ATTEMPT_COLUMNS, AttemptRow, CHUNK_SELECT, ChunkRow, ChunkState, Extension, Failure, JOB_SELECT, JobRow,
    JobSummary, Lease, LeaseKey, MIGRATIONS, NoLease, StateRow, StoredProof, Submitted, attempt_from_row,
    check_extension, chunk_from_row, failures_counting, job_from_row, now_us,
};

/// The embedded store's schema with PostgreSQL types (`BIGINT` where SQLite says `INTEGER`).
/// Job ids sort bytewise (`COLLATE "C"`), as in SQLite, whatever the database's collation.
/// `backhaul_serving` exists only here: the serving epoch (see the module docs).
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS jobs (
    job_id        TEXT COLLATE "C" PRIMARY KEY,
    spec_toml     TEXT NOT NULL,
    base_dir      TEXT NOT NULL,
    cursor_kind   TEXT NOT NULL,
    range_from    BIGINT NOT NULL,
    range_to      BIGINT NOT NULL,
    created_at_us BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    job_id            TEXT COLLATE "C" NOT NULL REFERENCES jobs(job_id),
    chunk_id          BIGINT NOT NULL,
    range_from        BIGINT NOT NULL,
    range_to          BIGINT NOT NULL,
    estimated_rows    BIGINT NOT NULL,
    estimated_bytes   BIGINT NOT NULL,
    state             TEXT NOT NULL,
    attempt           BIGINT NOT NULL DEFAULT 0,
    failures          BIGINT NOT NULL DEFAULT 0,
    lease_worker      TEXT,
    lease_expires_us  BIGINT,
    not_before_us     BIGINT NOT NULL DEFAULT 0,
    progress_rows     BIGINT NOT NULL DEFAULT 0,
    progress_bytes    BIGINT NOT NULL DEFAULT 0,
    extracted_rows    BIGINT,
    extracted_checksum BIGINT,
    committed_rows    BIGINT,
    committed_checksum BIGINT,
    committed_bytes   BIGINT,
    committed_at_us   BIGINT,
    last_error_class  TEXT,
    last_error_kind   TEXT,
    last_error        TEXT,
    PRIMARY KEY (job_id, chunk_id)
);
CREATE INDEX IF NOT EXISTS chunks_lease_order ON chunks(state, job_id, chunk_id);
CREATE INDEX IF NOT EXISTS chunks_lease_expiry ON chunks(state, lease_expires_us);
CREATE TABLE IF NOT EXISTS attempts (
    job_id        TEXT COLLATE "C" NOT NULL,
    chunk_id      BIGINT NOT NULL,
    attempt       BIGINT NOT NULL,
    worker_id     TEXT NOT NULL,
    started_at_us BIGINT NOT NULL,
    ended_at_us   BIGINT,
    outcome       TEXT,
    error_class   TEXT,
    error_kind    TEXT,
    error_message TEXT,
    PRIMARY KEY (job_id, chunk_id, attempt)
);
CREATE TABLE IF NOT EXISTS outputs (
    job_id   TEXT COLLATE "C" NOT NULL,
    chunk_id BIGINT NOT NULL,
    part     BIGINT NOT NULL,
    attempt  BIGINT NOT NULL,
    path     TEXT NOT NULL,
    bytes    BIGINT NOT NULL,
    rows     BIGINT NOT NULL,
    PRIMARY KEY (job_id, chunk_id, part)
);
CREATE TABLE IF NOT EXISTS backhaul_serving (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    epoch     BIGINT NOT NULL,
    holder    TEXT NOT NULL,
    since_us  BIGINT NOT NULL
);
"#;

/// Serializes schema creation and migration of one schema between processes opening it at once.
const SCHEMA_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('backhaul-schema:' || coalesce(current_schema(), ''), 0))";

/// Connections per store: the service's concurrent calls share them.
const POOL_SIZE: usize = 6;
/// How long one call may take; a submit writes every chunk of a plan, so it gets longer.
const CALL_BUDGET: Duration = Duration::from_secs(30);
const SUBMIT_BUDGET: Duration = Duration::from_secs(600);
/// Chunks inserted per statement when a job is submitted.
const INSERT_BATCH: usize = 10_000;
/// Times a call runs again after PostgreSQL rolled it back as a deadlock victim.
const CONFLICT_RETRIES: u32 = 3;

/// Counts and totals of the chunks of one job, in [`JobSummary`] order.
const SUMMARY_COLUMNS: &str = "count(*),
    count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'leased'),
    count(*) FILTER (WHERE state = 'committed'), count(*) FILTER (WHERE state = 'parked'),
    coalesce(sum(committed_rows) FILTER (WHERE state = 'committed'), 0)::bigint,
    coalesce(sum(committed_bytes) FILTER (WHERE state = 'committed'), 0)::bigint,
    coalesce(sum(progress_rows) FILTER (WHERE state = 'leased'), 0)::bigint,
    coalesce(sum(estimated_rows), 0)::bigint,
    count(*) FILTER (WHERE state = 'cancelled'),
    coalesce(sum(estimated_bytes), 0)::bigint,
    coalesce(sum(failures), 0)::bigint,
    coalesce(sum(dead_letters) FILTER (WHERE state = 'committed'), 0)::bigint";

/// Locks the chunks whose lease ran out, with their attempt, failures and how many of their
/// leases expired before. Rows another transaction holds are left for the next lease call.
const EXPIRED_LEASES: &str = "SELECT c.job_id, c.chunk_id, c.attempt, c.failures,
        (SELECT count(*) FROM attempts a WHERE a.job_id = c.job_id AND a.chunk_id = c.chunk_id AND a.outcome = 'expired')
    FROM chunks c
    WHERE c.state = 'leased' AND c.lease_expires_us < $1
    FOR UPDATE OF c SKIP LOCKED";

/// Leases the first runnable chunk in plan order (of job `$4` when given) that no other
/// transaction holds.
const LEASE_NEXT: &str = "WITH next AS (
        SELECT job_id, chunk_id FROM chunks
        WHERE state = 'pending' AND not_before_us <= $1 AND ($4::text IS NULL OR job_id = $4)
        ORDER BY job_id, chunk_id LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE chunks c SET state = 'leased', attempt = c.attempt + 1, lease_worker = $2, lease_expires_us = $3,
        progress_rows = 0, progress_bytes = 0
    FROM next WHERE c.job_id = next.job_id AND c.chunk_id = next.chunk_id
    RETURNING c.job_id, c.chunk_id";

/// A statement parameter with its type, so a statement costs one round trip.
type Param<'a> = (&'a (dyn ToSql + Sync), Type);

fn text(v: &(dyn ToSql + Sync)) -> Param<'_> {
    (v, Type::TEXT)
}

fn int(v: &(dyn ToSql + Sync)) -> Param<'_> {
    (v, Type::INT8)
}

/// The PostgreSQL-backed state store.
pub struct PgStore {
    pool: Pool,
    /// Where "now" comes from; see [`PgStore::with_clock`].
    clock: Arc<dyn Clock>,
    /// Set while serving: state changes need the serving lock. A reading store (`status`,
    /// `verify`) has none, like [`crate::Store::open`].
    fence: Option<Arc<Fence>>,
}

/// Runs `$body` (an expression using `$conn: &mut Client`) on a pooled connection within
/// `$budget`; again when PostgreSQL rolled it back as a deadlock victim.
macro_rules! pooled {
    ($store:expr, $budget:expr, |$conn:ident| $body:expr) => {{
        let mut conflicts = 0;
        loop {
            let mut pooled = $store.pool.get().await?;
            let out = {
                let $conn: &mut Client = &mut pooled;
                tokio::time::timeout($budget, $body).await
            };
            match pooled.settle(out, $budget) {
                Err(e) if e.is_retryable_conflict() && conflicts < CONFLICT_RETRIES => conflicts += 1,
                other => break other,
            }
        }
    }};
}

impl PgStore {
    /// Opens the state database at `url` (creating and migrating the schema when needed)
    /// without the serving lock: for readers. `password` fills in a URL without one.
    pub async fn open(url: &str, password: Option<String>) -> Result<Self> {
        let store = PgStore {
            pool: Pool::new(Connector::parse(url, password)?, POOL_SIZE),
            clock: Arc::new(SystemClock),
            fence: None,
        };
        pooled!(store, CALL_BUDGET, |c| store.create_schema(c))?;
        Ok(store)
    }

    /// Opens the state database for serving leases: takes the serving lock of the database
    /// (and schema) and holds it on a session of its own while the store lives; a second
    /// coordinator is refused with [`CoordinatorError::PostgresStateLocked`]. When the lock's
    /// session dies, state changes are refused until the lock is held again (and for good if
    /// another coordinator served meanwhile). A killed coordinator's lock ends with its
    /// connections.
    pub async fn open_serving(url: &str, password: Option<String>) -> Result<Self> {
        let mut store = Self::open(url, password).await?;
        let connector = store.pool.connector.clone();
        let (session, _) = LockSession::acquire(&connector).await.map_err(|e| connector.error(e))?;
        let session = session.ok_or_else(|| CoordinatorError::PostgresStateLocked {
            url: connector.shown.clone(),
        })?;
        let epoch = pooled!(store, CALL_BUDGET, |c| store.take_serving_epoch(c))?;
        let fence = Arc::new(Fence::new(epoch));
        store.pool.spawn(keep_serving_lock(connector, fence.clone(), session));
        store.fence = Some(fence);
        Ok(store)
    }

    /// Reads time from `clock` (tests move a [`crate::clock::ManualClock`] instead of sleeping
    /// through lease TTLs and backoffs).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now_us(&self) -> i64 {
        self.clock.now_us()
    }

    fn err(&self, source: tokio_postgres::Error) -> CoordinatorError {
        self.pool.connector.error(source)
    }

    async fn create_schema(&self, c: &mut Client) -> Result<()> {
        let tx = c.transaction().await.map_err(|e| self.err(e))?;
        tx.batch_execute(SCHEMA_LOCK).await.map_err(|e| self.err(e))?;
        tx.batch_execute(SCHEMA).await.map_err(|e| self.err(e))?;
        tx.batch_execute(schedules::SCHEMA).await.map_err(|e| self.err(e))?;
        for (table, column, definition) in MIGRATIONS {
            let definition = definition.replace("INTEGER", "BIGINT");
            tx.batch_execute(&format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition}"
            ))
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Bumps the serving epoch (under the serving lock) and returns the new one.
    async fn take_serving_epoch(&self, c: &mut Client) -> Result<i64> {
        let holder = format!("backhaul coordinator, pid {}", std::process::id());
        let row = c
            .query_typed_one(
                "INSERT INTO backhaul_serving (singleton, epoch, holder, since_us) VALUES (TRUE, 1, $1, $2)
                 ON CONFLICT (singleton) DO UPDATE
                 SET epoch = backhaul_serving.epoch + 1, holder = EXCLUDED.holder, since_us = EXCLUDED.since_us
                 RETURNING epoch",
                &[text(&holder), int(&now_us())],
            )
            .await
            .map_err(|e| self.err(e))?;
        row.try_get(0).map_err(|e| self.err(e))
    }

    /// Starts a transaction that changes state. A serving store refuses while it does not hold
    /// the serving lock, and once the serving epoch is no longer its own.
    async fn begin_change<'c>(&self, c: &'c mut Client) -> Result<Transaction<'c>> {
        if let Some(fence) = &self.fence {
            fence.check(&self.pool.connector.shown)?;
        }
        let tx = c.transaction().await.map_err(|e| self.err(e))?;
        if let Some(fence) = &self.fence {
            let epoch: Option<i64> = tx
                .query_typed_opt("SELECT epoch FROM backhaul_serving", &[])
                .await
                .map_err(|e| self.err(e))?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(|e| self.err(e))?;
            if epoch != Some(fence.epoch) {
                fence.lose();
                return Err(CoordinatorError::StateLockLost {
                    url: self.pool.connector.shown.clone(),
                });
            }
        }
        Ok(tx)
    }

    async fn submit_on(&self, c: &mut Client, job: &JobRow, chunks: &[PlannedChunk]) -> Result<Submitted> {
        let tx = self.begin_change(c).await?;
        let base_dir = job.base_dir.display().to_string();
        let inserted = tx
            .execute_typed(
                "INSERT INTO jobs (job_id, spec_toml, base_dir, cursor_kind, range_from, range_to, created_at_us)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (job_id) DO NOTHING",
                &[
                    text(&job.job_id),
                    text(&job.spec_toml),
                    text(&base_dir),
                    text(&job.cursor_kind.as_str()),
                    int(&job.range.from),
                    int(&job.range.to),
                    int(&job.created_at_us),
                ],
            )
            .await
            .map_err(|e| self.err(e))?;
        if inserted == 0 {
            let row = tx
                .query_typed_one("SELECT spec_toml FROM jobs WHERE job_id = $1", &[text(&job.job_id)])
                .await
                .map_err(|e| self.err(e))?;
            let spec: String = row.try_get(0).map_err(|e| self.err(e))?;
            if spec != job.spec_toml {
                return Err(CoordinatorError::SpecChanged {
                    job_id: job.job_id.clone(),
                    state: self.pool.connector.shown.clone(),
                });
            }
            return Ok(Submitted::Existing);
        }
        self.insert_chunks(&tx, &job.job_id, chunks, |_, c| c.index as i64)
            .await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(Submitted::Created)
    }

    /// Inserts `chunks` of `job_id` as pending, chunk `i` under the id `id_of(i, chunk)`.
    async fn insert_chunks(
        &self,
        tx: &Transaction<'_>,
        job_id: &str,
        chunks: &[PlannedChunk],
        id_of: impl Fn(usize, &PlannedChunk) -> i64,
    ) -> Result<()> {
        for (n, batch) in chunks.chunks(INSERT_BATCH).enumerate() {
            let column = |f: fn(&PlannedChunk) -> i64| batch.iter().map(f).collect::<Vec<i64>>();
            let ids: Vec<i64> = batch
                .iter()
                .enumerate()
                .map(|(i, c)| id_of(n * INSERT_BATCH + i, c))
                .collect();
            let (froms, tos) = (column(|c| c.range.from), column(|c| c.range.to));
            let (rows, bytes) = (
                column(|c| c.estimated_rows as i64),
                column(|c| c.estimated_bytes as i64),
            );
            tx.execute_typed(
                "INSERT INTO chunks (job_id, chunk_id, range_from, range_to, estimated_rows, estimated_bytes, state)
                 SELECT $1, id, range_from, range_to, est_rows, est_bytes, 'pending'
                 FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
                     AS planned(id, range_from, range_to, est_rows, est_bytes)",
                &[
                    text(&job_id),
                    (&ids, Type::INT8_ARRAY),
                    (&froms, Type::INT8_ARRAY),
                    (&tos, Type::INT8_ARRAY),
                    (&rows, Type::INT8_ARRAY),
                    (&bytes, Type::INT8_ARRAY),
                ],
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    async fn extend_on(&self, c: &mut Client, ext: &Extension) -> Result<Vec<u64>> {
        let tx = self.begin_change(c).await?;
        // The job's row lock serializes extensions of one job.
        let job = tx
            .query_typed_opt(
                &format!("{JOB_SELECT} WHERE job_id = $1 FOR UPDATE"),
                &[text(&ext.job_id)],
            )
            .await
            .map_err(|e| self.err(e))?
            .map(|r| job_from_row(&r).map_err(|e| self.err(e)))
            .transpose()?
            .ok_or_else(|| CoordinatorError::UnknownJob(ext.job_id.clone()))?;
        check_extension(&job, ext)?;
        let next: i64 = tx
            .query_typed_one(
                "SELECT coalesce(max(chunk_id) + 1, 0) FROM chunks WHERE job_id = $1",
                &[text(&ext.job_id)],
            )
            .await
            .map_err(|e| self.err(e))?
            .try_get(0)
            .map_err(|e| self.err(e))?;
        tx.execute_typed(
            "UPDATE jobs SET spec_toml = $2, range_to = $3, synced_at_us = $4 WHERE job_id = $1",
            &[
                text(&ext.job_id),
                text(&ext.spec_toml),
                int(&ext.to_mark),
                int(&ext.at_us),
            ],
        )
        .await
        .map_err(|e| self.err(e))?;
        let ids: Vec<i64> = (0..ext.chunks.len() as i64).map(|i| next + i).collect();
        self.insert_chunks(&tx, &ext.job_id, &ext.chunks, |i, _| next + i as i64)
            .await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(ids.into_iter().map(|id| id as u64).collect())
    }

    async fn job_on(&self, c: &Client, job_id: &str) -> Result<JobRow> {
        c.query_typed_opt(&format!("{JOB_SELECT} WHERE job_id = $1"), &[text(&job_id)])
            .await
            .map_err(|e| self.err(e))?
            .map(|r| job_from_row(&r).map_err(|e| self.err(e)))
            .transpose()?
            .ok_or_else(|| CoordinatorError::UnknownJob(job_id.into()))
    }

    async fn jobs_on(&self, c: &mut Client) -> Result<Vec<(JobRow, JobSummary)>> {
        // One snapshot for both reads, so every summary matches its job list.
        let tx = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.err(e))?;
        let jobs = self
            .rows(
                &tx,
                &format!("{JOB_SELECT} ORDER BY created_at_us, job_id"),
                &[],
                job_from_row,
            )
            .await?;
        let summary_sql = format!("SELECT job_id, {SUMMARY_COLUMNS} FROM chunks GROUP BY job_id");
        let summaries = self
            .rows(&tx, &summary_sql, &[], |r| {
                Ok((r.try_get::<_, String>(0)?, summary_from_row(r, 1)?))
            })
            .await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        let mut by_job: std::collections::HashMap<String, JobSummary> = summaries.into_iter().collect();
        Ok(jobs
            .into_iter()
            .map(|job| {
                let summary = by_job.remove(&job.job_id).unwrap_or_default();
                (job, summary)
            })
            .collect())
    }

    async fn summary_on(&self, c: &Client, job_id: &str) -> Result<JobSummary> {
        let row = c
            .query_typed_one(
                &format!("SELECT {SUMMARY_COLUMNS} FROM chunks WHERE job_id = $1"),
                &[text(&job_id)],
            )
            .await
            .map_err(|e| self.err(e))?;
        summary_from_row(&row, 0).map_err(|e| self.err(e))
    }

    async fn chunks_on(&self, c: &Client, job_id: &str) -> Result<Vec<ChunkRow>> {
        let sql = format!("{CHUNK_SELECT} WHERE job_id = $1 ORDER BY chunk_id");
        self.rows(c, &sql, &[text(&job_id)], chunk_from_row).await
    }

    async fn attempts_on(&self, c: &Client, job_id: &str) -> Result<Vec<AttemptRow>> {
        let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE job_id = $1 ORDER BY chunk_id, attempt");
        self.rows(c, &sql, &[text(&job_id)], attempt_from_row).await
    }

    /// Runs a query on `c` (a connection or a transaction) and maps every row.
    async fn rows<T>(
        &self,
        c: &impl GenericClient,
        sql: &str,
        params: &[Param<'_>],
        map: fn(&Row) -> RowResult<T>,
    ) -> Result<Vec<T>> {
        let rows = c.query_typed(sql, params).await.map_err(|e| self.err(e))?;
        rows.iter().map(|r| map(r).map_err(|e| self.err(e))).collect()
    }

    async fn lease_on(
        &self,
        c: &mut Client,
        worker_id: &str,
        job_filter: Option<&str>,
        ttl_ms: u32,
        policy: &RetryPolicy,
    ) -> Result<std::result::Result<Lease, NoLease>> {
        let now = self.now_us();
        let tx = self.begin_change(c).await?;
        self.expire_leases(&tx, now, policy).await?;
        let expires = now + i64::from(ttl_ms) * 1000;
        let next = tx
            .query_typed_opt(
                LEASE_NEXT,
                &[int(&now), text(&worker_id), int(&expires), text(&job_filter)],
            )
            .await
            .map_err(|e| self.err(e))?;
        let Some(next) = next else {
            let row = tx
                .query_typed_one(
                    "SELECT count(*), min(CASE WHEN state = 'pending' THEN not_before_us ELSE lease_expires_us END)
                     FROM chunks WHERE state IN ('pending', 'leased') AND ($1::text IS NULL OR job_id = $1)",
                    &[text(&job_filter)],
                )
                .await
                .map_err(|e| self.err(e))?;
            let (open, soonest): (i64, Option<i64>) = (
                row.try_get(0).map_err(|e| self.err(e))?,
                row.try_get(1).map_err(|e| self.err(e))?,
            );
            tx.commit().await.map_err(|e| self.err(e))?;
            if open == 0 {
                return Ok(Err(NoLease::Finished));
            }
            // Chunks held by other transactions count as open: ask again soon.
            let wait_ms = soonest.map(|t| ((t - now) / 1000).clamp(50, 1000)).unwrap_or(500);
            return Ok(Err(NoLease::RetryAfterMs(wait_ms as u32)));
        };
        let (job_id, chunk_id): (String, i64) = (
            next.try_get(0).map_err(|e| self.err(e))?,
            next.try_get(1).map_err(|e| self.err(e))?,
        );
        let row = tx
            .query_typed_one(
                &format!("{CHUNK_SELECT} WHERE job_id = $1 AND chunk_id = $2"),
                &[text(&job_id), int(&chunk_id)],
            )
            .await
            .map_err(|e| self.err(e))?;
        let chunk = chunk_from_row(&row).map_err(|e| self.err(e))?;
        tx.execute_typed(
            "INSERT INTO attempts (job_id, chunk_id, attempt, worker_id, started_at_us) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (job_id, chunk_id, attempt) DO UPDATE SET worker_id = EXCLUDED.worker_id,
                 started_at_us = EXCLUDED.started_at_us, ended_at_us = NULL, outcome = NULL,
                 error_class = NULL, error_kind = NULL, error_message = NULL",
            &[
                text(&job_id),
                int(&chunk_id),
                int(&i64::from(chunk.attempt)),
                text(&worker_id),
                int(&now),
            ],
        )
        .await
        .map_err(|e| self.err(e))?;
        let job = tx
            .query_typed_opt(&format!("{JOB_SELECT} WHERE job_id = $1"), &[text(&job_id)])
            .await
            .map_err(|e| self.err(e))?
            .ok_or_else(|| CoordinatorError::UnknownJob(job_id.clone()))?;
        let job = job_from_row(&job).map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        let lease_id = LeaseKey {
            job_id,
            chunk_id: chunk_id as u64,
            attempt: chunk.attempt,
        }
        .id();
        Ok(Ok(Lease { lease_id, job, chunk }))
    }

    /// Counts every lease that ran out as a failure of its chunk, by the rule of the embedded
    /// store (`Store::expire_leases`): [`Failure::worker_lost`], then back to pending after the
    /// backoff or parked at `max_attempts`. The attempt number stays, so the dead holder is
    /// still fenced out once the chunk is leased again.
    async fn expire_leases(&self, tx: &Transaction<'_>, now: i64, policy: &RetryPolicy) -> Result<()> {
        let expired = self
            .rows(tx, EXPIRED_LEASES, &[int(&now)], |r| {
                Ok((
                    r.try_get::<_, String>(0)?,
                    r.try_get::<_, i64>(1)?,
                    r.try_get::<_, i64>(2)?,
                    r.try_get::<_, i64>(3)?,
                    r.try_get::<_, i64>(4)?,
                ))
            })
            .await?;
        for (job_id, chunk_id, attempt, failures, lost_before) in expired {
            let key = LeaseKey {
                job_id,
                chunk_id: chunk_id as u64,
                attempt: attempt as u32,
            };
            let failure = Failure::worker_lost(lost_before as u64 + 1);
            let failures = failures as u32 + 1;
            let next = policy.after_failure(failure.class, failures, &key, now);
            self.end_attempt(tx, &key, now, "expired", Some(&failure)).await?;
            self.update_chunk(
                tx,
                &key,
                "UPDATE chunks SET state = $3, failures = $4, not_before_us = $5, lease_worker = NULL, lease_expires_us = NULL,
                    last_error_class = $6, last_error_kind = $7, last_error = $8
                 WHERE job_id = $1 AND chunk_id = $2",
                &[
                    text(&next.state.as_str()),
                    int(&i64::from(failures)),
                    int(&next.not_before_us),
                    text(&failure.class.as_str()),
                    text(&failure.kind),
                    text(&failure.message),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Locks the chunk of `lease_id` and checks the lease is its current attempt and the chunk
    /// not finished; returns the key and the chunk's failures once this attempt's failure is
    /// counted ([`failures_counting`]).
    async fn current(&self, tx: &Transaction<'_>, lease_id: &str, allow_pending: bool) -> Result<(LeaseKey, u32)> {
        let key = LeaseKey::parse(lease_id)?;
        let row = tx
            .query_typed_opt(
                "SELECT state, attempt, failures FROM chunks WHERE job_id = $1 AND chunk_id = $2 FOR UPDATE",
                &[text(&key.job_id), int(&(key.chunk_id as i64))],
            )
            .await
            .map_err(|e| self.err(e))?;
        let refuse = |reason: String| CoordinatorError::StaleLease {
            lease_id: lease_id.into(),
            reason,
        };
        let Some(row) = row else {
            return Err(refuse("no such chunk".into()));
        };
        let (state, attempt, failures): (String, i64, i64) = (
            row.try_get(0).map_err(|e| self.err(e))?,
            row.try_get(1).map_err(|e| self.err(e))?,
            row.try_get(2).map_err(|e| self.err(e))?,
        );
        if attempt != i64::from(key.attempt) {
            return Err(refuse(format!("the chunk was leased again (attempt {attempt})")));
        }
        // An expired lease whose chunk nobody has taken since is still the newest attempt.
        let state = ChunkState::parse(&state);
        match state {
            ChunkState::Leased => Ok((key, failures_counting(failures as u32, state))),
            ChunkState::Pending if allow_pending => Ok((key, failures_counting(failures as u32, state))),
            other => Err(refuse(format!("the chunk is {}", other.as_str()))),
        }
    }

    /// Runs one statement on the chunk row of `key` (parameters `$1` job, `$2` chunk, then
    /// `more`).
    async fn update_chunk(&self, tx: &Transaction<'_>, key: &LeaseKey, sql: &str, more: &[Param<'_>]) -> Result<()> {
        let chunk_id = key.chunk_id as i64;
        let mut params = vec![text(&key.job_id), int(&chunk_id)];
        params.extend_from_slice(more);
        tx.execute_typed(sql, &params).await.map_err(|e| self.err(e)).map(drop)
    }

    /// Closes the lease's attempt record with its outcome (and error, for failures).
    async fn end_attempt(
        &self,
        tx: &Transaction<'_>,
        key: &LeaseKey,
        now: i64,
        outcome: &str,
        error: Option<&Failure>,
    ) -> Result<()> {
        let (class, kind, message) = (
            error.map(|f| f.class.as_str()),
            error.map(|f| f.kind.as_str()),
            error.map(|f| f.message.as_str()),
        );
        tx.execute_typed(
            "UPDATE attempts SET ended_at_us = $4, outcome = $5, error_class = $6, error_kind = $7, error_message = $8
             WHERE job_id = $1 AND chunk_id = $2 AND attempt = $3",
            &[
                text(&key.job_id),
                int(&(key.chunk_id as i64)),
                int(&i64::from(key.attempt)),
                int(&now),
                text(&outcome),
                text(&class),
                text(&kind),
                text(&message),
            ],
        )
        .await
        .map_err(|e| self.err(e))
        .map(drop)
    }

    async fn heartbeat_on(&self, c: &mut Client, lease_id: &str, ttl_ms: u32) -> Result<()> {
        let tx = self.begin_change(c).await?;
        let (key, _) = self.current(&tx, lease_id, false).await?;
        let expires = self.now_us() + i64::from(ttl_ms) * 1000;
        self.update_chunk(
            &tx,
            &key,
            "UPDATE chunks SET lease_expires_us = $3 WHERE job_id = $1 AND chunk_id = $2",
            &[int(&expires)],
        )
        .await?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn progress_on(&self, c: &mut Client, lease_id: &str, rows: u64, bytes: u64) -> Result<()> {
        let tx = self.begin_change(c).await?;
        let (key, _) = self.current(&tx, lease_id, false).await?;
        let (rows, bytes) = (rows as i64, bytes as i64);
        self.update_chunk(
            &tx,
            &key,
            "UPDATE chunks SET progress_rows = $3, progress_bytes = $4 WHERE job_id = $1 AND chunk_id = $2",
            &[int(&rows), int(&bytes)],
        )
        .await?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn complete_on(
        &self,
        c: &mut Client,
        lease_id: &str,
        files: &[StagedFile],
        extracted: &ChunkEvidence,
        committed: &ChunkProof,
        facts: &ExtractFacts,
    ) -> Result<()> {
        let out = self
            .complete_current(c, lease_id, files, extracted, committed, facts)
            .await;
        // A retried completion whose first try was committed but whose answer was lost is the
        // same completion: acknowledge it.
        if matches!(out, Err(CoordinatorError::StaleLease { .. })) && self.committed_by(c, lease_id).await? {
            return Ok(());
        }
        out
    }

    /// Whether the chunk of `lease_id` is committed by exactly that attempt.
    async fn committed_by(&self, c: &Client, lease_id: &str) -> Result<bool> {
        let Ok(key) = LeaseKey::parse(lease_id) else {
            return Ok(false);
        };
        let row = c
            .query_typed_opt(
                "SELECT state = 'committed' AND attempt = $3 FROM chunks WHERE job_id = $1 AND chunk_id = $2",
                &[
                    text(&key.job_id),
                    int(&(key.chunk_id as i64)),
                    int(&i64::from(key.attempt)),
                ],
            )
            .await
            .map_err(|e| self.err(e))?;
        match row {
            Some(r) => r.try_get(0).map_err(|e| self.err(e)),
            None => Ok(false),
        }
    }

    async fn complete_current(
        &self,
        c: &mut Client,
        lease_id: &str,
        files: &[StagedFile],
        extracted: &ChunkEvidence,
        committed: &ChunkProof,
        facts: &ExtractFacts,
    ) -> Result<()> {
        let tx = self.begin_change(c).await?;
        let (key, _) = self.current(&tx, lease_id, true).await?;
        let proof = StoredProof::checked(&key, extracted, committed)?;
        let bytes = files.iter().map(|f| f.bytes).sum::<u64>() as i64;
        let now = self.now_us();
        self.update_chunk(
            &tx,
            &key,
            "UPDATE chunks SET state = 'committed', lease_worker = NULL, lease_expires_us = NULL,
                extracted_rows = $3, extracted_checksum = $4, committed_rows = $5, committed_checksum = $6,
                committed_bytes = $7, committed_at_us = $8, progress_rows = $3,
                last_error_class = NULL, last_error_kind = NULL, last_error = NULL,
                proof_level = $9, extracted_fingerprint = $10, committed_fingerprint = $11,
                dead_letters = $12
             WHERE job_id = $1 AND chunk_id = $2",
            &[
                int(&proof.extracted_rows),
                int(&proof.extracted_checksum),
                int(&proof.committed_rows),
                int(&proof.committed_checksum),
                int(&bytes),
                int(&now),
                text(&proof.level),
                text(&proof.extracted_fingerprint),
                text(&proof.committed_fingerprint),
                int(&(facts.dead_letters as i64)),
            ],
        )
        .await?;
        self.update_chunk(
            &tx,
            &key,
            "DELETE FROM outputs WHERE job_id = $1 AND chunk_id = $2",
            &[],
        )
        .await?;
        let attempt = i64::from(key.attempt);
        for (part, f) in files.iter().enumerate() {
            let (part, bytes, rows) = (part as i64, f.bytes as i64, f.rows as i64);
            self.update_chunk(
                &tx,
                &key,
                "INSERT INTO outputs (job_id, chunk_id, part, attempt, path, bytes, rows) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[int(&part), int(&attempt), text(&f.path), int(&bytes), int(&rows)],
            )
            .await?;
        }
        self.end_attempt(&tx, &key, now, "committed", None).await?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn split_on(&self, c: &mut Client, lease_id: &str, at: i64) -> Result<SplitOutcome> {
        let tx = self.begin_change(c).await?;
        let (key, _) = self.current(&tx, lease_id, false).await?;
        let chunk = key.chunk_id as i64;
        // The job's row lock serializes the numbering of new chunks (splits and extensions).
        tx.execute_typed("SELECT 1 FROM jobs WHERE job_id = $1 FOR UPDATE", &[text(&key.job_id)])
            .await
            .map_err(|e| self.err(e))?;
        let row = tx
            .query_typed_one(
                "SELECT range_from, range_to, estimated_rows, estimated_bytes,
                    (SELECT count(*) FROM attempts a WHERE a.job_id = $1 AND a.chunk_id = $2 AND a.attempt < $3
                       AND (a.outcome IS NULL OR a.outcome = 'expired')),
                    (SELECT min(t.chunk_id) FROM chunks t WHERE t.job_id = $1 AND t.split_from = $2 AND t.range_from = $4),
                    (SELECT coalesce(max(n.chunk_id) + 1, 0) FROM chunks n WHERE n.job_id = $1)
                 FROM chunks WHERE job_id = $1 AND chunk_id = $2",
                &[
                    text(&key.job_id),
                    int(&chunk),
                    int(&i64::from(key.attempt)),
                    int(&at),
                ],
            )
            .await
            .map_err(|e| self.err(e))?;
        let get = |i: usize| row.try_get::<_, i64>(i).map_err(|e| self.err(e));
        let tail_at: Option<i64> = row.try_get(5).map_err(|e| self.err(e))?;
        let facts = SplitFacts {
            range: CursorRange {
                from: get(0)?,
                to: get(1)?,
            },
            estimated_rows: get(2)? as u64,
            estimated_bytes: get(3)? as u64,
            earlier_lease_expired: get(4)? > 0,
            tail_at: tail_at.map(|id| id as u64),
        };
        let next = get(6)?;
        let outcome = match split::decide(&facts, at) {
            SplitStep::Answer(outcome) => outcome,
            SplitStep::Cut(cut) => {
                let (kept_rows, kept_bytes) = (cut.kept_rows as i64, cut.kept_bytes as i64);
                self.update_chunk(
                    &tx,
                    &key,
                    "UPDATE chunks SET range_to = $3, estimated_rows = $4, estimated_bytes = $5
                     WHERE job_id = $1 AND chunk_id = $2",
                    &[int(&cut.kept.to), int(&kept_rows), int(&kept_bytes)],
                )
                .await?;
                let (tail_rows, tail_bytes) = (cut.tail_rows as i64, cut.tail_bytes as i64);
                tx.execute_typed(
                    "INSERT INTO chunks (job_id, chunk_id, range_from, range_to, estimated_rows, estimated_bytes, state, split_from)
                     VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7)",
                    &[
                        text(&key.job_id),
                        int(&next),
                        int(&cut.tail.from),
                        int(&cut.tail.to),
                        int(&tail_rows),
                        int(&tail_bytes),
                        int(&chunk),
                    ],
                )
                .await
                .map_err(|e| self.err(e))?;
                SplitOutcome::Split {
                    kept: cut.kept,
                    new_chunk_id: next as u64,
                }
            }
        };
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(outcome)
    }

    async fn release_on(&self, c: &mut Client, lease_id: &str) -> Result<()> {
        let tx = self.begin_change(c).await?;
        let (key, _) = self.current(&tx, lease_id, true).await?;
        self.update_chunk(
            &tx,
            &key,
            "UPDATE chunks SET state = 'pending', lease_worker = NULL, lease_expires_us = NULL, progress_rows = 0, progress_bytes = 0
             WHERE job_id = $1 AND chunk_id = $2",
            &[],
        )
        .await?;
        self.end_attempt(&tx, &key, self.now_us(), "released", None).await?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn fail_on(&self, c: &mut Client, lease_id: &str, failure: &Failure, policy: &RetryPolicy) -> Result<bool> {
        let tx = self.begin_change(c).await?;
        let (key, failures) = self.current(&tx, lease_id, true).await?;
        let now = self.now_us();
        let next = policy.after_failure(failure.class, failures, &key, now);
        let (state, not_before) = (next.state.as_str(), next.not_before_us);
        let failures = i64::from(failures);
        self.update_chunk(
            &tx,
            &key,
            "UPDATE chunks SET state = $3, failures = $4, not_before_us = $5, lease_worker = NULL, lease_expires_us = NULL,
                last_error_class = $6, last_error_kind = $7, last_error = $8, progress_rows = 0, progress_bytes = 0
             WHERE job_id = $1 AND chunk_id = $2",
            &[
                text(&state),
                int(&failures),
                int(&not_before),
                text(&failure.class.as_str()),
                text(&failure.kind),
                text(&failure.message),
            ],
        )
        .await?;
        self.end_attempt(&tx, &key, now, "failed", Some(failure)).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(next.retries())
    }

    async fn cancel_on(&self, c: &mut Client, job_id: &str) -> Result<u64> {
        let tx = self.begin_change(c).await?;
        let now = self.now_us();
        let found = tx
            .execute_typed(
                "UPDATE jobs SET cancelled_at_us = coalesce(cancelled_at_us, $2) WHERE job_id = $1",
                &[text(&job_id), int(&now)],
            )
            .await
            .map_err(|e| self.err(e))?;
        if found == 0 {
            return Err(CoordinatorError::UnknownJob(job_id.into()));
        }
        // Chunk rows first, in plan order, as every other change locks a chunk before its
        // attempts: no lock cycle with a concurrent lease, completion or failure.
        tx.execute_typed(
            "SELECT chunk_id FROM chunks WHERE job_id = $1 AND state IN ('pending', 'leased') ORDER BY chunk_id FOR UPDATE",
            &[text(&job_id)],
        )
        .await
        .map_err(|e| self.err(e))?;
        tx.execute_typed(
            "UPDATE attempts SET ended_at_us = $2, outcome = 'cancelled' WHERE ended_at_us IS NULL AND job_id = $1",
            &[text(&job_id), int(&now)],
        )
        .await
        .map_err(|e| self.err(e))?;
        let n = tx
            .execute_typed(
                "UPDATE chunks SET state = 'cancelled', lease_worker = NULL, lease_expires_us = NULL
                 WHERE job_id = $1 AND state IN ('pending', 'leased')",
                &[text(&job_id)],
            )
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(n)
    }
}

#[tonic::async_trait]
impl StateStore for PgStore {
    fn describe(&self) -> String {
        self.pool.connector.shown.clone()
    }

    async fn submit(&self, job: JobRow, chunks: Vec<PlannedChunk>) -> Result<Submitted> {
        pooled!(self, SUBMIT_BUDGET, |c| self.submit_on(c, &job, &chunks))
    }

    async fn extend(&self, ext: Extension) -> Result<Vec<u64>> {
        pooled!(self, SUBMIT_BUDGET, |c| self.extend_on(c, &ext))
    }

    async fn job(&self, job_id: &str) -> Result<JobRow> {
        pooled!(self, CALL_BUDGET, |c| self.job_on(c, job_id))
    }

    async fn jobs(&self) -> Result<Vec<(JobRow, JobSummary)>> {
        pooled!(self, CALL_BUDGET, |c| self.jobs_on(c))
    }

    async fn summary(&self, job_id: &str) -> Result<JobSummary> {
        pooled!(self, CALL_BUDGET, |c| self.summary_on(c, job_id))
    }

    async fn chunks(&self, job_id: &str) -> Result<Vec<ChunkRow>> {
        pooled!(self, CALL_BUDGET, |c| self.chunks_on(c, job_id))
    }

    async fn attempts(&self, job_id: &str) -> Result<Vec<AttemptRow>> {
        pooled!(self, CALL_BUDGET, |c| self.attempts_on(c, job_id))
    }

    async fn lease(
        &self,
        worker_id: &str,
        job_filter: Option<&str>,
        ttl_ms: u32,
        policy: &RetryPolicy,
    ) -> Result<std::result::Result<Lease, NoLease>> {
        pooled!(self, CALL_BUDGET, |c| self
            .lease_on(c, worker_id, job_filter, ttl_ms, policy))
    }

    async fn heartbeat(&self, lease_id: &str, ttl_ms: u32) -> Result<()> {
        pooled!(self, CALL_BUDGET, |c| self.heartbeat_on(c, lease_id, ttl_ms))
    }

    async fn progress(&self, lease_id: &str, rows: u64, bytes: u64) -> Result<()> {
        pooled!(self, CALL_BUDGET, |c| self.progress_on(c, lease_id, rows, bytes))
    }

    async fn complete_with_facts(
        &self,
        lease_id: &str,
        files: Vec<StagedFile>,
        extracted: ChunkEvidence,
        committed: ChunkProof,
        facts: ExtractFacts,
    ) -> Result<()> {
        pooled!(self, CALL_BUDGET, |c| self
            .complete_on(c, lease_id, &files, &extracted, &committed, &facts))
    }

    async fn split(&self, lease_id: &str, at: i64) -> Result<SplitOutcome> {
        pooled!(self, CALL_BUDGET, |c| self.split_on(c, lease_id, at))
    }

    async fn release(&self, lease_id: &str) -> Result<()> {
        pooled!(self, CALL_BUDGET, |c| self.release_on(c, lease_id))
    }

    async fn fail(&self, lease_id: &str, failure: Failure, policy: RetryPolicy) -> Result<bool> {
        pooled!(self, CALL_BUDGET, |c| self.fail_on(c, lease_id, &failure, &policy))
    }

    async fn cancel(&self, job_id: &str) -> Result<u64> {
        pooled!(self, CALL_BUDGET, |c| self.cancel_on(c, job_id))
    }

    async fn ping(&self) -> Result<()> {
        // A coordinator that lost its state for good is unhealthy: a probe restarts it.
        if self.fence.as_ref().is_some_and(|f| f.is_lost()) {
            return Err(CoordinatorError::StateLockLost {
                url: self.pool.connector.shown.clone(),
            });
        }
        pooled!(self, CALL_BUDGET, |c| async {
            c.simple_query("SELECT 1").await.map(drop).map_err(|e| self.err(e))
        })
    }
}

/// Schedules in this store (the module lives with the other schedule code).
#[path = "schedule/pg.rs"]
mod schedules;

type RowResult<T> = std::result::Result<T, tokio_postgres::Error>;

fn summary_from_row(r: &Row, first: usize) -> RowResult<JobSummary> {
    let n = |i: usize| r.try_get::<_, i64>(first + i).map(|v| v as u64);
    Ok(JobSummary {
        chunks: n(0)?,
        pending: n(1)?,
        leased: n(2)?,
        committed: n(3)?,
        parked: n(4)?,
        committed_rows: n(5)?,
        committed_bytes: n(6)?,
        in_flight_rows: n(7)?,
        estimated_rows: n(8)?,
        cancelled: n(9)?,
        estimated_bytes: n(10)?,
        failures: n(11)?,
        dead_letters: n(12)?,
    })
}

impl StateRow for Row {
    type Error = tokio_postgres::Error;

    fn int(&self, i: usize) -> RowResult<i64> {
        self.try_get(i)
    }

    fn opt_int(&self, i: usize) -> RowResult<Option<i64>> {
        self.try_get(i)
    }

    fn text(&self, i: usize) -> RowResult<String> {
        self.try_get(i)
    }

    fn opt_text(&self, i: usize) -> RowResult<Option<String>> {
        self.try_get(i)
    }
}
