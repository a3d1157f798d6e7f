//! PUT end to end against fakesnow (`backhaul_testkit::fakesnow`): log in, create a stage, PUT
//! two Parquet files (fakesnow answers a GCS stage with a presigned URL per file), `LIST` shows
//! them with their sizes, and `COPY INTO` reads them back.

#[path = "put_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::array_value_to_string;
use backhaul_snowflake_client::{Auth, Client, ClientConfig, PutOptions, QueryResult, RetrySettings, Secret};
use backhaul_testkit::fakesnow::FakeSnow;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

fn config(server: &FakeSnow, database: &str) -> ClientConfig {
    let mut config = ClientConfig::new("fakeacct", "tester", Auth::Password(Secret::new("any")));
    config.base_url = server.url.clone();
    config.database = Some(database.to_string());
    config.schema = Some("PUBLIC".to_string());
    config.request_timeout = Duration::from_secs(30);
    config.retry = RetrySettings {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    config
}

/// A zstd Parquet file of `rows` rows `(id, name)`.
fn parquet_file(first_id: i64, rows: usize) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let ids: Vec<i64> = (first_id..first_id + rows as i64).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("name-{i}")).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(names))],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

/// Every row of a result as strings.
fn rows(result: &QueryResult) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for batch in &result.batches {
        for row in 0..batch.num_rows() {
            out.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| array_value_to_string(c, row).unwrap())
                    .collect(),
            );
        }
    }
    out
}

fn column(result: &QueryResult, name: &str) -> usize {
    result
        .schema
        .fields()
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("no column {name} in {:?}", result.schema))
}

#[tokio::test]
async fn put_two_parquet_files_list_and_copy() {
    let Some(server) = FakeSnow::start() else { return };
    let client = Client::connect(config(&server, "PUT_DB")).await.unwrap();
    client.query("CREATE DATABASE IF NOT EXISTS PUT_DB").await.unwrap();
    client.query("CREATE SCHEMA IF NOT EXISTS PUT_DB.PUBLIC").await.unwrap();
    client.query("CREATE OR REPLACE STAGE PUT_DB.PUBLIC.ST").await.unwrap();

    let first = parquet_file(1, 3);
    let second = parquet_file(4, 1000);
    let files = support::source(&[("part-000.parquet", &first), ("part-001.parquet", &second)]).await;
    let outcomes = client
        .put(&files, "@ST/job-1/chunk-000001/", &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        outcomes.iter().map(|o| (o.name.as_str(), o.bytes)).collect::<Vec<_>>(),
        [
            ("part-000.parquet", first.len() as u64),
            ("part-001.parquet", second.len() as u64)
        ]
    );

    let listed = client.query("LIST @ST").await.unwrap();
    let (name, size) = (column(&listed, "name"), column(&listed, "size"));
    let mut listed: Vec<(String, String)> = rows(&listed)
        .into_iter()
        .map(|row| (row[name].clone(), row[size].clone()))
        .collect();
    listed.sort();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed[0].0.ends_with("part-000.parquet"), "{listed:?}");
    assert!(listed[1].0.ends_with("part-001.parquet"), "{listed:?}");
    assert_eq!(listed[0].1, first.len().to_string());
    assert_eq!(listed[1].1, second.len().to_string());

    // The bytes landed intact: the server reads them as Parquet.
    client
        .query("CREATE OR REPLACE TABLE PUT_DB.PUBLIC.T (id INT, name VARCHAR)")
        .await
        .unwrap();
    client
        .query(
            "COPY INTO PUT_DB.PUBLIC.T FROM @ST/job-1/chunk-000001/ FILE_FORMAT = (TYPE = PARQUET) \
             MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE",
        )
        .await
        .unwrap();
    let counted = client
        // MIN/MAX, not SUM: fakesnow returns SUM over integers as a double.
        .query("SELECT COUNT(*), MIN(id), MAX(id), COUNT(DISTINCT id) FROM PUT_DB.PUBLIC.T")
        .await
        .unwrap();
    assert_eq!(rows(&counted), [["1003", "1", "1003", "1003"].map(String::from)]);
    client.close().await.unwrap();
}
