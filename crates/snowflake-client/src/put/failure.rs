//! How an upload failure is classified and retried. The rule lives here, once:
//!
//! - 429 and 503 (S3's SlowDown) are throttled, other 5xx, 408 and network failures transient:
//!   the request is retried with backoff, up to the attempt limit;
//! - 401 and 403 (and 400 on a presigned URL, which is how an expired one answers) may mean the
//!   stage credentials expired: the file asks the server once for fresh ones (a new PUT
//!   statement) and is retried; a second such failure is permanent;
//! - any other 4xx is permanent.

use std::time::Duration;

use backhaul_core::ErrorClass;

use crate::error::Error;

/// A failed upload of one file, and whether fresh credentials might cure it.
#[derive(Debug)]
pub(crate) struct UploadError {
    pub(crate) error: Error,
    pub(crate) credentials_suspect: bool,
}

impl UploadError {
    pub(crate) fn new(file: &str, message: impl Into<String>, class: ErrorClass) -> UploadError {
        UploadError {
            error: Error::Upload {
                file: file.to_string(),
                message: message.into(),
                class,
            },
            credentials_suspect: false,
        }
    }

    pub(crate) fn permanent(file: &str, message: impl Into<String>) -> UploadError {
        UploadError::new(file, message, ErrorClass::Permanent)
    }

    pub(crate) fn suspect_credentials(mut self) -> UploadError {
        self.credentials_suspect = true;
        self
    }
}

/// What to do after one HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Done,
    Retry(ErrorClass),
    RefreshCredentials,
    Fail,
}

/// Classifies an HTTP status of a storage request. `presigned`: the URL carries its own
/// signature, which answers 400 when it expired.
pub(crate) fn verdict(status: u16, presigned: bool) -> Verdict {
    match status {
        200..=299 => Verdict::Done,
        429 | 503 => Verdict::Retry(ErrorClass::Throttled),
        408 | 500..=599 => Verdict::Retry(ErrorClass::Transient),
        401 | 403 => Verdict::RefreshCredentials,
        400 if presigned => Verdict::RefreshCredentials,
        _ => Verdict::Fail,
    }
}

/// Retries of one storage request.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    pub(crate) max_attempts: u32,
    pub(crate) base_delay: Duration,
    pub(crate) max_delay: Duration,
}

impl Backoff {
    /// The delay before attempt `attempt + 1` (attempts count from 1).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// The failure of a request the server answered with `status` (after retries, if any).
pub(crate) fn status_error(file: &str, what: &str, status: u16, body: &str, presigned: bool) -> UploadError {
    let message = format!("{what}: HTTP {status}: {}", body_start(body));
    match verdict(status, presigned) {
        Verdict::Retry(class) => UploadError::new(file, message, class),
        Verdict::RefreshCredentials => UploadError::permanent(file, message).suspect_credentials(),
        Verdict::Done | Verdict::Fail => UploadError::permanent(file, message),
    }
}

/// A request that did not get an answer. The URL is left out (a presigned URL's query string
/// and a SAS token are credentials).
pub(crate) fn network_error(file: &str, what: &str, e: reqwest::Error) -> UploadError {
    UploadError::new(file, format!("{what}: {}", e.without_url()), ErrorClass::Transient)
}

/// A failure reading the source file from its object store.
pub(crate) fn source_error(file: &str, e: object_store::Error) -> UploadError {
    let class = match e {
        object_store::Error::NotFound { .. }
        | object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::InvalidPath { .. } => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    };
    UploadError::new(file, format!("reading the source: {e}"), class)
}

/// The start of a server's error body, on one line.
pub(crate) fn body_start(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_documented_classes() {
        assert_eq!(verdict(201, false), Verdict::Done);
        assert_eq!(verdict(429, false), Verdict::Retry(ErrorClass::Throttled));
        assert_eq!(verdict(503, false), Verdict::Retry(ErrorClass::Throttled));
        assert_eq!(verdict(500, false), Verdict::Retry(ErrorClass::Transient));
        assert_eq!(verdict(403, false), Verdict::RefreshCredentials);
        assert_eq!(verdict(400, true), Verdict::RefreshCredentials);
        assert_eq!(verdict(400, false), Verdict::Fail);
        assert_eq!(verdict(404, false), Verdict::Fail);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(3), Duration::from_millis(350));
    }
}
