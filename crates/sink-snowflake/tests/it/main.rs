//! The Snowflake destination against fakesnow (a private server per test, from
//! `backhaul_testkit::fakesnow`; skipped when fakesnow is not installed, unless
//! `BACKHAUL_REQUIRE_SERVERS` is set).
//!
//! fakesnow gaps worked around here, never in the crate:
//! - one statement at a time per session: PUT uploads one file at a time (`put_parallel = 1`);
//! - no user stage `@~`: the tests load through a named internal stage (`internal:BACKHAUL_STAGE`);
//! - it creates any database and schema at login and has no `CURRENT_WAREHOUSE()`: a missing
//!   database is shown by dropping it after login (see `bad_input.rs`);
//! - it accepts every password: wrong credentials and 5xx are shown against a local HTTP
//!   server answering Snowflake's real codes (`bad_input.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use backhaul_conformance::corrupt::{Corruption, TamperCommitted};
use backhaul_conformance::destination::{DestinationOptions, check_destination_with};
use backhaul_conformance::{evidence, stage_batches};
use backhaul_core::connector::{ChunkCommit, Destination};
use backhaul_core::cursor::{CursorKind, CursorRange, SpecBound};
use backhaul_core::proof::ProofLevel;
use backhaul_core::stage::Stage;
use backhaul_sink_snowflake::dialect::{column_ident, cursor_literal};
use backhaul_sink_snowflake::{CHUNKS_TABLE, SnowflakeDestination, SnowflakeDestinationSpec};
use backhaul_snowflake_client::Client;
use backhaul_source_embedded::{EmbeddedSource, EmbeddedSourceSpec};
use backhaul_testkit::fakesnow::FakeSnow;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use tempfile::TempDir;

mod bad_input;
mod dedup;
mod load;

pub const DATABASE: &str = "BACKHAUL_TEST";
pub const SCHEMA: &str = "PUBLIC";
pub const STAGE: &str = "BACKHAUL_STAGE";
pub const JOB_BAD: &str = "orders-bad";

/// A private fakesnow, a local backhaul stage and a password file.
pub struct Env {
    pub fake: FakeSnow,
    pub dir: TempDir,
    pub stage: Stage,
    password_file: PathBuf,
}

impl Env {
    /// `None` when fakesnow is not installed (and not required).
    pub async fn start() -> Option<Env> {
        let fake = FakeSnow::start()?;
        let dir = TempDir::new().unwrap();
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, "fakesnow-takes-any\n").unwrap();
        let stage = Stage::local(&dir.path().join("stage")).await.unwrap();
        let env = Env {
            fake,
            dir,
            stage,
            password_file,
        };
        env.sql(&format!("CREATE STAGE IF NOT EXISTS {STAGE}")).await;
        Some(env)
    }

    pub fn spec(&self, table: &str) -> SnowflakeDestinationSpec {
        SnowflakeDestinationSpec {
            account: "test".into(),
            base_url: Some(self.fake.url.clone()),
            user: "loader".into(),
            password_env: None,
            password_file: Some(self.password_file.clone()),
            private_key_path: None,
            private_key_passphrase_env: None,
            private_key_passphrase_file: None,
            database: DATABASE.into(),
            schema: SCHEMA.into(),
            warehouse: "LOAD_WH".into(),
            role: None,
            table: table.into(),
            stage: Some(format!("internal:{STAGE}")),
            file_size: Some(backhaul_core::spec::ByteSizeText("1MiB".into())),
            allow_small_files: true,
            warehouse_size: None,
            keep_staged_files: false,
            blocked_columns: vec![],
            request_timeout: Some("20s".into()),
            statement_timeout: Some("60s".into()),
            max_attempts: Some(2),
            parquet_format_options: None,
            json_type: None,
            // fakesnow runs one statement per session at a time; PUT asks it for one URL per file.
            put_parallel: Some(1),
        }
    }

    pub fn destination(&self, spec: &SnowflakeDestinationSpec) -> Arc<dyn Destination> {
        Arc::new(SnowflakeDestination::new(spec).unwrap())
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.spec("UNUSED").client_config().unwrap())
            .await
            .unwrap()
    }

    /// Runs one statement in a session of its own; panics on failure.
    pub async fn sql(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let client = self.client().await;
        let result = client.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = client.close().await;
        text_rows(&result.batches)
    }

    /// One value of a one-row query.
    pub async fn value(&self, sql: &str) -> Option<String> {
        self.sql(sql)
            .await
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .flatten()
    }

    pub async fn count(&self, table: &str) -> u64 {
        self.value(&format!("SELECT COUNT(*) FROM {DATABASE}.{SCHEMA}.{table}"))
            .await
            .unwrap()
            .parse()
            .unwrap()
    }
}

pub fn text_rows(batches: &[RecordBatch]) -> Vec<Vec<Option<String>>> {
    use arrow::array::Array;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut rows = Vec::new();
    for b in batches {
        let options = FormatOptions::default();
        let f: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .zip(&f)
                    .map(|(c, f)| (!c.is_null(i)).then(|| f.value(i).to_string()))
                    .collect(),
            );
        }
    }
    rows
}

pub fn micros(text: &str) -> i64 {
    SpecBound::parse(text)
        .unwrap()
        .to_cursor(CursorKind::Timestamp)
        .unwrap()
}

/// One day of the embedded source's orders: Timestamp(us, UTC), Decimal128(18,2), JSON text,
/// Date32 with NULLs, non-ASCII text.
pub async fn source_rows(dir: &TempDir, range: CursorRange) -> Vec<RecordBatch> {
    let source = EmbeddedSource::open(&EmbeddedSourceSpec {
        path: dir.path().join("orders.db"),
        table: "orders".into(),
        cursor: "created_at".into(),
        rows_per_day: 300,
        seed: 7,
    })
    .unwrap();
    use backhaul_core::connector::Source;
    source.prepare(range).await.unwrap();
    source.extract(range, 1_000).await.unwrap().try_collect().await.unwrap()
}

pub fn one_day() -> CursorRange {
    CursorRange::new(micros("2023-03-15T00:00:00Z"), micros("2023-03-16T00:00:00Z"))
}

/// A commit of `batches` as chunk `chunk_id`, attempt `attempt`, staged in `parts` files.
pub async fn staged_commit(
    env: &Env,
    job: &str,
    chunk_id: u64,
    attempt: u32,
    range: CursorRange,
    batches: &[RecordBatch],
    parts: usize,
) -> ChunkCommit {
    let schema: SchemaRef = batches[0].schema();
    let files = stage_batches(&env.stage, job, chunk_id, attempt, &schema, batches, parts)
        .await
        .unwrap();
    ChunkCommit {
        job_id: job.into(),
        chunk_id,
        attempt,
        range,
        cursor_column: "created_at".into(),
        files,
        extracted: evidence(&schema, batches).unwrap(),
        sync: None,
    }
}

/// Damages a committed chunk with SQL run directly against the table, as a user could.
struct SqlTamper {
    env_url: String,
    spec: SnowflakeDestinationSpec,
    schema: SchemaRef,
    cursor: String,
}

impl SqlTamper {
    async fn run(&self, job_id: &str, chunk_id: u64, corruption: &Corruption) -> Result<(), String> {
        let _ = &self.env_url;
        let client = Client::connect(self.spec.client_config().map_err(|e| e.to_string())?)
            .await
            .map_err(|e| e.to_string())?;
        let table = format!("{DATABASE}.{SCHEMA}.{}", self.spec.table);
        let range = client
            .query(&format!(
                "SELECT RANGE_FROM, RANGE_TO FROM {DATABASE}.{SCHEMA}.{CHUNKS_TABLE} WHERE TABLE_NAME = '{}' \
                 AND JOB_ID = '{job_id}' AND CHUNK_ID = {chunk_id}",
                self.spec.table.to_ascii_uppercase()
            ))
            .await
            .map_err(|e| e.to_string())?;
        let row = text_rows(&range.batches)
            .into_iter()
            .next()
            .ok_or("chunk not committed")?;
        let bound = |i: usize| {
            row[i]
                .as_deref()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .parse::<i64>()
                .unwrap()
        };
        let field = self.schema.field_with_name(&self.cursor).unwrap();
        let lit = |v| cursor_literal(CursorKind::Timestamp, field.data_type(), v);
        let c = column_ident(&self.cursor);
        let in_chunk = format!("{c} >= {} AND {c} < {}", lit(bound(0)), lit(bound(1)));
        // The chunk's last row (by cursor) that has a value in `col`.
        let last = |col: &str| {
            let col = column_ident(col);
            format!("{col} IS NOT NULL AND {c} = (SELECT MAX({c}) FROM {table} WHERE {in_chunk} AND {col} IS NOT NULL)")
        };
        let any = format!("{c} = (SELECT MAX({c}) FROM {table} WHERE {in_chunk})");
        let sql = match corruption {
            Corruption::DropRow => format!("DELETE FROM {table} WHERE {any}"),
            Corruption::DuplicateRow => format!("INSERT INTO {table} SELECT * FROM {table} WHERE {any}"),
            Corruption::ChangeNumber(col) => {
                format!(
                    "UPDATE {table} SET {0} = {0} + 1 WHERE {1}",
                    column_ident(col),
                    last(col)
                )
            }
            Corruption::ChangeString(col) => {
                format!(
                    "UPDATE {table} SET {0} = {0} || 'x' WHERE {1}",
                    column_ident(col),
                    last(col)
                )
            }
            Corruption::ChangeTimestamp(col) => format!(
                "UPDATE {table} SET {0} = DATEADD(MICROSECOND, -1, {0}) WHERE {1}",
                column_ident(col),
                last(col)
            ),
        };
        client.query(&sql).await.map_err(|e| format!("{sql}: {e}"))?;
        let _ = client.close().await;
        Ok(())
    }
}

impl TamperCommitted for SqlTamper {
    fn tamper<'a>(
        &'a self,
        job_id: &'a str,
        chunk_id: u64,
        corruption: &'a Corruption,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.run(job_id, chunk_id, corruption))
    }
}

#[tokio::test]
async fn snowflake_destination_conforms() {
    let Some(env) = Env::start().await else { return };
    let batches = source_rows(&env.dir, one_day()).await;
    let mut spec = env.spec("ORDERS");
    // The suite's extra column must be refused: this table blocks it (others add new columns).
    spec.blocked_columns = vec!["_conformance_extra".into()];
    let options = DestinationOptions {
        cursor_column: Some("created_at".into()),
        tamper: Some(Arc::new(SqlTamper {
            env_url: env.fake.url.clone(),
            spec: spec.clone(),
            schema: batches[0].schema(),
            cursor: "created_at".into(),
        })),
        ..Default::default()
    };
    let make = {
        let spec = spec.clone();
        move || Arc::new(SnowflakeDestination::new(&spec).unwrap()) as Arc<dyn Destination>
    };
    let report = check_destination_with(make, &env.stage, batches, &options)
        .await
        .unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(report.level, ProofLevel::Fingerprint);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}
