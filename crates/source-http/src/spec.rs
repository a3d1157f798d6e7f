//! `[source]` of `kind = "http"`: a REST API described without code (docs/sources/http.md).
//!
//! Everything here is pure: parsing and [`HttpSourceSpec::validate`]. Secrets are named, never
//! held: each secret is a `<name>_env` or `<name>_file` key, read at build time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use backhaul_core::ratelimit::RatePool;
use backhaul_core::spec::database::PasswordSpec;
use backhaul_core::spec::resolve_path;
use backhaul_core::units::Span;
use backhaul_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::columns::{ColumnType, TimeFormat};
use crate::jsonpath::JsonPath;

/// Records per day the planner assumes when the spec does not say.
pub const DEFAULT_RECORDS_PER_DAY: u64 = 10_000;
/// Pages one chunk may fetch before it is stopped as a probable loop.
pub const DEFAULT_MAX_PAGES: u64 = 10_000;

/// The `[source]` section of `kind = "http"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceSpec {
    /// Scheme, host and optional path prefix every stream path is appended to.
    pub base_url: String,
    /// The one stream (API collection) this job loads.
    pub stream: StreamSpec,
    /// The declared schema of the stream's records.
    pub columns: Vec<ColumnSpec>,
    /// How the chunk's `[from, to)` is sent to the API; without it the whole collection is
    /// read and filtered by cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,
    /// How the next page is asked for; without it the first page is the only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<PaginationSpec>,
    /// How requests authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Query parameters sent with every request, e.g. `limit = "100"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Headers sent with every request (not secrets: use `auth`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The rate-limit pool every request of this source draws from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RatePool>,
    /// Extra time fetched before the window's start for late-arriving records, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback: Option<String>,
    /// The planner's estimate of records per day (an API cannot count cheaply).
    #[serde(default = "default_records_per_day")]
    pub estimated_records_per_day: u64,
    /// Pages one chunk may fetch before it fails as a probable loop.
    #[serde(default = "default_max_pages")]
    pub max_pages: u64,
    /// Seconds one request may take before it counts as a (transient) timeout.
    #[serde(default = "default_timeout")]
    pub request_timeout_seconds: u64,
    /// Retries of one request after 429, 5xx or a timeout, before the chunk fails.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// When the source stops calling an API that keeps failing.
    #[serde(default)]
    pub circuit_breaker: BreakerSpec,
    /// Where records that do not match the declared schema are written (JSONL); default
    /// `dead-letters/` next to the spec file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_dir: Option<PathBuf>,
    /// The spec file's directory, for the default dead-letter directory.
    #[serde(skip)]
    pub spec_dir: Option<PathBuf>,
    /// The job's name, which dead-letter files begin with (two jobs over one stream and
    /// window write different files); set when the spec is checked as part of a job.
    #[serde(skip)]
    pub job_name: Option<String>,
}

fn default_records_per_day() -> u64 {
    DEFAULT_RECORDS_PER_DAY
}
fn default_max_pages() -> u64 {
    DEFAULT_MAX_PAGES
}
fn default_timeout() -> u64 {
    30
}
fn default_max_retries() -> u32 {
    6
}

/// `[source.stream]`: one API collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Table name of the stream, e.g. `customers`.
    pub name: String,
    /// Path appended to `base_url`, e.g. `/v1/customers`.
    pub path: String,
    /// Where the records are in a response: `$.data`, `data.items`, or `$` for a bare array.
    pub record_selector: String,
    /// Fields identifying a record; duplicates inside a chunk keep the last one seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<String>,
    /// The timestamp field chunks are cut on; a declared `timestamp` column.
    pub cursor_field: String,
    /// How the cursor field is written in records (default: the column's `format`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_format: Option<TimeFormat>,
}

/// One declared column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Field name in the record and column name in the table.
    pub name: String,
    /// `int64`, `float64`, `string`, `bool`, `timestamp`, `date`, `json` or `decimal(p,s)`.
    #[serde(rename = "type")]
    pub column_type: String,
    /// Whether the field may be missing or `null`.
    #[serde(default = "default_true")]
    pub nullable: bool,
    /// For `timestamp`: `rfc3339` (default), `unix_seconds` or `unix_millis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TimeFormat>,
}

fn default_true() -> bool {
    true
}

/// Where the window's bounds go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowLocation {
    /// Query parameters (GET).
    #[default]
    Query,
    /// Fields of a JSON body (the request becomes a POST).
    Body,
}

/// `[source.window]`: the chunk's `[from, to)` as request parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Parameter of the inclusive start, e.g. `created[gte]`.
    pub from_param: String,
    /// Parameter of the exclusive end, e.g. `created[lt]`; absent for `updated_since`-style
    /// APIs (the source then drops records past the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_param: Option<String>,
    /// How bounds are written: `unix_seconds` (default), `unix_millis` or `rfc3339`.
    #[serde(default = "default_window_format")]
    pub format: TimeFormat,
    /// `query` (default) or `body`.
    #[serde(default, rename = "in")]
    pub location: WindowLocation,
}

fn default_window_format() -> TimeFormat {
    TimeFormat::UnixSeconds
}

/// `[source.pagination]`: how the next page is asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaginationSpec {
    /// The response carries the next page's token.
    NextToken {
        /// JSON path of the token in the response, e.g. `$.next_cursor`.
        token_path: String,
        /// Query parameter the token is sent in, e.g. `cursor`.
        param: String,
    },
    /// Stripe style: the id of the last record is sent as `starting_after`.
    LastId {
        /// Field of the record holding its id.
        #[serde(default = "default_id_field")]
        id_field: String,
        /// Query parameter the id is sent in.
        #[serde(default = "default_starting_after")]
        param: String,
        /// JSON path of the boolean telling whether more pages exist.
        #[serde(default = "default_has_more")]
        has_more_path: String,
    },
    /// `offset` and `limit` parameters.
    OffsetLimit {
        /// The offset parameter.
        #[serde(default = "default_offset")]
        offset_param: String,
        /// The limit parameter.
        #[serde(default = "default_limit")]
        limit_param: String,
        /// Records per page; a shorter page is the last.
        limit: u64,
    },
    /// A page number parameter; an empty page is the last.
    PageNumber {
        /// The page parameter.
        #[serde(default = "default_page")]
        page_param: String,
        /// The first page's number.
        #[serde(default = "default_first_page")]
        first_page: u64,
    },
    /// RFC 8288 `Link: <url>; rel="next"` headers (GitHub style).
    LinkHeader,
}

fn default_id_field() -> String {
    "id".into()
}
fn default_starting_after() -> String {
    "starting_after".into()
}
fn default_has_more() -> String {
    "$.has_more".into()
}
fn default_offset() -> String {
    "offset".into()
}
fn default_limit() -> String {
    "limit".into()
}
fn default_page() -> String {
    "page".into()
}
fn default_first_page() -> u64 {
    1
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    /// A request header.
    Header,
    /// A query parameter.
    Query,
}

/// Encoding of an HMAC signature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    /// Lower-case hex.
    #[default]
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// `[source.auth]`: how requests authenticate. Secrets are `*_env`/`*_file` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSpec {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// Environment variable holding the token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_env: Option<String>,
        /// File holding the token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_file: Option<PathBuf>,
    },
    /// A key in a header or query parameter.
    ApiKey {
        /// Header or parameter name, e.g. `X-Api-Key`.
        name: String,
        /// `header` or `query`.
        #[serde(rename = "in")]
        location: KeyLocation,
        /// Environment variable holding the key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_env: Option<String>,
        /// File holding the key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_file: Option<PathBuf>,
    },
    /// HTTP basic.
    Basic {
        /// User name.
        username: String,
        /// Environment variable holding the password.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_env: Option<String>,
        /// File holding the password.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_file: Option<PathBuf>,
    },
    /// OAuth2 client credentials grant.
    Oauth2ClientCredentials {
        /// The token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Environment variable holding the client secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret_env: Option<String>,
        /// File holding the client secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret_file: Option<PathBuf>,
        /// Requested scope.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        /// Seconds before expiry a token is refreshed.
        #[serde(default = "default_skew")]
        refresh_skew_seconds: u64,
    },
    /// OAuth2 refresh token grant.
    Oauth2RefreshToken {
        /// The token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Environment variable holding the client secret (optional for public clients).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret_env: Option<String>,
        /// File holding the client secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret_file: Option<PathBuf>,
        /// Environment variable holding the refresh token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refresh_token_env: Option<String>,
        /// File holding the refresh token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refresh_token_file: Option<PathBuf>,
        /// Seconds before expiry a token is refreshed.
        #[serde(default = "default_skew")]
        refresh_skew_seconds: u64,
    },
    /// HMAC-SHA256 over `timestamp + method + path + body`, joined by `separator`.
    Hmac {
        /// Environment variable holding the signing secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_env: Option<String>,
        /// File holding the signing secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_file: Option<PathBuf>,
        /// Header carrying the signature.
        signature_header: String,
        /// Header carrying the unix-seconds timestamp that was signed.
        timestamp_header: String,
        /// Text put before the signature in its header, e.g. `v1=`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        signature_prefix: String,
        /// Text joining the signed parts.
        #[serde(default = "default_separator")]
        separator: String,
        /// `hex` (default) or `base64`.
        #[serde(default)]
        encoding: SignatureEncoding,
        /// Optional header naming the key, with its value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_id_header: Option<String>,
        /// The key id sent in `key_id_header`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_id: Option<String>,
    },
}

fn default_skew() -> u64 {
    60
}
fn default_separator() -> String {
    "\n".into()
}

/// `[source.circuit_breaker]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// Consecutive failed requests (after their retries) that open the breaker.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Seconds the breaker stays open before one trial request is let through.
    #[serde(default = "default_open_seconds")]
    pub open_seconds: u64,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            failure_threshold: default_failure_threshold(),
            open_seconds: default_open_seconds(),
        }
    }
}

fn default_failure_threshold() -> u32 {
    5
}
fn default_open_seconds() -> u64 {
    60
}

/// A secret as the spec names it: an environment variable or a file.
pub(crate) fn secret(env: &Option<String>, file: &Option<PathBuf>) -> PasswordSpec {
    PasswordSpec {
        env: env.clone(),
        file: file.clone(),
    }
}

/// Checks that exactly one of `<key>_env` / `<key>_file` is set (`optional`: at most one).
fn check_secret(
    origin: &str,
    prefix: &str,
    key: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
    optional: bool,
) -> Result<()> {
    if env.is_some() && file.is_some() {
        return Err(Error::config(
            origin,
            format!("{prefix}.{key}_env"),
            format!("set either `{key}_env` or `{key}_file`, not both"),
        ));
    }
    if !optional && env.is_none() && file.is_none() {
        return Err(Error::config(
            origin,
            format!("{prefix}.{key}_env"),
            format!("set `{key}_env` (an environment variable) or `{key}_file`"),
        ));
    }
    if env.as_deref().is_some_and(|v| v.trim().is_empty()) {
        return Err(Error::config(
            origin,
            format!("{prefix}.{key}_env"),
            "must name an environment variable",
        ));
    }
    Ok(())
}

impl AuthSpec {
    fn validate(&self, origin: &str) -> Result<()> {
        let p = "source.auth";
        let url = |u: &str| check_url(origin, &format!("{p}.token_url"), u);
        match self {
            AuthSpec::Bearer { token_env, token_file } => {
                check_secret(origin, p, "token", token_env, token_file, false)
            }
            AuthSpec::ApiKey {
                name,
                key_env,
                key_file,
                ..
            } => {
                if name.trim().is_empty() {
                    return Err(Error::config(origin, format!("{p}.name"), "must not be empty"));
                }
                check_secret(origin, p, "key", key_env, key_file, false)
            }
            AuthSpec::Basic {
                password_env,
                password_file,
                ..
            } => check_secret(origin, p, "password", password_env, password_file, false),
            AuthSpec::Oauth2ClientCredentials {
                token_url,
                client_secret_env,
                client_secret_file,
                ..
            } => {
                url(token_url)?;
                check_secret(origin, p, "client_secret", client_secret_env, client_secret_file, false)
            }
            AuthSpec::Oauth2RefreshToken {
                token_url,
                client_secret_env,
                client_secret_file,
                refresh_token_env,
                refresh_token_file,
                ..
            } => {
                url(token_url)?;
                check_secret(origin, p, "client_secret", client_secret_env, client_secret_file, true)?;
                check_secret(origin, p, "refresh_token", refresh_token_env, refresh_token_file, false)
            }
            AuthSpec::Hmac {
                secret_env,
                secret_file,
                key_id_header,
                key_id,
                ..
            } => {
                if key_id_header.is_some() != key_id.is_some() {
                    return Err(Error::config(
                        origin,
                        format!("{p}.key_id"),
                        "set `key_id_header` and `key_id` together",
                    ));
                }
                check_secret(origin, p, "secret", secret_env, secret_file, false)
            }
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let files = match self {
            AuthSpec::Bearer { token_file: f, .. }
            | AuthSpec::ApiKey { key_file: f, .. }
            | AuthSpec::Basic { password_file: f, .. }
            | AuthSpec::Oauth2ClientCredentials {
                client_secret_file: f, ..
            }
            | AuthSpec::Hmac { secret_file: f, .. } => vec![f],
            AuthSpec::Oauth2RefreshToken {
                client_secret_file,
                refresh_token_file,
                ..
            } => vec![client_secret_file, refresh_token_file],
        };
        for path in files.into_iter().flatten() {
            resolve_path(path, base);
        }
    }
}

fn check_url(origin: &str, key: &str, url: &str) -> Result<()> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        Ok(u) => Err(Error::config(
            origin,
            key,
            format!("`{}` is not http or https", u.scheme()),
        )),
        Err(e) => Err(Error::config(origin, key, format!("`{url}` is not a URL: {e}"))),
    }
}

/// Query parameters that set the page size in common APIs (Stripe, GitHub, many others).
const PAGE_SIZE_PARAMS: [&str; 3] = ["limit", "per_page", "page_size"];

impl HttpSourceSpec {
    /// Records per page, when the spec sets it: `pagination.limit` (offset/limit), else a
    /// `limit`, `per_page` or `page_size` parameter.
    pub fn page_size(&self) -> Option<u64> {
        if let Some(PaginationSpec::OffsetLimit { limit, .. }) = &self.pagination {
            return Some(*limit);
        }
        PAGE_SIZE_PARAMS
            .iter()
            .find_map(|p| self.params.get(*p))
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
    }

    /// Pure checks; errors name `origin` and the dotted key.
    pub fn validate(&self, origin: &str) -> Result<()> {
        check_url(origin, "source.base_url", &self.base_url)?;
        let s = &self.stream;
        if !backhaul_core::spec::is_valid_identifier(&s.name) {
            return Err(Error::config(
                origin,
                "source.stream.name",
                format!("`{}` is not a valid table name", s.name),
            ));
        }
        if !s.path.starts_with('/') {
            return Err(Error::config(origin, "source.stream.path", "must start with `/`"));
        }
        JsonPath::parse(&s.record_selector).map_err(|m| Error::config(origin, "source.stream.record_selector", m))?;
        if self.columns.is_empty() {
            return Err(Error::config(origin, "source.columns", "declare at least one column"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.columns.iter().enumerate() {
            let key = format!("source.columns[{i}]");
            if !seen.insert(c.name.as_str()) {
                return Err(Error::config(
                    origin,
                    format!("{key}.name"),
                    format!("`{}` is declared twice", c.name),
                ));
            }
            let t = ColumnType::parse(&c.column_type).map_err(|m| Error::config(origin, format!("{key}.type"), m))?;
            if c.format.is_some() && t != ColumnType::Timestamp {
                return Err(Error::config(
                    origin,
                    format!("{key}.format"),
                    "only `timestamp` columns take a format",
                ));
            }
        }
        let cursor = self.columns.iter().position(|c| c.name == s.cursor_field);
        match cursor {
            None => {
                return Err(Error::config(
                    origin,
                    "source.stream.cursor_field",
                    format!("`{}` is not a declared column", s.cursor_field),
                ));
            }
            Some(i) => {
                let c = &self.columns[i];
                if ColumnType::parse(&c.column_type) != Ok(ColumnType::Timestamp) {
                    return Err(Error::config(
                        origin,
                        "source.stream.cursor_field",
                        format!("`{}` must be a `timestamp` column (chunks are time windows)", c.name),
                    ));
                }
                if let (Some(a), Some(b)) = (c.format, s.cursor_format)
                    && a != b
                {
                    return Err(Error::config(
                        origin,
                        "source.stream.cursor_format",
                        format!("differs from columns[{i}].format"),
                    ));
                }
            }
        }
        for (i, k) in s.primary_key.iter().enumerate() {
            if !self.columns.iter().any(|c| &c.name == k) {
                return Err(Error::config(
                    origin,
                    format!("source.stream.primary_key[{i}]"),
                    format!("`{k}` is not a declared column"),
                ));
            }
        }
        if let Some(lookback) = &self.lookback {
            Span::parse(lookback).map_err(|m| Error::config(origin, "source.lookback", m))?;
        }
        if let Some(p) = &self.pagination {
            p.validate(origin)?;
        }
        if let Some(auth) = &self.auth {
            auth.validate(origin)?;
        }
        if let Some(pool) = &self.rate_limit {
            pool.validate(origin, "source.rate_limit")?;
        }
        for (key, value) in [
            ("source.max_pages", self.max_pages),
            ("source.request_timeout_seconds", self.request_timeout_seconds),
            ("source.estimated_records_per_day", self.estimated_records_per_day),
            (
                "source.circuit_breaker.failure_threshold",
                u64::from(self.circuit_breaker.failure_threshold),
            ),
            ("source.circuit_breaker.open_seconds", self.circuit_breaker.open_seconds),
        ] {
            if value == 0 {
                return Err(Error::config(origin, key, "must be at least 1"));
            }
        }
        Ok(())
    }

    /// Makes secret files and the dead-letter directory relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(auth) = &mut self.auth {
            auth.resolve_paths(base);
        }
        if let Some(dir) = &mut self.dead_letter_dir {
            resolve_path(dir, base);
        }
        self.spec_dir = Some(base.to_path_buf());
    }

    /// The lookback in microseconds (0 without one). Call after `validate`.
    pub fn lookback_micros(&self) -> i64 {
        self.lookback
            .as_deref()
            .and_then(|l| Span::parse(l).ok())
            .map_or(0, |s| s.micros)
    }

    /// Where dead letters go: the key, else `dead-letters/` next to the spec, else the
    /// system's temporary directory.
    pub fn dead_letter_dir(&self) -> PathBuf {
        match (&self.dead_letter_dir, &self.spec_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(base)) => base.join("dead-letters"),
            (None, None) => std::env::temp_dir().join("backhaul-dead-letters"),
        }
    }
}

impl PaginationSpec {
    fn validate(&self, origin: &str) -> Result<()> {
        let path = |key: &str, p: &str| {
            JsonPath::parse(p)
                .map(|_| ())
                .map_err(|m| Error::config(origin, format!("source.pagination.{key}"), m))
        };
        match self {
            PaginationSpec::NextToken { token_path, .. } => path("token_path", token_path),
            PaginationSpec::LastId { has_more_path, .. } => path("has_more_path", has_more_path),
            PaginationSpec::OffsetLimit { limit: 0, .. } => {
                Err(Error::config(origin, "source.pagination.limit", "must be at least 1"))
            }
            _ => Ok(()),
        }
    }
}
