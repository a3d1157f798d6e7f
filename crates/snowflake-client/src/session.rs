//! Login, session lifetime and statements.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::error::Result;

/// A secret string: its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

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

/// One logged-in Snowflake session. Statements on one client run in that session, so
/// `BEGIN … COMMIT` spans calls. Clone is not offered: open one client per concurrent
/// transaction.
pub struct Client {
    _private: (),
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Logs in. Wrong credentials fail once with [`crate::Error::Auth`] (never retried).
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let _ = config;
        todo!("login-request")
    }

    /// Runs one statement and returns its whole result (polling a statement that outlives
    /// one request, downloading result chunks). The session token is renewed when it expires.
    pub async fn query(&self, sql: &str) -> Result<QueryResult> {
        let _ = sql;
        todo!("query-request")
    }

    /// Runs one statement and returns the response's `data` object as the server sent it
    /// (for PUT, whose answer is stage information, not rows). Same retries, polling and
    /// token renewal as [`Client::query`].
    pub(crate) async fn query_data(&self, sql: &str) -> Result<serde_json::Value> {
        let _ = sql;
        todo!("query-request, raw data")
    }

    /// Keeps the session alive.
    pub async fn heartbeat(&self) -> Result<()> {
        todo!("heartbeat")
    }

    /// Logs out.
    pub async fn close(self) -> Result<()> {
        todo!("logout")
    }
}
