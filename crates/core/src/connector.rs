//! The traits every source and destination implements.
//!
//! Connectors depend on this crate only. Each registers its kind with a
//! [`Registry`](crate::registry::Registry), which the binary hands to the coordinator (which
//! plans with [`Source::density`]) and to workers (which run chunks) as [`Connectors`].

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, SchemaRef};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::changes::MonthChanges;
use crate::chunking::{ChunkCap, DensityBucket, PhysicalOrder, PlannedChunk};
use crate::cursor::{CursorKind, CursorRange};
use crate::deletes::KeyDigest;
use crate::error::Result;
pub use crate::fidelity::DestinationType;
pub use crate::notes::{BreakerPhase, BreakerReport, ExtractFacts, ExtractNotes};
use crate::profile::{Activity, ActivityQuery};
use crate::proof::{ChunkEvidence, ChunkProof, ProofLevel};
use crate::ratelimit::RatePool;
pub use crate::registry::Connectors;
pub use crate::spec::SyncMode;
use crate::stage::Stage;

/// A stream of record batches, all of the described schema.
pub type BatchStream = BoxStream<'static, Result<RecordBatch>>;

/// The stream a source hands out when a task of its own reads and decodes rows into a bounded
/// channel: yields the channel's batches and, once the channel closes, reports a panic of that
/// task as an error naming `what` (e.g. `postgres extract`), so a crash never looks like the end
/// of the data. Dropping the stream drops the receiver, which stops the task at its next send.
pub fn channel_stream(
    rx: tokio::sync::mpsc::Receiver<Result<RecordBatch>>,
    task: tokio::task::JoinHandle<()>,
    what: &'static str,
) -> BatchStream {
    use futures::StreamExt;
    futures::stream::unfold((rx, Some(task)), move |(mut rx, task)| async move {
        if let Some(item) = rx.recv().await {
            return Some((item, (rx, task)));
        }
        match task?.await {
            Ok(()) => None,
            Err(e) => Some((
                Err(crate::Error::Internal(format!("{what} task failed: {e}"))),
                (rx, None),
            )),
        }
    })
    .boxed()
}

/// What a source knows about the table a job reads.
#[derive(Debug, Clone)]
pub struct TableDescription {
    /// Arrow schema of extracted batches, with exact types (see docs/types.md).
    pub schema: SchemaRef,
    /// The cursor column's name.
    pub cursor_column: String,
    /// The cursor column's kind; decides how range bounds are read.
    pub cursor_kind: CursorKind,
    /// Primary-key columns, empty when the table has none.
    pub key_columns: Vec<String>,
    /// Where each schema field came from, in schema order: the type-fidelity report is built
    /// from this.
    pub columns: Vec<ColumnOrigin>,
}

/// One extracted column as the source declares it, and any lossy step on its way to Arrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnOrigin {
    /// Column name (same as the Arrow field's).
    pub name: String,
    /// The type as the source declares it, e.g. `numeric(38,9)` or `timestamp with time zone`.
    pub source_type: String,
    /// A lossy conversion the user opted into for this column, e.g. `unconstrained numeric read
    /// as decimal(38,9): digits beyond scale 9 are an error`; `None` when the mapping is exact.
    pub lossy_step: Option<String>,
}

/// A table or stream rows are extracted from.
///
/// A new method, even one with a default, must also be forwarded by the wrapper in
/// [`crate::limit`] (a pipeline's connection limit), or sources in a pipeline answer with the
/// default.
pub trait Source: Send + Sync {
    /// Reads the table's schema and checks the cursor column exists and can bound chunks.
    fn describe(&self) -> BoxFuture<'_, Result<TableDescription>>;

    /// Makes the source ready to serve `range` (the embedded source seeds missing days).
    fn prepare(&self, _range: CursorRange) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Estimated rows and bytes over `range`, from statistics; never counts the table.
    fn density(&self, range: CursorRange) -> BoxFuture<'_, Result<Vec<DensityBucket>>>;

    /// How the cursor column follows the table's physical row order, from statistics (never
    /// counting rows), so the planner can estimate how much of the table each chunk's range
    /// query reads. `None` (the default) when the source cannot tell.
    fn physical_order(&self) -> BoxFuture<'_, Result<Option<PhysicalOrder>>> {
        Box::pin(async { Ok(None) })
    }

    /// The newest finite cursor value in the table now, in cursor units (µs, days or the
    /// integer), with one cheap query (an index on the cursor answers it). A sync compares it
    /// with the newest value already loaded to catch a cursor that went backwards. `None` (the
    /// default) when the source cannot tell, or the table is empty.
    fn max_cursor(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async { Ok(None) })
    }

    /// Streams the rows with `from <= cursor < to`, in batches of about `batch_rows` rows.
    fn extract(&self, range: CursorRange, batch_rows: usize) -> BoxFuture<'_, Result<BatchStream>>;

    /// [`Source::extract`] that also notes facts of this range's extraction in `notes` (e.g.
    /// records refused into a dead-letter file); they are complete once the stream has ended.
    /// The default notes nothing: only a source with such facts overrides it.
    fn extract_with_notes(
        &self,
        range: CursorRange,
        batch_rows: usize,
        notes: ExtractNotes,
    ) -> BoxFuture<'_, Result<BatchStream>> {
        drop(notes);
        self.extract(range, batch_rows)
    }

    /// The state of the source's circuit breaker now, for `status`; `None` (the default) for
    /// a source without one.
    fn circuit_breaker(&self) -> Option<BreakerReport> {
        None
    }

    /// Change activity over `query.window`, for the cost planner; `None` (the default) when the
    /// source cannot tell cheaply. The planner then samples with [`Source::extract`] or reports
    /// upper bounds. Read-only and bounded in time: never a full scan unless the source keeps
    /// the answer (statistics, a change log, or an append-only guarantee).
    fn activity(&self, _query: ActivityQuery) -> BoxFuture<'_, Result<Option<Activity>>> {
        Box::pin(async { Ok(None) })
    }

    /// For a source that reads an API: its page size and rate pool, so `cost` can say how many
    /// requests a backfill takes and how long at the pool's rate. `None` (the default) for
    /// databases and files.
    fn request_profile(&self) -> Option<RequestProfile> {
        None
    }

    /// Whether this source answers [`Source::key_digest`], [`Source::list_keys`] and
    /// [`Source::existing_keys`] for hard-delete detection (`sync.deletes`). The planner asks
    /// once and refuses the spec when not. Default: no.
    fn supports_delete_detection(&self) -> bool {
        false
    }

    /// Count and hash sum of the canonical key texts of the rows with cursor in `range`
    /// (`backhaul_core::deletes`), in one query.
    fn key_digest<'a>(&'a self, _range: CursorRange, _keys: &'a [String]) -> BoxFuture<'a, Result<KeyDigest>> {
        Box::pin(async { Err(unsupported("key digests")) })
    }

    /// The canonical key texts of the rows with cursor in `range`.
    fn list_keys<'a>(&'a self, _range: CursorRange, _keys: &'a [String]) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async { Err(unsupported("key listings")) })
    }

    /// Which of `candidates` (canonical key texts) exist in the table, whatever their cursor.
    fn existing_keys<'a>(
        &'a self,
        _keys: &'a [String],
        _candidates: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async { Err(unsupported("key lookups")) })
    }
}

fn unsupported(what: &str) -> crate::Error {
    crate::Error::Internal(format!(
        "{what} are not supported by this connector (checked at plan time)"
    ))
}

/// What an API source's requests carry, for the cost planner: requests per backfill, and how
/// long they take at the pool's rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestProfile {
    /// Records one request returns (the page size), when the spec says.
    pub records_per_request: Option<u64>,
    /// The rate-limit pool every request draws from, if any.
    pub pool: Option<RatePool>,
}

/// A Parquet file waiting in the stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    /// Path inside the stage.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Rows in the file.
    pub rows: u64,
    /// xxh3-64 of the file's bytes, computed by the writer while it wrote them (`None` from
    /// writers that do not). A destination that receives the bytes can check them against it
    /// instead of decoding the file; see [`crate::localfile`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xxh3: Option<u64>,
}

impl StagedFile {
    /// The content hash the writer recorded, if any.
    pub fn content_hash(&self) -> Option<crate::localfile::ContentHash> {
        self.xxh3.map(|xxh3| crate::localfile::ContentHash {
            bytes: self.bytes,
            xxh3,
        })
    }
}

/// Everything a destination needs to commit one chunk.
#[derive(Debug, Clone)]
pub struct ChunkCommit {
    /// The job.
    pub job_id: String,
    /// The chunk's index in the job's plan.
    pub chunk_id: u64,
    /// The lease attempt that produced the files; a commit never replaces a newer attempt.
    pub attempt: u32,
    /// The chunk's cursor range.
    pub range: CursorRange,
    /// The source's cursor column: a warehouse replaces the chunk's rows by deleting
    /// `range` over this column.
    pub cursor_column: String,
    /// The staged files, in part order.
    pub files: Vec<StagedFile>,
    /// Rows, checksum and fingerprint the writer measured while encoding the files.
    pub extracted: ChunkEvidence,
    /// How a sync job's rows land (`None` for a job without `[sync]`: a plain backfill chunk).
    pub sync: Option<SyncCommit>,
}

/// The `[sync]` of a chunk's job, as a destination needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncCommit {
    /// `append`: the chunk's rows as they are (a plain commit). `dedup`: after the commit the
    /// table holds exactly the newest version (by cursor) of each key, across all chunks.
    pub mode: SyncMode,
    /// The primary key (never empty in `dedup` mode).
    pub key_columns: Vec<String>,
    /// `sync.metadata_columns`: the table shows `_backhaul_deleted` and `_backhaul_synced_at`.
    pub metadata_columns: bool,
}

/// A remark of a destination about a plan, shown by `plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanNote {
    /// The plan exceeds a limit (or comes close): the message says what to change.
    pub warning: bool,
    /// What the plan uses, e.g. `3 load jobs (one per chunk) of BigQuery's 1,500 per table per day`.
    pub message: String,
}

/// A table rows are loaded into.
pub trait Destination: Send + Sync {
    /// Creates the table for `job_id`, or checks an existing one belongs to that job and makes
    /// it follow `schema` as far as the destination can ([`crate::schema::SchemaChanges`]: the
    /// one rule of added, dropped and retyped columns), refusing the rest before changing
    /// anything. Returns what changed (empty for a new table or the same schema), for the run's
    /// report.
    fn prepare(&self, job_id: &str, schema: SchemaRef) -> BoxFuture<'_, Result<crate::schema::SchemaChanges>>;

    /// What this destination proves about a committed chunk. Constant for a destination: the
    /// coordinator records it with every chunk, and `verify` re-checks at the same level.
    fn proof_level(&self) -> ProofLevel;

    /// Atomically makes exactly the commit's files the chunk's data, replacing any earlier
    /// attempt, and returns the proof measured from what is now committed, at
    /// [`Destination::proof_level`].
    ///
    /// Contract (checked by the conformance suite): a commit of an attempt *older* than the
    /// committed one is refused (ideally `Error::LeaseLost`) and changes nothing; the *same*
    /// attempt committed again replaces its own data (a retried commit is idempotent); a commit
    /// whose data, as it would be committed, fails [`ChunkProof::check`] against `extracted` is
    /// refused with `Error::VerificationFailed` and changes nothing. The returned proof passes
    /// that check (callers check it again: one rule, applied everywhere).
    fn commit_chunk<'a>(&'a self, stage: &'a Stage, commit: &'a ChunkCommit) -> BoxFuture<'a, Result<ChunkProof>>;

    /// The proof of a committed chunk at [`Destination::proof_level`], measured from the
    /// committed data now (never from what was recorded at commit time); `None` when the chunk
    /// has never been committed, including before `prepare` was ever called.
    fn read_back(&self, job_id: &str, chunk_id: u64) -> BoxFuture<'_, Result<Option<ChunkProof>>>;

    /// How the destination stores `field`, and what is lost doing so, for the type-fidelity
    /// report. The default names the Arrow type and loses nothing.
    fn column_type(&self, field: &Field) -> DestinationType {
        DestinationType {
            name: field.data_type().to_string(),
            lossy_step: None,
        }
    }

    /// What the planned chunks use of this destination's quotas (e.g. load jobs per table per
    /// day), for `plan` to show; warnings say what to change. Pure: no IO. The default says
    /// nothing.
    fn plan_notes(&self, _chunks: &[PlannedChunk]) -> Vec<PlanNote> {
        Vec::new()
    }

    /// The most chunks one job may have here, when a quota counts commits (e.g. table
    /// modifications per table per day): the planner makes chunks larger to stay within it and
    /// says so in `plan`. Pure: no IO. The default is no cap.
    fn chunk_cap(&self) -> Option<ChunkCap> {
        None
    }

    /// Refuses a stage this destination cannot load from (a BigQuery load job needs `gs://`),
    /// at plan time, before any chunk runs. The error should name the spec key `stage.url`
    /// (`Error::config("<spec>", "stage.url", …)`: the planner puts in the spec file's name). The default
    /// accepts every stage.
    fn check_stage(&self, _stage: &Stage) -> Result<()> {
        Ok(())
    }

    /// Whether this destination commits chunks of a `[sync]` job in `mode`. The planner asks
    /// once and refuses the spec (naming `sync.mode`) when not. The default supports `append`,
    /// which is a plain chunk commit; `dedup` needs a replace-by-key of the destination's own.
    fn supports_sync_mode(&self, mode: SyncMode) -> bool {
        mode == SyncMode::Append
    }

    /// Whether this destination adds the `_backhaul_deleted` and `_backhaul_synced_at` columns
    /// (`sync.metadata_columns`). The planner refuses the key when not. Default: no.
    fn supports_metadata_columns(&self) -> bool {
        false
    }

    /// Whether this destination answers [`Destination::key_digest`], [`Destination::list_keys`]
    /// and [`Destination::mark_deleted`] (`sync.deletes = "soft"`). Default: no.
    fn supports_delete_detection(&self) -> bool {
        false
    }

    /// Count and hash sum of the canonical key texts of the job's current, not deleted rows
    /// (the newest version of each key) whose cursor is in `range` (`backhaul_core::deletes`).
    fn key_digest<'a>(
        &'a self,
        _job_id: &'a str,
        _range: CursorRange,
        _keys: &'a [String],
    ) -> BoxFuture<'a, Result<KeyDigest>> {
        Box::pin(async { Err(unsupported("key digests")) })
    }

    /// The canonical key texts of the rows [`Destination::key_digest`] counts.
    fn list_keys<'a>(
        &'a self,
        _job_id: &'a str,
        _range: CursorRange,
        _keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async { Err(unsupported("key listings")) })
    }

    /// Marks the current rows of `deleted` (canonical key texts) deleted (`_backhaul_deleted`),
    /// atomically; a newer version committed later un-deletes a key. Returns the rows marked.
    fn mark_deleted<'a>(
        &'a self,
        _job_id: &'a str,
        _keys: &'a [String],
        _deleted: &'a [String],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async { Err(unsupported("soft deletes")) })
    }

    /// Rows the job's commits inserted, updated and deleted per calendar month (UTC), for
    /// `cost --actual`; `None` (the default) when the destination does not record them.
    fn monthly_changes<'a>(&'a self, _job_id: &'a str) -> BoxFuture<'a, Result<Option<Vec<MonthChanges>>>> {
        Box::pin(async { Ok(None) })
    }
}
