//! A small Snowflake client that speaks the connector REST protocol (the one the official
//! drivers use): log in with a password or a key-pair JWT, run statements and read their
//! Arrow or JSON results with the workspace's arrow, and PUT files into stages.
//!
//! The base URL is configurable (private endpoints, test servers); TLS is on by default and
//! proxies come from the environment. Every failure is an [`Error`] whose
//! [`class`](Error::class) is decided by its variant: authentication failures are permanent
//! and never retried, 429 is throttled, 5xx and network failures are transient.
//!
//! ```no_run
//! # async fn run() -> backhaul_snowflake_client::Result<()> {
//! use backhaul_snowflake_client::{Auth, Client, ClientConfig, Secret};
//! let mut config = ClientConfig::new("myorg-myaccount", "LOADER", Auth::Password(Secret::new("…")));
//! config.warehouse = Some("LOAD_WH".into());
//! let client = Client::connect(config).await?;
//! let result = client.query("SELECT CURRENT_VERSION()").await?;
//! println!("{} rows", result.num_rows());
//! client.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Modules: `session` (login, tokens, statements, polling, chunks), `http` (one request with
//! retries), `keypair` (the JWT), `result` (rowsets to Arrow; the type mapping is there),
//! `error` (the one error type and every class decision), `put` (PUT to stages).

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
