//! The worker's request budget: API sources on this worker draw request tokens from the
//! coordinator's rate-limit pools (`LeaseTokens`), so every worker of the cluster shares one
//! limit per pool (docs/rate-limits.md).
//!
//! Per pool the worker keeps a small stash of leased tokens. A call takes a small batch; the
//! first token goes to the caller that asked, the rest wait in the stash for the next callers
//! until they expire: a token is good for the `valid_ms` the coordinator sent, counted from
//! when this worker *sent* the lease request (never later than the grant), and is dropped
//! unspent after that. That expiry is what keeps the pool's bound (rate + burst in any second)
//! however many workers hold tokens; the coordinator sizes it (`coordinator::pools::LeaseTerms`).
//! One lease call per pool is in flight at a time; the others wait for its tokens. 429s are
//! counted here and reported with the next lease call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backhaul_core::ratelimit::{RatePool, RequestBudget};
use backhaul_core::{Error, Result};
use backhaul_proto::Client;
use backhaul_proto::v1 as pb;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tracing::warn;

/// Where lease calls go: the coordinator's client, or a stand-in in tests.
pub trait TokenLeaser: Send + Sync {
    /// One `LeaseTokens` call.
    fn lease(&self, req: pb::LeaseTokensRequest) -> BoxFuture<'_, Result<pb::LeaseTokensResponse, tonic::Status>>;
}

impl TokenLeaser for Client {
    fn lease(&self, req: pb::LeaseTokensRequest) -> BoxFuture<'_, Result<pb::LeaseTokensResponse, tonic::Status>> {
        let mut client = self.clone();
        Box::pin(async move { client.lease_tokens(req).await.map(|r| r.into_inner()) })
    }
}

/// Consecutive failed lease calls after which `acquire` fails (transient: the chunk retries).
const MAX_LEASE_FAILURES: u32 = 8;

/// Tokens one call asks for: a quarter of the burst or of a second's rate, at least one.
pub fn batch_size(pool: &RatePool) -> u32 {
    let quarter_second = (pool.requests_per_second * 0.25).ceil() as u32;
    (pool.burst / 4).min(quarter_second).max(1)
}

#[derive(Debug, Default)]
struct Stash {
    tokens: u32,
    expires: Option<Instant>,
    /// The validity the coordinator last sent; with none, extra tokens would only be dropped.
    valid: Option<Duration>,
    /// 429s not yet reported, and the longest Retry-After among them.
    throttled: u32,
    retry_after: Option<Duration>,
    /// No request before this (a Retry-After this worker was told).
    closed_until: Option<Instant>,
}

impl Stash {
    fn take_one(&mut self, now: Instant) -> bool {
        if self.tokens > 0 && self.expires.is_some_and(|e| now < e) {
            self.tokens -= 1;
            return true;
        }
        self.tokens = 0;
        false
    }
}

#[derive(Default)]
struct PoolStash {
    state: Mutex<Stash>,
    /// Held by the one caller leasing for the pool (and while it waits out a wait hint).
    leasing: tokio::sync::Mutex<()>,
}

impl PoolStash {
    fn lock(&self) -> std::sync::MutexGuard<'_, Stash> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A [`RequestBudget`] answered by the coordinator's rate-limit pools.
pub struct CoordinatorBudget {
    leaser: Arc<dyn TokenLeaser>,
    worker_id: String,
    pools: Mutex<HashMap<String, Arc<PoolStash>>>,
}

impl std::fmt::Debug for CoordinatorBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorBudget")
            .field("worker_id", &self.worker_id)
            .finish()
    }
}

impl CoordinatorBudget {
    /// Leases through `client`, naming `worker_id` in the calls.
    pub fn new(client: Client, worker_id: impl Into<String>) -> Self {
        Self::with_leaser(Arc::new(client), worker_id)
    }

    /// Leases through `leaser`.
    pub fn with_leaser(leaser: Arc<dyn TokenLeaser>, worker_id: impl Into<String>) -> Self {
        CoordinatorBudget {
            leaser,
            worker_id: worker_id.into(),
            pools: Mutex::new(HashMap::new()),
        }
    }

    fn stash(&self, pool: &RatePool) -> Arc<PoolStash> {
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(pool.name.clone())
            .or_default()
            .clone()
    }

    /// One lease call for `pool` by the caller holding its `leasing` turn: `Ok(true)` when a
    /// token was granted to the caller, `Ok(false)` after waiting out the wait hint.
    async fn lease_once(&self, pool: &RatePool, stash: &PoolStash) -> Result<bool, LeaseFailure> {
        let (req, reported) = {
            let s = stash.lock();
            let want = if s.valid == Some(Duration::ZERO) {
                1
            } else {
                batch_size(pool)
            };
            let req = pb::LeaseTokensRequest {
                worker_id: self.worker_id.clone(),
                pool: Some(pool.into()),
                want,
                throttled: s.throttled,
                retry_after_ms: s
                    .retry_after
                    .map_or(0, |d| d.as_millis().min(u128::from(u32::MAX)) as u32),
            };
            (req, (s.throttled, s.retry_after))
        };
        let sent = Instant::now();
        let resp = self.leaser.lease(req).await.map_err(LeaseFailure::Rpc)?;
        let valid = Duration::from_millis(u64::from(resp.valid_ms));
        {
            let mut s = stash.lock();
            // Reports sent are reported; those that came in meanwhile go with the next call.
            s.throttled -= reported.0.min(s.throttled);
            if s.retry_after == reported.1 {
                s.retry_after = None;
            }
            s.valid = Some(valid);
            if resp.granted > 0 {
                s.tokens = resp.granted - 1;
                s.expires = Some(sent + valid);
            }
        }
        if resp.daily_cap_spent {
            return Err(LeaseFailure::DailyCapSpent);
        }
        if resp.granted > 0 {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(u64::from(resp.wait_ms.max(1)))).await;
        Ok(false)
    }
}

enum LeaseFailure {
    Rpc(tonic::Status),
    DailyCapSpent,
}

impl RequestBudget for CoordinatorBudget {
    fn acquire<'a>(&'a self, pool: &'a RatePool) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let stash = self.stash(pool);
            let mut failures = 0u32;
            loop {
                let closed_until = {
                    let mut s = stash.lock();
                    if s.take_one(Instant::now()) {
                        return Ok(());
                    }
                    s.closed_until.filter(|&until| until > Instant::now())
                };
                if let Some(until) = closed_until {
                    tokio::time::sleep_until(until).await;
                    continue;
                }
                let _turn = stash.leasing.lock().await;
                // Whoever leased meanwhile may have left tokens.
                if stash.lock().take_one(Instant::now()) {
                    return Ok(());
                }
                match self.lease_once(pool, &stash).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => failures = 0,
                    Err(LeaseFailure::DailyCapSpent) => {
                        return Err(Error::Throttled {
                            system: format!("rate pool {}", pool.name),
                            message: "the pool's daily cap is spent".into(),
                        });
                    }
                    Err(LeaseFailure::Rpc(status)) => {
                        failures += 1;
                        if failures >= MAX_LEASE_FAILURES || status.code() == tonic::Code::InvalidArgument {
                            return Err(Error::Unreachable {
                                system: format!("coordinator (rate pool {})", pool.name),
                                message: status.message().to_string(),
                            });
                        }
                        let wait = crate::worker::backoff(failures);
                        warn!(pool = %pool.name, code = ?status.code(), retry_in = ?wait, "token lease failed; retrying");
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        })
    }

    fn throttled(&self, pool: &RatePool, retry_after: Option<Duration>) {
        let stash = self.stash(pool);
        let mut s = stash.lock();
        // The API is over its limit now: tokens on hand would only add to it.
        s.tokens = 0;
        s.throttled = s.throttled.saturating_add(1);
        if let Some(wait) = retry_after {
            s.retry_after = Some(s.retry_after.map_or(wait, |w| w.max(wait)));
            let until = Instant::now() + wait;
            s.closed_until = Some(s.closed_until.map_or(until, |u| u.max(until)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use backhaul_core::ErrorClass;

    use super::*;

    /// Grants what it is asked for (or what `grant` says), valid for `valid_ms`, and keeps the
    /// requests.
    struct Fake {
        valid_ms: u32,
        grant: Option<u32>,
        daily_cap_spent: bool,
        fail: bool,
        calls: Mutex<Vec<pb::LeaseTokensRequest>>,
        granted: AtomicU32,
        /// When each grant was made, and how many tokens it gave.
        grants: Mutex<Vec<(Instant, u32)>>,
    }

    impl Fake {
        fn new(valid_ms: u32) -> Self {
            Fake {
                valid_ms,
                grant: None,
                daily_cap_spent: false,
                fail: false,
                calls: Mutex::new(Vec::new()),
                granted: AtomicU32::new(0),
                grants: Mutex::new(Vec::new()),
            }
        }
        fn calls(&self) -> Vec<pb::LeaseTokensRequest> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl TokenLeaser for Fake {
        fn lease(&self, req: pb::LeaseTokensRequest) -> BoxFuture<'_, Result<pb::LeaseTokensResponse, tonic::Status>> {
            Box::pin(async move {
                self.calls.lock().unwrap().push(req.clone());
                if self.fail {
                    return Err(tonic::Status::unavailable("down"));
                }
                let granted = if self.daily_cap_spent {
                    0
                } else {
                    self.grant.unwrap_or(req.want)
                };
                self.granted.fetch_add(granted, Ordering::SeqCst);
                self.grants.lock().unwrap().push((Instant::now(), granted));
                Ok(pb::LeaseTokensResponse {
                    granted,
                    valid_ms: self.valid_ms,
                    wait_ms: 100,
                    daily_cap_spent: self.daily_cap_spent,
                })
            })
        }
    }

    fn pool() -> RatePool {
        RatePool {
            name: "api".into(),
            requests_per_second: 40.0,
            burst: 20,
            daily_cap: None,
        }
    }

    #[test]
    fn batches_are_small() {
        assert_eq!(batch_size(&pool()), 5);
        let slow = RatePool {
            requests_per_second: 1.0,
            burst: 1,
            ..pool()
        };
        assert_eq!(batch_size(&slow), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stashed_tokens_serve_later_calls_until_they_expire() {
        let fake = Arc::new(Fake::new(200));
        let budget = CoordinatorBudget::with_leaser(fake.clone(), "w");
        for _ in 0..5 {
            budget.acquire(&pool()).await.unwrap();
        }
        assert_eq!(fake.calls().len(), 1, "one batch of 5 served five requests");
        budget.acquire(&pool()).await.unwrap();
        assert_eq!(fake.calls().len(), 2);
        // Four tokens left; after their validity they are dropped, not spent.
        tokio::time::advance(Duration::from_millis(200)).await;
        budget.acquire(&pool()).await.unwrap();
        assert_eq!(fake.calls().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn no_token_is_spent_after_its_validity_however_many_callers() {
        // Four callers spend tokens at uneven times. Every spend falls inside the validity of
        // the latest grant before it, and no grant is spent more often than it gave tokens.
        let fake = Arc::new(Fake::new(150));
        let budget = Arc::new(CoordinatorBudget::with_leaser(fake.clone(), "w"));
        let spends = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..4u64 {
            let (budget, spends) = (budget.clone(), spends.clone());
            tasks.spawn(async move {
                for i in 0..25u64 {
                    budget.acquire(&pool()).await.unwrap();
                    spends.lock().unwrap().push(Instant::now());
                    tokio::time::sleep(Duration::from_millis(13 * (t + 1) + i % 7 * 11)).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let grants = fake.grants.lock().unwrap().clone();
        let spends = spends.lock().unwrap().clone();
        assert_eq!(spends.len(), 100);
        let mut used = vec![0u32; grants.len()];
        for s in &spends {
            let g = grants
                .iter()
                .rposition(|(at, _)| at <= s)
                .expect("a grant before the spend");
            assert!(*s < grants[g].0 + Duration::from_millis(150), "spent after expiry");
            used[g] += 1;
        }
        for (g, (_, granted)) in grants.iter().enumerate() {
            assert!(used[g] <= *granted, "grant {g}: {} of {granted}", used[g]);
        }
        // Slow callers let tokens expire: more were granted than spent.
        assert!(fake.granted.load(Ordering::SeqCst) > 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_drops_the_stash_waits_out_retry_after_and_is_reported() {
        let fake = Arc::new(Fake::new(1000));
        let budget = CoordinatorBudget::with_leaser(fake.clone(), "w");
        budget.acquire(&pool()).await.unwrap();
        budget.throttled(&pool(), Some(Duration::from_secs(2)));
        budget.throttled(&pool(), Some(Duration::from_secs(1)));
        let start = Instant::now();
        budget.acquire(&pool()).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(2), "{:?}", start.elapsed());
        let calls = fake.calls();
        assert_eq!(calls.len(), 2, "the stash was dropped");
        assert_eq!((calls[1].throttled, calls[1].retry_after_ms), (2, 2000));
        budget.acquire(&pool()).await.unwrap();
        budget.acquire(&pool()).await.unwrap();
        let calls = fake.calls();
        assert_eq!(calls.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_granted_means_waiting_the_hint() {
        let mut fake = Fake::new(1000);
        fake.grant = Some(0);
        let budget = CoordinatorBudget::with_leaser(Arc::new(fake), "w");
        let r = tokio::time::timeout(Duration::from_millis(950), budget.acquire(&pool())).await;
        assert!(r.is_err(), "still waiting");
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_cap_and_a_lost_coordinator_are_errors_by_class() {
        let mut fake = Fake::new(1000);
        fake.daily_cap_spent = true;
        let budget = CoordinatorBudget::with_leaser(Arc::new(fake), "w");
        let e = budget.acquire(&pool()).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Throttled, "{e}");

        let mut fake = Fake::new(1000);
        fake.fail = true;
        let fake = Arc::new(fake);
        let budget = CoordinatorBudget::with_leaser(fake.clone(), "w");
        let e = budget.acquire(&pool()).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Transient, "{e}");
        assert_eq!(fake.calls().len() as u32, MAX_LEASE_FAILURES);
    }
}
