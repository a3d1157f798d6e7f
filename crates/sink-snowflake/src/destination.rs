//! The Snowflake [`Destination`]: tables from Arrow schemas, one transaction per chunk commit,
//! and the chunk fingerprint recomputed in SQL.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use backhaul_core::connector::{ChunkCommit, Destination, DestinationType, SyncMode};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::dedup::{CHUNK_COLUMN, DedupSql, chunk_rows};
use backhaul_core::fingerprint::FingerprintSql;
use backhaul_core::proof::{ChunkProof, ProofLevel};
use backhaul_core::schema::SchemaChanges;
use backhaul_core::stage::Stage;
use backhaul_core::{Error, ErrorClass, Result};
use backhaul_snowflake_client::{Client, ClientConfig, PutFile, PutOptions, QueryResult};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::future::BoxFuture;
use object_store::path::Path;

use crate::dialect::{SnowflakeDialect, column_ident, cursor_literal, literal, stored_column_name};
use crate::failpoint::{self, Failpoint};
use crate::spec::{SnowflakeDestinationSpec, StageMode};
use crate::types::{ColumnType, destination_type, existing_type, snowflake_type};

/// Table recording which job owns each loaded table, and its exact Arrow schema.
pub const TABLES_TABLE: &str = "_BACKHAUL_TABLES";
/// Table recording each committed chunk: attempt, cursor range and rows.
pub const CHUNKS_TABLE: &str = "_BACKHAUL_CHUNKS";
/// `_BACKHAUL_CHUNKS` columns added after its first release, for tables created before them:
/// how a dedup commit landed (`SYNC_MODE` is NULL for a plain commit), and the columns the
/// chunk's proof measured (`ARROW_SCHEMA`: the source's when it committed; a table that followed
/// an added or dropped column since has others, and `read_back` must measure the chunk's).
const CHUNKS_ADDED_COLUMNS: [(&str, &str); 4] = [
    ("SYNC_MODE", "VARCHAR"),
    ("ROWS_INSERTED", "NUMBER(20,0)"),
    ("ROWS_UPDATED", "NUMBER(20,0)"),
    ("ARROW_SCHEMA", "VARCHAR"),
];

const PROOF_LEVEL: ProofLevel = ProofLevel::Fingerprint;
/// The versions table of table `T` is `_BACKHAUL_VERSIONS_T`.
pub const VERSIONS_PREFIX: &str = "_BACKHAUL_VERSIONS_";

/// A Snowflake table loaded by one job.
#[derive(Debug, Clone)]
pub struct SnowflakeDestination {
    spec: SnowflakeDestinationSpec,
    config: ClientConfig,
    mode: StageMode,
}

/// What `_BACKHAUL_TABLES` holds for the table.
#[derive(Debug, Clone)]
struct TableRecord {
    job_id: String,
    schema: SchemaRef,
}

/// What `_BACKHAUL_CHUNKS` holds for one chunk.
#[derive(Debug, Clone)]
struct ChunkRecord {
    attempt: u32,
    cursor_column: String,
    range: CursorRange,
    /// `dedup` when the chunk was merged by key: its rows are in the versions table.
    sync_mode: Option<String>,
    /// The columns its proof measured; `None` for chunks committed before this was recorded
    /// (the table's record then).
    schema: Option<SchemaRef>,
}

/// Maps a client error to the crate error of the same class; the server's message is kept.
pub(crate) fn from_client(e: backhaul_snowflake_client::Error, what: &str) -> Error {
    let message = format!("{what}: {e}");
    match e.class() {
        ErrorClass::Transient => Error::Unreachable {
            system: "snowflake".into(),
            message,
        },
        ErrorClass::Throttled => Error::Throttled {
            system: "snowflake".into(),
            message,
        },
        ErrorClass::Permanent => Error::InvalidObject {
            object: "snowflake".into(),
            message,
        },
    }
}

impl SnowflakeDestination {
    /// A destination for `spec`; reads its secrets (no connection yet).
    pub fn new(spec: &SnowflakeDestinationSpec) -> Result<Self> {
        let mut config = spec.client_config()?;
        // Offsets of TIMESTAMP_TZ values and literals read in UTC, whatever the account default.
        config
            .session_parameters
            .insert("TIMEZONE".into(), serde_json::Value::String("UTC".into()));
        Ok(SnowflakeDestination {
            mode: spec.stage_mode("<spec>")?,
            spec: spec.clone(),
            config,
        })
    }

    /// The table's name as Snowflake stores it (unquoted identifiers are upper-case).
    pub fn table_name(&self) -> String {
        self.spec.table.to_ascii_uppercase()
    }

    /// `DATABASE.SCHEMA.<name>`.
    fn qualified(&self, name: &str) -> String {
        format!("{}.{}.{}", self.spec.database, self.spec.schema, name)
    }

    fn table(&self) -> String {
        self.qualified(&self.spec.table)
    }

    /// The versions table of a dedup job's table: every chunk's rows, tagged with its id.
    fn versions_table(&self) -> String {
        self.qualified(&format!("{VERSIONS_PREFIX}{}", self.table_name()))
    }

    async fn connect(&self) -> Result<Session> {
        let client = Client::connect(self.config.clone())
            .await
            .map_err(|e| from_client(e, &format!("login as `{}`", self.spec.user)))?;
        Ok(Session {
            client: Arc::new(client),
        })
    }

    /// Checks the session has the database, schema and warehouse the spec names: Snowflake
    /// logs in without them when they are missing or not granted, and fails later.
    async fn check_context(&self, session: &Session) -> Result<()> {
        let missing = |key: &str, wanted: &str| Error::InvalidObject {
            object: format!("snowflake {key} `{wanted}` (destination.{key})"),
            message: "does not exist or is not granted to the role".into(),
        };
        let row = session.row("SELECT CURRENT_DATABASE(), CURRENT_SCHEMA()").await?;
        if row.first().cloned().flatten().is_none() {
            return Err(missing("database", &self.spec.database));
        }
        if row.get(1).cloned().flatten().is_none() {
            return Err(missing("schema", &self.spec.schema));
        }
        match session.client.query("SELECT CURRENT_WAREHOUSE()").await {
            Ok(result) => match rows_of(&result.batches)?
                .first()
                .and_then(|r| r.first().cloned().flatten())
            {
                Some(_) => Ok(()),
                None => Err(missing("warehouse", &self.spec.warehouse)),
            },
            // A server without the function (fakesnow) cannot say; COPY would fail later.
            Err(backhaul_snowflake_client::Error::Sql { message, .. }) => {
                tracing::warn!("snowflake: the warehouse cannot be checked: {message}");
                Ok(())
            }
            Err(e) => Err(from_client(e, "SELECT CURRENT_WAREHOUSE()")),
        }
    }

    async fn create_control_tables(&self, session: &Session) -> Result<()> {
        session
            .run(&format!(
                "CREATE TABLE IF NOT EXISTS {} (TABLE_NAME VARCHAR NOT NULL, JOB_ID VARCHAR NOT NULL, \
                 ARROW_SCHEMA VARCHAR NOT NULL, PREPARED_AT TIMESTAMP_TZ)",
                self.qualified(TABLES_TABLE)
            ))
            .await?;
        session
            .run(&format!(
                "CREATE TABLE IF NOT EXISTS {} (TABLE_NAME VARCHAR NOT NULL, JOB_ID VARCHAR NOT NULL, \
                 CHUNK_ID NUMBER(20,0) NOT NULL, ATTEMPT NUMBER(10,0) NOT NULL, CURSOR_COLUMN VARCHAR NOT NULL, \
                 RANGE_FROM NUMBER(20,0) NOT NULL, RANGE_TO NUMBER(20,0) NOT NULL, ROW_COUNT NUMBER(20,0) NOT NULL, \
                 COMMITTED_AT TIMESTAMP_TZ)",
                self.qualified(CHUNKS_TABLE)
            ))
            .await?;
        for (column, ddl) in CHUNKS_ADDED_COLUMNS {
            session
                .run(&format!(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {column} {ddl}",
                    self.qualified(CHUNKS_TABLE)
                ))
                .await?;
        }
        Ok(())
    }

    /// Whether `name` exists in the spec's schema.
    async fn table_exists(&self, session: &Session, name: &str) -> Result<bool> {
        let rows = session
            .rows(&format!(
                "SELECT TABLE_NAME FROM {}.INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                self.spec.database,
                literal(&self.spec.schema.to_ascii_uppercase()),
                literal(name)
            ))
            .await?;
        Ok(!rows.is_empty())
    }

    async fn table_record(&self, session: &Session) -> Result<Option<TableRecord>> {
        let rows = session
            .rows(&format!(
                "SELECT JOB_ID, ARROW_SCHEMA FROM {} WHERE TABLE_NAME = {}",
                self.qualified(TABLES_TABLE),
                literal(&self.table_name())
            ))
            .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let (Some(job_id), Some(schema)) = (row[0].clone(), row[1].clone()) else {
            return Err(Error::Internal(format!(
                "{TABLES_TABLE} holds NULLs for {}",
                self.table()
            )));
        };
        Ok(Some(TableRecord {
            job_id,
            schema: decode_schema(&schema)?,
        }))
    }

    async fn chunk_record(&self, session: &Session, job_id: &str, chunk_id: u64) -> Result<Option<ChunkRecord>> {
        let rows = session
            .rows(&format!(
                "SELECT ATTEMPT, CURSOR_COLUMN, RANGE_FROM, RANGE_TO, SYNC_MODE, ARROW_SCHEMA FROM {} WHERE {}",
                self.qualified(CHUNKS_TABLE),
                self.chunk_key(job_id, chunk_id)
            ))
            .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let number = |i: usize| -> Result<i64> {
            row[i]
                .as_deref()
                .and_then(|t| t.trim().split('.').next().and_then(|t| t.parse().ok()))
                .ok_or_else(|| Error::Internal(format!("{CHUNKS_TABLE}: unreadable value {:?}", row[i])))
        };
        Ok(Some(ChunkRecord {
            attempt: u32::try_from(number(0)?).map_err(|e| Error::Internal(e.to_string()))?,
            cursor_column: row[1].clone().unwrap_or_default(),
            range: CursorRange::new(number(2)?, number(3)?),
            sync_mode: row[4].clone(),
            schema: row[5].as_deref().map(decode_schema).transpose()?,
        }))
    }

    /// Refuses a full refresh older than one already committed (a replay of an old version):
    /// the newest version stays the table. Runs inside the commit's transaction.
    async fn refuse_older_version(&self, session: &Session, commit: &ChunkCommit) -> Result<()> {
        let newer = session
            .rows(&format!(
                "SELECT max(CHUNK_ID) FROM {} WHERE TABLE_NAME = {} AND JOB_ID = {} AND CHUNK_ID > {}",
                self.qualified(CHUNKS_TABLE),
                literal(&self.table_name()),
                literal(&commit.job_id),
                commit.chunk_id
            ))
            .await?
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten());
        match newer {
            Some(newer) => Err(Error::DestinationConflict(format!(
                "chunk {} of job `{}` is an older full refresh of {} than the committed chunk {}: a refresh never replaces a newer version",
                commit.chunk_id,
                commit.job_id,
                self.table(),
                newer.trim()
            ))),
            None => Ok(()),
        }
    }

    fn chunk_key(&self, job_id: &str, chunk_id: u64) -> String {
        format!(
            "TABLE_NAME = {} AND JOB_ID = {} AND CHUNK_ID = {chunk_id}",
            literal(&self.table_name()),
            literal(job_id)
        )
    }

    /// The existing table's columns: stored name → type.
    async fn existing_columns(&self, session: &Session) -> Result<Vec<(String, ColumnType)>> {
        let rows = session
            .rows(&format!(
                "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE FROM {}.INFORMATION_SCHEMA.COLUMNS \
                 WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
                self.spec.database,
                literal(&self.spec.schema.to_ascii_uppercase()),
                literal(&self.table_name())
            ))
            .await?;
        let int = |v: &Option<String>| v.as_deref().and_then(|t| t.trim().parse::<i64>().ok());
        Ok(rows
            .into_iter()
            .map(|r| {
                let name = r[0].clone().unwrap_or_default();
                let t = existing_type(r[1].as_deref().unwrap_or_default(), int(&r[2]), int(&r[3]));
                (name, t)
            })
            .collect())
    }

    async fn prepare_table(&self, job_id: &str, schema: SchemaRef) -> Result<SchemaChanges> {
        let mut wanted = Vec::new();
        for field in schema.fields() {
            let (t, precision, _) = snowflake_type(field, self.spec.json_type())
                .map_err(|why| Error::TypeFidelity(format!("column `{}` of {}: {why}", field.name(), self.table())))?;
            wanted.push((field.clone(), t, precision));
        }
        let session = self.connect().await?;
        let result = async {
            self.check_context(&session).await?;
            self.create_control_tables(&session).await?;
            let record = self.table_record(&session).await?;
            if let Some(record) = &record
                && record.job_id != job_id
            {
                return Err(Error::DestinationConflict(format!(
                    "table {} belongs to job `{}`, not `{job_id}`",
                    self.table(),
                    record.job_id
                )));
            }
            // The one rule of what changed since the last prepare: added columns are added
            // below (unless blocked), dropped ones stay and COPY leaves them NULL (it matches
            // the staged files' columns by name), a type change is refused.
            let changes = record
                .as_ref()
                .map(|r| SchemaChanges::between(&r.schema, &schema))
                .unwrap_or_default();
            if let Some(type_change) = changes.type_change() {
                return Err(Error::DestinationConflict(format!("table {}: {type_change}", self.table())));
            }
            let existing = if self.table_exists(&session, &self.table_name()).await? {
                Some(self.existing_columns(&session).await?)
            } else {
                None
            };
            // Every check first: a refused prepare changes nothing.
            let mut added = Vec::new();
            if let Some(columns) = &existing {
                for (field, t, precision) in &wanted {
                    let stored = stored_column_name(field.name());
                    match columns.iter().find(|(n, _)| *n == stored) {
                        Some((_, have)) if have.accepts(t) => {}
                        Some((_, have)) => {
                            return Err(Error::DestinationConflict(format!(
                                "column `{}` of table {} is {}, the source's {} needs {}",
                                field.name(),
                                self.table(),
                                have.display(),
                                field.data_type(),
                                t.ddl(*precision)
                            )));
                        }
                        None if self.spec.is_blocked(field.name()) => {
                            return Err(Error::DestinationConflict(format!(
                                "column `{}` is new in the source and blocked by destination.blocked_columns; \
                                 table {} is unchanged",
                                field.name(),
                                self.table()
                            )));
                        }
                        None => added.push((field.clone(), t.ddl(*precision))),
                    }
                }
            }
            match &existing {
                None => {
                    let columns: Vec<String> = wanted
                        .iter()
                        .map(|(f, t, p)| format!("{} {}", column_ident(f.name()), t.ddl(*p)))
                        .collect();
                    session
                        .run(&format!("CREATE TABLE IF NOT EXISTS {} ({})", self.table(), columns.join(", ")))
                        .await?;
                }
                Some(_) => {
                    // A dedup job's versions table takes every new column too.
                    let versions = format!("{VERSIONS_PREFIX}{}", self.table_name());
                    let mut tables = vec![self.table()];
                    if !added.is_empty() && self.table_exists(&session, &versions).await? {
                        tables.push(self.versions_table());
                    }
                    for (field, ddl) in &added {
                        tracing::info!(table = %self.table(), column = %field.name(), "adding a new source column");
                        for table in &tables {
                            session
                                .run(&format!(
                                    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {} {ddl}",
                                    column_ident(field.name())
                                ))
                                .await?;
                        }
                    }
                }
            }
            let encoded = literal(&encode_schema(&schema)?);
            session
                .run(&format!(
                    "MERGE INTO {t} AS t USING (SELECT {name} AS TABLE_NAME, {job} AS JOB_ID, {encoded} AS ARROW_SCHEMA) AS s \
                     ON t.TABLE_NAME = s.TABLE_NAME \
                     WHEN MATCHED AND t.JOB_ID = s.JOB_ID THEN UPDATE SET ARROW_SCHEMA = s.ARROW_SCHEMA \
                     WHEN NOT MATCHED THEN INSERT (TABLE_NAME, JOB_ID, ARROW_SCHEMA, PREPARED_AT) \
                     VALUES (s.TABLE_NAME, s.JOB_ID, s.ARROW_SCHEMA, CURRENT_TIMESTAMP())",
                    t = self.qualified(TABLES_TABLE),
                    name = literal(&self.table_name()),
                    job = literal(job_id),
                ))
                .await?;
            // Two jobs preparing at once: the row that stayed decides.
            match self.table_record(&session).await? {
                Some(r) if r.job_id == job_id => Ok(()),
                Some(r) => Err(Error::DestinationConflict(format!(
                    "table {} belongs to job `{}`, not `{job_id}`",
                    self.table(),
                    r.job_id
                ))),
                None => Err(Error::Internal(format!("{TABLES_TABLE} lost the row of {}", self.table()))),
            }?;
            if !changes.is_empty() {
                tracing::info!(table = %self.table(), %changes, "the table follows the source's columns");
            }
            Ok(changes)
        }
        .await;
        session.close().await;
        result
    }

    /// `WHERE` of the chunk's rows.
    fn range_predicate(&self, schema: &Schema, cursor_column: &str, range: CursorRange) -> Result<String> {
        let field = schema
            .field_with_name(cursor_column)
            .map_err(|_| Error::InvalidObject {
                object: format!("column {}.{cursor_column}", self.table()),
                message: "the cursor column is not in the table's schema".into(),
            })?;
        let kind = CursorKind::of(field.data_type()).ok_or_else(|| Error::InvalidObject {
            object: format!("column {}.{cursor_column}", self.table()),
            message: format!("type {} cannot bound a chunk", field.data_type()),
        })?;
        let c = column_ident(cursor_column);
        Ok(format!(
            "{c} >= {} AND {c} < {}",
            cursor_literal(kind, field.data_type(), range.from),
            cursor_literal(kind, field.data_type(), range.to)
        ))
    }

    /// The fingerprint of `table`'s rows matching `predicate`.
    async fn fingerprint(
        &self,
        session: &Session,
        schema: &SchemaRef,
        table: &str,
        predicate: &str,
    ) -> Result<ChunkProof> {
        let sql = FingerprintSql::new(
            schema,
            &SnowflakeDialect {
                json: self.spec.json_type(),
            },
        );
        let statement = format!("SELECT {} FROM {table} WHERE {predicate}", sql.select_list());
        let row = session.row(&statement).await?;
        let fingerprint = sql.parse(&row)?;
        Ok(ChunkProof {
            level: PROOF_LEVEL,
            rows: fingerprint.rows,
            checksum: None,
            fingerprint: Some(fingerprint),
        })
    }

    /// The Snowflake location of the commit's files: `@STAGE/<prefix>/`.
    fn location(&self, commit: &ChunkCommit) -> String {
        let attempt = Stage::attempt_prefix(&commit.job_id, commit.chunk_id, commit.attempt);
        match &self.mode {
            StageMode::Internal { stage } => format!("@{stage}/backhaul/{attempt}/"),
            StageMode::External { stage } => format!("@{stage}/{attempt}/"),
        }
    }

    async fn commit(&self, stage: &Stage, commit: &ChunkCommit) -> Result<ChunkProof> {
        let what = format!("chunk {} of job {}", commit.chunk_id, commit.job_id);
        let attempt_prefix = Stage::attempt_prefix(&commit.job_id, commit.chunk_id, commit.attempt);
        let mut put_files = Vec::with_capacity(commit.files.len());
        for file in &commit.files {
            let path = Path::from(file.path.as_str());
            let name = path
                .prefix_match(&attempt_prefix)
                .and_then(|mut parts| match (parts.next(), parts.next()) {
                    (Some(name), None) => Some(name.as_ref().to_string()),
                    _ => None,
                })
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "staged file {} of {what} is not directly under {attempt_prefix}",
                        file.path
                    ))
                })?;
            put_files.push(PutFile {
                name,
                store: stage.store().clone(),
                path,
                size: file.bytes,
            });
        }
        let session = self.connect().await?;
        let result = self.commit_in(&session, commit, &put_files, &what).await;
        match &result {
            // The failpoint left the transaction open on purpose: close as a crash would.
            Err(_) => session.abandon().await,
            Ok(_) => session.close().await,
        }
        result
    }

    async fn commit_in(
        &self,
        session: &Session,
        commit: &ChunkCommit,
        put_files: &[PutFile],
        what: &str,
    ) -> Result<ChunkProof> {
        let record = match self.table_record(session).await {
            Ok(Some(r)) if r.job_id == commit.job_id => r,
            Ok(Some(r)) => {
                return Err(Error::DestinationConflict(format!(
                    "table {} belongs to job `{}`, not `{}`",
                    self.table(),
                    r.job_id,
                    commit.job_id
                )));
            }
            Err(e) => return Err(e),
            Ok(None) => {
                return Err(Error::InvalidObject {
                    object: self.table(),
                    message: format!("not prepared for job `{}`; prepare runs at plan time", commit.job_id),
                });
            }
        };
        let stale = |committed: u32| Error::LeaseLost {
            lease_id: format!("{}/{}/{}", commit.job_id, commit.chunk_id, commit.attempt),
            message: format!("attempt {committed} of {what} is already committed in {}", self.table()),
        };
        let columns: Vec<String> = record.schema.fields().iter().map(|f| f.name().clone()).collect();
        let dedup = DedupSql::for_commit(commit, &self.table(), &columns, column_ident)?;
        let refresh = commit.sync.as_ref().is_some_and(|s| s.mode.replaces_table());
        // Refused before uploading anything; checked again under the table's lock below.
        if let Some(c) = self.chunk_record(session, &commit.job_id, commit.chunk_id).await?
            && c.attempt > commit.attempt
        {
            return Err(stale(c.attempt));
        }
        let location = self.location(commit);
        if matches!(self.mode, StageMode::Internal { .. }) && !put_files.is_empty() {
            let started = std::time::Instant::now();
            let uploaded = session
                .put(
                    put_files.to_vec(),
                    location.clone(),
                    PutOptions {
                        parallel: self.spec.put_parallel(),
                        ..PutOptions::default()
                    },
                )
                .await
                .map_err(|e| from_client(e, &format!("PUT of {what} to {location}")))?;
            let bytes: u64 = uploaded.iter().map(|o| o.bytes).sum();
            tracing::info!(
                job = %commit.job_id, chunk = commit.chunk_id, attempt = commit.attempt,
                files = uploaded.len(), bytes, elapsed_ms = started.elapsed().as_millis() as u64,
                "snowflake: PUT {location}"
            );
        }
        if failpoint::fires(&self.table_name(), Failpoint::AfterPut) {
            return Err(injected("after PUT", what));
        }

        let predicate = self.range_predicate(&record.schema, &commit.cursor_column, commit.range)?;
        let log = |statement: &str| {
            tracing::info!(
                job = %commit.job_id, chunk = commit.chunk_id, attempt = commit.attempt,
                "snowflake: {statement}"
            )
        };
        let run = |statement: String| async move {
            log(&statement);
            session.query(&statement).await
        };
        if dedup.is_some() {
            // DDL commits an open transaction: the tables are made first. The versions table
            // is made like the target on the first dedup commit; `prepare` adds new columns.
            let versions = self.versions_table();
            run(format!("CREATE TABLE IF NOT EXISTS {versions} LIKE {}", self.table())).await?;
            run(format!(
                "ALTER TABLE {versions} ADD COLUMN IF NOT EXISTS {} NUMBER(20,0)",
                column_ident(CHUNK_COLUMN)
            ))
            .await?;
        }
        run("BEGIN".into()).await?;
        let outcome = async {
            let expected_rows: u64 = commit.files.iter().map(|f| f.rows).sum();
            let copy = |into: String| async move {
                if commit.files.is_empty() {
                    return Ok(());
                }
                let loaded = rows_loaded(&run(self.copy_statement(&into, &location)).await?)?;
                if loaded != expected_rows {
                    return Err(Error::VerificationFailed {
                        what: what.to_string(),
                        message: format!("COPY loaded {loaded} rows, the staged files hold {expected_rows}"),
                    });
                }
                Ok(())
            };
            let fence = || async {
                if let Some(c) = self.chunk_record(session, &commit.job_id, commit.chunk_id).await?
                    && c.attempt > commit.attempt
                {
                    return Err(stale(c.attempt));
                }
                Ok(())
            };
            let (proof, counts) = match &dedup {
                None if refresh => {
                    // A full refresh is a new version of the whole table: every row goes, the
                    // chunk's rows come, in this one transaction, so readers see the old
                    // version until COMMIT. The DELETE takes the table's lock first.
                    run(format!("DELETE FROM {}", self.table())).await?;
                    fence().await?;
                    self.refuse_older_version(session, commit).await?;
                    copy(self.table()).await?;
                    let proof = self
                        .fingerprint(session, &record.schema, &self.table(), &predicate)
                        .await?;
                    log(&format!("fingerprint of {} rows over {predicate}", proof.rows));
                    proof.verify(&commit.extracted, what)?;
                    (proof, None)
                }
                None => {
                    // The DELETE takes the table's lock first, so the attempt read next sees
                    // every commit that finished before ours could start.
                    run(format!("DELETE FROM {} WHERE {predicate}", self.table())).await?;
                    fence().await?;
                    copy(self.table()).await?;
                    let proof = self
                        .fingerprint(session, &record.schema, &self.table(), &predicate)
                        .await?;
                    log(&format!("fingerprint of {} rows over {predicate}", proof.rows));
                    proof.verify(&commit.extracted, what)?;
                    (proof, None)
                }
                Some(dedup) => {
                    // The versions table holds the chunk (the target's range no longer is it):
                    // its DELETE of an earlier attempt's rows takes that table's lock first, so
                    // the rows COPY leaves untagged are this commit's alone.
                    let versions = self.versions_table();
                    run(dedup.forget_chunk(&versions)).await?;
                    fence().await?;
                    copy(versions.clone()).await?;
                    let chunk_column = column_ident(CHUNK_COLUMN);
                    run(format!(
                        "UPDATE {versions} SET {chunk_column} = {} WHERE {chunk_column} IS NULL",
                        commit.chunk_id
                    ))
                    .await?;
                    let rows = format!("{} AND {predicate}", dedup.chunk_rows());
                    let proof = self.fingerprint(session, &record.schema, &versions, &rows).await?;
                    log(&format!("fingerprint of {} rows over {rows}", proof.rows));
                    proof.verify(&commit.extracted, what)?;
                    // DELETE + INSERT rather than MERGE, for the reason given at the control row
                    // below.
                    let (target, staged) = (self.table(), dedup.chunk_versions(&versions));
                    let replaced = run(format!(
                        "DELETE FROM {target} WHERE {}",
                        dedup.superseded(&staged, &target)
                    ))
                    .await?;
                    let written = run(dedup.insert_winners(&target, &staged)).await?;
                    let (updated, written) = (rows_affected(&replaced)?, rows_affected(&written)?);
                    let inserted = written.saturating_sub(updated);
                    log(&format!("dedup: {inserted} keys inserted, {updated} updated"));
                    (proof, Some((inserted, updated)))
                }
            };
            // DELETE + INSERT rather than MERGE: the same inside the transaction, and fakesnow
            // cannot MERGE in a transaction that already wrote (its MERGE writes a catalog of
            // its own, and DuckDB writes one database per transaction).
            run(format!(
                "DELETE FROM {} WHERE {}",
                self.qualified(CHUNKS_TABLE),
                self.chunk_key(&commit.job_id, commit.chunk_id)
            ))
            .await?;
            let (mode, inserted, updated) = match counts {
                Some((inserted, updated)) => (
                    literal(SyncMode::Dedup.as_str()),
                    inserted.to_string(),
                    updated.to_string(),
                ),
                None if refresh => (
                    literal(SyncMode::FullRefresh.as_str()),
                    "NULL".to_string(),
                    "NULL".to_string(),
                ),
                None => ("NULL".to_string(), "NULL".to_string(), "NULL".to_string()),
            };
            run(format!(
                "INSERT INTO {} (TABLE_NAME, JOB_ID, CHUNK_ID, ATTEMPT, CURSOR_COLUMN, RANGE_FROM, RANGE_TO, \
                 ROW_COUNT, COMMITTED_AT, SYNC_MODE, ROWS_INSERTED, ROWS_UPDATED, ARROW_SCHEMA) \
                 VALUES ({}, {}, {}, {}, {}, {}, {}, {}, CURRENT_TIMESTAMP(), {mode}, {inserted}, {updated}, {})",
                self.qualified(CHUNKS_TABLE),
                literal(&self.table_name()),
                literal(&commit.job_id),
                commit.chunk_id,
                commit.attempt,
                literal(&commit.cursor_column),
                commit.range.from,
                commit.range.to,
                proof.rows,
                literal(&encode_schema(&record.schema)?),
            ))
            .await?;
            if failpoint::fires(&self.table_name(), Failpoint::AfterCopy) {
                return Err(injected("after COPY, before COMMIT", what));
            }
            Ok(proof)
        }
        .await;
        match outcome {
            Ok(proof) => {
                run("COMMIT".into()).await?;
                Ok(proof)
            }
            Err(e) => {
                if !is_injected(&e) {
                    let _ = run("ROLLBACK".into()).await;
                }
                Err(e)
            }
        }
    }

    /// The chunk's COPY: the attempt's prefix holds exactly its files (see the crate docs for
    /// why `FORCE = TRUE` is exactly once here).
    fn copy_statement(&self, into: &str, location: &str) -> String {
        let purge = matches!(self.mode, StageMode::Internal { .. }) && !self.spec.keep_staged_files;
        let format = match self.spec.parquet_format_options().trim() {
            "" => "TYPE = PARQUET".to_string(),
            options => format!("TYPE = PARQUET {options}"),
        };
        format!(
            "COPY INTO {} FROM {location} FILE_FORMAT = ({format}) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE \
             ON_ERROR = ABORT_STATEMENT FORCE = TRUE{}",
            into,
            if purge { " PURGE = TRUE" } else { "" }
        )
    }

    async fn read_back_chunk(&self, job_id: &str, chunk_id: u64) -> Result<Option<ChunkProof>> {
        let session = self.connect().await?;
        let result = async {
            if !self.table_exists(&session, CHUNKS_TABLE).await? || !self.table_exists(&session, TABLES_TABLE).await? {
                return Ok(None);
            }
            let Some(chunk) = self.chunk_record(&session, job_id, chunk_id).await? else {
                return Ok(None);
            };
            let record = self.table_record(&session).await?.ok_or_else(|| Error::InvalidObject {
                object: self.table(),
                message: format!("chunk {chunk_id} is recorded but the table's own record is gone"),
            })?;
            if record.job_id != job_id {
                return Err(Error::DestinationConflict(format!(
                    "table {} belongs to job `{}`, not `{job_id}`",
                    self.table(),
                    record.job_id
                )));
            }
            // The chunk's own columns: the table may have followed the source since.
            let schema = chunk.schema.clone().unwrap_or(record.schema);
            let predicate = self.range_predicate(&schema, &chunk.cursor_column, chunk.range)?;
            if chunk.sync_mode.as_deref() == Some(SyncMode::Dedup.as_str()) {
                let rows = format!("{} AND {predicate}", chunk_rows(chunk_id, column_ident));
                return self
                    .fingerprint(&session, &schema, &self.versions_table(), &rows)
                    .await
                    .map(Some);
            }
            self.fingerprint(&session, &schema, &self.table(), &predicate)
                .await
                .map(Some)
        }
        .await;
        session.close().await;
        result
    }
}

fn injected(point: &str, what: &str) -> Error {
    Error::Unreachable {
        system: "snowflake".into(),
        message: format!("injected failure {point} of {what} (failpoint)"),
    }
}

fn is_injected(e: &Error) -> bool {
    matches!(e, Error::Unreachable { message, .. } if message.ends_with("(failpoint)"))
}

/// The rows a DELETE or INSERT changed: the first column of its one result row.
fn rows_affected(result: &QueryResult) -> Result<u64> {
    let rows = rows_of(&result.batches)?;
    let text = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .ok_or_else(|| Error::Internal("a DML statement reported no row count".into()))?;
    text.trim()
        .split('.')
        .next()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| Error::Internal(format!("a DML statement reported `{text}` rows")))
}

/// Sum of `rows_loaded` over COPY's result rows (none when no file was processed).
fn rows_loaded(result: &QueryResult) -> Result<u64> {
    let Some(index) = result
        .schema
        .fields()
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case("rows_loaded"))
    else {
        return Ok(0);
    };
    let mut total = 0u64;
    for row in rows_of(&result.batches)? {
        if let Some(text) = &row[index] {
            total += text
                .trim()
                .split('.')
                .next()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| Error::Internal(format!("COPY reported rows_loaded `{text}`")))?;
        }
    }
    Ok(total)
}

/// Every value as text, NULL as `None`.
fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Vec<Option<String>>>> {
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for i in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| (!c.is_null(i)).then(|| f.value(i).to_string()))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// The Arrow schema as base64 IPC: exact types, zones and field metadata.
fn encode_schema(schema: &Schema) -> Result<String> {
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, schema)?;
    writer.finish()?;
    drop(writer);
    Ok(BASE64.encode(bytes))
}

fn decode_schema(text: &str) -> Result<SchemaRef> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|e| Error::Internal(format!("{TABLES_TABLE}: schema is not base64: {e}")))?;
    Ok(StreamReader::try_new(Cursor::new(bytes), None)?.schema())
}

/// One logged-in session; closed (logged out) when done.
struct Session {
    client: Arc<Client>,
}

impl Session {
    async fn put(
        &self,
        files: Vec<PutFile>,
        location: String,
        options: PutOptions,
    ) -> std::result::Result<Vec<backhaul_snowflake_client::PutOutcome>, backhaul_snowflake_client::Error> {
        self.client.put(&files, &location, &options).await
    }

    async fn query(&self, sql: &str) -> Result<QueryResult> {
        self.client
            .query(sql)
            .await
            .map_err(|e| from_client(e, &first_words(sql)))
    }

    async fn run(&self, sql: &str) -> Result<()> {
        self.query(sql).await.map(|_| ())
    }

    async fn rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        rows_of(&self.query(sql).await?.batches)
    }

    async fn row(&self, sql: &str) -> Result<Vec<Option<String>>> {
        self.rows(sql)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal(format!("`{}` returned no row", first_words(sql))))
    }

    /// Logs out; a failure only means the server drops the session later.
    async fn close(self) {
        let Ok(client) = Arc::try_unwrap(self.client) else {
            return;
        };
        if let Err(e) = client.close().await {
            tracing::debug!("snowflake logout failed: {e}");
        }
    }

    /// Ends a session whose transaction may be open: logging out rolls it back.
    async fn abandon(self) {
        self.close().await
    }
}

/// The start of a statement, for messages (never whole literals).
fn first_words(sql: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().take(6).collect();
    words.join(" ")
}

impl Destination for SnowflakeDestination {
    fn prepare(&self, job_id: &str, schema: SchemaRef) -> BoxFuture<'_, Result<SchemaChanges>> {
        let job = job_id.to_string();
        Box::pin(async move { self.prepare_table(&job, schema).await })
    }

    fn proof_level(&self) -> ProofLevel {
        PROOF_LEVEL
    }

    fn commit_chunk<'a>(&'a self, stage: &'a Stage, commit: &'a ChunkCommit) -> BoxFuture<'a, Result<ChunkProof>> {
        Box::pin(self.commit(stage, commit))
    }

    fn read_back(&self, job_id: &str, chunk_id: u64) -> BoxFuture<'_, Result<Option<ChunkProof>>> {
        let job = job_id.to_string();
        Box::pin(async move { self.read_back_chunk(&job, chunk_id).await })
    }

    fn column_type(&self, field: &Field) -> DestinationType {
        destination_type(field, self.spec.json_type())
    }

    /// Every mode: `dedup` merges each chunk by key and `full_refresh` replaces every row, each
    /// in the chunk's commit transaction.
    fn supports_sync_mode(&self, _mode: SyncMode) -> bool {
        true
    }

    fn check_stage(&self, stage: &Stage) -> Result<()> {
        use backhaul_core::stage::StageKind;
        match (&self.mode, stage.kind()) {
            (StageMode::External { stage: name }, StageKind::Local) => Err(Error::config(
                "<spec>",
                "stage.url",
                format!(
                    "destination.stage = `external:{name}` loads from the backhaul stage, which must be s3:// or gs:// \
                     (the location of Snowflake stage {name}); {} is a local directory",
                    stage.url()
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow::datatypes::{DataType, TimeUnit};
    use backhaul_core::connector::Destination;

    use super::*;

    #[test]
    fn schemas_survive_the_control_table_exactly() {
        let schema = Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("doc", DataType::Utf8, true).with_metadata(HashMap::from([(
                "ARROW:extension:name".to_string(),
                "arrow.json".to_string(),
            )])),
            Field::new("amount", DataType::Decimal128(38, 9), true),
        ]);
        let back = decode_schema(&encode_schema(&schema).unwrap()).unwrap();
        assert_eq!(back.as_ref(), &schema);
    }

    fn destination(extra: &str) -> SnowflakeDestination {
        let text = format!(
            "account = \"acme\"\nuser = \"LOADER\"\npassword_file = \"{}\"\ndatabase = \"DB\"\n\
             schema = \"RAW\"\nwarehouse = \"WH\"\ntable = \"orders\"\n{extra}",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")
        );
        SnowflakeDestination::new(&toml::from_str(&text).unwrap()).unwrap()
    }

    fn commit() -> ChunkCommit {
        ChunkCommit {
            job_id: "orders".into(),
            chunk_id: 7,
            attempt: 2,
            range: CursorRange::new(0, 10),
            cursor_column: "created_at".into(),
            files: vec![],
            extracted: Default::default(),
            sync: None,
        }
    }

    #[test]
    fn copy_reads_the_attempts_prefix_and_purges_internal_stages_only() {
        let internal = destination("");
        let location = internal.location(&commit());
        assert_eq!(location, "@~/backhaul/orders/chunk-000007/attempt-002/");
        assert_eq!(
            internal.copy_statement(&internal.table(), &location),
            "COPY INTO DB.RAW.orders FROM @~/backhaul/orders/chunk-000007/attempt-002/ \
             FILE_FORMAT = (TYPE = PARQUET USE_VECTORIZED_SCANNER = TRUE) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE \
             ON_ERROR = ABORT_STATEMENT FORCE = TRUE PURGE = TRUE"
        );
        let kept = destination("keep_staged_files = true\nstage = \"internal:LOADS\"");
        let location = kept.location(&commit());
        assert_eq!(location, "@LOADS/backhaul/orders/chunk-000007/attempt-002/");
        assert!(kept.copy_statement(&kept.table(), &location).ends_with("FORCE = TRUE"));
        // External: the backhaul stage's own layout, never purged (the worker owns those files).
        let external = destination("stage = \"external:RAW.S3_LOADS\"");
        let location = external.location(&commit());
        assert_eq!(location, "@RAW.S3_LOADS/orders/chunk-000007/attempt-002/");
        assert!(
            external
                .copy_statement(&external.table(), &location)
                .ends_with("FORCE = TRUE")
        );
    }

    #[tokio::test]
    async fn an_external_stage_needs_a_cloud_backhaul_stage() {
        let dir = tempfile::tempdir().unwrap();
        let local = Stage::local(dir.path()).await.unwrap();
        let e = destination("stage = \"external:S3_LOADS\"")
            .check_stage(&local)
            .unwrap_err()
            .to_string();
        assert!(e.contains("stage.url") && e.contains("s3://"), "{e}");
        destination("").check_stage(&local).unwrap();
    }

    #[test]
    fn statement_names_in_messages_stop_early() {
        assert_eq!(
            first_words("SELECT a,\n b FROM t WHERE x = 'secret' AND y"),
            "SELECT a, b FROM t WHERE"
        );
    }
}
