//! SQL over the warehouse with DataFusion, seeing exactly the committed data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use backhaul_core::{Error, Result};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use crate::dedup::{DELETES, DedupManifest, ViewChunk, append_view_sql, dedup_view_sql};
use crate::deletes::{delete_files, deletes_schema};
use crate::meta::{TablePaths, read_current_manifests, read_table_meta};
use crate::table::{blocking, list_tables};

/// Result of [`query_with_schema`]: the batches and their schema, known even without rows.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// Schema of the result.
    pub schema: SchemaRef,
    /// The result rows.
    pub batches: Vec<RecordBatch>,
}

/// Runs `sql` over the warehouse at `root` and returns the result batches.
///
/// Every prepared table is registered under its directory name. Only files listed by a
/// committed manifest are read, so orphans of crashed or replaced attempts never show up.
/// DataFusion errors, bad SQL included, become [`Error::InvalidObject`] with object `query`.
pub async fn query(root: &Path, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(query_with_schema(root, sql).await?.batches)
}

/// Like [`query`], and also returns the result schema (useful to print headers of an empty
/// result).
pub async fn query_with_schema(root: &Path, sql: &str) -> Result<QueryOutput> {
    let root_owned = root.to_path_buf();
    let tables = blocking(move || discover(&root_owned)).await?;
    let ctx = SessionContext::new();
    for table in tables {
        let provider = match &table.dedup {
            None if table.metadata_columns => append_provider(&table).await?,
            None => files_provider(&table.schema, &table.files)?,
            Some(dedup) => dedup_provider(&table, dedup).await?,
        };
        // A plain &str is parsed like SQL, so the unquoted names users type resolve to it.
        ctx.register_table(table.name.as_str(), provider).map_err(df_error)?;
    }
    let frame = ctx.sql(sql).await.map_err(df_error)?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(df_error)?;
    Ok(QueryOutput { schema, batches })
}

/// A table provider over exactly `files` (all of one schema).
fn files_provider(schema: &SchemaRef, files: &[PathBuf]) -> Result<Arc<dyn TableProvider>> {
    if files.is_empty() {
        // A listing table needs at least one path; an empty table is still a table.
        return Ok(Arc::new(
            MemTable::try_new(schema.clone(), vec![vec![]]).map_err(df_error)?,
        ));
    }
    let urls = files
        .iter()
        .map(|f| file_url(f).and_then(|u| ListingTableUrl::parse(u).map_err(df_error)))
        .collect::<Result<Vec<_>>>()?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema.clone());
    Ok(Arc::new(ListingTable::try_new(config).map_err(df_error)?))
}

/// The chunks of `table`, each registered as a table of a private session, so a view's plan
/// holds them and the users' session never sees them.
fn private_chunks(table: &DiscoveredTable) -> Result<(SessionContext, Vec<ViewChunk>)> {
    let private = SessionContext::new();
    let mut chunks = Vec::new();
    for (chunk_id, files, committed_at_us) in &table.chunks {
        let name = format!("chunk_{chunk_id}");
        private
            .register_table(name.as_str(), files_provider(&table.schema, files)?)
            .map_err(df_error)?;
        chunks.push(ViewChunk {
            chunk_id: *chunk_id,
            table: name,
            committed_at_us: *committed_at_us,
        });
    }
    Ok((private, chunks))
}

/// An append table with the metadata columns: every chunk's rows with their commit time.
async fn append_provider(table: &DiscoveredTable) -> Result<Arc<dyn TableProvider>> {
    if table.chunks.is_empty() {
        return files_provider(&table.schema, &[]);
    }
    let (private, chunks) = private_chunks(table)?;
    let columns: Vec<String> = table.schema.fields().iter().map(|f| f.name().clone()).collect();
    let frame = private
        .sql(&append_view_sql(&columns, &chunks))
        .await
        .map_err(df_error)?;
    Ok(frame.into_view())
}

/// A dedup table as users see it: one row per key, the newest version (see `dedup.rs`). Each
/// chunk is a table of a private session, so the view's plan holds them and the users' session
/// never sees them.
async fn dedup_provider(table: &DiscoveredTable, dedup: &DedupManifest) -> Result<Arc<dyn TableProvider>> {
    if table.chunks.is_empty() {
        return files_provider(&table.schema, &[]);
    }
    let (private, chunks) = private_chunks(table)?;
    let has_deletes = !table.deletes.is_empty();
    if has_deletes {
        let schema = deletes_schema(&table.schema, &dedup.key_columns)?;
        private
            .register_table(DELETES, files_provider(&schema, &table.deletes)?)
            .map_err(df_error)?;
    }
    let columns: Vec<String> = table.schema.fields().iter().map(|f| f.name().clone()).collect();
    let sql = dedup_view_sql(&columns, dedup, &chunks, has_deletes);
    let frame = private.sql(&sql).await.map_err(df_error)?;
    Ok(frame.into_view())
}

struct DiscoveredTable {
    name: String,
    schema: SchemaRef,
    files: Vec<PathBuf>,
    /// The files of each committed chunk and when it committed, by chunk id.
    chunks: Vec<(u64, Vec<PathBuf>, Option<i64>)>,
    /// The table's soft-delete files.
    deletes: Vec<PathBuf>,
    /// Set when the table's chunks were committed in dedup mode.
    dedup: Option<DedupManifest>,
    /// The newest commit asked for the metadata columns (`sync.metadata_columns`).
    metadata_columns: bool,
}

fn discover(root: &Path) -> Result<Vec<DiscoveredTable>> {
    // Absolute paths, because they become file URLs.
    let root = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    let mut out = Vec::new();
    for name in list_tables(&root)? {
        let paths = TablePaths::new(&root, &name);
        let Some(meta) = read_table_meta(&paths)? else { continue };
        let manifests = read_current_manifests(&paths)?;
        let chunks: Vec<(u64, Vec<PathBuf>, Option<i64>)> = manifests
            .iter()
            .map(|m| {
                let files = m.files.iter().map(|f| paths.data_file(&f.name)).collect();
                (m.chunk_id, files, m.committed_at_us)
            })
            .collect();
        out.push(DiscoveredTable {
            schema: meta.schema()?,
            files: chunks.iter().flat_map(|(_, f, _)| f.clone()).collect(),
            // The newest commit says whether the table shows the metadata columns.
            metadata_columns: manifests.last().is_some_and(|m| m.metadata_columns),
            dedup: manifests.into_iter().rev().find_map(|m| m.dedup),
            deletes: delete_files(&paths)?,
            chunks,
            name,
        });
    }
    Ok(out)
}

/// A `file://` URL for an absolute path, percent-encoding everything but unreserved
/// characters and `/`. Going through a URL rather than a plain path keeps DataFusion from
/// reading `*`, `?` or `[` in a directory name as a glob.
fn file_url(path: &Path) -> Result<String> {
    let text = path.to_str().ok_or_else(|| Error::InvalidObject {
        object: path.display().to_string(),
        message: "path is not valid UTF-8 and cannot be queried".into(),
    })?;
    let mut url = String::from("file://");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(url)
}

fn df_error(e: DataFusionError) -> Error {
    Error::InvalidObject {
        object: "query".into(),
        message: e.to_string(),
    }
}
