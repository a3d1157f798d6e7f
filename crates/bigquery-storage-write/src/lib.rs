//! A BigQuery Storage Write API client for exactly-once loads of Arrow data.
//!
//! One chunk is written through one PENDING stream:
//!
//! 1. [`WriteClient::connect`] to `https://bigquerystorage.googleapis.com`
//!    ([`DEFAULT_ENDPOINT`], TLS with rustls on ring) or an emulator's `http://host:port`,
//!    with a bearer-token [`TokenProvider`] or `None`.
//! 2. [`WriteClient::create_pending_stream`] on `projects/{p}/datasets/{d}/tables/{t}`
//!    ([`table_path`]).
//! 3. [`WriteClient::append`] each record batch at its row offset (0, then the offset it
//!    returns, …). Batches go out as `arrow_rows` (IPC-serialized schema and record batch),
//!    split so no request exceeds the 10 MB AppendRows limit. Requests are pipelined (up to
//!    [`ClientConfig::max_in_flight`] unanswered), so `append` returns once a batch is sent;
//!    [`WriteClient::flush`] waits for every answer. The caller streams batches; the client
//!    holds the batch being encoded and the unanswered requests, nothing more.
//! 4. [`WriteClient::finalize`] returns the stream's row count; compare it with what you
//!    appended.
//! 5. [`WriteClient::batch_commit`] makes the streams' rows visible atomically. Until then
//!    nothing is visible, and an abandoned stream leaves the table unchanged.
//!
//! **Retries.** Every call is retried with exponential backoff and jitter while its failure
//! is transient (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`, a reset connection, a
//! timeout) or throttled (`RESOURCE_EXHAUSTED`, with longer waits), up to
//! [`RetrySettings::max_attempts`]. Append requests are re-sent from the first offset not
//! acknowledged, on a fresh connection; because every request carries an explicit offset,
//! the server refuses a second copy with `ALREADY_EXISTS`, which the client counts as
//! success. `OUT_OF_RANGE` (an offset past the end: a gap) is a bug and permanent.
//!
//! **Errors.** One [`Error`] whose [`class`](Error::class) is decided by variant and gRPC code
//! ([`class_of_code`]): rows refused in an append ([`Error::RowErrors`]) and streams refused
//! by a commit ([`Error::Commit`]) are permanent and carry the server's messages.
//!
//! The generated protocol code lives in [`proto`] (Google's protos, vendored under
//! `proto/google`).

mod auth;
mod client;
mod encode;
mod error;
pub mod proto;

pub use auth::{Secret, StaticToken, TokenError, TokenProvider};
pub use client::{
    ClientConfig, CommitOutcome, DEFAULT_ENDPOINT, DEFAULT_MAX_REQUEST_BYTES, RetrySettings, WriteClient, WriteStream,
    table_path,
};
pub use encode::{EncodedPiece, encode_pieces, encode_schema};
pub use error::{Error, Result, RowError, StreamError, class_of_code};
