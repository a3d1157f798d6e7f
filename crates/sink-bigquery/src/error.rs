//! The crate's one error type. Its class is decided by variant and, for BigQuery's answers, by
//! the HTTP status and BigQuery's `reason` code: never by parsing messages.

use backhaul_core::ErrorClass;

/// Result alias of this crate.
pub type Result<T, E = BigQueryError> = std::result::Result<T, E>;

/// What went wrong talking to BigQuery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BigQueryError {
    /// BigQuery answered a call with an error status.
    #[error("bigquery {call}: HTTP {status} {reason}: {message}")]
    Api {
        /// The call, e.g. `jobs.insert` or `tables.get sales.orders`.
        call: String,
        /// The HTTP status.
        status: u16,
        /// BigQuery's reason code (`notFound`, `quotaExceeded`, …), empty when absent.
        reason: String,
        /// The server's message.
        message: String,
    },
    /// A job ran and failed: its `status.errorResult`.
    #[error("bigquery job {job_id} failed ({reason}): {message}")]
    JobFailed {
        /// The job id.
        job_id: String,
        /// BigQuery's reason code of the error result.
        reason: String,
        /// The error result's message, with the first detailed error when there is one.
        message: String,
    },
    /// A job did not finish within the configured `job_timeout`.
    #[error("bigquery job {job_id} still running after {waited_secs}s (destination.job_timeout)")]
    JobTimeout {
        /// The job id.
        job_id: String,
        /// How long was waited.
        waited_secs: u64,
    },
    /// The connection failed, or a request timed out.
    #[error("bigquery {call}: network error: {message}")]
    Network {
        /// The call.
        call: String,
        /// What failed.
        message: String,
    },
    /// No access token: unreadable key file, metadata server unreachable, refused grant.
    #[error("bigquery auth ({method}): {message}")]
    Auth {
        /// The auth method, e.g. `service_account_key`.
        method: String,
        /// What failed (never the key or the token).
        message: String,
    },
    /// A column exists in the table with a type the chunk's column cannot be loaded into.
    #[error("column `{column}`: the table has {table_type}, the source gives {source_type}")]
    TypeConflict {
        /// The column.
        column: String,
        /// Its type in the table.
        table_type: String,
        /// The type the source's Arrow type maps to.
        source_type: String,
    },
    /// The replacing transaction kept failing; BigQuery cancels transactions that conflict
    /// with another one on the same table, so the chunk is worth trying again later.
    #[error("bigquery commit transaction failed {tries} times: {message}")]
    TransactionAborted {
        /// How often it was tried.
        tries: u32,
        /// The last failure, with the server's message.
        message: String,
    },
    /// The table belongs to another job (its control rows or description say so).
    #[error("{0}")]
    Conflict(String),
    /// A commit of an attempt older than the committed one.
    #[error("chunk {chunk_id} of job {job_id}: attempt {attempt} is older than committed attempt {committed}")]
    StaleAttempt {
        /// The job.
        job_id: String,
        /// The chunk.
        chunk_id: u64,
        /// The refused attempt.
        attempt: u32,
        /// The committed attempt.
        committed: u32,
    },
    /// The Storage Write API failed; the class is the one its client decided (by gRPC code).
    #[error("bigquery storage write: {message}")]
    StorageWrite {
        /// The retry class.
        class: ErrorClass,
        /// What failed, with the server's message.
        message: String,
    },
    /// BigQuery answered something this crate does not understand.
    #[error("bigquery protocol: {0}")]
    Protocol(String),
    /// The rows as loaded fail the proof check against the writer's evidence (or another
    /// error of backhaul's own, passed through with its class).
    #[error(transparent)]
    Core(#[from] backhaul_core::Error),
    /// An Arrow type the destination cannot store.
    #[error("column `{column}`: {message}")]
    Unsupported {
        /// The column.
        column: String,
        /// Why.
        message: String,
    },
}

/// The class of a BigQuery error answer, from its status and reason code.
/// <https://cloud.google.com/bigquery/docs/error-messages>
pub fn class_of(status: u16, reason: &str) -> ErrorClass {
    match reason {
        "rateLimitExceeded" | "quotaExceeded" | "jobRateLimitExceeded" | "tableUnavailable" => ErrorClass::Throttled,
        "backendError" | "internalError" | "timeout" | "jobBackendError" | "jobInternalError" => ErrorClass::Transient,
        "notFound" | "invalid" | "invalidQuery" | "duplicate" | "accessDenied" | "billingNotEnabled"
        | "resourcesExceeded" | "responseTooLarge" | "stopped" => match status {
            429 => ErrorClass::Throttled,
            _ => ErrorClass::Permanent,
        },
        _ => match status {
            429 => ErrorClass::Throttled,
            408 | 500..=599 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        },
    }
}

impl BigQueryError {
    /// How a scheduler should treat this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            BigQueryError::Api { status, reason, .. } => class_of(*status, reason),
            // A job's error result carries no HTTP status: 200 stands for "the call worked".
            BigQueryError::JobFailed { reason, .. } => class_of(200, reason),
            BigQueryError::JobTimeout { .. } | BigQueryError::Network { .. } => ErrorClass::Transient,
            BigQueryError::StaleAttempt { .. } | BigQueryError::TransactionAborted { .. } => ErrorClass::Transient,
            BigQueryError::Core(e) => e.class(),
            BigQueryError::StorageWrite { class, .. } => *class,
            BigQueryError::Auth { .. }
            | BigQueryError::TypeConflict { .. }
            | BigQueryError::Conflict(_)
            | BigQueryError::Protocol(_)
            | BigQueryError::Unsupported { .. } => ErrorClass::Permanent,
        }
    }

    /// BigQuery's reason code, when BigQuery gave one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            BigQueryError::Api { reason, .. } | BigQueryError::JobFailed { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Whether BigQuery said the object (dataset, table, job) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BigQueryError::Api { status: 404, .. }) || self.reason() == Some("notFound")
    }
}

impl From<BigQueryError> for backhaul_core::Error {
    fn from(e: BigQueryError) -> Self {
        use backhaul_core::Error;
        if let BigQueryError::Core(inner) = e {
            return inner;
        }
        match (&e, e.class()) {
            (
                BigQueryError::StaleAttempt {
                    job_id,
                    chunk_id,
                    attempt,
                    ..
                },
                _,
            ) => Error::LeaseLost {
                lease_id: format!("{job_id}/{chunk_id}/{attempt}"),
                message: e.to_string(),
            },
            (BigQueryError::Conflict(m), _) => Error::DestinationConflict(m.clone()),
            (BigQueryError::TypeConflict { column, .. }, _) => Error::InvalidObject {
                object: format!("column {column}"),
                message: e.to_string(),
            },
            (_, ErrorClass::Throttled) => Error::Throttled {
                system: "bigquery".into(),
                message: e.to_string(),
            },
            (_, ErrorClass::Transient) => Error::Unreachable {
                system: "bigquery".into(),
                message: e.to_string(),
            },
            (_, ErrorClass::Permanent) => Error::InvalidObject {
                object: "bigquery".into(),
                message: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, reason: &str) -> BigQueryError {
        BigQueryError::Api {
            call: "jobs.insert".into(),
            status,
            reason: reason.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn class_by_status_and_reason() {
        assert_eq!(api(403, "quotaExceeded").class(), ErrorClass::Throttled);
        assert_eq!(api(403, "rateLimitExceeded").class(), ErrorClass::Throttled);
        assert_eq!(api(429, "").class(), ErrorClass::Throttled);
        assert_eq!(api(500, "backendError").class(), ErrorClass::Transient);
        assert_eq!(api(503, "").class(), ErrorClass::Transient);
        assert_eq!(api(404, "notFound").class(), ErrorClass::Permanent);
        assert_eq!(api(400, "invalid").class(), ErrorClass::Permanent);
        assert_eq!(api(403, "accessDenied").class(), ErrorClass::Permanent);
        let failed = |reason: &str| BigQueryError::JobFailed {
            job_id: "j".into(),
            reason: reason.into(),
            message: "m".into(),
        };
        assert_eq!(failed("invalid").class(), ErrorClass::Permanent);
        assert_eq!(failed("quotaExceeded").class(), ErrorClass::Throttled);
        assert_eq!(failed("backendError").class(), ErrorClass::Transient);
    }

    #[test]
    fn core_errors_keep_the_class() {
        for e in [
            api(403, "quotaExceeded"),
            api(500, "internalError"),
            api(404, "notFound"),
        ] {
            let class = e.class();
            assert_eq!(backhaul_core::Error::from(e).class(), class);
        }
        let stale = BigQueryError::StaleAttempt {
            job_id: "j".into(),
            chunk_id: 1,
            attempt: 1,
            committed: 2,
        };
        assert_eq!(backhaul_core::Error::from(stale).kind(), "lease_lost");
    }
}
