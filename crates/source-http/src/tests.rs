//! The source against a scripted API server on 127.0.0.1:0 (axum, in the test's runtime):
//! pagination kinds, windows, auth kinds, retries by class, dead letters, the breaker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, RecordBatch, StringArray};
use axum::body::Body;
use axum::http::{HeaderMap, Request, Response};
use backhaul_core::ErrorClass;
use backhaul_core::connector::{BreakerPhase, ExtractNotes, RequestProfile, Source};
use backhaul_core::cursor::CursorRange;
use backhaul_core::ratelimit::Budgets;
use backhaul_core::registry::SourceKind;
use futures::StreamExt;

use crate::{BreakerState, HttpKind, HttpSource, HttpSourceSpec};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: String,
}

type Handler = dyn Fn(&Seen, usize) -> Response<Body> + Send + Sync;

/// A server answering every request with `handler(request, index of the request)`.
struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(handler: impl Fn(&Seen, usize) -> Response<Body> + Send + Sync + 'static) -> Server {
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let handler = handler.clone();
            let log = log.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                let query = parts.uri.query().map(url_pairs).unwrap_or_default();
                let s = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query,
                    headers: parts.headers,
                    body: String::from_utf8(body.to_vec()).unwrap(),
                };
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(s.clone());
                    log.len() - 1
                };
                handler(&s, n)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server { url, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn url_pairs(q: &str) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{q}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn json(status: u16, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

const T0: i64 = 1_700_000_000;

fn record(i: i64) -> serde_json::Value {
    serde_json::json!({"id": format!("r{i}"), "created": T0 + i, "amount": format!("{i}.25"), "extra": "ignored"})
}

/// A spec of `kind = "http"` with `extra` TOML appended to the section.
fn spec(url: &str, extra: &str) -> HttpSourceSpec {
    let text = format!(
        r#"
base_url = "{url}"
stream = {{ name = "things", path = "/v1/things", record_selector = "$.data", primary_key = ["id"], cursor_field = "created", cursor_format = "unix_seconds" }}
columns = [
  {{ name = "id", type = "string", nullable = false }},
  {{ name = "created", type = "timestamp", nullable = false }},
  {{ name = "amount", type = "decimal(12,2)" }},
]
max_retries = 3
{extra}
"#
    );
    let table: toml::Table = toml::from_str(&text).unwrap();
    backhaul_core::spec::parse_section(&table, "source", "job.toml").unwrap()
}

fn build(spec: HttpSourceSpec) -> HttpSource {
    HttpSource::build(spec, Budgets::default(), "job.toml", Arc::new(|| T0)).unwrap()
}

fn range(from: i64, to: i64) -> CursorRange {
    CursorRange::new(from * 1_000_000, to * 1_000_000)
}

async fn read(source: &HttpSource, r: CursorRange) -> backhaul_core::Result<Vec<RecordBatch>> {
    let mut stream = source.extract(r, 3).await?;
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        out.push(b?);
    }
    Ok(out)
}

fn ids(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            (0..a.len()).map(|i| a.value(i).to_string()).collect::<Vec<_>>()
        })
        .collect()
}

fn page(records: std::ops::Range<i64>) -> Vec<serde_json::Value> {
    records.map(record).collect()
}

#[tokio::test]
async fn every_pagination_kind_reads_every_page() {
    // Seven records, pages of three.
    let server = Server::start(|s, _| {
        let q = |k: &str| s.query.get(k).cloned();
        match s.path.as_str() {
            "/token" => {
                let start: i64 = q("cursor").map_or(0, |c| c.trim_start_matches("c").parse().unwrap());
                let next = (start + 3 < 7).then(|| format!("c{}", start + 3));
                json(
                    200,
                    serde_json::json!({"data": page(start..(start + 3).min(7)), "next": next}),
                )
            }
            "/lastid" => {
                let start = q("starting_after").map_or(0, |id| id[1..].parse::<i64>().unwrap() + 1);
                let end = (start + 3).min(7);
                json(200, serde_json::json!({"data": page(start..end), "has_more": end < 7}))
            }
            "/offset" => {
                let start: i64 = q("offset").unwrap().parse().unwrap();
                assert_eq!(q("limit").as_deref(), Some("3"));
                json(200, serde_json::json!({"data": page(start..(start + 3).min(7))}))
            }
            "/page" => {
                let n: i64 = q("page").unwrap().parse().unwrap();
                let start = ((n - 1) * 3).min(7);
                json(200, serde_json::json!({"data": page(start..(start + 3).min(7))}))
            }
            "/link" => {
                let start: i64 = q("from").map_or(0, |c| c.parse().unwrap());
                let mut r = json(200, serde_json::json!({"data": page(start..(start + 3).min(7))}));
                if start + 3 < 7 {
                    let link = format!(
                        "</link?from={}>; rel=\"next\", </link?from=0>; rel=\"first\"",
                        start + 3
                    );
                    r.headers_mut().insert("Link", link.parse().unwrap());
                }
                r
            }
            other => panic!("unexpected path {other}"),
        }
    })
    .await;
    let all: Vec<String> = (0..7).map(|i| format!("r{i}")).collect();
    for (path, pagination) in [
        (
            "/token",
            r#"{ type = "next_token", token_path = "$.next", param = "cursor" }"#,
        ),
        ("/lastid", r#"{ type = "last_id" }"#),
        ("/offset", r#"{ type = "offset_limit", limit = 3 }"#),
        ("/page", r#"{ type = "page_number" }"#),
        ("/link", r#"{ type = "link_header" }"#),
    ] {
        let mut s = spec(&server.url, &format!("pagination = {pagination}"));
        s.stream.path = path.into();
        let batches = read(&build(s), range(T0, T0 + 100)).await.unwrap();
        assert_eq!(ids(&batches), all, "{path}");
        assert!(batches.iter().all(|b| b.num_rows() <= 3));
    }
}

#[tokio::test]
async fn a_page_that_repeats_is_an_error_not_an_endless_run() {
    // The API ignores the page parameter: every page is the first one.
    let server = Server::start(|_, _| json(200, serde_json::json!({"data": page(0..3)}))).await;
    let s = spec(&server.url, r#"pagination = { type = "page_number" }"#);
    let e = read(&build(s), range(T0, T0 + 100)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(e.to_string().contains("stream `things`: pagination loop"), "{e}");
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn the_window_goes_into_params_lookback_widens_it_and_records_outside_are_dropped() {
    let server = Server::start(|_, _| {
        let mut data = page(0..6);
        // r2 again, later in the response, with another amount: the last one seen wins.
        let mut again = record(2);
        again["amount"] = "99.00".into();
        data.push(again);
        json(200, serde_json::json!({"data": data}))
    })
    .await;
    let s = spec(
        &server.url,
        r#"window = { from_param = "created[gte]", to_param = "created[lt]" }
lookback = "1h"
params = { limit = "100" }"#,
    );
    let source = build(s);
    let batches = read(
        &source,
        CursorRange::new((T0 + 1) * 1_000_000, (T0 + 4) * 1_000_000 + 500_000),
    )
    .await
    .unwrap();
    let seen = server.seen();
    assert_eq!(seen[0].query["created[gte]"], (T0 + 1 - 3600).to_string());
    assert_eq!(
        seen[0].query["created[lt]"],
        (T0 + 5).to_string(),
        "an end inside a second rounds up"
    );
    assert_eq!(seen[0].query["limit"], "100");
    assert_eq!(ids(&batches), ["r1", "r2", "r3", "r4"]);
    let amounts: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column(2)
                .as_any()
                .downcast_ref::<arrow::array::Decimal128Array>()
                .unwrap();
            (0..a.len()).map(|i| a.value_as_string(i)).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(amounts, ["1.25", "99.00", "3.25", "4.25"]);
}

#[tokio::test]
async fn records_that_do_not_match_the_schema_go_to_the_dead_letter_file() {
    let server = Server::start(|_, _| {
        json(
            200,
            serde_json::json!({"data": [
                record(0),
                {"id": "r1", "created": T0 + 1, "amount": 1.5},
                {"id": "bad-missing", "amount": "1.00"},
                {"id": "bad-type", "created": "yesterday", "amount": "1.00"},
                {"id": "bad-digits", "created": T0 + 2, "amount": "1.234"},
                {"id": 7, "created": T0 + 3},
                "not an object",
            ]}),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(&server.url, "");
    s.dead_letter_dir = Some(dir.path().to_path_buf());
    let source = build(s);
    let r = range(T0, T0 + 100);
    let batches = read(&source, r).await.unwrap();
    assert_eq!(ids(&batches), ["r0", "r1"]);
    assert_eq!(source.dead_letter_count(), 5);
    let path = source.dead_letter_path(r);
    assert_eq!(
        path.file_name().unwrap().to_str().unwrap(),
        "things-20231114T221320Z-20231114T221500Z.jsonl"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<&str> = lines.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        [
            "`created` is missing or null but not nullable",
            "`created` is a JSON string, declared an integer epoch timestamp",
            "`amount` = 1.234: more than 2 digits after the point",
            "`id` is a JSON number, declared as a string",
            "the record is not a JSON object",
        ]
    );
    assert_eq!(lines[0]["record"]["id"], "bad-missing");
    assert_eq!(lines[4]["record"], "not an object");
    assert!(lines.iter().all(|l| l["stream"] == "things"));
}

#[tokio::test]
async fn a_chunk_notes_its_own_dead_letters_in_a_file_named_after_the_job() {
    let server = Server::start(|_, _| {
        json(
            200,
            serde_json::json!({"data": [record(0), {"id": "bad-missing"}, {"id": 7, "created": T0 + 3}]}),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(&server.url, "");
    s.dead_letter_dir = Some(dir.path().to_path_buf());
    s.job_name = Some("nightly".into());
    let source = build(s);
    let r = range(T0, T0 + 100);
    let mut counts = Vec::new();
    for _ in 0..2 {
        let notes = ExtractNotes::new();
        let mut stream = source.extract_with_notes(r, 3, notes.clone()).await.unwrap();
        while let Some(b) = stream.next().await {
            b.unwrap();
        }
        counts.push(notes.facts().dead_letters);
    }
    // Per chunk, not per source: the second attempt counts its own.
    assert_eq!(counts, [2, 2]);
    assert_eq!(source.dead_letter_count(), 4);
    let path = source.dead_letter_path(r);
    assert_eq!(
        path.file_name().unwrap().to_str().unwrap(),
        "nightly-things-20231114T221320Z-20231114T221500Z.jsonl"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
}

#[tokio::test]
async fn a_selector_that_matches_nothing_names_the_stream_and_the_path() {
    let server = Server::start(|_, _| json(200, serde_json::json!({"items": []}))).await;
    let e = read(&build(spec(&server.url, "")), range(T0, T0 + 1))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert_eq!(
        e.to_string(),
        "stream `things`: record_selector `$.data` matches nothing in the response from /v1/things"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_for_retry_after_then_succeeds() {
    let server = Server::start(|_, n| {
        if n == 0 {
            let mut r = json(429, serde_json::json!({"error": "slow down"}));
            r.headers_mut().insert("Retry-After", "7".parse().unwrap());
            r
        } else {
            json(200, serde_json::json!({"data": page(0..2)}))
        }
    })
    .await;
    let s = spec(
        &server.url,
        r#"rate_limit = { name = "things-api", requests_per_second = 100.0, burst = 5 }"#,
    );
    let start = tokio::time::Instant::now();
    let batches = read(&build(s), range(T0, T0 + 100)).await.unwrap();
    assert_eq!(ids(&batches), ["r0", "r1"]);
    assert!(start.elapsed() >= Duration::from_secs(7), "{:?}", start.elapsed());
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn server_errors_back_off_then_succeed_and_fail_transiently_when_they_persist() {
    let server = Server::start(|s, n| match (s.path.as_str(), n) {
        ("/v1/things", 0 | 1) => json(503, serde_json::json!({})),
        ("/v1/things", _) => json(200, serde_json::json!({"data": page(0..1)})),
        _ => json(500, serde_json::json!({})),
    })
    .await;
    let start = tokio::time::Instant::now();
    let batches = read(&build(spec(&server.url, "")), range(T0, T0 + 100)).await.unwrap();
    assert_eq!(ids(&batches), ["r0"]);
    // Two backoffs of at least half of 0.5 s and 1 s.
    assert!(start.elapsed() >= Duration::from_millis(750), "{:?}", start.elapsed());

    let mut s = spec(&server.url, "");
    s.stream.path = "/always-500".into();
    let e = read(&build(s), range(T0, T0 + 100)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient);
    assert!(
        e.to_string()
            .contains("HTTP 500 Internal Server Error from /always-500 (after 3 retries)"),
        "{e}"
    );
}

#[tokio::test]
async fn a_401_refreshes_the_credentials_once_then_fails_permanently() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "old-token\n").unwrap();
    let rotate = token_file.clone();
    let server = Server::start(move |s, _| {
        match s.headers.get("authorization").unwrap().to_str().unwrap() {
            "Bearer new-token" => json(200, serde_json::json!({"data": page(0..1)})),
            _ => {
                // The secret is rotated while the old one is refused.
                std::fs::write(&rotate, "new-token").unwrap();
                json(401, serde_json::json!({"error": "expired"}))
            }
        }
    })
    .await;
    let extra = format!(
        "auth = {{ type = \"bearer\", token_file = {:?} }}",
        token_file.display().to_string()
    );
    let source = build(spec(&server.url, &extra));
    assert!(!format!("{source:?}").contains("old-token"), "{source:?}");
    assert_eq!(ids(&read(&source, range(T0, T0 + 100)).await.unwrap()), ["r0"]);

    // Expired for good: 401 twice, then a permanent error naming the stream.
    std::fs::write(&token_file, "expired").unwrap();
    let server = Server::start(|_, _| json(401, serde_json::json!({}))).await;
    let source = build(spec(&server.url, &extra));
    let e = read(&source, range(T0, T0 + 100)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(
        e.to_string()
            .starts_with("stream `things`: HTTP 401 Unauthorized from /v1/things after refreshing"),
        "{e}"
    );
    assert!(!e.to_string().contains("expired\""), "{e}");
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn oauth2_tokens_are_refreshed_before_they_expire() {
    let server = Server::start(|s, _| {
        if s.path == "/oauth/token" {
            let form = url_pairs(&s.body);
            assert_eq!(form["grant_type"], "client_credentials");
            assert_eq!(form["client_secret"], "shh");
            let n = TOKENS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return json(
                200,
                serde_json::json!({"access_token": format!("tok{n}"), "expires_in": 120}),
            );
        }
        json(200, serde_json::json!({"data": page(0..1)}))
    })
    .await;
    static TOKENS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // SAFETY: set before any thread reads it; this test alone uses the variable.
    unsafe { std::env::set_var("BACKHAUL_TEST_OAUTH_SECRET", "shh") };
    let extra = format!(
        r#"auth = {{ type = "oauth2_client_credentials", token_url = "{}/oauth/token", client_id = "c", client_secret_env = "BACKHAUL_TEST_OAUTH_SECRET", refresh_skew_seconds = 60 }}"#,
        server.url
    );
    let source = build(spec(&server.url, &extra));
    let r = range(T0, T0 + 100);
    read(&source, r).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    read(&source, r).await.unwrap();
    // 70 s after the token was issued, 50 s before it expires: inside the 60 s skew.
    tokio::time::advance(Duration::from_secs(40)).await;
    read(&source, r).await.unwrap();
    let bearers: Vec<String> = server
        .seen()
        .iter()
        .filter(|s| s.path == "/v1/things")
        .map(|s| s.headers["authorization"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(bearers, ["Bearer tok0", "Bearer tok0", "Bearer tok1"]);
}

#[tokio::test]
async fn hmac_signatures_match_the_documented_layout() {
    let server = Server::start(|_, _| json(200, serde_json::json!({"data": []}))).await;
    // SAFETY: set before any thread reads it; this test alone uses the variable.
    unsafe { std::env::set_var("BACKHAUL_TEST_HMAC_SECRET", "s3cret") };
    let s = spec(
        &server.url,
        r#"window = { from_param = "from", to_param = "to", in = "body" }
params = { limit = "2" }
auth = { type = "hmac", secret_env = "BACKHAUL_TEST_HMAC_SECRET", signature_header = "X-Signature", timestamp_header = "X-Timestamp", signature_prefix = "v1=", key_id_header = "X-Key", key_id = "k1" }"#,
    );
    read(&build(s), range(T0 - 1000, T0 + 500)).await.unwrap();
    let seen = &server.seen()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, r#"{"from":1699999000,"to":1700000500}"#);
    assert_eq!(seen.headers["x-timestamp"], "1700000000");
    assert_eq!(seen.headers["x-key"], "k1");
    // Python: hmac.new(b"s3cret", b'1700000000\nPOST\n/v1/things?limit=2\n{"from":1699999000,"to":1700000500}',
    // hashlib.sha256).hexdigest()
    assert_eq!(
        seen.headers["x-signature"],
        "v1=9715a425b8b52e2771cfa00084a1e55652155d65bd676ac4336ed3d476504cc6"
    );
}

#[tokio::test]
async fn api_keys_and_basic_credentials_are_sent_where_configured() {
    let server = Server::start(|_, _| json(200, serde_json::json!({"data": []}))).await;
    // SAFETY: set before any thread reads it; this test alone uses the variable.
    unsafe { std::env::set_var("BACKHAUL_TEST_API_KEY", "k-123") };
    let r = range(T0, T0 + 1);
    let q = r#"auth = { type = "api_key", name = "api_key", in = "query", key_env = "BACKHAUL_TEST_API_KEY" }"#;
    read(&build(spec(&server.url, q)), r).await.unwrap();
    let h = r#"auth = { type = "api_key", name = "X-Api-Key", in = "header", key_env = "BACKHAUL_TEST_API_KEY" }"#;
    read(&build(spec(&server.url, h)), r).await.unwrap();
    let b = r#"auth = { type = "basic", username = "u", password_env = "BACKHAUL_TEST_API_KEY" }"#;
    read(&build(spec(&server.url, b)), r).await.unwrap();
    let seen = server.seen();
    assert_eq!(seen[0].query["api_key"], "k-123");
    assert_eq!(seen[1].headers["x-api-key"], "k-123");
    assert_eq!(seen[2].headers["authorization"], "Basic dTprLTEyMw==");
}

#[tokio::test]
async fn the_circuit_breaker_opens_and_then_refuses_without_calling_the_api() {
    let server = Server::start(|_, _| json(500, serde_json::json!({}))).await;
    let mut s = spec(
        &server.url,
        "circuit_breaker = { failure_threshold = 2, open_seconds = 600 }",
    );
    s.max_retries = 0;
    let source = build(s);
    let r = range(T0, T0 + 1);
    read(&source, r).await.unwrap_err();
    assert_eq!(source.breaker_state(), BreakerState::Closed { failures: 1 });
    read(&source, r).await.unwrap_err();
    assert_eq!(source.breaker_state().name(), "open");
    let report = source.circuit_breaker().unwrap();
    assert_eq!(report.phase, BreakerPhase::Open);
    assert!(report.open_until_unix_ms.is_some());
    let e = read(&source, r).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient);
    assert!(e.to_string().contains("circuit breaker open"), "{e}");
    assert_eq!(server.seen().len(), 2, "an open breaker sends nothing");
}

#[test]
fn the_section_is_strict_and_errors_name_the_key() {
    let kind = HttpKind::new(Budgets::default());
    let parse = |extra: &str| {
        let text = format!(
            r#"
base_url = "https://api.stripe.com"
stream = {{ name = "customers", path = "/v1/customers", record_selector = "$.data", cursor_field = "created" }}
columns = [{{ name = "created", type = "timestamp", format = "unix_seconds", nullable = false }}]
{extra}
"#
        );
        let table: toml::Table = toml::from_str(&text).unwrap();
        kind.parse(&table, "job.toml")
            .and_then(|c| c.validate("job.toml").map(|_| c))
    };
    let ok = parse("auth = { type = \"bearer\", token_env = \"STRIPE_KEY\" }").unwrap();
    assert_eq!(ok.table(), "customers");
    assert!(ok.settings().contains_key("auth"));
    let err = |extra: &str| parse(extra).unwrap_err().to_string();
    assert!(
        err("colour = 1").starts_with("job.toml: source.colour: unknown field"),
        "{}",
        err("colour = 1")
    );
    assert_eq!(
        err("auth = { type = \"bearer\" }"),
        "job.toml: source.auth.token_env: set `token_env` (an environment variable) or `token_file`"
    );
    assert!(
        err("pagination = { type = \"offset_limit\", limit = 0 }").starts_with("job.toml: source.pagination.limit")
    );
    assert!(err("lookback = \"3 fortnights\"").starts_with("job.toml: source.lookback:"));
    assert!(
        err("rate_limit = { name = \"p\", requests_per_second = 0.0 }")
            .starts_with("job.toml: source.rate_limit.requests_per_second")
    );
    assert!(
        err("pagination = { type = \"next_token\", token_path = \"$.a[0]\", param = \"c\" }")
            .starts_with("job.toml: source.pagination.token_path: `$.a[0]`: only object keys")
    );
}

#[test]
fn the_request_profile_names_the_page_size_and_the_pool() {
    let s = build(spec(
        "http://127.0.0.1:1",
        "params = { limit = \"100\" }\nrate_limit = { name = \"acme\", requests_per_second = 5.0, burst = 2 }",
    ));
    let profile = s.request_profile().unwrap();
    assert_eq!(profile.records_per_request, Some(100));
    assert_eq!(profile.pool.unwrap().name, "acme");
    let paged = build(spec(
        "http://127.0.0.1:1",
        "pagination = { type = \"offset_limit\", limit = 250 }\nparams = { per_page = \"10\" }",
    ));
    assert_eq!(paged.request_profile().unwrap().records_per_request, Some(250));
    let unknown = build(spec("http://127.0.0.1:1", ""));
    assert_eq!(
        unknown.request_profile().unwrap(),
        RequestProfile {
            records_per_request: None,
            pool: None
        }
    );
}
