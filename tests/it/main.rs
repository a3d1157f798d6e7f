//! The conformance suite run against the built-in connectors: the embedded SQLite source and
//! the local Parquet warehouse. Also checks that the suite itself catches broken connectors,
//! with wrappers that break one rule each.

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch, RecordBatchReader};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use backhaul_conformance::corrupt::{Corruption, TamperCommitted, corrupt, corruptions_for};
use backhaul_conformance::destination::{DestinationOptions, check_destination, check_destination_with};
use backhaul_conformance::source::check_source;
use backhaul_conformance::{cursor_values, evidence, stage_batches};
use backhaul_core::Result;
use backhaul_core::chunking::DensityBucket;
use backhaul_core::connector::{BatchStream, ChunkCommit, Destination, Source, TableDescription};
use backhaul_core::cursor::{CursorKind, CursorRange, SpecBound};
use backhaul_core::proof::{ChunkProof, ProofLevel};
use backhaul_core::stage::Stage;
use backhaul_sink_local::{LocalDestinationSpec, LocalTable};
use backhaul_source_embedded::{EmbeddedSource, EmbeddedSourceSpec, generator};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use tempfile::TempDir;

mod digests;
mod mysql;
mod postgres;
mod stage;

/// Generator parameters: fixed, so every run reads the same rows. Volume doubles yearly from
/// 2020, so 300 rows/day is about 2,400 rows/day in 2023: a few thousand rows per range.
const SEED: u64 = 7;
const ROWS_PER_DAY: u64 = 300;

/// Three days of 2023 with bounds inside days and hours, so partial density buckets and
/// partial hours are exercised.
fn created_range() -> CursorRange {
    CursorRange::new(micros("2023-03-14T06:30:00Z"), micros("2023-03-17T06:30:00Z"))
}

/// Three shipping days, in days since the epoch.
fn shipped_range() -> CursorRange {
    CursorRange::new(days("2023-03-14"), days("2023-03-17"))
}

fn micros(text: &str) -> i64 {
    SpecBound::parse(text)
        .unwrap()
        .to_cursor(CursorKind::Timestamp)
        .unwrap()
}

fn days(text: &str) -> i64 {
    SpecBound::parse(text).unwrap().to_cursor(CursorKind::Date).unwrap()
}

fn embedded(dir: &TempDir, cursor: &str) -> EmbeddedSource {
    EmbeddedSource::open(&EmbeddedSourceSpec {
        path: dir.path().join("orders.db"),
        table: "orders".into(),
        cursor: cursor.into(),
        rows_per_day: ROWS_PER_DAY,
        seed: SEED,
    })
    .unwrap()
}

async fn extract_all(source: &dyn Source, range: CursorRange) -> Vec<RecordBatch> {
    source.extract(range, 1_000).await.unwrap().try_collect().await.unwrap()
}

fn rows(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}

#[tokio::test]
async fn embedded_source_conforms_with_a_timestamp_cursor() {
    let dir = TempDir::new().unwrap();
    let source = embedded(&dir, "created_at");
    let report = check_source(&source, created_range()).await.unwrap();
    assert_eq!(report.description.cursor_kind, CursorKind::Timestamp);
    assert!(
        report.split_on_row,
        "a split point should sit on a row: {:?}",
        report.split_points
    );
    assert!(report.estimated_rows.is_some(), "the embedded source has statistics");
    assert!(
        !report.empty_ranges.is_empty(),
        "microsecond gaps between rows always exist"
    );
}

#[tokio::test]
async fn embedded_source_conforms_with_a_date_cursor_and_null_dates() {
    let dir = TempDir::new().unwrap();
    let source = embedded(&dir, "shipped_on");
    // Two thirds of the orders never ship; the suite fails on any NULL cursor it is handed.
    let report = check_source(&source, shipped_range()).await.unwrap();
    assert_eq!(report.description.cursor_kind, CursorKind::Date);
    assert!(report.split_on_row);
    assert!(
        report.split_points.len() >= 2,
        "three days still split twice: {:?}",
        report.split_points
    );
}

#[tokio::test]
async fn embedded_source_conforms_with_an_integer_cursor() {
    let dir = TempDir::new().unwrap();
    let source = embedded(&dir, "order_id");
    // order_id = hour index * ORDER_ID_STRIDE + row in hour: the same three days as ids.
    let hour = |t: &str| micros(t) / generator::HOUR_MICROS * generator::ORDER_ID_STRIDE;
    let range = CursorRange::new(hour("2023-03-14T06:00:00Z"), hour("2023-03-17T06:00:00Z"));
    let report = check_source(&source, range).await.unwrap();
    assert_eq!(report.description.cursor_kind, CursorKind::Integer);
    assert_eq!(
        report.rows,
        generator::expected_rows(
            SEED,
            ROWS_PER_DAY,
            CursorRange::new(micros("2023-03-14T06:00:00Z"), micros("2023-03-17T06:00:00Z"))
        )
    );
}

#[tokio::test]
async fn embedded_source_extracts_exactly_the_generated_rows() {
    let dir = TempDir::new().unwrap();
    let by_time = embedded(&dir, "created_at");
    let range = created_range();
    by_time.prepare(range).await.unwrap();
    let want = generator::expected_rows(SEED, ROWS_PER_DAY, range);
    assert!(want > 1_000, "the range should hold a few thousand rows, holds {want}");
    assert_eq!(rows(&extract_all(&by_time, range).await), want);

    // Shipping days trail creation days by up to MAX_SHIP_DELAY_DAYS; orders without a
    // shipping day are in no range.
    let by_day = embedded(&dir, "shipped_on");
    let range = shipped_range();
    by_day.prepare(range).await.unwrap();
    let day_micros = generator::DAY_MICROS;
    let created = CursorRange::new(
        (range.from - generator::MAX_SHIP_DELAY_DAYS) * day_micros,
        range.to * day_micros,
    );
    let (mut want, mut unshipped) = (0u64, 0u64);
    generator::generate(SEED, ROWS_PER_DAY, created, |o| match o.shipped_on {
        Some(d) => want += u64::from(range.from <= i64::from(d) && i64::from(d) < range.to),
        None => unshipped += 1,
    });
    assert!(
        want > 0 && unshipped > 0,
        "{want} shipped in range, {unshipped} never shipped"
    );
    assert_eq!(rows(&extract_all(&by_day, range).await), want);
}

struct Warehouse {
    _dir: TempDir,
    stage: Stage,
    spec: LocalDestinationSpec,
}

impl Warehouse {
    async fn new(dir: TempDir) -> Self {
        let stage = Stage::local(&dir.path().join("stage")).await.unwrap();
        let spec = LocalDestinationSpec {
            path: dir.path().join("warehouse"),
            table: "orders".into(),
            file_size: None,
            allow_small_files: true,
        };
        Warehouse { _dir: dir, stage, spec }
    }

    /// A new handle on the same table each call, as a restarted process would open it.
    fn make(&self) -> impl Fn() -> Arc<dyn Destination> + use<> {
        let spec = self.spec.clone();
        move || Arc::new(LocalTable::new(&spec).unwrap()) as Arc<dyn Destination>
    }
}

/// One day of real source rows: Timestamp(us, UTC), Decimal128(18,2), JSON-extension Utf8,
/// Date32 with NULLs, non-ASCII text.
async fn source_rows(dir: &TempDir) -> Vec<RecordBatch> {
    let source = embedded(dir, "created_at");
    let range = CursorRange::new(micros("2023-03-15T00:00:00Z"), micros("2023-03-16T00:00:00Z"));
    source.prepare(range).await.unwrap();
    extract_all(&source, range).await
}

#[tokio::test]
async fn local_destination_conforms() {
    let dir = TempDir::new().unwrap();
    let batches = source_rows(&dir).await;
    let warehouse = Warehouse::new(dir).await;
    let options = DestinationOptions {
        cursor_column: Some("created_at".into()),
        tamper: Some(Arc::new(RewriteCommittedFile(
            LocalTable::new(&warehouse.spec).unwrap(),
        ))),
        ..Default::default()
    };
    let report = check_destination_with(warehouse.make(), &warehouse.stage, batches.clone(), &options)
        .await
        .unwrap();
    assert_eq!(report.level, ProofLevel::ExactChecksum);
    assert_eq!(
        report.chunks[0].summary.rows + report.chunks[1].summary.rows,
        rows(&batches)
    );
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}

#[tokio::test]
async fn local_destination_replaces_by_key_in_dedup_mode() {
    let dir = TempDir::new().unwrap();
    let warehouse = Warehouse::new(dir).await;
    let root = warehouse.spec.path.clone();
    let read: backhaul_conformance::dedup::ReadTable = Arc::new(move || {
        let root = root.clone();
        Box::pin(async move { backhaul_sink_local::query(&root, "SELECT * FROM orders").await })
    });
    backhaul_conformance::dedup::check_dedup(warehouse.make()(), &warehouse.stage, read)
        .await
        .unwrap();
}

#[tokio::test]
async fn local_destination_conforms_with_rows_cut_by_position() {
    let dir = TempDir::new().unwrap();
    let batches = source_rows(&dir).await;
    let warehouse = Warehouse::new(dir).await;
    check_destination(warehouse.make(), &warehouse.stage, batches)
        .await
        .unwrap();
}

/// A source that loses rows whose cursor equals the lower bound: `(from, to)` instead of
/// `[from, to)`. Every read looks plausible; only a split exactly on a row shows it.
struct ExclusiveLowerBound(EmbeddedSource);

impl Source for ExclusiveLowerBound {
    fn describe(&self) -> BoxFuture<'_, Result<TableDescription>> {
        self.0.describe()
    }

    fn prepare(&self, range: CursorRange) -> BoxFuture<'_, Result<()>> {
        self.0.prepare(range)
    }

    fn density(&self, range: CursorRange) -> BoxFuture<'_, Result<Vec<DensityBucket>>> {
        self.0.density(range)
    }

    fn extract(&self, range: CursorRange, batch_rows: usize) -> BoxFuture<'_, Result<BatchStream>> {
        Box::pin(async move {
            let desc = self.0.describe().await?;
            let inner = self.0.extract(range, batch_rows).await?;
            let cursor = desc.cursor_column;
            Ok(inner
                .map(move |batch| {
                    let batch = batch?;
                    let values = cursor_values(batch.column_by_name(&cursor).unwrap().as_ref()).unwrap();
                    let keep: BooleanArray = values.iter().map(|v| Some(*v != Some(range.from))).collect();
                    Ok(filter_record_batch(&batch, &keep)?)
                })
                .boxed())
        })
    }
}

#[tokio::test]
async fn the_suite_catches_a_source_that_drops_rows_on_the_lower_bound() {
    let dir = TempDir::new().unwrap();
    let broken = ExclusiveLowerBound(embedded(&dir, "shipped_on"));
    let violations = check_source(&broken, shipped_range()).await.unwrap_err();
    assert!(violations.has("split"), "{violations}");
}

/// A destination that loses the attempt number, so nothing fences stale attempts.
struct NoFencing(LocalTable);

impl Destination for NoFencing {
    fn prepare(&self, job_id: &str, schema: SchemaRef) -> BoxFuture<'_, Result<backhaul_core::schema::SchemaChanges>> {
        self.0.prepare(job_id, schema)
    }

    fn proof_level(&self) -> ProofLevel {
        self.0.proof_level()
    }

    fn commit_chunk<'a>(&'a self, stage: &'a Stage, commit: &'a ChunkCommit) -> BoxFuture<'a, Result<ChunkProof>> {
        Box::pin(async move {
            self.0
                .commit_chunk(
                    stage,
                    &ChunkCommit {
                        attempt: 1,
                        ..commit.clone()
                    },
                )
                .await
        })
    }

    fn read_back(&self, job_id: &str, chunk_id: u64) -> BoxFuture<'_, Result<Option<ChunkProof>>> {
        self.0.read_back(job_id, chunk_id)
    }
}

#[tokio::test]
async fn the_suite_catches_a_destination_without_fencing() {
    let dir = TempDir::new().unwrap();
    let batches = source_rows(&dir).await;
    let warehouse = Warehouse::new(dir).await;
    let spec = warehouse.spec.clone();
    let make = move || Arc::new(NoFencing(LocalTable::new(&spec).unwrap())) as Arc<dyn Destination>;
    let violations = check_destination(make, &warehouse.stage, batches).await.unwrap_err();
    assert!(violations.has("fencing"), "{violations}");
    // Only fencing is broken; everything else must still pass.
    assert!(violations.items.iter().all(|v| v.check == "fencing"), "{violations}");
}

/// The local warehouse's tamper hook: rewrites the first data file of a committed chunk with
/// the corruption applied, behind the manifest's back.
struct RewriteCommittedFile(LocalTable);

impl TamperCommitted for RewriteCommittedFile {
    fn tamper<'a>(
        &'a self,
        _job_id: &'a str,
        chunk_id: u64,
        corruption: &'a Corruption,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let manifest = self
                .0
                .manifest(chunk_id)
                .map_err(|e| e.to_string())?
                .ok_or("the chunk is not committed")?;
            let file = manifest.files.first().ok_or("the chunk has no files")?;
            let path = self.0.dir().join("data").join(&file.name);
            let (schema, rows) = read_parquet(std::fs::File::open(&path).map_err(|e| e.to_string())?)?;
            let damaged = corrupt(&rows, corruption)?;
            let tmp = path.with_extension("tampered");
            std::fs::write(&tmp, write_parquet(&schema, &damaged)?).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
        })
    }
}

fn read_parquet<R: parquet::file::reader::ChunkReader + 'static>(
    input: R,
) -> std::result::Result<(SchemaRef, RecordBatch), String> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(input)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let rows = arrow::compute::concat_batches(&schema, &batches).map_err(|e| e.to_string())?;
    Ok((schema, rows))
}

fn write_parquet(schema: &SchemaRef, rows: &RecordBatch) -> std::result::Result<Vec<u8>, String> {
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), schema.clone(), None).map_err(|e| e.to_string())?;
    w.write(rows).map_err(|e| e.to_string())?;
    w.into_inner().map_err(|e| e.to_string())
}

/// How [`Corrupting`] damages what it commits.
#[derive(Debug, Clone, Copy)]
enum Damage {
    DropRow,
    DuplicateRow,
    AlterValue,
}

/// A broken destination: commits the staged rows with one row dropped, one duplicated or one
/// value altered, skipping the check against what was extracted, and reports honestly measured
/// proofs of what it committed.
struct Corrupting {
    inner: LocalTable,
    damage: Damage,
}

impl Destination for Corrupting {
    fn prepare(&self, job_id: &str, schema: SchemaRef) -> BoxFuture<'_, Result<backhaul_core::schema::SchemaChanges>> {
        self.inner.prepare(job_id, schema)
    }

    fn proof_level(&self) -> ProofLevel {
        self.inner.proof_level()
    }

    fn commit_chunk<'a>(&'a self, stage: &'a Stage, commit: &'a ChunkCommit) -> BoxFuture<'a, Result<ChunkProof>> {
        Box::pin(async move {
            if commit.files.is_empty() {
                return self.inner.commit_chunk(stage, commit).await;
            }
            let mut batches = Vec::new();
            let mut schema = None;
            for f in &commit.files {
                let path = object_store::path::Path::parse(&f.path).unwrap();
                let bytes = object_store::ObjectStoreExt::get(stage.store().as_ref(), &path)
                    .await?
                    .bytes()
                    .await?;
                let (s, rows) = read_parquet(bytes).unwrap();
                schema = Some(s);
                batches.push(rows);
            }
            let schema = schema.unwrap();
            let rows = arrow::compute::concat_batches(&schema, &batches)?;
            let damage = match self.damage {
                Damage::DropRow => Corruption::DropRow,
                Damage::DuplicateRow => Corruption::DuplicateRow,
                Damage::AlterValue => corruptions_for(&rows, None)
                    .0
                    .into_iter()
                    .find(|c| matches!(c, Corruption::ChangeNumber(_)))
                    .expect("a numeric column"),
            };
            let damaged = corrupt(&rows, &damage).unwrap();
            let files = stage_batches(
                stage,
                &commit.job_id,
                commit.chunk_id,
                commit.attempt,
                &schema,
                std::slice::from_ref(&damaged),
                commit.files.len(),
            )
            .await?;
            // Skip the check: claim the damaged rows were what was extracted.
            let claimed = evidence(&schema, std::slice::from_ref(&damaged))?;
            let honest = ChunkCommit {
                files,
                extracted: claimed,
                ..commit.clone()
            };
            self.inner.commit_chunk(stage, &honest).await
        })
    }

    fn read_back(&self, job_id: &str, chunk_id: u64) -> BoxFuture<'_, Result<Option<ChunkProof>>> {
        self.inner.read_back(job_id, chunk_id)
    }
}

#[tokio::test]
async fn the_suite_catches_a_destination_that_damages_rows() {
    for damage in [Damage::DropRow, Damage::DuplicateRow, Damage::AlterValue] {
        let dir = TempDir::new().unwrap();
        let batches = source_rows(&dir).await;
        let warehouse = Warehouse::new(dir).await;
        let spec = warehouse.spec.clone();
        let make = move || {
            Arc::new(Corrupting {
                inner: LocalTable::new(&spec).unwrap(),
                damage,
            }) as Arc<dyn Destination>
        };
        let violations = check_destination(make, &warehouse.stage, batches).await.unwrap_err();
        assert!(violations.has("commit"), "{damage:?}: {violations}");
    }
}

/// The local warehouse claiming only a weaker proof level: its proofs keep only what that
/// level carries. The suite must pass it at that level, and say what `count_only` cannot see.
struct AtLevel(LocalTable, ProofLevel);

impl AtLevel {
    fn weaken(&self, proof: ChunkProof) -> ChunkProof {
        ChunkProof {
            level: self.1,
            checksum: None,
            fingerprint: proof.fingerprint.filter(|_| self.1 == ProofLevel::Fingerprint),
            ..proof
        }
    }
}

impl Destination for AtLevel {
    fn prepare(&self, job_id: &str, schema: SchemaRef) -> BoxFuture<'_, Result<backhaul_core::schema::SchemaChanges>> {
        self.0.prepare(job_id, schema)
    }

    fn proof_level(&self) -> ProofLevel {
        self.1
    }

    fn commit_chunk<'a>(&'a self, stage: &'a Stage, commit: &'a ChunkCommit) -> BoxFuture<'a, Result<ChunkProof>> {
        Box::pin(async move { Ok(self.weaken(self.0.commit_chunk(stage, commit).await?)) })
    }

    fn read_back(&self, job_id: &str, chunk_id: u64) -> BoxFuture<'_, Result<Option<ChunkProof>>> {
        let read = self.0.read_back(job_id, chunk_id);
        Box::pin(async move { Ok(read.await?.map(|p| self.weaken(p))) })
    }
}

#[tokio::test]
async fn weaker_proof_levels_pass_at_their_level() {
    for level in [ProofLevel::Fingerprint, ProofLevel::CountOnly] {
        let dir = TempDir::new().unwrap();
        let batches = source_rows(&dir).await;
        let warehouse = Warehouse::new(dir).await;
        let spec = warehouse.spec.clone();
        let make = move || Arc::new(AtLevel(LocalTable::new(&spec).unwrap(), level)) as Arc<dyn Destination>;
        let options = DestinationOptions {
            cursor_column: Some("created_at".into()),
            tamper: Some(Arc::new(RewriteCommittedFile(
                LocalTable::new(&warehouse.spec).unwrap(),
            ))),
            ..Default::default()
        };
        let report = check_destination_with(make, &warehouse.stage, batches, &options)
            .await
            .unwrap();
        assert_eq!(report.level, level);
        if level == ProofLevel::CountOnly {
            // Its read_back cannot see a value changed after commit: noted, not required.
            assert!(
                report.notes.iter().any(|n| n.contains("cannot see")),
                "{:?}",
                report.notes
            );
        } else {
            assert!(report.notes.is_empty(), "{:?}", report.notes);
        }
    }
}
