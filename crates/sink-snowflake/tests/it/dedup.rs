//! Dedup syncs: the conformance dedup check (newest version per key across chunks, lookback
//! re-reads, late older versions, retried commits, every chunk's proof read back from the
//! versions table), and what a dedup commit records.

use std::sync::Arc;

use arrow::array::RecordBatch;
use backhaul_conformance::dedup::{ReadTable, check_dedup, check_rows_per_chunk, dedup_batch_from_text};
use backhaul_core::connector::SyncMode;

use crate::{DATABASE, Env, SCHEMA};

/// The table's rows as `(id, updated_at, v)` batches of the conformance check's schema.
async fn read_table(env: &Env, table: &str) -> Vec<RecordBatch> {
    let rows = env
        .sql(&format!(
            "SELECT \"ID\", DATE_PART(EPOCH_MICROSECOND, \"UPDATED_AT\"), \"V\" FROM {DATABASE}.{SCHEMA}.{table}"
        ))
        .await;
    vec![dedup_batch_from_text(&rows).unwrap()]
}

#[tokio::test]
async fn dedup_commits_keep_the_newest_version_of_each_key() {
    let Some(env) = Env::start().await else { return };
    let env = Arc::new(env);
    let dest = env.destination(&env.spec("DEDUPED"));
    assert!(dest.supports_sync_mode(SyncMode::Dedup));
    assert!(dest.supports_sync_mode(SyncMode::FullRefresh));
    let read: ReadTable = {
        let env = env.clone();
        Arc::new(move || {
            let env = env.clone();
            Box::pin(async move { Ok(read_table(&env, "DEDUPED").await) })
        })
    };
    check_dedup(dest, &env.stage, read)
        .await
        .unwrap_or_else(|v| panic!("{v}"));

    // Every chunk's rows stay in the versions table, tagged with its id; the control rows say
    // how each commit landed.
    let versions = env
        .sql(&format!(
            "SELECT \"_BACKHAUL_CHUNK_ID\", COUNT(*) FROM {DATABASE}.{SCHEMA}._BACKHAUL_VERSIONS_DEDUPED \
             GROUP BY 1 ORDER BY 1"
        ))
        .await;
    check_rows_per_chunk(&versions).unwrap();
    let recorded = env
        .sql(&format!(
            "SELECT CHUNK_ID, SYNC_MODE, ROWS_INSERTED, ROWS_UPDATED FROM {DATABASE}.{SCHEMA}._BACKHAUL_CHUNKS \
             WHERE TABLE_NAME = 'DEDUPED' ORDER BY CHUNK_ID"
        ))
        .await;
    let recorded: Vec<Vec<String>> = recorded
        .into_iter()
        .map(|r| r.into_iter().map(|v| v.unwrap_or_default()).collect())
        .collect();
    let row = |c: &str, i: &str, u: &str| vec![c.to_string(), "dedup".to_string(), i.to_string(), u.to_string()];
    // 0: keys 1, 2 new. 1 (retried): its own rows replaced again. 2: keys 2, 3 re-read, 4 new.
    // 3: key 1 re-read (same cursor), key 2 older (kept), key 4 newer.
    assert_eq!(
        recorded,
        vec![
            row("0", "2", "0"),
            row("1", "0", "2"),
            row("2", "1", "2"),
            row("3", "0", "2")
        ]
    );
}
