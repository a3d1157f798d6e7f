//! The Snowflake destination: each chunk is loaded from Parquet through a stage and committed
//! exactly once, in one transaction that also proves it.
//!
//! A commit of attempt `A` of chunk `N`:
//!
//! 1. PUT the attempt's staged files into `@<stage>/backhaul/<job>/chunk-N/attempt-A/`
//!    (internal mode), or reference them where they are, `@<external stage>/<job>/chunk-N/attempt-A/`
//!    (external mode: the backhaul stage is that Snowflake stage's location).
//! 2. `BEGIN`; `DELETE` the chunk's cursor range; read `_BACKHAUL_CHUNKS` and refuse an attempt
//!    older than the committed one (`LeaseLost`); `COPY INTO` from the attempt's prefix with
//!    `FORCE = TRUE`; check COPY loaded exactly the files' rows; recompute the chunk
//!    fingerprint over the range ([`SnowflakeDialect`]) and refuse a mismatch
//!    (`VerificationFailed`); replace the chunk's row in `_BACKHAUL_CHUNKS`; `COMMIT`.
//!
//! A chunk of a `[sync] mode = "dedup"` job is COPYed into the table's versions table
//! `_BACKHAUL_VERSIONS_<TABLE>` instead (every chunk's rows, tagged with the chunk id), proved
//! there, and applied to the table by key (`backhaul_core::dedup`: DELETE of the versions it
//! supersedes, INSERT of the winners) in the same transaction.
//!
//! Why this is exactly once: the prefix is unique to the attempt, so COPY sees exactly that
//! attempt's files, never a leftover of another; the DELETE and the COPY are one transaction,
//! so the chunk's rows are replaced whole or not at all; `FORCE = TRUE` makes COPY ignore load
//! history, which would otherwise skip files an earlier (rolled back, or replayed) commit of
//! the same attempt loaded and leave the range empty after the DELETE. A crash between PUT and
//! COPY leaves only unloaded files; one between COPY and COMMIT leaves an open transaction that
//! ends with its session (rolled back). Either way the retry repeats the whole commit.
//!
//! Details and every key: `docs/destinations/snowflake.md`.

mod destination;
pub mod dialect;
pub mod failpoint;
pub mod spec;
pub mod types;

pub use destination::{CHUNKS_TABLE, SnowflakeDestination, TABLES_TABLE, VERSIONS_PREFIX};
pub use dialect::SnowflakeDialect;
pub use spec::{SnowflakeDestinationSpec, SnowflakeKind, StageMode};
