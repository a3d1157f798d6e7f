//! The cluster's rate-limit pools: one token bucket per pool name, from which every worker
//! leases request tokens in small batches (`LeaseTokens`), so all workers together keep the
//! pool's limit. The bucket arithmetic is core's [`TokenBucket`]; this module decides how a
//! pool's burst is split between the bucket and the lifetime of leased tokens, merges the
//! settings of jobs that name the same pool, and counts use for metrics and `status`.
//!
//! Pools live in memory: a restarted coordinator starts with full buckets, at the configured
//! rate, with the day's use at zero (docs/rate-limits.md).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backhaul_core::ratelimit::{RatePool, TokenBucket};
use backhaul_proto::v1 as pb;
use tracing::warn;

use crate::clock::Clock;

/// Longest a leased token stays good at the worker.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(1);

/// How a declared pool is served: the bucket the coordinator keeps, and how long a leased
/// token stays good. A token granted at `g` is spent in `[g, g + valid)` or dropped, so the
/// requests sent in any second were granted within `1 + valid` seconds, at most
/// `bucket_burst + rate × (1 + valid)`. With `valid = (burst − 1) / (2 × rate)` (at most
/// [`MAX_TOKEN_TTL`]) and `bucket_burst = ⌊burst − rate × valid⌋`, that is at most
/// `rate + burst`: the pool's promise, however many workers hold tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseTerms {
    /// The pool with the burst the coordinator's bucket holds.
    pub bucket: RatePool,
    /// How long a leased token stays good.
    pub valid: Duration,
}

impl LeaseTerms {
    /// The terms for `pool` (validated).
    pub fn of(pool: &RatePool) -> Self {
        let burst = f64::from(pool.burst);
        let rate = pool.requests_per_second;
        let valid = ((burst - 1.0) / (2.0 * rate)).clamp(0.0, MAX_TOKEN_TTL.as_secs_f64());
        // Rounded down to the millisecond the wire carries, so the bound holds as sent.
        let valid = Duration::from_millis((valid * 1000.0).floor() as u64);
        let bucket_burst = (burst - rate * valid.as_secs_f64()).floor().max(1.0) as u32;
        LeaseTerms {
            bucket: RatePool {
                burst: bucket_burst,
                ..pool.clone()
            },
            valid,
        }
    }
}

/// The strictest of two declarations of one pool: the lower rate, burst and daily cap.
pub fn strictest(a: &RatePool, b: &RatePool) -> RatePool {
    let daily_cap = match (a.daily_cap, b.daily_cap) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    RatePool {
        name: a.name.clone(),
        requests_per_second: a.requests_per_second.min(b.requests_per_second),
        burst: a.burst.min(b.burst),
        daily_cap,
    }
}

/// What one lease call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Tokens granted.
    pub granted: u32,
    /// How long they stay good.
    pub valid: Duration,
    /// When none were granted: how long to wait before asking again.
    pub wait: Duration,
    /// The daily cap is spent.
    pub daily_cap_spent: bool,
}

/// A pool's settings in force and its use since the coordinator started.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSnapshot {
    /// The strictest settings declared for the pool.
    pub declared: RatePool,
    /// The rate in force now.
    pub current_rate: f64,
    /// Tokens granted.
    pub tokens_granted: u64,
    /// Lease calls answered with nothing.
    pub waits: u64,
    /// 429s workers reported.
    pub throttled_reported: u64,
    /// Tokens granted in the current UTC day.
    pub daily_used: u64,
}

struct Pool {
    declared: RatePool,
    terms: LeaseTerms,
    bucket: TokenBucket,
    /// A conflicting declaration was logged already.
    warned: bool,
    tokens_granted: u64,
    waits: u64,
    throttled_reported: u64,
}

/// Every pool by name, created by the first lease naming it.
pub struct RatePools {
    clock: Arc<dyn Clock>,
    pools: Mutex<BTreeMap<String, Pool>>,
}

impl std::fmt::Debug for RatePools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.pools.lock().map(|p| p.len()).unwrap_or(0);
        f.debug_struct("RatePools").field("pools", &n).finish()
    }
}

impl RatePools {
    /// No pools yet; time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        RatePools {
            clock,
            pools: Mutex::new(BTreeMap::new()),
        }
    }

    fn now(&self) -> f64 {
        self.clock.now_us() as f64 / 1e6
    }

    /// Records `throttled` 429s (the longest `retry_after` among them) and takes up to `want`
    /// tokens from `pool` (validated by the caller), creating it on first use.
    pub fn lease(&self, pool: &RatePool, want: u32, throttled: u32, retry_after: Option<Duration>) -> Grant {
        let now = self.now();
        let mut pools = self.pools.lock().expect("rate pools lock");
        let entry = pools.entry(pool.name.clone()).or_insert_with(|| {
            let terms = LeaseTerms::of(pool);
            Pool {
                declared: pool.clone(),
                bucket: TokenBucket::new(&terms.bucket, now),
                terms,
                warned: false,
                tokens_granted: 0,
                waits: 0,
                throttled_reported: 0,
            }
        });
        if *pool != entry.declared {
            let merged = strictest(&entry.declared, pool);
            if !entry.warned {
                entry.warned = true;
                warn!(
                    pool = %pool.name,
                    in_force = ?entry.declared,
                    declared = ?pool,
                    using = ?merged,
                    "jobs declare one rate-limit pool with different settings; using the strictest of each"
                );
            }
            if merged != entry.declared {
                entry.terms = LeaseTerms::of(&merged);
                entry.bucket.reconfigure(&entry.terms.bucket, now);
                entry.declared = merged;
            }
        }
        if throttled > 0 {
            entry.throttled_reported += u64::from(throttled);
            entry.bucket.throttled(retry_after, now);
        }
        let want = want.clamp(1, entry.terms.bucket.burst);
        match entry.bucket.take(want, now) {
            Ok((0, wait)) => {
                entry.waits += 1;
                Grant {
                    granted: 0,
                    valid: entry.terms.valid,
                    wait,
                    daily_cap_spent: false,
                }
            }
            Ok((granted, _)) => {
                entry.tokens_granted += u64::from(granted);
                Grant {
                    granted,
                    valid: entry.terms.valid,
                    wait: Duration::ZERO,
                    daily_cap_spent: false,
                }
            }
            Err(_) => {
                entry.waits += 1;
                Grant {
                    granted: 0,
                    valid: entry.terms.valid,
                    wait: Duration::ZERO,
                    daily_cap_spent: true,
                }
            }
        }
    }

    /// Every pool, by name.
    pub fn snapshot(&self) -> Vec<PoolSnapshot> {
        let pools = self.pools.lock().expect("rate pools lock");
        pools
            .values()
            .map(|p| PoolSnapshot {
                declared: p.declared.clone(),
                current_rate: p.bucket.rate(),
                tokens_granted: p.tokens_granted,
                waits: p.waits,
                throttled_reported: p.throttled_reported,
                daily_used: p.bucket.used_today(),
            })
            .collect()
    }
}

impl RatePools {
    /// Answers a `LeaseTokens` call.
    pub fn lease_rpc(&self, r: pb::LeaseTokensRequest) -> Result<pb::LeaseTokensResponse, tonic::Status> {
        let pool = r
            .pool
            .as_ref()
            .map(RatePool::from)
            .ok_or_else(|| tonic::Status::invalid_argument("lease_tokens needs a pool"))?;
        pool.validate("<lease_tokens request>", "pool")
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let retry_after = (r.retry_after_ms > 0).then(|| Duration::from_millis(u64::from(r.retry_after_ms)));
        let grant = self.lease(&pool, r.want, r.throttled, retry_after);
        Ok(pb::LeaseTokensResponse {
            granted: grant.granted,
            valid_ms: millis(grant.valid),
            wait_ms: millis(grant.wait),
            daily_cap_spent: grant.daily_cap_spent,
        })
    }
}

fn millis(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

/// The wire status of a rate-limit pool.
pub fn pool_status(p: &PoolSnapshot) -> pb::PoolStatus {
    pb::PoolStatus {
        name: p.declared.name.clone(),
        configured_rate: p.declared.requests_per_second,
        burst: p.declared.burst,
        daily_cap: p.declared.daily_cap,
        current_rate: p.current_rate,
        tokens_granted: p.tokens_granted,
        waits: p.waits,
        throttled_reported: p.throttled_reported,
        daily_used: p.daily_used,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn pool(name: &str, rate: f64, burst: u32, cap: Option<u64>) -> RatePool {
        RatePool {
            name: name.into(),
            requests_per_second: rate,
            burst,
            daily_cap: cap,
        }
    }

    #[test]
    fn lease_terms_keep_rate_plus_burst_in_any_second() {
        for (rate, burst) in [(20.0, 10), (1.0, 1), (5.0, 100), (100.0, 3), (0.5, 2), (1000.0, 1000)] {
            let p = pool("p", rate, burst, None);
            let t = LeaseTerms::of(&p);
            assert!(t.bucket.burst >= 1 && t.valid <= MAX_TOKEN_TTL, "{t:?}");
            // What the bucket can grant in a window of 1 + valid seconds.
            let worst = f64::from(t.bucket.burst) + rate * (1.0 + t.valid.as_secs_f64());
            assert!(worst <= rate + f64::from(burst) + 1e-9, "{rate} {burst}: {worst}");
        }
        assert_eq!(
            LeaseTerms::of(&pool("p", 20.0, 10, None)).valid,
            Duration::from_millis(225)
        );
        assert_eq!(LeaseTerms::of(&pool("p", 20.0, 1, None)).valid, Duration::ZERO);
    }

    #[test]
    fn the_strictest_declaration_wins() {
        let a = pool("p", 10.0, 5, None);
        let b = pool("p", 20.0, 2, Some(100));
        assert_eq!(strictest(&a, &b), pool("p", 10.0, 2, Some(100)));
        assert_eq!(
            strictest(&b, &pool("p", 30.0, 9, Some(50))),
            pool("p", 20.0, 2, Some(50))
        );

        let clock = Arc::new(ManualClock::starting_now());
        let pools = RatePools::new(clock.clone());
        pools.lease(&a, 1, 0, None);
        pools.lease(&b, 1, 0, None);
        let snap = pools.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].declared, pool("p", 10.0, 2, Some(100)));
        assert_eq!(snap[0].tokens_granted, 2);
    }

    #[test]
    fn leases_follow_the_bucket_and_throttle_reports_slow_the_pool() {
        let clock = Arc::new(ManualClock::starting_now());
        let pools = RatePools::new(clock.clone());
        let p = pool("api", 20.0, 10, Some(1000));
        // Bucket burst 5 (= 10 − 20 × 0.225, rounded down), at most that per call.
        let g = pools.lease(&p, 100, 0, None);
        assert_eq!((g.granted, g.valid), (5, Duration::from_millis(225)));
        let g = pools.lease(&p, 1, 0, None);
        assert_eq!(g.granted, 0);
        assert_eq!(g.wait, Duration::from_millis(50));
        clock.advance(Duration::from_secs(1));
        assert_eq!(pools.lease(&p, 5, 0, None).granted, 5);
        // Two 429s with Retry-After 2 s: half the rate, closed for 2 s.
        let g = pools.lease(&p, 1, 2, Some(Duration::from_secs(2)));
        assert_eq!((g.granted, g.wait), (0, Duration::from_secs(2)));
        let s = &pools.snapshot()[0];
        assert_eq!(s.current_rate, 10.0);
        assert_eq!(
            (s.tokens_granted, s.waits, s.throttled_reported, s.daily_used),
            (10, 2, 2, 10)
        );
        clock.advance(Duration::from_secs(2));
        assert_eq!(pools.lease(&p, 1, 0, None).granted, 1);
    }

    #[test]
    fn a_spent_daily_cap_is_reported() {
        let clock = Arc::new(ManualClock::starting_now());
        let pools = RatePools::new(clock);
        let p = pool("capped", 100.0, 10, Some(3));
        assert_eq!(pools.lease(&p, 10, 0, None).granted, 3);
        let g = pools.lease(&p, 1, 0, None);
        assert!(g.daily_cap_spent && g.granted == 0, "{g:?}");
    }
}
