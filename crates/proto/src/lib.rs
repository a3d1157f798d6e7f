//! The backhaul wire: generated code for `proto/backhaul/v1` (the control plane, and the
//! messages of the Flight data plane), and the plumbing both ends share — shared-token
//! authentication (gRPC and HTTP), TLS, client connection, and the Prometheus text format and
//! HTTP server for `/metrics`.
//!
//! The `.proto` files are the source of truth for the messages.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("backhaul.v1");
}

pub mod auth;
pub mod client;
pub mod convert;
pub mod http;
pub mod metrics;
pub mod proof;
pub mod tls;

pub use auth::{AuthLayer, ClientAuth, Token};
pub use client::{Client, ClientConfig, status_detail};
pub use convert::error_class;
pub use tls::{ClientTls, ServerTls};

/// What can go wrong setting up the wire.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A certificate, key or token file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key file is not what it should be.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The token is unusable (its text is never included).
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// Contradictory or malformed settings.
    #[error("{0}")]
    InvalidConfig(String),
    /// tonic refused the TLS or endpoint settings.
    #[error("transport: {0}")]
    Transport(#[source] tonic::transport::Error),
}
