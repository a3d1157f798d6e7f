//! The warehouse and its tables, and the [`Destination`] implementation.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::datatypes::SchemaRef;
use backhaul_core::changes::MonthChanges;
use backhaul_core::checksum::{ChecksumVersion, RowSummary};
use backhaul_core::connector::{ChunkCommit, Destination, StagedFile};
use backhaul_core::cursor::CursorRange;
use backhaul_core::deletes::KeyDigest;
use backhaul_core::localfile::{ContentHash, ContentHasher, Placement, hash_file, place};
use backhaul_core::proof::{ChunkEvidence, ChunkProof, ProofLevel};
use backhaul_core::schema::{SchemaChanges, chunk_misfit};
use backhaul_core::spec::{is_valid_identifier, is_valid_name};
use backhaul_core::stage::Stage;
use backhaul_core::{Error, Result};
use futures::StreamExt;
use futures::future::BoxFuture;
use object_store::ObjectStoreExt;
use tokio::io::AsyncWriteExt;

use crate::dedup::dedup_manifest;
use crate::deletes::{live_keys, mark_deleted, monthly_changes};
use crate::meta::{
    ChunkManifest, ManifestFile, TableMeta, TablePaths, chunk_file_prefix, data_file_name, read_current_manifests,
    read_manifest, read_table_meta, temp_path_for, write_json_temp,
};
use crate::readback::{file_schema, footer_rows, measure_files, merged};
use crate::refresh::{refresh_manifest, retire_superseded};
use crate::spec::LocalDestinationSpec;

/// A local Parquet warehouse: a directory with one sub-directory per table.
#[derive(Debug, Clone)]
pub struct LocalWarehouse {
    root: PathBuf,
}

impl LocalWarehouse {
    /// Opens the warehouse at `root`, creating the directory when missing.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        Self::at(root)
    }

    /// The warehouse at `root` without creating anything: `plan` builds the destination and
    /// must leave the disk as it was; [`Destination::prepare`] creates the directories.
    pub fn at(root: impl AsRef<Path>) -> Result<Self> {
        // Canonical, so every handle on one table shares one commit lock and file URLs are absolute.
        Ok(LocalWarehouse {
            root: canonical_to_be(root.as_ref())?,
        })
    }

    /// The warehouse directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A handle on table `name`; the table itself is created by [`Destination::prepare`].
    pub fn table(&self, name: &str) -> Result<LocalTable> {
        if !is_valid_identifier(name) {
            return Err(Error::InvalidObject {
                object: format!("table {name}"),
                message: "not a valid table name (letters, digits and `_`, not starting with a digit)".into(),
            });
        }
        let paths = TablePaths::new(&self.root, name);
        let lock = table_lock(&paths.dir);
        Ok(LocalTable {
            table: name.to_string(),
            paths,
            lock,
        })
    }

    /// Names of the prepared tables (directories holding a table file), sorted.
    pub fn tables(&self) -> Result<Vec<String>> {
        list_tables(&self.root)
    }

    /// Runs `sql` over every table of the warehouse; see [`query_with_schema`](crate::query_with_schema).
    pub async fn query(&self, sql: &str) -> Result<crate::QueryOutput> {
        crate::query::query_with_schema(&self.root, sql).await
    }
}

/// The canonical form of `path`, which may not exist yet: its deepest existing ancestor is
/// canonicalized and the missing rest appended (a path not yet created holds no symlinks).
fn canonical_to_be(path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut canonical = std::fs::canonicalize(existing).map_err(|e| Error::io(existing, e))?;
    canonical.extend(missing.iter().rev());
    Ok(canonical)
}

/// Prepared tables under `root`: directories with a valid table name and a `_table.json`.
pub(crate) fn list_tables(root: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if is_valid_identifier(&name) && TablePaths::new(root, &name).table_file().is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// One table of a [`LocalWarehouse`], loaded by exactly one job.
///
/// Commits of one table are serialized inside this process by a lock shared by every handle
/// on the table. Two *processes* committing to the same table at once are not coordinated:
/// the coordinator's leases keep each chunk to one worker, and attempt fencing below stops a
/// stale attempt from replacing a newer one in the usual cases, but a cross-process race
/// between the fence check and the manifest rename is possible. Run one writer process per
/// warehouse, or put the warehouse behind a destination with real transactions.
#[derive(Debug, Clone)]
pub struct LocalTable {
    table: String,
    paths: TablePaths,
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// One async mutex per table directory, so every handle in the process shares it.
fn table_lock(dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
    type Locks = std::sync::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    // The map only holds Arcs; a panic while it was locked cannot have broken it.
    let mut map = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.entry(dir.to_path_buf()).or_default().clone()
}

impl LocalTable {
    /// The destination described by a job spec's `[destination]` section. Creates the
    /// warehouse directory when missing; the table is created by [`Destination::prepare`].
    /// `file_size` is used by the writer that stages files, not here.
    pub fn new(spec: &LocalDestinationSpec) -> Result<Self> {
        if !is_valid_identifier(&spec.table) {
            return Err(Error::config(
                "<spec>",
                "destination.table",
                format!("`{}` is not a valid table name", spec.table),
            ));
        }
        LocalWarehouse::at(&spec.path)?.table(&spec.table)
    }

    /// Table name.
    pub fn name(&self) -> &str {
        &self.table
    }

    /// The table's directory.
    pub fn dir(&self) -> &Path {
        &self.paths.dir
    }

    /// The committed manifest of a chunk, if any (blocking, small read).
    pub fn manifest(&self, chunk_id: u64) -> Result<Option<ChunkManifest>> {
        read_manifest(&self.paths, chunk_id)
    }

    /// The table's owner and schema, or `None` before [`Destination::prepare`] (blocking, small read).
    pub fn meta(&self) -> Result<Option<TableMeta>> {
        read_table_meta(&self.paths)
    }

    async fn commit(&self, stage: &Stage, commit: &ChunkCommit) -> Result<ChunkProof> {
        check_job_id(&commit.job_id)?;
        let (job, chunk, attempt) = (commit.job_id.clone(), commit.chunk_id, commit.attempt);
        let paths = self.paths.clone();
        let table = self.table.clone();
        let (schema, existing) = blocking({
            let (paths, job) = (paths.clone(), job.clone());
            move || Ok((owned_schema(&paths, &table, &job)?, read_manifest(&paths, chunk)?))
        })
        .await?;
        // Cheap early fence: a stale worker should not even copy its files. Checked again
        // under the lock right before the commit point.
        if let Some(existing) = &existing {
            fence(existing, commit)?;
        }

        // Link (or copy) into hidden temporary files first: the final names of a re-committed
        // attempt are the currently committed files, which must not be touched before
        // verification.
        let mut temps = TempFiles::default();
        let mut names = Vec::with_capacity(commit.files.len());
        for (part, file) in commit.files.iter().enumerate() {
            let part = u32::try_from(part).map_err(|_| Error::Internal(format!("chunk {chunk} has too many files")))?;
            let name = data_file_name(&job, chunk, attempt, part);
            let tmp = temp_path_for(&paths.data_file(&name));
            temps.0.push(tmp.clone());
            take_staged(stage, file, &tmp).await?;
            names.push(name);
        }

        // Measured in the chunk's own columns (the source's when it was read), which the
        // table's must hold.
        let what = format!("chunk {chunk} of job {job} (attempt {attempt})");
        let (per_file_rows, measured) = blocking({
            let (files, schema, what) = (temps.0.clone(), schema.clone(), what.clone());
            let vouched = commit.files.iter().all(|f| f.xxh3.is_some());
            let extracted = commit.extracted.clone();
            move || {
                let chunk_schema = chunk_schema(&files, &schema, &what)?;
                if vouched {
                    // Every file's bytes are the writer's (checked by `take_staged`), whose
                    // checksum and fingerprint the writer measured of the rows it encoded into
                    // exactly these bytes; the footers give rows and schema. No decode:
                    // `read_back` (verify) decodes.
                    let rows = footer_rows(&files, &chunk_schema)?;
                    let proved: Vec<&str> = extracted.fingerprint.columns.iter().map(|c| c.name.as_str()).collect();
                    let in_files: Vec<&str> = chunk_schema.fields().iter().map(|f| f.name().as_str()).collect();
                    // The files may hold more (a dropped column the writer filled with NULLs),
                    // never less than what the writer's evidence covers.
                    if proved.iter().any(|c| !in_files.contains(c)) {
                        return Err(Error::VerificationFailed {
                            what,
                            message: format!(
                                "the files' columns ({}) lack some the writer proved ({})",
                                in_files.join(", "),
                                proved.join(", ")
                            ),
                        });
                    }
                    let measured = ChunkEvidence {
                        summary: RowSummary {
                            rows: rows.iter().sum(),
                            checksum: extracted.summary.checksum,
                        },
                        fingerprint: extracted.fingerprint,
                    };
                    return Ok((rows, measured));
                }
                // A writer that did not hash its files: one decode measures both the
                // checksum and the fingerprint.
                let per_file = measure_files(&files, &chunk_schema, ChecksumVersion::CURRENT)?;
                let measured = merged(&per_file, &chunk_schema)?;
                Ok((per_file.iter().map(|e| e.summary.rows).collect(), measured))
            }
        })
        .await?;
        let proof = ChunkProof::from_evidence(PROOF_LEVEL, &measured);
        // On refusal `temps` is dropped, deleting the temporaries; the manifest is untouched.
        proof.verify(&commit.extracted, what)?;
        let committed = measured.summary;

        let files = names
            .iter()
            .zip(&commit.files)
            .zip(&per_file_rows)
            .map(|((name, staged), rows)| ManifestFile {
                name: name.clone(),
                bytes: staged.bytes,
                rows: *rows,
            })
            .collect();
        let mut manifest = ChunkManifest::new(commit, files, committed);
        let file_count = manifest.files.len();
        let guard = self.lock.clone().lock_owned().await;
        let commit = commit.clone();
        let table = self.table.clone();
        let dedup = blocking(move || {
            let _guard = guard;
            // Under the lock, so the counts see every other commit whole.
            manifest.dedup = dedup_manifest(&paths, &table, &schema, &commit, &temps.0)?;
            manifest.refresh = refresh_manifest(&paths, &commit, committed.rows)?;
            let dedup = manifest.dedup.clone();
            let refresh = manifest.refresh.is_some();
            install(&paths, &commit, temps, manifest)?;
            if refresh {
                // After the commit point: the new version is the table, the old ones go.
                if let Err(e) = retire_superseded(&paths) {
                    tracing::warn!(table = %table, error = %e, "cannot retire superseded versions");
                }
            }
            Ok(dedup)
        })
        .await?;
        let (inserted, updated) = dedup.map_or((None, None), |d| (Some(d.rows_inserted), Some(d.rows_updated)));
        tracing::info!(table = %self.table, job = %job, chunk, attempt, rows = committed.rows, files = file_count, inserted, updated, "chunk committed");
        Ok(proof)
    }

    fn read_back_blocking(&self, job_id: &str, chunk_id: u64) -> Result<Option<ChunkProof>> {
        let Some(meta) = read_table_meta(&self.paths)? else {
            return Ok(None);
        };
        check_owner(&self.paths, &self.table, &meta, job_id)?;
        let schema = meta.schema()?;
        // A commit may replace the chunk's files while they are read. Then the manifest has
        // changed too, and reading the new one is right; only a stable manifest with bad
        // files is a real verification failure.
        let mut tries = 0;
        loop {
            let Some(manifest) = read_manifest(&self.paths, chunk_id)? else {
                return Ok(None);
            };
            if manifest.job_id != job_id {
                return Err(Error::DestinationConflict(format!(
                    "chunk {chunk_id} of table `{}` was committed by job `{}`, not `{job_id}`",
                    self.table, manifest.job_id
                )));
            }
            let files: Vec<PathBuf> = manifest.files.iter().map(|f| self.paths.data_file(&f.name)).collect();
            let what = format!("chunk {chunk_id} of table `{}`", self.table);
            let version = manifest.checksum_version;
            match chunk_schema(&files, &schema, &what).and_then(|s| Ok((measure_files(&files, &s, version)?, s))) {
                Ok((per_file, chunk_schema)) => {
                    let measured = merged(&per_file, &chunk_schema)?;
                    return Ok(Some(ChunkProof::from_evidence(PROOF_LEVEL, &measured)));
                }
                Err(e) => {
                    tries += 1;
                    let now = read_manifest(&self.paths, chunk_id)?;
                    if tries < 3 && now.as_ref() != Some(&manifest) {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }
}

impl Destination for LocalTable {
    fn column_type(&self, field: &arrow::datatypes::Field) -> backhaul_core::connector::DestinationType {
        backhaul_core::connector::DestinationType {
            name: parquet_type(field),
            lossy_step: None,
        }
    }

    fn prepare(&self, job_id: &str, schema: SchemaRef) -> BoxFuture<'_, Result<SchemaChanges>> {
        let job = job_id.to_string();
        Box::pin(async move {
            check_job_id(&job)?;
            // The lock makes prepare and commit of one process see each other's files whole.
            let guard = self.lock.clone().lock_owned().await;
            let (paths, table) = (self.paths.clone(), self.table.clone());
            blocking(move || {
                let _guard = guard;
                prepare_blocking(&paths, &table, &job, &schema)
            })
            .await
        })
    }

    fn proof_level(&self) -> ProofLevel {
        PROOF_LEVEL
    }

    fn supports_sync_mode(&self, _mode: backhaul_core::connector::SyncMode) -> bool {
        true
    }

    fn supports_metadata_columns(&self) -> bool {
        true
    }

    fn supports_delete_detection(&self) -> bool {
        true
    }

    fn key_digest<'a>(
        &'a self,
        job_id: &'a str,
        range: CursorRange,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<KeyDigest>> {
        Box::pin(async move {
            let keys = self.list_keys(job_id, range, keys).await?;
            Ok(KeyDigest::of(keys.iter().map(String::as_str)))
        })
    }

    fn list_keys<'a>(
        &'a self,
        job_id: &'a str,
        range: CursorRange,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        let (paths, table, job, keys) = (
            self.paths.clone(),
            self.table.clone(),
            job_id.to_string(),
            keys.to_vec(),
        );
        Box::pin(blocking(move || {
            let schema = owned_schema(&paths, &table, &job)?;
            live_keys(&paths, &schema, &keys, range)
        }))
    }

    fn monthly_changes<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<Option<Vec<MonthChanges>>>> {
        let (paths, table, job) = (self.paths.clone(), self.table.clone(), job_id.to_string());
        Box::pin(blocking(move || {
            if read_table_meta(&paths)?.is_none() {
                return Ok(None);
            }
            owned_schema(&paths, &table, &job)?;
            monthly_changes(&paths).map(Some)
        }))
    }

    fn mark_deleted<'a>(
        &'a self,
        job_id: &'a str,
        keys: &'a [String],
        deleted: &'a [String],
    ) -> BoxFuture<'a, Result<u64>> {
        let (paths, table, job) = (self.paths.clone(), self.table.clone(), job_id.to_string());
        let (keys, deleted) = (keys.to_vec(), deleted.to_vec());
        Box::pin(async move {
            // Under the lock, so the delete file's `through` and the commits agree.
            let guard = self.lock.clone().lock_owned().await;
            let marked = blocking(move || {
                let _guard = guard;
                let schema = owned_schema(&paths, &table, &job)?;
                mark_deleted(&paths, &schema, &keys, &deleted)
            })
            .await?;
            tracing::info!(table = %self.table, job = job_id, marked, "keys marked deleted");
            Ok(marked)
        })
    }

    fn commit_chunk<'a>(&'a self, stage: &'a Stage, commit: &'a ChunkCommit) -> BoxFuture<'a, Result<ChunkProof>> {
        Box::pin(self.commit(stage, commit))
    }

    fn read_back(&self, job_id: &str, chunk_id: u64) -> BoxFuture<'_, Result<Option<ChunkProof>>> {
        let job = job_id.to_string();
        let this = self.clone();
        Box::pin(async move { blocking(move || this.read_back_blocking(&job, chunk_id)).await })
    }
}

/// The warehouse decodes its own files, so it proves the exact row checksum; its proofs carry
/// the fingerprint too, measured in the same pass.
const PROOF_LEVEL: ProofLevel = ProofLevel::ExactChecksum;

/// Job ids become file names; only plain names may get near the file system.
fn check_job_id(job_id: &str) -> Result<()> {
    if is_valid_name(job_id) {
        Ok(())
    } else {
        Err(Error::InvalidObject {
            object: format!("job {job_id}"),
            message: "not a valid job name".into(),
        })
    }
}

fn prepare_blocking(paths: &TablePaths, table: &str, job_id: &str, schema: &SchemaRef) -> Result<SchemaChanges> {
    for dir in [paths.data_dir(), paths.manifest_dir()] {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let target = paths.table_file();
    if let Some(existing) = read_table_meta(paths)? {
        return check_prepared(paths, table, &existing, job_id, schema);
    }
    let meta = TableMeta::new(table, job_id, schema)?;
    let tmp = write_json_temp(&target, &meta)?;
    // A hard link, unlike a rename, fails when the target exists: of two processes creating
    // the table at once exactly one wins, and the other checks the winner's file.
    let linked = std::fs::hard_link(&tmp, &target);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(table, job = job_id, dir = %paths.dir.display(), "table created");
            Ok(SchemaChanges::default())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match read_table_meta(paths)? {
            Some(existing) => check_prepared(paths, table, &existing, job_id, schema),
            None => Err(Error::Internal(format!(
                "{} vanished right after being created",
                target.display()
            ))),
        },
        Err(e) => Err(Error::io(&target, e)),
    }
}

/// Checks an existing table belongs to `job_id` and makes it follow the source's `schema` by
/// the one rule ([`SchemaChanges::follow`]): added columns join the table (older chunks' rows
/// read them as NULL), dropped ones stay (newer chunks' rows read them as NULL), a type change
/// is refused. Only `_table.json` changes; no data file is rewritten, so every chunk's proof
/// still covers exactly its own files.
fn check_prepared(
    paths: &TablePaths,
    table: &str,
    existing: &TableMeta,
    job_id: &str,
    schema: &SchemaRef,
) -> Result<SchemaChanges> {
    check_owner(paths, table, existing, job_id)?;
    let current = existing.schema()?;
    let (followed, changes) =
        SchemaChanges::follow(&current, schema, &existing.dropped_columns).map_err(|type_change| {
            Error::DestinationConflict(format!("table `{table}` at {}: {type_change}", paths.dir.display()))
        })?;
    let dropped_columns: Vec<String> = followed
        .fields()
        .iter()
        .filter(|f| schema.field_with_name(f.name()).is_err())
        .map(|f| f.name().clone())
        .collect();
    if followed != *current || dropped_columns != existing.dropped_columns {
        let mut meta = TableMeta::new(table, job_id, &followed)?;
        meta.dropped_columns = dropped_columns;
        let target = paths.table_file();
        let tmp = write_json_temp(&target, &meta)?;
        if let Err(e) = std::fs::rename(&tmp, &target) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&target, e));
        }
        tracing::info!(table, job = job_id, %changes, "table follows the source's columns");
    }
    Ok(changes)
}

fn check_owner(paths: &TablePaths, table: &str, meta: &TableMeta, job_id: &str) -> Result<()> {
    if meta.job_id != job_id {
        return Err(Error::DestinationConflict(format!(
            "table `{table}` at {} belongs to job `{}`, not `{job_id}`; load into another table or remove the directory",
            paths.dir.display(),
            meta.job_id
        )));
    }
    Ok(())
}

/// Schema of a table owned by `job_id`; fails when the table is missing or someone else's.
fn owned_schema(paths: &TablePaths, table: &str, job_id: &str) -> Result<SchemaRef> {
    let meta = read_table_meta(paths)?.ok_or_else(|| Error::InvalidObject {
        object: format!("table {table}"),
        message: format!(
            "{} does not exist; the destination was not prepared",
            paths.table_file().display()
        ),
    })?;
    check_owner(paths, table, &meta, job_id)?;
    meta.schema()
}

/// The columns of a chunk's files: the source's when the chunk was read, which may be fewer
/// (dropped since) or, for chunks read before a column was added, older than the table's.
/// Refused when they do not fit the table ([`chunk_misfit`]); the table's schema for a chunk
/// without files.
fn chunk_schema(files: &[PathBuf], table: &SchemaRef, what: &str) -> Result<SchemaRef> {
    let Some(first) = files.first() else {
        return Ok(table.clone());
    };
    let schema = file_schema(first)?;
    if let Some(misfit) = chunk_misfit(table, &schema) {
        return Err(Error::DestinationConflict(format!(
            "{what}: the chunk's columns do not fit the table's: {misfit}"
        )));
    }
    Ok(schema)
}

/// Refuses a commit that would replace a newer attempt's commit.
fn fence(existing: &ChunkManifest, commit: &ChunkCommit) -> Result<()> {
    if existing.attempt > commit.attempt {
        return Err(Error::LeaseLost {
            lease_id: format!("{}/{}/{}", commit.job_id, commit.chunk_id, commit.attempt),
            message: format!(
                "chunk {} is already committed by attempt {}; attempt {} is stale and was not committed",
                commit.chunk_id, existing.attempt, commit.attempt
            ),
        });
    }
    Ok(())
}

/// Puts one staged file at `tmp` and checks it is the file the writer staged: a hard link
/// when the stage is a local directory on the same file system (no byte is written; a link
/// rather than a rename keeps the staged file in place until the chunk is done, so a retried
/// commit of the same attempt finds it), else a streamed copy ([`place`]'s rule). The size must
/// match, and when the writer recorded the file's content hash, the hash of the bytes received
/// must match it too: that binds the committed bytes to the rows the writer measured.
async fn take_staged(stage: &Stage, file: &StagedFile, tmp: &Path) -> Result<()> {
    let location = object_store::path::Path::parse(&file.path).map_err(|e| Error::InvalidObject {
        object: format!("staged file {}", file.path),
        message: e.to_string(),
    })?;
    let received = match stage.local_path(&location) {
        Some(source) => {
            let (tmp, hashed) = (tmp.to_path_buf(), file.xxh3.is_some());
            blocking(move || {
                match place(&source, &tmp, Placement::Link) {
                    Ok(_) => {}
                    Err(Error::Io { source: e, .. }) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(Error::VerificationFailed {
                            what: format!("staged file {}", source.display()),
                            message: "the staged file is missing".into(),
                        });
                    }
                    Err(e) => return Err(e),
                }
                if hashed {
                    hash_file(&tmp)
                } else {
                    let bytes = std::fs::metadata(&tmp).map_err(|e| Error::io(&tmp, e))?.len();
                    Ok(ContentHash { bytes, xxh3: 0 })
                }
            })
            .await?
        }
        None => copy_staged(stage, &location, tmp).await?,
    };
    check_received(stage, file, received)
}

/// The received file against what the writer staged: its size, and its hash when recorded.
fn check_received(stage: &Stage, file: &StagedFile, received: ContentHash) -> Result<()> {
    let failed = |message: String| Error::VerificationFailed {
        what: format!("staged file {} in {}", file.path, stage.description()),
        message,
    };
    if received.bytes != file.bytes {
        return Err(failed(format!(
            "expected {} bytes, found {}",
            file.bytes, received.bytes
        )));
    }
    if let Some(expected) = file.content_hash()
        && expected != received
    {
        return Err(failed(format!(
            "its bytes changed after the writer wrote them: the writer hashed {expected}, the warehouse received {received}"
        )));
    }
    Ok(())
}

/// Streams one staged file into `tmp`, hashing it on the way, so memory stays bounded
/// whatever the file size and the hash costs no second read.
async fn copy_staged(stage: &Stage, location: &object_store::path::Path, tmp: &Path) -> Result<ContentHash> {
    let mut stream = stage.store().get(location).await?.into_stream();
    let mut out = tokio::fs::File::create_new(tmp).await.map_err(|e| Error::io(tmp, e))?;
    let mut hasher = ContentHasher::new();
    while let Some(bytes) = stream.next().await {
        let bytes = bytes?;
        out.write_all(&bytes).await.map_err(|e| Error::io(tmp, e))?;
        hasher.update(&bytes);
    }
    // tokio writes in the background; flush so the bytes are in the file before it is read.
    out.flush().await.map_err(|e| Error::io(tmp, e))?;
    Ok(hasher.finish())
}

/// The commit itself, under the table lock: fence again, move the verified copies to their
/// final names, rename the manifest into place (the commit point), then delete what the
/// previous commit of the chunk used. A crash before the manifest rename leaves only files no
/// manifest lists, which queries ignore and the next commit of the chunk deletes.
fn install(paths: &TablePaths, commit: &ChunkCommit, mut temps: TempFiles, manifest: ChunkManifest) -> Result<()> {
    let previous = read_manifest(paths, commit.chunk_id)?;
    if let Some(previous) = &previous {
        fence(previous, commit)?;
    }
    let manifest_path = paths.manifest(commit.chunk_id);
    let manifest_tmp = write_json_temp(&manifest_path, &manifest)?;
    temps.0.push(manifest_tmp.clone());
    for (tmp, file) in temps.0.iter().zip(&manifest.files) {
        let target = paths.data_file(&file.name);
        std::fs::rename(tmp, &target).map_err(|e| Error::io(&target, e))?;
        // Renaming a link onto another link of the same file (the same staged file committed
        // again) does nothing and leaves the temporary name behind.
        let _ = std::fs::remove_file(tmp);
    }
    std::fs::rename(&manifest_tmp, &manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
    temps.disarm();

    // Cleanup after the commit point cannot fail the commit: leftovers are unreferenced.
    let keep: BTreeSet<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    let mut stale: BTreeSet<String> = previous
        .iter()
        .flat_map(|m| m.files.iter().map(|f| f.name.clone()))
        .collect();
    // Also files of attempts that crashed between renaming data and renaming the manifest.
    let prefix = chunk_file_prefix(&commit.job_id, commit.chunk_id);
    match std::fs::read_dir(paths.data_dir()) {
        Ok(entries) => stale.extend(
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix) && n.ends_with(".parquet")),
        ),
        Err(e) => tracing::warn!(dir = %paths.data_dir().display(), error = %e, "cannot list data files to clean up"),
    }
    for name in stale.iter().filter(|n| !keep.contains(n.as_str())) {
        let path = paths.data_file(name);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %path.display(), error = %e, "cannot delete replaced data file");
        }
    }
    Ok(())
}

/// Temporary files deleted on drop unless disarmed, so every early return and cancellation
/// cleans up after itself.
#[derive(Default)]
struct TempFiles(Vec<PathBuf>);

impl TempFiles {
    fn disarm(&mut self) {
        self.0.clear();
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The wall clock in µs since the epoch: commit times of manifests and delete files.
pub(crate) fn now_us() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

/// Runs blocking file work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

/// Every data file referenced by a committed manifest of `table`, by chunk and part.
/// Blocking (reads the manifests).
pub fn committed_files(root: &Path, table: &str) -> Result<Vec<PathBuf>> {
    let paths = TablePaths::new(root, table);
    Ok(read_current_manifests(&paths)?
        .iter()
        .flat_map(|m| m.files.iter().map(|f| paths.data_file(&f.name)))
        .collect())
}

/// Totals of a table, from its manifests alone (no data is read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSummary {
    /// Committed chunks.
    pub chunks: u64,
    /// Committed data files.
    pub files: u64,
    /// Committed rows.
    pub rows: u64,
    /// Bytes of the committed data files.
    pub bytes: u64,
}

/// Chunks, files, rows and bytes committed to `table`, from its manifests. Blocking.
pub fn table_summary(root: &Path, table: &str) -> Result<TableSummary> {
    let paths = TablePaths::new(root, table);
    let mut s = TableSummary::default();
    for m in read_current_manifests(&paths)? {
        s.chunks += 1;
        s.files += m.files.len() as u64;
        s.rows += m.committed.rows;
        s.bytes += m.files.iter().map(|f| f.bytes).sum::<u64>();
    }
    Ok(s)
}

/// The Parquet column a field is written as, e.g. `OPTIONAL INT64 at (TIMESTAMP(MICROS,true))`,
/// as the Parquet schema printer shows it.
fn parquet_type(field: &arrow::datatypes::Field) -> String {
    let schema = arrow::datatypes::Schema::new(vec![field.clone()]);
    match parquet::arrow::ArrowSchemaConverter::new().convert(&schema) {
        Ok(descriptor) => {
            let mut text = Vec::new();
            parquet::schema::printer::print_schema(&mut text, descriptor.root_schema());
            let text = String::from_utf8_lossy(&text);
            // Drop the `message` wrapper and join the lines of nested types.
            let inner: Vec<&str> = text
                .lines()
                .skip(1)
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != "}")
                .collect();
            inner.join(" ").trim_end_matches(';').to_string()
        }
        Err(e) => format!("not representable in Parquet: {e}"),
    }
}
