//! Request budgets: how API sources share one rate limit, whoever runs them.
//!
//! A source that calls a rate-limited API names a [`RatePool`] in its spec and asks a
//! [`RequestBudget`] for every request. Which budget answers is the process's choice, made once
//! through [`Budgets`]: a single-process run uses [`LocalBudget`] (a token bucket in memory); a
//! worker installs a budget that leases tokens from the coordinator, so every worker of the
//! cluster draws from the same pool. Sources never know which one they got.
//!
//! The bucket arithmetic ([`TokenBucket`]) lives here once and is used by both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A named rate limit, as a source's spec declares it. Jobs that name the same pool share it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatePool {
    /// Pool name, e.g. `stripe-acme`: the vendor account the limit belongs to.
    pub name: String,
    /// Sustained requests per second the pool allows.
    pub requests_per_second: f64,
    /// Requests that may go at once after a quiet spell (the bucket's capacity).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Requests allowed per UTC day, if the vendor caps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cap: Option<u64>,
}

fn default_burst() -> u32 {
    1
}

impl RatePool {
    /// Pure checks; errors name `origin` and `<key>.<field>` (e.g. `source.rate_limit`).
    pub fn validate(&self, origin: &str, key: &str) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::config(origin, format!("{key}.name"), "must not be empty"));
        }
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return Err(Error::config(
                origin,
                format!("{key}.requests_per_second"),
                format!("must be a positive number, got {}", self.requests_per_second),
            ));
        }
        if self.burst == 0 {
            return Err(Error::config(origin, format!("{key}.burst"), "must be at least 1"));
        }
        if self.daily_cap == Some(0) {
            return Err(Error::config(origin, format!("{key}.daily_cap"), "must be at least 1"));
        }
        Ok(())
    }
}

/// Where a source's requests get their permission.
pub trait RequestBudget: Send + Sync {
    /// Waits until one request under `pool` may be sent. Cancel-safe: dropping the future
    /// gives nothing back and takes nothing. Fails when the pool's daily cap is spent (the
    /// error is throttled: retry tomorrow).
    fn acquire<'a>(&'a self, pool: &'a RatePool) -> BoxFuture<'a, Result<()>>;

    /// The API answered 429 for a request under `pool`: the pool slows down, and if the server
    /// said `Retry-After`, nobody sends before it passes.
    fn throttled(&self, pool: &RatePool, retry_after: Option<Duration>);
}

/// The process's request budget, late bound: connector kinds get a handle when they are
/// registered, and the process installs the budget that fits how it runs (a worker: the
/// coordinator's pools). Until something is installed, a [`LocalBudget`] answers.
#[derive(Clone, Default)]
pub struct Budgets {
    installed: Arc<RwLock<Option<Arc<dyn RequestBudget>>>>,
    local: Arc<LocalBudget>,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let installed = self.installed.read().map(|b| b.is_some()).unwrap_or(false);
        f.debug_struct("Budgets").field("installed", &installed).finish()
    }
}

impl Budgets {
    /// Makes `budget` answer every later request of every source holding this handle.
    pub fn install(&self, budget: Arc<dyn RequestBudget>) {
        *self.installed.write().expect("budgets lock") = Some(budget);
    }

    /// The budget answering now.
    pub fn current(&self) -> Arc<dyn RequestBudget> {
        match self.installed.read().expect("budgets lock").as_ref() {
            Some(b) => b.clone(),
            None => self.local.clone(),
        }
    }
}

/// A token bucket with adaptive rate: the arithmetic every budget shares. Time is passed in
/// (seconds since any fixed origin), so it is pure and tests need no clock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// The configured rate, the ceiling the rate recovers to.
    configured_rate: f64,
    /// The rate in force now: lowered by 429s, recovering slowly.
    rate: f64,
    capacity: f64,
    tokens: f64,
    updated_at: f64,
    /// No token is handed out before this time (a server's `Retry-After`).
    closed_until: f64,
    daily_cap: Option<u64>,
    /// The UTC day `used_today` counts, as days since the epoch of the time origin.
    day: i64,
    used_today: u64,
    /// When the rate was last lowered: 429s within [`THROTTLE_COOLDOWN_SECONDS`] of it
    /// describe the same overload and lower it no further.
    throttled_at: f64,
}

/// The factor a 429 multiplies the rate by.
pub const THROTTLE_FACTOR: f64 = 0.5;
/// The rate never drops below this share of the configured one.
pub const MIN_RATE_SHARE: f64 = 0.05;
/// Seconds for a throttled rate to regain the configured one (linear recovery).
pub const RECOVERY_SECONDS: f64 = 60.0;
/// 429s this close together lower the rate once: requests already in flight when the first
/// one came back (often from several workers) report the same overload.
pub const THROTTLE_COOLDOWN_SECONDS: f64 = 1.0;

impl TokenBucket {
    /// A full bucket for `pool` at time `now`.
    pub fn new(pool: &RatePool, now: f64) -> Self {
        TokenBucket {
            configured_rate: pool.requests_per_second,
            rate: pool.requests_per_second,
            capacity: f64::from(pool.burst),
            tokens: f64::from(pool.burst),
            updated_at: now,
            closed_until: f64::NEG_INFINITY,
            daily_cap: pool.daily_cap,
            day: (now / 86_400.0).floor() as i64,
            used_today: 0,
            throttled_at: f64::NEG_INFINITY,
        }
    }

    /// Applies new settings for the pool at `now` without refilling it: the rate in force
    /// and the tokens on hand never rise above the new ceiling, and the day's use is kept.
    pub fn reconfigure(&mut self, pool: &RatePool, now: f64) {
        self.refill(now);
        self.configured_rate = pool.requests_per_second;
        self.rate = self.rate.min(self.configured_rate);
        self.capacity = f64::from(pool.burst);
        self.tokens = self.tokens.min(self.capacity);
        self.daily_cap = pool.daily_cap;
    }

    fn refill(&mut self, now: f64) {
        let elapsed = (now - self.updated_at).max(0.0);
        if self.rate < self.configured_rate {
            let step = self.configured_rate / RECOVERY_SECONDS * elapsed;
            self.rate = (self.rate + step).min(self.configured_rate);
        }
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.updated_at = now;
        let day = (now / 86_400.0).floor() as i64;
        if day != self.day {
            self.day = day;
            self.used_today = 0;
        }
    }

    /// Takes up to `want` tokens at `now`: how many were granted, and when none were, how long
    /// to wait before asking again. `Err` when the daily cap is spent.
    pub fn take(&mut self, want: u32, now: f64) -> std::result::Result<(u32, Duration), DailyCapSpent> {
        self.refill(now);
        if let Some(cap) = self.daily_cap
            && self.used_today >= cap
        {
            return Err(DailyCapSpent { cap });
        }
        if now < self.closed_until {
            return Ok((0, Duration::from_secs_f64(self.closed_until - now)));
        }
        let mut granted = (self.tokens.floor() as u64).min(u64::from(want));
        if let Some(cap) = self.daily_cap {
            granted = granted.min(cap - self.used_today);
        }
        if granted == 0 {
            let wait = (1.0 - self.tokens) / self.rate;
            return Ok((0, Duration::from_secs_f64(wait.max(0.001))));
        }
        self.tokens -= granted as f64;
        self.used_today += granted;
        Ok((granted as u32, Duration::ZERO))
    }

    /// A 429 at `now`: halve the rate (not below [`MIN_RATE_SHARE`]; once per
    /// [`THROTTLE_COOLDOWN_SECONDS`]), drop the tokens on hand, and close until `retry_after`
    /// has passed.
    pub fn throttled(&mut self, retry_after: Option<Duration>, now: f64) {
        self.refill(now);
        if now - self.throttled_at >= THROTTLE_COOLDOWN_SECONDS {
            self.rate = (self.rate * THROTTLE_FACTOR).max(self.configured_rate * MIN_RATE_SHARE);
            self.throttled_at = now;
        }
        self.tokens = 0.0;
        if let Some(wait) = retry_after {
            self.closed_until = self.closed_until.max(now + wait.as_secs_f64());
        }
    }

    /// The rate in force (requests per second).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Requests granted in the current UTC day.
    pub fn used_today(&self) -> u64 {
        self.used_today
    }
}

/// A pool's daily cap is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyCapSpent {
    /// The cap.
    pub cap: u64,
}

/// The budget of a single process: one [`TokenBucket`] per pool name, in memory. Uses tokio's
/// clock, so tests with paused time run instantly.
#[derive(Debug, Default)]
pub struct LocalBudget {
    pools: Mutex<HashMap<String, TokenBucket>>,
    origin: std::sync::OnceLock<(tokio::time::Instant, f64)>,
}

impl LocalBudget {
    /// Seconds since the Unix epoch by tokio's clock (so the daily cap resets at UTC midnight
    /// and paused time advances it).
    fn now(&self) -> f64 {
        let (start, epoch) = self.origin.get_or_init(|| {
            let epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            (tokio::time::Instant::now(), epoch)
        });
        epoch + start.elapsed().as_secs_f64()
    }

    fn with_bucket<T>(&self, pool: &RatePool, f: impl FnOnce(&mut TokenBucket, f64) -> T) -> T {
        let now = self.now();
        let mut pools = self.pools.lock().expect("budget lock");
        let bucket = pools
            .entry(pool.name.clone())
            .or_insert_with(|| TokenBucket::new(pool, now));
        f(bucket, now)
    }
}

impl RequestBudget for LocalBudget {
    fn acquire<'a>(&'a self, pool: &'a RatePool) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            loop {
                match self.with_bucket(pool, |b, now| b.take(1, now)) {
                    Ok((1, _)) => return Ok(()),
                    Ok((_, wait)) => tokio::time::sleep(wait).await,
                    Err(spent) => {
                        return Err(Error::Throttled {
                            system: format!("rate pool {}", pool.name),
                            message: format!("daily cap of {} requests spent", spent.cap),
                        });
                    }
                }
            }
        })
    }

    fn throttled(&self, pool: &RatePool, retry_after: Option<Duration>) {
        self.with_bucket(pool, |b, now| b.throttled(retry_after, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(rate: f64, burst: u32, cap: Option<u64>) -> RatePool {
        RatePool {
            name: "p".into(),
            requests_per_second: rate,
            burst,
            daily_cap: cap,
        }
    }

    #[test]
    fn a_bucket_grants_its_burst_then_its_rate() {
        let mut b = TokenBucket::new(&pool(10.0, 5, None), 0.0);
        assert_eq!(b.take(8, 0.0).unwrap().0, 5);
        let (granted, wait) = b.take(1, 0.0).unwrap();
        assert_eq!(granted, 0);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // One second later: ten more, never above the burst.
        assert_eq!(b.take(100, 1.0).unwrap().0, 5);
        let mut total = 0;
        for step in 1..=100 {
            total += b.take(100, 1.0 + f64::from(step) * 0.1).unwrap().0;
        }
        assert_eq!(total, 100);
    }

    #[test]
    fn a_429_halves_the_rate_closes_for_retry_after_and_recovers_slowly() {
        let mut b = TokenBucket::new(&pool(10.0, 1, None), 0.0);
        b.throttled(Some(Duration::from_secs(2)), 0.0);
        assert_eq!(b.rate(), 5.0);
        // 429s of the same overload lower it once.
        b.throttled(None, 0.5);
        assert!((b.rate() - (5.0 + 10.0 / RECOVERY_SECONDS * 0.5)).abs() < 1e-9);
        let (granted, wait) = b.take(1, 1.0).unwrap();
        assert_eq!(granted, 0);
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-9);
        for step in 0..20 {
            b.throttled(None, 1.0 + f64::from(step) * THROTTLE_COOLDOWN_SECONDS);
        }
        let floor = 10.0 * MIN_RATE_SHARE;
        assert!((b.rate() - floor).abs() < 0.2, "{}", b.rate());
        b.take(0, 21.0 + RECOVERY_SECONDS).unwrap();
        assert_eq!(b.rate(), 10.0);
    }

    #[test]
    fn reconfiguring_lowers_the_ceiling_and_keeps_the_days_use() {
        let mut b = TokenBucket::new(&pool(10.0, 8, Some(100)), 0.0);
        assert_eq!(b.take(2, 0.0).unwrap().0, 2);
        b.reconfigure(&pool(4.0, 3, Some(50)), 0.0);
        assert_eq!(b.take(10, 0.0).unwrap().0, 3);
        assert_eq!(b.rate(), 4.0);
        assert_eq!(b.used_today(), 5);
        assert_eq!(b.take(10, 10.0).unwrap().0, 3, "capacity is the new burst");
    }

    #[test]
    fn the_daily_cap_resets_at_utc_midnight() {
        let day = 86_400.0;
        let mut b = TokenBucket::new(&pool(1000.0, 10, Some(3)), 5.0 * day);
        assert_eq!(b.take(10, 5.0 * day).unwrap().0, 3);
        assert_eq!(b.take(1, 5.0 * day + 10.0), Err(DailyCapSpent { cap: 3 }));
        assert_eq!(b.take(1, 6.0 * day).unwrap().0, 1);
    }

    #[test]
    fn validation_names_the_key() {
        let e = pool(0.0, 1, None)
            .validate("job.toml", "source.rate_limit")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("job.toml: source.rate_limit.requests_per_second: must be a positive number"),
            "{e}"
        );
        assert!(pool(1.0, 0, None).validate("f", "k").is_err());
        pool(1.0, 1, Some(5)).validate("f", "k").unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_local_budget_paces_requests_and_an_installed_one_replaces_it() {
        let budgets = Budgets::default();
        let p = pool(4.0, 2, None);
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            budgets.current().acquire(&p).await.unwrap();
        }
        // 2 at once, then 8 at 4/s.
        let took = start.elapsed().as_secs_f64();
        assert!((took - 2.0).abs() < 0.01, "{took}");

        struct Refusing;
        impl RequestBudget for Refusing {
            fn acquire<'a>(&'a self, _: &'a RatePool) -> BoxFuture<'a, Result<()>> {
                Box::pin(async { Err(Error::Cancelled) })
            }
            fn throttled(&self, _: &RatePool, _: Option<Duration>) {}
        }
        budgets.install(Arc::new(Refusing));
        assert!(budgets.current().acquire(&p).await.is_err());
    }
}
