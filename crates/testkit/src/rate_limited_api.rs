//! A rate-limited REST API for tests of API sources and rate-limit pools: no third-party
//! server enforces rate limits here, so this one does, as the referee.
//!
//! - `GET /v1/items?created[gte]=A&created[lt]=B&limit=N&starting_after=ID` lists items like
//!   Stripe does: newest first, `{"data": [...], "has_more": bool}`, each item
//!   `{"id", "created" (Unix seconds), "amount"}`; `starting_after` continues after that id,
//!   and an id outside the window is a 400 (`resource_missing`).
//! - Rate limit by its own sliding window (not backhaul's token bucket): a request arriving
//!   when `requests_per_second + burst` requests were accepted in the last second gets
//!   `429 Too Many Requests` with `Retry-After: <seconds>`, as published API docs describe.
//! - Faults at configured rates, drawn from a seeded sequence: `500` with a JSON error, or a
//!   response held for `timeout_hold` and then `504` (a client with a shorter timeout sees a
//!   timeout). Items are counted as served only in `200` responses.
//! - Counts every arriving request per wall-clock second (the histogram the tests check) and
//!   how often each item was served.
//!
//! It binds 127.0.0.1:0 and runs on a thread of its own until the handle drops, so sync and
//! async tests alike can use it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// How the API behaves.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Requests per second it accepts, sustained.
    pub requests_per_second: u32,
    /// Extra requests it accepts within any one second.
    pub burst: u32,
    /// `Retry-After` seconds sent with a 429.
    pub retry_after_seconds: u64,
    /// Share of accepted requests answered 500.
    pub error_rate: f64,
    /// Share of accepted requests held for `timeout_hold`, then answered 504.
    pub timeout_rate: f64,
    /// How long a "timeout" is held.
    pub timeout_hold: Duration,
    /// Items served: ids `it_000000`.., created `first_created + i * spacing_seconds`.
    pub items: u64,
    /// Creation time of the first item, Unix seconds.
    pub first_created: i64,
    /// Seconds between items.
    pub spacing_seconds: i64,
    /// Largest page (`limit` is capped to it; default page 10).
    pub max_page: usize,
    /// Seed of the fault sequence.
    pub seed: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            requests_per_second: 10,
            burst: 5,
            retry_after_seconds: 1,
            error_rate: 0.0,
            timeout_rate: 0.0,
            timeout_hold: Duration::from_secs(2),
            items: 100,
            first_created: 1_700_000_000,
            spacing_seconds: 60,
            max_page: 100,
            seed: 42,
        }
    }
}

/// What the API saw.
#[derive(Debug, Clone, Default)]
pub struct ApiStats {
    /// Arriving requests per wall-clock second (Unix seconds), whatever their answer.
    pub per_second: BTreeMap<u64, u32>,
    /// Requests answered 429.
    pub throttled: u64,
    /// Requests answered 500.
    pub errors: u64,
    /// Requests held and answered 504.
    pub timeouts: u64,
    /// Requests answered 200.
    pub ok: u64,
    /// Times each item id was served in a 200 response.
    pub served: HashMap<String, u32>,
}

impl ApiStats {
    /// The most requests that arrived in one wall-clock second.
    pub fn max_per_second(&self) -> u32 {
        self.per_second.values().copied().max().unwrap_or(0)
    }

    /// Every request that arrived.
    pub fn requests(&self) -> u64 {
        self.per_second.values().map(|&n| u64::from(n)).sum()
    }
}

struct Shared {
    config: ApiConfig,
    accepted: Mutex<VecDeque<Instant>>,
    draws: Mutex<u64>,
    stats: Mutex<ApiStats>,
}

/// A running API; stops when dropped.
pub struct RateLimitedApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RateLimitedApi {
    /// Starts the API on 127.0.0.1 and a port from the OS.
    pub fn start(config: ApiConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            config,
            accepted: Mutex::new(VecDeque::new()),
            draws: Mutex::new(0),
            stats: Mutex::new(ApiStats::default()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/v1/items", get(list_items))
            .with_state(shared.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("rate-limited-api".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
                // Held "timeouts" are not waited for.
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(RateLimitedApi {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the API saw so far.
    pub fn stats(&self) -> ApiStats {
        self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The configuration.
    pub fn config(&self) -> &ApiConfig {
        &self.shared.config
    }

    /// Every item id the API holds with its creation time.
    pub fn items(&self) -> Vec<(String, i64)> {
        (0..self.shared.config.items)
            .map(|i| item(&self.shared.config, i))
            .collect()
    }
}

impl Drop for RateLimitedApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn item(config: &ApiConfig, i: u64) -> (String, i64) {
    (
        format!("it_{i:06}"),
        config.first_created + i as i64 * config.spacing_seconds,
    )
}

/// Decodes `%XX` and `+` in a query component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn json_response(code: StatusCode, body: &serde_json::Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error(code: StatusCode, kind: &str, message: &str) -> Response {
    json_response(code, &json!({"error": {"type": kind, "message": message}}))
}

/// The next draw in `[0, 1)` of the seeded fault sequence.
fn draw(shared: &Shared) -> f64 {
    let mut n = shared.draws.lock().unwrap_or_else(|e| e.into_inner());
    *n += 1;
    let mut x = shared.config.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

enum Admission {
    Throttled,
    Error,
    Timeout,
    Serve,
}

fn admit(shared: &Shared) -> Admission {
    let now = Instant::now();
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
    *stats.per_second.entry(second).or_default() += 1;
    let mut accepted = shared.accepted.lock().unwrap_or_else(|e| e.into_inner());
    while accepted
        .front()
        .is_some_and(|&t| now.duration_since(t) >= Duration::from_secs(1))
    {
        accepted.pop_front();
    }
    let limit = (shared.config.requests_per_second + shared.config.burst) as usize;
    if accepted.len() >= limit {
        stats.throttled += 1;
        return Admission::Throttled;
    }
    accepted.push_back(now);
    let d = draw(shared);
    if d < shared.config.error_rate {
        stats.errors += 1;
        Admission::Error
    } else if d < shared.config.error_rate + shared.config.timeout_rate {
        stats.timeouts += 1;
        Admission::Timeout
    } else {
        Admission::Serve
    }
}

async fn list_items(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    match admit(&shared) {
        Admission::Throttled => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "Too many requests");
            r.headers_mut().insert(
                header::RETRY_AFTER,
                shared
                    .config
                    .retry_after_seconds
                    .to_string()
                    .parse()
                    .expect("header value"),
            );
            return r;
        }
        Admission::Error => return error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "injected failure"),
        Admission::Timeout => {
            tokio::time::sleep(shared.config.timeout_hold).await;
            return error(StatusCode::GATEWAY_TIMEOUT, "api_error", "injected timeout");
        }
        Admission::Serve => {}
    }
    let q = query(&uri);
    let int = |key: &str| q.get(key).map(|v| v.parse::<i64>());
    let (gte, lt) = match (int("created[gte]"), int("created[lt]")) {
        (Some(Err(_)), _) | (_, Some(Err(_))) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "created[gte]/created[lt] must be integers",
            );
        }
        (a, b) => (
            a.and_then(|r| r.ok()).unwrap_or(i64::MIN),
            b.and_then(|r| r.ok()).unwrap_or(i64::MAX),
        ),
    };
    let limit = match q.get("limit").map(|v| v.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if n >= 1 => n.min(shared.config.max_page),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "limit must be a positive integer",
            );
        }
    };
    let config = &shared.config;
    // Newest first, like Stripe.
    let window: Vec<(String, i64)> = (0..config.items)
        .rev()
        .map(|i| item(config, i))
        .filter(|(_, created)| *created >= gte && *created < lt)
        .collect();
    let start = match q.get("starting_after") {
        None => 0,
        Some(id) => match window.iter().position(|(i, _)| i == id) {
            Some(p) => p + 1,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "resource_missing",
                    &format!("No such item: '{id}' in the requested window"),
                );
            }
        },
    };
    let page: Vec<&(String, i64)> = window.iter().skip(start).take(limit).collect();
    let has_more = start + page.len() < window.len();
    {
        let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.ok += 1;
        for (id, _) in &page {
            *stats.served.entry(id.clone()).or_default() += 1;
        }
    }
    let data: Vec<_> = page
        .iter()
        .map(|(id, created)| {
            let n: u64 = id[3..].parse().unwrap_or(0);
            json!({"id": id, "object": "item", "created": created, "amount": n * 100 + 99})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "has_more": has_more}),
    )
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A plain HTTP/1.1 GET: status and body.
    fn get(base: &str, path: &str) -> (u16, String, String) {
        let addr = base.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let code = head[9..12].parse().unwrap();
        (code, head.to_string(), body.to_string())
    }

    #[test]
    fn pages_a_window_newest_first_with_starting_after() {
        let api = RateLimitedApi::start(ApiConfig {
            items: 25,
            requests_per_second: 100,
            ..ApiConfig::default()
        })
        .unwrap();
        let from = 1_700_000_000 + 5 * 60;
        let to = 1_700_000_000 + 17 * 60;
        let mut ids = Vec::new();
        let mut after = String::new();
        loop {
            let (code, _, body) = get(
                &api.base_url(),
                &format!("/v1/items?created%5Bgte%5D={from}&created%5Blt%5D={to}&limit=5{after}"),
            );
            assert_eq!(code, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let page: Vec<String> = v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect();
            after = format!("&starting_after={}", page.last().unwrap());
            ids.extend(page);
            if !v["has_more"].as_bool().unwrap() {
                break;
            }
        }
        let want: Vec<String> = (5..17).rev().map(|i| format!("it_{i:06}")).collect();
        assert_eq!(ids, want);
        let (code, _, body) = get(&api.base_url(), "/v1/items?starting_after=it_000099");
        assert_eq!(code, 400);
        assert!(body.contains("resource_missing"), "{body}");
        let stats = api.stats();
        assert_eq!(stats.served.len(), 12);
        assert!(stats.served.values().all(|&n| n == 1));
    }

    #[test]
    fn over_the_limit_is_a_429_with_retry_after_and_faults_follow_their_rates() {
        let api = RateLimitedApi::start(ApiConfig {
            requests_per_second: 3,
            burst: 2,
            retry_after_seconds: 7,
            ..ApiConfig::default()
        })
        .unwrap();
        let codes: Vec<(u16, String)> = (0..8)
            .map(|_| {
                let (c, head, _) = get(&api.base_url(), "/v1/items");
                (c, head)
            })
            .collect();
        assert!(codes[..5].iter().all(|(c, _)| *c == 200));
        assert!(
            codes[5..]
                .iter()
                .all(|(c, h)| *c == 429 && h.to_lowercase().contains("retry-after: 7"))
        );
        let stats = api.stats();
        assert_eq!((stats.ok, stats.throttled, stats.requests()), (5, 3, 8));

        let api = RateLimitedApi::start(ApiConfig {
            requests_per_second: 1000,
            error_rate: 0.3,
            timeout_rate: 0.1,
            timeout_hold: Duration::from_millis(1),
            ..ApiConfig::default()
        })
        .unwrap();
        let codes: Vec<u16> = (0..200).map(|_| get(&api.base_url(), "/v1/items").0).collect();
        let n = |c| codes.iter().filter(|&&x| x == c).count();
        assert!((40..80).contains(&n(500)), "{}", n(500));
        assert!((8..35).contains(&n(504)), "{}", n(504));
        assert_eq!(n(200) + n(500) + n(504), 200);
    }
}
