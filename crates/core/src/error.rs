//! The one error type of the library crates, and its retry class.
//!
//! The class is decided by the variant, never by parsing a message: a worker reports it to the
//! coordinator as is, and the coordinator retries or parks the chunk from it alone.

use std::path::PathBuf;

/// How a failure should be handled by whoever schedules the work again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Retry soon with backoff: the connection dropped, a timeout, a lost lease.
    Transient,
    /// Retry after a longer backoff: the other side asked us to slow down.
    Throttled,
    /// Retrying cannot help until someone changes something.
    Permanent,
}

impl ErrorClass {
    /// Stable lower-case name, used in state, logs and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Permanent => "permanent",
        }
    }

    /// Parses [`ErrorClass::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "transient" => Some(ErrorClass::Transient),
            "throttled" => Some(ErrorClass::Throttled),
            "permanent" => Some(ErrorClass::Permanent),
            _ => None,
        }
    }
}

/// Errors of the backhaul library crates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A job spec or other config file is malformed or inconsistent.
    #[error("{file}: {field}: {message}")]
    Config {
        /// The file the value came from (or `<inline>`).
        file: String,
        /// Dotted path of the offending key, e.g. `range.from`.
        field: String,
        /// What is wrong and, where possible, what would be right.
        message: String,
    },
    /// A named object (table, column, job, chunk) does not exist or is not usable.
    #[error("{object}: {message}")]
    InvalidObject {
        /// What was looked for, e.g. `column orders.created_at`.
        object: String,
        /// Why it cannot be used.
        message: String,
    },
    /// The destination already holds data that belongs to something else.
    #[error("destination conflict: {0}")]
    DestinationConflict(String),
    /// A source or destination could not be reached or dropped the connection.
    #[error("{system} unreachable: {message}")]
    Unreachable {
        /// Which system, e.g. `source` or `stage`.
        system: String,
        /// The underlying error.
        message: String,
    },
    /// The other side asked us to slow down.
    #[error("{system} throttled: {message}")]
    Throttled {
        /// Which system.
        system: String,
        /// The underlying error.
        message: String,
    },
    /// Rows or checksums measured at two points of the pipeline differ.
    #[error("verification failed for {what}: {message}")]
    VerificationFailed {
        /// The chunk or table that failed.
        what: String,
        /// Both measurements.
        message: String,
    },
    /// A lease is no longer held by the caller (expired, or the chunk was re-leased).
    #[error("lease {lease_id} is no longer valid: {message}")]
    LeaseLost {
        /// The lease.
        lease_id: String,
        /// Why.
        message: String,
    },
    /// Work was cancelled (shutdown, cancel request).
    #[error("cancelled")]
    Cancelled,
    /// Local file-system error with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Arrow error while building or converting batches.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// object_store error while staging files.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Embedded state database error.
    #[error("state store: {0}")]
    State(String),
    /// A value from a source cannot be represented without loss in the target type.
    #[error("type fidelity: {0}")]
    TypeFidelity(String),
    /// A bug or broken invariant inside backhaul.
    #[error("internal error: {0}")]
    Internal(String),
    /// An error another backhaul process reported over the wire (a worker's Flight data
    /// plane), keeping the class and kind it had there.
    #[error("{system}: {message}")]
    Remote {
        /// Who reported it, e.g. `worker at https://10.0.0.7:7171`.
        system: String,
        /// Its retry class where it happened (typed on the wire, never parsed from text).
        class: ErrorClass,
        /// Its kind where it happened, e.g. `config` or `unreachable`.
        kind: String,
        /// Its message.
        message: String,
    },
}

/// Result alias for the library crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The retry class, decided by the variant.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Unreachable { .. } | Error::LeaseLost { .. } | Error::Cancelled => ErrorClass::Transient,
            Error::Throttled { .. } => ErrorClass::Throttled,
            Error::Remote { class, .. } => *class,
            Error::Io { source, .. } => io_class(source),
            Error::ObjectStore(e) => match e {
                object_store::Error::NotFound { .. }
                | object_store::Error::InvalidPath { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::UnknownConfigurationKey { .. } => ErrorClass::Permanent,
                _ => ErrorClass::Transient,
            },
            Error::Config { .. }
            | Error::InvalidObject { .. }
            | Error::DestinationConflict(_)
            | Error::VerificationFailed { .. }
            | Error::Arrow(_)
            | Error::State(_)
            | Error::TypeFidelity(_)
            | Error::Internal(_) => ErrorClass::Permanent,
        }
    }

    /// Stable machine-readable kind, reported over the wire and in JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config { .. } => "config",
            Error::InvalidObject { .. } => "invalid_object",
            Error::DestinationConflict(_) => "destination_conflict",
            Error::Unreachable { .. } => "unreachable",
            Error::Throttled { .. } => "throttled",
            Error::VerificationFailed { .. } => "verification_failed",
            Error::LeaseLost { .. } => "lease_lost",
            Error::Cancelled => "cancelled",
            Error::Io { .. } => "io",
            Error::Arrow(_) => "arrow",
            Error::ObjectStore(_) => "object_store",
            Error::State(_) => "state",
            Error::TypeFidelity(_) => "type_fidelity",
            Error::Internal(_) => "internal",
            Error::Remote { .. } => "remote",
        }
    }

    /// Builds [`Error::Config`].
    pub fn config(file: impl Into<String>, field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            file: file.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// Builds [`Error::Io`] with the path that failed.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// IO errors that a retry can fix are the ones where the other side or the moment was wrong.
fn io_class(e: &std::io::Error) -> ErrorClass {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe | TimedOut
        | Interrupted | WouldBlock | UnexpectedEof => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_is_decided_by_variant() {
        let unreachable = Error::Unreachable {
            system: "source".into(),
            message: "reset".into(),
        };
        assert_eq!(unreachable.class(), ErrorClass::Transient);
        let throttled = Error::Throttled {
            system: "warehouse".into(),
            message: "429".into(),
        };
        assert_eq!(throttled.class(), ErrorClass::Throttled);
        assert_eq!(
            Error::config("a.toml", "range.from", "bad").class(),
            ErrorClass::Permanent
        );
        let reset = Error::io("/x", std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(reset.class(), ErrorClass::Transient);
        let denied = Error::io("/x", std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(denied.class(), ErrorClass::Permanent);
    }

    #[test]
    fn class_names_round_trip() {
        for c in [ErrorClass::Transient, ErrorClass::Throttled, ErrorClass::Permanent] {
            assert_eq!(ErrorClass::parse(c.as_str()), Some(c));
        }
    }
}
