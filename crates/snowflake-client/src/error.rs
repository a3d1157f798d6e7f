//! The client's one error type and its retry class. Every class decision lives here: by
//! variant, HTTP status, Snowflake error code and SQLSTATE, never by parsing messages.

use std::time::Duration;

use backhaul_core::ErrorClass;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to Snowflake. The class is decided here, by variant and code,
/// never by parsing messages. Messages never carry tokens, passwords or URL query strings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Login refused (bad credentials, locked user, bad key), or the session's tokens were
    /// refused and could not be renewed. Never retried.
    #[error("snowflake login failed ({code}): {message}")]
    Auth {
        /// Snowflake's error code, e.g. `390100`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A statement failed on the server.
    #[error("snowflake statement failed ({code}, SQLSTATE {sql_state}): {message}")]
    Sql {
        /// Snowflake's error code, e.g. `002003`.
        code: String,
        /// The SQLSTATE, e.g. `42S02`.
        sql_state: String,
        /// The server's message.
        message: String,
        /// The statement's query id, when the server gave one.
        query_id: Option<String>,
    },
    /// An HTTP status that is not a protocol answer (429, 5xx, unexpected 4xx).
    #[error("snowflake HTTP {status} from {endpoint}: {message}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The endpoint path (never the query string, which may carry tokens).
        endpoint: String,
        /// The body's start or the reason.
        message: String,
    },
    /// The connection failed or timed out.
    #[error("snowflake network error on {endpoint}: {message}")]
    Network {
        /// The endpoint path.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The server answered something this client does not understand.
    #[error("snowflake protocol error: {0}")]
    Protocol(String),
    /// Uploading a file for PUT failed.
    #[error("snowflake PUT of {file} failed: {message}")]
    Upload {
        /// The file's name.
        file: String,
        /// What failed.
        message: String,
        /// The class of the underlying failure.
        class: ErrorClass,
    },
    /// The client's configuration is unusable (e.g. an unreadable private key).
    #[error("snowflake client config: {field}: {message}")]
    Config {
        /// The setting, e.g. `private_key_path`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A statement was still running when the client's `statement_timeout` ran out. The
    /// statement may still finish on the server.
    #[error("snowflake statement {query_id} still running after {waited:?} (statement_timeout)")]
    StatementTimeout {
        /// The statement's query id.
        query_id: String,
        /// How long the client waited.
        waited: Duration,
    },
}

impl Error {
    /// How a scheduler should treat this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Auth { .. } | Error::Protocol(_) | Error::Config { .. } => ErrorClass::Permanent,
            Error::Sql { code, sql_state, .. } => sql_class(code, sql_state),
            Error::Http { status, .. } => http_class(*status),
            Error::Network { .. } | Error::StatementTimeout { .. } => ErrorClass::Transient,
            Error::Upload { class, .. } => *class,
        }
    }
}

/// The class of an HTTP status that is not a protocol answer. Also decides which statuses
/// the client retries on its own (everything not permanent).
pub(crate) fn http_class(status: u16) -> ErrorClass {
    match status {
        429 => ErrorClass::Throttled,
        500..=599 | 408 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// The class of a failed statement: a few Snowflake error codes whose SQLSTATE says too
/// little (or the wrong thing), then the workspace's SQLSTATE table.
fn sql_class(code: &str, sql_state: &str) -> ErrorClass {
    match code {
        // "No active warehouse selected in the current session": SQLSTATE 57P03 reads like a
        // server starting up, but only a configuration change helps.
        "000606" => ErrorClass::Permanent,
        // "Statement reached its statement or warehouse timeout" and "SQL execution canceled":
        // the warehouse was busy or suspended; the same statement usually succeeds later.
        "000625" | "000630" | "000604" => ErrorClass::Transient,
        _ => backhaul_core::sqlstate::class_of(sql_state),
    }
}

/// Snowflake answer codes the client acts on (from the official connectors' sources).
pub(crate) mod codes {
    /// The session token expired: renew it with the master token and retry.
    pub const SESSION_EXPIRED: &str = "390112";
    /// The master token expired too: log in again.
    pub const MASTER_TOKEN_EXPIRED: &str = "390114";
    /// The statement is still running (synchronous request that outlived the server's wait).
    pub const QUERY_IN_PROGRESS: &str = "333333";
    /// The statement is still running (asynchronous execution).
    pub const QUERY_IN_PROGRESS_ASYNC: &str = "333334";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(code: &str, sql_state: &str) -> Error {
        Error::Sql {
            code: code.into(),
            sql_state: sql_state.into(),
            message: "m".into(),
            query_id: None,
        }
    }

    #[test]
    fn classes_by_variant_status_code_and_sqlstate() {
        use ErrorClass::*;
        let auth = Error::Auth {
            code: "390100".into(),
            message: "Incorrect username or password was specified.".into(),
        };
        assert_eq!(auth.class(), Permanent);
        let http = |status| Error::Http {
            status,
            endpoint: "/queries/v1/query-request".into(),
            message: String::new(),
        };
        assert_eq!(http(429).class(), Throttled);
        assert_eq!(http(503).class(), Transient);
        assert_eq!(http(500).class(), Transient);
        assert_eq!(http(408).class(), Transient);
        assert_eq!(http(404).class(), Permanent);
        assert_eq!(http(403).class(), Permanent);
        let network = Error::Network {
            endpoint: "/".into(),
            message: "reset".into(),
        };
        assert_eq!(network.class(), Transient);
        assert_eq!(sql("002003", "42S02").class(), Permanent); // object does not exist
        assert_eq!(sql("001003", "42000").class(), Permanent); // syntax error
        assert_eq!(sql("000625", "57014").class(), Transient); // statement timeout
        assert_eq!(sql("000606", "57P03").class(), Permanent); // no warehouse
        assert_eq!(sql("999999", "40001").class(), Transient); // serialization failure
        assert_eq!(sql("999999", "53300").class(), Throttled);
        let timeout = Error::StatementTimeout {
            query_id: "q".into(),
            waited: Duration::from_secs(1),
        };
        assert_eq!(timeout.class(), Transient);
    }
}
