//! What the warehouse keeps on disk besides data: the table file and per-chunk manifests.
//!
//! ```text
//! <root>/<table>/_table.json                  owning job and exact Arrow schema
//! <root>/<table>/data/*.parquet               data files (only manifest-listed ones count)
//! <root>/<table>/_manifests/chunk-NNNNNN.json one per committed chunk; its rename is the commit
//! <root>/<table>/_superseded/chunk-NNNNNN-aNNN.json versions a full refresh replaced (history)
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use backhaul_core::checksum::{ChecksumVersion, RowSummary};
use backhaul_core::cursor::CursorRange;
use backhaul_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Name of the table file inside a table directory.
pub(crate) const TABLE_FILE: &str = "_table.json";
/// Directory of data files inside a table directory.
pub(crate) const DATA_DIR: &str = "data";
/// Directory of chunk manifests inside a table directory.
pub(crate) const MANIFEST_DIR: &str = "_manifests";
/// Directory of the manifests of versions a full refresh replaced (`crate::refresh`).
pub(crate) const SUPERSEDED_DIR: &str = "_superseded";
/// Directory of soft-delete files (`deletes-NNNNNN.parquet`) inside a table directory.
pub(crate) const DELETES_DIR: &str = "_deletes";
/// Version of the on-disk metadata format; bumped on incompatible changes.
const FORMAT: u32 = 1;

/// Contents of `_table.json`: who owns the table and what its rows look like.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableMeta {
    /// On-disk format version.
    pub format: u32,
    /// Table name (the directory name).
    pub table: String,
    /// The job that created the table; only it may commit chunks.
    pub job_id: String,
    /// Readable copy of the schema, for people inspecting the file. Not used for checks.
    pub fields: Vec<FieldDescription>,
    /// The exact Arrow schema as a hex-encoded IPC stream. The IPC encoding round-trips every
    /// type detail (decimal precision, timestamp zones, nested fields, field metadata), which
    /// a textual form does not guarantee.
    pub arrow_schema: String,
    /// Columns the table kept after the source dropped them (NULL in rows loaded since), so
    /// the next sync does not report the drop again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_columns: Vec<String>,
}

/// One top-level column, as written to `_table.json` for humans.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FieldDescription {
    /// Column name.
    pub name: String,
    /// Arrow data type, as Arrow displays it.
    pub data_type: String,
    /// Whether the column may hold nulls.
    pub nullable: bool,
    /// Field metadata (extension type names and the like).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl TableMeta {
    /// Table metadata for `job_id` with `schema`.
    pub(crate) fn new(table: &str, job_id: &str, schema: &Schema) -> Result<Self> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| FieldDescription {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
                metadata: f.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            })
            .collect();
        Ok(TableMeta {
            format: FORMAT,
            table: table.to_string(),
            job_id: job_id.to_string(),
            fields,
            arrow_schema: encode_schema(schema)?,
            dropped_columns: Vec::new(),
        })
    }

    /// The table's exact Arrow schema.
    pub fn schema(&self) -> Result<SchemaRef> {
        decode_schema(&self.arrow_schema)
            .map(Arc::new)
            .map_err(|m| Error::InvalidObject {
                object: format!("table {}", self.table),
                message: format!("{TABLE_FILE}: bad arrow_schema: {m}"),
            })
    }
}

/// Contents of `_manifests/chunk-NNNNNN.json`: exactly which files hold one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkManifest {
    /// On-disk format version.
    pub format: u32,
    /// The job.
    pub job_id: String,
    /// The chunk's index in the job's plan.
    pub chunk_id: u64,
    /// The lease attempt whose files these are; a lower attempt can never replace them.
    pub attempt: u32,
    /// The chunk's cursor range.
    pub range: CursorRange,
    /// The data files, names relative to the table's `data/` directory, in part order.
    pub files: Vec<ManifestFile>,
    /// Rows and checksum the worker measured while extracting.
    pub extracted: RowSummary,
    /// Rows and checksum the commit proved before the commit point: decoded from the files, or,
    /// for files the writer hashed, rows from the footers and the writer's checksum of the
    /// same bytes (see `docs/verification.md`).
    pub committed: RowSummary,
    /// How both checksums were computed, so `verify` recomputes them the same way; manifests
    /// written before versions were recorded are version 1.
    #[serde(default = "ChecksumVersion::first")]
    pub checksum_version: ChecksumVersion,
    /// For a chunk of a `dedup` sync job: its key and cursor columns, rows inserted and
    /// updated (see [`crate::dedup`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<crate::dedup::DedupManifest>,
    /// For a chunk of a `full_refresh` sync job: the chunk is a whole version of the table
    /// (see [`crate::refresh`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<crate::refresh::RefreshManifest>,
    /// When the chunk was committed, µs since the epoch (`_backhaul_synced_at` of its rows,
    /// and the month its inserted/updated rows count in). Absent in manifests written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at_us: Option<i64>,
    /// `sync.metadata_columns` of the job that committed it (any sync mode): readers see
    /// `_backhaul_synced_at` and `_backhaul_deleted`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub metadata_columns: bool,
}

/// One data file of a committed chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// File name inside `data/`.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Rows in the file, from its footer (or its decode) when committing.
    pub rows: u64,
}

impl ChunkManifest {
    pub(crate) fn new(
        commit: &backhaul_core::connector::ChunkCommit,
        files: Vec<ManifestFile>,
        committed: RowSummary,
    ) -> Self {
        ChunkManifest {
            format: FORMAT,
            job_id: commit.job_id.clone(),
            chunk_id: commit.chunk_id,
            attempt: commit.attempt,
            range: commit.range,
            files,
            extracted: commit.extracted.summary,
            committed,
            // The worker measured `extracted` with this binary's checksum, as did the commit.
            checksum_version: ChecksumVersion::CURRENT,
            dedup: None,
            refresh: None,
            committed_at_us: Some(crate::table::now_us()),
            metadata_columns: commit.sync.as_ref().is_some_and(|s| s.metadata_columns),
        }
    }
}

/// Paths of one table's files and directories.
#[derive(Debug, Clone)]
pub(crate) struct TablePaths {
    pub dir: PathBuf,
}

impl TablePaths {
    pub fn new(root: &Path, table: &str) -> Self {
        TablePaths { dir: root.join(table) }
    }
    pub fn table_file(&self) -> PathBuf {
        self.dir.join(TABLE_FILE)
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(DATA_DIR)
    }
    pub fn manifest_dir(&self) -> PathBuf {
        self.dir.join(MANIFEST_DIR)
    }
    pub fn manifest(&self, chunk_id: u64) -> PathBuf {
        self.manifest_dir().join(manifest_name(chunk_id))
    }
    pub fn data_file(&self, name: &str) -> PathBuf {
        self.data_dir().join(name)
    }
    pub fn superseded_dir(&self) -> PathBuf {
        self.dir.join(SUPERSEDED_DIR)
    }
    pub fn deletes_dir(&self) -> PathBuf {
        self.dir.join(DELETES_DIR)
    }
}

/// File name of a chunk's manifest.
pub(crate) fn manifest_name(chunk_id: u64) -> String {
    format!("chunk-{chunk_id:06}.json")
}

/// Deterministic name of one committed data file.
pub(crate) fn data_file_name(job_id: &str, chunk_id: u64, attempt: u32, part: u32) -> String {
    format!("{job_id}-c{chunk_id:06}-a{attempt:03}-p{part:04}.parquet")
}

/// Prefix shared by every data file of any attempt of one chunk.
pub(crate) fn chunk_file_prefix(job_id: &str, chunk_id: u64) -> String {
    format!("{job_id}-c{chunk_id:06}-a")
}

/// Reads `_table.json`; `None` when the table has not been prepared.
pub(crate) fn read_table_meta(paths: &TablePaths) -> Result<Option<TableMeta>> {
    read_json(&paths.table_file())
}

/// Reads one chunk's manifest; `None` when the chunk was never committed.
pub(crate) fn read_manifest(paths: &TablePaths, chunk_id: u64) -> Result<Option<ChunkManifest>> {
    read_json(&paths.manifest(chunk_id))
}

/// All manifests of a table, by chunk id. Temporary files and foreign names are skipped.
pub(crate) fn read_all_manifests(paths: &TablePaths) -> Result<Vec<ChunkManifest>> {
    read_manifests_in(&paths.manifest_dir())
}

/// The manifests current readers see (`crate::refresh::current`): every one, but only the
/// newest version of a full-refresh table.
pub(crate) fn read_current_manifests(paths: &TablePaths) -> Result<Vec<ChunkManifest>> {
    read_all_manifests(paths).map(crate::refresh::current)
}

/// The manifests in `dir`, by chunk id; none when it does not exist.
pub(crate) fn read_manifests_in(dir: &Path) -> Result<Vec<ChunkManifest>> {
    let dir = dir.to_path_buf();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("chunk-") && name.ends_with(".json")) {
            continue;
        }
        // A manifest can be replaced between listing and reading; the new one is as good.
        if let Some(m) = read_json::<ChunkManifest>(&entry.path())? {
            out.push(m);
        }
    }
    out.sort_by_key(|m| m.chunk_id);
    Ok(out)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::InvalidObject {
            object: path.display().to_string(),
            message: format!("not valid warehouse metadata: {e}"),
        })
}

/// A fresh hidden temporary path next to `target`. Hidden and without the `.parquet` or
/// `.json` suffix, so nothing ever mistakes it for data or a manifest.
pub(crate) fn temp_path_for(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    target.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Writes `value` as JSON to a new temporary file next to `target` and returns its path.
pub(crate) fn write_json_temp<T: Serialize>(target: &Path, value: &T) -> Result<PathBuf> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Internal(format!("serializing {}: {e}", target.display())))?;
    let tmp = temp_path_for(target);
    let written = std::fs::File::create_new(&tmp).and_then(|mut f| f.write_all(&bytes));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    Ok(tmp)
}

fn encode_schema(schema: &Schema) -> Result<String> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
    writer.finish()?;
    let bytes = writer.into_inner()?;
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    Ok(hex)
}

fn decode_schema(hex: &str) -> std::result::Result<Schema, String> {
    if !hex.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or("not hex")?;
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| e.to_string())?;
    Ok(reader.schema().as_ref().clone())
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field, TimeUnit};

    use backhaul_core::schema::schema_difference;

    use super::*;

    #[test]
    fn schema_round_trips_exactly() {
        let mut md = std::collections::HashMap::new();
        md.insert("ARROW:extension:name".to_string(), "arrow.json".to_string());
        let schema = Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("amount", DataType::Decimal128(18, 2), true),
            Field::new("doc", DataType::Utf8, true).with_metadata(md),
        ]);
        let meta = TableMeta::new("t", "job", &schema).unwrap();
        let text = serde_json::to_string(&meta).unwrap();
        let back: TableMeta = serde_json::from_str(&text).unwrap();
        assert_eq!(back.schema().unwrap().as_ref(), &schema);
        assert_eq!(schema_difference(&schema, &back.schema().unwrap()), None);
    }

    #[test]
    fn differences_are_described() {
        let a = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        let b = Schema::new(vec![Field::new("id", DataType::Int32, true)]);
        let d = schema_difference(&a, &b).unwrap();
        assert!(
            d.contains("Int64 vs Int32") && d.contains("not nullable vs nullable"),
            "{d}"
        );
    }
}
