//! One storage request over reqwest, retried on throttling and transient failures.

use reqwest::{RequestBuilder, Response};

use super::failure::{Backoff, UploadError, Verdict, network_error, status_error, verdict};

/// Sends the request `build` makes until it succeeds, retrying throttled and transient
/// failures with backoff. `build` is called once per attempt, so its body must be cheap to
/// make again (a `Bytes`). `what` names the request in errors (never its URL).
pub(crate) async fn send_retrying(
    file: &str,
    what: &str,
    presigned: bool,
    backoff: &Backoff,
    build: impl Fn() -> RequestBuilder,
) -> Result<Response, UploadError> {
    let mut attempt = 1;
    loop {
        let failure = match build().send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match verdict(status, presigned) {
                    Verdict::Done => return Ok(response),
                    Verdict::Retry(_) if attempt < backoff.max_attempts => None,
                    _ => {
                        let body = response.text().await.unwrap_or_default();
                        Some(status_error(file, what, status, &body, presigned))
                    }
                }
            }
            Err(e) if attempt < backoff.max_attempts && !e.is_builder() => {
                tracing::debug!(file, what, attempt, error = %e.without_url(), "storage request failed, retrying");
                None
            }
            Err(e) => Some(network_error(file, what, e)),
        };
        if let Some(failure) = failure {
            return Err(failure);
        }
        tokio::time::sleep(backoff.delay(attempt)).await;
        attempt += 1;
    }
}

/// Checks the answer of a request sent once (a streamed body that cannot be replayed).
pub(crate) async fn check_once(
    file: &str,
    what: &str,
    presigned: bool,
    sent: reqwest::Result<Response>,
) -> Result<Response, UploadError> {
    let response = sent.map_err(|e| network_error(file, what, e))?;
    let status = response.status().as_u16();
    if verdict(status, presigned) == Verdict::Done {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(status_error(file, what, status, &body, presigned))
}
