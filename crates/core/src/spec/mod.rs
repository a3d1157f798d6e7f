//! The job spec: a versioned TOML document describing one backfill.
//!
//! Parsing is strict (`deny_unknown_fields` everywhere) and [`JobSpec::validate`] is pure: it
//! checks everything that can be checked without touching a file or a server. Checks that need
//! IO (does the cursor column exist, is the stage writable) happen when connectors are built.
//!
//! Every key is documented in `docs/job-spec.md`.

pub mod database;
pub mod mysql;
pub mod postgres;
pub mod stage;

pub use stage::StageSpec;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cursor::SpecBound;
use crate::error::{Error, Result};
use crate::units::{ByteSize, MIB, Span};

/// The only spec format version this build understands.
pub const SPEC_VERSION: u32 = 1;

/// Smallest target file size accepted without `allow_small_files`.
pub const MIN_FILE_SIZE: u64 = 128 * MIB;
/// Largest target file size accepted.
pub const MAX_FILE_SIZE: u64 = 1024 * MIB;

/// One backfill job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Spec format version; must be 1.
    pub version: u32,
    /// Job name: lower-case letters, digits, `-` and `_`; identifies the job in state.
    pub name: String,
    /// Where rows come from.
    pub source: SourceSpec,
    /// The cursor range to load, `[from, to)`.
    pub range: RangeSpec,
    /// How the range is cut into chunks.
    #[serde(default)]
    pub chunking: ChunkingSpec,
    /// Where Parquet files are staged before the destination loads them.
    pub stage: StageSpec,
    /// Where rows go.
    pub destination: DestinationSpec,
}

/// The source of a job, selected by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// The built-in generated `orders` table in an embedded SQLite database.
    Embedded(EmbeddedSourceSpec),
    /// A PostgreSQL table, read with binary `COPY`.
    Postgres(postgres::PostgresSourceSpec),
    /// A MySQL or MariaDB table, read with a streaming query.
    Mysql(mysql::MysqlSourceSpec),
}

/// `[source] kind = "embedded"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSourceSpec {
    /// SQLite database file; created and seeded for the job's range when missing.
    pub path: PathBuf,
    /// Table to extract.
    #[serde(default = "default_embedded_table")]
    pub table: String,
    /// Cursor column that bounds chunks.
    pub cursor: String,
    /// Average generated rows per day at the start of 2020; volume doubles every year.
    #[serde(default = "default_rows_per_day")]
    pub rows_per_day: u64,
    /// Generator seed; the same seed always yields the same rows.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_embedded_table() -> String {
    "orders".into()
}
fn default_rows_per_day() -> u64 {
    20_000
}
fn default_seed() -> u64 {
    42
}

impl SourceSpec {
    /// The table or stream name the source reads.
    pub fn table(&self) -> &str {
        match self {
            SourceSpec::Embedded(s) => &s.table,
            SourceSpec::Postgres(s) => &s.table,
            SourceSpec::Mysql(s) => &s.table,
        }
    }

    /// The cursor column name.
    pub fn cursor(&self) -> &str {
        match self {
            SourceSpec::Embedded(s) => &s.cursor,
            SourceSpec::Postgres(s) => &s.cursor,
            SourceSpec::Mysql(s) => &s.cursor,
        }
    }
}

/// `[range]`: the half-open cursor range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    /// Inclusive lower bound: `2024-01-01`, `2024-01-01T00:00:00Z` or an integer.
    pub from: String,
    /// Exclusive upper bound, same forms.
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
    },
    /// Chunks sized from source statistics to hold about this many bytes each.
    TargetBytes {
        /// Estimated source bytes per chunk, e.g. `512MiB`.
        target_bytes: ByteSizeText,
    },
}

impl Default for ChunkingSpec {
    fn default() -> Self {
        ChunkingSpec::TargetBytes {
            target_bytes: ByteSizeText("512MiB".into()),
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

/// The destination of a job, selected by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DestinationSpec {
    /// A local Parquet warehouse directory, queryable with `backhaul query`.
    Local(LocalDestinationSpec),
}

/// `[destination] kind = "local"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalDestinationSpec {
    /// Warehouse root directory; each table is a sub-directory.
    pub path: PathBuf,
    /// Destination table name.
    pub table: String,
    /// Target Parquet file size; files roll over at this size. Default 256MiB.
    #[serde(default)]
    pub file_size: Option<ByteSizeText>,
    /// Allow `file_size` below 128MiB. Meant for tests and demos only.
    #[serde(default)]
    pub allow_small_files: bool,
}

impl DestinationSpec {
    /// Destination table name.
    pub fn table(&self) -> &str {
        match self {
            DestinationSpec::Local(d) => &d.table,
        }
    }
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
    /// Target Parquet file size in bytes.
    pub file_size: u64,
}

/// Parsed chunking policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkPolicy {
    /// Fixed width in cursor units of a time cursor (microseconds).
    FixedSpan(Span),
    /// Fixed integer step.
    FixedStep(i64),
    /// Target estimated bytes per chunk.
    TargetBytes(u64),
}

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

    /// Canonical TOML of the spec; the coordinator stores it and compares it on resume.
    pub fn to_canonical_toml(&self) -> String {
        toml::to_string(self).expect("a parsed spec always serializes")
    }

    /// Pure validation: no files, no network, no clock.
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
        match &self.source {
            SourceSpec::Embedded(s) => {
                if s.path.as_os_str().is_empty() {
                    return Err(err("source.path", "must not be empty".into()));
                }
                if !is_valid_identifier(&s.table) {
                    return Err(err("source.table", format!("`{}` is not a valid table name", s.table)));
                }
                if !is_valid_identifier(&s.cursor) {
                    return Err(err(
                        "source.cursor",
                        format!("`{}` is not a valid column name", s.cursor),
                    ));
                }
                if s.rows_per_day == 0 {
                    return Err(err("source.rows_per_day", "must be at least 1".into()));
                }
            }
            SourceSpec::Postgres(s) => s.validate(origin)?,
            SourceSpec::Mysql(s) => s.validate(origin)?,
        }
        let from = SpecBound::parse(&self.range.from).map_err(|m| err("range.from", m))?;
        let to = SpecBound::parse(&self.range.to).map_err(|m| err("range.to", m))?;
        match (from, to) {
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
            ChunkingSpec::TargetBytes { target_bytes } => {
                let b = ByteSize::parse(&target_bytes.0).map_err(|m| err("chunking.target_bytes", m))?;
                if b.0 == 0 {
                    return Err(err("chunking.target_bytes", "must be positive".into()));
                }
                ChunkPolicy::TargetBytes(b.0)
            }
        };
        let file_size = match &self.destination {
            DestinationSpec::Local(d) => {
                if d.path.as_os_str().is_empty() {
                    return Err(err("destination.path", "must not be empty".into()));
                }
                if !is_valid_identifier(&d.table) {
                    return Err(err(
                        "destination.table",
                        format!("`{}` is not a valid table name", d.table),
                    ));
                }
                let size = match &d.file_size {
                    Some(t) => ByteSize::parse(&t.0).map_err(|m| err("destination.file_size", m))?.0,
                    None => 256 * MIB,
                };
                if size > MAX_FILE_SIZE {
                    return Err(err(
                        "destination.file_size",
                        format!("{} is above the 1GiB maximum", ByteSize(size)),
                    ));
                }
                if size < MIN_FILE_SIZE && !d.allow_small_files {
                    return Err(err(
                        "destination.file_size",
                        format!(
                            "{} is below the 128MiB minimum; set `allow_small_files = true` for tests",
                            ByteSize(size)
                        ),
                    ));
                }
                if size == 0 {
                    return Err(err("destination.file_size", "must be positive".into()));
                }
                size
            }
        };
        self.stage.validate(origin)?;
        Ok(ValidatedSpec {
            from,
            to,
            chunking,
            file_size,
        })
    }

    /// Makes every relative path in the spec relative to `base` (the spec file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match &mut self.source {
            SourceSpec::Embedded(s) => fix(&mut s.path),
            SourceSpec::Postgres(s) => {
                s.password.file.as_mut().map(fix);
                s.tls.ca_file.as_mut().map(fix);
            }
            SourceSpec::Mysql(s) => {
                s.password.file.as_mut().map(fix);
                s.tls.ca_file.as_mut().map(fix);
            }
        }
        self.stage.resolve_paths(base);
        match &mut self.destination {
            DestinationSpec::Local(d) => fix(&mut d.path),
        }
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
    let before = &text[..span.start.min(text.len())];
    let mut table = String::new();
    for line in before.lines() {
        let l = line.trim();
        if l.starts_with('[') && l.ends_with(']') {
            table = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
    }
    let key_text = &text[span.start.min(text.len())..span.end.min(text.len())];
    let key = key_text.split('=').next().unwrap_or("").trim();
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
        assert_eq!(v.file_size, MIB);
        assert!(matches!(v.chunking, ChunkPolicy::FixedSpan(_)));
        let again = JobSpec::from_toml(&spec.to_canonical_toml(), "x").unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn misspelled_key_names_field_and_file() {
        let text = GOOD.replace("cursor = ", "cursr = ");
        let e = JobSpec::from_toml(&text, "job.toml").unwrap_err().to_string();
        assert!(e.starts_with("job.toml: "), "{e}");
        assert!(e.contains("cursr"), "{e}");
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
    fn small_files_need_the_flag() {
        let text = GOOD.replace("allow_small_files = true", "");
        let e = JobSpec::from_toml(&text, "job.toml")
            .unwrap()
            .validate("job.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("destination.file_size"), "{e}");
    }
}
