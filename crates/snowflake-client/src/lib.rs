//! A small Snowflake client that speaks the connector REST protocol (the one the official
//! drivers use): log in with a password or a key-pair JWT, run statements and read their
//! Arrow or JSON results with the workspace's arrow, and PUT files into stages.
//!
//! The base URL is configurable (private endpoints, test servers); TLS is on by default and
//! proxies come from the environment. Every failure is an [`Error`] whose
//! [`class`](Error::class) is decided by its variant: authentication failures are permanent
//! and never retried, 429 is throttled, 5xx and network failures are transient.

mod error;
mod http;
mod keypair;
mod put;
mod result;
mod session;

pub use error::{Error, Result};
pub use put::{
    EncryptionMaterial, LocationType, PutFile, PutOptions, PutOutcome, StageAnswer, StageAnswers, StageCreds,
    UploadTuning, put_statement, upload_files,
};
pub use session::{Auth, Client, ClientConfig, QueryResult, RetrySettings, Secret};
