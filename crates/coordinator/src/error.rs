//! Errors of the coordinator crate.

use backhaul_core::ErrorClass;

/// What can go wrong in the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// Error from core or a connector while planning.
    #[error(transparent)]
    Core(#[from] backhaul_core::Error),
    /// The state database failed.
    #[error("state database {path}: {source}")]
    Database {
        /// The database file.
        path: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// A job with this name exists with a different spec.
    #[error(
        "job `{job_id}` already exists in {state} with a different spec; give the new spec another `name`, or remove the old job's state"
    )]
    SpecChanged {
        /// The job.
        job_id: String,
        /// The state file.
        state: String,
    },
    /// A sync planned from a high-water mark the job no longer has (another sync extended it
    /// meanwhile), or one that would not move it forward.
    #[error(
        "job `{job_id}`: this sync was planned from the high-water mark {planned_from}, but the job's mark is {stored}; run the sync again"
    )]
    MarkMoved {
        /// The job.
        job_id: String,
        /// The mark the sync was planned from.
        planned_from: String,
        /// The stored mark.
        stored: String,
    },
    /// Another process serves leases from this state database.
    #[error(
        "state database {path} is in use by another coordinator or local run (its lock file {path}.lock is held); stop it first, or give this one its own --state"
    )]
    StateLocked {
        /// The state database.
        path: String,
    },
    /// The PostgreSQL state database failed.
    #[error("state database {url}: {}", postgres_message(.source))]
    Postgres {
        /// The state URL without its password.
        url: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The PostgreSQL state database did not answer in time, or this coordinator is taking its
    /// serving lock again; the call changed nothing it will not redo.
    #[error("state database {url} is unavailable: {reason}")]
    StateUnavailable {
        /// The state URL without its password.
        url: String,
        /// What happened.
        reason: String,
    },
    /// Another coordinator serves leases from this PostgreSQL state database.
    #[error(
        "state database {url} is in use by another coordinator (it holds the serving lock of this database and schema); stop it first, or give this one its own database or schema"
    )]
    PostgresStateLocked {
        /// The state URL without its password.
        url: String,
    },
    /// This coordinator lost its serving lock and another coordinator served since: it changes
    /// no state any more.
    #[error(
        "state database {url}: another coordinator has served it since this one lost its serving lock; this one changes no state any more, restart it"
    )]
    StateLockLost {
        /// The state URL without its password.
        url: String,
    },
    /// A `--state` URL that cannot be used.
    #[error("state URL {url}: {message}")]
    StateUrl {
        /// The state URL without its password.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The job is unknown to this state database.
    #[error("no job `{0}` in this state database")]
    UnknownJob(String),
    /// No schedule of this name in this state database.
    #[error("no schedule `{0}` in this state database; `backhaul schedule list` shows the schedules")]
    UnknownSchedule(String),
    /// A schedule with this name exists with another spec, cron expression or time zone.
    #[error(
        "schedule `{name}` already exists with another spec, cron expression or time zone; remove it first (`backhaul schedule remove {name}`)"
    )]
    ScheduleChanged {
        /// The schedule.
        name: String,
    },
    /// A check alert could not be delivered to its webhook (the message never holds the URL).
    #[error("check alert: {0}")]
    AlertDelivery(String),
    /// A lease id was malformed, stale or unknown.
    #[error("lease {lease_id} is not current: {reason}")]
    StaleLease {
        /// The lease.
        lease_id: String,
        /// Why it was refused.
        reason: String,
    },
    /// A background task died.
    #[error("coordinator task failed: {0}")]
    Task(String),
    /// TLS or token settings are unusable.
    #[error("{0}")]
    Wire(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Result alias for the coordinator.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

impl CoordinatorError {
    /// Retry class, by variant.
    pub fn class(&self) -> ErrorClass {
        match self {
            CoordinatorError::Core(e) => e.class(),
            CoordinatorError::StaleLease { .. }
            | CoordinatorError::Transport(_)
            | CoordinatorError::Task(_)
            | CoordinatorError::MarkMoved { .. } => ErrorClass::Transient,
            CoordinatorError::Database { source, .. } => match source.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
            CoordinatorError::Postgres { source, .. } => postgres_class(source),
            CoordinatorError::StateUnavailable { .. } | CoordinatorError::AlertDelivery(_) => ErrorClass::Transient,
            CoordinatorError::SpecChanged { .. }
            | CoordinatorError::UnknownJob(_)
            | CoordinatorError::UnknownSchedule(_)
            | CoordinatorError::ScheduleChanged { .. }
            | CoordinatorError::StateLocked { .. }
            | CoordinatorError::PostgresStateLocked { .. }
            | CoordinatorError::StateLockLost { .. }
            | CoordinatorError::StateUrl { .. }
            | CoordinatorError::Wire(_) => ErrorClass::Permanent,
        }
    }

    /// A PostgreSQL error that guarantees its transaction was rolled back and may simply run
    /// again (deadlock victim, serialization failure).
    pub(crate) fn is_retryable_conflict(&self) -> bool {
        matches!(self, CoordinatorError::Postgres { source, .. }
            if source.code().is_some_and(|c| matches!(c.code(), "40001" | "40P01")))
    }
}

/// Retry class of a PostgreSQL error: from its SQLSTATE for a server error (the table the
/// PostgreSQL source uses too: [`backhaul_core::sqlstate::class_of`]), else transient for a
/// lost connection or failed IO, permanent for the rest (configuration, protocol, TLS
/// certificates).
fn postgres_class(e: &tokio_postgres::Error) -> ErrorClass {
    if let Some(code) = e.code() {
        return backhaul_core::sqlstate::class_of(code.code());
    }
    if e.is_closed() {
        return ErrorClass::Transient;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            // TLS certificate problems surface as InvalidData: a retry cannot fix them.
            return match io.kind() {
                std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::InvalidInput
                | std::io::ErrorKind::PermissionDenied => ErrorClass::Permanent,
                _ => ErrorClass::Transient,
            };
        }
        source = s.source();
    }
    ErrorClass::Permanent
}

/// A PostgreSQL error for people: the server's message with SQLSTATE and detail, or the driver's
/// message with its cause. Neither ever holds the password (tokio-postgres redacts it).
fn postgres_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} [SQLSTATE {}]", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; detail: {detail}"));
        }
        return text;
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}
