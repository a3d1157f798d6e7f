//! Login, session lifetime and statements.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use crate::error::codes::{MASTER_TOKEN_EXPIRED, QUERY_IN_PROGRESS, QUERY_IN_PROGRESS_ASYNC, SESSION_EXPIRED};
use crate::error::{Error, Result};
use crate::http::{Answer, Request, Transport, endpoint_of, header_map, server_message};
use crate::keypair::{self, KeyPairSigner};
use crate::result::{self, RowType};

pub use backhaul_core::secret::Secret;

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// User and password.
    Password(Secret),
    /// Key-pair authentication: a JWT signed with the user's RSA private key (PKCS#8 PEM,
    /// optionally encrypted with `passphrase`).
    KeyPair {
        /// The PEM file.
        private_key_path: PathBuf,
        /// The passphrase of an encrypted key.
        passphrase: Option<Secret>,
    },
}

/// Retries of one HTTP request that failed transiently (5xx, 429, network).
#[derive(Debug, Clone)]
pub struct RetrySettings {
    /// Attempts in all, including the first.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time, with jitter.
    pub base_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(16),
        }
    }
}

/// Everything needed to open a session.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Where the server is: `https://<account>.snowflakecomputing.com` unless overridden
    /// (private link, a test server).
    pub base_url: String,
    /// The account identifier (`orgname-account` or the locator).
    pub account: String,
    /// The login name.
    pub user: String,
    /// How to authenticate.
    pub auth: Auth,
    /// Session defaults.
    pub database: Option<String>,
    /// Session defaults.
    pub schema: Option<String>,
    /// Session defaults.
    pub warehouse: Option<String>,
    /// Session defaults.
    pub role: Option<String>,
    /// Session parameters sent at login (e.g. `QUERY_TAG`).
    pub session_parameters: BTreeMap<String, serde_json::Value>,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// How long a statement may run before the client gives up polling it.
    pub statement_timeout: Duration,
    /// Retries of transient HTTP failures.
    pub retry: RetrySettings,
}

impl ClientConfig {
    /// A configuration with the account URL as base URL and default timeouts and retries:
    /// 60 s per request, 1 h per statement.
    pub fn new(account: impl Into<String>, user: impl Into<String>, auth: Auth) -> ClientConfig {
        let account = account.into();
        ClientConfig {
            base_url: ClientConfig::default_base_url(&account),
            account,
            user: user.into(),
            auth,
            database: None,
            schema: None,
            warehouse: None,
            role: None,
            session_parameters: BTreeMap::new(),
            request_timeout: Duration::from_secs(60),
            statement_timeout: Duration::from_secs(3600),
            retry: RetrySettings::default(),
        }
    }

    /// The account URL `https://<account>.snowflakecomputing.com`.
    pub fn default_base_url(account: &str) -> String {
        format!("https://{account}.snowflakecomputing.com")
    }
}

/// The result of one statement, decoded with the workspace's arrow.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Snowflake's query id.
    pub query_id: String,
    /// The result's schema (Snowflake types mapped to exact Arrow types).
    pub schema: SchemaRef,
    /// All result rows, in order (inline rowset first, then the downloaded chunks).
    pub batches: Vec<RecordBatch>,
    /// Rows inserted/updated/deleted for DML, when the server reports them.
    pub rows_affected: Option<u64>,
}

impl QueryResult {
    /// Total rows in the result.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// The tokens of a logged-in session.
#[derive(Clone)]
struct Tokens {
    session: Secret,
    master: Option<Secret>,
}

/// One logged-in Snowflake session. Statements on one client run in that session, so
/// `BEGIN … COMMIT` spans calls. Clone is not offered: open one client per concurrent
/// transaction.
pub struct Client {
    transport: Transport,
    base: Url,
    config: ClientConfig,
    signer: Option<KeyPairSigner>,
    tokens: std::sync::Mutex<Tokens>,
    /// Serializes token renewal, so concurrent statements renew once.
    renewal: tokio::sync::Mutex<()>,
    sequence: AtomicU64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base.as_str())
            .field("account", &self.config.account)
            .field("user", &self.config.user)
            .finish_non_exhaustive()
    }
}

/// Statement types whose first result row counts changed rows (INSERT, UPDATE, DELETE,
/// MERGE, multi-table INSERT), as the official connectors read `statementTypeId`.
const DML_STATEMENT_TYPES: std::ops::RangeInclusive<i64> = 0x3000..=0x3FFF;

/// Result chunks downloaded at once.
const CHUNK_DOWNLOADS: usize = 4;

impl Client {
    /// Logs in. Wrong credentials fail once with [`crate::Error::Auth`] (never retried).
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let base = Url::parse(&config.base_url).map_err(|e| Error::Config {
            field: "base_url".into(),
            message: format!("{:?} is not a URL: {e}", config.base_url),
        })?;
        check_scheme(&base)?;
        let signer = match &config.auth {
            Auth::Password(_) => None,
            Auth::KeyPair {
                private_key_path,
                passphrase,
            } => Some(KeyPairSigner::from_pem_file(private_key_path, passphrase.as_ref())?),
        };
        let transport = Transport::new(config.request_timeout, config.retry.clone())?;
        let mut client = Client {
            transport,
            base,
            config,
            signer,
            tokens: std::sync::Mutex::new(Tokens {
                session: Secret::new(""),
                master: None,
            }),
            renewal: tokio::sync::Mutex::new(()),
            sequence: AtomicU64::new(1),
        };
        let tokens = client.login().await?;
        *client.tokens.get_mut().expect("not poisoned") = tokens;
        Ok(client)
    }

    /// Runs one statement and returns its whole result (polling a statement that outlives
    /// one request, downloading result chunks). The session token is renewed when it expires.
    pub async fn query(&self, sql: &str) -> Result<QueryResult> {
        let data = self.query_data(sql).await?;
        self.decode_result(data).await
    }

    /// Runs one statement and returns the response's `data` object as the server sent it
    /// (for PUT, whose answer is stage information, not rows). Same retries, polling and
    /// token renewal as [`Client::query`].
    pub(crate) async fn query_data(&self, sql: &str) -> Result<Value> {
        // One request id for every retry of this statement: the server runs it once.
        let request_id = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "sqlText": sql,
            "asyncExec": false,
            "sequenceId": self.sequence.fetch_add(1, Ordering::Relaxed),
            "isInternal": false,
            "queryContextDTO": {},
        });
        let mut url = self.url("/queries/v1/query-request")?;
        url.query_pairs_mut().append_pair("requestId", &request_id);
        let started = tokio::time::Instant::now();
        let mut answer = self.call(Method::POST, url, Some(&body)).await?;
        let mut polls = 0u32;
        while let Some(code) = answer_code(&answer).filter(|c| *c == QUERY_IN_PROGRESS || *c == QUERY_IN_PROGRESS_ASYNC)
        {
            let data = &answer["data"];
            let query_id = data["queryId"].as_str().unwrap_or_default().to_string();
            let result_url = data["getResultUrl"]
                .as_str()
                .ok_or_else(|| Error::Protocol(format!("statement in progress (code {code}) without getResultUrl")))?;
            let waited = started.elapsed();
            if waited >= self.config.statement_timeout {
                // Left running, the statement could still commit after the caller gave up
                // on it (and retried it elsewhere): ask the server to cancel it.
                self.abort(sql, &request_id).await;
                return Err(Error::StatementTimeout { query_id, waited });
            }
            let delay = poll_delay(&self.config.retry, polls).min(self.config.statement_timeout - waited);
            polls += 1;
            tracing::debug!(%query_id, ?delay, "snowflake statement still running; polling");
            tokio::time::sleep(delay).await;
            let url = self.url(result_url)?;
            answer = self.call(Method::GET, url, None).await?;
        }
        if answer["success"].as_bool() != Some(true) {
            return Err(statement_error(&answer));
        }
        match answer.get_mut("data").map(Value::take) {
            Some(data @ Value::Object(_)) => Ok(data),
            _ => Err(Error::Protocol("a successful statement answer without data".into())),
        }
    }

    /// Asks the server to cancel the statement sent with `request_id` (best effort: a failure
    /// is logged, the caller already has its error).
    async fn abort(&self, sql: &str, request_id: &str) {
        let cancel = async {
            let mut url = self.url("/queries/v1/abort-request")?;
            url.query_pairs_mut()
                .append_pair("requestId", &uuid::Uuid::new_v4().to_string());
            let body = json!({"sqlText": sql, "requestId": request_id});
            let answer = self.call(Method::POST, url, Some(&body)).await?;
            if answer["success"].as_bool() == Some(false) {
                return Err(statement_error(&answer));
            }
            Ok(())
        };
        if let Err(error) = cancel.await {
            tracing::warn!(%error, "cancelling a snowflake statement that ran past statement_timeout failed");
        }
    }

    /// Keeps the session alive.
    pub async fn heartbeat(&self) -> Result<()> {
        let mut url = self.url("/session/heartbeat")?;
        url.query_pairs_mut()
            .append_pair("requestId", &uuid::Uuid::new_v4().to_string());
        let answer = self.call(Method::POST, url, None).await?;
        if answer["success"].as_bool() == Some(false) {
            return Err(statement_error(&answer));
        }
        Ok(())
    }

    /// Logs out.
    pub async fn close(self) -> Result<()> {
        let mut url = self.url("/session")?;
        url.query_pairs_mut()
            .append_pair("delete", "true")
            .append_pair("requestId", &uuid::Uuid::new_v4().to_string());
        let token = self.session_token();
        let answer = self
            .transport
            .send(Request {
                method: Method::POST,
                url,
                token: Some(token.expose()),
                body: None,
                headers: HeaderMap::new(),
                snowflake_params: true,
            })
            .await?;
        let json = self.answer_json(&answer, "/session")?;
        // An expired session is as good as closed.
        if json["success"].as_bool() == Some(false) && answer_code(&json) != Some(SESSION_EXPIRED) {
            return Err(statement_error(&json));
        }
        Ok(())
    }

    /// One login-request; any refusal is final (no retries of an auth answer).
    async fn login(&self) -> Result<Tokens> {
        let config = &self.config;
        let account = keypair::jwt_account(&config.account);
        let mut data = json!({
            "CLIENT_APP_ID": "backhaul",
            "CLIENT_APP_VERSION": env!("CARGO_PKG_VERSION"),
            "SVN_REVISION": "",
            "ACCOUNT_NAME": account,
            "LOGIN_NAME": config.user,
            "CLIENT_ENVIRONMENT": {
                "APPLICATION": "backhaul",
                "OS": std::env::consts::OS,
                "OS_VERSION": "",
            },
            // fakesnow answers HTTP 500 without this key; Snowflake takes it empty.
            "SESSION_PARAMETERS": config.session_parameters,
        });
        match (&config.auth, &self.signer) {
            (Auth::Password(password), _) => {
                data["PASSWORD"] = Value::String(password.expose().to_string());
            }
            (Auth::KeyPair { .. }, Some(signer)) => {
                data["AUTHENTICATOR"] = Value::String("SNOWFLAKE_JWT".into());
                data["TOKEN"] = Value::String(signer.token(&config.account, &config.user, SystemTime::now())?);
            }
            (Auth::KeyPair { .. }, None) => unreachable!("the key is loaded in connect"),
        }
        let body = json!({ "data": data });
        let mut url = self.url("/session/v1/login-request")?;
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("request_id", &uuid::Uuid::new_v4().to_string());
            for (key, value) in [
                ("databaseName", &config.database),
                ("schemaName", &config.schema),
                ("warehouse", &config.warehouse),
                ("roleName", &config.role),
            ] {
                if let Some(value) = value {
                    pairs.append_pair(key, value);
                }
            }
        }
        let answer = self
            .transport
            .send(Request {
                method: Method::POST,
                url,
                token: None,
                body: Some(&body),
                headers: HeaderMap::new(),
                snowflake_params: true,
            })
            .await?;
        let status = answer.status;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Auth {
                code: answer_code_of_body(&answer.body).unwrap_or_else(|| format!("HTTP {}", status.as_u16())),
                message: server_message(&answer.body),
            });
        }
        let json = self.answer_json(&answer, "/session/v1/login-request")?;
        if json["success"].as_bool() != Some(true) {
            return Err(Error::Auth {
                code: answer_code(&json).unwrap_or("").to_string(),
                message: json["message"].as_str().unwrap_or("login refused").to_string(),
            });
        }
        let token = json["data"]["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Protocol("login answer without a session token".into()))?;
        Ok(Tokens {
            session: Secret::new(token),
            master: json["data"]["masterToken"].as_str().map(Secret::new),
        })
    }

    /// One authenticated exchange with Snowflake's REST API, renewing the session token when
    /// the server says it expired. Returns the answer's JSON (success or not).
    async fn call(&self, method: Method, url: Url, body: Option<&Value>) -> Result<Value> {
        let endpoint = url.path().to_string();
        let mut renewed = false;
        loop {
            let token = self.session_token();
            let answer = self
                .transport
                .send(Request {
                    method: method.clone(),
                    url: url.clone(),
                    token: Some(token.expose()),
                    body,
                    headers: HeaderMap::new(),
                    snowflake_params: true,
                })
                .await?;
            let code = answer_code_of_body(&answer.body);
            if code.as_deref() == Some(SESSION_EXPIRED) && !renewed {
                self.renew(&token).await?;
                renewed = true;
                continue;
            }
            if answer.status == StatusCode::UNAUTHORIZED || answer.status == StatusCode::FORBIDDEN {
                return Err(Error::Auth {
                    code: code.unwrap_or_else(|| format!("HTTP {}", answer.status.as_u16())),
                    message: server_message(&answer.body),
                });
            }
            return self.answer_json(&answer, &endpoint);
        }
    }

    /// Renews the session token with the master token (`/session/token-request`), or logs
    /// in again when the master token expired too. Does nothing when another statement
    /// renewed `expired` meanwhile.
    async fn renew(&self, expired: &Secret) -> Result<()> {
        let _guard = self.renewal.lock().await;
        let current = self.tokens.lock().expect("not poisoned").clone();
        if current.session != *expired {
            return Ok(());
        }
        let Some(master) = current.master else {
            let tokens = self.login().await?;
            *self.tokens.lock().expect("not poisoned") = tokens;
            return Ok(());
        };
        let mut url = self.url("/session/token-request")?;
        url.query_pairs_mut()
            .append_pair("requestId", &uuid::Uuid::new_v4().to_string());
        let body = json!({"oldSessionToken": expired.expose(), "requestType": "RENEW"});
        let answer = self
            .transport
            .send(Request {
                method: Method::POST,
                url,
                token: Some(master.expose()),
                body: Some(&body),
                headers: HeaderMap::new(),
                snowflake_params: true,
            })
            .await?;
        let json = self.answer_json(&answer, "/session/token-request")?;
        if json["success"].as_bool() == Some(true) {
            let data = &json["data"];
            let session = data["sessionToken"]
                .as_str()
                .ok_or_else(|| Error::Protocol("token renewal answer without sessionToken".into()))?;
            let master = data["masterToken"].as_str().map(Secret::new).or(Some(master));
            *self.tokens.lock().expect("not poisoned") = Tokens {
                session: Secret::new(session),
                master,
            };
            tracing::debug!("snowflake session token renewed");
            return Ok(());
        }
        if answer_code(&json) == Some(MASTER_TOKEN_EXPIRED) {
            tracing::debug!("snowflake master token expired; logging in again");
            let tokens = self.login().await?;
            *self.tokens.lock().expect("not poisoned") = tokens;
            return Ok(());
        }
        Err(Error::Auth {
            code: answer_code(&json).unwrap_or("").to_string(),
            message: json["message"]
                .as_str()
                .unwrap_or("session renewal refused")
                .to_string(),
        })
    }

    fn session_token(&self) -> Secret {
        self.tokens.lock().expect("not poisoned").session.clone()
    }

    /// `path` (which may carry a query string, e.g. a `getResultUrl`) on the base URL.
    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .map_err(|e| Error::Protocol(format!("cannot build a URL for {path:?}: {e}")))
    }

    /// The JSON of an answer that is a protocol answer (HTTP 200), or the HTTP error.
    fn answer_json(&self, answer: &Answer, endpoint: &str) -> Result<Value> {
        if answer.status != StatusCode::OK {
            return Err(Error::Http {
                status: answer.status.as_u16(),
                endpoint: endpoint.to_string(),
                message: server_message(&answer.body),
            });
        }
        answer.json(endpoint)
    }

    /// Decodes a statement's `data` into batches: inline rowset first, then the chunks in
    /// order. Decoding runs on the blocking pool, off the IO runtime.
    async fn decode_result(&self, data: Value) -> Result<QueryResult> {
        // Snowflake sends `rowtype`; the official Go driver reads keys case-insensitively, and
        // its recorded answers also use `rowType`.
        let row_types: Vec<RowType> = match data.get("rowtype").or_else(|| data.get("rowType")) {
            Some(value) if !value.is_null() => serde_json::from_value(value.clone())
                .map_err(|e| Error::Protocol(format!("unreadable rowtype: {e}")))?,
            _ => Vec::new(),
        };
        let row_types = Arc::new(row_types);
        let schema = result::schema_of(&row_types)?;
        let arrow_format = data["queryResultFormat"]
            .as_str()
            .is_some_and(|f| f.eq_ignore_ascii_case("arrow"));
        let query_id = data["queryId"].as_str().unwrap_or_default().to_string();
        let statement_type = data["statementTypeId"].as_i64();

        let inline = {
            let (row_types, schema) = (row_types.clone(), schema.clone());
            let rowset_base64 = data["rowsetBase64"].as_str().map(str::to_string);
            let rowset = data.get("rowset").cloned();
            blocking(move || {
                if arrow_format {
                    match rowset_base64 {
                        Some(text) if !text.is_empty() => result::decode_base64_rowset(&text, &row_types, &schema),
                        _ => Ok(Vec::new()),
                    }
                } else {
                    let rows = json_rows(rowset.unwrap_or(Value::Null))?;
                    if rows.is_empty() {
                        return Ok(Vec::new());
                    }
                    Ok(vec![result::decode_json_rowset(&rows, &row_types, &schema)?])
                }
            })
            .await?
        };
        let mut batches = inline;

        let chunk_urls: Vec<String> = data["chunks"]
            .as_array()
            .map(|chunks| {
                chunks
                    .iter()
                    .filter_map(|c| c["url"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !chunk_urls.is_empty() {
            let headers = chunk_headers(&data)?;
            let mut downloads = futures::stream::iter(chunk_urls.into_iter().map(|url| {
                let headers = headers.clone();
                async move { self.download_chunk(&url, headers).await }
            }))
            .buffered(CHUNK_DOWNLOADS);
            while let Some(bytes) = downloads.next().await {
                let bytes = bytes?;
                let (row_types, schema) = (row_types.clone(), schema.clone());
                let decoded = blocking(move || {
                    let bytes = gunzip_if_gzipped(bytes)?;
                    if arrow_format {
                        result::decode_arrow_stream(&bytes, &row_types, &schema)
                    } else {
                        // A JSON chunk is the rows without the enclosing brackets.
                        let mut text = Vec::with_capacity(bytes.len() + 2);
                        text.push(b'[');
                        text.extend_from_slice(&bytes);
                        text.push(b']');
                        let rows: Vec<Vec<Option<String>>> = serde_json::from_slice(&text)
                            .map_err(|e| Error::Protocol(format!("unreadable JSON result chunk: {e}")))?;
                        Ok(vec![result::decode_json_rowset(&rows, &row_types, &schema)?])
                    }
                })
                .await?;
                batches.extend(decoded);
            }
        }

        let rows_affected = statement_type
            .filter(|t| DML_STATEMENT_TYPES.contains(t))
            .and_then(|_| first_row_sum(&batches));
        Ok(QueryResult {
            query_id,
            schema,
            batches,
            rows_affected,
        })
    }

    /// One result chunk from cloud storage (a presigned URL: no session token).
    async fn download_chunk(&self, url: &str, headers: HeaderMap) -> Result<bytes::Bytes> {
        let url = Url::parse(url).map_err(|_| Error::Protocol("a result chunk URL is not a URL".into()))?;
        let endpoint = endpoint_of(&url);
        let answer = self
            .transport
            .send(Request {
                method: Method::GET,
                url,
                token: None,
                body: None,
                headers,
                snowflake_params: false,
            })
            .await?;
        if answer.status != StatusCode::OK {
            return Err(Error::Http {
                status: answer.status.as_u16(),
                endpoint,
                message: server_message(&answer.body),
            });
        }
        Ok(answer.body)
    }
}

/// TLS, except to this machine: credentials and tokens never cross a network in clear.
fn check_scheme(base: &Url) -> Result<()> {
    let loopback = base.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match base.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(Error::Config {
            field: "base_url".into(),
            message: format!("{base} must be an https:// URL (plain http:// only to localhost, for test servers)"),
        }),
    }
}

/// The delay before poll number `poll` (0-based) of a running statement: from the retry
/// settings' base delay, doubling, capped at their maximum.
fn poll_delay(settings: &RetrySettings, poll: u32) -> Duration {
    let factor = 1u32.checked_shl(poll).unwrap_or(u32::MAX);
    settings.base_delay.saturating_mul(factor).min(settings.max_delay)
}

/// The `code` of an answer, when it has one.
fn answer_code(json: &Value) -> Option<&str> {
    json["code"].as_str()
}

fn answer_code_of_body(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|json| answer_code(&json).map(str::to_string))
}

/// The error of a `success: false` answer to a statement or session call: a refused
/// session (Snowflake's 390xxx codes) is an authentication failure, anything else a
/// statement failure with the server's code, SQLSTATE and message.
fn statement_error(json: &Value) -> Error {
    let data = &json["data"];
    let code = data["errorCode"]
        .as_str()
        .or_else(|| answer_code(json))
        .unwrap_or("")
        .to_string();
    let message = json["message"].as_str().unwrap_or("statement failed").to_string();
    if code.starts_with("390") {
        return Error::Auth { code, message };
    }
    Error::Sql {
        code,
        sql_state: data["sqlState"].as_str().unwrap_or("").to_string(),
        message,
        query_id: data["queryId"].as_str().map(str::to_string),
    }
}

/// The headers a result chunk download needs: the server's `chunkHeaders`, or else the
/// SSE-C headers built from `qrmk`.
fn chunk_headers(data: &Value) -> Result<HeaderMap> {
    if let Some(map) = data["chunkHeaders"].as_object().filter(|m| !m.is_empty()) {
        return header_map(
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())),
        );
    }
    match data["qrmk"].as_str() {
        Some(qrmk) => header_map([
            (
                "x-amz-server-side-encryption-customer-algorithm".to_string(),
                "AES256".to_string(),
            ),
            (
                "x-amz-server-side-encryption-customer-key".to_string(),
                qrmk.to_string(),
            ),
        ]),
        None => Ok(HeaderMap::new()),
    }
}

fn json_rows(rowset: Value) -> Result<Vec<Vec<Option<String>>>> {
    if rowset.is_null() {
        return Ok(Vec::new());
    }
    serde_json::from_value(rowset).map_err(|e| Error::Protocol(format!("unreadable JSON rowset: {e}")))
}

fn gunzip_if_gzipped(bytes: bytes::Bytes) -> Result<bytes::Bytes> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
        .map_err(|e| Error::Protocol(format!("result chunk is not valid gzip: {e}")))?;
    Ok(out.into())
}

/// The sum of the integer columns of the first row (a DML result: rows inserted, updated…).
fn first_row_sum(batches: &[RecordBatch]) -> Option<u64> {
    let batch = batches.iter().find(|b| b.num_rows() > 0)?;
    let mut sum = 0u64;
    for column in batch.columns() {
        let Ok(ints) = arrow::compute::cast(&column.slice(0, 1), &arrow::datatypes::DataType::Int64) else {
            continue;
        };
        let ints = ints.as_primitive::<arrow::datatypes::Int64Type>();
        if ints.is_valid(0) {
            sum += u64::try_from(ints.value(0)).ok()?;
        }
    }
    Some(sum)
}

/// Runs CPU work on the blocking pool and waits for it.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Protocol(format!("result decoding panicked: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        let config = ClientConfig::new("acct", "user", Auth::Password(secret));
        assert!(!format!("{config:?}").contains("hunter2"));
        let key_pair = Auth::KeyPair {
            private_key_path: "/keys/rsa.p8".into(),
            passphrase: Some(Secret::new("pass-phrase")),
        };
        assert!(!format!("{key_pair:?}").contains("pass-phrase"));
    }

    #[test]
    fn a_client_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Client>();
    }

    #[test]
    fn polls_back_off_to_the_retry_cap() {
        let settings = RetrySettings {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        let delays: Vec<_> = (0..4).map(|poll| poll_delay(&settings, poll).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        for ok in [
            "https://acct.snowflakecomputing.com",
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:2",
        ] {
            assert!(check_scheme(&Url::parse(ok).unwrap()).is_ok(), "{ok}");
        }
        for refused in [
            "http://acct.snowflakecomputing.com",
            "http://10.0.0.1",
            "ftp://localhost",
        ] {
            let error = check_scheme(&Url::parse(refused).unwrap()).unwrap_err();
            assert!(
                matches!(error, Error::Config { ref field, .. } if field == "base_url"),
                "{refused}"
            );
        }
    }

    #[test]
    fn the_default_base_url_is_the_account_url() {
        let config = ClientConfig::new("myorg-myacct", "u", Auth::Password(Secret::new("p")));
        assert_eq!(config.base_url, "https://myorg-myacct.snowflakecomputing.com");
    }
}
