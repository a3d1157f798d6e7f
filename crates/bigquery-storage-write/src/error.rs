//! The crate's one error type and its retry class.

use backhaul_core::ErrorClass;
use tonic::Code;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One row the server refused in an append (`AppendRowsResponse.row_errors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The row's index in the stream (the request's offset plus its index in the request).
    pub row: u64,
    /// The server's message, e.g. which field failed.
    pub message: String,
}

/// One stream a batch commit refused (`BatchCommitWriteStreamsResponse.stream_errors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// The `StorageErrorCode` name, e.g. `INVALID_STREAM_STATE`.
    pub code: String,
    /// The stream (or table) the error is about.
    pub entity: String,
    /// The server's message.
    pub message: String,
}

/// What went wrong talking to the Storage Write API. The class is decided here, by variant
/// and gRPC code, never by parsing messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint is not a usable URL or its TLS settings are unusable.
    #[error("bigquery storage write: invalid endpoint `{endpoint}`: {message}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// The connection could not be established.
    #[error("bigquery storage write: cannot connect to {endpoint}: {message}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The token provider could not produce a token right now (metadata server down, …).
    #[error("bigquery storage write: no access token: {0}")]
    TokenUnavailable(String),
    /// The token provider cannot produce a token until someone fixes its configuration.
    #[error("bigquery storage write: access token refused: {0}")]
    TokenRefused(String),
    /// A call ended with a gRPC status (the call failed as a whole).
    #[error("bigquery storage write: {operation} failed ({code:?}): {message}")]
    Status {
        /// The RPC, e.g. `CreateWriteStream`.
        operation: &'static str,
        /// The gRPC code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// An append answered with an error status for its request (`AppendRowsResponse.error`).
    /// `OUT_OF_RANGE` means an offset beyond the stream's end: a gap, i.e. a bug in the caller.
    #[error("bigquery storage write: append to {stream} at offset {offset} failed ({code:?}): {message}")]
    Append {
        /// The write stream.
        stream: String,
        /// The request's row offset.
        offset: u64,
        /// The gRPC code of the error status.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// The server refused rows of an append; nothing of that request was written.
    #[error("bigquery storage write: append to {stream} at offset {offset}: {} row(s) refused, first: row {}: {}",
        .errors.len(), .errors.first().map_or(0, |e| e.row), .errors.first().map_or("", |e| e.message.as_str()))]
    RowErrors {
        /// The write stream.
        stream: String,
        /// The request's row offset.
        offset: u64,
        /// The refused rows.
        errors: Vec<RowError>,
    },
    /// A batch commit refused some streams; nothing was committed.
    #[error("bigquery storage write: batch commit into {table} refused: {}", describe_stream_errors(.errors))]
    Commit {
        /// The table path.
        table: String,
        /// One entry per refused stream.
        errors: Vec<StreamError>,
    },
    /// No answer within the request timeout.
    #[error("bigquery storage write: {operation} timed out after {seconds} s")]
    Timeout {
        /// The RPC.
        operation: &'static str,
        /// The timeout.
        seconds: u64,
    },
    /// The append connection closed before answering a request.
    #[error("bigquery storage write: the AppendRows connection for {stream} closed without an answer")]
    StreamClosed {
        /// The write stream.
        stream: String,
    },
    /// A single row is larger than one AppendRows request may be.
    #[error(
        "bigquery storage write: row {row} of the batch encodes to {bytes} bytes, over the {limit}-byte request limit"
    )]
    RowTooLarge {
        /// The row's index in the caller's batch.
        row: u64,
        /// Its encoded size.
        bytes: usize,
        /// The limit for the record batch part of a request.
        limit: usize,
    },
    /// The batch cannot be encoded as `arrow_rows` (e.g. dictionary columns).
    #[error("bigquery storage write: cannot encode the batch: {0}")]
    Encode(String),
    /// The server answered something this client does not understand.
    #[error("bigquery storage write: protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// How a scheduler should treat this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Connect { .. } | Error::TokenUnavailable(_) | Error::Timeout { .. } | Error::StreamClosed { .. } => {
                ErrorClass::Transient
            }
            Error::Status { code, .. } | Error::Append { code, .. } => class_of_code(*code),
            Error::InvalidEndpoint { .. }
            | Error::TokenRefused(_)
            | Error::RowErrors { .. }
            | Error::Commit { .. }
            | Error::RowTooLarge { .. }
            | Error::Encode(_)
            | Error::Protocol(_) => ErrorClass::Permanent,
        }
    }

    pub(crate) fn from_status(operation: &'static str, status: &tonic::Status) -> Error {
        Error::Status {
            operation,
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

/// The class of a gRPC code, as Google documents retrying the Storage Write API.
///
/// `UNKNOWN`, `CANCELLED` and `ABORTED` count as transient too: tonic reports a reset
/// connection as one of them. `OUT_OF_RANGE` (an offset past the stream's end) and
/// `ALREADY_EXISTS` outside an append are permanent: retrying sends the same request again.
pub fn class_of_code(code: Code) -> ErrorClass {
    match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled
        | Code::Aborted => ErrorClass::Transient,
        Code::ResourceExhausted => ErrorClass::Throttled,
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::DataLoss => ErrorClass::Permanent,
    }
}

fn describe_stream_errors(errors: &[StreamError]) -> String {
    errors
        .iter()
        .map(|e| format!("{} {}: {}", e.code, e.entity, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified_as_documented() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Internal] {
            assert_eq!(class_of_code(code), ErrorClass::Transient, "{code:?}");
        }
        assert_eq!(class_of_code(Code::ResourceExhausted), ErrorClass::Throttled);
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::OutOfRange,
        ] {
            assert_eq!(class_of_code(code), ErrorClass::Permanent, "{code:?}");
        }
        let append = Error::Append {
            stream: "s".into(),
            offset: 3,
            code: Code::OutOfRange,
            message: "gap".into(),
        };
        assert_eq!(append.class(), ErrorClass::Permanent);
        let rows = Error::RowErrors {
            stream: "s".into(),
            offset: 0,
            errors: vec![RowError {
                row: 2,
                message: "bad value".into(),
            }],
        };
        assert_eq!(rows.class(), ErrorClass::Permanent);
        assert!(rows.to_string().contains("row 2: bad value"), "{rows}");
    }
}
