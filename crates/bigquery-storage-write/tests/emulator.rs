//! The client against bqemulator's Storage Write API (PENDING streams, arrow_rows, finalize,
//! batch commit), with rows checked through the emulator's REST query API.

mod support;

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use backhaul_bigquery_storage_write::{ClientConfig, CommitOutcome, Error, RetrySettings, WriteClient, table_path};
use backhaul_core::ErrorClass;
use serde_json::json;
use support::bqemulator::{Emulator, PROJECT, emulator};

/// `id` from `first`, a name and an amount per row.
fn rows(first: i64, count: usize) -> RecordBatch {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(first..first + count as i64));
    let names: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..count).map(|i| format!("row-{}", first + i as i64)),
    ));
    let amounts: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (0..count).map(|i| (first + i as i64) as f64 * 0.5),
    ));
    RecordBatch::try_from_iter([("id", ids), ("name", names), ("amount", amounts)]).unwrap()
}

/// A fresh dataset with table `t` shaped like [`rows`]; returns the table's path.
async fn table(emulator: &Emulator, dataset: &str) -> String {
    emulator.create_dataset(dataset).await;
    emulator
        .create_table(
            dataset,
            "t",
            json!([
                {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
                {"name": "name", "type": "STRING", "mode": "NULLABLE"},
                {"name": "amount", "type": "FLOAT", "mode": "NULLABLE"},
            ]),
        )
        .await;
    table_path(PROJECT, dataset, "t")
}

async fn client(emulator: &Emulator) -> WriteClient {
    let mut config = ClientConfig::new(emulator.grpc.clone(), None);
    // Retries in tests wait milliseconds, not seconds.
    config.retry = RetrySettings {
        base_delay: std::time::Duration::from_millis(1),
        ..RetrySettings::default()
    };
    WriteClient::connect_with(config)
        .await
        .expect("connect to the emulator")
}

#[tokio::test]
async fn appends_at_offsets_then_finalize_and_commit_make_the_rows_visible() {
    let emulator = emulator();
    let path = table(&emulator, "three_batches").await;
    let client = client(&emulator).await;
    let mut stream = client.create_pending_stream(&path).await.unwrap();
    let mut offset = 0;
    for first in [0, 3, 6] {
        offset = client.append(&mut stream, offset, &rows(first, 3)).await.unwrap();
    }
    assert_eq!(offset, 9);
    client.flush(&mut stream).await.unwrap();
    assert_eq!(stream.acknowledged_rows(), 9);
    assert_eq!(
        emulator.count("three_batches", "t").await,
        0,
        "nothing is visible before the commit"
    );
    assert_eq!(client.finalize(&mut stream).await.unwrap(), 9);
    let outcome = client.batch_commit(&path, &[stream.name()]).await.unwrap();
    assert!(matches!(outcome, CommitOutcome::Committed { .. }), "{outcome:?}");
    let sums = emulator
        .query(&format!(
            "SELECT COUNT(*), SUM(id), SUM(amount), MAX(name) FROM `{PROJECT}.three_batches.t`"
        ))
        .await;
    let as_str: Vec<Option<&str>> = sums[0].iter().map(Option::as_deref).collect();
    assert_eq!(as_str, [Some("9"), Some("36"), Some("18.0"), Some("row-8")]);
}

#[tokio::test]
async fn a_retried_append_at_an_already_written_offset_is_not_applied_twice() {
    let emulator = emulator();
    let path = table(&emulator, "retried").await;
    let client = client(&emulator).await;
    let mut stream = client.create_pending_stream(&path).await.unwrap();
    assert_eq!(client.append(&mut stream, 0, &rows(0, 3)).await.unwrap(), 3);
    // The same batch again at the same offset, as a retry after a lost answer would send it:
    // the server answers ALREADY_EXISTS, which is success.
    assert_eq!(client.append(&mut stream, 0, &rows(0, 3)).await.unwrap(), 3);
    assert_eq!(client.append(&mut stream, 3, &rows(3, 2)).await.unwrap(), 5);
    assert_eq!(client.finalize(&mut stream).await.unwrap(), 5);
    client.batch_commit(&path, &[stream.name()]).await.unwrap();
    assert_eq!(emulator.count("retried", "t").await, 5);
}

#[tokio::test]
async fn a_finalized_but_uncommitted_stream_leaves_the_table_unchanged() {
    let emulator = emulator();
    let path = table(&emulator, "uncommitted").await;
    let client = client(&emulator).await;
    let mut abandoned = client.create_pending_stream(&path).await.unwrap();
    client.append(&mut abandoned, 0, &rows(100, 4)).await.unwrap();
    assert_eq!(client.finalize(&mut abandoned).await.unwrap(), 4);
    assert_eq!(emulator.count("uncommitted", "t").await, 0);
    // Another stream's commit publishes only its own rows.
    let mut committed = client.create_pending_stream(&path).await.unwrap();
    client.append(&mut committed, 0, &rows(0, 2)).await.unwrap();
    client.finalize(&mut committed).await.unwrap();
    client.batch_commit(&path, &[committed.name()]).await.unwrap();
    let ids = emulator
        .query(&format!("SELECT id FROM `{PROJECT}.uncommitted.t` ORDER BY id"))
        .await;
    assert_eq!(ids, [[Some("0".to_string())], [Some("1".to_string())]]);
}

#[tokio::test]
async fn a_table_that_does_not_exist_is_a_permanent_error() {
    let emulator = emulator();
    emulator.create_dataset("no_table").await;
    let client = client(&emulator).await;
    let err = client
        .create_pending_stream(&table_path(PROJECT, "no_table", "missing"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(
        matches!(
            err,
            Error::Status {
                code: tonic::Code::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_offset_past_the_end_is_a_permanent_error() {
    let emulator = emulator();
    let path = table(&emulator, "gap").await;
    let client = client(&emulator).await;
    let mut stream = client.create_pending_stream(&path).await.unwrap();
    client.append(&mut stream, 0, &rows(0, 3)).await.unwrap();
    // Appends are pipelined: the answer (and its error) is awaited by flush or finalize.
    client.append(&mut stream, 5, &rows(5, 1)).await.unwrap();
    let err = client.flush(&mut stream).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Append {
                code: tonic::Code::OutOfRange,
                offset: 5,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn a_batch_over_the_request_limit_is_split_and_lands_whole() {
    let emulator = emulator();
    let path = table(&emulator, "large").await;
    let client = client(&emulator).await;
    let mut stream = client.create_pending_stream(&path).await.unwrap();
    // About 24 MB in one batch, over the emulator's (and BigQuery's) 10 MB request limit.
    let count = 200_000;
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..count));
    let names: ArrayRef = Arc::new(StringArray::from_iter_values((0..count).map(|i| format!("{i:0>100}"))));
    let amounts: ArrayRef = Arc::new(Float64Array::from_iter_values((0..count).map(|i| i as f64)));
    let batch = RecordBatch::try_from_iter([("id", ids), ("name", names), ("amount", amounts)]).unwrap();
    assert!(batch.get_array_memory_size() > 20_000_000);
    assert_eq!(client.append(&mut stream, 0, &batch).await.unwrap(), count as u64);
    assert_eq!(client.finalize(&mut stream).await.unwrap(), count as u64);
    client.batch_commit(&path, &[stream.name()]).await.unwrap();
    let sums = emulator
        .query(&format!("SELECT COUNT(*), SUM(id) FROM `{PROJECT}.large.t`"))
        .await;
    let expected_sum = (count - 1) * count / 2;
    assert_eq!(sums[0], [Some(count.to_string()), Some(expected_sum.to_string())]);
}

#[tokio::test]
async fn committing_an_unfinalized_stream_is_refused_and_names_the_stream() {
    let emulator = emulator();
    let path = table(&emulator, "unfinalized").await;
    let client = client(&emulator).await;
    let mut stream = client.create_pending_stream(&path).await.unwrap();
    client.append(&mut stream, 0, &rows(0, 1)).await.unwrap();
    let err = client.batch_commit(&path, &[stream.name()]).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains(stream.name()), "{err}");
    assert_eq!(emulator.count("unfinalized", "t").await, 0);
}
