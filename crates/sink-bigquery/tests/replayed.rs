//! The REST paths bqemulator cannot show, against a local server replaying BigQuery's
//! documented answers (https://cloud.google.com/bigquery/docs/error-messages and the
//! `jobs.insert` reference): a retried `jobs.insert` with an existing job id gets HTTP 409
//! `duplicate` and must wait for that job instead of loading again; quota answers are
//! throttled; a failed load job's `status.errorResult` surfaces classified.

use std::sync::{Arc, Mutex};

use backhaul_core::ErrorClass;
use backhaul_sink_bigquery::BigQueryError;
use backhaul_sink_bigquery::client::Rest;
use backhaul_sink_bigquery::spec::{AuthMethod, BigQuerySpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One canned answer: status and JSON body.
#[derive(Clone)]
struct Answer(u16, String);

/// A one-connection-at-a-time HTTP/1.1 server: answers `POST …/jobs` with `insert` and
/// `GET …/jobs/<id>` with `get`, and records every request line.
struct Replay {
    base_url: String,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Replay {
    async fn start(insert: Answer, get: Answer) -> Replay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/bigquery/v2", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                // Read head and body (Content-Length) of one request.
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                let line = text.lines().next().unwrap_or_default().to_string();
                log.lock().unwrap().push(line.clone());
                let Answer(status, body) = if line.starts_with("POST") {
                    insert.clone()
                } else {
                    get.clone()
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        Replay { base_url, seen, task }
    }

    async fn rest(&self) -> Rest {
        Rest::connect(&{
            let mut spec = BigQuerySpec::new("acme-analytics", "sales", "orders");
            spec.location = Some("EU".into());
            spec.base_url = Some(self.base_url.clone());
            spec.auth = AuthMethod::None;
            spec.job_timeout = Some("1m".into());
            spec
        })
        .await
        .unwrap()
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

const JOB: &str = "backhaul_sales_orders_orders-bq_c000003_a002";

fn done_job(error: Option<&str>) -> String {
    let status = match error {
        None => r#"{"state":"DONE"}"#.to_string(),
        Some(e) => format!(
            r#"{{"state":"DONE","errorResult":{e},"errors":[{e},{{"reason":"invalid","message":"Error while reading data, error message: Parquet column 'amount' has type INT64 which does not match the target cpp_type DOUBLE. File: gs://acme-backhaul-stage/orders/part-0000.parquet"}}]}}"#
        ),
    };
    format!(
        r#"{{"kind":"bigquery#job","id":"acme-analytics:EU.{JOB}","jobReference":{{"projectId":"acme-analytics","jobId":"{JOB}","location":"EU"}},"configuration":{{"jobType":"LOAD"}},"status":{status}}}"#
    )
}

/// BigQuery's answer to a `jobs.insert` whose job id exists (shape of the public error docs).
fn duplicate() -> Answer {
    Answer(
        409,
        format!(
            r#"{{"error":{{"code":409,"message":"Already Exists: Job acme-analytics:EU.{JOB}","errors":[{{"message":"Already Exists: Job acme-analytics:EU.{JOB}","domain":"global","reason":"duplicate"}}],"status":"ALREADY_EXISTS"}}}}"#
        ),
    )
}

#[tokio::test]
async fn a_retried_insert_with_the_same_job_id_waits_for_the_existing_job() {
    let server = Replay::start(duplicate(), Answer(200, done_job(None))).await;
    let rest = server.rest().await;
    let finished = rest
        .run_load_job(JOB, serde_json::json!({"sourceFormat": "PARQUET"}))
        .await
        .unwrap();
    assert_eq!(finished.job_id, JOB);
    let requests = server.requests();
    // One insert (answered 409), then the existing job is read: nothing is inserted again.
    assert_eq!(
        requests.iter().filter(|r| r.starts_with("POST")).count(),
        1,
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.starts_with(&format!(
            "GET /bigquery/v2/projects/acme-analytics/jobs/{JOB}?location=EU"
        ))),
        "{requests:?}"
    );
}

#[tokio::test]
async fn quota_answers_are_throttled() {
    let bodies = [
        (
            403,
            r#"{"error":{"code":403,"message":"Quota exceeded: Your table exceeded quota for imports or query appends per table. For more information, see https://cloud.google.com/bigquery/docs/troubleshoot-quotas","errors":[{"message":"Quota exceeded: Your table exceeded quota for imports or query appends per table.","domain":"global","reason":"quotaExceeded"}],"status":"PERMISSION_DENIED"}}"#,
        ),
        (
            403,
            r#"{"error":{"code":403,"message":"Exceeded rate limits: too many table update operations for this table.","errors":[{"message":"Exceeded rate limits: too many table update operations for this table.","domain":"global","reason":"rateLimitExceeded"}],"status":"PERMISSION_DENIED"}}"#,
        ),
        (
            429,
            r#"{"error":{"code":429,"message":"Too many requests","errors":[],"status":"RESOURCE_EXHAUSTED"}}"#,
        ),
    ];
    for (status, body) in bodies {
        let server = Replay::start(Answer(status, body.into()), Answer(404, "{}".into())).await;
        let e = server
            .rest()
            .await
            .run_load_job(JOB, serde_json::json!({}))
            .await
            .unwrap_err();
        assert_eq!(e.class(), ErrorClass::Throttled, "{e}");
        let core = backhaul_core::Error::from(e);
        assert_eq!(core.class(), ErrorClass::Throttled, "{core}");
        assert!(core.to_string().contains("xceeded") || status == 429, "{core}");
    }
}

#[tokio::test]
async fn a_failed_load_job_surfaces_its_error_result_classified() {
    let error = r#"{"reason":"invalid","message":"Error while reading data, error message: Parquet column 'amount' has type INT64 which does not match the target cpp_type DOUBLE."}"#;
    let inserted = Answer(200, done_job(None));
    let server = Replay::start(inserted, Answer(200, done_job(Some(error)))).await;
    let e = server
        .rest()
        .await
        .run_load_job(JOB, serde_json::json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, BigQueryError::JobFailed { reason, .. } if reason == "invalid"),
        "{e}"
    );
    assert_eq!(e.class(), ErrorClass::Permanent);
    let shown = backhaul_core::Error::from(e).to_string();
    assert!(
        shown.contains(JOB) && shown.contains("Parquet column 'amount'"),
        "{shown}"
    );

    let backend = r#"{"reason":"backendError","message":"Backend error. Job aborted."}"#;
    let server = Replay::start(Answer(200, done_job(None)), Answer(200, done_job(Some(backend)))).await;
    let e = server
        .rest()
        .await
        .run_load_job(JOB, serde_json::json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
}
