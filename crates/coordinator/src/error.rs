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
    /// Another process serves leases from this state database.
    #[error(
        "state database {path} is in use by another coordinator or local run (its lock file {path}.lock is held); stop it first, or give this one its own --state"
    )]
    StateLocked {
        /// The state database.
        path: String,
    },
    /// The job is unknown to this state database.
    #[error("no job `{0}` in this state database")]
    UnknownJob(String),
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
            CoordinatorError::StaleLease { .. } | CoordinatorError::Transport(_) | CoordinatorError::Task(_) => {
                ErrorClass::Transient
            }
            CoordinatorError::Database { source, .. } => match source.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
            CoordinatorError::SpecChanged { .. }
            | CoordinatorError::UnknownJob(_)
            | CoordinatorError::StateLocked { .. }
            | CoordinatorError::Wire(_) => ErrorClass::Permanent,
        }
    }
}
