//! One API request with everything around it: the rate budget, the circuit breaker,
//! credentials, and retries by class. 429 and 5xx are retried with exponential backoff and
//! jitter, honouring `Retry-After`; timeouts and dropped connections likewise; 401/403 refresh
//! the credentials once, then fail permanently; other 4xx fail permanently at once.
//!
//! The class of the final error is its `backhaul_core::Error` variant: `Throttled` (429 after
//! the retries), `Unreachable` (5xx, timeouts, an open breaker: transient), `InvalidObject`
//! (4xx, refused credentials: permanent).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backhaul_core::ratelimit::{Budgets, RatePool};
use backhaul_core::{Error, Result};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

use crate::auth::Credentials;
use crate::breaker::{BreakerState, CircuitBreaker};

/// First retry's backoff; doubles per attempt.
const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest backoff between two attempts (a `Retry-After` may ask for longer).
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Characters of an error response's body kept in the message.
const BODY_IN_ERROR: usize = 200;

/// A request before credentials are added.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// GET, or POST when the window goes in the body.
    pub method: reqwest::Method,
    /// The full URL with its query.
    pub url: reqwest::Url,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// A JSON body.
    pub body: Option<String>,
}

impl Prepared {
    /// Adds a header.
    pub fn header(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.headers.push((name.into(), value.into()));
    }
}

/// A successful (2xx/3xx) response.
#[derive(Debug)]
pub struct Response {
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: String,
}

/// A reqwest error without the URL (its query may hold an API key): its kind and the chain
/// of its sources, which name no URL.
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut message = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_body() || e.is_decode() {
        "the response body could not be read".to_string()
    } else {
        "the HTTP exchange failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    message
}

/// The `Retry-After` of a response: seconds, or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(wait.max(0) as u64))
}

/// Sends requests of one source.
pub struct Caller {
    /// The HTTP client (timeouts set).
    pub http: reqwest::Client,
    /// The source's credentials.
    pub credentials: Credentials,
    /// Where permission for each request comes from.
    pub budgets: Budgets,
    /// The pool the spec names, if any.
    pub pool: Option<RatePool>,
    /// The source's breaker, shared by its chunks.
    pub breaker: Mutex<CircuitBreaker>,
    /// Retries per request.
    pub max_retries: u32,
    /// For messages: ``stream `customers` ``.
    pub stream: String,
    jitter_seed: AtomicU64,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("stream", &self.stream)
            .field("credentials", &self.credentials)
            .field("pool", &self.pool)
            .finish()
    }
}

impl Caller {
    /// A caller; see the fields.
    pub fn new(
        http: reqwest::Client,
        credentials: Credentials,
        budgets: Budgets,
        pool: Option<RatePool>,
        breaker: CircuitBreaker,
        max_retries: u32,
        stream: &str,
    ) -> Self {
        Caller {
            http,
            credentials,
            budgets,
            pool,
            breaker: Mutex::new(breaker),
            max_retries,
            stream: format!("stream `{stream}`"),
            jitter_seed: AtomicU64::new(0),
        }
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.lock().expect("breaker lock").state()
    }

    /// Exponential backoff with jitter (between half and all of the step) for `attempt`.
    fn backoff(&self, attempt: u32) -> Duration {
        let step = BASE_BACKOFF.saturating_mul(1u32 << attempt.min(16)).min(MAX_BACKOFF);
        let n = self.jitter_seed.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let noise = xxhash_rust::xxh3::xxh3_64(&[n.to_le_bytes(), u64::from(nanos).to_le_bytes()].concat());
        let share = 0.5 + (noise % 1_000) as f64 / 2_000.0;
        step.mul_f64(share)
    }

    fn failed(&self) {
        self.breaker.lock().expect("breaker lock").failure(Instant::now());
    }

    /// Sends `template` until it succeeds or fails for good.
    pub async fn send(&self, template: &Prepared) -> Result<Response> {
        let path = template.url.path().to_string();
        let mut refreshed = false;
        let mut attempt = 0u32;
        loop {
            if let Err(wait) = self.breaker.lock().expect("breaker lock").admit(Instant::now()) {
                return Err(Error::Unreachable {
                    system: self.stream.clone(),
                    message: format!(
                        "circuit breaker open for {}s more: the API kept failing",
                        wait.as_secs().max(1)
                    ),
                });
            }
            if let Some(pool) = &self.pool {
                self.budgets.current().acquire(pool).await?;
            }
            let mut req = template.clone();
            self.credentials.apply(&self.http, &mut req).await?;
            let mut builder = self.http.request(req.method.clone(), req.url.clone());
            for (name, value) in &req.headers {
                builder = builder.header(name, value);
            }
            if let Some(body) = &req.body {
                builder = builder.header("Content-Type", "application/json").body(body.clone());
            }
            let sent = match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    response.text().await.map(|body| (status, headers, body))
                }
                Err(e) => Err(e),
            };
            let (status, headers, body) = match sent {
                Ok(ok) => ok,
                Err(e) => {
                    self.failed();
                    if attempt >= self.max_retries {
                        return Err(Error::Unreachable {
                            system: self.stream.clone(),
                            message: format!("{path}: {} (after {} retries)", describe_reqwest(&e), attempt),
                        });
                    }
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                    continue;
                }
            };
            let code = status.as_u16();
            if code == 429 || status.is_server_error() {
                self.failed();
                let wait = retry_after(&headers);
                if code == 429
                    && let Some(pool) = &self.pool
                {
                    self.budgets.current().throttled(pool, wait);
                }
                if attempt >= self.max_retries {
                    let message = format!("HTTP {status} from {path} (after {attempt} retries)");
                    return Err(if code == 429 {
                        Error::Throttled {
                            system: self.stream.clone(),
                            message,
                        }
                    } else {
                        Error::Unreachable {
                            system: self.stream.clone(),
                            message,
                        }
                    });
                }
                tracing::debug!(stream = %self.stream, %status, attempt, ?wait, "retrying");
                tokio::time::sleep(wait.unwrap_or_else(|| self.backoff(attempt))).await;
                attempt += 1;
                continue;
            }
            self.breaker.lock().expect("breaker lock").success();
            if code == 401 || code == 403 {
                if !refreshed {
                    refreshed = true;
                    tracing::info!(stream = %self.stream, %status, "refreshing credentials once");
                    self.credentials.refresh(&self.http).await?;
                    continue;
                }
                return Err(Error::InvalidObject {
                    object: self.stream.clone(),
                    message: format!(
                        "HTTP {status} from {path} after refreshing the credentials once: credentials refused or expired"
                    ),
                });
            }
            if status.is_client_error() {
                let excerpt: String = body.chars().take(BODY_IN_ERROR).collect();
                return Err(Error::InvalidObject {
                    object: self.stream.clone(),
                    message: format!("HTTP {status} from {path}: {excerpt}"),
                });
            }
            return Ok(Response { headers, body });
        }
    }
}
