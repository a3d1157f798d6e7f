use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::spec::LocalDestinationSpec;
use arrow::array::{Array, Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use backhaul_core::Error;
use backhaul_core::checksum::RowChecksum;
use backhaul_core::connector::{ChunkCommit, Destination, StagedFile};
use backhaul_core::cursor::CursorRange;
use backhaul_core::fingerprint::FingerprintBuilder;
use backhaul_core::localfile::hash_file;
use backhaul_core::proof::{ChunkEvidence, ChunkProof, ProofLevel};
use backhaul_core::schema::schema_difference;
use backhaul_core::stage::Stage;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::*;

const JOB: &str = "job1";

fn schema() -> SchemaRef {
    let json = HashMap::from([("ARROW:extension:name".to_string(), "arrow.json".to_string())]);
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("amount", DataType::Decimal128(18, 2), true),
        Field::new("doc", DataType::Utf8, true).with_metadata(json),
        Field::new("name", DataType::Utf8, true),
    ]))
}

fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let ids: Vec<i64> = ids.collect();
    let amount = Decimal128Array::from(
        ids.iter()
            .map(|i| (i % 3 != 0).then_some(i128::from(i * 101)))
            .collect::<Vec<_>>(),
    )
    .with_precision_and_scale(18, 2)
    .unwrap();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(
                TimestampMicrosecondArray::from(ids.iter().map(|i| 1_700_000_000_000_000 + i).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(amount),
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| Some(format!("{{\"n\": {i},\n \"tag\": \"a b\"}}")))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| (i % 2 == 0).then(|| format!("name-{i}")))
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

fn evidence(batches: &[RecordBatch]) -> ChunkEvidence {
    let schema = batches.first().map_or_else(schema, |b| b.schema());
    let mut c = RowChecksum::new(&schema).unwrap();
    let mut f = FingerprintBuilder::new(&schema);
    batches.iter().for_each(|b| {
        c.update(b).unwrap();
        f.update(b).unwrap();
    });
    ChunkEvidence {
        summary: c.summary(),
        fingerprint: f.finish(),
    }
}

/// The proof the warehouse gives for `batches`.
fn proof(batches: &[RecordBatch]) -> ChunkProof {
    ChunkProof::from_evidence(ProofLevel::ExactChecksum, &evidence(batches))
}

fn parquet_bytes(batches: &[RecordBatch]) -> Vec<u8> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let schema = batches.first().map_or_else(schema, |b| b.schema());
    let mut w = ArrowWriter::try_new(Vec::new(), schema, Some(props)).unwrap();
    batches.iter().for_each(|b| w.write(b).unwrap());
    w.into_inner().unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    stage: Stage,
    root: PathBuf,
    table: LocalTable,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let stage = Stage::local(&dir.path().join("stage")).await.unwrap();
    let spec = LocalDestinationSpec {
        path: dir.path().join("wh"),
        table: "t".into(),
        file_size: None,
        allow_small_files: true,
    };
    let table = LocalTable::new(&spec).unwrap();
    table.prepare(JOB, schema()).await.unwrap();
    let root = std::fs::canonicalize(dir.path().join("wh")).unwrap();
    Fixture {
        _dir: dir,
        stage,
        root,
        table,
    }
}

impl Fixture {
    /// Stages one file per element of `parts` and builds the commit, with the true summary.
    async fn staged(&self, chunk: u64, attempt: u32, parts: &[Vec<RecordBatch>]) -> ChunkCommit {
        let mut files = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let bytes = parquet_bytes(part);
            let path = Stage::part_path(JOB, chunk, attempt, i as u32);
            let len = bytes.len() as u64;
            self.stage.store().put(&path, PutPayload::from(bytes)).await.unwrap();
            files.push(StagedFile {
                path: path.to_string(),
                bytes: len,
                rows: part.iter().map(|b| b.num_rows() as u64).sum(),
                xxh3: None,
            });
        }
        let all: Vec<RecordBatch> = parts.iter().flatten().cloned().collect();
        ChunkCommit {
            job_id: JOB.into(),
            chunk_id: chunk,
            attempt,
            range: CursorRange::new(0, 10),
            cursor_column: "id".into(),
            files,
            extracted: evidence(&all),
            sync: None,
        }
    }

    /// `commit` as a worker's writer stages it: each file with the hash of its bytes.
    fn hashed(&self, mut commit: ChunkCommit) -> ChunkCommit {
        for file in &mut commit.files {
            file.xxh3 = Some(hash_file(&self.staged_path(file)).unwrap().xxh3);
        }
        commit
    }

    fn staged_path(&self, file: &StagedFile) -> PathBuf {
        self.stage
            .local_path(&object_store::path::Path::parse(&file.path).unwrap())
            .unwrap()
    }

    fn data_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("t/data"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    async fn count(&self) -> i64 {
        let batches = query(&self.root, "SELECT count(*) FROM t").await.unwrap();
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    }
}

#[tokio::test]
async fn prepare_is_idempotent_and_detects_conflicts() {
    let f = fixture().await;
    f.table.prepare(JOB, schema()).await.unwrap();

    let e = f.table.prepare("job2", schema()).await.unwrap_err();
    assert!(matches!(e, Error::DestinationConflict(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("`t`") && msg.contains("`job1`") && msg.contains(&f.root.join("t").display().to_string()),
        "{msg}"
    );

    let mut fields: Vec<Field> = schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[2] = Field::new("amount", DataType::Decimal128(20, 2), true);
    let e = f.table.prepare(JOB, Arc::new(Schema::new(fields))).await.unwrap_err();
    assert!(matches!(e, Error::DestinationConflict(_)), "{e:?}");
    assert!(e.to_string().contains("amount"), "{e}");

    // Dropping the JSON extension metadata is a type change too.
    let mut fields: Vec<Field> = schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[3] = Field::new("doc", DataType::Utf8, true);
    let e = f.table.prepare(JOB, Arc::new(Schema::new(fields))).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("Utf8 (arrow.json) at the destination, Utf8 in the source"),
        "{e}"
    );
    assert_eq!(
        f.table.meta().unwrap().unwrap().schema().unwrap(),
        schema(),
        "a refused prepare changes nothing"
    );
}

/// The source after `name` was dropped and `note` added.
fn evolved_batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let old = batch(ids.clone());
    let kept = old.project(&[0, 1, 2, 3]).unwrap();
    let mut fields: Vec<Field> = kept.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("note", DataType::Utf8, false));
    let mut columns = kept.columns().to_vec();
    columns.push(Arc::new(StringArray::from(
        ids.map(|i| format!("note-{i}")).collect::<Vec<_>>(),
    )));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

#[tokio::test]
async fn the_table_follows_added_and_dropped_columns_and_every_chunk_still_proves() {
    let f = fixture().await;
    let before = vec![vec![batch(0..10)]];
    let first = f.staged(0, 1, &before).await;
    f.table.commit_chunk(&f.stage, &first).await.unwrap();

    let evolved = evolved_batch(10..20).schema();
    let changes = f.table.prepare(JOB, evolved.clone()).await.unwrap();
    assert_eq!(
        (changes.added, changes.dropped),
        (vec!["note".to_string()], vec!["name".to_string()])
    );
    let table = f.table.meta().unwrap().unwrap().schema().unwrap();
    let columns: Vec<(&str, bool)> = table
        .fields()
        .iter()
        .map(|c| (c.name().as_str(), c.is_nullable()))
        .collect();
    assert_eq!(
        columns,
        [
            ("id", false),
            ("ts", false),
            ("amount", true),
            ("doc", true),
            ("name", true),
            ("note", true)
        ]
    );
    // Preparing again with the same source changes nothing more, and reports nothing.
    let again = f.table.prepare(JOB, evolved).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(f.table.meta().unwrap().unwrap().dropped_columns, ["name"]);

    let after = vec![vec![evolved_batch(10..20)]];
    let second = f.staged(1, 1, &after).await;
    assert_eq!(f.table.commit_chunk(&f.stage, &second).await.unwrap(), proof(&after[0]));

    // Old rows read the added column as NULL, new rows the dropped one.
    let batches = query(&f.root, "SELECT count(*), count(name), count(note), min(note) FROM t")
        .await
        .unwrap();
    let counts: Vec<i64> = (0..3)
        .map(|i| {
            batches[0]
                .column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0)
        })
        .collect();
    assert_eq!(counts, [20, 5, 10]);
    let min_note = batches[0]
        .column(3)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value(0)
        .to_string();
    assert_eq!(min_note, "note-10");

    // Each chunk proves against what it extracted, in its own columns.
    assert_eq!(f.table.read_back(JOB, 0).await.unwrap(), Some(proof(&before[0])));
    assert_eq!(f.table.read_back(JOB, 1).await.unwrap(), Some(proof(&after[0])));

    // A chunk with a column the table never got (added after the last prepare) is refused,
    // naming it, and nothing is committed.
    let extra = evolved_batch(20..30);
    let mut fields: Vec<Field> = extra.schema().fields().iter().map(|c| c.as_ref().clone()).collect();
    fields.push(Field::new("late", DataType::Int64, false));
    let mut columns = extra.columns().to_vec();
    columns.push(Arc::new(Int64Array::from(vec![1; 10])));
    let late = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let refused = f.staged(2, 1, &[vec![late]]).await;
    let e = f.table.commit_chunk(&f.stage, &refused).await.unwrap_err();
    assert!(matches!(e, Error::DestinationConflict(_)), "{e:?}");
    assert!(e.to_string().contains("column `late` is not in the table"), "{e}");
    assert_eq!(f.table.manifest(2).unwrap(), None);
    assert_eq!(f.count().await, 20);
}

#[tokio::test]
async fn commit_then_read_back_matches_input() {
    let f = fixture().await;
    let parts = vec![vec![batch(0..50), batch(50..70)], vec![batch(70..100)]];
    let commit = f.staged(0, 1, &parts).await;
    let committed = f.table.commit_chunk(&f.stage, &commit).await.unwrap();
    let all: Vec<RecordBatch> = parts.iter().flatten().cloned().collect();
    assert_eq!(committed, proof(&all));
    assert_eq!(committed.rows, 100);
    assert_eq!(committed.check(&commit.extracted), Ok(()));
    assert_eq!(f.table.read_back(JOB, 0).await.unwrap(), Some(proof(&all)));
    assert_eq!(f.table.read_back(JOB, 1).await.unwrap(), None);
    assert!(matches!(
        f.table.read_back("other", 0).await,
        Err(Error::DestinationConflict(_))
    ));

    assert_eq!(
        f.data_files(),
        vec!["job1-c000000-a001-p0000.parquet", "job1-c000000-a001-p0001.parquet"]
    );
    let s = table_summary(&f.root, "t").unwrap();
    assert_eq!((s.chunks, s.files, s.rows), (1, 2, 100));
    assert_eq!(s.bytes, commit.files.iter().map(|f| f.bytes).sum::<u64>());
    assert_eq!(f.count().await, 100);
    let m = f.table.manifest(0).unwrap().unwrap();
    assert_eq!(
        (m.attempt, m.committed, m.extracted),
        (1, commit.extracted.summary, commit.extracted.summary)
    );
}

#[tokio::test]
async fn new_attempt_replaces_files() {
    let f = fixture().await;
    let c1 = f.staged(3, 1, &[vec![batch(0..100)]]).await;
    f.table.commit_chunk(&f.stage, &c1).await.unwrap();
    let other = f.staged(4, 1, &[vec![batch(100..110)]]).await;
    f.table.commit_chunk(&f.stage, &other).await.unwrap();
    assert_eq!(f.count().await, 110);

    let c2 = f.staged(3, 2, &[vec![batch(0..40)], vec![batch(40..100)]]).await;
    assert_eq!(
        f.table.commit_chunk(&f.stage, &c2).await.unwrap(),
        ChunkProof::from_evidence(ProofLevel::ExactChecksum, &c2.extracted)
    );
    assert_eq!(f.count().await, 110);
    assert_eq!(
        f.data_files(),
        vec![
            "job1-c000003-a002-p0000.parquet",
            "job1-c000003-a002-p0001.parquet",
            "job1-c000004-a001-p0000.parquet"
        ]
    );
    let files = committed_files(&f.root, "t").unwrap();
    assert_eq!(files.len(), 3);
    assert!(files.iter().all(|p| p.is_file()));

    // Re-committing the same attempt (a retried call) is allowed and changes nothing visible.
    assert_eq!(
        f.table.commit_chunk(&f.stage, &c2).await.unwrap(),
        ChunkProof::from_evidence(ProofLevel::ExactChecksum, &c2.extracted)
    );
    assert_eq!(f.count().await, 110);
    assert_eq!(f.data_files().len(), 3);
}

#[tokio::test]
async fn stale_attempt_is_refused() {
    let f = fixture().await;
    let c2 = f.staged(0, 2, &[vec![batch(0..10)]]).await;
    f.table.commit_chunk(&f.stage, &c2).await.unwrap();
    let before = (f.table.manifest(0).unwrap(), f.data_files());

    let c1 = f.staged(0, 1, &[vec![batch(0..10), batch(10..20)]]).await;
    let e = f.table.commit_chunk(&f.stage, &c1).await.unwrap_err();
    match &e {
        Error::LeaseLost { lease_id, .. } => assert_eq!(lease_id, "job1/0/1"),
        other => panic!("{other:?}"),
    }
    assert_eq!((f.table.manifest(0).unwrap(), f.data_files()), before);
    assert_eq!(f.count().await, 10);
}

#[tokio::test]
async fn verification_mismatch_commits_nothing() {
    let f = fixture().await;
    let c1 = f.staged(0, 1, &[vec![batch(0..10)]]).await;
    f.table.commit_chunk(&f.stage, &c1).await.unwrap();
    let before = (f.table.manifest(0).unwrap(), f.data_files());

    let mut c2 = f.staged(0, 2, &[vec![batch(0..11)]]).await;
    c2.extracted.summary.checksum ^= 1;
    let e = f.table.commit_chunk(&f.stage, &c2).await.unwrap_err();
    assert!(matches!(e, Error::VerificationFailed { .. }), "{e:?}");
    assert_eq!((f.table.manifest(0).unwrap(), f.data_files()), before);
    assert_eq!(
        f.table.read_back(JOB, 0).await.unwrap(),
        Some(ChunkProof::from_evidence(ProofLevel::ExactChecksum, &c1.extracted))
    );
}

#[tokio::test]
async fn orphan_files_are_not_queried() {
    let f = fixture().await;
    let c = f.staged(0, 1, &[vec![batch(0..10)]]).await;
    f.table.commit_chunk(&f.stage, &c).await.unwrap();
    std::fs::write(
        f.root.join("t/data/job1-c000009-a001-p0000.parquet"),
        parquet_bytes(&[batch(0..1000)]),
    )
    .unwrap();
    assert_eq!(f.count().await, 10);
    assert_eq!(committed_files(&f.root, "t").unwrap().len(), 1);
}

#[tokio::test]
async fn exact_types_survive() {
    let f = fixture().await;
    let c = f.staged(0, 1, &[vec![batch(0..10)]]).await;
    f.table.commit_chunk(&f.stage, &c).await.unwrap();
    let file = std::fs::File::open(&committed_files(&f.root, "t").unwrap()[0]).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    assert_eq!(schema_difference(&schema(), builder.schema()), None);
    assert_eq!(builder.schema().fields(), schema().fields());

    let out = query_with_schema(&f.root, "SELECT * FROM t ORDER BY id").await.unwrap();
    let types: Vec<&DataType> = out.schema.fields().iter().map(|f| f.data_type()).collect();
    let expected = schema();
    assert_eq!(
        types,
        expected.fields().iter().map(|f| f.data_type()).collect::<Vec<_>>()
    );
    assert_eq!(out.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
    let amount = out.batches[0]
        .column(2)
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .unwrap();
    assert_eq!((amount.is_null(0), amount.value(1)), (true, 101));
}

#[tokio::test]
async fn empty_table_is_queryable() {
    let f = fixture().await;
    assert_eq!(f.count().await, 0);
    let out = query_with_schema(&f.root, "SELECT id, ts FROM t").await.unwrap();
    assert_eq!(out.schema.fields().len(), 2);
    assert_eq!(out.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    assert_eq!(table_summary(&f.root, "t").unwrap(), TableSummary::default());
}

#[tokio::test]
async fn read_back_rereads_the_data() {
    let f = fixture().await;
    let c = f.staged(0, 1, &[vec![batch(0..10)], vec![batch(10..20)]]).await;
    f.table.commit_chunk(&f.stage, &c).await.unwrap();
    let victim = f.root.join("t/data/job1-c000000-a001-p0001.parquet");
    std::fs::remove_file(&victim).unwrap();
    let e = f.table.read_back(JOB, 0).await.unwrap_err();
    assert!(matches!(e, Error::VerificationFailed { .. }), "{e:?}");
    assert!(e.to_string().contains(&victim.display().to_string()), "{e}");

    // Same name, other rows: only a real re-read notices.
    std::fs::write(&victim, parquet_bytes(&[batch(10..19)])).unwrap();
    let back = f.table.read_back(JOB, 0).await.unwrap().unwrap();
    assert_eq!(back.rows, 19);
    assert!(back.check(&c.extracted).is_err());
}

#[tokio::test]
async fn commit_needs_prepared_table_and_bad_sql_is_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let stage = Stage::local(&dir.path().join("stage")).await.unwrap();
    let wh = LocalWarehouse::open(dir.path().join("wh")).unwrap();
    let table = wh.table("u").unwrap();
    let commit = ChunkCommit {
        job_id: JOB.into(),
        chunk_id: 0,
        attempt: 1,
        range: CursorRange::new(0, 1),
        cursor_column: "id".into(),
        files: vec![],
        extracted: ChunkEvidence::default(),
        sync: None,
    };
    assert!(matches!(
        table.commit_chunk(&stage, &commit).await,
        Err(Error::InvalidObject { .. })
    ));
    assert!(wh.table("../x").is_err());
    let e = query(wh.root(), "SELEC nonsense").await.unwrap_err();
    assert_eq!(e.class(), backhaul_core::ErrorClass::Permanent);
    assert!(matches!(e, Error::InvalidObject { ref object, .. } if object == "query"));
    assert!(wh.tables().unwrap().is_empty());
}

/// Compile-time check: the futures can run on a multi-threaded runtime.
#[allow(dead_code)]
fn futures_are_send(t: &LocalTable, p: &Path) {
    fn is_send<T: Send>(_: T) {}
    is_send(query(p, ""));
    is_send(t.read_back(JOB, 0));
}

#[tokio::test]
async fn glob_characters_in_the_root_are_literal() {
    let dir = tempfile::tempdir().unwrap();
    let stage = Stage::local(&dir.path().join("stage")).await.unwrap();
    let root = dir.path().join("wh [1]*? %20");
    let spec = LocalDestinationSpec {
        path: root.clone(),
        table: "t".into(),
        file_size: None,
        allow_small_files: true,
    };
    let table = LocalTable::new(&spec).unwrap();
    table.prepare(JOB, schema()).await.unwrap();
    let f = Fixture {
        _dir: dir,
        stage,
        root: std::fs::canonicalize(&root).unwrap(),
        table,
    };
    let c = f.staged(0, 1, &[vec![batch(0..7)]]).await;
    f.table.commit_chunk(&f.stage, &c).await.unwrap();
    assert_eq!(f.count().await, 7);
    let out = query_with_schema(&f.root, "SELECT doc FROM t").await.unwrap();
    assert_eq!(out.schema.field(0).metadata(), schema().field(3).metadata());
}

#[test]
fn column_types_are_parquet_columns() {
    use backhaul_core::connector::Destination;
    let dir = tempfile::tempdir().unwrap();
    let table = LocalTable::new(&crate::spec::LocalDestinationSpec {
        path: dir.path().to_path_buf(),
        table: "t".into(),
        file_size: None,
        allow_small_files: false,
    })
    .unwrap();
    let decimal = arrow::datatypes::Field::new("amount", arrow::datatypes::DataType::Decimal128(18, 2), true);
    let t = table.column_type(&decimal);
    assert_eq!(t.lossy_step, None);
    assert!(
        t.name.contains("amount") && t.name.contains("DECIMAL(18,2)"),
        "{}",
        t.name
    );
}

#[tokio::test]
async fn local_stage_files_are_linked_not_copied() {
    use std::os::unix::fs::MetadataExt;
    let f = fixture().await;
    let c = f.staged(0, 1, &[vec![batch(0..10)]]).await;
    let staged = f
        .stage
        .local_path(&object_store::path::Path::parse(&c.files[0].path).unwrap())
        .unwrap();
    let staged_inode = std::fs::metadata(&staged).unwrap().ino();
    f.table.commit_chunk(&f.stage, &c).await.unwrap();
    let committed = &committed_files(&f.root, "t").unwrap()[0];
    assert_eq!(std::fs::metadata(committed).unwrap().ino(), staged_inode);
    // The same attempt committed again (a retried call) leaves no temporary names behind.
    f.table.commit_chunk(&f.stage, &c).await.unwrap();
    assert_eq!(f.data_files(), vec!["job1-c000000-a001-p0000.parquet"]);
}

/// The fingerprint SQL, run by DataFusion over rows of every measured type, gives the
/// fingerprint the writer computes.
#[tokio::test]
async fn fingerprint_sql_matches_the_builder() {
    use arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int16Array, ListArray, UInt32Array,
    };
    use arrow::datatypes::Int32Type;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use backhaul_core::fingerprint::{AnsiDialect, FingerprintSql};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    let base = batch(0..40);
    let mut fields: Vec<Field> = schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend([
        Field::new("small", DataType::Int16, true),
        Field::new("count", DataType::UInt32, true),
        Field::new("day", DataType::Date32, true),
        Field::new("ratio", DataType::Float64, true),
        Field::new("weight", DataType::Float32, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("raw", DataType::Binary, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
            true,
        ),
    ]);
    let wide = Arc::new(Schema::new(fields));
    let n = base.num_rows();
    let idx: Vec<i64> = (0..n as i64).collect();
    let mut columns = base.columns().to_vec();
    columns.extend([
        Arc::new(Int16Array::from_iter(
            idx.iter().map(|i| (i % 4 != 0).then_some(-(*i as i16) * 7)),
        )) as _,
        Arc::new(UInt32Array::from_iter(idx.iter().map(|i| Some(u32::MAX - *i as u32)))) as _,
        Arc::new(Date32Array::from_iter(
            idx.iter().map(|i| (i % 5 != 0).then_some(19_000 + *i as i32)),
        )) as _,
        Arc::new(Float64Array::from_iter(idx.iter().map(|i| match i {
            3 => Some(f64::NAN),
            7 => None,
            i => Some(*i as f64 / 3.0 - 2.5),
        }))) as _,
        Arc::new(Float32Array::from_iter(idx.iter().map(|i| Some(*i as f32 * 0.1)))) as _,
        Arc::new(BooleanArray::from_iter(
            idx.iter().map(|i| (i % 6 != 0).then_some(i % 3 == 1)),
        )) as _,
        Arc::new(BinaryArray::from_iter(
            idx.iter().map(|i| (i % 2 == 1).then(|| vec![0u8; *i as usize])),
        )) as _,
        Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
            idx.iter().map(|i| (i % 3 == 0).then(|| vec![Some(*i as i32)])),
        )) as _,
    ]);
    let rows = RecordBatch::try_new(wide.clone(), columns).unwrap();
    let mut builder = FingerprintBuilder::new(&wide);
    builder.update(&rows.slice(0, 15)).unwrap();
    builder.update(&rows.slice(15, n - 15)).unwrap();
    let expected = builder.finish();

    let sql = FingerprintSql::new(&wide, &AnsiDialect);
    let ctx = SessionContext::new();
    let table = MemTable::try_new(wide.clone(), vec![vec![rows.slice(0, 20), rows.slice(20, n - 20)]]).unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    let query = format!("SELECT {} FROM t", sql.select_list());
    let result = ctx.sql(&query).await.unwrap().collect().await.unwrap();
    let row = &result[0];
    let options = FormatOptions::default();
    let values: Vec<Option<String>> = row
        .columns()
        .iter()
        .map(|c| {
            (!c.is_null(0)).then(|| {
                ArrayFormatter::try_new(c.as_ref(), &options)
                    .unwrap()
                    .value(0)
                    .to_string()
            })
        })
        .collect();
    let measured = sql.parse(&values).unwrap();
    assert_eq!(
        expected.differences(&measured),
        vec![],
        "query: {query}\nvalues: {values:?}"
    );

    // One changed timestamp shows in the SQL fingerprint too.
    let mut ts: Vec<i64> = (0..n as i64).map(|i| 1_700_000_000_000_000 + i).collect();
    ts[17] += 1;
    let mut changed_columns = rows.columns().to_vec();
    changed_columns[1] = Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC"));
    let changed = RecordBatch::try_new(wide.clone(), changed_columns).unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("t", Arc::new(MemTable::try_new(wide, vec![vec![changed]]).unwrap()))
        .unwrap();
    let result = ctx.sql(&query).await.unwrap().collect().await.unwrap();
    let values: Vec<Option<String>> = result[0]
        .columns()
        .iter()
        .map(|c| {
            (!c.is_null(0)).then(|| {
                ArrayFormatter::try_new(c.as_ref(), &options)
                    .unwrap()
                    .value(0)
                    .to_string()
            })
        })
        .collect();
    let d = expected.differences(&sql.parse(&values).unwrap());
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].column.as_deref(), d[0].measure.as_str()), (Some("ts"), "sum"));
}

/// Append mode with `sync.metadata_columns`: every row of every chunk stays, with its chunk's
/// commit time in `_backhaul_synced_at` and `_backhaul_deleted` false; the proof is unchanged.
#[tokio::test]
async fn append_chunks_show_the_metadata_columns() {
    use backhaul_core::connector::{SyncCommit, SyncMode};
    let f = fixture().await;
    let append = |mut commit: ChunkCommit| {
        commit.cursor_column = "ts".into();
        commit.sync = Some(SyncCommit {
            mode: SyncMode::Append,
            key_columns: Vec::new(),
            metadata_columns: true,
        });
        commit
    };
    let first = append(f.staged(0, 1, &[vec![batch(0..10)]]).await);
    f.table.commit_chunk(&f.stage, &first).await.unwrap();
    let second = append(f.staged(1, 1, &[vec![batch(5..8)]]).await);
    f.table.commit_chunk(&f.stage, &second).await.unwrap();
    let sql = "SELECT count(*) AS n, count(_backhaul_synced_at) AS s, \
               count(*) FILTER (WHERE _backhaul_deleted) AS d, count(DISTINCT _backhaul_synced_at) AS t FROM t";
    let batches = query(&f.root, sql).await.unwrap();
    let value = |i: usize| {
        batches[0]
            .column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    };
    assert_eq!(
        (value(0), value(1), value(2)),
        (13, 13, 0),
        "every row of both chunks, each with its time"
    );
    assert!(value(3) >= 1);
    let out = query_with_schema(&f.root, "SELECT * FROM t").await.unwrap();
    let names: Vec<&str> = out.schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names[names.len() - 2..], ["_backhaul_deleted", "_backhaul_synced_at"]);
    assert!(
        f.table
            .read_back(JOB, 1)
            .await
            .unwrap()
            .unwrap()
            .check(&second.extracted)
            .is_ok()
    );
}

/// Soft deletes: digests and key lists see the current, live versions; marking keys deleted
/// flags them in the view without touching any chunk's proof; a newer version un-deletes.
#[tokio::test]
async fn soft_deletes_flag_keys_until_a_newer_version_arrives() {
    use backhaul_core::connector::{SyncCommit, SyncMode};
    use backhaul_core::deletes::KeyDigest;
    let f = fixture().await;
    let keys = vec!["id".to_string()];
    let dedup = |mut commit: ChunkCommit| {
        commit.cursor_column = "ts".into();
        commit.sync = Some(SyncCommit {
            mode: SyncMode::Dedup,
            key_columns: keys.clone(),
            metadata_columns: true,
        });
        commit
    };
    let first = dedup(f.staged(0, 1, &[vec![batch(0..10)]]).await);
    f.table.commit_chunk(&f.stage, &first).await.unwrap();
    let all = CursorRange::new(1_700_000_000_000_000, 1_700_000_000_000_100);
    let ids = |v: Vec<String>| {
        let mut v: Vec<i64> = v.iter().map(|k| k.parse().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(f.table.list_keys(JOB, all, &keys).await.unwrap()),
        (0..10).collect::<Vec<_>>()
    );
    let digest = f.table.key_digest(JOB, all, &keys).await.unwrap();
    let texts: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(digest, KeyDigest::of(texts.iter().map(String::as_str)));
    let low = CursorRange::new(1_700_000_000_000_000, 1_700_000_000_000_005);
    assert_eq!(f.table.key_digest(JOB, low, &keys).await.unwrap().count, 5);

    let marked = f
        .table
        .mark_deleted(JOB, &keys, &["3".into(), "4".into(), "404".into()])
        .await
        .unwrap();
    assert_eq!(marked, 2, "only current keys are marked");
    assert_eq!(f.table.key_digest(JOB, all, &keys).await.unwrap().count, 8);
    let flags = |batches: Vec<RecordBatch>| -> Vec<(i64, bool, bool)> {
        let mut out = Vec::new();
        for b in &batches {
            let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let deleted = b
                .column(1)
                .as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .unwrap();
            let synced = b.column(2);
            for i in 0..b.num_rows() {
                out.push((id.value(i), deleted.value(i), synced.is_valid(i)));
            }
        }
        out
    };
    let sql = "SELECT id, _backhaul_deleted, _backhaul_synced_at FROM t ORDER BY id";
    let rows = flags(query(&f.root, sql).await.unwrap());
    assert_eq!(rows.len(), 10);
    assert!(
        rows.iter()
            .all(|(id, deleted, synced)| *deleted == (*id == 3 || *id == 4) && *synced)
    );
    let out = query_with_schema(&f.root, sql).await.unwrap();
    assert_eq!(
        out.schema.field(2).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert!(
        f.table
            .read_back(JOB, 0)
            .await
            .unwrap()
            .unwrap()
            .check(&first.extracted)
            .is_ok(),
        "the chunk's proof covers its own rows, deletes aside"
    );

    // Key 3 read again by a later chunk: live again; key 4 stays deleted.
    let again = dedup(f.staged(1, 1, &[vec![batch(3..4)]]).await);
    f.table.commit_chunk(&f.stage, &again).await.unwrap();
    let rows = flags(query(&f.root, sql).await.unwrap());
    assert_eq!(
        rows.iter().filter(|r| r.1).map(|r| r.0).collect::<Vec<_>>(),
        [4],
        "{rows:?}"
    );
    let months = f.table.monthly_changes(JOB).await.unwrap().unwrap();
    assert_eq!(months.len(), 1, "{months:?}");
    assert_eq!((months[0].inserted, months[0].updated, months[0].deleted), (10, 1, 2));
}

#[tokio::test]
async fn a_full_refresh_swaps_the_table_and_retires_the_previous_version() {
    use backhaul_core::connector::{SyncCommit, SyncMode};
    let f = fixture().await;
    let refresh = |mut commit: ChunkCommit| {
        commit.sync = Some(SyncCommit {
            mode: SyncMode::FullRefresh,
            key_columns: Vec::new(),
            metadata_columns: false,
        });
        commit
    };
    let first = refresh(f.staged(0, 1, &[vec![batch(0..10)]]).await);
    f.table.commit_chunk(&f.stage, &first).await.unwrap();
    assert_eq!(f.count().await, 10);

    // The next version, staged but not committed: readers still see the first one whole.
    let second = refresh(f.staged(1, 1, &[vec![batch(5..8)], vec![batch(20..22)]]).await);
    assert_eq!(f.count().await, 10);
    f.table.commit_chunk(&f.stage, &second).await.unwrap();
    assert_eq!(f.count().await, 5, "only the new version is the table");
    assert!(
        f.data_files().iter().all(|n| n.starts_with("job1-c000001-")),
        "the old version's files are deleted: {:?}",
        f.data_files()
    );
    assert!(
        f.root.join("t/_superseded/chunk-000000-a001.json").exists(),
        "kept as history"
    );
    assert_eq!(f.table.read_back(JOB, 0).await.unwrap(), None, "superseded");
    assert!(
        f.table
            .read_back(JOB, 1)
            .await
            .unwrap()
            .unwrap()
            .check(&second.extracted)
            .is_ok()
    );
    assert_eq!(
        table_summary(&f.root, "t").unwrap(),
        TableSummary {
            chunks: 1,
            files: 2,
            rows: 5,
            bytes: second.files.iter().map(|f| f.bytes).sum(),
        }
    );

    // An older refresh committed late (a replay) never replaces the newer version.
    let replayed = refresh(f.staged(0, 2, &[vec![batch(0..3)]]).await);
    f.table.commit_chunk(&f.stage, &replayed).await.unwrap();
    assert_eq!(f.count().await, 5);

    // Every refresh counts its rows: the first version's inserted, later ones' updated.
    let months = f.table.monthly_changes(JOB).await.unwrap().unwrap();
    assert_eq!(months.len(), 1, "{months:?}");
    assert_eq!((months[0].inserted, months[0].updated), (10, 5 + 3));
}

/// A writer that hashed its files vouches for their rows: the commit checks the bytes
/// (size and hash) and the footers, without decoding; `read_back` still decodes.
#[tokio::test]
async fn hashed_files_commit_by_their_bytes_and_read_back_decodes() {
    use std::os::unix::fs::MetadataExt;
    let f = fixture().await;
    let parts = vec![vec![batch(0..50)], vec![batch(50..80)]];
    let c = f.hashed(f.staged(0, 1, &parts).await);
    let staged_inode = std::fs::metadata(f.staged_path(&c.files[0])).unwrap().ino();
    let all: Vec<RecordBatch> = parts.iter().flatten().cloned().collect();
    assert_eq!(f.table.commit_chunk(&f.stage, &c).await.unwrap(), proof(&all));
    let m = f.table.manifest(0).unwrap().unwrap();
    assert_eq!(
        m.files.iter().map(|f| f.rows).collect::<Vec<_>>(),
        vec![50, 30],
        "rows from the footers"
    );
    assert_eq!(m.committed, c.extracted.summary);
    let committed = &committed_files(&f.root, "t").unwrap()[0];
    assert_eq!(
        std::fs::metadata(committed).unwrap().ino(),
        staged_inode,
        "linked, not copied"
    );
    assert_eq!(f.table.read_back(JOB, 0).await.unwrap(), Some(proof(&all)));

    // The same commit again (a retried call): the staged files are still there, the result is
    // the same, and nothing is doubled or left behind.
    assert_eq!(f.table.commit_chunk(&f.stage, &c).await.unwrap(), proof(&all));
    assert_eq!(
        f.data_files(),
        vec!["job1-c000000-a001-p0000.parquet", "job1-c000000-a001-p0001.parquet"]
    );
    assert_eq!(f.count().await, 80);

    // The cheap check is no proof against edits after the commit: read_back decodes.
    std::fs::remove_file(committed).unwrap();
    std::fs::write(committed, parquet_bytes(&[batch(0..49)])).unwrap();
    let p = f.table.read_back(JOB, 0).await.unwrap().unwrap();
    assert!(p.check(&c.extracted).is_err(), "{p:?}");
}

/// Staged bytes that changed after the writer hashed them (same length) are refused, naming
/// the file, and nothing is committed.
#[tokio::test]
async fn a_staged_file_whose_bytes_changed_is_refused() {
    let f = fixture().await;
    let good = f.hashed(f.staged(0, 1, &[vec![batch(0..10)]]).await);
    f.table.commit_chunk(&f.stage, &good).await.unwrap();
    let before = (f.table.manifest(0).unwrap(), f.data_files());

    let c = f.hashed(f.staged(0, 2, &[vec![batch(0..10)]]).await);
    let path = f.staged_path(&c.files[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let e = f.table.commit_chunk(&f.stage, &c).await.unwrap_err();
    match &e {
        Error::VerificationFailed { what, message } => {
            assert!(what.contains("attempt-002/part-0000.parquet"), "{what}");
            assert!(message.contains("changed after the writer wrote them"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((f.table.manifest(0).unwrap(), f.data_files()), before);
    assert_eq!(f.count().await, 10);
}

/// Bytes the writer hashed still have to be a Parquet file of the table's schema whose footer
/// holds the rows the writer counted: checked from the footer, without a decode.
#[tokio::test]
async fn hashed_files_of_another_schema_or_row_count_are_refused() {
    let f = fixture().await;
    let c = f.hashed(f.staged(0, 1, &[vec![batch(0..10)]]).await);
    let other_schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let other = RecordBatch::try_new(
        other_schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(0..10))],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(Vec::new(), other_schema, None).unwrap();
    w.write(&other).unwrap();
    let bytes = w.into_inner().unwrap();
    let path = f.staged_path(&c.files[0]);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let mut wrong_schema = c.clone();
    wrong_schema.files[0].bytes = bytes.len() as u64;
    let wrong_schema = f.hashed(wrong_schema);
    let e = f
        .table
        .commit_chunk(&f.stage, &wrong_schema)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("lack some the writer proved"), "{e}");

    let short = f.hashed(f.staged(0, 2, &[vec![batch(0..9)]]).await);
    let claims_ten = ChunkCommit {
        extracted: c.extracted.clone(),
        ..short
    };
    let e = f
        .table
        .commit_chunk(&f.stage, &claims_ten)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("rows: expected 10, found 9"), "{e}");
    assert_eq!(f.table.manifest(0).unwrap(), None);
    assert!(f.data_files().is_empty(), "{:?}", f.data_files());
}

#[tokio::test]
async fn manifests_from_before_checksum_versions_are_verified_with_version_1() {
    use backhaul_core::checksum::ChecksumVersion;
    let f = fixture().await;
    let batches = vec![batch(0..10), batch(10..20)];
    let c1 = f.staged(0, 1, std::slice::from_ref(&batches)).await;
    f.table.commit_chunk(&f.stage, &c1).await.unwrap();
    let manifest = f.table.manifest(0).unwrap().unwrap();
    assert_eq!(manifest.checksum_version, ChecksumVersion::CURRENT);

    // What an older backhaul wrote: version 1 checksums and no version field.
    let mut v1 = RowChecksum::with_version(&schema(), ChecksumVersion::RowFormat).unwrap();
    batches.iter().for_each(|b| v1.update(b).unwrap());
    let v1 = v1.summary();
    assert_ne!(
        v1.checksum, manifest.committed.checksum,
        "the versions hash differently"
    );
    let mut old = serde_json::to_value(&manifest).unwrap();
    let fields = old.as_object_mut().unwrap();
    assert!(fields.remove("checksum_version").is_some());
    fields.insert("extracted".into(), serde_json::to_value(v1).unwrap());
    fields.insert("committed".into(), serde_json::to_value(v1).unwrap());
    let path = f
        .table
        .dir()
        .join(crate::meta::MANIFEST_DIR)
        .join(crate::meta::manifest_name(0));
    assert!(path.exists(), "{}", path.display());
    std::fs::write(path, serde_json::to_vec(&old).unwrap()).unwrap();

    let back = f.table.read_back(JOB, 0).await.unwrap().unwrap();
    assert_eq!(back.checksum, Some(v1.checksum));
    assert_eq!(back.rows, 20);
}
