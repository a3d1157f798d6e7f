//! The dedup part of the [`Destination`] contract, for destinations whose
//! [`Destination::supports_sync_mode`] accepts [`SyncMode::Dedup`].
//!
//! [`check_dedup`] commits four chunks of a synthetic `(id, updated_at, v)` table in dedup
//! mode on a fresh, never-prepared table: a backfill chunk, a chunk holding a newer version of
//! one key and a new key, a lookback chunk re-reading the newer version with the same
//! cursor, and a late chunk (a replay of an old range) holding an older version of that key,
//! which must not replace the newer one. After each commit (and after a retried commit of the same attempt) the table, as
//! `read_table` returns it, must hold exactly one row per key, the newest by cursor, and every
//! chunk's `read_back` proof must still pass against what that chunk wrote (`dedup-proof`).
//! Checks: `dedup-support`, `dedup-commit`, `dedup-rows`, `dedup-proof`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use backhaul_core::connector::{ChunkCommit, Destination, SyncCommit, SyncMode};
use backhaul_core::cursor::CursorRange;
use backhaul_core::stage::Stage;
use futures::future::BoxFuture;

use crate::report::{Checker, Violations};
use crate::stage::{evidence, stage_batches};

/// One dedup commit of the check: chunk id, attempt, range and `(id, updated_at, v)` rows.
type Step = (u64, u32, CursorRange, Vec<(i64, i64, &'static str)>);

/// Reads every row of the table as users see it (the destination's query path).
pub type ReadTable = Arc<dyn Fn() -> BoxFuture<'static, backhaul_core::Result<Vec<RecordBatch>>> + Send + Sync>;

/// The schema [`check_dedup`] commits: key `id`, cursor `updated_at`, value `v`.
pub fn dedup_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "updated_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("v", DataType::Utf8, false),
    ]))
}

fn rows(schema: &SchemaRef, rows: &[(i64, i64, &str)]) -> RecordBatch {
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1)).with_timezone("UTC")),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .expect("rows fit the schema")
}

/// A [`dedup_schema`] batch from rows a SQL warehouse returned as text: `id`, `updated_at` as
/// integer microseconds since the epoch, and `v` (for a [`ReadTable`] of a warehouse).
pub fn dedup_batch_from_text(text: &[Vec<Option<String>>]) -> backhaul_core::Result<RecordBatch> {
    let bad =
        |what: &str, v: &Option<String>| backhaul_core::Error::Internal(format!("{what}: unreadable value {v:?}"));
    let int = |what: &str, v: &Option<String>| -> backhaul_core::Result<i64> {
        v.as_deref()
            .and_then(|t| t.trim().split('.').next())
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad(what, v))
    };
    let mut ids = Vec::with_capacity(text.len());
    let mut ats = Vec::with_capacity(text.len());
    let mut vs = Vec::with_capacity(text.len());
    for row in text {
        let [id, at, v] = row.as_slice() else {
            return Err(backhaul_core::Error::Internal(format!(
                "expected 3 columns, got {row:?}"
            )));
        };
        ids.push(int("id", id)?);
        ats.push(int("updated_at", at)?);
        vs.push(v.clone().ok_or_else(|| bad("v", v))?);
    }
    let owned: Vec<(i64, i64, &str)> = ids
        .iter()
        .zip(&ats)
        .zip(&vs)
        .map(|((id, at), v)| (*id, *at, v.as_str()))
        .collect();
    Ok(rows(&dedup_schema(), &owned))
}

/// `id → (updated_at, v)` of the table as read; a duplicate key is an error.
fn by_key(batches: &[RecordBatch]) -> Result<BTreeMap<i64, (i64, String)>, String> {
    let mut out = BTreeMap::new();
    for b in batches {
        let col = |name: &str| b.column_by_name(name).ok_or(format!("no column `{name}` in the table"));
        let id = col("id")?;
        let id = id.as_any().downcast_ref::<Int64Array>().ok_or("`id` is not Int64")?;
        let at = col("updated_at")?;
        let at = at
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or("`updated_at` is not a microsecond timestamp")?;
        let v = col("v")?;
        let v = v.as_any().downcast_ref::<StringArray>().ok_or("`v` is not Utf8")?;
        for i in 0..b.num_rows() {
            if out.insert(id.value(i), (at.value(i), v.value(i).to_string())).is_some() {
                return Err(format!("key {} appears more than once", id.value(i)));
            }
        }
    }
    Ok(out)
}

/// The commits of the check, in order.
fn steps() -> Vec<Step> {
    let hour = 3_600_000_000;
    vec![
        (
            0,
            1,
            CursorRange::new(0, 2 * hour),
            vec![(1, hour, "a"), (2, hour, "b")],
        ),
        (
            1,
            1,
            CursorRange::new(2 * hour, 4 * hour),
            vec![(2, 3 * hour, "b2"), (3, 3 * hour, "c")],
        ),
        // A retried commit of the same attempt replaces itself.
        (
            1,
            1,
            CursorRange::new(2 * hour, 4 * hour),
            vec![(2, 3 * hour, "b2"), (3, 3 * hour, "c")],
        ),
        // A lookback chunk re-reads key 2 with the same cursor, and a late key 4.
        (
            2,
            1,
            CursorRange::new(hour, 4 * hour),
            vec![(2, 3 * hour, "b2"), (3, 3 * hour, "c"), (4, hour, "late")],
        ),
        // A late chunk over an old range: key 1 as loaded, an older version of key 2 (stays
        // b2), and a version of key 4 newer than the lookback chunk's.
        (
            3,
            1,
            CursorRange::new(0, 2 * hour),
            vec![
                (1, hour, "a"),
                (2, hour + hour / 2, "b-old"),
                (4, hour + hour / 2, "late2"),
            ],
        ),
    ]
}

/// Checks a warehouse's rows per chunk of its versions table after [`check_dedup`]: `found`
/// holds `(chunk id, rows)` as text, by chunk id; each chunk keeps the rows of its last commit.
pub fn check_rows_per_chunk(found: &[Vec<Option<String>>]) -> Result<(), String> {
    let mut expected = BTreeMap::new();
    for (chunk, _, _, data) in steps() {
        expected.insert(chunk, data.len() as u64);
    }
    let found: Vec<(Option<u64>, Option<u64>)> = found
        .iter()
        .map(|r| {
            let int = |i: usize| r.get(i).cloned().flatten().and_then(|t| t.trim().parse().ok());
            (int(0), int(1))
        })
        .collect();
    let expected: Vec<(Option<u64>, Option<u64>)> = expected.into_iter().map(|(c, n)| (Some(c), Some(n))).collect();
    if found == expected {
        Ok(())
    } else {
        Err(format!("rows per chunk {found:?}, expected {expected:?}"))
    }
}

/// Runs the dedup checks (see the [module documentation](self)) on the fresh table behind
/// `dest`, staging through `stage`.
pub async fn check_dedup(dest: Arc<dyn Destination>, stage: &Stage, read_table: ReadTable) -> Result<(), Violations> {
    let mut checker = Checker::new("destination dedup");
    if !dest.supports_sync_mode(SyncMode::Dedup) {
        return checker.abort("dedup-support", "supports_sync_mode(Dedup) is false");
    }
    let job = "conformance-dedup";
    let schema = dedup_schema();
    if let Err(e) = dest.prepare(job, schema.clone()).await {
        return checker.abort("dedup-commit", format!("prepare failed: {e}"));
    }
    let mut expected: BTreeMap<i64, (i64, String)> = BTreeMap::new();
    for (chunk, attempt, range, data) in steps() {
        let batch = rows(&schema, &data);
        let staged = stage_batches(stage, job, chunk, attempt, &schema, std::slice::from_ref(&batch), 1).await;
        let (files, extracted) = match (staged, evidence(&schema, std::slice::from_ref(&batch))) {
            (Ok(f), Ok(e)) => (f, e),
            (Err(e), _) | (_, Err(e)) => return checker.abort("dedup-commit", format!("staging failed: {e}")),
        };
        let commit = ChunkCommit {
            job_id: job.into(),
            chunk_id: chunk,
            attempt,
            range,
            cursor_column: "updated_at".into(),
            files,
            extracted: extracted.clone(),
            sync: Some(SyncCommit {
                mode: SyncMode::Dedup,
                key_columns: vec!["id".into()],
                metadata_columns: false,
            }),
        };
        match dest.commit_chunk(stage, &commit).await {
            Ok(proof) => {
                checker.ensure(proof.check(&extracted).is_ok(), "dedup-proof", || {
                    format!("the proof of chunk {chunk} does not match what it wrote")
                });
            }
            Err(e) => return checker.abort("dedup-commit", format!("dedup commit of chunk {chunk} failed: {e}")),
        }
        for (id, at, v) in data {
            if expected.get(&id).is_none_or(|(old, _)| at >= *old) {
                expected.insert(id, (at, v.to_string()));
            }
        }
        match read_table().await.map_err(|e| e.to_string()).and_then(|b| by_key(&b)) {
            Ok(found) => {
                checker.ensure(found == expected, "dedup-rows", || {
                    format!("after chunk {chunk}: the table holds {found:?}, not the newest version of each key {expected:?}")
                });
            }
            Err(e) => checker.fail("dedup-rows", format!("after chunk {chunk}: {e}")),
        }
        match dest.read_back(job, chunk).await {
            Ok(Some(proof)) => {
                checker.ensure(proof.check(&extracted).is_ok(), "dedup-proof", || {
                    format!("read_back of chunk {chunk} fails against what the chunk wrote")
                });
            }
            other => checker.fail("dedup-proof", format!("read_back of chunk {chunk}: {other:?}")),
        }
    }
    checker.finish(())
}
