//! A saved profile: what `backhaul profile` measured, so costs can be recomputed offline.
//!
//! The profile names its job and carries a fingerprint of the spec's `[source]` and `[range]`
//! sections; [`Profile::check_job`] refuses a profile of another job, or of an edited spec whose
//! data would differ. Saved as TOML, or JSON when the file name ends in `.json`.

use std::path::Path;

use backhaul_core::spec::{ConnectorSection, JobSpec, RangeSpec};
use serde::{Deserialize, Serialize};

use crate::error::{CostError, Result};
use crate::money::Dec;

/// The only profile format version this build reads.
pub const PROFILE_VERSION: u32 = 1;

/// How far a number can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Counted, or known by construction.
    Exact,
    /// Estimated (statistics or sample); see the relative error.
    Estimate,
    /// At least the true value.
    UpperBound,
    /// At most the true value.
    LowerBound,
}

impl Bound {
    /// Spelling in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Bound::Exact => "exact",
            Bound::Estimate => "estimate",
            Bound::UpperBound => "upper bound",
            Bound::LowerBound => "lower bound",
        }
    }

    /// The weaker of two bounds when numbers are combined: an upper (lower) bound stays one when
    /// added to exact numbers or estimates; mixing upper and lower bounds gives an estimate.
    pub fn combine(self, other: Bound) -> Bound {
        use Bound::*;
        match (self, other) {
            (Exact, b) | (b, Exact) => b,
            (UpperBound, UpperBound) => UpperBound,
            (LowerBound, LowerBound) => LowerBound,
            (UpperBound, LowerBound) | (LowerBound, UpperBound) => Estimate,
            (Estimate, UpperBound) | (UpperBound, Estimate) => UpperBound,
            (Estimate, LowerBound) | (LowerBound, Estimate) => LowerBound,
            (Estimate, Estimate) => Estimate,
        }
    }
}

/// A measured count with its trust and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    /// The count.
    pub value: u64,
    /// How far to trust it.
    pub bound: Bound,
    /// Relative standard error of a sample estimate (0.05 = ±5%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_error: Option<Dec>,
    /// How it was obtained.
    pub basis: String,
}

impl Measured {
    /// A count with a basis.
    pub fn new(value: u64, bound: Bound, basis: impl Into<String>) -> Self {
        Measured {
            value,
            bound,
            relative_error: None,
            basis: basis.into(),
        }
    }
}

/// Where the activity numbers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityMethod {
    /// The source answered (change log, statistics, append-only guarantee).
    Source,
    /// Estimated from a random sample of sub-ranges.
    Sample,
    /// Counted over every row of the range (`--exact`).
    FullScan,
    /// Nothing usable: the report uses upper bounds.
    None,
}

/// Change activity in the steady window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityProfile {
    /// Source, sample, full scan or none.
    pub method: ActivityMethod,
    /// Window start (RFC 3339).
    pub window_from: String,
    /// Window end, exclusive (RFC 3339).
    pub window_to: String,
    /// Window length in days.
    pub window_days: u32,
    /// Rows inserted in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inserts: Option<Measured>,
    /// Distinct pre-existing keys updated in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_keys: Option<Measured>,
    /// Distinct keys deleted in the window (soft delete column or snapshot diff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_keys: Option<Measured>,
    /// Distinct keys touched (inserted, updated or deleted), each once; for a keyless table,
    /// row versions touched (how Fivetran keys it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touched_keys: Option<Measured>,
    /// Change columns used, as `role=column`.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Caveats, in the order they were found.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Bytes per row in the encodings billing depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BytesPerRow {
    /// zstd Parquet, compressed column chunks (what backhaul stages and Snowpipe bills).
    pub parquet_zstd: Dec,
    /// Logical (uncompressed) size by BigQuery data-type sizes: 8 bytes per integer, float,
    /// date or timestamp, 16 per NUMERIC, 2 + length per string or bytes, 1 per boolean, 0 per
    /// NULL. Stands in for warehouse logical storage, COPY input and Write API bytes.
    pub logical: Dec,
    /// Airbyte protocol RECORD messages as serialized JSON (what Airbyte bills for databases).
    pub airbyte_json: Dec,
    /// The source's own estimate from its statistics, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_statistics: Option<Dec>,
}

/// How the sample was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleInfo {
    /// Rows read.
    pub rows: u64,
    /// Sub-ranges read.
    pub ranges: u64,
    /// The method in words.
    pub method: String,
}

/// Extraction speed seen while sampling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    /// Rows per second one reader extracts and writes as Parquet.
    pub rows_per_second: Dec,
    /// Rows timed.
    pub rows: u64,
    /// Seconds taken.
    pub seconds: Dec,
}

/// One table of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableProfile {
    /// Source table name.
    pub name: String,
    /// `[source] kind`.
    pub source_kind: String,
    /// Cursor column.
    pub cursor: String,
    /// Cursor kind (timestamp, date, integer).
    pub cursor_kind: String,
    /// Job range start as written by the cursor's format.
    pub range_from: String,
    /// Job range end.
    pub range_to: String,
    /// Primary-key columns; empty when the table has none.
    pub primary_key: Vec<String>,
    /// Rows in the job's range: the backfill.
    pub rows: Measured,
    /// Estimated bytes at the source over the range (its statistics).
    pub source_bytes: u64,
    /// Chunks the job plans.
    pub chunks: u64,
    /// Target Parquet file size of the job.
    pub file_size: u64,
    /// Bytes per row.
    pub bytes_per_row: BytesPerRow,
    /// The sample.
    pub sample: SampleInfo,
    /// Change activity.
    pub activity: ActivityProfile,
    /// Speed measured while sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    /// For an API source: the requests the backfill takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiRequests>,
}

/// The requests an API source's backfill takes, and how long at its rate pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiRequests {
    /// Requests: one per page of the estimated records, plus each chunk's last page.
    pub requests: u64,
    /// Records per request (page size); `None` when the spec does not say, and then one
    /// record per request is assumed (an upper bound).
    pub records_per_request: Option<u64>,
    /// The pool's name, requests per second and daily cap, when the source has a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Requests per second the pool allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<Dec>,
    /// Seconds the requests take at that rate, at the least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_at_pool_rate: Option<u64>,
    /// UTC days the pool's daily cap spreads them over, at the least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_by_daily_cap: Option<u64>,
}

impl ApiRequests {
    /// The requests to read `records` in `chunks` windows as `profile` says.
    pub fn estimate(records: u64, chunks: u64, profile: &backhaul_core::connector::RequestProfile) -> Self {
        let per_request = profile.records_per_request.unwrap_or(1).max(1);
        // Each window ends with a page that says there is no more (often a short one).
        let requests = records.div_ceil(per_request) + chunks;
        let pool = profile.pool.as_ref();
        ApiRequests {
            requests,
            records_per_request: profile.records_per_request,
            pool: pool.map(|p| p.name.clone()),
            requests_per_second: pool
                .and_then(|p| rust_decimal::Decimal::from_f64_retain(p.requests_per_second).map(Dec)),
            seconds_at_pool_rate: pool.map(|p| (requests as f64 / p.requests_per_second).ceil() as u64),
            days_by_daily_cap: pool.and_then(|p| p.daily_cap).map(|cap| requests.div_ceil(cap)),
        }
    }
}

impl TableProfile {
    /// Whether the table has a primary key.
    pub fn keyed(&self) -> bool {
        !self.primary_key.is_empty()
    }
}

/// A saved profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Format version.
    pub version: u32,
    /// Job name.
    pub job: String,
    /// Fingerprint of the spec's source and range ([`fingerprint`]).
    pub spec_fingerprint: String,
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    /// backhaul version that took it.
    pub backhaul_version: String,
    /// Tables, one per job today.
    #[serde(rename = "table")]
    pub tables: Vec<TableProfile>,
}

#[derive(Serialize)]
struct FingerprintInput<'a> {
    source: &'a ConnectorSection,
    range: &'a RangeSpec,
}

/// `xxh3:<hex>` of the canonical TOML of the spec's `[source]` and `[range]` (paths as written;
/// pass a checked spec, whose `[source]` is as its connector writes it, defaults filled in):
/// the sections that decide which rows a profile measured.
pub fn fingerprint(spec: &JobSpec) -> String {
    let text = toml::to_string(&FingerprintInput {
        source: &spec.source,
        range: &spec.range,
    })
    .expect("a parsed spec serializes");
    format!("xxh3:{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// The fingerprint of a pipeline's profile: of its tables' jobs' [`fingerprint`]s (of checked
/// specs), in table order, so a table added, removed or changed makes a saved profile stale.
pub fn pipeline_fingerprint(tables: &[String]) -> String {
    let joined = tables;
    format!("xxh3:{:016x}", xxhash_rust::xxh3::xxh3_64(joined.join("\n").as_bytes()))
}

impl Profile {
    /// Refuses a profile of another job or of a spec whose source or range changed.
    pub fn check_job(&self, spec: &JobSpec, file: &str) -> Result<()> {
        self.check_taken_for(&spec.name, &fingerprint(spec), file)
    }

    /// Refuses a profile not taken for `job` (a job or a pipeline) at `now`, its fingerprint.
    pub fn check_taken_for(&self, job: &str, now: &str, file: &str) -> Result<()> {
        if self.job != job {
            return Err(CostError::ProfileMismatch {
                file: file.into(),
                message: format!(
                    "it was taken for job `{}`, not `{}`; run `backhaul profile` on this job's spec",
                    self.job, job
                ),
            });
        }
        if self.spec_fingerprint != now {
            return Err(CostError::ProfileMismatch {
                file: file.into(),
                message: format!(
                    "job `{}`'s [source] or [range] changed since the profile was taken ({} then, {now} now); profile again",
                    self.job, self.spec_fingerprint
                ),
            });
        }
        Ok(())
    }

    /// TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a profile serializes")
    }

    /// Pretty JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a profile serializes")
    }

    /// Parses TOML or JSON (chosen by the first non-blank character).
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let profile: Profile = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| CostError::invalid(origin, format!("line {}", e.line()), e.to_string()))?
        } else {
            toml::from_str(text)
                .map_err(|e| CostError::invalid(origin, crate::error::toml_error_line(text, &e), e.message().trim()))?
        };
        if profile.version != PROFILE_VERSION {
            return Err(CostError::invalid(
                origin,
                "version",
                format!(
                    "this build reads profile version {PROFILE_VERSION}, not {}",
                    profile.version
                ),
            ));
        }
        if profile.tables.is_empty() {
            return Err(CostError::invalid(
                origin,
                "table",
                "a profile needs at least one table",
            ));
        }
        Ok(profile)
    }

    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CostError::io(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Writes JSON when the name ends in `.json`, TOML otherwise.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = if path.extension().is_some_and(|e| e == "json") {
            self.to_json()
        } else {
            self.to_toml()
        };
        std::fs::write(path, text).map_err(|e| CostError::io(path, e))
    }
}
