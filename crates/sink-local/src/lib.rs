//! A local Parquet "warehouse" destination, with per-chunk atomic manifests, queryable with
//! DataFusion.
//!
//! Each table is a directory under the warehouse root:
//!
//! ```text
//! <root>/<table>/_table.json                   owning job and exact Arrow schema
//! <root>/<table>/data/<job>-cNNNNNN-aNNN-pNNNN.parquet
//! <root>/<table>/_manifests/chunk-NNNNNN.json  which files make up each committed chunk
//! ```
//!
//! A chunk is committed by renaming its manifest into place, so it is all-or-nothing and a
//! later attempt replaces an earlier one atomically. Data files that no manifest lists
//! (replaced attempts, crashes mid-commit) are ignored by [`query`] and [`committed_files`].
//!
//! Chunks of a `dedup` sync job record their key in the manifest, and [`query`] reads such a
//! table as one row per key, the newest by cursor (see `dedup.rs`). Chunks of a
//! `full_refresh` job are whole versions of the table, and [`query`] reads only the newest
//! (see `refresh.rs`).

mod dedup;
mod deletes;
mod meta;
mod query;
mod readback;
mod refresh;
pub mod spec;
mod table;

pub use dedup::{DELETED_COLUMN, DedupManifest, SYNCED_AT_COLUMN};
pub use meta::{ChunkManifest, FieldDescription, ManifestFile, TableMeta};
pub use query::{QueryOutput, query, query_with_schema};
pub use refresh::RefreshManifest;
pub use spec::{LocalDestinationSpec, LocalKind};
pub use table::{LocalTable, LocalWarehouse, TableSummary, committed_files, table_summary};

#[cfg(test)]
mod tests;
