//! The coordinator's durable state behind one trait, so the same service runs on the embedded
//! SQLite store (the default, [`Store`]) or on a database server that survives losing the
//! coordinator's disk (PostgreSQL, same schema; selected by a `postgres://` state URL).
//!
//! Every method is one atomic state change or one consistent read; the fencing rules (lease
//! ids are `job/chunk/attempt`, only the current attempt may act) are the backend's contract.

use std::sync::Arc;

use backhaul_core::chunking::PlannedChunk;
use backhaul_core::connector::{ExtractFacts, StagedFile};
use backhaul_core::proof::{ChunkEvidence, ChunkProof};

use crate::error::{CoordinatorError, Result};
use crate::pg_store::PgStore;
use crate::schedule::ScheduleStore;
use crate::service::RetryPolicy;
use crate::split::SplitOutcome;
use crate::store::{AttemptRow, ChunkRow, Extension, Failure, JobRow, JobSummary, Lease, NoLease, Store, Submitted};

/// Durable jobs, chunks, attempts and leases (and schedules: [`ScheduleStore`]).
#[tonic::async_trait]
pub trait StateStore: ScheduleStore + Send + Sync + 'static {
    /// Names the store in logs and errors (a path, or a URL without its password).
    fn describe(&self) -> String;
    /// Stores a new job with its chunks, or confirms an identical one exists.
    async fn submit(&self, job: JobRow, chunks: Vec<PlannedChunk>) -> Result<Submitted>;
    /// Extends a sync job's range ([`Extension`]): new chunks get the next chunk ids, earlier
    /// chunks and their ids are untouched. Returns the new chunk ids.
    async fn extend(&self, ext: Extension) -> Result<Vec<u64>>;
    /// A job by id.
    async fn job(&self, job_id: &str) -> Result<JobRow>;
    /// Every job with its summary, oldest first.
    async fn jobs(&self) -> Result<Vec<(JobRow, JobSummary)>>;
    /// Counts and totals of a job.
    async fn summary(&self, job_id: &str) -> Result<JobSummary>;
    /// All chunks of a job, in plan order.
    async fn chunks(&self, job_id: &str) -> Result<Vec<ChunkRow>>;
    /// Every attempt of a job, in chunk and attempt order.
    async fn attempts(&self, job_id: &str) -> Result<Vec<AttemptRow>>;
    /// Hands out the next runnable chunk, expiring dead leases first: each expired lease
    /// counts as a failure of its chunk under `policy` (see [`crate::store::Failure::worker_lost`]).
    async fn lease(
        &self,
        worker_id: &str,
        job_filter: Option<&str>,
        ttl_ms: u32,
        policy: &RetryPolicy,
    ) -> Result<std::result::Result<Lease, NoLease>>;
    /// Hands out up to `max` runnable chunks (at least one), each exactly as [`lease`] would:
    /// its own attempt, lease id and TTL. The default leases one at a time; a backend that
    /// can take several in one atomic change should.
    ///
    /// [`lease`]: StateStore::lease
    async fn lease_many(
        &self,
        worker_id: &str,
        job_filter: Option<&str>,
        ttl_ms: u32,
        max: u32,
        policy: &RetryPolicy,
    ) -> Result<std::result::Result<Vec<Lease>, NoLease>> {
        let mut leases = Vec::new();
        while leases.len() < max.max(1) as usize {
            match self.lease(worker_id, job_filter, ttl_ms, policy).await {
                Ok(Ok(lease)) => leases.push(lease),
                Ok(Err(none)) if leases.is_empty() => return Ok(Err(none)),
                Err(e) if leases.is_empty() => return Err(e),
                // The leases taken so far are durable and must reach the worker; the rest can
                // be asked for again.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        Ok(Ok(leases))
    }
    /// Extends a lease.
    async fn heartbeat(&self, lease_id: &str, ttl_ms: u32) -> Result<()>;
    /// Records progress of a running chunk.
    async fn progress(&self, lease_id: &str, rows: u64, bytes: u64) -> Result<()>;
    /// Marks a chunk committed with its output manifest and proof; refuses a stale lease and
    /// a proof that fails [`ChunkProof::check`] against `extracted`.
    async fn complete(
        &self,
        lease_id: &str,
        files: Vec<StagedFile>,
        extracted: ChunkEvidence,
        committed: ChunkProof,
    ) -> Result<()> {
        self.complete_with_facts(lease_id, files, extracted, committed, ExtractFacts::default())
            .await
    }
    /// [`StateStore::complete`], storing also what the source noted while extracting the
    /// chunk (its dead letters).
    async fn complete_with_facts(
        &self,
        lease_id: &str,
        files: Vec<StagedFile>,
        extracted: ChunkEvidence,
        committed: ChunkProof,
        facts: ExtractFacts,
    ) -> Result<()>;
    /// Cuts the tail `[at, to)` off the running chunk of `lease_id` into a new pending chunk
    /// ([`crate::split::decide`] decides); asking again with the same `at` gets the same
    /// answer. Refuses a stale lease.
    async fn split(&self, lease_id: &str, at: i64) -> Result<SplitOutcome>;
    /// Hands a leased chunk back without counting a failure.
    async fn release(&self, lease_id: &str) -> Result<()>;
    /// Records a failure; returns whether the chunk will be retried.
    async fn fail(&self, lease_id: &str, failure: Failure, policy: RetryPolicy) -> Result<bool>;
    /// Cancels a job; returns the chunks cancelled.
    async fn cancel(&self, job_id: &str) -> Result<u64>;
    /// Checks the store answers (health probes).
    async fn ping(&self) -> Result<()>;
}

#[tonic::async_trait]
impl StateStore for Store {
    fn describe(&self) -> String {
        self.path().to_string()
    }

    async fn submit(&self, job: JobRow, chunks: Vec<PlannedChunk>) -> Result<Submitted> {
        self.call(move |s, c| s.submit(c, &job, &chunks)).await
    }

    async fn extend(&self, ext: Extension) -> Result<Vec<u64>> {
        self.call(move |s, c| s.extend(c, &ext)).await
    }

    async fn job(&self, job_id: &str) -> Result<JobRow> {
        let id = job_id.to_string();
        self.call(move |s, c| s.job(c, &id)).await
    }

    async fn jobs(&self) -> Result<Vec<(JobRow, JobSummary)>> {
        self.call(|s, c| {
            let mut out = Vec::new();
            for job in s.jobs(c)? {
                let summary = s.summary(c, &job.job_id)?;
                out.push((job, summary));
            }
            Ok(out)
        })
        .await
    }

    async fn summary(&self, job_id: &str) -> Result<JobSummary> {
        let id = job_id.to_string();
        self.call(move |s, c| s.summary(c, &id)).await
    }

    async fn chunks(&self, job_id: &str) -> Result<Vec<ChunkRow>> {
        let id = job_id.to_string();
        self.call(move |s, c| s.chunks(c, &id)).await
    }

    async fn attempts(&self, job_id: &str) -> Result<Vec<AttemptRow>> {
        let id = job_id.to_string();
        self.call(move |s, c| s.attempts(c, &id)).await
    }

    async fn lease(
        &self,
        worker_id: &str,
        job_filter: Option<&str>,
        ttl_ms: u32,
        policy: &RetryPolicy,
    ) -> Result<std::result::Result<Lease, NoLease>> {
        let (worker, filter, policy) = (worker_id.to_string(), job_filter.map(str::to_string), policy.clone());
        self.call(move |s, c| s.lease(c, &worker, filter.as_deref(), ttl_ms, &policy))
            .await
    }

    async fn lease_many(
        &self,
        worker_id: &str,
        job_filter: Option<&str>,
        ttl_ms: u32,
        max: u32,
        policy: &RetryPolicy,
    ) -> Result<std::result::Result<Vec<Lease>, NoLease>> {
        let (worker, filter, policy) = (worker_id.to_string(), job_filter.map(str::to_string), policy.clone());
        self.call(move |s, c| s.lease_many(c, &worker, filter.as_deref(), ttl_ms, max as usize, &policy))
            .await
    }

    async fn heartbeat(&self, lease_id: &str, ttl_ms: u32) -> Result<()> {
        let id = lease_id.to_string();
        self.call(move |s, c| s.heartbeat(c, &id, ttl_ms)).await
    }

    async fn progress(&self, lease_id: &str, rows: u64, bytes: u64) -> Result<()> {
        let id = lease_id.to_string();
        self.call(move |s, c| s.progress(c, &id, rows, bytes)).await
    }

    async fn complete_with_facts(
        &self,
        lease_id: &str,
        files: Vec<StagedFile>,
        extracted: ChunkEvidence,
        committed: ChunkProof,
        facts: ExtractFacts,
    ) -> Result<()> {
        let id = lease_id.to_string();
        self.call(move |s, c| s.complete(c, &id, &files, &extracted, &committed, &facts))
            .await
    }

    async fn split(&self, lease_id: &str, at: i64) -> Result<SplitOutcome> {
        let id = lease_id.to_string();
        self.call(move |s, c| s.split(c, &id, at)).await
    }

    async fn release(&self, lease_id: &str) -> Result<()> {
        let id = lease_id.to_string();
        self.call(move |s, c| s.release(c, &id)).await
    }

    async fn fail(&self, lease_id: &str, failure: Failure, policy: RetryPolicy) -> Result<bool> {
        let id = lease_id.to_string();
        self.call(move |s, c| s.fail(c, &id, &failure, &policy)).await
    }

    async fn cancel(&self, job_id: &str) -> Result<u64> {
        let id = job_id.to_string();
        self.call(move |s, c| s.cancel(c, &id)).await
    }

    async fn ping(&self) -> Result<()> {
        self.call(|s, c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(drop)
                .map_err(|e| CoordinatorError::Database {
                    path: s.path().to_string(),
                    source: e,
                })
        })
        .await
    }
}

/// Where coordinator state lives: a SQLite file path, or a `postgres://` URL.
///
/// `Debug` shows a URL without its password.
#[derive(Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// The embedded store at this path.
    File(std::path::PathBuf),
    /// A PostgreSQL database (same schema).
    Postgres(String),
}

impl std::fmt::Debug for StateLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateLocation::File(path) => f.debug_tuple("File").field(path).finish(),
            StateLocation::Postgres(_) => f.debug_tuple("Postgres").field(&self.describe()).finish(),
        }
    }
}

impl StateLocation {
    /// Reads `--state`: `postgres://` or `postgresql://` URLs select PostgreSQL, anything else
    /// is a file path.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            StateLocation::Postgres(text.to_string())
        } else {
            StateLocation::File(text.into())
        }
    }

    /// Opens the store for serving leases, refusing when another process serves it: a file
    /// is locked (`<path>.lock`), a PostgreSQL database holds a serving lock per schema.
    /// `password` fills in a PostgreSQL URL without one; files ignore it.
    pub async fn open_serving(&self, password: Option<String>) -> Result<Arc<dyn StateStore>> {
        match self {
            StateLocation::File(path) => Ok(Arc::new(Store::open_exclusive(path)?)),
            StateLocation::Postgres(url) => Ok(Arc::new(PgStore::open_serving(url, password).await?)),
        }
    }

    /// Opens the store for reading (`status`, `verify`), without any lock.
    pub async fn open_reading(&self, password: Option<String>) -> Result<Arc<dyn StateStore>> {
        match self {
            StateLocation::File(path) => Ok(Arc::new(Store::open(path)?)),
            StateLocation::Postgres(url) => Ok(Arc::new(PgStore::open(url, password).await?)),
        }
    }

    /// Names the location in messages: the path, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            StateLocation::File(path) => path.display().to_string(),
            StateLocation::Postgres(url) => crate::pg_connect::without_password(url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that leaves `lease_many` to the trait's default.
    struct OneByOne(Store);

    #[tonic::async_trait]
    impl StateStore for OneByOne {
        fn describe(&self) -> String {
            self.0.describe()
        }
        async fn submit(&self, job: JobRow, chunks: Vec<PlannedChunk>) -> Result<Submitted> {
            StateStore::submit(&self.0, job, chunks).await
        }
        async fn extend(&self, ext: Extension) -> Result<Vec<u64>> {
            StateStore::extend(&self.0, ext).await
        }
        async fn job(&self, job_id: &str) -> Result<JobRow> {
            StateStore::job(&self.0, job_id).await
        }
        async fn jobs(&self) -> Result<Vec<(JobRow, JobSummary)>> {
            StateStore::jobs(&self.0).await
        }
        async fn summary(&self, job_id: &str) -> Result<JobSummary> {
            StateStore::summary(&self.0, job_id).await
        }
        async fn chunks(&self, job_id: &str) -> Result<Vec<ChunkRow>> {
            StateStore::chunks(&self.0, job_id).await
        }
        async fn attempts(&self, job_id: &str) -> Result<Vec<AttemptRow>> {
            StateStore::attempts(&self.0, job_id).await
        }
        async fn lease(
            &self,
            worker_id: &str,
            job_filter: Option<&str>,
            ttl_ms: u32,
            policy: &RetryPolicy,
        ) -> Result<std::result::Result<Lease, NoLease>> {
            StateStore::lease(&self.0, worker_id, job_filter, ttl_ms, policy).await
        }
        async fn heartbeat(&self, lease_id: &str, ttl_ms: u32) -> Result<()> {
            StateStore::heartbeat(&self.0, lease_id, ttl_ms).await
        }
        async fn progress(&self, lease_id: &str, rows: u64, bytes: u64) -> Result<()> {
            StateStore::progress(&self.0, lease_id, rows, bytes).await
        }
        async fn complete_with_facts(
            &self,
            lease_id: &str,
            files: Vec<StagedFile>,
            extracted: ChunkEvidence,
            committed: ChunkProof,
            facts: ExtractFacts,
        ) -> Result<()> {
            StateStore::complete_with_facts(&self.0, lease_id, files, extracted, committed, facts).await
        }
        async fn split(&self, lease_id: &str, at: i64) -> Result<SplitOutcome> {
            StateStore::split(&self.0, lease_id, at).await
        }
        async fn release(&self, lease_id: &str) -> Result<()> {
            StateStore::release(&self.0, lease_id).await
        }
        async fn fail(&self, lease_id: &str, failure: Failure, policy: RetryPolicy) -> Result<bool> {
            StateStore::fail(&self.0, lease_id, failure, policy).await
        }
        async fn cancel(&self, job_id: &str) -> Result<u64> {
            StateStore::cancel(&self.0, job_id).await
        }
        async fn ping(&self) -> Result<()> {
            StateStore::ping(&self.0).await
        }
    }

    #[tonic::async_trait]
    impl ScheduleStore for OneByOne {
        async fn add_schedule(&self, s: crate::schedule::ScheduleRow) -> Result<Submitted> {
            self.0.add_schedule(s).await
        }
        async fn schedules(&self) -> Result<Vec<crate::schedule::ScheduleRow>> {
            self.0.schedules().await
        }
        async fn schedule(&self, name: &str) -> Result<crate::schedule::ScheduleRow> {
            self.0.schedule(name).await
        }
        async fn set_schedule_paused(&self, name: &str, paused: bool, now_us: i64) -> Result<()> {
            self.0.set_schedule_paused(name, paused, now_us).await
        }
        async fn request_run(&self, name: &str) -> Result<()> {
            self.0.request_run(name).await
        }
        async fn record_fire(&self, name: &str, fired_us: i64, job_id: &str) -> Result<()> {
            self.0.record_fire(name, fired_us, job_id).await
        }
        async fn record_skip(&self, name: &str, at_us: i64) -> Result<()> {
            self.0.record_skip(name, at_us).await
        }
        async fn remove_schedule(&self, name: &str) -> Result<()> {
            self.0.remove_schedule(name).await
        }
    }

    #[tokio::test]
    async fn default_lease_many_leases_one_by_one_until_none_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = OneByOne(Store::open(&dir.path().join("state.db")).unwrap());
        let (job, planned) = crate::store::tests::job_with_chunks(dir.path(), 3);
        store.submit(job, planned).await.unwrap();
        let policy = RetryPolicy::default();
        let leases = store
            .lease_many("w", Some("j"), 60_000, 2, &policy)
            .await
            .unwrap()
            .unwrap();
        let got: Vec<(u64, u32)> = leases.iter().map(|l| (l.chunk.chunk_id, l.chunk.attempt)).collect();
        assert_eq!(got, [(0, 1), (1, 1)]);
        let rest = store
            .lease_many("w", Some("j"), 60_000, 5, &policy)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest.len(), 1, "stops at the first \"no lease\"");
        assert!(matches!(
            store.lease_many("w", Some("j"), 60_000, 5, &policy).await.unwrap(),
            Err(NoLease::RetryAfterMs(_))
        ));
        for l in leases.iter().chain(&rest) {
            let (evidence, proof) = crate::store::tests::proven(10, 1);
            store.complete(&l.lease_id, vec![], evidence, proof).await.unwrap();
        }
        assert!(matches!(
            store.lease_many("w", None, 60_000, 5, &policy).await.unwrap(),
            Err(NoLease::Finished)
        ));
    }

    #[test]
    fn state_urls_select_the_backend() {
        assert!(matches!(
            StateLocation::parse("postgres://u@h/db"),
            StateLocation::Postgres(_)
        ));
        assert!(matches!(
            StateLocation::parse("postgresql://h/db"),
            StateLocation::Postgres(_)
        ));
        assert_eq!(
            StateLocation::parse(".backhaul/state.db"),
            StateLocation::File(".backhaul/state.db".into())
        );
        let secret = StateLocation::parse("postgres://u:s3cret@h/db");
        assert_eq!(secret.describe(), "postgres://u@h/db");
        assert!(!format!("{secret:?}").contains("s3cret"));
    }
}
