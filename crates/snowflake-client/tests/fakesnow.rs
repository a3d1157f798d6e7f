//! The client against a real fakesnow server (crates/testkit): login with a password and
//! with a key-pair JWT, DDL, DML row counts, SELECT results decoded into exact Arrow types,
//! a failed statement classified, heartbeat and logout.
//!
//! fakesnow accepts any credentials, so the wrong-password path is tested against recorded
//! answers in `protocol.rs`.

use std::path::PathBuf;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int64Type, Time64NanosecondType, TimeUnit,
    TimestampNanosecondType,
};
use backhaul_core::ErrorClass;
use backhaul_snowflake_client::{Auth, Client, ClientConfig, Error, RetrySettings, Secret};
use backhaul_testkit::fakesnow::FakeSnow;

fn config(server: &FakeSnow, database: &str, auth: Auth) -> ClientConfig {
    let mut config = ClientConfig::new("fakeacct", "tester", auth);
    config.base_url = server.url.clone();
    config.database = Some(database.to_string());
    config.schema = Some("PUBLIC".to_string());
    config.request_timeout = Duration::from_secs(30);
    // fakesnow answers an unhandled exception with HTTP 500: do not wait long on one.
    config.retry = RetrySettings {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    config
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn password_login_ddl_dml_select_types_error_and_logout() {
    let Some(server) = FakeSnow::start() else { return };
    let client = Client::connect(config(&server, "TYPES_DB", Auth::Password(Secret::new("any"))))
        .await
        .unwrap();
    client.query("CREATE DATABASE IF NOT EXISTS TYPES_DB").await.unwrap();
    client
        .query("CREATE SCHEMA IF NOT EXISTS TYPES_DB.PUBLIC")
        .await
        .unwrap();
    client
        .query(
            "CREATE OR REPLACE TABLE TYPES_DB.PUBLIC.T (i INT, small NUMBER(9,0), n NUMBER(10,2), big NUMBER(38,9), \
             ts TIMESTAMP_NTZ, d DATE, tm TIME, s VARCHAR, b BOOLEAN, v VARIANT, r REAL)",
        )
        .await
        .unwrap();
    let inserted = client
        .query(
            "INSERT INTO TYPES_DB.PUBLIC.T VALUES \
             (1, 7, 12.34, 12345678901234567890.123456789, '2024-01-02 03:04:05.123456', '2024-01-02', \
              '03:04:05.123', 'x', true, PARSE_JSON('{\"a\":1}'), 1.5), \
             (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        )
        .await
        .unwrap();
    assert_eq!(inserted.rows_affected, Some(2));

    let result = client
        .query("SELECT i, small, n, big, ts, d, tm, s, b, v, r FROM TYPES_DB.PUBLIC.T ORDER BY i NULLS LAST")
        .await
        .unwrap();
    assert_eq!(result.num_rows(), 2);
    assert!(!result.query_id.is_empty());
    let schema = result.schema.clone();
    let types: Vec<_> = schema.fields().iter().map(|f| f.data_type().clone()).collect();
    assert_eq!(
        types,
        vec![
            DataType::Decimal128(38, 0), // INT is NUMBER(38,0)
            DataType::Int64,
            DataType::Decimal128(10, 2),
            DataType::Decimal128(38, 9),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            DataType::Date32,
            DataType::Time64(TimeUnit::Nanosecond),
            DataType::Utf8,
            DataType::Boolean,
            DataType::Utf8,
            DataType::Float64,
        ]
    );
    assert_eq!(
        schema
            .field(9)
            .metadata()
            .get("ARROW:extension:name")
            .map(String::as_str),
        Some("arrow.json")
    );
    let batch = arrow::compute::concat_batches(&schema, &result.batches).unwrap();
    assert_eq!(batch.column(0).as_primitive::<Decimal128Type>().value(0), 1);
    assert_eq!(batch.column(1).as_primitive::<Int64Type>().value(0), 7);
    assert_eq!(batch.column(2).as_primitive::<Decimal128Type>().value(0), 1234);
    assert_eq!(
        batch.column(3).as_primitive::<Decimal128Type>().value(0),
        12_345_678_901_234_567_890_123_456_789
    );
    // 2024-01-02 03:04:05.123456 UTC
    assert_eq!(
        batch.column(4).as_primitive::<TimestampNanosecondType>().value(0),
        1_704_164_645_123_456_000
    );
    assert_eq!(batch.column(5).as_primitive::<Date32Type>().value(0), 19_724);
    assert_eq!(
        batch.column(6).as_primitive::<Time64NanosecondType>().value(0),
        ((3 * 3600 + 4 * 60 + 5) * 1_000_000_000) + 123_000_000
    );
    assert_eq!(batch.column(7).as_string::<i32>().value(0), "x");
    assert!(batch.column(8).as_boolean().value(0));
    let json: serde_json::Value = serde_json::from_str(batch.column(9).as_string::<i32>().value(0)).unwrap();
    assert_eq!(json, serde_json::json!({"a": 1}));
    assert_eq!(batch.column(10).as_primitive::<Float64Type>().value(0), 1.5);
    // The second row is all NULLs, the timestamp included (fakesnow sends it as a valid
    // struct with a null epoch; the connector reads 1970-01-01 there).
    for (index, column) in batch.columns().iter().enumerate() {
        assert!(column.is_null(1), "column {index} is NULL in row 2");
    }

    let error = client.query("SELECT nosuch FROM TYPES_DB.PUBLIC.T").await.unwrap_err();
    match &error {
        Error::Sql { code, message, .. } => {
            assert!(!code.is_empty());
            assert!(message.contains("NOSUCH"), "{message}");
        }
        other => panic!("expected a SQL error, got {other:?}"),
    }
    assert_eq!(error.class(), ErrorClass::Permanent);

    client.heartbeat().await.unwrap();
    client.close().await.unwrap();
}

#[tokio::test]
async fn key_pair_login_with_plain_and_encrypted_keys() {
    let Some(server) = FakeSnow::start() else { return };
    for (file, passphrase) in [
        ("rsa_key.p8", None),
        ("rsa_key_des3.p8", Some(Secret::new("test-passphrase"))),
        ("rsa_key_aes256.p8", Some(Secret::new("test-passphrase"))),
    ] {
        let auth = Auth::KeyPair {
            private_key_path: fixture(file),
            passphrase,
        };
        let client = Client::connect(config(&server, "JWT_DB", auth)).await.unwrap();
        let result = client.query("SELECT 1 AS one").await.unwrap();
        assert_eq!(result.num_rows(), 1, "{file}");
        client.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_wrong_passphrase_fails_before_any_request() {
    let auth = Auth::KeyPair {
        private_key_path: fixture("rsa_key_des3.p8"),
        passphrase: Some(Secret::new("wrong")),
    };
    // No server at all: the key is read before anything is sent.
    let mut config = ClientConfig::new("acct", "u", auth);
    config.base_url = "http://127.0.0.1:9".into();
    let error = Client::connect(config).await.unwrap_err();
    assert!(
        matches!(&error, Error::Config { field, .. } if field == "private_key_path"),
        "{error}"
    );
    assert!(error.to_string().contains("rsa_key_des3.p8"), "{error}");
    assert_eq!(error.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn zoned_timestamps_dml_counts_and_a_transaction_span_statements() {
    let Some(server) = FakeSnow::start() else { return };
    let client = Client::connect(config(&server, "TX_DB", Auth::Password(Secret::new("any"))))
        .await
        .unwrap();
    client.query("CREATE DATABASE IF NOT EXISTS TX_DB").await.unwrap();
    client.query("CREATE SCHEMA IF NOT EXISTS TX_DB.PUBLIC").await.unwrap();
    client
        .query("CREATE OR REPLACE TABLE TX_DB.PUBLIC.Z (id INT, tz TIMESTAMP_TZ, ltz TIMESTAMP_LTZ)")
        .await
        .unwrap();
    // fakesnow cannot parse offsets in literals: UTC values only.
    let inserted = client
        .query(
            "INSERT INTO TX_DB.PUBLIC.Z VALUES (1, '2024-01-02 03:04:05.5', '2024-01-02 03:04:05.25'), \
             (2, NULL, NULL), (3, '1969-12-31 23:59:59.999999', '1970-01-01 00:00:00')",
        )
        .await
        .unwrap();
    assert_eq!(inserted.rows_affected, Some(3));

    let result = client
        .query("SELECT tz, ltz FROM TX_DB.PUBLIC.Z ORDER BY id")
        .await
        .unwrap();
    let utc = Some("UTC".into());
    assert_eq!(
        result.schema.field(0).data_type(),
        &DataType::Timestamp(TimeUnit::Nanosecond, utc.clone())
    );
    let batch = arrow::compute::concat_batches(&result.schema, &result.batches).unwrap();
    let tz = batch.column(0).as_primitive::<TimestampNanosecondType>();
    assert_eq!(tz.value(0), 1_704_164_645_500_000_000);
    assert!(tz.is_null(1));
    // DuckDB under fakesnow keeps microseconds; the instant before 1970 stays exact.
    assert_eq!(tz.value(2), -1_000);
    let ltz = arrow::compute::cast(batch.column(1), &DataType::Int64).unwrap();
    assert_eq!(ltz.as_primitive::<Int64Type>().value(0), 1_704_164_645_250_000_000);

    // One session: a transaction spans calls, and a rollback undoes them.
    client.query("BEGIN").await.unwrap();
    let deleted = client.query("DELETE FROM TX_DB.PUBLIC.Z WHERE id > 1").await.unwrap();
    assert_eq!(deleted.rows_affected, Some(2));
    let updated = client
        .query("UPDATE TX_DB.PUBLIC.Z SET ltz = NULL WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(updated.rows_affected, Some(1));
    client.query("ROLLBACK").await.unwrap();
    let count = client.query("SELECT COUNT(*) AS n FROM TX_DB.PUBLIC.Z").await.unwrap();
    let n = arrow::compute::cast(count.batches[0].column(0), &DataType::Int64).unwrap();
    assert_eq!(n.as_primitive::<Int64Type>().value(0), 3);
    client.close().await.unwrap();
}
