//! PostgreSQL source: one binary `COPY` per chunk decoded straight into Arrow, chunks planned
//! from catalog statistics.
//!
//! - [`Source::describe`] reads the table from the catalog and maps every column to its exact
//!   Arrow type ([`types`]); a column without one is refused, naming it, unless a type policy
//!   of the spec says what to do.
//! - [`Source::prepare`] refuses a job whose cursor column holds NULLs (`null_cursor = "fail"`):
//!   such rows are in no range and would silently be missing.
//! - [`Source::density`] estimates rows over the range from `pg_class`/`pg_stats`, an index
//!   probe, or a block sample; it never counts the table.
//! - [`Source::physical_order`] reads `pg_stats.correlation` of the cursor column and the
//!   table's pages and rows, so the planner can tell how much of the heap each chunk reads.
//! - [`Source::max_cursor`] reads `max(cursor)` (one backward probe of an index on it), so a
//!   sync can tell when the cursor went backwards.
//! - [`Source::extract`] runs `COPY (SELECT cols FROM t WHERE cursor >= from AND cursor < to)
//!   TO STDOUT (FORMAT binary)` in a REPEATABLE READ READ ONLY transaction, so a chunk is one
//!   consistent snapshot, and streams batches with bounded memory. A chunk PostgreSQL would
//!   read with a sequential scan is read as `parallel_scans` block ranges (TID range scans) in
//!   one exported snapshot instead ([`blockscan`]), so the heap is read once.
//!
//! Every operation opens its own connection (TLS with rustls/ring when configured); the
//! password is read once at build time and never appears in errors, logs or `Debug` output.

mod blockscan;
mod catalog;
mod connect;
mod decode;
mod density;
mod discover;
mod extract;
mod keys;
mod numeric;
pub mod spec;
mod sql;
mod transport;
pub mod types;

use std::fmt;

use backhaul_core::chunking::{DensityBucket, PhysicalOrder};
use backhaul_core::connector::{BatchStream, Source, TableDescription};
use backhaul_core::cursor::CursorRange;
use backhaul_core::deletes::KeyDigest;
use backhaul_core::spec::database::NullCursorPolicy;
use backhaul_core::{Error, Result};
use futures::future::BoxFuture;
pub use spec::{PostgresKind, PostgresSourceSpec};

use crate::catalog::PgTable;
use crate::connect::{Conn, Connector};
use crate::types::Policies;

/// A PostgreSQL table. Cheap to share: every operation opens its own connection.
pub struct PostgresSource {
    spec: PostgresSourceSpec,
    policies: Policies,
    connector: Connector,
}

impl fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSource")
            .field("endpoint", &self.connector.endpoint)
            .field("table", &self.spec.connection.table)
            .field("cursor", &self.spec.connection.cursor)
            .finish_non_exhaustive()
    }
}

impl PostgresSource {
    /// Builds the source from its spec section: reads the password (environment or file) and
    /// the CA file. Nothing connects yet.
    pub fn open(spec: &PostgresSourceSpec) -> Result<Self> {
        Ok(Self {
            spec: spec.clone(),
            policies: Policies {
                unconstrained_numeric: spec.unconstrained_numeric,
                infinite_datetime: spec.infinite_datetime,
                special_numeric: spec.special_numeric,
            },
            connector: Connector::new(spec)?,
        })
    }

    async fn table(&self, conn: &Conn) -> Result<PgTable> {
        catalog::describe(conn, &self.spec, &self.policies).await
    }

    /// Fails when any row's cursor is NULL: those rows belong to no range. Skipped when the
    /// column is declared NOT NULL; otherwise one `LIMIT 1` query (an index on the cursor
    /// answers it without a scan).
    async fn check_null_cursor(&self, conn: &Conn, table: &PgTable) -> Result<()> {
        match self.spec.connection.null_cursor {
            NullCursorPolicy::Fail => {}
        }
        if table.cursor_not_null {
            return Ok(());
        }
        let sql = format!(
            "SELECT 1 FROM {} WHERE {} IS NULL LIMIT 1",
            table.sql_name(),
            sql::quote_ident(table.cursor_name())
        );
        let found = conn
            .client
            .query(&sql, &[])
            .await
            .map_err(|e| conn.error(&e, "look for NULL cursor values"))?;
        if !found.is_empty() {
            return Err(Error::InvalidObject {
                object: format!("column {}.{}", table.display_name(), table.cursor_name()),
                message: "some rows have a NULL cursor; they fall in no range and would not be loaded. \
                          Fill the column, load those rows separately (e.g. through a view with a non-NULL cursor), \
                          or pick another cursor (null_cursor = \"fail\")"
                    .into(),
            });
        }
        Ok(())
    }
}

impl Source for PostgresSource {
    fn describe(&self) -> BoxFuture<'_, Result<TableDescription>> {
        Box::pin(async move {
            let conn = self.connector.connect().await?;
            Ok(self.table(&conn).await?.description)
        })
    }

    fn prepare(&self, _range: CursorRange) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let conn = self.connector.connect().await?;
            let table = self.table(&conn).await?;
            self.check_null_cursor(&conn, &table).await
        })
    }

    fn density(&self, range: CursorRange) -> BoxFuture<'_, Result<Vec<DensityBucket>>> {
        Box::pin(async move {
            let conn = self.connector.connect().await?;
            let table = self.table(&conn).await?;
            density::density(&conn, &table, range).await
        })
    }

    fn physical_order(&self) -> BoxFuture<'_, Result<Option<PhysicalOrder>>> {
        Box::pin(async move {
            let conn = self.connector.connect().await?;
            let table = self.table(&conn).await?;
            let order = density::physical_order(&conn, &table).await?;
            let scans = match order {
                Some(o) if blockscan::supported(&conn, &table).await? => {
                    blockscan::scans_for(o.heap_pages, self.spec.parallel_scans_or_default())
                }
                _ => 1,
            };
            Ok(order.map(|o| PhysicalOrder {
                block_scans: scans,
                ..o
            }))
        })
    }

    fn supports_delete_detection(&self) -> bool {
        true
    }

    fn key_digest<'a>(&'a self, range: CursorRange, keys: &'a [String]) -> BoxFuture<'a, Result<KeyDigest>> {
        Box::pin(async move {
            let conn = self.connector.connect().await?;
            let table = self.table(&conn).await?;
            keys::digest(&conn, &table, range, keys).await
        })
    }

    fn list_keys<'a>(&'a self, range: CursorRange, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let conn = self.connector.connect().await?;
            let table = self.table(&conn).await?;
            keys::list(&conn, &table, range, keys).await
        })
    }

    fn existing_keys<'a>(&'a self, keys: &'a [String], candidates: &'a [String]) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let conn = self.connector.connect().await?;
            let table = self.table(&conn).await?;
            keys::existing(&conn, &table, keys, candidates).await
        })
    }

    fn max_cursor(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async move {
            let conn = self.connector.connect().await?;
            let table = self.table(&conn).await?;
            density::max_cursor(&conn, &table).await
        })
    }

    fn extract(&self, range: CursorRange, batch_rows: usize) -> BoxFuture<'_, Result<BatchStream>> {
        Box::pin(extract::start(extract::Chunk {
            connector: self.connector.clone(),
            spec: self.spec.clone(),
            policies: self.policies,
            range,
            batch_rows,
            scans: self.spec.parallel_scans_or_default(),
        }))
    }
}
