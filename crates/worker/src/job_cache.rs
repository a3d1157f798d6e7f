//! Per-job contexts (source, destination, stage) built once and shared by every slot running
//! a chunk of the job.
//!
//! - **Built outside the map's lock.** Each job has its own `OnceCell`: slots of the same job
//!   wait for one build, slots of other jobs are never blocked by it (building connects to
//!   sources, destinations and stages, so it can take seconds).
//! - **Failures are not kept.** A build that fails leaves the cell empty; the next chunk of the
//!   job builds again (the failure may have been a network blip).
//! - **Idle jobs are evicted.** A job whose last running chunk ended more than `idle` ago is
//!   dropped at the next lookup, so a long-lived worker serving many jobs does not keep every
//!   job's connections and credentials forever. Time comes in as a parameter (tests move it).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// How long a job's context outlives its last running chunk.
pub const IDLE_EVICTION: Duration = Duration::from_secs(300);

/// Contexts of type `T` by job id; see the module docs.
pub struct JobCache<T> {
    entries: Arc<Mutex<HashMap<String, Entry<T>>>>,
    idle: Duration,
}

struct Entry<T> {
    cell: Arc<OnceCell<Arc<T>>>,
    /// Chunks holding this context now ([`InUse`] values alive).
    running: usize,
    /// When `running` last dropped to zero.
    idle_since: Instant,
}

/// A job's context lent to one running chunk; the job counts as running while it lives.
pub struct InUse<T> {
    value: Arc<T>,
    _claim: Claim<T>,
}

impl<T> std::ops::Deref for InUse<T> {
    type Target = Arc<T>;

    fn deref(&self) -> &Arc<T> {
        &self.value
    }
}

/// Counts one running chunk of a job until dropped.
struct Claim<T> {
    entries: Arc<Mutex<HashMap<String, Entry<T>>>>,
    job_id: String,
}

impl<T> Drop for Claim<T> {
    fn drop(&mut self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(&self.job_id) {
            entry.running = entry.running.saturating_sub(1);
            if entry.running == 0 {
                entry.idle_since = Instant::now();
            }
        }
    }
}

impl<T> JobCache<T> {
    /// A cache evicting jobs idle for longer than `idle`.
    pub fn new(idle: Duration) -> Self {
        JobCache {
            entries: Arc::new(Mutex::new(HashMap::new())),
            idle,
        }
    }

    /// The context of `job_id`, built by `build` unless it exists or is being built (then this
    /// waits for that build). `now` decides which idle jobs are evicted first.
    pub async fn get<E, F, Fut>(&self, job_id: &str, now: Instant, build: F) -> Result<InUse<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let idle = self.idle;
            entries.retain(|_, e| e.running > 0 || now.saturating_duration_since(e.idle_since) < idle);
            let entry = entries.entry(job_id.to_string()).or_insert_with(|| Entry {
                cell: Arc::new(OnceCell::new()),
                running: 0,
                idle_since: now,
            });
            entry.running += 1;
            entry.cell.clone()
        };
        // Claimed before the build, so the entry is not evicted while it is being built, and
        // released (by drop) however the build ends.
        let claim = Claim {
            entries: self.entries.clone(),
            job_id: job_id.to_string(),
        };
        let value = cell
            .get_or_try_init(|| async { build().await.map(Arc::new) })
            .await?
            .clone();
        Ok(InUse { value, _claim: claim })
    }

    /// Jobs cached now.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no job is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_slots_of_one_job_build_once_and_other_jobs_are_not_blocked() {
        let cache = Arc::new(JobCache::<String>::new(IDLE_EVICTION));
        let builds = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let mut slots = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (cache, builds, release) = (cache.clone(), builds.clone(), release.clone());
            slots.spawn(async move {
                let ctx = cache
                    .get("slow", Instant::now(), || async move {
                        builds.fetch_add(1, Ordering::SeqCst);
                        release.notified().await;
                        Ok::<_, String>("slow context".to_string())
                    })
                    .await
                    .unwrap();
                ctx.as_str().to_string()
            });
        }
        // While "slow" is being built, another job builds and is served.
        let other = cache
            .get("other", Instant::now(), || async {
                Ok::<_, String>("other".to_string())
            })
            .await
            .unwrap();
        assert_eq!(other.as_str(), "other");
        while builds.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        while let Some(got) = slots.join_next().await {
            assert_eq!(got.unwrap(), "slow context");
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1, "one build for eight slots");
    }

    #[tokio::test]
    async fn a_failed_build_is_not_kept() {
        let cache = JobCache::<String>::new(IDLE_EVICTION);
        let now = Instant::now();
        let failed = cache.get("j", now, || async { Err::<String, _>("unreachable") }).await;
        assert_eq!(failed.err(), Some("unreachable"));
        let built = cache
            .get("j", now, || async { Ok::<_, &str>("built".to_string()) })
            .await;
        assert_eq!(built.unwrap().as_str(), "built");
    }

    #[tokio::test]
    async fn jobs_idle_past_the_limit_are_evicted_but_never_while_a_chunk_runs() {
        let cache = JobCache::<u32>::new(Duration::from_secs(60));
        let start = Instant::now();
        let builds = AtomicUsize::new(0);
        let build = || async { Ok::<_, ()>(builds.fetch_add(1, Ordering::SeqCst) as u32) };
        let running = cache.get("busy", start, build).await.unwrap();
        drop(cache.get("idle", start, build).await.unwrap());
        assert_eq!(cache.len(), 2);
        // An hour later: "idle" ran nothing since and goes; "busy" still runs a chunk.
        let later = start + Duration::from_secs(3600);
        drop(cache.get("third", later, build).await.unwrap());
        let mut jobs: Vec<String> = cache.entries.lock().unwrap().keys().cloned().collect();
        jobs.sort();
        assert_eq!(jobs, ["busy", "third"]);
        // Within the limit a job's context is reused, not rebuilt.
        let again = cache.get("busy", later, build).await.unwrap();
        assert_eq!((**running, **again), (0, 0));
        assert_eq!(builds.load(Ordering::SeqCst), 3);
    }
}
