//! `[destination] kind = "snowflake"`. Every key is documented in
//! `docs/destinations/snowflake.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backhaul_core::connector::Destination;
use backhaul_core::registry::{DestinationConfig, DestinationKind, FileSizeRange, StagingPreferences};
use backhaul_core::spec::{ByteSizeText, is_valid_identifier, parse_section, resolve_path, to_settings};
use backhaul_core::units::{MIB, Span};
use backhaul_core::{Error, Result};
use backhaul_snowflake_client::{Auth, ClientConfig, RetrySettings, Secret};
use serde::{Deserialize, Serialize};

use crate::types::JsonType;

/// Default target file size: inside Snowflake's 100–250 MB (compressed) guidance.
pub const DEFAULT_FILE_SIZE: u64 = 200 * MIB;
/// Smallest target file size accepted without `allow_small_files` (Snowflake's guidance).
pub const MIN_FILE_SIZE: u64 = 100 * MIB;
/// Largest target file size accepted.
pub const MAX_FILE_SIZE: u64 = 1024 * MIB;
/// What `file_size` accepts.
const FILE_SIZES: FileSizeRange = FileSizeRange {
    default: DEFAULT_FILE_SIZE,
    min: MIN_FILE_SIZE,
    max: MAX_FILE_SIZE,
    min_reason: "Snowflake's 100MiB guidance",
};
/// Warehouse sizes the cost planner knows, as `warehouse_size` accepts them.
pub const WAREHOUSE_SIZES: [&str; 10] = ["xs", "s", "m", "l", "xl", "2xl", "3xl", "4xl", "5xl", "6xl"];

/// The Snowflake destination's kind: `[destination] kind = "snowflake"`.
pub struct SnowflakeKind;

impl DestinationKind for SnowflakeKind {
    fn kind(&self) -> &'static str {
        "snowflake"
    }

    fn parse(&self, settings: &toml::Table, origin: &str) -> Result<Box<dyn DestinationConfig>> {
        Ok(Box::new(parse_section::<SnowflakeDestinationSpec>(
            settings,
            "destination",
            origin,
        )?))
    }
}

/// A Snowflake table loaded from Parquet files through a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnowflakeDestinationSpec {
    /// Account identifier (`orgname-account` or the account locator).
    pub account: String,
    /// Server URL; default `https://<account>.snowflakecomputing.com`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Login name.
    pub user: String,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PKCS#8 PEM private key for key-pair authentication.
    #[serde(default)]
    pub private_key_path: Option<PathBuf>,
    /// Environment variable holding the private key's passphrase.
    #[serde(default)]
    pub private_key_passphrase_env: Option<String>,
    /// File holding the private key's passphrase.
    #[serde(default)]
    pub private_key_passphrase_file: Option<PathBuf>,
    /// Database of the table.
    pub database: String,
    /// Schema of the table.
    pub schema: String,
    /// Warehouse running the loads.
    pub warehouse: String,
    /// Role; the user's default role when absent.
    #[serde(default)]
    pub role: Option<String>,
    /// Destination table.
    pub table: String,
    /// `internal` (the user stage `@~`, default), `internal:<stage>` (a named internal stage)
    /// or `external:<stage>` (an external stage whose URL is the backhaul stage).
    #[serde(default)]
    pub stage: Option<String>,
    /// Target Parquet file size (compressed); default 200MiB, at most 1GiB.
    #[serde(default)]
    pub file_size: Option<ByteSizeText>,
    /// Allow `file_size` below 100MiB. Meant for tests and demos only.
    #[serde(default)]
    pub allow_small_files: bool,
    /// Warehouse size for the cost planner: xs (default), s, m, l, xl, 2xl … 6xl.
    #[serde(default)]
    pub warehouse_size: Option<String>,
    /// Keep files in the Snowflake stage after a commit (debugging).
    #[serde(default)]
    pub keep_staged_files: bool,
    /// New source columns that must not be added to an existing table (`*`: every new column).
    #[serde(default)]
    pub blocked_columns: Vec<String>,
    /// Timeout of one HTTP request; default `60s`.
    #[serde(default)]
    pub request_timeout: Option<String>,
    /// How long one statement (a COPY) may run; default `1h`.
    #[serde(default)]
    pub statement_timeout: Option<String>,
    /// Attempts of one request that failed transiently (5xx, 429, network); default 5.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// How JSON columns are stored: `variant` (default) or `varchar` (the source's text).
    #[serde(default)]
    pub json_type: Option<String>,
    /// Files uploaded at once by PUT; default 4.
    #[serde(default)]
    pub put_parallel: Option<usize>,
    /// Parquet file-format options of COPY; default `USE_VECTORIZED_SCANNER = TRUE`.
    /// Written out in the docs; only servers that refuse it need another value.
    #[serde(default)]
    pub parquet_format_options: Option<String>,
}

/// Where Snowflake reads the chunk's files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageMode {
    /// Files are PUT into an internal stage: `@~` (the user stage) or `@<name>`.
    Internal {
        /// `~` or a stage name.
        stage: String,
    },
    /// The backhaul stage is the location of the external stage `name`.
    External {
        /// The Snowflake stage name.
        stage: String,
    },
}

impl StageMode {
    /// The stage reference without `@`: `~` or the stage name.
    pub fn name(&self) -> &str {
        match self {
            StageMode::Internal { stage } | StageMode::External { stage } => stage,
        }
    }
}

/// Default `parquet_format_options`.
pub const DEFAULT_PARQUET_FORMAT_OPTIONS: &str = "USE_VECTORIZED_SCANNER = TRUE";

/// A Snowflake object name: plain identifier parts, dot-separated (`DB.SCHEMA.NAME`).
fn is_valid_object_name(name: &str) -> bool {
    name.split('.').all(is_valid_identifier)
}

impl SnowflakeDestinationSpec {
    /// The stage mode, checked.
    pub fn stage_mode(&self, origin: &str) -> Result<StageMode> {
        let text = self.stage.as_deref().unwrap_or("internal").trim();
        let err = |m: String| Err(Error::config(origin, "destination.stage", m));
        let (mode, name) = match text.split_once(':') {
            Some((m, n)) => (m, Some(n.trim())),
            None => (text, None),
        };
        match (mode, name) {
            ("internal", None) => Ok(StageMode::Internal { stage: "~".into() }),
            ("internal", Some(n)) | ("external", Some(n)) => {
                let n = n.strip_prefix('@').unwrap_or(n);
                if !is_valid_object_name(n) {
                    return err(format!("`{n}` is not a valid stage name"));
                }
                Ok(if mode == "internal" {
                    StageMode::Internal { stage: n.into() }
                } else {
                    StageMode::External { stage: n.into() }
                })
            }
            ("external", None) => err("`external` needs the Snowflake stage's name: `external:<stage>`".into()),
            _ => err(format!(
                "`{text}` is not a stage mode; use `internal`, `internal:<stage>` or `external:<stage>`"
            )),
        }
    }

    /// The target file size in bytes, checked against the allowed range.
    pub fn file_size(&self, origin: &str) -> Result<u64> {
        FILE_SIZES.check(self.file_size.as_ref(), self.allow_small_files, origin)
    }

    /// The warehouse size for the cost planner (`xs` by default).
    pub fn warehouse_size(&self) -> &str {
        self.warehouse_size.as_deref().unwrap_or("xs")
    }

    fn span(&self, origin: &str, key: &str, value: &Option<String>, default: Duration) -> Result<Duration> {
        match value {
            None => Ok(default),
            Some(text) => Span::parse(text)
                .map(|s| Duration::from_micros(s.micros as u64))
                .map_err(|m| Error::config(origin, format!("destination.{key}"), m)),
        }
    }

    /// The request timeout.
    pub fn request_timeout(&self, origin: &str) -> Result<Duration> {
        self.span(
            origin,
            "request_timeout",
            &self.request_timeout,
            Duration::from_secs(60),
        )
    }

    /// The statement timeout.
    pub fn statement_timeout(&self, origin: &str) -> Result<Duration> {
        self.span(
            origin,
            "statement_timeout",
            &self.statement_timeout,
            Duration::from_secs(3600),
        )
    }

    /// The Parquet file-format options of COPY.
    pub fn parquet_format_options(&self) -> &str {
        self.parquet_format_options
            .as_deref()
            .unwrap_or(DEFAULT_PARQUET_FORMAT_OPTIONS)
    }

    /// How JSON columns are stored.
    pub fn json_type(&self) -> JsonType {
        match self.json_type.as_deref() {
            Some("varchar") => JsonType::Varchar,
            _ => JsonType::Variant,
        }
    }

    /// Files uploaded at once by PUT.
    pub fn put_parallel(&self) -> usize {
        self.put_parallel.unwrap_or(4)
    }

    /// Whether `column` (a new source column) may not be added.
    pub fn is_blocked(&self, column: &str) -> bool {
        self.blocked_columns
            .iter()
            .any(|b| b == "*" || b.eq_ignore_ascii_case(column))
    }

    /// The client's configuration; reads the secrets (IO: build time only).
    pub fn client_config(&self) -> Result<ClientConfig> {
        let origin = "<spec>";
        let auth = match (&self.password_env, &self.password_file, &self.private_key_path) {
            (Some(var), None, None) => Auth::Password(read_env_secret(var, "destination.password_env")?),
            (None, Some(path), None) => Auth::Password(read_file_secret(path, "destination.password_file")?),
            (None, None, Some(path)) => Auth::KeyPair {
                private_key_path: path.clone(),
                passphrase: match (&self.private_key_passphrase_env, &self.private_key_passphrase_file) {
                    (Some(var), _) => Some(read_env_secret(var, "destination.private_key_passphrase_env")?),
                    (None, Some(path)) => Some(read_file_secret(path, "destination.private_key_passphrase_file")?),
                    (None, None) => None,
                },
            },
            _ => return Err(auth_error(origin)),
        };
        let retry = RetrySettings {
            max_attempts: self.max_attempts.unwrap_or(RetrySettings::default().max_attempts),
            ..RetrySettings::default()
        };
        Ok(ClientConfig {
            base_url: self
                .base_url
                .clone()
                .unwrap_or_else(|| ClientConfig::default_base_url(&self.account)),
            account: self.account.clone(),
            user: self.user.clone(),
            auth,
            database: Some(self.database.clone()),
            schema: Some(self.schema.clone()),
            warehouse: Some(self.warehouse.clone()),
            role: self.role.clone(),
            session_parameters: BTreeMap::from([(
                "QUERY_TAG".to_string(),
                serde_json::Value::String("backhaul".into()),
            )]),
            request_timeout: self.request_timeout(origin)?,
            statement_timeout: self.statement_timeout(origin)?,
            retry,
        })
    }
}

fn auth_error(origin: &str) -> Error {
    Error::config(
        origin,
        "destination.password_env",
        "set exactly one of `password_env`, `password_file` or `private_key_path`",
    )
}

fn read_env_secret(var: &str, key: &str) -> Result<Secret> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => Err(Error::config(
            "<spec>",
            key,
            format!("environment variable `{var}` is not set"),
        )),
    }
}

fn read_file_secret(path: &Path, key: &str) -> Result<Secret> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::config("<spec>", key, format!("{}: {e}", path.display())))?;
    let first = text.lines().next().unwrap_or_default().trim_end();
    if first.is_empty() {
        return Err(Error::config("<spec>", key, format!("{} is empty", path.display())));
    }
    Ok(Secret::new(first))
}

impl DestinationConfig for SnowflakeDestinationSpec {
    fn table(&self) -> &str {
        &self.table
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let err = |key: &str, m: String| Err(Error::config(origin, format!("destination.{key}"), m));
        if self.account.trim().is_empty() || self.account.contains(['/', ' ', ':']) {
            return err("account", format!("`{}` is not an account identifier", self.account));
        }
        if let Some(url) = &self.base_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return err("base_url", format!("`{url}` is not an http(s) URL"));
        }
        if self.user.trim().is_empty() {
            return err("user", "must not be empty".into());
        }
        let methods = [
            self.password_env.is_some(),
            self.password_file.is_some(),
            self.private_key_path.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() != 1 {
            return Err(auth_error(origin));
        }
        if self.private_key_path.is_none()
            && (self.private_key_passphrase_env.is_some() || self.private_key_passphrase_file.is_some())
        {
            return err(
                "private_key_passphrase_env",
                "a passphrase needs `private_key_path`".into(),
            );
        }
        if self.private_key_passphrase_env.is_some() && self.private_key_passphrase_file.is_some() {
            return err(
                "private_key_passphrase_env",
                "set `private_key_passphrase_env` or `private_key_passphrase_file`, not both".into(),
            );
        }
        for (key, value) in [
            ("database", &self.database),
            ("schema", &self.schema),
            ("warehouse", &self.warehouse),
            ("table", &self.table),
        ] {
            if !is_valid_identifier(value) {
                return err(key, format!("`{value}` is not a valid identifier"));
            }
        }
        if let Some(role) = &self.role
            && !is_valid_identifier(role)
        {
            return err("role", format!("`{role}` is not a valid identifier"));
        }
        self.stage_mode(origin)?;
        self.file_size(origin)?;
        if !WAREHOUSE_SIZES.contains(&self.warehouse_size()) {
            return err(
                "warehouse_size",
                format!(
                    "`{}` is not a warehouse size; use one of {}",
                    self.warehouse_size(),
                    WAREHOUSE_SIZES.join(", ")
                ),
            );
        }
        for (i, c) in self.blocked_columns.iter().enumerate() {
            if c != "*" && c.trim().is_empty() {
                return err(&format!("blocked_columns[{i}]"), "must not be empty".into());
            }
        }
        self.request_timeout(origin)?;
        self.statement_timeout(origin)?;
        if let Some(t) = &self.json_type
            && t != "variant"
            && t != "varchar"
        {
            return err("json_type", format!("`{t}` is not `variant` or `varchar`"));
        }
        if self.put_parallel == Some(0) {
            return err("put_parallel", "must be at least 1".into());
        }
        if self.max_attempts == Some(0) {
            return err("max_attempts", "must be at least 1".into());
        }
        if let Some(o) = &self.parquet_format_options
            && o.contains([';', '(', ')'])
        {
            return err(
                "parquet_format_options",
                "options only, e.g. `USE_VECTORIZED_SCANNER = TRUE`".into(),
            );
        }
        Ok(())
    }

    fn staging(&self) -> StagingPreferences {
        StagingPreferences {
            // Validation refused a bad size before anyone stages files.
            file_size: self.file_size("<spec>").unwrap_or(DEFAULT_FILE_SIZE),
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        for path in [
            &mut self.password_file,
            &mut self.private_key_path,
            &mut self.private_key_passphrase_file,
        ]
        .into_iter()
        .flatten()
        {
            resolve_path(path, base);
        }
    }

    fn settings(&self) -> toml::Table {
        to_settings(self)
    }

    fn build(&self) -> Result<Arc<dyn Destination>> {
        Ok(Arc::new(crate::SnowflakeDestination::new(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "account = \"acme-prod\"\nuser = \"LOADER\"\npassword_env = \"SF_PW\"\n\
        database = \"ANALYTICS\"\nschema = \"RAW\"\nwarehouse = \"LOAD_WH\"\ntable = \"ORDERS\"\n";

    fn parse(extra: &str) -> Result<Box<dyn DestinationConfig>> {
        let text = format!("{BASE}{extra}");
        SnowflakeKind.parse(&toml::from_str(&text).unwrap(), "job.toml")
    }

    fn spec(extra: &str) -> SnowflakeDestinationSpec {
        let text = format!("{BASE}{extra}");
        parse_section(&toml::from_str(&text).unwrap(), "destination", "job.toml").unwrap()
    }

    fn error_of(extra: &str) -> (String, String) {
        match parse(extra).and_then(|d| d.validate("job.toml")).unwrap_err() {
            Error::Config { field, message, .. } => (field, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_minimal_section_validates_with_defaults() {
        let d = parse("").unwrap();
        d.validate("job.toml").unwrap();
        assert_eq!(d.staging().file_size, DEFAULT_FILE_SIZE);
        let s = spec("");
        assert_eq!(
            s.stage_mode("job.toml").unwrap(),
            StageMode::Internal { stage: "~".into() }
        );
        assert_eq!(s.warehouse_size(), "xs");
        assert_eq!(s.parquet_format_options(), DEFAULT_PARQUET_FORMAT_OPTIONS);
    }

    #[test]
    fn stage_modes_parse_and_bad_ones_name_the_key() {
        assert_eq!(
            spec("stage = \"internal:LOADS\"").stage_mode("j").unwrap(),
            StageMode::Internal { stage: "LOADS".into() }
        );
        assert_eq!(
            spec("stage = \"external:@RAW.S3_LOADS\"").stage_mode("j").unwrap(),
            StageMode::External {
                stage: "RAW.S3_LOADS".into()
            }
        );
        for bad in ["external", "s3", "internal:a b", "external:x;drop"] {
            let (field, message) = error_of(&format!("stage = \"{bad}\""));
            assert_eq!(field, "destination.stage", "{bad}: {message}");
        }
    }

    #[test]
    fn file_size_defaults_and_bounds() {
        let d = parse("file_size = \"1MiB\"\nallow_small_files = true").unwrap();
        d.validate("job.toml").unwrap();
        assert_eq!(d.staging().file_size, MIB);
        let (field, message) = error_of("file_size = \"1MiB\"");
        assert_eq!(field, "destination.file_size");
        assert!(message.contains("100MiB"), "{message}");
        assert_eq!(error_of("file_size = \"2GiB\"").0, "destination.file_size");
        assert_eq!(error_of("file_size = \"lots\"").0, "destination.file_size");
    }

    #[test]
    fn bad_keys_name_file_and_key() {
        assert_eq!(error_of("colour = 1").0, "destination.colour");
        assert_eq!(error_of("password_file = \"pw\"").0, "destination.password_env");
        assert_eq!(error_of("warehouse_size = \"huge\"").0, "destination.warehouse_size");
        assert_eq!(error_of("request_timeout = \"soon\"").0, "destination.request_timeout");
        assert_eq!(error_of("max_attempts = 0").0, "destination.max_attempts");
        assert_eq!(error_of("json_type = \"object\"").0, "destination.json_type");
        assert_eq!(error_of("put_parallel = 0").0, "destination.put_parallel");
        assert_eq!(error_of("role = \"a-b\"").0, "destination.role");
        assert_eq!(error_of("base_url = \"ftp://x\"").0, "destination.base_url");
        assert_eq!(
            error_of("private_key_passphrase_env = \"P\"").0,
            "destination.private_key_passphrase_env"
        );
        let text = BASE.replace("\"ANALYTICS\"", "\"my db\"");
        let e = SnowflakeKind
            .parse(&toml::from_str(&text).unwrap(), "job.toml")
            .and_then(|d| d.validate("job.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("job.toml: destination.database: "), "{e}");
    }

    #[test]
    fn blocked_columns_match_names_case_insensitively_or_all() {
        let s = spec("blocked_columns = [\"Secret\"]");
        assert!(s.is_blocked("SECRET") && !s.is_blocked("other"));
        assert!(spec("blocked_columns = [\"*\"]").is_blocked("anything"));
    }

    #[test]
    fn secrets_come_from_env_or_file_and_never_show() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2\n").unwrap();
        let mut s = spec("");
        s.password_env = None;
        s.password_file = Some(pw);
        let config = s.client_config().unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        match &config.auth {
            Auth::Password(p) => assert_eq!(p.expose(), "hunter2"),
            other => panic!("{other:?}"),
        }
        assert_eq!(config.base_url, "https://acme-prod.snowflakecomputing.com");
        let mut s = spec("");
        s.password_env = Some("BACKHAUL_TEST_SURELY_UNSET_VARIABLE".into());
        let e = s.client_config().unwrap_err().to_string();
        assert!(e.contains("destination.password_env") && e.contains("not set"), "{e}");
    }
}
