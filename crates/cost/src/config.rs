//! The cost config (`--config cost.toml`): how to profile a source and which plans to price.
//!
//! Separate from the job spec on purpose: the spec says what to load, this file says how to
//! estimate what loading (and keeping it in sync) would cost. Every key has a default, so the
//! file is optional; CLI flags override it. Parsing is strict and [`CostConfig::validate`] is
//! pure. Every key is documented in `docs/cost.md`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{CostError, Result};
use crate::money::Dec;

/// The only cost-config version this build understands.
pub const CONFIG_VERSION: u32 = 1;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    /// Format version; must be 1.
    pub version: u32,
    /// How `backhaul profile` samples the source.
    #[serde(default)]
    pub profile: ProfileConfig,
    /// Which options are compared and how often the steady state syncs.
    #[serde(default)]
    pub plan: PlanConfig,
    /// Fivetran plan.
    #[serde(default)]
    pub fivetran: FivetranConfig,
    /// Airbyte Cloud plan and source type.
    #[serde(default)]
    pub airbyte: AirbyteConfig,
    /// Snowflake edition, region, warehouse size and stage.
    #[serde(default)]
    pub snowflake: SnowflakeConfig,
    /// BigQuery storage billing and target layout.
    #[serde(default)]
    pub bigquery: BigQueryConfig,
    /// Object storage used as the stage.
    #[serde(default)]
    pub staging: StagingConfig,
    /// Machines running backhaul itself.
    #[serde(default)]
    pub backhaul: BackhaulConfig,
}

impl Default for CostConfig {
    fn default() -> Self {
        CostConfig {
            version: CONFIG_VERSION,
            profile: ProfileConfig::default(),
            plan: PlanConfig::default(),
            fivetran: FivetranConfig::default(),
            airbyte: AirbyteConfig::default(),
            snowflake: SnowflakeConfig::default(),
            bigquery: BigQueryConfig::default(),
            staging: StagingConfig::default(),
            backhaul: BackhaulConfig::default(),
        }
    }
}

/// `[profile]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    /// Rows to sample in total (default 20,000).
    pub sample_rows: u64,
    /// Random sub-ranges of the cursor range the sample is read from, one per stratum (default 64).
    pub sample_ranges: u32,
    /// Seed of the sub-range positions: the same seed reads the same sub-ranges.
    pub seed: u64,
    /// Column set once on insert. Default: the job's cursor when it is a timestamp or date.
    pub created_at: Option<String>,
    /// Column set on every change (last-modified time).
    pub updated_at: Option<String>,
    /// Soft-delete column: a timestamp/date set on deletion, or a boolean flag.
    pub soft_delete: Option<String>,
    /// File keeping a snapshot of sampled keys; a later profile diffs against it to count hard
    /// deletes. Relative to the config file.
    pub snapshot_file: Option<PathBuf>,
    /// End of the steady window (date or RFC 3339 timestamp). Default: the earlier of now and
    /// the end of the job's range.
    pub window_end: Option<String>,
    /// Length of the steady window in days (default 30).
    pub window_days: u32,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            sample_rows: 20_000,
            sample_ranges: 64,
            seed: 1,
            created_at: None,
            updated_at: None,
            soft_delete: None,
            snapshot_file: None,
            window_end: None,
            window_days: 30,
        }
    }
}

/// An option compared in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptionId {
    /// Fivetran (MAR).
    Fivetran,
    /// Airbyte Cloud (credits).
    Airbyte,
    /// backhaul, Snowflake COPY from a stage.
    SnowflakeCopy,
    /// backhaul, Snowpipe.
    SnowflakeSnowpipe,
    /// backhaul, BigQuery load jobs from GCS.
    BigqueryLoad,
    /// backhaul, BigQuery Storage Write API.
    BigqueryWriteApi,
}

impl OptionId {
    /// Every option, in report order.
    pub const ALL: [OptionId; 6] = [
        OptionId::Fivetran,
        OptionId::Airbyte,
        OptionId::SnowflakeCopy,
        OptionId::SnowflakeSnowpipe,
        OptionId::BigqueryLoad,
        OptionId::BigqueryWriteApi,
    ];

    /// Spelling in files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            OptionId::Fivetran => "fivetran",
            OptionId::Airbyte => "airbyte",
            OptionId::SnowflakeCopy => "snowflake_copy",
            OptionId::SnowflakeSnowpipe => "snowflake_snowpipe",
            OptionId::BigqueryLoad => "bigquery_load",
            OptionId::BigqueryWriteApi => "bigquery_write_api",
        }
    }
}

/// `[plan]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanConfig {
    /// Options to compare (default: all).
    pub options: Vec<OptionId>,
    /// Incremental syncs per day in the steady state (default 24).
    pub syncs_per_day: u32,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            options: OptionId::ALL.to_vec(),
            syncs_per_day: 24,
        }
    }
}

/// `[fivetran]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FivetranConfig {
    /// `free`, `standard`, `enterprise` or `business_critical`; the rate is row
    /// `fivetran.mar.<plan>` (USD/million-MAR), normally from an overlay.
    pub plan: String,
}

impl Default for FivetranConfig {
    fn default() -> Self {
        FivetranConfig {
            plan: "standard".into(),
        }
    }
}

/// Airbyte source families bill differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AirbyteSourceType {
    /// Database source: GB of serialized records.
    Database,
    /// File source: GB of serialized records.
    File,
    /// API or custom source: rows.
    Api,
}

/// Incremental or full refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Only changed rows are synced.
    Incremental,
    /// Every row on every sync.
    FullRefresh,
}

/// `[airbyte]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AirbyteConfig {
    /// Plan; rows `airbyte.*.<plan>` (default `standard`).
    pub plan: String,
    /// `database` (default), `file` or `api`.
    pub source_type: AirbyteSourceType,
    /// `incremental` (default) or `full_refresh`.
    pub sync_mode: SyncMode,
}

impl Default for AirbyteConfig {
    fn default() -> Self {
        AirbyteConfig {
            plan: "standard".into(),
            source_type: AirbyteSourceType::Database,
            sync_mode: SyncMode::Incremental,
        }
    }
}

/// Where warehouse loads read files from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// An S3 bucket.
    S3,
    /// A GCS bucket.
    Gcs,
    /// Snowflake's internal stage (billed as Snowflake storage, no request charges).
    Internal,
}

/// `[snowflake]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnowflakeConfig {
    /// `standard`, `enterprise` (default) or `business_critical`.
    pub edition: String,
    /// Cloud and region id as used in row ids (default `aws_us_east_1`).
    pub region: String,
    /// Warehouse size: xs (default), s, m, l, xl, 2xl ... 6xl.
    pub warehouse: String,
    /// Stage: `s3` (default), `gcs` or `internal`.
    pub stage: StageKind,
}

impl Default for SnowflakeConfig {
    fn default() -> Self {
        SnowflakeConfig {
            edition: "enterprise".into(),
            region: "aws_us_east_1".into(),
            warehouse: "xs".into(),
            stage: StageKind::S3,
        }
    }
}

/// BigQuery storage billing model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageBilling {
    /// Uncompressed bytes (default of new datasets).
    Logical,
    /// Compressed bytes, time travel and fail-safe included.
    Physical,
}

/// `[bigquery]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BigQueryConfig {
    /// `logical` (default) or `physical`.
    pub storage_billing: StorageBilling,
    /// Whether the target table is partitioned; an unpartitioned target makes every MERGE or
    /// DELETE bill the whole table.
    pub partitioned: bool,
}

impl Default for BigQueryConfig {
    fn default() -> Self {
        BigQueryConfig {
            storage_billing: StorageBilling::Logical,
            partitioned: false,
        }
    }
}

/// `[staging]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StagingConfig {
    /// S3 region id in row ids (default `us_east_1`).
    pub s3_region: String,
    /// GCS region id in row ids (default `us_central1`).
    pub gcs_region: String,
    /// Hours a staged file waits before it is loaded and deleted (default 24, generous).
    pub staged_hours: u32,
    /// Whether the stage is in another region than the warehouse (egress is charged).
    pub cross_region: bool,
}

impl Default for StagingConfig {
    fn default() -> Self {
        StagingConfig {
            s3_region: "us_east_1".into(),
            gcs_region: "us_central1".into(),
            staged_hours: 24,
            cross_region: false,
        }
    }
}

/// `[backhaul]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackhaulConfig {
    /// Worker processes (one per machine; default 2). Changes wall-clock time, not worker-hours.
    pub workers: u32,
    /// Machine type, row `compute.instance.<instance>` (default `aws_c7g_large`).
    pub instance: String,
    /// Rows per second per worker. Default: measured by the profile, else the benchmark row for
    /// the source kind.
    pub rows_per_second: Option<Dec>,
}

impl Default for BackhaulConfig {
    fn default() -> Self {
        BackhaulConfig {
            workers: 2,
            instance: "aws_c7g_large".into(),
            rows_per_second: None,
        }
    }
}

/// Warehouse sizes, smallest first.
pub const WAREHOUSE_SIZES: [&str; 10] = ["xs", "s", "m", "l", "xl", "2xl", "3xl", "4xl", "5xl", "6xl"];

/// A `window_end` value: a date (midnight UTC) or an RFC 3339 timestamp, as microseconds.
pub fn parse_instant(text: &str) -> std::result::Result<i64, String> {
    if let Ok(d) = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_micros());
    }
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc).timestamp_micros())
        .map_err(|_| format!("`{text}` is neither a date (2024-01-31) nor an RFC 3339 timestamp"))
}

impl CostConfig {
    /// Parses TOML; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text)
            .map_err(|e| CostError::invalid(origin, crate::error::toml_error_line(text, &e), e.message().trim()))
    }

    /// Reads a file, resolves `profile.snapshot_file` against its directory, and validates.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CostError::io(path, e))?;
        let origin = path.display().to_string();
        let mut config = Self::from_toml(&text, &origin)?;
        if let Some(snapshot) = &mut config.profile.snapshot_file
            && snapshot.is_relative()
        {
            *snapshot = path.parent().unwrap_or(Path::new(".")).join(&*snapshot);
        }
        config.validate(&origin)?;
        Ok(config)
    }

    /// Pure checks, naming the dotted field.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let err = |field: &str, msg: String| CostError::invalid(origin, field, msg);
        if self.version != CONFIG_VERSION {
            return Err(err(
                "version",
                format!("this build reads version {CONFIG_VERSION}, not {}", self.version),
            ));
        }
        let p = &self.profile;
        if !(100..=10_000_000).contains(&p.sample_rows) {
            return Err(err(
                "profile.sample_rows",
                format!("{} is outside 100..=10000000", p.sample_rows),
            ));
        }
        if !(1..=4096).contains(&p.sample_ranges) {
            return Err(err(
                "profile.sample_ranges",
                format!("{} is outside 1..=4096", p.sample_ranges),
            ));
        }
        if !(1..=366).contains(&p.window_days) {
            return Err(err(
                "profile.window_days",
                format!("{} is outside 1..=366", p.window_days),
            ));
        }
        for (field, value) in [
            ("profile.created_at", &p.created_at),
            ("profile.updated_at", &p.updated_at),
            ("profile.soft_delete", &p.soft_delete),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(err(field, "must name a column".into()));
            }
        }
        if let Some(end) = &p.window_end {
            parse_instant(end).map_err(|m| err("profile.window_end", m))?;
        }
        if self.plan.options.is_empty() {
            return Err(err("plan.options", "name at least one option to compare".into()));
        }
        if !(1..=1440).contains(&self.plan.syncs_per_day) {
            return Err(err(
                "plan.syncs_per_day",
                format!("{} is outside 1..=1440", self.plan.syncs_per_day),
            ));
        }
        let plans = ["free", "standard", "enterprise", "business_critical"];
        if !plans.contains(&self.fivetran.plan.as_str()) {
            return Err(err(
                "fivetran.plan",
                format!("`{}` is not one of {}", self.fivetran.plan, plans.join(", ")),
            ));
        }
        let editions = ["standard", "enterprise", "business_critical"];
        if !editions.contains(&self.snowflake.edition.as_str()) {
            return Err(err(
                "snowflake.edition",
                format!("`{}` is not one of {}", self.snowflake.edition, editions.join(", ")),
            ));
        }
        if !WAREHOUSE_SIZES.contains(&self.snowflake.warehouse.as_str()) {
            return Err(err(
                "snowflake.warehouse",
                format!(
                    "`{}` is not one of {}",
                    self.snowflake.warehouse,
                    WAREHOUSE_SIZES.join(", ")
                ),
            ));
        }
        for (field, value) in [
            ("airbyte.plan", &self.airbyte.plan),
            ("snowflake.region", &self.snowflake.region),
            ("staging.s3_region", &self.staging.s3_region),
            ("staging.gcs_region", &self.staging.gcs_region),
            ("backhaul.instance", &self.backhaul.instance),
        ] {
            let ok = !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return Err(err(
                    field,
                    format!("`{value}` is not an id part (a-z, 0-9 and _, as in the price tables' row ids)"),
                ));
            }
        }
        if !(1..=10_000).contains(&self.backhaul.workers) {
            return Err(err(
                "backhaul.workers",
                format!("{} is outside 1..=10000", self.backhaul.workers),
            ));
        }
        if self
            .backhaul
            .rows_per_second
            .is_some_and(|r| r.0 <= rust_decimal::Decimal::ZERO)
        {
            return Err(err("backhaul.rows_per_second", "must be above zero".into()));
        }
        if self.staging.staged_hours > 24 * 90 {
            return Err(err("staging.staged_hours", "at most 2160 (90 days)".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_every_key_parses() {
        CostConfig::default().validate("<default>").unwrap();
        let text = r#"
version = 1
[profile]
sample_rows = 5000
sample_ranges = 16
seed = 3
created_at = "created_at"
updated_at = "updated_at"
soft_delete = "deleted_at"
snapshot_file = "keys.json"
window_end = "2024-06-01"
window_days = 7
[plan]
options = ["fivetran", "bigquery_load"]
syncs_per_day = 4
[fivetran]
plan = "enterprise"
[airbyte]
plan = "standard"
source_type = "api"
sync_mode = "full_refresh"
[snowflake]
edition = "standard"
region = "aws_us_east_1"
warehouse = "m"
stage = "internal"
[bigquery]
storage_billing = "physical"
partitioned = true
[staging]
s3_region = "us_east_1"
gcs_region = "us_east4"
staged_hours = 2
cross_region = true
[backhaul]
workers = 8
instance = "gcp_e2_standard_2"
rows_per_second = "120000"
"#;
        let c = CostConfig::from_toml(text, "cost.toml").unwrap();
        c.validate("cost.toml").unwrap();
        assert_eq!(c.plan.options, vec![OptionId::Fivetran, OptionId::BigqueryLoad]);
        assert_eq!(c.airbyte.source_type, AirbyteSourceType::Api);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_field() {
        let err = CostConfig::from_toml("version = 1\n[profile]\nupdated = \"x\"\n", "cost.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cost.toml: line 3") && err.contains("updated"), "{err}");
        let mut c = CostConfig::default();
        c.snowflake.warehouse = "huge".into();
        let err = c.validate("cost.toml").unwrap_err().to_string();
        assert!(err.contains("cost.toml: snowflake.warehouse"), "{err}");
        let mut c = CostConfig::default();
        c.profile.window_end = Some("yesterday".into());
        assert!(c.validate("c").unwrap_err().to_string().contains("profile.window_end"));
    }
}
