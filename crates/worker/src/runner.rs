//! Running one chunk: extract → Parquet parts → stage → destination commit → verified output.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use backhaul_core::Error;
use backhaul_core::connector::{
    ChunkCommit, Connectors, Destination, ExtractFacts, ExtractNotes, Source, StagedFile, SyncCommit, TableDescription,
};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::localfile::{Placement, place};
use backhaul_core::proof::{ChunkEvidence, ChunkProof};
use backhaul_core::registry::StagingPreferences;
use backhaul_core::spec::{JobSpec, ValidatedSpec};
use backhaul_core::stage::Stage;
use futures::StreamExt;
use object_store::{ObjectStoreExt, WriteMultipart};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Result, WorkerError};
use crate::split::Bounds;
use crate::writer::{PartSink, PartWriterConfig, SpooledPart, write_parts};

/// Everything a worker builds once per job and reuses for each of its chunks.
pub struct JobContext {
    /// The job id.
    pub job_id: String,
    /// The checked spec, job-level paths resolved.
    pub spec: JobSpec,
    /// Validated values.
    pub validated: ValidatedSpec,
    /// How the destination wants its files staged.
    pub staging: StagingPreferences,
    /// The source.
    pub source: Arc<dyn Source>,
    /// The source table.
    pub table: TableDescription,
    /// The destination.
    pub destination: Arc<dyn Destination>,
    /// The stage.
    pub stage: Stage,
    /// How the job's chunks land when it has `[sync]`.
    pub sync: Option<SyncCommit>,
}

impl JobContext {
    /// Builds the context from the spec TOML a lease carries.
    pub async fn build(job_id: &str, spec_toml: &str, base_dir: &Path, connectors: &dyn Connectors) -> Result<Self> {
        let origin = format!("job {job_id}");
        let spec = JobSpec::from_toml(spec_toml, &origin)?;
        let mut checked = connectors.check(&spec, &origin)?;
        checked.resolve_paths(base_dir);
        let stage = Stage::from_spec(&checked.spec.stage, &origin).await?;
        let source = checked.source.build()?;
        let table = source.describe().await?;
        let destination = checked.destination.build()?;
        let sync = match &checked.validated.sync {
            Some(policy) => Some(SyncCommit {
                mode: policy.mode,
                key_columns: policy.key_columns(&origin, &checked.spec.name, &table.key_columns)?,
                metadata_columns: policy.metadata_columns,
            }),
            None => None,
        };
        Ok(JobContext {
            sync,
            job_id: job_id.into(),
            staging: checked.destination.staging(),
            spec: checked.spec,
            validated: checked.validated,
            source,
            table,
            destination,
            stage,
        })
    }

    /// `chunking.split_min_rows`, or 0 (never split) for a job whose every chunk replaces the
    /// whole table: the two parts of a split chunk would each replace the other.
    pub fn split_min_rows(&self) -> u64 {
        if self.sync.as_ref().is_some_and(|s| s.mode.replaces_table()) {
            0
        } else {
            self.validated.split_min_rows
        }
    }
}

/// One chunk to run.
#[derive(Debug, Clone)]
pub struct ChunkTask {
    /// The chunk's id in the plan.
    pub chunk_id: u64,
    /// The lease attempt.
    pub attempt: u32,
    /// The cursor range.
    pub range: CursorRange,
}

/// What a finished chunk produced.
#[derive(Debug, Clone)]
pub struct ChunkOutcome {
    /// Files as they were staged.
    pub files: Vec<StagedFile>,
    /// Rows, checksum and fingerprint the writer measured.
    pub extracted: ChunkEvidence,
    /// What the destination proved from its committed data (already checked against
    /// `extracted`).
    pub committed: ChunkProof,
    /// What the source noted while extracting (records sent to a dead-letter file).
    pub facts: ExtractFacts,
}

/// Live counters of a running chunk, read by heartbeats and progress bars.
#[derive(Debug, Default)]
pub struct ChunkProgress {
    /// Rows extracted so far.
    pub rows: AtomicU64,
    /// Parquet bytes written so far.
    pub bytes: AtomicU64,
    /// The range the chunk owns and how far its rows have come, once extraction started with
    /// splitting on (`None` before, and always when `split_min_rows` is 0, so the default
    /// path does no per-batch work for it): shared with the lease keeper, which may cut the
    /// tail off.
    pub bounds: tokio::sync::Mutex<Option<Bounds>>,
}

/// Rows per extracted batch: large enough to amortize per-batch costs, small enough that the
/// channel's few batches in flight stay a few MB.
pub const BATCH_ROWS: usize = 8192;

/// Runs the chunk end to end. `spool_root` holds each part file from the moment the writer
/// starts it until it is staged; a local stage spools inside itself instead, so parts enter
/// it by rename rather than by a second write.
///
/// Extraction, encoding and upload run at once, all owned by this future: the source feeds
/// the writer (a blocking thread), which hands each finished part to the uploader while it
/// writes the next. The first failure cancels the others; the parts this attempt already
/// staged are then deleted, and an interrupted upload is aborted, so no part looks finished.
pub async fn run_chunk(
    ctx: &JobContext,
    task: &ChunkTask,
    spool_root: &Path,
    progress: Arc<ChunkProgress>,
) -> Result<ChunkOutcome> {
    let (spool_root, prefix) = match ctx.stage.local_spool_dir(&ctx.job_id, task.chunk_id, task.attempt) {
        Some(dir) => (dir?, ".spool-".to_string()),
        None => (
            spool_root.to_path_buf(),
            format!("{}-c{:06}-", ctx.job_id, task.chunk_id),
        ),
    };
    let spool = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&spool_root)
        .map_err(|e| Error::io(&spool_root, e))?;
    let cursor = ctx.table.schema.index_of(&ctx.table.cursor_column).map_err(|_| {
        Error::Internal(format!(
            "the cursor column `{}` is not in the source's schema",
            ctx.table.cursor_column
        ))
    })?;
    let staging = Staging {
        source: ctx.source.as_ref(),
        schema: &ctx.table.schema,
        cursor,
        split_min_rows: ctx.split_min_rows(),
        stage: &ctx.stage,
        job_id: &ctx.job_id,
        file_size: ctx.staging.file_size,
    };
    let notes = ExtractNotes::new();
    let staged = staging.run(task, spool.path(), &progress, &notes).await;
    drop(spool);
    let (files, extracted) = staged?;
    // A split while the rows streamed leaves the chunk a shorter range: commit exactly that
    // (the feed closed the bounds, so it cannot change any more).
    let range = progress.bounds.lock().await.as_ref().map_or(task.range, |b| b.range);

    let commit = ChunkCommit {
        job_id: ctx.job_id.clone(),
        chunk_id: task.chunk_id,
        attempt: task.attempt,
        range,
        cursor_column: ctx.table.cursor_column.clone(),
        files: files.clone(),
        extracted,
        sync: ctx.sync.clone(),
    };
    let committed = ctx.destination.commit_chunk(&ctx.stage, &commit).await?;
    committed.verify(
        &commit.extracted,
        format!("chunk {} of job {}", task.chunk_id, ctx.job_id),
    )?;
    let extracted = commit.extracted;
    // The destination has its own copy now. Staged files of this and of earlier, abandoned
    // attempts of the chunk would only cost storage; failing to delete them is harmless.
    clean_stage(&ctx.stage, &Stage::chunk_prefix(&ctx.job_id, task.chunk_id)).await;
    Ok(ChunkOutcome {
        files,
        extracted,
        committed,
        facts: notes.facts(),
    })
}

/// What staging one chunk needs from its job.
struct Staging<'a> {
    source: &'a dyn Source,
    schema: &'a SchemaRef,
    /// Index of the cursor column in `schema`.
    cursor: usize,
    /// `chunking.split_min_rows`.
    split_min_rows: u64,
    stage: &'a Stage,
    job_id: &'a str,
    /// Target part size in bytes.
    file_size: u64,
}

impl Staging<'_> {
    /// Extracts the chunk into Parquet parts and stages them as they finish; returns the
    /// staged files in part order and the evidence measured while writing. On failure
    /// the parts this attempt already staged are deleted.
    async fn run(
        &self,
        task: &ChunkTask,
        spool: &Path,
        progress: &ChunkProgress,
        notes: &ExtractNotes,
    ) -> Result<(Vec<StagedFile>, ChunkEvidence)> {
        let staged = self.extract_and_upload(task, spool, progress, notes).await;
        if staged.is_err() {
            let attempt = Stage::attempt_prefix(self.job_id, task.chunk_id, task.attempt);
            clean_stage(self.stage, &attempt).await;
        }
        staged
    }

    async fn extract_and_upload(
        &self,
        task: &ChunkTask,
        spool: &Path,
        progress: &ChunkProgress,
        notes: &ExtractNotes,
    ) -> Result<(Vec<StagedFile>, ChunkEvidence)> {
        let config = PartWriterConfig {
            target_file_bytes: self.file_size,
            zstd_level: backhaul_core::file_format::ZSTD_LEVEL,
            dictionary: crate::encoding::DictionaryPolicy::default(),
        };
        let cancel = CancellationToken::new();
        // Dropping this future (an abandoned chunk) stops the writer and the uploader too.
        let _stop_on_drop = cancel.clone().drop_guard();
        let (tx, rx) = mpsc::channel::<RecordBatch>(4);
        let (parts_tx, parts_rx) = mpsc::channel::<SpooledPart>(1);
        let schema = self.schema.clone();
        let dir: PathBuf = spool.to_path_buf();
        let written = Arc::new(AtomicU64::new(0));
        let written_for_writer = written.clone();
        let sink = PartSink {
            parts: parts_tx,
            cancel: cancel.clone(),
        };
        let writer =
            tokio::task::spawn_blocking(move || write_parts(rx, schema, &dir, &config, written_for_writer, sink));

        let feed = async {
            // `tx` moves in here so the writer sees the end of the rows when this block ends.
            let tx = tx;
            let fed: Result<()> = async {
                if self.split_min_rows > 0 {
                    let granularity =
                        CursorKind::of(self.schema.field(self.cursor).data_type()).map_or(1, |k| k.granularity());
                    *progress.bounds.lock().await =
                        Some(Bounds::new(task.range, self.split_min_rows).with_granularity(granularity));
                }
                let mut stream = self
                    .source
                    .extract_with_notes(task.range, BATCH_ROWS, notes.clone())
                    .await?;
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    if let Some(diff) = backhaul_core::schema::schema_difference(self.schema, &batch.schema()) {
                        return Err(Error::TypeFidelity(format!(
                            "the source produced rows unlike its described schema: {diff}"
                        ))
                        .into());
                    }
                    // Filtered and measured under the lock a split holds while it is asked
                    // for, so no row above a split point reaches the writer (`split`).
                    let batch = match progress.bounds.lock().await.as_mut() {
                        Some(b) => b.admit(batch, self.cursor)?,
                        None => batch,
                    };
                    progress.rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    progress.bytes.store(written.load(Ordering::Relaxed), Ordering::Relaxed);
                    if tx.send(batch).await.is_err() {
                        // The writer stopped early; its own error (or the uploader's) is reported.
                        break;
                    }
                }
                // Every row is with the writer: a tail cut off now would be empty, and a
                // split after the commit read the range would commit rows twice.
                if let Some(b) = progress.bounds.lock().await.as_mut() {
                    b.close();
                }
                Ok(())
            }
            .await;
            if fed.is_err() {
                // Before `tx` drops: the writer must not take the end of the rows for success.
                cancel.cancel();
            }
            fed
        };
        let uploader = async {
            let uploaded = self.upload_parts(task, parts_rx, &cancel).await;
            if uploaded.is_err() {
                cancel.cancel();
            }
            uploaded
        };
        let (fed, written_parts, uploaded) = tokio::join!(feed, writer, uploader);
        // The first cause wins: a writer or uploader stopped by a failed feed only says
        // `cancelled`, and a writer stopped by a failed upload likewise.
        fed?;
        let files = uploaded?;
        let written_parts = written_parts.map_err(|e| WorkerError::Task(e.to_string()))??;
        progress.bytes.store(written.load(Ordering::Relaxed), Ordering::Relaxed);
        if written_parts.parts != files.len() {
            return Err(Error::Internal(format!(
                "the writer finished {} parts, {} were staged",
                written_parts.parts,
                files.len()
            ))
            .into());
        }
        Ok((files, written_parts.evidence))
    }

    /// Stages each part as the writer hands it over, leaving nothing in the spool; stops at
    /// the first failure, or when the chunk is cancelled.
    async fn upload_parts(
        &self,
        task: &ChunkTask,
        mut parts: mpsc::Receiver<SpooledPart>,
        cancel: &CancellationToken,
    ) -> Result<Vec<StagedFile>> {
        let mut files = Vec::new();
        while let Some(part) = parts.recv().await {
            let path = Stage::part_path(self.job_id, task.chunk_id, task.attempt, files.len() as u32);
            stage_part(self.stage, &part, &path, cancel).await?;
            files.push(StagedFile {
                path: path.to_string(),
                bytes: part.bytes,
                rows: part.rows,
                xxh3: Some(part.xxh3),
            });
        }
        Ok(files)
    }
}

async fn clean_stage(stage: &Stage, prefix: &object_store::path::Path) {
    let mut listing = stage.store().list(Some(prefix));
    while let Some(Ok(meta)) = listing.next().await {
        if let Err(e) = stage.store().delete(&meta.location).await {
            tracing::debug!(path = %meta.location, error = %e, "could not delete staged file");
        }
    }
}

/// Puts a spooled part at `path` in the stage and deletes it from the spool: into a local
/// stage by [`place`] (a rename on one file system, no byte written again), into an object
/// store by [`upload`].
async fn stage_part(
    stage: &Stage,
    part: &SpooledPart,
    path: &object_store::path::Path,
    cancel: &CancellationToken,
) -> Result<()> {
    if cancel.is_cancelled() {
        return Err(Error::Cancelled.into());
    }
    if let Some(target) = stage.local_path(path) {
        let from = part.path.clone();
        return tokio::task::spawn_blocking(move || {
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            place(&from, &target, Placement::Move).map(|_| ())
        })
        .await
        .map_err(|e| WorkerError::Task(e.to_string()))?
        .map_err(Into::into);
    }
    upload(stage, part, path, cancel).await?;
    tokio::fs::remove_file(&part.path)
        .await
        .map_err(|e| Error::io(&part.path, e))?;
    Ok(())
}

/// Streams a spooled file into the stage with a multipart upload, so memory stays at a few
/// pieces whatever the file size. The object appears only when the upload completes; a failed
/// or cancelled upload is aborted, so nothing half-written is ever visible.
async fn upload(
    stage: &Stage,
    part: &SpooledPart,
    path: &object_store::path::Path,
    cancel: &CancellationToken,
) -> Result<()> {
    const PIECE: usize = 8 * 1024 * 1024;
    let upload = stage.store().put_multipart(path).await.map_err(Error::from)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PIECE);
    let streamed: Result<()> = async {
        let mut file = tokio::fs::File::open(&part.path)
            .await
            .map_err(|e| Error::io(&part.path, e))?;
        let mut buf = vec![0u8; PIECE];
        loop {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled.into());
            }
            let n = file.read(&mut buf).await.map_err(|e| Error::io(&part.path, e))?;
            if n == 0 {
                return Ok(());
            }
            writer.wait_for_capacity(4).await.map_err(Error::from)?;
            writer.write(&buf[..n]);
        }
    }
    .await;
    match streamed {
        Ok(()) => {
            writer.finish().await.map_err(Error::from)?;
            Ok(())
        }
        Err(e) => {
            if let Err(abort) = writer.abort().await {
                tracing::debug!(%path, error = %abort, "could not abort the multipart upload");
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use backhaul_core::chunking::DensityBucket;
    use backhaul_core::connector::BatchStream;
    use backhaul_core::spec::StageSpec;
    use futures::TryStreamExt;
    use futures::future::BoxFuture;

    use super::*;

    /// `batches` batches of pseudo-random integers (they compress poorly, so parts roll), then
    /// an error when `fail` is set.
    struct Numbers {
        schema: SchemaRef,
        batches: u64,
        fail: bool,
    }

    impl Numbers {
        fn new(batches: u64, fail: bool) -> Self {
            Numbers {
                schema: Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)])),
                batches,
                fail,
            }
        }
    }

    impl Source for Numbers {
        fn describe(&self) -> BoxFuture<'_, backhaul_core::Result<TableDescription>> {
            unreachable!("the runner is handed the description")
        }
        fn density(&self, _: CursorRange) -> BoxFuture<'_, backhaul_core::Result<Vec<DensityBucket>>> {
            unreachable!("not planned here")
        }
        fn extract(&self, _: CursorRange, rows: usize) -> BoxFuture<'_, backhaul_core::Result<BatchStream>> {
            let schema = self.schema.clone();
            let batches = (0..self.batches).map(move |b| {
                let values = (0..rows as u64).map(|i| ((b * 1_000_003 + i).wrapping_mul(0x9E37_79B9_7F4A_7C15)) as i64);
                Ok(RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(Int64Array::from_iter_values(values))],
                )?)
            });
            let failure = self.fail.then(|| {
                Err(Error::Unreachable {
                    system: "source".into(),
                    message: "connection reset mid-chunk".into(),
                })
            });
            Box::pin(async move { Ok(futures::stream::iter(batches.chain(failure)).boxed()) })
        }
    }

    async fn staged_objects(stage: &Stage) -> Vec<String> {
        let mut found: Vec<String> = stage
            .store()
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        found.sort();
        found
    }

    fn task() -> ChunkTask {
        ChunkTask {
            chunk_id: 3,
            attempt: 2,
            range: CursorRange::new(0, 1),
        }
    }

    #[tokio::test]
    async fn parts_are_staged_in_order_and_leave_the_spool_empty() {
        let dir = tempfile::tempdir().unwrap();
        let stage = Stage::from_spec(&StageSpec::local(dir.path().join("stage")), "job.toml")
            .await
            .unwrap();
        let spool = tempfile::tempdir().unwrap();
        let source = Numbers::new(24, false);
        let staging = Staging {
            source: &source,
            schema: &source.schema,
            cursor: 0,
            split_min_rows: 0,
            stage: &stage,
            job_id: "job",
            file_size: 256 * 1024,
        };
        let (files, evidence) = staging
            .run(&task(), spool.path(), &ChunkProgress::default(), &ExtractNotes::new())
            .await
            .unwrap();
        assert!(files.len() > 2, "several parts expected, got {}", files.len());
        assert_eq!(evidence.summary.rows, 24 * BATCH_ROWS as u64);
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), evidence.summary.rows);
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let expected: Vec<String> = (0..files.len() as u32)
            .map(|p| Stage::part_path("job", 3, 2, p).to_string())
            .collect();
        assert_eq!(paths, expected);
        assert_eq!(staged_objects(&stage).await, expected);
        assert_eq!(
            std::fs::read_dir(spool.path()).unwrap().count(),
            0,
            "spool files deleted once staged"
        );
        for file in &files {
            let on_disk = stage
                .local_path(&object_store::path::Path::from(file.path.as_str()))
                .unwrap();
            let hash = backhaul_core::localfile::hash_file(&on_disk).unwrap();
            assert_eq!((hash.bytes, Some(hash.xxh3)), (file.bytes, file.xxh3), "{}", file.path);
        }
    }

    /// A local stage spools inside itself, so each finished part enters it by rename.
    #[tokio::test]
    async fn a_local_stage_takes_parts_by_rename_from_its_own_spool() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let stage = Stage::from_spec(&StageSpec::local(dir.path().join("stage")), "job.toml")
            .await
            .unwrap();
        let spool_root = stage.local_spool_dir("job", 3, 2).unwrap().unwrap();
        assert_eq!(
            spool_root,
            stage.local_path(&Stage::attempt_prefix("job", 3, 2)).unwrap()
        );
        let spool = tempfile::Builder::new()
            .prefix(".spool-")
            .tempdir_in(&spool_root)
            .unwrap();
        let part = spool.path().join("part-0000.parquet");
        std::fs::write(&part, b"PAR1 not really PAR1").unwrap();
        let inode = std::fs::metadata(&part).unwrap().ino();
        let spooled = SpooledPart {
            path: part.clone(),
            bytes: 20,
            rows: 1,
            xxh3: 0,
        };
        let path = Stage::part_path("job", 3, 2, 0);
        stage_part(&stage, &spooled, &path, &CancellationToken::new())
            .await
            .unwrap();
        let staged = stage.local_path(&path).unwrap();
        assert_eq!(std::fs::metadata(&staged).unwrap().ino(), inode, "renamed, not copied");
        assert!(!part.exists());
        assert_eq!(staged_objects(&stage).await, vec![path.to_string()]);
        // A killed writer's spool lies under the chunk's prefix, so the chunk's clean-up
        // after its commit takes it, and the directories it leaves empty.
        std::fs::write(spool.path().join("part-0001.parquet"), b"half").unwrap();
        let _ = spool.keep();
        clean_stage(&stage, &Stage::chunk_prefix("job", 3)).await;
        assert_eq!(staged_objects(&stage).await, Vec::<String>::new());
        assert!(!dir.path().join("stage/job/chunk-000003").exists());
    }

    #[tokio::test]
    async fn a_failure_mid_chunk_leaves_no_part_staged() {
        let dir = tempfile::tempdir().unwrap();
        let stage = Stage::from_spec(&StageSpec::local(dir.path().join("stage")), "job.toml")
            .await
            .unwrap();
        let spool = tempfile::tempdir().unwrap();
        let source = Numbers::new(24, true);
        let staging = Staging {
            source: &source,
            schema: &source.schema,
            cursor: 0,
            split_min_rows: 0,
            stage: &stage,
            job_id: "job",
            file_size: 256 * 1024,
        };
        let e = staging
            .run(&task(), spool.path(), &ChunkProgress::default(), &ExtractNotes::new())
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("connection reset mid-chunk"),
            "the source's error wins: {e}"
        );
        assert_eq!(staged_objects(&stage).await, Vec::<String>::new());
        assert!(std::fs::read_dir(spool.path()).unwrap().count() <= 2);
    }
}
