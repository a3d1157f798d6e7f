//! One HTTP exchange with retries: 5xx, 429, 408 and network failures are retried with
//! exponential backoff and jitter within [`RetrySettings`], then returned classified. Every
//! other answer goes back to the caller once, so a refused login is never repeated.
//!
//! Like the official connectors, a retried request keeps its `requestId` (the server runs a
//! statement once per request id) and gets a fresh `request_guid`, plus `retryCount`,
//! `retryReason` (the last status, 0 for a network failure) and `clientStartTime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use crate::error::{Error, Result, http_class};
use crate::session::RetrySettings;
use backhaul_core::ErrorClass;

/// What the server answered, after retries.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: bytes::Bytes,
}

impl Answer {
    /// The body as JSON (every Snowflake REST answer is JSON, errors included).
    pub fn json(&self, endpoint: &str) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::Protocol(format!(
                "{endpoint} answered HTTP {} with a body that is not JSON ({e}): {}",
                self.status.as_u16(),
                body_start(&self.body)
            ))
        })
    }
}

/// A request to send (and resend).
pub(crate) struct Request<'a> {
    pub method: Method,
    /// The full URL; its query string is never shown in errors.
    pub url: Url,
    /// `Authorization: Snowflake Token="<token>"` when set.
    pub token: Option<&'a str>,
    pub body: Option<&'a serde_json::Value>,
    /// Extra headers (result chunks' SSE-C headers).
    pub headers: HeaderMap,
    /// Add `request_guid`/`retryCount`/… (Snowflake's own endpoints, not presigned URLs).
    pub snowflake_params: bool,
}

/// The HTTP client of one session.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    http: reqwest::Client,
    retry: RetrySettings,
}

impl Transport {
    pub fn new(request_timeout: Duration, retry: RetrySettings) -> Result<Transport> {
        // reqwest reads HTTP(S)_PROXY/NO_PROXY from the environment by default, and checks
        // certificates against the bundled web PKI roots.
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("backhaul/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config {
                field: "http client".into(),
                message: e.to_string(),
            })?;
        Ok(Transport { http, retry })
    }

    /// Sends `request`, retrying transient failures. Returns the first answer that is not
    /// retried, or the last failure, classified.
    pub async fn send(&self, request: Request<'_>) -> Result<Answer> {
        let endpoint = endpoint_of(&request.url);
        let client_start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            .to_string();
        let attempts = self.retry.max_attempts.max(1);
        let mut attempt = 0u32;
        let mut last_reason = 0u16;
        loop {
            attempt += 1;
            let mut url = request.url.clone();
            if request.snowflake_params {
                let mut pairs = url.query_pairs_mut();
                pairs.append_pair("request_guid", &uuid::Uuid::new_v4().to_string());
                if attempt > 1 {
                    pairs.append_pair("retryCount", &(attempt - 1).to_string());
                    pairs.append_pair("retryReason", &last_reason.to_string());
                    pairs.append_pair("clientStartTime", &client_start);
                }
            }
            let mut builder = self
                .http
                .request(request.method.clone(), url)
                .headers(request.headers.clone())
                .header(ACCEPT, "application/snowflake");
            if let Some(token) = request.token {
                let mut value = HeaderValue::from_str(&format!("Snowflake Token=\"{token}\""))
                    .map_err(|_| Error::Protocol("the session token is not a valid header value".into()))?;
                value.set_sensitive(true);
                builder = builder.header(AUTHORIZATION, value);
            }
            if let Some(body) = request.body {
                builder = builder
                    .header(CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(body).expect("JSON values serialize"));
            }
            let failure = match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    match response.bytes().await {
                        Ok(body) if http_class(status.as_u16()) == ErrorClass::Permanent => {
                            return Ok(Answer { status, body });
                        }
                        Ok(body) => {
                            last_reason = status.as_u16();
                            Error::Http {
                                status: status.as_u16(),
                                endpoint: endpoint.clone(),
                                message: server_message(&body),
                            }
                        }
                        Err(e) => {
                            last_reason = 0;
                            network_error(&endpoint, e)
                        }
                    }
                }
                Err(e) => {
                    last_reason = 0;
                    network_error(&endpoint, e)
                }
            };
            if attempt >= attempts {
                return Err(failure);
            }
            let delay = backoff(&self.retry, attempt, failure.class());
            tracing::debug!(%endpoint, attempt, ?delay, error = %failure, "snowflake request failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

/// Delay before retry number `retry` (1-based): exponential from `base_delay`, capped at
/// `max_delay`, with "equal jitter" (a random point in the upper half) so clients that
/// failed together do not come back together. Throttled answers wait twice as long.
pub(crate) fn backoff(settings: &RetrySettings, retry: u32, class: ErrorClass) -> Duration {
    let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
    let mut delay = settings.base_delay.saturating_mul(factor);
    if class == ErrorClass::Throttled {
        delay = delay.saturating_mul(2);
    }
    let delay = delay.min(settings.max_delay);
    let half = delay / 2;
    half + half.mul_f64(random_unit())
}

/// A random number in [0, 1) from the OS.
fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// The path of a URL, for errors and logs: never the query string (tokens, signatures).
pub(crate) fn endpoint_of(url: &Url) -> String {
    match url.host_str() {
        Some(host) => format!("{}://{host}{}", url.scheme(), url.path()),
        None => url.path().to_string(),
    }
}

fn network_error(endpoint: &str, error: reqwest::Error) -> Error {
    // reqwest's Display includes the URL, query string and all: drop it.
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::Network {
        endpoint: endpoint.to_string(),
        message,
    }
}

/// The server's own message from an error body: Snowflake's JSON `message` when there is
/// one, else the body's start.
pub(crate) fn server_message(body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(message) = map.get("message").and_then(|m| m.as_str())
    {
        return message.to_string();
    }
    body_start(body)
}

pub(crate) fn body_start(body: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() > MAX {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    } else {
        text.to_string()
    }
}

/// Headers from a JSON object of strings (the server's `chunkHeaders`).
pub(crate) fn header_map(pairs: impl IntoIterator<Item = (String, String)>) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::Protocol(format!("invalid result chunk header name {name:?}")))?;
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| Error::Protocol(format!("invalid value of result chunk header {name}")))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_in_the_upper_half() {
        let settings = RetrySettings {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            let first = backoff(&settings, 1, ErrorClass::Transient);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff(&settings, 3, ErrorClass::Transient);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let capped = backoff(&settings, 30, ErrorClass::Transient);
            assert!(capped >= Duration::from_millis(500) && capped <= Duration::from_millis(1000));
            let throttled = backoff(&settings, 1, ErrorClass::Throttled);
            assert!(throttled >= Duration::from_millis(100) && throttled <= Duration::from_millis(200));
        }
    }

    #[test]
    fn endpoints_never_show_the_query_string() {
        let url = Url::parse("https://bucket.s3.amazonaws.com/results/0?X-Amz-Signature=secret").unwrap();
        assert_eq!(endpoint_of(&url), "https://bucket.s3.amazonaws.com/results/0");
    }

    #[test]
    fn server_messages_come_from_json_or_the_body_start() {
        assert_eq!(server_message(br#"{"message":"busy","code":"1"}"#), "busy");
        assert_eq!(server_message(b"<html>bad gateway</html>"), "<html>bad gateway</html>");
        assert_eq!(server_message("x".repeat(400).as_bytes()).chars().count(), 301);
    }
}
