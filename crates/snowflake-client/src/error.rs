//! The client's one error type and its retry class.

use backhaul_core::ErrorClass;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to Snowflake. The class is decided here, by variant and code,
/// never by parsing messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Login refused (bad credentials, locked user, bad key). Never retried.
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
}

impl Error {
    /// How a scheduler should treat this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Auth { .. } | Error::Protocol(_) | Error::Config { .. } => ErrorClass::Permanent,
            Error::Sql { .. } => ErrorClass::Permanent,
            Error::Http { status, .. } => match status {
                429 => ErrorClass::Throttled,
                500..=599 | 408 => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
            Error::Network { .. } => ErrorClass::Transient,
            Error::Upload { class, .. } => *class,
        }
    }
}
