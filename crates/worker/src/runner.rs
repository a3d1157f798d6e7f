//! Running one chunk: extract → Parquet parts → stage → destination commit → verified output.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use backhaul_core::Error;
use backhaul_core::connector::{ChunkCommit, Connectors, Destination, Source, StagedFile, TableDescription};
use backhaul_core::cursor::CursorRange;
use backhaul_core::proof::{ChunkEvidence, ChunkProof};
use backhaul_core::registry::StagingPreferences;
use backhaul_core::spec::{JobSpec, ValidatedSpec};
use backhaul_core::stage::Stage;
use futures::StreamExt;
use object_store::{ObjectStoreExt, WriteMultipart};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::error::{Result, WorkerError};
use crate::writer::{PartWriterConfig, SpooledPart, write_parts};

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
}

impl JobContext {
    /// Builds the context from the spec TOML a lease carries.
    pub async fn build(job_id: &str, spec_toml: &str, base_dir: &Path, connectors: &dyn Connectors) -> Result<Self> {
        let origin = format!("job {job_id}");
        let spec = JobSpec::from_toml(spec_toml, &origin)?;
        let mut checked = connectors.check(&spec, &origin)?;
        checked.resolve_paths(base_dir);
        let stage = Stage::local(&checked.spec.stage.path).await?;
        let source = checked.source.build()?;
        let table = source.describe().await?;
        let destination = checked.destination.build()?;
        Ok(JobContext {
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
}

/// Live counters of a running chunk, read by heartbeats and progress bars.
#[derive(Debug, Default)]
pub struct ChunkProgress {
    /// Rows extracted so far.
    pub rows: AtomicU64,
    /// Parquet bytes written so far.
    pub bytes: AtomicU64,
}

/// Rows per extracted batch: large enough to amortize per-batch costs, small enough that the
/// channel's few batches in flight stay a few MB.
pub const BATCH_ROWS: usize = 8192;

/// Runs the chunk end to end. `spool_root` holds the local part files until they are staged.
pub async fn run_chunk(
    ctx: &JobContext,
    task: &ChunkTask,
    spool_root: &Path,
    progress: Arc<ChunkProgress>,
) -> Result<ChunkOutcome> {
    let spool = tempfile::Builder::new()
        .prefix(&format!("{}-c{:06}-", ctx.job_id, task.chunk_id))
        .tempdir_in(spool_root)
        .map_err(|e| Error::io(spool_root, e))?;
    let config = PartWriterConfig {
        target_file_bytes: ctx.staging.file_size,
        zstd_level: 3,
    };
    let (tx, rx) = mpsc::channel::<RecordBatch>(4);
    let schema = ctx.table.schema.clone();
    let dir: PathBuf = spool.path().to_path_buf();
    let written = Arc::new(AtomicU64::new(0));
    let written_for_writer = written.clone();
    let writer = tokio::task::spawn_blocking(move || write_parts(rx, schema, &dir, &config, written_for_writer));

    let mut stream = ctx.source.extract(task.range, BATCH_ROWS).await?;
    let feed: Result<()> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            progress.rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            progress.bytes.store(written.load(Ordering::Relaxed), Ordering::Relaxed);
            if let Some(diff) = backhaul_core::schema::schema_difference(&ctx.table.schema, &batch.schema()) {
                return Err(Error::TypeFidelity(format!(
                    "the source produced rows unlike its described schema: {diff}"
                ))
                .into());
            }
            if tx.send(batch).await.is_err() {
                // The writer stopped early; its own error is reported below.
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written_result = writer.await.map_err(|e| WorkerError::Task(e.to_string()))?;
    feed?;
    let (parts, extracted) = written_result?;
    progress.bytes.store(written.load(Ordering::Relaxed), Ordering::Relaxed);

    let mut files = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let path = Stage::part_path(&ctx.job_id, task.chunk_id, task.attempt, i as u32);
        upload(&ctx.stage, part, &path).await?;
        files.push(StagedFile {
            path: path.to_string(),
            bytes: part.bytes,
            rows: part.rows,
        });
    }
    drop(spool);

    let commit = ChunkCommit {
        job_id: ctx.job_id.clone(),
        chunk_id: task.chunk_id,
        attempt: task.attempt,
        range: task.range,
        files: files.clone(),
        extracted,
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
    })
}

async fn clean_stage(stage: &Stage, prefix: &object_store::path::Path) {
    let mut listing = stage.store().list(Some(prefix));
    while let Some(Ok(meta)) = listing.next().await {
        if let Err(e) = stage.store().delete(&meta.location).await {
            tracing::debug!(path = %meta.location, error = %e, "could not delete staged file");
        }
    }
}

/// Streams a spooled file into the stage with a multipart upload, so memory stays at a few
/// parts whatever the file size. Local stages publish the object atomically on completion.
async fn upload(stage: &Stage, part: &SpooledPart, path: &object_store::path::Path) -> Result<()> {
    const PIECE: usize = 8 * 1024 * 1024;
    let upload = stage.store().put_multipart(path).await.map_err(Error::from)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PIECE);
    let mut file = tokio::fs::File::open(&part.path)
        .await
        .map_err(|e| Error::io(&part.path, e))?;
    let mut buf = vec![0u8; PIECE];
    loop {
        let n = file.read(&mut buf).await.map_err(|e| Error::io(&part.path, e))?;
        if n == 0 {
            break;
        }
        writer.wait_for_capacity(4).await.map_err(Error::from)?;
        writer.write(&buf[..n]);
    }
    writer.finish().await.map_err(Error::from)?;
    Ok(())
}
