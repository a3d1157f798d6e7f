//! The job spec: a versioned TOML document describing one backfill.
//!
//! Parsing is strict (`deny_unknown_fields` everywhere) and [`JobSpec::validate`] is pure: it
//! checks everything that can be checked without touching a file or a server. Checks that need
//! IO (does the cursor column exist, is the stage writable) happen when connectors are built.
//!
//! Core owns the job-level keys only. `[source]` and `[destination]` are [`ConnectorSection`]s:
//! `kind` plus the rest of the table, which the connector of that kind parses into its own
//! struct ([`parse_section`]) and validates (see [`crate::registry`]).
//!
//! The job-level keys are documented in `docs/job-spec.md`, each connector's keys beside it in
//! `docs/sources/` and `docs/destinations/`.

pub mod checks;
pub mod database;
pub mod pipeline;
pub mod stage;
pub mod sync;

pub use checks::ChecksSpec;
pub use pipeline::{PipelineJob, PipelineSpec, is_pipeline};
pub use stage::StageSpec;
pub use sync::{DeleteMode, SyncMode, SyncPolicy, SyncSpec};

use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cursor::SpecBound;
use crate::error::{Error, Result};
use crate::units::{ByteSize, Span};

/// The only spec format version this build understands.
pub const SPEC_VERSION: u32 = 1;

/// One backfill job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Spec format version; must be 1.
    pub version: u32,
    /// Job name: lower-case letters, digits, `-` and `_`; identifies the job in state.
    pub name: String,
    /// Where rows come from: `kind` and the source's own keys.
    pub source: ConnectorSection,
    /// The cursor range to load, `[from, to)`.
    pub range: RangeSpec,
    /// How the range is cut into chunks.
    #[serde(default)]
    pub chunking: ChunkingSpec,
    /// Where Parquet files are staged before the destination loads them.
    pub stage: StageSpec,
    /// Where rows go: `kind` and the destination's own keys.
    pub destination: ConnectorSection,
    /// What the coordinator checks after each run (freshness, volume) and where it alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<ChecksSpec>,
    /// How the job keeps loading after its backfill (`backhaul sync`); absent for a fixed
    /// backfill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncSpec>,
}

/// A `[source]` or `[destination]` section: `kind` selects the connector, which parses the rest
/// of the table (`settings`) with its own strict struct.
///
/// Serialized as `kind` followed by the settings in their order, so a section the connector
/// wrote back ([`crate::registry::CheckedSpec`]) serializes exactly as the connector's struct.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorSection {
    /// The connector kind, e.g. `postgres`.
    pub kind: String,
    /// Every other key of the section, unparsed.
    pub settings: toml::Table,
}

impl Serialize for ConnectorSection {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.settings.len() + 1))?;
        map.serialize_entry("kind", &self.kind)?;
        for (key, value) in &self.settings {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ConnectorSection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let mut settings = toml::Table::deserialize(deserializer)?;
        let kind = match settings.remove("kind") {
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`kind` must be a string, not {}",
                    other.type_str()
                )));
            }
            None => return Err(D::Error::missing_field("kind")),
        };
        Ok(ConnectorSection { kind, settings })
    }
}

/// Parses a connector's section settings into its own struct `T` (`deny_unknown_fields`).
/// `section` (`source`, `destination`) prefixes the dotted key of any error, and `origin` names
/// the file.
pub fn parse_section<T: DeserializeOwned>(settings: &toml::Table, section: &str, origin: &str) -> Result<T> {
    // The settings are written back to text so errors keep a span: it gives the dotted key of
    // nested tables (`tls.mode`) that a parse of the table value would lose.
    let text = toml::to_string(settings).expect("a TOML table always serializes");
    toml::from_str(&text).map_err(|e| {
        let field = match field_of_toml_error(&text, &e).as_str() {
            "<document>" => section.to_string(),
            key => format!("{section}.{key}"),
        };
        Error::config(origin, field, e.message().trim())
    })
}

/// A connector's struct as section settings, in field order: what the canonical spec holds.
pub fn to_settings<T: Serialize>(value: &T) -> toml::Table {
    toml::Table::try_from(value).expect("a connector section always serializes to a table")
}

/// `[range]`: the half-open cursor range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    /// Inclusive lower bound: `2024-01-01`, `2024-01-01T00:00:00Z` or an integer.
    pub from: String,
    /// Exclusive upper bound, same forms, or `now` (a sync job: now − `sync.lag` at each sync).
    pub to: String,
}

/// `[chunking]`: how the range is cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChunkingSpec {
    /// Chunks of one fixed width.
    Fixed {
        /// Width: a duration (`6h`, `1d`) for time cursors, an integer for integer cursors.
        every: Step,
        /// Rows a running chunk's unread tail must be expected to hold before it is cut off
        /// for workers that wait; `0` never splits. [`DEFAULT_SPLIT_MIN_ROWS`] (off) when
        /// absent (left out of the canonical spec then).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        split_min_rows: Option<u64>,
    },
    /// Chunks sized from source statistics to hold about this many bytes each.
    TargetBytes {
        /// Estimated source bytes per chunk, e.g. `512MiB`.
        target_bytes: ByteSizeText,
        /// Workers the plan is balanced for; [`DEFAULT_PLAN_WORKERS`] when absent (left out of
        /// the canonical spec then, so existing jobs resume unchanged).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workers: Option<u16>,
        /// Rows a running chunk's unread tail must be expected to hold before it is cut off
        /// for workers that wait; `0` never splits. [`DEFAULT_SPLIT_MIN_ROWS`] (off) when
        /// absent (left out of the canonical spec then).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        split_min_rows: Option<u64>,
    },
}

impl Default for ChunkingSpec {
    fn default() -> Self {
        ChunkingSpec::TargetBytes {
            target_bytes: ByteSizeText("512MiB".into()),
            workers: None,
            split_min_rows: None,
        }
    }
}

/// A byte size kept as written, so a spec serializes back to what the user wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteSizeText(pub String);

/// A chunk width as written: a duration string or an integer step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Step {
    /// Integer step for integer cursors.
    Integer(i64),
    /// Duration for time cursors, e.g. `1d`.
    Duration(String),
}

/// What validation derived from a spec: typed values the rest of the system uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedSpec {
    /// Lower bound, not yet tied to a cursor type.
    pub from: SpecBound,
    /// Upper bound.
    pub to: SpecBound,
    /// Chunking policy with parsed values.
    pub chunking: ChunkPolicy,
    /// `[sync]`, when the job has one.
    pub sync: Option<SyncPolicy>,
    /// `chunking.split_min_rows`: rows a running chunk's unread tail must be expected to hold
    /// before it is cut off for waiting workers; 0 never splits.
    pub split_min_rows: u64,
}

impl ChunkingSpec {
    /// `split_min_rows` as written, whichever the policy.
    pub fn split_min_rows(&self) -> Option<u64> {
        match self {
            ChunkingSpec::Fixed { split_min_rows, .. } | ChunkingSpec::TargetBytes { split_min_rows, .. } => {
                *split_min_rows
            }
        }
    }
}

/// `chunking.split_min_rows` when absent: 0, splitting off. A split worker still reads its
/// chunk's tail from the source and drops it (a running query's range cannot be narrowed), so
/// a split reads the tail twice; measured on one 2-core machine with the database beside the
/// workers, that cost more wall time than the idle worker saved (docs/benchmarks.md,
/// "2026-12-06 (second session)"). It pays where the source has capacity to spare.
pub const DEFAULT_SPLIT_MIN_ROWS: u64 = 0;

impl ValidatedSpec {
    /// Ends a sync job's range (`range.to = "now"`) at `now_us − sync.lag`. Pure: the caller
    /// brings the clock. A fixed end stays as it is.
    pub fn resolve_now(&mut self, now_us: i64) {
        if let (SpecBound::Now, Some(sync)) = (self.to, &self.sync) {
            self.to = SpecBound::Time(now_us - sync.lag.micros);
        }
    }
}

/// Parsed chunking policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkPolicy {
    /// Fixed width in cursor units of a time cursor (microseconds).
    FixedSpan(Span),
    /// Fixed integer step.
    FixedStep(i64),
    /// Target estimated bytes per chunk, balanced for this many workers.
    TargetBytes {
        /// Estimated source bytes per chunk.
        bytes: u64,
        /// Workers the plan is balanced for.
        workers: u16,
    },
}

/// Workers a byte-target plan is balanced for when the spec does not say: `backfill`'s
/// default `--workers`.
pub const DEFAULT_PLAN_WORKERS: u16 = 2;

impl JobSpec {
    /// Parses a spec from TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let field = field_of_toml_error(text, &e);
            Error::config(origin, field, e.message().trim())
        })
    }

    /// Reads and parses a spec file (IO; validation stays separate).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// TOML of the spec as it stands. The canonical form the coordinator stores and compares on
    /// resume is this of a checked spec ([`crate::registry::CheckedSpec::to_canonical_toml`]),
    /// whose sections are written back by their connectors.
    pub fn to_canonical_toml(&self) -> String {
        toml::to_string(self).expect("a parsed spec always serializes")
    }

    /// Pure validation of the job-level keys: no files, no network, no clock. The `[source]` and
    /// `[destination]` sections are validated by their connectors
    /// ([`crate::registry::Connectors::check`] does both).
    pub fn validate(&self, origin: &str) -> Result<ValidatedSpec> {
        let err = |field: &str, msg: String| Error::config(origin, field, msg);
        if self.version != SPEC_VERSION {
            return Err(err(
                "version",
                format!(
                    "unsupported spec version {}; this backhaul reads version {SPEC_VERSION}",
                    self.version
                ),
            ));
        }
        if !is_valid_name(&self.name) {
            return Err(err(
                "name",
                format!(
                    "`{}` is not a valid job name: use 1-63 lower-case letters, digits, `-` or `_`, starting with a letter or digit",
                    self.name
                ),
            ));
        }
        let from = SpecBound::parse(&self.range.from).map_err(|m| err("range.from", m))?;
        let to = SpecBound::parse(&self.range.to).map_err(|m| err("range.to", m))?;
        match (from, to) {
            (SpecBound::Time(_), SpecBound::Now) => {
                if self.sync.is_none() {
                    return Err(err(
                        "range.to",
                        "`now` is for sync jobs: add a [sync] section (docs/pipelines.md)".into(),
                    ));
                }
            }
            (_, SpecBound::Now) => {
                return Err(err(
                    "range.to",
                    "`now` needs a date/time range; an integer range ends at an integer".into(),
                ));
            }
            (SpecBound::Now, _) => return Err(err("range.from", "`now` can only end a range".into())),
            (SpecBound::Time(a), SpecBound::Time(b)) | (SpecBound::Integer(a), SpecBound::Integer(b)) => {
                if a >= b {
                    return Err(err(
                        "range",
                        format!("`from` ({}) must be before `to` ({})", self.range.from, self.range.to),
                    ));
                }
            }
            _ => {
                return Err(err(
                    "range",
                    "`from` and `to` must both be dates/timestamps or both integers".into(),
                ));
            }
        }
        let chunking = match &self.chunking {
            ChunkingSpec::Fixed {
                every: Step::Integer(n),
                ..
            } => {
                if *n <= 0 {
                    return Err(err("chunking.every", "must be positive".into()));
                }
                if matches!(from, SpecBound::Time(_)) {
                    return Err(err(
                        "chunking.every",
                        "the range is in time; give a duration such as `1d`".into(),
                    ));
                }
                ChunkPolicy::FixedStep(*n)
            }
            ChunkingSpec::Fixed {
                every: Step::Duration(d),
                ..
            } => {
                let span = Span::parse(d).map_err(|m| err("chunking.every", m))?;
                if matches!(from, SpecBound::Integer(_)) {
                    return Err(err(
                        "chunking.every",
                        "the range is in integers; give an integer step".into(),
                    ));
                }
                ChunkPolicy::FixedSpan(span)
            }
            ChunkingSpec::TargetBytes {
                target_bytes, workers, ..
            } => {
                let b = ByteSize::parse(&target_bytes.0).map_err(|m| err("chunking.target_bytes", m))?;
                if b.0 == 0 {
                    return Err(err("chunking.target_bytes", "must be positive".into()));
                }
                let workers = workers.unwrap_or(DEFAULT_PLAN_WORKERS);
                if !(1..=256).contains(&workers) {
                    return Err(err("chunking.workers", format!("{workers} is not between 1 and 256")));
                }
                ChunkPolicy::TargetBytes { bytes: b.0, workers }
            }
        };
        self.stage.validate(origin)?;
        if let Some(checks) = &self.checks {
            checks.validate(origin)?;
        }
        let sync = self.sync.as_ref().map(|s| s.validate(origin)).transpose()?;
        Ok(ValidatedSpec {
            from,
            to,
            chunking,
            sync,
            split_min_rows: self.chunking.split_min_rows().unwrap_or(DEFAULT_SPLIT_MIN_ROWS),
        })
    }

    /// Makes every relative job-level path relative to `base` (the spec file's directory);
    /// connectors resolve their own ([`crate::registry::CheckedSpec::resolve_paths`]).
    pub fn resolve_paths(&mut self, base: &Path) {
        self.stage.resolve_paths(base);
    }
}

/// Makes `path` relative to `base` (the spec file's directory) when it is relative.
pub fn resolve_path(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

/// Job names end up in file names and URLs, so they are kept plain.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

/// Identifiers are interpolated into SQL, so only plain names pass.
pub fn is_valid_identifier(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Best-effort dotted path of the key a TOML error points at, from its span.
fn field_of_toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return "<document>".into();
    };
    let start = span.start.min(text.len());
    let header = |line: &str| {
        let l = line.trim();
        (l.starts_with('[') && l.ends_with(']')).then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    };
    let mut table = String::new();
    for line in text[..start].lines() {
        if let Some(t) = header(line) {
            table = t;
        }
    }
    let key_text = &text[start..span.end.min(text.len())];
    // A span on a whole table (a missing key) starts at its header.
    if let Some(t) = key_text.lines().next().and_then(header) {
        table = t;
    }
    // A span on a value (a wrong type) has its key earlier on the same line.
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let key = match text[line_start..start].split_once('=') {
        Some((key, _)) => key.trim(),
        None => key_text.split('=').next().unwrap_or("").trim(),
    };
    let key = if key.starts_with('[') || key.contains('\n') {
        ""
    } else {
        key
    };
    let msg = e.message();
    // serde names the offending key in its message; prefer it to the span's text.
    let named = msg
        .split('`')
        .nth(1)
        .filter(|_| msg.starts_with("unknown field") || msg.starts_with("missing field"));
    let leaf = named.unwrap_or(key);
    match (table.is_empty(), leaf.is_empty()) {
        (true, true) => "<document>".into(),
        (true, false) => leaf.into(),
        (false, true) => table,
        (false, false) => format!("{table}.{leaf}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version = 1
name = "orders"

[source]
kind = "embedded"
path = "src.db"
cursor = "created_at"

[range]
from = "2024-01-01"
to = "2024-02-01"

[chunking]
policy = "fixed"
every = "1d"

[stage]
path = "stage"

[destination]
kind = "local"
path = "wh"
table = "orders"
file_size = "1MiB"
allow_small_files = true
"#;

    #[test]
    fn good_spec_validates() {
        let spec = JobSpec::from_toml(GOOD, "job.toml").unwrap();
        let v = spec.validate("job.toml").unwrap();
        assert!(matches!(v.chunking, ChunkPolicy::FixedSpan(_)));
        assert_eq!(spec.source.kind, "embedded");
        assert_eq!(spec.destination.settings["table"].as_str(), Some("orders"));
        let again = JobSpec::from_toml(&spec.to_canonical_toml(), "x").unwrap();
        assert_eq!(again, spec);
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Section {
        cursor: String,
        #[serde(default)]
        tls: Tls,
    }

    #[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Tls {
        #[serde(default)]
        mode: String,
    }

    fn parse_source(text: &str) -> Result<Section> {
        let spec = JobSpec::from_toml(text, "job.toml")?;
        parse_section(&spec.source.settings, "source", "job.toml")
    }

    #[test]
    fn a_section_error_names_the_dotted_key_and_file() {
        let good = GOOD.replace("path = \"src.db\"\n", "");
        let s = parse_source(&good).unwrap();
        assert_eq!(s.cursor, "created_at");
        assert_eq!(to_settings(&s)["cursor"].as_str(), Some("created_at"));
        let e = parse_source(&good.replace("cursor = ", "cursr = "))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("job.toml: source.cursr: unknown field `cursr`"), "{e}");
        let e = parse_source(&good.replace("cursor = \"created_at\"", ""))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("job.toml: source.cursor: missing field `cursor`"), "{e}");
        let nested = good.replace("[range]", "[source.tls]\nmodee = \"x\"\n\n[range]");
        let e = parse_source(&nested).unwrap_err().to_string();
        assert!(e.starts_with("job.toml: source.tls.modee: unknown field"), "{e}");
        let typed = good.replace("cursor = \"created_at\"", "cursor = 3");
        let e = parse_source(&typed).unwrap_err().to_string();
        assert!(e.starts_with("job.toml: source.cursor: "), "{e}");
    }

    #[test]
    fn a_section_needs_a_string_kind() {
        let e = JobSpec::from_toml(&GOOD.replace("kind = \"embedded\"\n", ""), "job.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("job.toml: source") && e.contains("missing field `kind`"),
            "{e}"
        );
        let e = JobSpec::from_toml(&GOOD.replace("kind = \"local\"", "kind = 1"), "job.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("destination") && e.contains("must be a string"), "{e}");
    }

    #[test]
    fn now_ends_only_a_sync_job_over_time() {
        let now = GOOD.replace("to = \"2024-02-01\"", "to = \"now\"");
        let e = JobSpec::from_toml(&now, "job.toml")
            .unwrap()
            .validate("job.toml")
            .unwrap_err();
        assert!(e.to_string().starts_with("job.toml: range.to:"), "{e}");
        let sync = format!("{now}\n[sync]\nmode = \"dedup\"\nprimary_key = [\"id\"]\n");
        let spec = JobSpec::from_toml(&sync, "job.toml").unwrap();
        let v = spec.validate("job.toml").unwrap();
        assert_eq!(v.to, SpecBound::Now);
        assert_eq!(v.sync.unwrap().mode, SyncMode::Dedup);
        assert!(spec.to_canonical_toml().contains("[sync]"));
        let plain = JobSpec::from_toml(GOOD, "job.toml").unwrap();
        assert!(
            !plain.to_canonical_toml().contains("sync"),
            "no [sync] when none was written"
        );
    }

    #[test]
    fn unknown_top_level_key() {
        let text = format!("colour = 1\n{GOOD}");
        let e = JobSpec::from_toml(&text, "job.toml").unwrap_err().to_string();
        assert!(e.contains("job.toml: colour"), "{e}");
    }

    #[test]
    fn from_not_before_to() {
        let text = GOOD.replace("to = \"2024-02-01\"", "to = \"2023-02-01\"");
        let e = JobSpec::from_toml(&text, "job.toml")
            .unwrap()
            .validate("job.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("job.toml: range:"), "{e}");
    }

    #[test]
    fn splitting_running_chunks_is_off_unless_named_and_an_absent_key_stays_absent() {
        let split = |section: &str| {
            let text = GOOD.replace("policy = \"fixed\"\nevery = \"1d\"", section);
            let spec = JobSpec::from_toml(&text, "job.toml")?;
            let canonical = spec.to_canonical_toml();
            spec.validate("job.toml").map(|v| (v.split_min_rows, canonical))
        };
        let (rows, canonical) = split("policy = \"fixed\"\nevery = \"1d\"").unwrap();
        assert_eq!(rows, 0);
        assert!(!canonical.contains("split_min_rows"), "{canonical}");
        let (rows, canonical) = split("policy = \"fixed\"\nevery = \"1d\"\nsplit_min_rows = 500000").unwrap();
        assert_eq!(rows, 500_000);
        assert!(canonical.contains("split_min_rows = 500000"), "{canonical}");
        let (rows, _) = split("policy = \"target_bytes\"\ntarget_bytes = \"1MiB\"\nsplit_min_rows = 7").unwrap();
        assert_eq!(rows, 7);
        let e = split("policy = \"fixed\"\nevery = \"1d\"\nsplit_min_rows = -1")
            .unwrap_err()
            .to_string();
        // serde's tagged enums lose the key's name inside the section; the section and the
        // value are named.
        assert!(e.contains("job.toml: chunking:") && e.contains("-1"), "{e}");
    }

    #[test]
    fn a_byte_target_is_balanced_for_the_workers_named_or_two() {
        let chunking = |section: &str| {
            let text = GOOD.replace("policy = \"fixed\"\nevery = \"1d\"", section);
            let spec = JobSpec::from_toml(&text, "job.toml")?;
            let canonical = spec.to_canonical_toml();
            spec.validate("job.toml").map(|v| (v.chunking, canonical))
        };
        let (policy, canonical) = chunking("policy = \"target_bytes\"\ntarget_bytes = \"1MiB\"").unwrap();
        assert_eq!(
            policy,
            ChunkPolicy::TargetBytes {
                bytes: 1 << 20,
                workers: DEFAULT_PLAN_WORKERS
            }
        );
        assert!(
            !canonical.contains("workers"),
            "an absent key stays absent:\n{canonical}"
        );
        let (policy, canonical) = chunking("policy = \"target_bytes\"\ntarget_bytes = \"1MiB\"\nworkers = 4").unwrap();
        assert_eq!(
            policy,
            ChunkPolicy::TargetBytes {
                bytes: 1 << 20,
                workers: 4
            }
        );
        assert!(canonical.contains("workers = 4"), "{canonical}");
        let e = chunking("policy = \"target_bytes\"\ntarget_bytes = \"1MiB\"\nworkers = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("job.toml: chunking.workers:"), "{e}");
        let e = chunking("policy = \"fixed\"\nevery = \"1d\"\nworkers = 2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workers"), "{e}");
    }
}
