//! The BigQuery table a job loads, and the [`Destination`] implementation.
//!
//! Beside the target table `T` the destination keeps a control table `_backhaul_T` in the same
//! dataset: one row owning `T` for a job (its exact Arrow schema, `chunk_id = -1`) and one row
//! per committed chunk (attempt, range, cursor column). A chunk commits in three steps:
//!
//! 1. its staged Parquet files are loaded by ONE load job, with an id derived from (job, chunk,
//!    attempt), into a per-attempt staging table `_backhaul_T_cNNNNNN_aNNN` (columns in file
//!    order); a retried insert of the same id finds the existing job (HTTP 409) and waits for
//!    it instead of loading twice;
//! 2. the staging table's fingerprint is measured and checked against the writer's evidence:
//!    a mismatch refuses the commit before anything visible changed;
//! 3. one multi-statement transaction refuses an attempt older than the committed one,
//!    deletes the chunk's range from `T`, inserts the staging rows and records the attempt;
//!    then the staging table is dropped and the committed range is measured again.
//!
//! A chunk of a `[sync] mode = "dedup"` job takes the same steps, but its transaction keeps the
//! staged rows in the versions table `_backhaul_T_versions` (every chunk's rows, tagged with
//! the chunk id) and MERGEs them into `T` by key (`backhaul_core::dedup`); its proof is
//! measured in the versions table, since its range of `T` is no longer the chunk.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use backhaul_core::chunking::{ChunkCap, PlannedChunk};
use backhaul_core::connector::{ChunkCommit, Destination, DestinationType, PlanNote, SyncMode};
use backhaul_core::cursor::CursorRange;
use backhaul_core::dedup::{CHUNK_COLUMN, DedupSql, chunk_rows};
use backhaul_core::fingerprint::{ColumnFingerprint, FingerprintSql};
use backhaul_core::proof::{ChunkProof, ProofLevel};
use backhaul_core::spec::is_valid_name;
use backhaul_core::stage::{Stage, StageKind};
use backhaul_core::{Error, Result as CoreResult};
use base64::Engine;
use futures::future::BoxFuture;
use gcp_bigquery_client::model::clustering::Clustering;
use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use gcp_bigquery_client::model::time_partitioning::TimePartitioning;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::client::Rest;
use crate::error::{BigQueryError, Result};
use crate::spec::{AuthMethod, BigQuerySpec, JsonColumns, Partitioning, Replace, WriteMethod};
use crate::storage_write::Tokens;
use crate::types::{BigQueryDialect, BqType, bq_type, compatible};
use backhaul_bigquery_storage_write::WriteClient;

/// Control table columns added after its first release (STRING, NULL for a plain commit):
/// `sync_mode` is `dedup` for a chunk merged by key, whose rows are in the versions table.
const CONTROL_ADDED_COLUMNS: [&str; 1] = ["sync_mode"];

/// The proof this destination gives: the portable fingerprint, recomputed by one query.
pub const PROOF_LEVEL: ProofLevel = ProofLevel::Fingerprint;
/// BigQuery's limit of source URIs per load job.
pub const MAX_URIS_PER_LOAD_JOB: usize = 10_000;
/// BigQuery's limit of bytes per load job (15 TB).
pub const MAX_BYTES_PER_LOAD_JOB: u64 = 15_000_000_000_000;
/// BigQuery's quota of load jobs per table per day (also the number of INSERT DML statements
/// per table per day that run at once before BigQuery starts queueing them).
pub const LOAD_JOBS_PER_TABLE_PER_DAY: usize = 1_500;
/// The most chunks the planner gives one job: BigQuery's 1,500 a day less a tenth, kept for
/// retries and replays (failed jobs count against the quota too).
pub const CHUNK_CAP: ChunkCap = ChunkCap {
    chunks: LOAD_JOBS_PER_TABLE_PER_DAY / 10 * 9,
    reason: "BigQuery's 1,500 table modifications per table per day (1,350, leaving a tenth for retries and replays)",
};
/// Tries of the replacing transaction before giving the chunk back to the coordinator.
const TRANSACTION_ATTEMPTS: u32 = 4;
/// Pause after the first failed try; doubled each time, ±50% jitter.
const TRANSACTION_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
/// `chunk_id` of the control row that records the table's owner and schema.
const OWNER_ROW: i64 = -1;

/// A BigQuery table loaded by one job.
pub struct BigQueryTable {
    spec: BigQuerySpec,
    rest: OnceCell<Rest>,
    writer: OnceCell<WriteClient>,
    owner: OnceCell<Owner>,
    /// Pause after the first failed try of the replacing transaction.
    transaction_retry_first: std::time::Duration,
}

impl std::fmt::Debug for BigQueryTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigQueryTable")
            .field("project", &self.spec.project)
            .field("dataset", &self.spec.dataset)
            .field("table", &self.spec.table)
            .finish_non_exhaustive()
    }
}

/// The job that owns the table and the exact Arrow schema of its rows.
#[derive(Debug, Clone)]
struct Owner {
    job_id: String,
    schema: SchemaRef,
}

/// A committed chunk's control row.
#[derive(Debug, Clone)]
struct ChunkRow {
    attempt: u32,
    range: CursorRange,
    cursor_column: String,
    /// The blocked columns' measures, taken from the staging table at commit.
    blocked: Vec<ColumnFingerprint>,
    /// Merged by key (sync mode dedup): the chunk's rows are in the versions table.
    merged: bool,
}

impl BigQueryTable {
    /// The destination described by a `[destination] kind = "bigquery"` section. No IO: the
    /// client connects on first use.
    pub fn new(spec: BigQuerySpec) -> CoreResult<Self> {
        spec.validate_for_build()?;
        Ok(BigQueryTable {
            spec,
            rest: OnceCell::new(),
            writer: OnceCell::new(),
            owner: OnceCell::new(),
            transaction_retry_first: TRANSACTION_RETRY_FIRST,
        })
    }

    /// Sets the pause after the first failed try of a commit transaction (doubled after each
    /// further try); tests set it short instead of waiting in real time.
    pub fn with_transaction_retry(mut self, first: std::time::Duration) -> Self {
        self.transaction_retry_first = first;
        self
    }

    /// The spec.
    pub fn spec(&self) -> &BigQuerySpec {
        &self.spec
    }

    /// The connected REST client.
    pub async fn rest(&self) -> Result<&Rest> {
        self.rest.get_or_try_init(|| Rest::connect(&self.spec)).await
    }

    /// The connected Storage Write client (`write_method = "storage_write"`).
    async fn writer(&self) -> Result<&WriteClient> {
        self.writer
            .get_or_try_init(|| async {
                let rest = self.rest().await?;
                let auth: Option<Arc<dyn backhaul_bigquery_storage_write::TokenProvider>> = match self.spec.auth {
                    AuthMethod::None => None,
                    _ => Some(Arc::new(Tokens(rest.authenticator()))),
                };
                let endpoint = self
                    .spec
                    .storage_write_endpoint
                    .clone()
                    .unwrap_or_else(|| backhaul_bigquery_storage_write::DEFAULT_ENDPOINT.to_string());
                WriteClient::connect(endpoint, auth)
                    .await
                    .map_err(|e| BigQueryError::StorageWrite {
                        class: e.class(),
                        message: e.to_string(),
                    })
            })
            .await
    }

    /// `project.dataset.name`, quoted for SQL.
    pub fn qualified(&self, name: &str) -> String {
        format!("`{}.{}.{}`", self.spec.project, self.spec.dataset, name)
    }

    /// The target table, quoted for SQL.
    pub fn target(&self) -> String {
        self.qualified(&self.spec.table)
    }

    fn control_name(&self) -> String {
        format!("_backhaul_{}", self.spec.table)
    }

    /// The versions table of a dedup job's table: every chunk's rows, tagged with its id.
    fn versions_name(&self) -> String {
        format!("_backhaul_{}_versions", self.spec.table)
    }

    fn staging_name(&self, chunk_id: u64, attempt: u32) -> String {
        format!("_backhaul_{}_c{chunk_id:06}_a{attempt:03}", self.spec.table)
    }

    /// The partition copy job's id: the same for every insert of one attempt of one chunk.
    pub fn copy_job_id(&self, job_id: &str, chunk_id: u64, attempt: u32) -> String {
        format!("{}_copy", self.load_job_id(job_id, chunk_id, attempt))
    }

    /// The load job's id: the same for every insert of one attempt of one chunk.
    pub fn load_job_id(&self, job_id: &str, chunk_id: u64, attempt: u32) -> String {
        format!(
            "backhaul_{}_{}_{job_id}_c{chunk_id:06}_a{attempt:03}",
            self.spec.dataset, self.spec.table
        )
    }

    /// Creates the control table when missing, and adds the columns a control table made by an
    /// earlier version lacks.
    async fn ensure_control(&self, rest: &Rest) -> Result<()> {
        let field = |name: &str, t: FieldType| TableFieldSchema::new(name, t);
        let added = || CONTROL_ADDED_COLUMNS.iter().map(|name| field(name, FieldType::String));
        if let Some(existing) = rest.get_table(&self.spec.dataset, &self.control_name()).await? {
            return add_missing_fields(rest, &self.spec.dataset, existing, added().collect()).await;
        }
        let schema = TableSchema::new(
            vec![
                field("job_id", FieldType::String),
                field("chunk_id", FieldType::Int64),
                field("attempt", FieldType::Int64),
                field("range_from", FieldType::Int64),
                field("range_to", FieldType::Int64),
                field("cursor_column", FieldType::String),
                field("arrow_schema", FieldType::String),
                field("blocked_fingerprint", FieldType::String),
                field("committed_at", FieldType::Timestamp),
            ]
            .into_iter()
            .chain(added())
            .collect(),
        );
        let table = Table::new(&self.spec.project, &self.spec.dataset, &self.control_name(), schema);
        match rest.create_table(table).await {
            // Created meanwhile by another prepare.
            Err(BigQueryError::Api { status: 409, .. }) => Ok(()),
            other => other,
        }
    }

    /// Creates the versions table of a dedup job's table when missing (the loaded columns and
    /// the chunk id, clustered by it so one chunk's rows are read alone), or adds the loaded
    /// columns it lacks (schema evolution, as for the target).
    async fn ensure_versions(&self, rest: &Rest, schema: &Schema) -> Result<()> {
        let mut fields = Vec::new();
        for field in self.loaded_fields(schema) {
            fields.push(field_schema(field.name(), self.bq_type(field)?.0));
        }
        let name = self.versions_name();
        if let Some(existing) = rest.get_table(&self.spec.dataset, &name).await? {
            return add_missing_fields(rest, &self.spec.dataset, existing, fields).await;
        }
        fields.push(TableFieldSchema::new(CHUNK_COLUMN, FieldType::Int64));
        let mut table = Table::new(&self.spec.project, &self.spec.dataset, &name, TableSchema::new(fields));
        table.clustering = Some(Clustering {
            fields: Some(vec![CHUNK_COLUMN.into()]),
        });
        match rest.create_table(table).await {
            Err(BigQueryError::Api { status: 409, .. }) => Ok(()),
            other => other,
        }
    }

    /// The owner row, or `None` when the control table or the row is missing.
    async fn read_owner(&self, rest: &Rest) -> Result<Option<Owner>> {
        if let Some(owner) = self.owner.get() {
            return Ok(Some(owner.clone()));
        }
        if rest
            .get_table(&self.spec.dataset, &self.control_name())
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let rows = rest
            .query(&format!(
                "SELECT job_id, arrow_schema FROM {} WHERE chunk_id = {OWNER_ROW}",
                self.qualified(&self.control_name())
            ))
            .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let (Some(job_id), Some(encoded)) = (row.first().cloned().flatten(), row.get(1).cloned().flatten()) else {
            return Err(BigQueryError::Protocol(
                "control table owner row without job or schema".into(),
            ));
        };
        let schema = decode_schema(&encoded)?;
        let owner = Owner {
            job_id,
            schema: Arc::new(schema),
        };
        let _ = self.owner.set(owner.clone());
        Ok(Some(owner))
    }

    /// The owner, or an error saying the table was never prepared.
    async fn owner(&self, rest: &Rest, job_id: &str) -> Result<Owner> {
        match self.read_owner(rest).await? {
            Some(owner) if owner.job_id == job_id => Ok(owner),
            Some(owner) => Err(BigQueryError::Conflict(format!(
                "table {}.{} is loaded by job `{}`, not `{job_id}`",
                self.spec.dataset, self.spec.table, owner.job_id
            ))),
            None => Err(BigQueryError::Conflict(format!(
                "table {}.{} was not prepared for job `{job_id}` (run plan first)",
                self.spec.dataset, self.spec.table
            ))),
        }
    }

    /// The BigQuery type of a source column under this spec (`json_columns`).
    fn bq_type(&self, field: &Field) -> Result<(BqType, Option<String>)> {
        match bq_type(field)? {
            (BqType::Json, _) if self.spec.json_columns == JsonColumns::String => Ok((
                BqType::String,
                Some("JSON stored as STRING (destination.json_columns = \"string\")".into()),
            )),
            other => Ok(other),
        }
    }

    /// The columns loaded into the target: the schema without blocked columns.
    fn loaded_fields<'a>(&'a self, schema: &'a Schema) -> impl Iterator<Item = &'a Arc<Field>> + 'a {
        schema
            .fields()
            .iter()
            .filter(|f| !self.spec.blocked_columns.iter().any(|b| b == f.name()))
    }

    /// Creates the target table, or adopts an existing one: adds missing columns (schema
    /// evolution) and refuses a column whose type conflicts.
    async fn ensure_target(&self, rest: &Rest, schema: &Schema, cursor_column: Option<&str>) -> Result<()> {
        let mut wanted = Vec::new();
        for field in self.loaded_fields(schema) {
            let (t, _) = self.bq_type(field)?;
            wanted.push((field.name().clone(), t));
        }
        match rest.get_table(&self.spec.dataset, &self.spec.table).await? {
            None if cursor_column.is_none()
                && self.spec.partitioning == Partitioning::CursorDay
                && wanted
                    .iter()
                    .any(|(_, t)| matches!(t, BqType::Timestamp | BqType::Date | BqType::DateTime)) =>
            {
                // Partitioned by the cursor, which `prepare` does not know: the first commit
                // creates the table (see `target_partitioning`).
                Ok(())
            }
            None => {
                let table_schema = TableSchema::new(wanted.iter().map(|(n, t)| field_schema(n, *t)).collect());
                let mut table = Table::new(&self.spec.project, &self.spec.dataset, &self.spec.table, table_schema);
                if self.spec.partitioning == Partitioning::CursorDay
                    && let Some(cursor) = cursor_column
                    && let Some((_, t)) = wanted.iter().find(|(n, _)| n == cursor)
                    && matches!(t, BqType::Timestamp | BqType::Date | BqType::DateTime)
                {
                    table = table.time_partitioning(TimePartitioning {
                        expiration_ms: None,
                        field: Some(cursor.to_string()),
                        require_partition_filter: None,
                        r#type: "DAY".into(),
                    });
                }
                if !self.spec.clustering.is_empty() {
                    table.clustering = Some(Clustering {
                        fields: Some(self.spec.clustering.clone()),
                    });
                }
                match rest.create_table(table).await {
                    Err(BigQueryError::Api { status: 409, .. }) => Ok(()),
                    other => other,
                }
            }
            Some(mut existing) => {
                let mut fields = existing.schema.fields.take().unwrap_or_default();
                let have: HashMap<String, String> = fields
                    .iter()
                    .map(|f| (f.name.to_ascii_lowercase(), rest_type_name(&f.r#type)))
                    .collect();
                let mut added = false;
                for (name, t) in &wanted {
                    match have.get(&name.to_ascii_lowercase()) {
                        None => {
                            fields.push(field_schema(name, *t));
                            added = true;
                        }
                        Some(table_type) => {
                            let compatible = BqType::from_rest(table_type).is_some_and(|tt| compatible(tt, *t));
                            if !compatible {
                                return Err(BigQueryError::TypeConflict {
                                    column: name.clone(),
                                    table_type: table_type.clone(),
                                    source_type: t.name().into(),
                                });
                            }
                        }
                    }
                }
                if added {
                    // Schema evolution: NULLABLE columns appended by `tables.patch`, the way
                    // ALLOW_FIELD_ADDITION would add them.
                    existing.schema.fields = Some(fields);
                    rest.patch_table(&self.spec.dataset, &self.spec.table, existing).await?;
                }
                Ok(())
            }
        }
    }

    async fn prepare_table(&self, job_id: &str, schema: SchemaRef) -> Result<()> {
        let rest = self.rest().await?;
        rest.check_dataset(&self.spec.dataset).await?;
        for field in schema.fields() {
            self.bq_type(field)?;
        }
        if let Some(missing) = self
            .spec
            .clustering
            .iter()
            .find(|c| !self.loaded_fields(&schema).any(|f| f.name() == *c))
        {
            return Err(BigQueryError::Unsupported {
                column: missing.clone(),
                message: "destination.clustering names a column the source does not give".into(),
            });
        }
        self.ensure_control(rest).await?;
        if let Some(owner) = self.read_owner(rest).await? {
            if owner.job_id != job_id {
                return Err(BigQueryError::Conflict(format!(
                    "table {}.{} is loaded by job `{}`; job `{job_id}` needs another table",
                    self.spec.dataset, self.spec.table, owner.job_id
                )));
            }
            if let Some(diff) = backhaul_core::schema::schema_difference(&owner.schema, &schema) {
                // Say it in the source's terms when columns were added, dropped or retyped.
                let changes = backhaul_core::schema::SchemaChanges::between(&owner.schema, &schema);
                let what = if let Some(type_change) = changes.type_change() {
                    type_change
                } else if changes.is_empty() {
                    diff
                } else {
                    format!(
                        "the source's columns changed ({changes}); BigQuery tables do not follow schema changes yet"
                    )
                };
                return Err(BigQueryError::Conflict(format!(
                    "table {}.{} holds job `{job_id}`'s rows of another schema: {what}",
                    self.spec.dataset, self.spec.table
                )));
            }
            return Ok(());
        }
        self.ensure_target(rest, &schema, None).await?;
        rest.query(&format!(
            "INSERT INTO {} (job_id, chunk_id, arrow_schema, committed_at) VALUES ('{job_id}', {OWNER_ROW}, '{}', CURRENT_TIMESTAMP())",
            self.qualified(&self.control_name()),
            encode_schema(&schema)?
        ))
        .await?;
        let _ = self.owner.set(Owner {
            job_id: job_id.into(),
            schema,
        });
        Ok(())
    }

    /// The committed attempt of a chunk, if any.
    async fn chunk_row(&self, rest: &Rest, job_id: &str, chunk_id: u64) -> Result<Option<ChunkRow>> {
        let rows = rest
            .query(&format!(
                "SELECT attempt, range_from, range_to, cursor_column, blocked_fingerprint, sync_mode FROM {} WHERE job_id = '{job_id}' AND chunk_id = {chunk_id}",
                self.qualified(&self.control_name())
            ))
            .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let int = |i: usize| -> Result<i64> {
            row.get(i)
                .cloned()
                .flatten()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| BigQueryError::Protocol(format!("control row of chunk {chunk_id}: column {i}")))
        };
        Ok(Some(ChunkRow {
            attempt: u32::try_from(int(0)?).unwrap_or(0),
            range: CursorRange::new(int(1)?, int(2)?),
            cursor_column: row.get(3).cloned().flatten().unwrap_or_default(),
            blocked: match row.get(4).cloned().flatten() {
                Some(text) => serde_json::from_str(&text).map_err(|e| {
                    BigQueryError::Protocol(format!("control row of chunk {chunk_id}: blocked_fingerprint: {e}"))
                })?,
                None => Vec::new(),
            },
            merged: row.get(5).cloned().flatten().as_deref() == Some(SyncMode::Dedup.as_str()),
        }))
    }

    /// The `gs://` URL of a staged file.
    fn source_uri(&self, stage: &Stage, path: &str) -> Result<String> {
        if stage.kind() == StageKind::Gcs {
            return Ok(stage.file_url(&path.into()));
        }
        match &self.spec.stage_gcs_url {
            Some(base) => Ok(format!("{}/{path}", base.trim_end_matches('/'))),
            None => Err(BigQueryError::Protocol(format!(
                "stage {} is not gs:// and destination.stage_gcs_url is not set",
                stage.url()
            ))),
        }
    }

    /// SQL predicate selecting `range` of the cursor column.
    fn range_predicate(&self, schema: &Schema, cursor_column: &str, range: CursorRange) -> Result<String> {
        let field = schema.field_with_name(cursor_column).map_err(|_| {
            BigQueryError::Protocol(format!("cursor column `{cursor_column}` is not in the table's schema"))
        })?;
        let (t, _) = self.bq_type(field)?;
        let bound = |v: i64| cursor_literal(t, v);
        Ok(format!(
            "`{cursor_column}` >= {} AND `{cursor_column}` < {}",
            bound(range.from)?,
            bound(range.to)?
        ))
    }

    /// Measures the fingerprint of `from` (a table and predicate) over `columns`.
    async fn measure(&self, rest: &Rest, columns: Vec<Field>, from: &str) -> Result<ChunkProof> {
        let columns = Arc::new(Schema::new(columns));
        let sql = FingerprintSql::new(
            &columns,
            &BigQueryDialect::for_schema(&columns, self.spec.json_columns == JsonColumns::String),
        );
        let rows = rest.query(&format!("SELECT {} FROM {from}", sql.select_list())).await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| BigQueryError::Protocol("the fingerprint query returned no row".into()))?;
        let fingerprint = sql
            .parse(&row)
            .map_err(|e| BigQueryError::Protocol(format!("fingerprint: {e}")))?;
        Ok(ChunkProof {
            level: PROOF_LEVEL,
            rows: fingerprint.rows,
            checksum: None,
            fingerprint: Some(fingerprint),
        })
    }

    /// The load job's configuration (REST `JobConfigurationLoad`).
    fn load_configuration(&self, uris: &[String], staging: &str) -> serde_json::Value {
        json!({
            "sourceUris": uris,
            "sourceFormat": "PARQUET",
            "destinationTable": {
                "projectId": self.spec.project,
                "datasetId": self.spec.dataset,
                "tableId": staging,
            },
            "writeDisposition": "WRITE_TRUNCATE",
            "createDisposition": "CREATE_NEVER",
            // Decimals land in the narrowest type that holds them exactly.
            "decimalTargetTypes": ["NUMERIC", "BIGNUMERIC"],
            "parquetOptions": { "enableListInference": true },
        })
    }

    /// A copy job replacing partition `partition` (`YYYYMMDD`) of the target with the staging
    /// table.
    fn copy_configuration(&self, staging: &str, partition: &str) -> serde_json::Value {
        let table = |id: String| {
            json!({
                "projectId": self.spec.project,
                "datasetId": self.spec.dataset,
                "tableId": id,
            })
        };
        json!({
            "sourceTable": table(staging.to_string()),
            "destinationTable": table(format!("{}${partition}", self.spec.table)),
            "writeDisposition": "WRITE_TRUNCATE",
            "createDisposition": "CREATE_NEVER",
        })
    }

    /// The target's partitioning, creating the target first when `prepare` left that to the
    /// first commit (partitioned by `cursor_column`, which only commits know).
    async fn target_partitioning(
        &self,
        rest: &Rest,
        schema: &Schema,
        cursor_column: &str,
    ) -> Result<Option<TimePartitioning>> {
        if let Some(table) = rest.get_table(&self.spec.dataset, &self.spec.table).await? {
            return Ok(table.time_partitioning);
        }
        self.ensure_target(rest, schema, Some(cursor_column)).await?;
        Ok(rest
            .get_table(&self.spec.dataset, &self.spec.table)
            .await?
            .and_then(|t| t.time_partitioning))
    }

    /// The partition a commit replaces by copy: with `replace = "partition_copy"`, when the
    /// chunk is exactly one UTC day and the target is partitioned by day on the cursor column.
    fn partition_to_copy(
        &self,
        schema: &Schema,
        commit: &ChunkCommit,
        partitioning: Option<&TimePartitioning>,
    ) -> Result<Option<String>> {
        let by_cursor_day = partitioning
            .is_some_and(|p| p.r#type == "DAY" && p.field.as_deref() == Some(commit.cursor_column.as_str()));
        if self.spec.replace != Replace::PartitionCopy || !by_cursor_day {
            return Ok(None);
        }
        let Ok(field) = schema.field_with_name(&commit.cursor_column) else {
            return Ok(None);
        };
        Ok(day_partition(self.bq_type(field)?.0, commit.range))
    }

    async fn commit(&self, stage: &Stage, commit: &ChunkCommit) -> Result<ChunkProof> {
        let job = commit.job_id.as_str();
        if !is_valid_name(job) {
            return Err(BigQueryError::Protocol(format!("`{job}` is not a valid job id")));
        }
        let (chunk, attempt) = (commit.chunk_id, commit.attempt);
        if commit.sync.as_ref().is_some_and(|s| s.mode == SyncMode::Dedup)
            && self.spec.replace == Replace::PartitionCopy
        {
            return Err(partition_copy_dedup().into());
        }
        let refresh = commit.sync.as_ref().is_some_and(|s| s.mode.replaces_table());
        let rest = self.rest().await?;
        let owner = self.owner(rest, job).await?;
        let schema = owner.schema.clone();
        let loaded: Vec<String> = self.loaded_fields(&schema).map(|f| f.name().clone()).collect();
        let dedup = DedupSql::for_commit(
            commit,
            &format!("{}.{}", self.spec.dataset, self.spec.table),
            &loaded,
            |c| format!("`{c}`"),
        )?;
        // Cheap early fence: a stale worker should not even load. Checked again inside the
        // transaction.
        let committed = self.chunk_row(rest, job, chunk).await?;
        refuse_stale(committed.as_ref(), job, chunk, attempt)?;
        if dedup.is_some() {
            self.ensure_versions(rest, &schema).await?;
        }
        let staging = self.staging_name(chunk, attempt);
        let staging_exists = rest.get_table(&self.spec.dataset, &staging).await?.is_some();
        if let Some(row) = committed.as_ref().filter(|r| r.attempt == attempt && !staging_exists) {
            // This attempt already committed and cleaned up: a retried commit. Measure what is
            // there; the caller checks it.
            return self.measure_committed(rest, &schema, chunk, row).await;
        }
        if commit.files.len() > MAX_URIS_PER_LOAD_JOB {
            return Err(BigQueryError::Protocol(format!(
                "chunk {chunk} has {} files; one load job takes at most {MAX_URIS_PER_LOAD_JOB}: plan smaller chunks",
                commit.files.len()
            )));
        }
        let bytes: u64 = commit.files.iter().map(|f| f.bytes).sum();
        if bytes > MAX_BYTES_PER_LOAD_JOB {
            return Err(BigQueryError::Protocol(format!(
                "chunk {chunk} stages {bytes} bytes; one load job takes at most 15 TB: plan smaller chunks"
            )));
        }

        let partitioning = self.target_partitioning(rest, &schema, &commit.cursor_column).await?;

        // 1. Load into the staging table (all columns, in file order).
        let storage_write = self.spec.write_method == WriteMethod::StorageWrite;
        if storage_write && staging_exists {
            // A stream commit is not a truncate: start this attempt's staging table afresh.
            rest.delete_table(&self.spec.dataset, &staging).await?;
        }
        if !staging_exists || storage_write {
            let mut fields = Vec::new();
            for field in schema.fields() {
                fields.push(field_schema(field.name(), self.bq_type(field)?.0));
            }
            let table = Table::new(
                &self.spec.project,
                &self.spec.dataset,
                &staging,
                TableSchema::new(fields),
            );
            match rest.create_table(table).await {
                Err(BigQueryError::Api { status: 409, .. }) | Ok(()) => {}
                Err(e) => return Err(e),
            }
        }
        if !commit.files.is_empty() {
            let result = if storage_write {
                let types = schema
                    .fields()
                    .iter()
                    .map(|f| self.bq_type(f).map(|(t, _)| t))
                    .collect::<Result<Vec<_>>>()?;
                let writer = self.writer().await?;
                crate::storage_write::write_files(
                    writer,
                    stage,
                    &commit.files,
                    &self.spec.project,
                    &self.spec.dataset,
                    &staging,
                    &types,
                )
                .await
                .map(|_| ())
            } else {
                let uris = commit
                    .files
                    .iter()
                    .map(|f| self.source_uri(stage, &f.path))
                    .collect::<Result<Vec<_>>>()?;
                let job_id = self.load_job_id(job, chunk, attempt);
                rest.run_load_job(&job_id, self.load_configuration(&uris, &staging))
                    .await
                    .map(|_| ())
            };
            if let Err(e) = result {
                let _ = rest.delete_table(&self.spec.dataset, &staging).await;
                return Err(e);
            }
        }

        // 2. Check what would be committed before anything visible changes.
        // Every column, blocked ones too: the staging table holds them all.
        let all = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let staged = self.measure(rest, all, &self.qualified(&staging)).await?;
        if let Err(e) = staged.verify(
            &commit.extracted,
            format!("chunk {chunk} of job {job} (attempt {attempt}) as loaded"),
        ) {
            let _ = rest.delete_table(&self.spec.dataset, &staging).await;
            return Err(BigQueryError::Core(e));
        }

        // 3. Replace the chunk's rows and record the attempt.
        let control = self.qualified(&self.control_name());
        let fence = format!(
            "SELECT ERROR(CONCAT('stale attempt {attempt}: attempt ', CAST(attempt AS STRING), ' is committed')) FROM {control} WHERE job_id = '{job}' AND chunk_id = {chunk} AND attempt > {attempt};"
        );
        let mode = match dedup {
            Some(_) => format!("'{}'", SyncMode::Dedup.as_str()),
            None if refresh => format!("'{}'", SyncMode::FullRefresh.as_str()),
            None => "NULL".to_string(),
        };
        let record = format!(
            "DELETE FROM {control} WHERE job_id = '{job}' AND chunk_id = {chunk};\n\
             INSERT INTO {control} (job_id, chunk_id, attempt, range_from, range_to, cursor_column, blocked_fingerprint, sync_mode, committed_at) VALUES ('{job}', {chunk}, {attempt}, {from}, {to}, '{cursor}', {blocked}, {mode}, CURRENT_TIMESTAMP());",
            from = commit.range.from,
            to = commit.range.to,
            cursor = commit.cursor_column,
            blocked = blocked_literal(&staged, &self.spec.blocked_columns)?,
        );
        let partition = match dedup {
            Some(_) => None,
            // A refresh replaces every row, not one partition.
            None if refresh => None,
            None => self.partition_to_copy(&schema, commit, partitioning.as_ref())?,
        };
        let script = match partition {
            Some(partition) => {
                // The copy cannot join a transaction: fence once more right before it, so only
                // an attempt whose lease expired within these milliseconds could still copy
                // over a newer one (docs: "Partition copy").
                let row = self.chunk_row(rest, job, chunk).await?;
                if let Err(stale) = refuse_stale(row.as_ref(), job, chunk, attempt) {
                    let _ = rest.delete_table(&self.spec.dataset, &staging).await;
                    return Err(stale);
                }
                let copy_id = self.copy_job_id(job, chunk, attempt);
                rest.run_job(&copy_id, "copy", self.copy_configuration(&staging, &partition))
                    .await?;
                format!("BEGIN TRANSACTION;\n{fence}\n{record}\nCOMMIT TRANSACTION;")
            }
            None => match &dedup {
                Some(dedup) => {
                    let (versions, staging_q) = (self.qualified(&self.versions_name()), self.qualified(&staging));
                    format!(
                        "BEGIN TRANSACTION;\n{fence}\n{};\n{};\n{};\n{record}\nCOMMIT TRANSACTION;",
                        dedup.forget_chunk(&versions),
                        dedup.keep_chunk(&versions, &staging_q),
                        dedup.merge(&self.target(), &staging_q)
                    )
                }
                None if refresh => {
                    // A full refresh is a new version of the whole table: every row goes and
                    // the chunk's rows come in the one transaction, so readers see the old
                    // version until COMMIT. An older refresh than a committed one (a replay)
                    // never replaces the newer version.
                    let columns = self
                        .loaded_fields(&schema)
                        .map(|f| format!("`{}`", f.name()))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!(
                        "BEGIN TRANSACTION;\n\
                     {fence}\n\
                     SELECT ERROR(CONCAT('chunk {chunk} is an older full refresh than the committed chunk ', CAST(chunk_id AS STRING))) FROM {control} WHERE job_id = '{job}' AND chunk_id > {chunk};\n\
                     DELETE FROM {target} WHERE TRUE;\n\
                     INSERT INTO {target} ({columns}) SELECT {columns} FROM {staging_q};\n\
                     {record}\n\
                     COMMIT TRANSACTION;",
                        target = self.target(),
                        staging_q = self.qualified(&staging),
                    )
                }
                None => {
                    let predicate = self.range_predicate(&schema, &commit.cursor_column, commit.range)?;
                    let columns = self
                        .loaded_fields(&schema)
                        .map(|f| format!("`{}`", f.name()))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!(
                        "BEGIN TRANSACTION;\n\
                     {fence}\n\
                     DELETE FROM {target} WHERE {predicate};\n\
                     INSERT INTO {target} ({columns}) SELECT {columns} FROM {staging_q};\n\
                     {record}\n\
                     COMMIT TRANSACTION;",
                        target = self.target(),
                        staging_q = self.qualified(&staging),
                    )
                }
            },
        };
        self.run_transaction(rest, &script, job, chunk, attempt).await?;
        rest.delete_table(&self.spec.dataset, &staging).await?;

        // What is committed now, measured over the range (or the chunk's versions).
        let row = ChunkRow {
            attempt,
            range: commit.range,
            cursor_column: commit.cursor_column.clone(),
            blocked: blocked_measures(&staged, &self.spec.blocked_columns),
            merged: dedup.is_some(),
        };
        self.measure_committed(rest, &schema, chunk, &row).await
    }

    /// Runs the replacing transaction. BigQuery cancels a transaction that conflicts with
    /// another one mutating the same table (HTTP 400 `invalidQuery`, "Could not serialize access
    /// … due to concurrent update"), which its reason cannot tell from an invalid statement. So
    /// commits of one table are serialized inside this process, and a failed transaction is
    /// retried a few times with jittered backoff (other processes may hold the table); a
    /// stale attempt found meanwhile is refused as such, and what still fails is reported as
    /// [`BigQueryError::TransactionAborted`] (transient: the coordinator retries the chunk).
    async fn run_transaction(&self, rest: &Rest, script: &str, job: &str, chunk: u64, attempt: u32) -> Result<()> {
        let lock = table_lock(&format!(
            "{}.{}.{}",
            self.spec.project, self.spec.dataset, self.spec.table
        ));
        let _held = lock.lock().await;
        let mut pause = self.transaction_retry_first;
        let mut tries = 0;
        loop {
            tries += 1;
            let error = match rest.query(script).await {
                Ok(_) => return Ok(()),
                Err(e @ BigQueryError::Api { .. }) if e.reason() == Some("invalidQuery") => e,
                Err(other) => return Err(other),
            };
            refuse_stale(self.chunk_row(rest, job, chunk).await?.as_ref(), job, chunk, attempt)?;
            if tries >= TRANSACTION_ATTEMPTS {
                return Err(BigQueryError::TransactionAborted {
                    tries,
                    message: error.to_string(),
                });
            }
            tokio::time::sleep(jittered(pause)).await;
            pause *= 2;
        }
    }

    /// The committed chunk's proof: its stored columns measured now (its range of the target,
    /// or, merged by key, its rows in the versions table), the blocked columns' measures as
    /// taken from the staging table at commit (they are not stored: nothing to re-measure).
    async fn measure_committed(
        &self,
        rest: &Rest,
        schema: &Schema,
        chunk_id: u64,
        row: &ChunkRow,
    ) -> Result<ChunkProof> {
        let predicate = self.range_predicate(schema, &row.cursor_column, row.range)?;
        let from = match row.merged {
            false => format!("{} WHERE {predicate}", self.target()),
            true => format!(
                "{} WHERE {} AND {predicate}",
                self.qualified(&self.versions_name()),
                chunk_rows(chunk_id, |c| format!("`{c}`"))
            ),
        };
        let loaded = self.loaded_fields(schema).map(|f| f.as_ref().clone()).collect();
        let mut proof = self.measure(rest, loaded, &from).await?;
        if let Some(fingerprint) = &mut proof.fingerprint {
            fingerprint.columns.extend(row.blocked.iter().cloned());
        }
        Ok(proof)
    }

    async fn read(&self, job_id: &str, chunk_id: u64) -> Result<Option<ChunkProof>> {
        let rest = self.rest().await?;
        let Some(owner) = self.read_owner(rest).await? else {
            return Ok(None);
        };
        if owner.job_id != job_id {
            return Ok(None);
        }
        let Some(row) = self.chunk_row(rest, job_id, chunk_id).await? else {
            return Ok(None);
        };
        self.measure_committed(rest, &owner.schema, chunk_id, &row)
            .await
            .map(Some)
    }
}

impl Destination for BigQueryTable {
    fn prepare(
        &self,
        job_id: &str,
        schema: SchemaRef,
    ) -> BoxFuture<'_, CoreResult<backhaul_core::schema::SchemaChanges>> {
        let job_id = job_id.to_string();
        // A prepared table never changes schema here (any difference is refused), so nothing
        // ever changed.
        Box::pin(async move {
            self.prepare_table(&job_id, schema).await?;
            Ok(Default::default())
        })
    }

    fn proof_level(&self) -> ProofLevel {
        PROOF_LEVEL
    }

    fn commit_chunk<'a>(&'a self, stage: &'a Stage, commit: &'a ChunkCommit) -> BoxFuture<'a, CoreResult<ChunkProof>> {
        Box::pin(async move { Ok(self.commit(stage, commit).await?) })
    }

    fn read_back(&self, job_id: &str, chunk_id: u64) -> BoxFuture<'_, CoreResult<Option<ChunkProof>>> {
        let job_id = job_id.to_string();
        Box::pin(async move { Ok(self.read(&job_id, chunk_id).await?) })
    }

    fn column_type(&self, field: &Field) -> DestinationType {
        if self.spec.blocked_columns.iter().any(|b| b == field.name()) {
            return DestinationType {
                name: "(blocked: not loaded)".into(),
                lossy_step: Some("blocked by destination.blocked_columns".into()),
            };
        }
        match self.bq_type(field) {
            Ok((t, lossy_step)) => DestinationType {
                name: t.name().into(),
                lossy_step,
            },
            Err(e) => DestinationType {
                name: "(unsupported)".into(),
                lossy_step: Some(e.to_string()),
            },
        }
    }

    fn plan_notes(&self, chunks: &[PlannedChunk]) -> Vec<PlanNote> {
        plan_notes(&self.spec, chunks)
    }

    fn chunk_cap(&self) -> Option<ChunkCap> {
        Some(CHUNK_CAP)
    }

    /// `dedup` merges each chunk by key in its commit transaction, which `partition_copy` skips;
    /// `full_refresh` replaces every row in it (never by a partition copy).
    fn supports_sync_mode(&self, mode: SyncMode) -> bool {
        mode != SyncMode::Dedup || self.spec.replace != Replace::PartitionCopy
    }

    fn check_stage(&self, stage: &Stage) -> CoreResult<()> {
        if self.spec.write_method == crate::spec::WriteMethod::StorageWrite
            || stage.kind() == StageKind::Gcs
            || self.spec.stage_gcs_url.is_some()
        {
            return Ok(());
        }
        Err(Error::config(
            "<spec>",
            "stage.url",
            format!(
                "BigQuery load jobs read from gs:// only; stage {} is not gs:// (use a gs:// stage, set destination.stage_gcs_url to where BigQuery sees these files, or write_method = \"storage_write\")",
                stage.url()
            ),
        ))
    }
}

/// The blocked columns' measures of a proof.
fn blocked_measures(proof: &ChunkProof, blocked: &[String]) -> Vec<ColumnFingerprint> {
    proof
        .fingerprint
        .iter()
        .flat_map(|f| f.columns.iter())
        .filter(|c| blocked.contains(&c.name))
        .cloned()
        .collect()
}

/// The blocked columns' measures as a SQL string literal (JSON), or `NULL` when none are blocked.
fn blocked_literal(proof: &ChunkProof, blocked: &[String]) -> Result<String> {
    if blocked.is_empty() {
        return Ok("NULL".into());
    }
    let json = serde_json::to_string(&blocked_measures(proof, blocked))
        .map_err(|e| BigQueryError::Protocol(format!("blocked column measures: {e}")))?;
    Ok(format!("'{}'", json.replace('\\', "\\\\").replace('\'', "\\'")))
}

/// Appends to `existing` (by `tables.patch`) the `wanted` fields it lacks, NULLABLE.
async fn add_missing_fields(
    rest: &Rest,
    dataset: &str,
    mut existing: Table,
    wanted: Vec<TableFieldSchema>,
) -> Result<()> {
    let mut fields = existing.schema.fields.take().unwrap_or_default();
    let missing: Vec<TableFieldSchema> = wanted
        .into_iter()
        .filter(|w| !fields.iter().any(|f| f.name.eq_ignore_ascii_case(&w.name)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fields.extend(missing);
    existing.schema.fields = Some(fields);
    let name = existing.table_reference.table_id.clone();
    rest.patch_table(dataset, &name, existing).await
}

/// Why `replace = "partition_copy"` and sync mode `dedup` do not combine.
fn partition_copy_dedup() -> Error {
    Error::config(
        "<spec>",
        "destination.replace",
        "replace = \"partition_copy\" copies a chunk over its day, but a dedup chunk does not own a day \
         (it merges by key into rows of any day): use replace = \"transaction\" with sync.mode = \"dedup\"",
    )
}

/// The attempt fence outside the transaction: `attempt` of the chunk is stale when the
/// control row records a newer one.
fn refuse_stale(committed: Option<&ChunkRow>, job: &str, chunk: u64, attempt: u32) -> Result<()> {
    match committed {
        Some(row) if row.attempt > attempt => Err(BigQueryError::StaleAttempt {
            job_id: job.into(),
            chunk_id: chunk,
            attempt,
            committed: row.attempt,
        }),
        _ => Ok(()),
    }
}

/// One async mutex per table, shared by every handle in the process.
fn table_lock(table: &str) -> Arc<tokio::sync::Mutex<()>> {
    type Locks = std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: std::sync::OnceLock<Locks> = std::sync::OnceLock::new();
    // The map only holds Arcs; a panic while it was locked cannot have broken it.
    let mut map = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.entry(table.to_string()).or_default().clone()
}

/// `pause` ±50%, so processes that conflicted once do not retry in step.
fn jittered(pause: std::time::Duration) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let factor = 0.5 + (hasher.finish() % 1000) as f64 / 1000.0;
    pause.mul_f64(factor)
}

/// What a plan of `chunks` uses of BigQuery's quotas.
pub fn plan_notes(spec: &BigQuerySpec, chunks: &[PlannedChunk]) -> Vec<PlanNote> {
    let n = chunks.len();
    let note = |message: String| PlanNote {
        warning: false,
        message,
    };
    let warn = |message: String| PlanNote { warning: true, message };
    if spec.write_method == crate::spec::WriteMethod::StorageWrite {
        return vec![note(format!(
            "{n} chunks, each one PENDING Storage Write stream into its staging table (no load jobs; the stage need not be gs://); Storage Write is billed beyond 2 TiB a month"
        ))];
    }
    let total: u64 = chunks.iter().map(|c| c.estimated_bytes).sum();
    let mut notes = vec![note(format!(
        "{n} load jobs (one per chunk, each into the chunk's own staging table) and {n} commit transactions on {}.{}; BigQuery allows 1,500 load jobs per table per day, 100,000 per project, and 5 table updates per 10 s (50 when partitioned): faster commits are answered rateLimitExceeded and retried later",
        spec.dataset, spec.table
    ))];
    if n > LOAD_JOBS_PER_TABLE_PER_DAY {
        let days = n.div_ceil(LOAD_JOBS_PER_TABLE_PER_DAY);
        let per_chunk = total.div_ceil(LOAD_JOBS_PER_TABLE_PER_DAY as u64);
        notes.push(warn(format!(
            "{n} commits exceed the 1,500 per table per day that BigQuery runs at once (INSERT DML beyond that is queued, load jobs into the table itself would fail quotaExceeded): a run this size spans at least {days} days of quota; chunking.target_bytes of at least {} MiB keeps it within 1,500 chunks",
            per_chunk.div_ceil(1024 * 1024)
        )));
    }
    let file_size = spec
        .file_size_bytes("<spec>")
        .unwrap_or(crate::spec::DEFAULT_FILE_SIZE)
        .max(1);
    if let Some(big) = chunks.iter().max_by_key(|c| c.estimated_bytes) {
        if big.estimated_bytes > MAX_BYTES_PER_LOAD_JOB {
            notes.push(warn(format!(
                "chunk {} is estimated at {} bytes, above the 15 TB one load job takes: plan smaller chunks",
                big.index, big.estimated_bytes
            )));
        }
        let files = big.estimated_bytes.div_ceil(file_size);
        if files > MAX_URIS_PER_LOAD_JOB as u64 {
            notes.push(warn(format!(
                "chunk {} would stage about {files} files, above the 10,000 URIs one load job takes: raise destination.file_size or plan smaller chunks",
                big.index
            )));
        }
    }
    notes
}

/// A cursor value as a SQL literal of the column's type. Constant literals (not
/// `TIMESTAMP_MICROS(n)`) let BigQuery prune partitions, so a range delete or fingerprint scans
/// only the chunk's days.
fn cursor_literal(t: BqType, value: i64) -> Result<String> {
    let out_of_range = || BigQueryError::Protocol(format!("cursor value {value} is out of range for {}", t.name()));
    Ok(match t {
        BqType::Timestamp | BqType::DateTime => {
            let at = chrono::DateTime::from_timestamp_micros(value).ok_or_else(out_of_range)?;
            let text = at.format("%Y-%m-%d %H:%M:%S%.6f");
            if t == BqType::Timestamp {
                format!("TIMESTAMP '{text}+00'")
            } else {
                format!("DATETIME '{text}'")
            }
        }
        BqType::Date => {
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).ok_or_else(out_of_range)?;
            let day = epoch
                .checked_add_signed(chrono::TimeDelta::days(value))
                .ok_or_else(out_of_range)?;
            format!("DATE '{}'", day.format("%Y-%m-%d"))
        }
        _ => value.to_string(),
    })
}

/// The `YYYYMMDD` partition id of `range` when it is exactly one UTC day of a cursor of type
/// `t` (microseconds for TIMESTAMP/DATETIME, days for DATE).
fn day_partition(t: BqType, range: CursorRange) -> Option<String> {
    const DAY_MICROS: i64 = 86_400_000_000;
    let day = match t {
        BqType::Timestamp | BqType::DateTime
            if range.from.rem_euclid(DAY_MICROS) == 0 && range.to.checked_sub(range.from) == Some(DAY_MICROS) =>
        {
            range.from.div_euclid(DAY_MICROS)
        }
        BqType::Date if range.to.checked_sub(range.from) == Some(1) => range.from,
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(chrono::TimeDelta::days(day))?;
    Some(date.format("%Y%m%d").to_string())
}

/// A REST schema field of a BigQuery type (every column NULLABLE: the fingerprint counts NULLs).
fn field_schema(name: &str, t: BqType) -> TableFieldSchema {
    let field_type = match t {
        BqType::Int64 => FieldType::Int64,
        BqType::Float64 => FieldType::Float64,
        BqType::Numeric => FieldType::Numeric,
        BqType::BigNumeric => FieldType::Bignumeric,
        BqType::Bool => FieldType::Bool,
        BqType::String => FieldType::String,
        BqType::Bytes => FieldType::Bytes,
        BqType::Json => FieldType::Json,
        BqType::Date => FieldType::Date,
        BqType::Time => FieldType::Time,
        BqType::DateTime => FieldType::Datetime,
        BqType::Timestamp => FieldType::Timestamp,
    };
    TableFieldSchema::new(name, field_type)
}

/// The REST name of a crate field type (`INTEGER`, `NUMERIC`, …).
fn rest_type_name(t: &FieldType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The exact Arrow schema as base64 Arrow IPC (types, zones and field metadata kept).
fn encode_schema(schema: &Schema) -> Result<String> {
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)
        .map_err(|e| BigQueryError::Protocol(format!("schema encoding: {e}")))?;
    writer
        .finish()
        .map_err(|e| BigQueryError::Protocol(format!("schema encoding: {e}")))?;
    let bytes = writer
        .into_inner()
        .map_err(|e| BigQueryError::Protocol(format!("schema encoding: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn decode_schema(text: &str) -> Result<Schema> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| BigQueryError::Protocol(format!("control table schema: {e}")))?;
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| BigQueryError::Protocol(format!("control table schema: {e}")))?;
    Ok(reader.schema().as_ref().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, TimeUnit};

    #[test]
    fn plan_notes_count_load_jobs_and_warn_past_the_daily_quota() {
        let spec: BigQuerySpec = toml::from_str("project = \"p-1234\"\ndataset = \"d\"\ntable = \"t\"").unwrap();
        let chunk = |index: u64| PlannedChunk {
            index,
            range: CursorRange::new(index as i64, index as i64 + 1),
            estimated_rows: 1,
            estimated_bytes: 512 << 20,
        };
        let few: Vec<_> = (0..3).map(chunk).collect();
        let notes = plan_notes(&spec, &few);
        assert_eq!(notes.len(), 1);
        assert!(
            !notes[0].warning && notes[0].message.starts_with("3 load jobs"),
            "{notes:?}"
        );
        let many: Vec<_> = (0..2_000).map(chunk).collect();
        let notes = plan_notes(&spec, &many);
        assert!(notes[1].warning, "{notes:?}");
        assert!(
            notes[1].message.contains("at least 2 days") && notes[1].message.contains("683 MiB"),
            "{notes:?}"
        );
    }

    #[test]
    fn only_a_chunk_of_exactly_one_utc_day_has_a_partition_to_copy() {
        let day = 86_400_000_000;
        let d = 19_431; // 2023-03-15
        assert_eq!(
            day_partition(BqType::Timestamp, CursorRange::new(d * day, (d + 1) * day)).as_deref(),
            Some("20230315")
        );
        assert_eq!(
            day_partition(BqType::Date, CursorRange::new(d, d + 1)).as_deref(),
            Some("20230315")
        );
        assert_eq!(
            day_partition(BqType::Timestamp, CursorRange::new(d * day + 1, (d + 1) * day + 1)),
            None
        );
        assert_eq!(
            day_partition(BqType::Timestamp, CursorRange::new(d * day, (d + 2) * day)),
            None
        );
        assert_eq!(day_partition(BqType::Date, CursorRange::new(d, d + 2)), None);
        assert_eq!(day_partition(BqType::Int64, CursorRange::new(0, day)), None);
        // Before 1970 too.
        assert_eq!(
            day_partition(BqType::Timestamp, CursorRange::new(-day, 0)).as_deref(),
            Some("19691231")
        );
    }

    #[test]
    fn a_partition_copy_truncates_the_days_partition_from_the_staging_table() {
        let mut spec = BigQuerySpec::new("p-1234", "sales", "orders");
        spec.replace = Replace::PartitionCopy;
        let table = BigQueryTable::new(spec).unwrap();
        assert_eq!(
            table.copy_configuration("_backhaul_orders_c000003_a001", "20230315"),
            json!({
                "sourceTable": {"projectId": "p-1234", "datasetId": "sales", "tableId": "_backhaul_orders_c000003_a001"},
                "destinationTable": {"projectId": "p-1234", "datasetId": "sales", "tableId": "orders$20230315"},
                "writeDisposition": "WRITE_TRUNCATE",
                "createDisposition": "CREATE_NEVER",
            })
        );
        assert_eq!(
            table.copy_job_id("orders-2023", 3, 1),
            format!("{}_copy", table.load_job_id("orders-2023", 3, 1))
        );
    }

    #[test]
    fn cursor_literals_are_constants_of_the_column_type() {
        assert_eq!(
            cursor_literal(BqType::Timestamp, 1_678_838_447_441_253).unwrap(),
            "TIMESTAMP '2023-03-15 00:00:47.441253+00'"
        );
        assert_eq!(
            cursor_literal(BqType::DateTime, 0).unwrap(),
            "DATETIME '1970-01-01 00:00:00.000000'"
        );
        assert_eq!(cursor_literal(BqType::Date, 19_431).unwrap(), "DATE '2023-03-15'");
        assert_eq!(cursor_literal(BqType::Int64, -5).unwrap(), "-5");
    }

    #[test]
    fn schemas_round_trip_through_the_control_table_text() {
        let json = HashMap::from([("ARROW:extension:name".to_string(), "arrow.json".to_string())]);
        let schema = Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("doc", DataType::Utf8, true).with_metadata(json),
            Field::new("amount", DataType::Decimal128(38, 9), true),
        ]);
        let text = encode_schema(&schema).unwrap();
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
        assert_eq!(decode_schema(&text).unwrap(), schema);
    }
}
