//! The one error type of the cost planner.

use std::path::PathBuf;

use backhaul_core::ErrorClass;

/// Errors of price tables, cost configs, profiles and estimates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CostError {
    /// A price table, overlay, cost config or profile is malformed or inconsistent.
    #[error("{file}: {field}: {message}")]
    Invalid {
        /// The file (or `<builtin>/name.toml` for the tables compiled into the binary).
        file: String,
        /// Dotted path of the offending value, e.g. `row[snowflake.credit.enterprise].unit`.
        field: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// The profile was taken for another job, or for another version of this job's spec.
    #[error("profile {file} does not belong to this job: {message}")]
    ProfileMismatch {
        /// The profile file.
        file: String,
        /// Which of job name or spec fingerprint differs.
        message: String,
    },
    /// `--strict` and the estimate needs values whose confidence is `unconfirmed`.
    #[error(
        "--strict refuses unconfirmed prices: {}; confirm them in cost-models/ or override them in an --overlay file",
        .rows.join(", ")
    )]
    Unconfirmed {
        /// `id (from DATE)` of every unconfirmed row the estimate used.
        rows: Vec<String>,
    },
    /// Reading the source for a profile failed.
    #[error(transparent)]
    Source(#[from] backhaul_core::Error),
    /// Local file error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding the sample (Parquet or JSON) failed.
    #[error("encoding the sample: {0}")]
    Encode(String),
}

impl CostError {
    /// Shorthand for [`CostError::Invalid`].
    pub fn invalid(file: impl Into<String>, field: impl Into<String>, message: impl Into<String>) -> Self {
        CostError::Invalid {
            file: file.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// File error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CostError::Io {
            path: path.into(),
            source,
        }
    }

    /// Retry class, by variant: only source errors can be transient.
    pub fn class(&self) -> ErrorClass {
        match self {
            CostError::Source(e) => e.class(),
            _ => ErrorClass::Permanent,
        }
    }
}

/// Result of the cost planner.
pub type Result<T, E = CostError> = std::result::Result<T, E>;

/// `line N` of a TOML parse error, for the `field` of [`CostError::Invalid`].
pub fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    e.span()
        .map(|s| format!("line {}", text[..s.start.min(text.len())].matches('\n').count() + 1))
        .unwrap_or_else(|| "<file>".into())
}
