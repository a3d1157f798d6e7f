//! Loading: replays, injected crashes between PUT and COPY and between COPY and COMMIT, schema
//! evolution and blocking, conflicting types, and PostgreSQL's exact types end to end.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use backhaul_conformance::{evidence, stage_batches};
use backhaul_core::Error;
use backhaul_core::connector::{ChunkCommit, Source};
use backhaul_core::cursor::CursorRange;
use backhaul_core::spec::database::{ConnectionSpec, PasswordSpec};
use backhaul_sink_snowflake::failpoint::{self, Failpoint};
use backhaul_source_postgres::{PostgresSource, PostgresSourceSpec};
use backhaul_testkit::postgres::PostgresServer;
use futures::TryStreamExt;

use crate::{DATABASE, Env, SCHEMA, micros, one_day, source_rows, staged_commit};

const JOB: &str = "orders-load";

#[tokio::test]
async fn a_replayed_chunk_leaves_the_table_unchanged() {
    let Some(env) = Env::start().await else { return };
    let batches = source_rows(&env.dir, one_day()).await;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let dest = env.destination(&env.spec("REPLAYED"));
    dest.prepare(JOB, batches[0].schema()).await.unwrap();
    let first = staged_commit(&env, JOB, 0, 1, one_day(), &batches, 2).await;
    let proof = dest.commit_chunk(&env.stage, &first).await.unwrap();
    proof.verify(&first.extracted, "first").unwrap();
    assert_eq!(env.count("REPLAYED").await, rows as u64);

    // The same attempt again (a retried commit), then a replay as a new attempt in 3 files.
    dest.commit_chunk(&env.stage, &first).await.unwrap();
    let replay = staged_commit(&env, JOB, 0, 2, one_day(), &batches, 3).await;
    let again = dest.commit_chunk(&env.stage, &replay).await.unwrap();
    assert_eq!(again, proof);
    assert_eq!(env.count("REPLAYED").await, rows as u64);
    assert_eq!(dest.read_back(JOB, 0).await.unwrap(), Some(proof));
    // Purged after the commit: nothing of this chunk is left in the Snowflake stage.
    let listed = env.sql(&format!("LIST @{}", crate::STAGE)).await;
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn a_crash_between_put_and_copy_ends_exact_after_retry() {
    let Some(env) = Env::start().await else { return };
    let batches = source_rows(&env.dir, one_day()).await;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let dest = env.destination(&env.spec("CRASH_PUT"));
    dest.prepare(JOB, batches[0].schema()).await.unwrap();
    let commit = staged_commit(&env, JOB, 0, 1, one_day(), &batches, 2).await;

    failpoint::arm("CRASH_PUT", Failpoint::AfterPut, 1);
    let e = dest.commit_chunk(&env.stage, &commit).await.unwrap_err();
    assert_eq!(e.class(), backhaul_core::ErrorClass::Transient, "{e}");
    assert_eq!(env.count("CRASH_PUT").await, 0);
    assert_eq!(dest.read_back(JOB, 0).await.unwrap(), None);

    let proof = dest.commit_chunk(&env.stage, &commit).await.unwrap();
    proof.verify(&commit.extracted, "retry").unwrap();
    assert_eq!(env.count("CRASH_PUT").await, rows as u64);
}

#[tokio::test]
async fn a_crash_between_copy_and_commit_changes_nothing_and_ends_exact_after_retry() {
    let Some(env) = Env::start().await else { return };
    let batches = source_rows(&env.dir, one_day()).await;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let dest = env.destination(&env.spec("CRASH_COPY"));
    dest.prepare(JOB, batches[0].schema()).await.unwrap();
    let first = staged_commit(&env, JOB, 0, 1, one_day(), &batches, 2).await;
    let committed = dest.commit_chunk(&env.stage, &first).await.unwrap();

    // Attempt 2 copies, then its session ends before COMMIT.
    let second = staged_commit(&env, JOB, 0, 2, one_day(), &batches, 3).await;
    failpoint::arm("CRASH_COPY", Failpoint::AfterCopy, 1);
    let e = dest.commit_chunk(&env.stage, &second).await.unwrap_err();
    assert_eq!(e.class(), backhaul_core::ErrorClass::Transient, "{e}");
    assert_eq!(env.count("CRASH_COPY").await, rows as u64, "rolled back: no duplicates");
    let attempt = env
        .value(&format!(
            "SELECT ATTEMPT FROM {DATABASE}.{SCHEMA}._BACKHAUL_CHUNKS WHERE TABLE_NAME = 'CRASH_COPY'"
        ))
        .await;
    assert_eq!(attempt.as_deref(), Some("1"));

    // The retry (the next attempt) commits exactly once.
    let third = staged_commit(&env, JOB, 0, 3, one_day(), &batches, 1).await;
    let proof = dest.commit_chunk(&env.stage, &third).await.unwrap();
    assert_eq!(proof, committed);
    assert_eq!(env.count("CRASH_COPY").await, rows as u64);
}

fn without_last_column(schema: &SchemaRef) -> SchemaRef {
    let fields = schema.fields();
    Arc::new(Schema::new(fields[..fields.len() - 1].to_vec()))
}

#[tokio::test]
async fn new_source_columns_are_added_unless_blocked() {
    let Some(env) = Env::start().await else { return };
    let batches = source_rows(&env.dir, one_day()).await;
    let full = batches[0].schema();
    let last = full.fields().last().unwrap().name().to_ascii_uppercase();
    let columns = |table: &'static str| {
        let env = &env;
        async move {
            env.sql(&format!(
                "SELECT COLUMN_NAME FROM {DATABASE}.INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = '{SCHEMA}' \
                 AND TABLE_NAME = '{table}'"
            ))
            .await
            .into_iter()
            .filter_map(|r| r[0].clone())
            .collect::<Vec<_>>()
        }
    };

    let dest = env.destination(&env.spec("EVOLVING"));
    dest.prepare(JOB, without_last_column(&full)).await.unwrap();
    assert!(!columns("EVOLVING").await.contains(&last));
    dest.prepare(JOB, full.clone()).await.unwrap();
    assert!(columns("EVOLVING").await.contains(&last), "{last} added");
    // And the evolved table loads the new rows.
    let commit = staged_commit(&env, JOB, 0, 1, one_day(), &batches, 1).await;
    dest.commit_chunk(&env.stage, &commit).await.unwrap();

    let mut blocking = env.spec("BLOCKING");
    blocking.blocked_columns = vec![last.to_ascii_lowercase()];
    let dest = env.destination(&blocking);
    dest.prepare(JOB, without_last_column(&full)).await.unwrap();
    let before = columns("BLOCKING").await;
    match dest.prepare(JOB, full.clone()).await {
        Err(Error::DestinationConflict(m)) => {
            assert!(
                m.contains("blocked_columns") && m.to_ascii_uppercase().contains(&last),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(columns("BLOCKING").await, before, "a refused prepare changes nothing");
}

#[tokio::test]
async fn an_existing_table_with_a_conflicting_type_is_refused_naming_both_types() {
    let Some(env) = Env::start().await else { return };
    let batches = source_rows(&env.dir, one_day()).await;
    env.sql(&format!(
        "CREATE TABLE {DATABASE}.{SCHEMA}.CONFLICTING (ORDER_ID VARCHAR, CREATED_AT TIMESTAMP_TZ(6))"
    ))
    .await;
    let dest = env.destination(&env.spec("CONFLICTING"));
    match dest.prepare(JOB, batches[0].schema()).await {
        Err(Error::DestinationConflict(m)) => {
            assert!(
                m.contains("`order_id`") && m.contains("TEXT") && m.contains("NUMBER(38,0)"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// numeric(38,9) with 20 integer digits (sums of 500 stay within NUMBER(38,9)), timestamptz with microseconds, jsonb and NULLs in
/// each: the sums, times and JSON arrive exact (the commit's fingerprint proves it), and the
/// values read back from Snowflake are the source's.
const PG_ORDERS: &str = r#"
CREATE TABLE wide (
    id         bigint PRIMARY KEY,
    created_at timestamptz NOT NULL,
    amount     numeric(38,9),
    doc        jsonb,
    note       text
);
INSERT INTO wide
SELECT g,
       timestamptz '2023-03-15 00:00:00+00' + g * interval '1 minute' + (g % 7) * interval '1 microsecond',
       CASE WHEN g % 5 = 0 THEN NULL ELSE 12345678901234567890.123456789 - g END,
       CASE WHEN g % 4 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'tag', 'ü', 'list', jsonb_build_array(1, 2)) END,
       CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END
FROM generate_series(1, 500) g;
ANALYZE wide;
"#;

#[tokio::test]
async fn postgres_numeric_timestamptz_and_jsonb_arrive_exact() {
    let Some(env) = Env::start().await else { return };
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server.psql(&db, PG_ORDERS).unwrap();
    let source = PostgresSource::open(&PostgresSourceSpec {
        connection: ConnectionSpec {
            host: server.host().into(),
            port: Some(server.port()),
            user: server.user().into(),
            database: db.clone(),
            password: PasswordSpec {
                env: None,
                file: Some(server.password_file()),
            },
            table: "public.wide".into(),
            cursor: "created_at".into(),
            columns: None,
            tls: Default::default(),
            null_cursor: Default::default(),
        },
        unconstrained_numeric: Default::default(),
        infinite_datetime: Default::default(),
        special_numeric: Default::default(),
        parallel_scans: None,
    })
    .unwrap();
    let schema = source.describe().await.unwrap().schema;
    let range = CursorRange::new(micros("2023-03-15T00:00:00Z"), micros("2023-03-16T00:00:00Z"));
    let batches: Vec<_> = source.extract(range, 200).await.unwrap().try_collect().await.unwrap();
    let commit = |attempt| {
        let (stage, schema, batches) = (&env.stage, &schema, &batches);
        async move {
            ChunkCommit {
                job_id: JOB.into(),
                chunk_id: 0,
                attempt,
                range,
                cursor_column: "created_at".into(),
                files: stage_batches(stage, JOB, 0, attempt, schema, batches, 2).await.unwrap(),
                extracted: evidence(schema, batches).unwrap(),
                sync: None,
            }
        }
    };

    // JSON as VARIANT (the default): Snowflake prints the document compact where PostgreSQL's
    // jsonb text has spaces; the fingerprint measures JSON without whitespace, so it proves.
    let variant = env.destination(&env.spec("PG_VARIANT"));
    variant.prepare(JOB, schema.clone()).await.unwrap();
    let first = commit(1).await;
    let proof = variant
        .commit_chunk(&env.stage, &first)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    proof.verify(&first.extracted, "pg as variant").unwrap();
    let doc = env
        .value(&format!(
            "SELECT TO_JSON(DOC) FROM {DATABASE}.{SCHEMA}.PG_VARIANT WHERE ID = 15"
        ))
        .await
        .unwrap();
    let want_doc = server.psql(&db, "SELECT doc::text FROM wide WHERE id = 15").unwrap();
    let parsed = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    assert_eq!(parsed(&doc), parsed(want_doc.trim()), "the same document");

    // JSON as the source's text (`json_type = "varchar"`): kept byte for byte.
    let mut spec = env.spec("PG_WIDE");
    spec.json_type = Some("varchar".into());
    let dest = env.destination(&spec);
    dest.prepare(JOB, schema.clone()).await.unwrap();
    let commit = commit(2).await;
    let proof = dest
        .commit_chunk(&env.stage, &commit)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    proof.verify(&commit.extracted, "pg").unwrap();

    let t = format!("{DATABASE}.{SCHEMA}.PG_WIDE");
    let sum = env
        .value(&format!("SELECT TO_VARCHAR(SUM(AMOUNT::NUMBER(38,9))) FROM {t}"))
        .await
        .unwrap();
    let want = server
        .psql(&db, "SELECT sum(amount) FROM wide")
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(sum, want);
    let row = env
        .sql(&format!(
            "SELECT DATE_PART(EPOCH_MICROSECOND, CREATED_AT), DOC, AMOUNT IS NULL, NOTE FROM {t} WHERE ID = 4"
        ))
        .await
        .remove(0);
    assert_eq!(
        row[0].as_deref(),
        Some(micros("2023-03-15T00:04:00.000004Z").to_string().as_str())
    );
    assert_eq!(row[1], None, "id 4 has a NULL document");
    assert_eq!(row[2].as_deref(), Some("false"));
    assert_eq!(row[3].as_deref(), Some("note 4"));
    let row = env
        .sql(&format!("SELECT DOC, TO_VARCHAR(AMOUNT), NOTE FROM {t} WHERE ID = 15"))
        .await
        .remove(0);
    let want_doc = server.psql(&db, "SELECT doc::text FROM wide WHERE id = 15").unwrap();
    assert_eq!(row[0].as_deref(), Some(want_doc.trim()));
    assert_eq!(row[1], None, "id 15 has a NULL amount");
    assert_eq!(row[2], None, "and a NULL note");
    let row = env
        .sql(&format!("SELECT TO_VARCHAR(AMOUNT) FROM {t} WHERE ID = 7"))
        .await
        .remove(0);
    assert_eq!(row[0].as_deref(), Some("12345678901234567883.123456789"));
}
