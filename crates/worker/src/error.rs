//! Errors of the worker crate.

use backhaul_core::ErrorClass;

/// What can go wrong while running chunks.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Error from core or a connector, carrying its own class.
    #[error(transparent)]
    Core(#[from] backhaul_core::Error),
    /// Parquet encoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The coordinator refused or failed a call.
    #[error("coordinator: {0}")]
    Rpc(#[from] tonic::Status),
    /// The coordinator could not be reached.
    #[error("coordinator unreachable: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// A blocking task panicked or was cancelled.
    #[error("worker task failed: {0}")]
    Task(String),
    /// The coordinator sent a message the protocol does not allow (e.g. a lease without a
    /// range). Running it anyway could commit wrong data; asking again gets the same message.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Result alias for the worker.
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;

impl WorkerError {
    /// Retry class, by variant.
    pub fn class(&self) -> ErrorClass {
        match self {
            WorkerError::Core(e) => e.class(),
            // Parquet errors here come from encoding our own batches: retrying repeats them.
            WorkerError::Parquet(_) | WorkerError::Protocol(_) => ErrorClass::Permanent,
            WorkerError::Rpc(s) => match s.code() {
                tonic::Code::ResourceExhausted => ErrorClass::Throttled,
                tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::DataLoss => ErrorClass::Permanent,
                _ => ErrorClass::Transient,
            },
            WorkerError::Connect(_) | WorkerError::Task(_) => ErrorClass::Transient,
        }
    }

    /// Stable machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            WorkerError::Core(e) => e.kind(),
            WorkerError::Parquet(_) => "parquet",
            WorkerError::Rpc(_) => "coordinator_rpc",
            WorkerError::Connect(_) => "coordinator_unreachable",
            WorkerError::Task(_) => "task",
            WorkerError::Protocol(_) => "protocol",
        }
    }
}
