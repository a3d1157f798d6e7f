//! Bad input: wrong credentials, a missing database or schema, and the server failing with 5xx
//! in the middle of a load.
//!
//! fakesnow accepts any password, creates any database and schema at login and never answers
//! 5xx, so these tests put a small HTTP proxy in front of it (test code only) that answers what
//! real Snowflake answers: login code `390100` with its message, a login without the database
//! or schema parameter (as for one that does not exist), and `503` for the COPY statement.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use backhaul_core::{Error, ErrorClass};

use crate::{Env, JOB_BAD, one_day, source_rows, staged_commit};

/// What the proxy changes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Twist {
    /// Login answers Snowflake's wrong-password error.
    WrongPassword,
    /// Login is forwarded without this query parameter.
    DropLoginParam(&'static str),
    /// Statements starting with `COPY INTO` answer 503.
    FailCopy,
}

struct Proxy {
    upstream: String,
    twist: Twist,
    client: reqwest::Client,
    logins: AtomicU32,
    copies: AtomicU32,
}

async fn handle(State(p): State<Arc<Proxy>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let mut query = uri.query().unwrap_or_default().to_string();
    if path.contains("login-request") {
        p.logins.fetch_add(1, Ordering::SeqCst);
        match p.twist {
            Twist::WrongPassword => {
                // What Snowflake answers (HTTP 200, success false).
                let body = serde_json::json!({
                    "data": {"nextAction": null, "authnMethod": "PASSWORD"},
                    "code": "390100",
                    "message": "Incorrect username or password was specified.",
                    "success": false,
                    "headers": null
                });
                return ([("content-type", "application/json")], body.to_string()).into_response();
            }
            Twist::DropLoginParam(name) => {
                query = query
                    .split('&')
                    .filter(|kv| !kv.starts_with(&format!("{name}=")))
                    .collect::<Vec<_>>()
                    .join("&");
            }
            Twist::FailCopy => {}
        }
    }
    if path.contains("query-request") && p.twist == Twist::FailCopy && statement(&headers, &body).contains("COPY INTO")
    {
        p.copies.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "warehouse LOAD_WH is overloaded; try again later",
        )
            .into_response();
    }
    let url = format!(
        "{}{path}{}",
        p.upstream,
        if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        }
    );
    let mut request = p.client.request(method, url).body(body);
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let headers = answer.headers().clone();
            let bytes = answer.bytes().await.unwrap_or_default();
            let mut response = (status, bytes).into_response();
            for (name, value) in &headers {
                if matches!(name.as_str(), "content-type" | "content-encoding") {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// The request's SQL text (bodies may be gzipped).
fn statement(headers: &HeaderMap, body: &[u8]) -> String {
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let mut text = String::new();
    if gzip {
        let _ = flate2::read::GzDecoder::new(body).read_to_string(&mut text);
    } else {
        text = String::from_utf8_lossy(body).into_owned();
    }
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["sqlText"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Starts the proxy on a port the OS picks; runs until the test's runtime ends.
async fn proxy(upstream: &str, twist: Twist) -> (String, Arc<Proxy>) {
    let state = Arc::new(Proxy {
        upstream: upstream.to_string(),
        twist,
        client: reqwest::Client::builder().no_gzip().build().unwrap(),
        logins: AtomicU32::new(0),
        copies: AtomicU32::new(0),
    });
    let app = Router::new().fallback(handle).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app.into_make_service()).await });
    (url, state)
}

#[tokio::test]
async fn wrong_credentials_fail_once_with_the_servers_message() {
    let Some(env) = Env::start().await else { return };
    let (url, p) = proxy(&env.fake.url, Twist::WrongPassword).await;
    let mut spec = env.spec("NOPE");
    spec.base_url = Some(url);
    let dest = env.destination(&spec);
    let batches = source_rows(&env.dir, one_day()).await;
    let e = dest.prepare(JOB_BAD, batches[0].schema()).await.unwrap_err();
    let text = e.to_string();
    assert_eq!(e.class(), ErrorClass::Permanent, "{text}");
    assert!(
        text.contains("Incorrect username or password") && text.contains("390100"),
        "{text}"
    );
    assert!(text.contains("loader"), "names the user: {text}");
    assert_eq!(p.logins.load(Ordering::SeqCst), 1, "one login, no retry storm");
}

#[tokio::test]
async fn a_missing_database_or_schema_fails_naming_it() {
    let Some(env) = Env::start().await else { return };
    let batches = source_rows(&env.dir, one_day()).await;
    for (param, name) in [("databaseName", "NO_SUCH_DB"), ("schemaName", "NO_SUCH_SCHEMA")] {
        let (url, _p) = proxy(&env.fake.url, Twist::DropLoginParam(param)).await;
        let mut spec = env.spec("ORDERS");
        spec.base_url = Some(url);
        match param {
            "databaseName" => spec.database = name.into(),
            _ => spec.schema = name.into(),
        }
        let e = env
            .destination(&spec)
            .prepare(JOB_BAD, batches[0].schema())
            .await
            .unwrap_err();
        let text = e.to_string();
        assert_eq!(e.class(), ErrorClass::Permanent, "{text}");
        assert!(text.to_ascii_uppercase().contains(name), "{param}: {text}");
    }
}

#[tokio::test]
async fn a_server_failing_with_5xx_mid_load_is_retried_within_bounds_then_fails_with_its_message() {
    let Some(env) = Env::start().await else { return };
    let (url, p) = proxy(&env.fake.url, Twist::FailCopy).await;
    let mut spec = env.spec("FLAKY");
    spec.base_url = Some(url);
    let dest = env.destination(&spec);
    let batches = source_rows(&env.dir, one_day()).await;
    dest.prepare(JOB_BAD, batches[0].schema()).await.unwrap();
    let commit = staged_commit(&env, JOB_BAD, 0, 1, one_day(), &batches, 2).await;
    let e = dest.commit_chunk(&env.stage, &commit).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Unreachable { .. }), "{text}");
    assert_eq!(e.class(), ErrorClass::Transient);
    assert!(text.contains("503") && text.contains("overloaded"), "{text}");
    let copies = p.copies.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&copies),
        "max_attempts = 2 bounds the retries: {copies}"
    );
    // Nothing was committed: the transaction rolled back.
    assert_eq!(env.count("FLAKY").await, 0);
    assert_eq!(dest.read_back(JOB_BAD, 0).await.unwrap(), None);
}
