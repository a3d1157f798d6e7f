//! The REST calls the destination makes: `gcp_bigquery_client` for datasets, tables, jobs and
//! queries, and one request of our own for load jobs, because the crate's
//! `JobConfigurationLoad` has no `parquetOptions` (list inference): that job's JSON is built
//! here and sent with the crate's token source.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gcp_bigquery_client::Client;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::job::Job;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_row::TableRow;
use serde_json::Value;

use crate::error::{BigQueryError, Result};
use crate::spec::BigQuerySpec;

/// Longest a single HTTP request may take (jobs run server-side and are polled).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one `jobs.query` / `getQueryResults` call waits server-side for a result.
const QUERY_WAIT_MS: i32 = 10_000;
/// First and longest pause between polls of a running job.
const POLL_FIRST: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(5);

/// A connected REST client for one project (and location).
#[derive(Clone)]
pub struct Rest {
    client: Client,
    http: reqwest::Client,
    auth: Arc<dyn Authenticator>,
    base_url: String,
    project: String,
    location: Option<String>,
    job_timeout: Duration,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("base_url", &self.base_url)
            .field("project", &self.project)
            .field("location", &self.location)
            .field("auth", &"***")
            .finish()
    }
}

/// A job's final state.
#[derive(Debug, Clone)]
pub struct FinishedJob {
    /// The job id.
    pub job_id: String,
    /// The job as BigQuery reports it.
    pub job: Job,
}

impl Rest {
    /// Builds the token source and the client (reads the key file, if any).
    pub async fn connect(spec: &BigQuerySpec) -> Result<Rest> {
        let auth = crate::auth::authenticator(spec.auth, spec.key_file.as_ref()).await?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| BigQueryError::Protocol(format!("HTTP client: {e}")))?;
        let base_url = spec.base_url().trim_end_matches('/').to_string();
        let client = gcp_bigquery_client::client_builder::ClientBuilder::new()
            .with_v2_base_url(base_url.clone())
            .with_client(http.clone())
            .build_from_authenticator(auth.clone())
            .await
            .map_err(|e| bq_error("client", e))?;
        Ok(Rest {
            client,
            http,
            auth,
            base_url,
            project: spec.project.clone(),
            location: spec.location.clone(),
            job_timeout: spec
                .job_timeout("<spec>")
                .map_err(|e| BigQueryError::Protocol(e.to_string()))?,
        })
    }

    /// The token source (shared with the Storage Write client).
    pub fn authenticator(&self) -> Arc<dyn Authenticator> {
        self.auth.clone()
    }

    /// The project.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// Fails unless the dataset exists (a clear error instead of a failed load later).
    pub async fn check_dataset(&self, dataset: &str) -> Result<()> {
        let call = format!("datasets.get {}.{dataset}", self.project);
        match self.client.dataset().get(&self.project, dataset).await {
            Ok(_) => Ok(()),
            Err(e) => Err(match bq_error(&call, e) {
                BigQueryError::Api {
                    call, status, reason, ..
                } if status == 404 => BigQueryError::Api {
                    message: format!(
                        "dataset {}.{dataset} does not exist: create it (in the job's location) before loading",
                        self.project
                    ),
                    call,
                    status,
                    reason,
                },
                other => other,
            }),
        }
    }

    /// The table, or `None` when it does not exist.
    pub async fn get_table(&self, dataset: &str, table: &str) -> Result<Option<Table>> {
        let call = format!("tables.get {dataset}.{table}");
        match self.client.table().get(&self.project, dataset, table, None).await {
            Ok(t) => Ok(Some(t)),
            Err(e) => match bq_error(&call, e) {
                e if e.is_not_found() => Ok(None),
                e => Err(e),
            },
        }
    }

    /// Creates a table; an existing one is an error (callers look first).
    pub async fn create_table(&self, table: Table) -> Result<()> {
        let call = format!("tables.insert {}", table.table_reference.table_id);
        self.client
            .table()
            .create(table)
            .await
            .map(|_| ())
            .map_err(|e| bq_error(&call, e))
    }

    /// Replaces a table's metadata (its schema: columns added) with `table`.
    pub async fn patch_table(&self, dataset: &str, table_id: &str, table: Table) -> Result<()> {
        let call = format!("tables.patch {dataset}.{table_id}");
        self.client
            .table()
            .patch(&self.project, dataset, table_id, table)
            .await
            .map(|_| ())
            .map_err(|e| bq_error(&call, e))
    }

    /// Deletes a table; a missing one is fine.
    pub async fn delete_table(&self, dataset: &str, table: &str) -> Result<()> {
        let call = format!("tables.delete {dataset}.{table}");
        match self.client.table().delete(&self.project, dataset, table).await {
            Ok(()) => Ok(()),
            Err(e) => match bq_error(&call, e) {
                e if e.is_not_found() => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Inserts a load job with id `job_id` and configuration `load` (the REST
    /// `JobConfigurationLoad` JSON), then waits for it. A job with that id that already exists
    /// (HTTP 409: a retried insert) is waited for instead of loading twice.
    pub async fn run_load_job(&self, job_id: &str, load: Value) -> Result<FinishedJob> {
        self.run_job(job_id, "load", load).await
    }

    /// Inserts job `job_id` of `kind` (`load`, `copy`) with `configuration`, or finds the one
    /// an earlier insert of the same id made, and waits for it (see [`Rest::run_load_job`]).
    pub async fn run_job(&self, job_id: &str, kind: &str, configuration: Value) -> Result<FinishedJob> {
        let mut reference = serde_json::json!({ "projectId": self.project, "jobId": job_id });
        if let Some(location) = &self.location {
            reference["location"] = Value::String(location.clone());
        }
        let body = serde_json::json!({
            "jobReference": reference,
            "configuration": {
                kind: configuration,
                "jobTimeoutMs": self.job_timeout.as_millis().to_string(),
            },
        });
        let url = format!("{}/projects/{}/jobs", self.base_url, self.project);
        let call = format!("jobs.insert {job_id}");
        let token = self.auth.access_token().await.map_err(|e| bq_error(&call, e))?;
        let resp = self
            .http
            .post(&url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .map_err(|e| network(&call, &e))?;
        let status = resp.status().as_u16();
        if status != 409 {
            let text = resp.text().await.map_err(|e| network(&call, &e))?;
            if !(200..300).contains(&status) {
                return Err(api_error(&call, status, &text));
            }
        }
        // 200: inserted; 409: it exists already (a retried insert). Either way, wait for it.
        self.wait_job(job_id).await
    }

    /// Polls job `job_id` until it is DONE; its error result becomes [`BigQueryError::JobFailed`].
    pub async fn wait_job(&self, job_id: &str) -> Result<FinishedJob> {
        let started = Instant::now();
        let mut pause = POLL_FIRST;
        loop {
            let call = format!("jobs.get {job_id}");
            let job = self
                .client
                .job()
                .get_job(&self.project, job_id, self.location.as_deref())
                .await
                .map_err(|e| bq_error(&call, e))?;
            let status = job.status.clone().unwrap_or_default();
            if status.state.as_deref() == Some("DONE") {
                if let Some(error) = status.error_result {
                    let detail = status
                        .errors
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|e| e.message)
                        .find(|m| Some(m) != error.message.as_ref());
                    let mut message = error.message.unwrap_or_default();
                    if let Some(detail) = detail {
                        message = format!("{message} ({detail})");
                    }
                    return Err(BigQueryError::JobFailed {
                        job_id: job_id.into(),
                        reason: error.reason.unwrap_or_default(),
                        message,
                    });
                }
                return Ok(FinishedJob {
                    job_id: job_id.into(),
                    job,
                });
            }
            if started.elapsed() >= self.job_timeout {
                return Err(BigQueryError::JobTimeout {
                    job_id: job_id.into(),
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// Runs `sql` (one statement or a script) and returns the rows of its result, each value
    /// as text (`None` for NULL).
    pub async fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let call = "jobs.query";
        let mut request = QueryRequest::new(sql);
        request.location = self.location.clone();
        request.timeout_ms = Some(QUERY_WAIT_MS);
        request.use_query_cache = Some(false);
        let response = self
            .client
            .job()
            .query(&self.project, request)
            .await
            .map_err(|e| bq_error(call, e))?;
        if let Some(error) = response.errors.as_ref().and_then(|e| e.first()) {
            return Err(BigQueryError::Api {
                call: call.into(),
                status: 200,
                reason: error.reason.clone().unwrap_or_default(),
                message: error.message.clone().unwrap_or_default(),
            });
        }
        if response.job_complete != Some(false) {
            return Ok(rows_text(response.rows.unwrap_or_default()));
        }
        let job_id = response
            .job_reference
            .and_then(|r| r.job_id)
            .ok_or_else(|| BigQueryError::Protocol("an unfinished query without a job id".into()))?;
        // Wait for it as a job (its errors surface there), then read its rows.
        self.wait_job(&job_id).await?;
        let params = GetQueryResultsParameters {
            location: self.location.clone(),
            timeout_ms: Some(QUERY_WAIT_MS),
            ..Default::default()
        };
        let call = format!("jobs.getQueryResults {job_id}");
        let results = self
            .client
            .job()
            .get_query_results(&self.project, &job_id, params)
            .await
            .map_err(|e| bq_error(&call, e))?;
        Ok(rows_text(results.rows.unwrap_or_default()))
    }
}

/// The rows of a REST result, values as text.
fn rows_text(rows: Vec<TableRow>) -> Vec<Vec<Option<String>>> {
    rows.into_iter()
        .map(|row| {
            row.columns
                .unwrap_or_default()
                .into_iter()
                .map(|cell| match cell.value {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s),
                    Some(other) => Some(other.to_string()),
                })
                .collect()
        })
        .collect()
}

/// A `gcp_bigquery_client` error as ours: status and reason kept for the class.
pub fn bq_error(call: &str, e: BQError) -> BigQueryError {
    match e {
        BQError::ResponseError { error } => BigQueryError::Api {
            call: call.into(),
            status: u16::try_from(error.error.code).unwrap_or(500),
            reason: error
                .error
                .errors
                .first()
                .and_then(|m| m.get("reason"))
                .cloned()
                .unwrap_or_default(),
            message: error.error.message,
        },
        BQError::RequestError(e) => network(call, &e),
        BQError::AuthError(e) => BigQueryError::Auth {
            method: "oauth".into(),
            message: e.to_string(),
        },
        BQError::YupAuthError(e) => BigQueryError::Auth {
            method: "oauth".into(),
            message: e.to_string(),
        },
        BQError::NoToken => BigQueryError::Auth {
            method: "oauth".into(),
            message: "no token".into(),
        },
        other => BigQueryError::Protocol(format!("{call}: {other}")),
    }
}

fn network(call: &str, e: &reqwest::Error) -> BigQueryError {
    if e.is_decode() {
        return BigQueryError::Protocol(format!("{call}: cannot read the answer: {e}"));
    }
    if let Some(status) = e.status() {
        return BigQueryError::Api {
            call: call.into(),
            status: status.as_u16(),
            reason: String::new(),
            message: e.to_string(),
        };
    }
    BigQueryError::Network {
        call: call.into(),
        message: e.to_string(),
    }
}

/// An error answer's JSON (`{"error": {"code", "message", "errors": [{"reason", …}]}}`) as
/// [`BigQueryError::Api`]; a body that is not such JSON keeps its start as the message.
pub fn api_error(call: &str, status: u16, body: &str) -> BigQueryError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| body.chars().take(500).collect());
    let reason = error
        .and_then(|e| e.get("errors"))
        .and_then(|e| e.get(0))
        .and_then(|e| e.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    BigQueryError::Api {
        call: call.into(),
        status,
        reason,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backhaul_core::ErrorClass;

    #[test]
    fn error_answers_keep_status_and_reason() {
        let body = r#"{"error":{"code":403,"message":"Quota exceeded: Your table exceeded quota for imports or query appends per table.","errors":[{"message":"Quota exceeded","domain":"global","reason":"quotaExceeded"}],"status":"PERMISSION_DENIED"}}"#;
        let e = api_error("jobs.insert j", 403, body);
        assert_eq!(e.reason(), Some("quotaExceeded"));
        assert_eq!(e.class(), ErrorClass::Throttled);
        assert!(e.to_string().contains("Quota exceeded: Your table"), "{e}");
        let e = api_error("jobs.insert j", 502, "<html>bad gateway</html>");
        assert_eq!(e.class(), ErrorClass::Transient);
        assert!(e.to_string().contains("bad gateway"));
    }
}
