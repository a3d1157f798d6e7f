//! BigQuery destination: zstd Parquet staged to `gs://`, loaded by ONE load job per chunk into a
//! per-attempt staging table, checked by fingerprint, then swapped into the chunk's range of the
//! target table by one multi-statement transaction that also records the committed attempt.
//! See [`table`] for the commit protocol and `docs/destinations/bigquery.md` for every key.

mod auth;
pub mod client;
pub mod error;
pub mod spec;
pub mod storage_write;
pub mod table;
pub mod types;

pub use error::BigQueryError;
pub use spec::{BigQueryKind, BigQuerySpec};
pub use table::BigQueryTable;
pub use types::BigQueryDialect;
