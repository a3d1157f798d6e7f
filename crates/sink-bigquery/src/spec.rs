//! `[destination] kind = "bigquery"`. Every key is documented in `docs/destinations/bigquery.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backhaul_core::connector::Destination;
use backhaul_core::registry::{DestinationConfig, DestinationKind, FileSizeRange, StagingPreferences};
use backhaul_core::spec::{ByteSizeText, is_valid_identifier, parse_section, resolve_path, to_settings};
use backhaul_core::units::{MIB, Span};
use backhaul_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Default target Parquet file size: BigQuery reads large files best (about 1 GiB each).
pub const DEFAULT_FILE_SIZE: u64 = 1024 * MIB;
/// Smallest target file size accepted without `allow_small_files`.
pub const MIN_FILE_SIZE: u64 = 128 * MIB;
/// Largest target file size accepted.
pub const MAX_FILE_SIZE: u64 = 1024 * MIB;
/// What `file_size` accepts.
const FILE_SIZES: FileSizeRange = FileSizeRange {
    default: DEFAULT_FILE_SIZE,
    min: MIN_FILE_SIZE,
    max: MAX_FILE_SIZE,
    min_reason: "the 128MiB minimum",
};
/// BigQuery's REST endpoint.
pub const DEFAULT_BASE_URL: &str = "https://bigquery.googleapis.com/bigquery/v2";
/// Default wait for one load or query job.
pub const DEFAULT_JOB_TIMEOUT: &str = "6h";

/// The BigQuery destination's kind: `[destination] kind = "bigquery"`.
pub struct BigQueryKind;

impl DestinationKind for BigQueryKind {
    fn kind(&self) -> &'static str {
        "bigquery"
    }

    fn parse(&self, settings: &toml::Table, origin: &str) -> Result<Box<dyn DestinationConfig>> {
        Ok(Box::new(parse_section::<BigQuerySpec>(
            settings,
            "destination",
            origin,
        )?))
    }
}

/// How the destination authenticates to BigQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A service-account key file (`key_file`).
    ServiceAccountKey,
    /// The machine's identity: the GCE/GKE metadata server (workload identity).
    #[default]
    Metadata,
    /// No credentials: a dummy bearer token, for local test servers only.
    None,
}

/// How rows reach the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMethod {
    /// zstd Parquet staged to `gs://`, one load job per chunk (free on the shared slot pool).
    #[default]
    LoadJob,
    /// The Storage Write API (gRPC, PENDING streams; billed beyond the free tier).
    StorageWrite,
}

/// How the table is partitioned when backhaul creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioning {
    /// Daily partitions by the cursor column (timestamp or date cursors only): range deletes
    /// and fingerprints scan only the chunk's partitions, and with [`Replace::PartitionCopy`]
    /// one-day chunks replace their partition by a copy job.
    #[default]
    CursorDay,
    /// No partitioning: every chunk replace scans the whole table (billed).
    None,
}

/// How a commit replaces the chunk's rows in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replace {
    /// One multi-statement transaction: DELETE the range, INSERT from the staging table, record
    /// the attempt. Atomic with the attempt fence; DML bills the partitions it scans.
    #[default]
    Transaction,
    /// A chunk that is exactly one UTC day of a `cursor_day` table replaces its partition with
    /// a copy job (`WRITE_TRUNCATE` into `table$YYYYMMDD`: free, no DML); other chunks use the
    /// transaction. The attempt is recorded right after the copy, not with it (see the docs).
    PartitionCopy,
}

impl Replace {
    fn is_transaction(&self) -> bool {
        *self == Replace::Transaction
    }
}

/// How JSON columns (Arrow `arrow.json`) are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonColumns {
    /// BigQuery `JSON`. BigQuery normalizes the text, so the fingerprint proves JSON columns
    /// only when the source's text is already compact (see the docs).
    #[default]
    Json,
    /// `STRING` holding the source's exact text (query it with `PARSE_JSON`).
    String,
}

/// A BigQuery table loaded by load jobs (or the Storage Write API). The spec holds no secret:
/// the key file is read at build time and its contents never leave the authenticator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigQuerySpec {
    /// The project that holds the dataset and runs (and is billed for) the jobs.
    pub project: String,
    /// The dataset; it must exist.
    pub dataset: String,
    /// The table; created from the source schema when missing.
    pub table: String,
    /// The dataset's location (`US`, `EU`, `europe-west3`, …); jobs run there.
    #[serde(default)]
    pub location: Option<String>,
    /// REST base URL, for a test server or a private endpoint.
    #[serde(default)]
    pub base_url: Option<String>,
    /// `service_account_key`, `metadata` (default) or `none`.
    #[serde(default)]
    pub auth: AuthMethod,
    /// Service-account key file, with `auth = "service_account_key"`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// `load_job` (default) or `storage_write`.
    #[serde(default)]
    pub write_method: WriteMethod,
    /// Target Parquet file size. Default 1GiB, allowed 128MiB–1GiB.
    #[serde(default)]
    pub file_size: Option<ByteSizeText>,
    /// Allow `file_size` below 128MiB. Meant for tests and demos only.
    #[serde(default)]
    pub allow_small_files: bool,
    /// `cursor_day` (default) or `none`.
    #[serde(default)]
    pub partitioning: Partitioning,
    /// `transaction` (default) or `partition_copy`. Left out of the canonical spec at its
    /// default, so jobs stored before the key existed keep their identity.
    #[serde(default, skip_serializing_if = "Replace::is_transaction")]
    pub replace: Replace,
    /// Up to four clustering columns, in order.
    #[serde(default)]
    pub clustering: Vec<String>,
    /// `json` (default): JSON columns as BigQuery `JSON`; `string`: as `STRING`, text kept exactly.
    #[serde(default)]
    pub json_columns: JsonColumns,
    /// Source columns never loaded (left out of the table and of the staged files' load).
    #[serde(default)]
    pub blocked_columns: Vec<String>,
    /// Longest wait for one load or query job, e.g. `6h`. Default 6h (BigQuery's own limit).
    #[serde(default)]
    pub job_timeout: Option<String>,
    /// The `gs://` URL under which the stage's files are visible to BigQuery, when the stage
    /// itself is not `gs://` (a directory a GCS mirror serves, or a test server's local GCS
    /// root). Ignored for a `gs://` stage.
    #[serde(default)]
    pub stage_gcs_url: Option<String>,
    /// Storage Write API endpoint (gRPC), with `write_method = "storage_write"`.
    #[serde(default)]
    pub storage_write_endpoint: Option<String>,
}

impl BigQuerySpec {
    /// A spec with every optional key at its default.
    pub fn new(project: &str, dataset: &str, table: &str) -> Self {
        BigQuerySpec {
            project: project.into(),
            dataset: dataset.into(),
            table: table.into(),
            location: None,
            base_url: None,
            auth: AuthMethod::default(),
            key_file: None,
            write_method: WriteMethod::default(),
            file_size: None,
            allow_small_files: false,
            partitioning: Partitioning::default(),
            replace: Replace::default(),
            clustering: Vec::new(),
            json_columns: JsonColumns::default(),
            blocked_columns: Vec::new(),
            job_timeout: None,
            stage_gcs_url: None,
            storage_write_endpoint: None,
        }
    }

    /// The target file size in bytes, checked against the allowed range.
    pub fn file_size_bytes(&self, origin: &str) -> Result<u64> {
        FILE_SIZES.check(self.file_size.as_ref(), self.allow_small_files, origin)
    }

    /// The job timeout, checked.
    pub fn job_timeout(&self, origin: &str) -> Result<std::time::Duration> {
        let text = self.job_timeout.as_deref().unwrap_or(DEFAULT_JOB_TIMEOUT);
        let span = Span::parse(text).map_err(|m| Error::config(origin, "destination.job_timeout", m))?;
        Ok(std::time::Duration::from_micros(span.micros.unsigned_abs()))
    }

    /// Validation again at build time (a spec built in code skipped the file's checks).
    pub fn validate_for_build(&self) -> Result<()> {
        self.validate("<spec>")
    }

    /// The REST base URL.
    pub fn base_url(&self) -> &str {
        self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL)
    }
}

/// BigQuery project ids: 6–30 lower-case letters, digits and hyphens (domain-scoped ids
/// `example.com:proj` too).
fn is_valid_project(project: &str) -> bool {
    let id = project.rsplit(':').next().unwrap_or(project);
    !id.is_empty()
        && id.len() <= 30
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && project
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == ':' || c == '.')
}

impl DestinationConfig for BigQuerySpec {
    fn table(&self) -> &str {
        &self.table
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let key = |k: &str| format!("destination.{k}");
        if !is_valid_project(&self.project) {
            return Err(Error::config(
                origin,
                key("project"),
                format!(
                    "`{}` is not a BigQuery project id (lower-case letters, digits, hyphens)",
                    self.project
                ),
            ));
        }
        for (name, value) in [("dataset", &self.dataset), ("table", &self.table)] {
            // Identifiers are interpolated into SQL, so only plain names pass.
            if !is_valid_identifier(value) {
                return Err(Error::config(
                    origin,
                    key(name),
                    format!("`{value}` is not a valid {name} name (letters, digits and `_`)"),
                ));
            }
        }
        if let Some(url) = &self.base_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(Error::config(
                origin,
                key("base_url"),
                format!("`{url}` is not an http(s) URL"),
            ));
        }
        match (self.auth, &self.key_file) {
            (AuthMethod::ServiceAccountKey, None) => {
                return Err(Error::config(
                    origin,
                    key("key_file"),
                    "required with auth = \"service_account_key\"",
                ));
            }
            (AuthMethod::Metadata | AuthMethod::None, Some(_)) => {
                return Err(Error::config(
                    origin,
                    key("key_file"),
                    "only used with auth = \"service_account_key\"",
                ));
            }
            _ => {}
        }
        self.file_size_bytes(origin)?;
        self.job_timeout(origin)?;
        if self.clustering.len() > 4 {
            return Err(Error::config(
                origin,
                key("clustering"),
                format!("BigQuery clusters by at most 4 columns, got {}", self.clustering.len()),
            ));
        }
        for (name, columns) in [
            ("clustering", &self.clustering),
            ("blocked_columns", &self.blocked_columns),
        ] {
            if let Some(bad) = columns.iter().find(|c| !is_valid_identifier(c)) {
                return Err(Error::config(
                    origin,
                    key(name),
                    format!("`{bad}` is not a valid column name"),
                ));
            }
        }
        if self.replace == Replace::PartitionCopy {
            if self.partitioning != Partitioning::CursorDay {
                return Err(Error::config(
                    origin,
                    key("replace"),
                    "`partition_copy` replaces daily partitions: it needs partitioning = \"cursor_day\"",
                ));
            }
            if !self.blocked_columns.is_empty() {
                return Err(Error::config(
                    origin,
                    key("replace"),
                    "`partition_copy` copies the staging table whole, blocked columns included: use `transaction` with blocked_columns",
                ));
            }
        }
        if let Some(c) = self.clustering.iter().find(|c| self.blocked_columns.contains(c)) {
            return Err(Error::config(
                origin,
                key("clustering"),
                format!("`{c}` is also in blocked_columns"),
            ));
        }
        if let Some(url) = &self.stage_gcs_url
            && (!url.starts_with("gs://") || url.trim_start_matches("gs://").is_empty())
        {
            return Err(Error::config(
                origin,
                key("stage_gcs_url"),
                format!("`{url}` is not a gs://bucket/prefix URL"),
            ));
        }
        match (self.write_method, &self.storage_write_endpoint) {
            (WriteMethod::LoadJob, Some(_)) => Err(Error::config(
                origin,
                key("storage_write_endpoint"),
                "only used with write_method = \"storage_write\"",
            )),
            _ => Ok(()),
        }
    }

    fn staging(&self) -> StagingPreferences {
        StagingPreferences {
            // Validation refused a bad size before anyone stages files.
            file_size: self.file_size_bytes("<spec>").unwrap_or(DEFAULT_FILE_SIZE),
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        if let Some(path) = &mut self.key_file {
            resolve_path(path, base);
        }
    }

    fn settings(&self) -> toml::Table {
        to_settings(self)
    }

    fn build(&self) -> Result<Arc<dyn Destination>> {
        Ok(Arc::new(crate::BigQueryTable::new(self.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<Box<dyn DestinationConfig>> {
        let text = format!("project = \"my-proj\"\ndataset = \"sales\"\ntable = \"orders\"\n{extra}");
        BigQueryKind.parse(&toml::from_str(&text).unwrap(), "job.toml")
    }

    fn field_of(extra: &str) -> String {
        match parse(extra).and_then(|d| d.validate("job.toml")).unwrap_err() {
            Error::Config { field, .. } => field,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn defaults_validate() {
        let d = parse("").unwrap();
        d.validate("job.toml").unwrap();
        assert_eq!(d.staging().file_size, DEFAULT_FILE_SIZE);
        let settings = d.settings();
        // Left out at its default: specs stored before the key existed keep their identity.
        assert!(!settings.contains_key("replace"), "{settings:?}");
        assert_eq!(settings["write_method"].as_str(), Some("load_job"));
        assert_eq!(settings["partitioning"].as_str(), Some("cursor_day"));
        assert_eq!(settings["auth"].as_str(), Some("metadata"));
    }

    #[test]
    fn every_bad_key_is_named() {
        assert_eq!(field_of("colour = 1"), "destination.colour");
        assert_eq!(field_of("file_size = \"1MiB\""), "destination.file_size");
        assert_eq!(field_of("file_size = \"2GiB\""), "destination.file_size");
        assert_eq!(field_of("auth = \"service_account_key\""), "destination.key_file");
        assert_eq!(field_of("key_file = \"k.json\""), "destination.key_file");
        assert_eq!(field_of("auth = \"password\""), "destination.auth");
        assert_eq!(field_of("write_method = \"streaming\""), "destination.write_method");
        assert_eq!(field_of("job_timeout = \"forever\""), "destination.job_timeout");
        assert_eq!(field_of("base_url = \"ftp://x\""), "destination.base_url");
        assert_eq!(field_of("stage_gcs_url = \"s3://b/p\""), "destination.stage_gcs_url");
        assert_eq!(
            field_of("clustering = [\"a\",\"b\",\"c\",\"d\",\"e\"]"),
            "destination.clustering"
        );
        assert_eq!(
            field_of("clustering = [\"a\"]\nblocked_columns = [\"a\"]"),
            "destination.clustering"
        );
        assert_eq!(field_of("blocked_columns = [\"a b\"]"), "destination.blocked_columns");
        assert_eq!(field_of("replace = \"merge\""), "destination.replace");
        assert_eq!(
            field_of("replace = \"partition_copy\"\npartitioning = \"none\""),
            "destination.replace"
        );
        assert_eq!(
            field_of("replace = \"partition_copy\"\nblocked_columns = [\"a\"]"),
            "destination.replace"
        );
        parse("replace = \"partition_copy\"")
            .unwrap()
            .validate("job.toml")
            .unwrap();
        assert_eq!(
            field_of("storage_write_endpoint = \"http://x\""),
            "destination.storage_write_endpoint"
        );
        let bad_project = "project = \"My_Proj\"\ndataset = \"sales\"\ntable = \"orders\"";
        let e = BigQueryKind
            .parse(&toml::from_str(bad_project).unwrap(), "job.toml")
            .unwrap()
            .validate("job.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("job.toml: destination.project:"), "{e}");
        let bad_table = "project = \"my-proj\"\ndataset = \"sales\"\ntable = \"or-ders\"";
        let e = BigQueryKind
            .parse(&toml::from_str(bad_table).unwrap(), "job.toml")
            .unwrap()
            .validate("job.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("job.toml: destination.table:"), "{e}");
    }

    #[test]
    fn small_files_need_the_test_switch() {
        let d = parse("file_size = \"1MiB\"\nallow_small_files = true").unwrap();
        d.validate("job.toml").unwrap();
        assert_eq!(d.staging().file_size, MIB);
    }

    #[test]
    fn key_file_resolves_against_the_spec_directory() {
        let mut d = parse("auth = \"service_account_key\"\nkey_file = \"secrets/sa.json\"").unwrap();
        d.validate("job.toml").unwrap();
        d.resolve_paths(Path::new("/etc/backhaul"));
        assert!(format!("{d:?}").contains("/etc/backhaul/secrets/sa.json"));
    }
}
