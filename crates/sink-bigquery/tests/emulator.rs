//! The BigQuery destination against a private bqemulator (`scripts/ensure-servers` installs it).
//!
//! The emulator's `gs://bkt/…` is a local directory, so the tests stage into that directory
//! with a local stage and name it to the destination as `stage_gcs_url = "gs://bkt/stage"`:
//! the same documented key a deployment uses when its stage is mirrored to GCS. Emulator
//! differences are handled here, never in the crate: staging tables are created in file column
//! order (its Parquet loads are positional), `outputRows` is never read, and job-id idempotency
//! (it loads again instead of answering 409) is tested against a local server that replays
//! BigQuery's documented 409 answer.

use std::sync::Arc;

use arrow::array::RecordBatch;
use backhaul_conformance::corrupt::{Corruption, TamperCommitted};
use backhaul_conformance::destination::{DestinationOptions, check_destination_with};
use backhaul_core::ErrorClass;
use backhaul_core::connector::{Destination, Source};
use backhaul_core::cursor::{CursorKind, CursorRange, SpecBound};
use backhaul_core::proof::ProofLevel;
use backhaul_core::registry::DestinationConfig;
use backhaul_core::stage::Stage;
use backhaul_sink_bigquery::spec::{AuthMethod, WriteMethod};
use backhaul_sink_bigquery::{BigQuerySpec, BigQueryTable};
use backhaul_source_embedded::{EmbeddedSource, EmbeddedSourceSpec};
use backhaul_testkit::bqemulator::{BqEmulator, PROJECT};
use futures::TryStreamExt;
use futures::future::BoxFuture;
use tempfile::TempDir;

const DATASET: &str = "sales";

/// A private emulator with a dataset, and a local stage BigQuery sees as `gs://bkt/stage`.
struct Env {
    emulator: BqEmulator,
    stage: Stage,
    _dir: TempDir,
}

impl Env {
    async fn new() -> Env {
        let emulator = BqEmulator::start().unwrap();
        let stage_dir = emulator.bucket_dir("bkt").unwrap().join("stage");
        let stage = Stage::local(&stage_dir).await.unwrap();
        let env = Env {
            emulator,
            stage,
            _dir: TempDir::new().unwrap(),
        };
        env.create_dataset(DATASET).await;
        env
    }

    async fn create_dataset(&self, dataset: &str) {
        let resp = reqwest::Client::new()
            .post(format!("{}/projects/{PROJECT}/datasets", self.emulator.base_url()))
            .json(&serde_json::json!({"datasetReference": {"projectId": PROJECT, "datasetId": dataset}}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }

    fn spec(&self, table: &str) -> BigQuerySpec {
        {
            let mut spec = BigQuerySpec::new(PROJECT, DATASET, table);
            spec.base_url = Some(self.emulator.base_url());
            spec.auth = AuthMethod::None;
            spec.file_size = Some(backhaul_core::spec::ByteSizeText("1MiB".into()));
            spec.allow_small_files = true;
            spec.job_timeout = Some("2m".into());
            spec.stage_gcs_url = Some("gs://bkt/stage".into());
            spec
        }
    }
}

fn micros(text: &str) -> i64 {
    SpecBound::parse(text)
        .unwrap()
        .to_cursor(CursorKind::Timestamp)
        .unwrap()
}

/// Half a day of embedded-source rows: Timestamp(us, UTC), Decimal128(18,2), JSON text, Date32
/// with NULLs, non-ASCII text.
async fn source_rows(dir: &TempDir) -> Vec<RecordBatch> {
    let source = EmbeddedSource::open(&EmbeddedSourceSpec {
        path: dir.path().join("orders.db"),
        table: "orders".into(),
        cursor: "created_at".into(),
        rows_per_day: 100,
        seed: 7,
    })
    .unwrap();
    let range = CursorRange::new(micros("2023-03-15T00:00:00Z"), micros("2023-03-15T12:00:00Z"));
    source.prepare(range).await.unwrap();
    source.extract(range, 1_000).await.unwrap().try_collect().await.unwrap()
}

/// Damages committed rows with DML, the way someone editing the table directly would.
struct DmlTamper(Arc<BigQueryTable>);

impl TamperCommitted for DmlTamper {
    fn tamper<'a>(
        &'a self,
        job_id: &'a str,
        chunk_id: u64,
        corruption: &'a Corruption,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let table = &self.0;
            let rest = table.rest().await.map_err(|e| e.to_string())?;
            let control = table.qualified(&format!("_backhaul_{}", table.spec().table));
            let rows = rest
                .query(&format!(
                    "SELECT range_from, range_to, cursor_column FROM {control} WHERE job_id = '{job_id}' AND chunk_id = {chunk_id}"
                ))
                .await
                .map_err(|e| e.to_string())?;
            let row = rows.first().ok_or("chunk not committed")?;
            let (from, to, cursor) = (
                row[0].clone().unwrap(),
                row[1].clone().unwrap(),
                row[2].clone().unwrap(),
            );
            let target = table.target();
            let in_range = format!("`{cursor}` >= TIMESTAMP_MICROS({from}) AND `{cursor}` < TIMESTAMP_MICROS({to})");
            // The latest row of the chunk: moving its timestamp down keeps it in range.
            let last = format!("{in_range} AND `{cursor}` = (SELECT MAX(`{cursor}`) FROM {target} WHERE {in_range})");
            let sql = match corruption {
                Corruption::DropRow => format!("DELETE FROM {target} WHERE {last}"),
                Corruption::DuplicateRow => {
                    format!("INSERT INTO {target} SELECT * FROM {target} WHERE {last} LIMIT 1")
                }
                Corruption::ChangeNumber(c) => format!("UPDATE {target} SET `{c}` = `{c}` + 1 WHERE {last}"),
                Corruption::ChangeString(c) => {
                    format!("UPDATE {target} SET `{c}` = CONCAT(`{c}`, 'x') WHERE {last}")
                }
                Corruption::ChangeTimestamp(c) => {
                    format!("UPDATE {target} SET `{c}` = TIMESTAMP_SUB(`{c}`, INTERVAL 1 MICROSECOND) WHERE {last}")
                }
            };
            rest.query(&sql).await.map_err(|e| e.to_string())?;
            Ok(())
        })
    }
}

/// Runs the destination conformance suite over `spec` (with direct DML edits as the tamper).
async fn conforms(env: &Env, spec: BigQuerySpec) {
    let dir = TempDir::new().unwrap();
    let batches = source_rows(&dir).await;
    let make = {
        let spec = spec.clone();
        move || Arc::new(BigQueryTable::new(spec.clone()).unwrap()) as Arc<dyn Destination>
    };
    let options = DestinationOptions {
        cursor_column: Some("created_at".into()),
        tamper: Some(Arc::new(DmlTamper(Arc::new(BigQueryTable::new(spec).unwrap())))),
        ..Default::default()
    };
    let report = check_destination_with(make, &env.stage, batches, &options)
        .await
        .unwrap();
    assert_eq!(report.level, ProofLevel::Fingerprint);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}

#[tokio::test]
async fn bigquery_destination_conforms() {
    let env = Env::new().await;
    let spec = env.spec("orders");
    conforms(&env, spec).await;
}

#[tokio::test]
async fn bigquery_destination_conforms_by_storage_write() {
    let env = Env::new().await;
    let mut spec = env.spec("orders_sw");
    spec.write_method = WriteMethod::StorageWrite;
    spec.storage_write_endpoint = Some(env.emulator.grpc_endpoint());
    spec.stage_gcs_url = None;
    spec.validate("job.toml").unwrap();
    conforms(&env, spec).await;
}

#[tokio::test]
async fn a_missing_dataset_is_a_permanent_error_naming_it() {
    let env = Env::new().await;
    let mut spec = env.spec("orders");
    spec.dataset = "nowhere".into();
    let dir = TempDir::new().unwrap();
    let batches = source_rows(&dir).await;
    let table = BigQueryTable::new(spec).unwrap();
    let e = table.prepare("job", batches[0].schema()).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(e.to_string().contains("nowhere"), "{e}");
}

#[tokio::test]
async fn a_stage_bigquery_cannot_read_is_refused_at_plan_time() {
    let env = Env::new().await;
    let mut spec = env.spec("orders");
    spec.stage_gcs_url = None;
    let table = BigQueryTable::new(spec.clone()).unwrap();
    let e = table.check_stage(&env.stage).unwrap_err().to_string();
    assert!(e.contains("stage.url") && e.contains("gs://"), "{e}");
    spec.stage_gcs_url = Some("gs://bkt/stage".into());
    spec.validate("job.toml").unwrap();
    BigQueryTable::new(spec).unwrap().check_stage(&env.stage).unwrap();
}

impl Env {
    /// Creates `table` through the REST API with `fields` (`[{"name", "type"}]`).
    async fn create_table(&self, table: &str, fields: serde_json::Value) {
        let resp = reqwest::Client::new()
            .post(format!(
                "{}/projects/{PROJECT}/datasets/{DATASET}/tables",
                self.emulator.base_url()
            ))
            .json(&serde_json::json!({
                "tableReference": {"projectId": PROJECT, "datasetId": DATASET, "tableId": table},
                "schema": {"fields": fields},
            }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }

    /// The table's columns and types as BigQuery reports them.
    async fn columns(&self, table: &str) -> Vec<(String, String)> {
        let t: serde_json::Value = reqwest::Client::new()
            .get(format!(
                "{}/projects/{PROJECT}/datasets/{DATASET}/tables/{table}",
                self.emulator.base_url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        t["schema"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["name"].as_str().unwrap().into(), f["type"].as_str().unwrap().into()))
            .collect()
    }
}

fn commit_of(
    files: Vec<backhaul_core::connector::StagedFile>,
    rows: &[RecordBatch],
    attempt: u32,
) -> backhaul_core::connector::ChunkCommit {
    let schema = rows[0].schema();
    backhaul_core::connector::ChunkCommit {
        job_id: "job".into(),
        chunk_id: 0,
        attempt,
        range: CursorRange::new(micros("2023-03-15T00:00:00Z"), micros("2023-03-15T12:00:00Z")),
        cursor_column: "created_at".into(),
        files,
        extracted: backhaul_conformance::evidence(&schema, rows).unwrap(),
        sync: None,
    }
}

#[tokio::test]
async fn an_existing_table_gains_missing_columns_and_a_type_conflict_names_both_types() {
    let env = Env::new().await;
    let dir = TempDir::new().unwrap();
    let batches = source_rows(&dir).await;
    let schema = batches[0].schema();
    // A table someone made: only the key, with the right type.
    env.create_table("adopted", serde_json::json!([{"name": "order_id", "type": "INTEGER"}]))
        .await;
    let table = BigQueryTable::new(env.spec("adopted")).unwrap();
    table.prepare("job", schema.clone()).await.unwrap();
    let columns = env.columns("adopted").await;
    assert_eq!(columns.len(), schema.fields().len(), "{columns:?}");
    assert!(
        columns.iter().any(|(n, t)| n == "created_at" && t == "TIMESTAMP"),
        "{columns:?}"
    );

    // A table whose `amount` holds text: the chunk's decimals cannot go there.
    env.create_table(
        "conflicting",
        serde_json::json!([{"name": "order_id", "type": "INTEGER"}, {"name": "amount", "type": "STRING"}]),
    )
    .await;
    let e = BigQueryTable::new(env.spec("conflicting"))
        .unwrap()
        .prepare("job", schema)
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    let shown = e.to_string();
    assert!(
        shown.contains("amount") && shown.contains("STRING") && shown.contains("NUMERIC"),
        "{shown}"
    );
}

#[tokio::test]
async fn blocked_columns_stay_out_of_the_table_and_the_proof_still_holds() {
    let env = Env::new().await;
    let dir = TempDir::new().unwrap();
    let batches = source_rows(&dir).await;
    let schema = batches[0].schema();
    let blocked = schema
        .fields()
        .iter()
        .find(|f| f.data_type() == &arrow::datatypes::DataType::Utf8 && f.metadata().is_empty())
        .unwrap()
        .name()
        .clone();
    let mut spec = env.spec("orders_blocked");
    spec.blocked_columns = vec![blocked.clone()];
    let table = BigQueryTable::new(spec.clone()).unwrap();
    assert_eq!(
        table.column_type(schema.field_with_name(&blocked).unwrap()).name,
        "(blocked: not loaded)"
    );
    table.prepare("job", schema.clone()).await.unwrap();
    let files = backhaul_conformance::stage_batches(&env.stage, "job", 0, 1, &schema, &batches, 2)
        .await
        .unwrap();
    let commit = commit_of(files, &batches, 1);
    let proof = table.commit_chunk(&env.stage, &commit).await.unwrap();
    proof.check(&commit.extracted).unwrap();
    // The first commit created the table (it knows the cursor): partitioned by it, no blocked column.
    assert!(!env.columns("orders_blocked").await.iter().any(|(n, _)| *n == blocked));
    let partitioning = table
        .rest()
        .await
        .unwrap()
        .get_table(DATASET, "orders_blocked")
        .await
        .unwrap()
        .unwrap()
        .time_partitioning
        .unwrap();
    assert_eq!(
        (partitioning.r#type.as_str(), partitioning.field.as_deref()),
        ("DAY", Some("created_at"))
    );
    let fresh = BigQueryTable::new(spec).unwrap();
    let again = fresh.read_back("job", 0).await.unwrap().unwrap();
    again.check(&commit.extracted).unwrap();
}

#[tokio::test]
async fn a_load_job_that_fails_surfaces_its_error_and_changes_nothing() {
    let env = Env::new().await;
    let dir = TempDir::new().unwrap();
    let batches = source_rows(&dir).await;
    let schema = batches[0].schema();
    let table = BigQueryTable::new(env.spec("orders_failing")).unwrap();
    table.prepare("job", schema.clone()).await.unwrap();
    let mut files = backhaul_conformance::stage_batches(&env.stage, "job", 0, 1, &schema, &batches, 1)
        .await
        .unwrap();
    // The stage lost the file before the load ran.
    files[0].path = "job/chunk-000000/attempt-001/missing.parquet".into();
    let e = table
        .commit_chunk(&env.stage, &commit_of(files, &batches, 1))
        .await
        .unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains("backhaul_sales_orders_failing_job_c000000_a001"),
        "{shown}"
    );
    assert_eq!(e.class(), ErrorClass::Permanent, "{shown}");
    assert!(table.read_back("job", 0).await.unwrap().is_none());
}

#[tokio::test]
async fn a_commit_transaction_that_keeps_failing_is_transient_and_changes_nothing() {
    let env = Env::new().await;
    let dir = TempDir::new().unwrap();
    let batches = source_rows(&dir).await;
    let schema = batches[0].schema();
    let spec = env.spec("orders_aborted");
    let table = BigQueryTable::new(spec.clone())
        .unwrap()
        .with_transaction_retry(std::time::Duration::from_millis(1));
    table.prepare("job", schema.clone()).await.unwrap();
    // Someone drops a control table column only commits write, between prepare and commit: every try
    // of the transaction fails the way a conflicting one is cancelled (invalidQuery).
    let rest = table.rest().await.unwrap();
    rest.query(&format!(
        "ALTER TABLE {} DROP COLUMN committed_at",
        table.qualified("_backhaul_orders_aborted")
    ))
    .await
    .unwrap();
    let files = backhaul_conformance::stage_batches(&env.stage, "job", 0, 1, &schema, &batches, 1)
        .await
        .unwrap();
    let e = table
        .commit_chunk(&env.stage, &commit_of(files, &batches, 1))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    assert!(e.to_string().contains("failed 4 times"), "{e}");
    let rows = rest
        .query(&format!("SELECT COUNT(*) FROM {}", table.target()))
        .await
        .unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("0"));
}

/// Dedup syncs: the conformance dedup check (newest version per key across chunks, lookback
/// re-reads, late older versions, retried commits, every chunk's proof read back from the
/// versions table), and the refusal of `replace = "partition_copy"` with dedup.
#[tokio::test]
async fn dedup_commits_keep_the_newest_version_of_each_key() {
    use backhaul_conformance::dedup::{ReadTable, check_dedup, check_rows_per_chunk, dedup_batch_from_text};
    use backhaul_core::connector::SyncMode;

    let env = Env::new().await;
    let table = Arc::new(BigQueryTable::new(env.spec("deduped")).unwrap());
    let read: ReadTable = {
        let table = table.clone();
        Arc::new(move || {
            let table = table.clone();
            Box::pin(async move {
                let rest = table.rest().await?;
                let rows = rest
                    .query(&format!(
                        "SELECT id, UNIX_MICROS(updated_at), v FROM {}",
                        table.target()
                    ))
                    .await?;
                Ok(vec![dedup_batch_from_text(&rows)?])
            })
        })
    };
    check_dedup(table.clone(), &env.stage, read)
        .await
        .unwrap_or_else(|v| panic!("{v}"));
    let rest = table.rest().await.unwrap();
    let versions = rest
        .query(&format!(
            "SELECT _backhaul_chunk_id, COUNT(*) FROM {} GROUP BY 1 ORDER BY 1",
            table.qualified("_backhaul_deduped_versions")
        ))
        .await
        .unwrap();
    check_rows_per_chunk(&versions).unwrap();

    let mut spec = env.spec("copied");
    spec.replace = backhaul_sink_bigquery::spec::Replace::PartitionCopy;
    spec.partitioning = backhaul_sink_bigquery::spec::Partitioning::CursorDay;
    let copied = BigQueryTable::new(spec).unwrap();
    assert!(copied.supports_sync_mode(SyncMode::Append));
    assert!(!copied.supports_sync_mode(SyncMode::Dedup));
    assert!(
        copied.supports_sync_mode(SyncMode::FullRefresh),
        "a refresh never copies a partition"
    );
    let dir = TempDir::new().unwrap();
    let mut commit = commit_of(Vec::new(), &source_rows(&dir).await, 1);
    commit.sync = Some(backhaul_core::connector::SyncCommit {
        mode: SyncMode::Dedup,
        key_columns: vec!["id".into()],
        metadata_columns: false,
    });
    let e = copied.commit_chunk(&env.stage, &commit).await.unwrap_err().to_string();
    assert!(e.contains("destination.replace") && e.contains("dedup"), "{e}");
}
