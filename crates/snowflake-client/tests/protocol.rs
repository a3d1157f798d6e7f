//! The protocol paths fakesnow does not have (wrong credentials, 5xx/429 retries, token
//! renewal, asynchronous polling, result chunks, real Snowflake's Arrow encodings), against a
//! small local HTTP server (axum, port 0) replaying recorded answers of the official Go
//! driver's test data (`tests/fixtures/gosnowflake/`, sources in `tests/fixtures/README.md`)
//! or answers built from the driver's response types (each test names its source).

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{
    ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Float64Array, Int8Array, Int16Array, Int32Array,
    Int64Array, RecordBatch, StringArray, StructArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Fields, Int64Type, Schema, Time64MicrosecondType, TimeUnit,
    TimestampMillisecondType, TimestampNanosecondType,
};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use backhaul_core::ErrorClass;
use backhaul_snowflake_client::{Auth, Client, ClientConfig, Error, RetrySettings, Secret};
use base64::Engine;
use serde_json::{Value, json};

/// One request the server saw.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Value,
}

impl Seen {
    fn authorization(&self) -> Option<&str> {
        self.headers.get("authorization").and_then(|v| v.to_str().ok())
    }
}

/// An answer: status, body and extra headers.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

fn reply(status: u16, body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status,
        body: body.into(),
    }
}

fn ok(json: Value) -> Reply {
    reply(200, json.to_string())
}

type Script = dyn Fn(&Seen, &[Seen]) -> Reply + Send + Sync;
type ReplayState = (Arc<Mutex<Vec<Seen>>>, Arc<Script>);

/// A local server answering every request with `script(request, earlier requests)`.
struct Replay {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Replay {
    async fn start(script: impl Fn(&Seen, &[Seen]) -> Reply + Send + Sync + 'static) -> Replay {
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let script: Arc<Script> = Arc::new(script);
        let state = (seen.clone(), script);
        let app = axum::Router::new()
            .fallback(
                |axum::extract::State((seen, script)): axum::extract::State<ReplayState>,
                 method: Method,
                 uri: Uri,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let query = uri
                        .query()
                        .map(|q| url_pairs(q).into_iter().collect::<HashMap<String, String>>())
                        .unwrap_or_default();
                    let request = Seen {
                        method,
                        path: uri.path().to_string(),
                        query,
                        headers,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    };
                    let answer = {
                        let mut seen = seen.lock().unwrap();
                        let answer = script(&request, &seen);
                        seen.push(request);
                        answer
                    };
                    (StatusCode::from_u16(answer.status).unwrap(), answer.body)
                },
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Replay { url, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/gosnowflake/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const PASSWORD: &str = "pa55-never-shown";

fn config(server: &Replay) -> ClientConfig {
    let mut config = ClientConfig::new("xy12345.us-east-1", "testUser", Auth::Password(Secret::new(PASSWORD)));
    config.base_url = server.url.clone();
    config.database = Some("TEST_DB".into());
    config.request_timeout = Duration::from_secs(10);
    config.statement_timeout = Duration::from_secs(10);
    config.retry = RetrySettings {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    config
}

const LOGIN: &str = "/session/v1/login-request";
const QUERY: &str = "/queries/v1/query-request";

/// The recorded successful login (session token `session token`, master `master token`).
fn login_or(request: &Seen, otherwise: impl FnOnce() -> Reply) -> Reply {
    if request.path == LOGIN {
        ok(fixture("login_success.json"))
    } else {
        otherwise()
    }
}

#[tokio::test]
async fn wrong_credentials_are_one_request_and_a_permanent_auth_error() {
    let server = Replay::start(|_, _| ok(fixture("login_invalid_password.json"))).await;
    let error = Client::connect(config(&server)).await.unwrap_err();
    match &error {
        Error::Auth { code, message } => {
            assert_eq!(code, "390100");
            assert_eq!(message, "Incorrect username or password was specified.");
        }
        other => panic!("expected Error::Auth, got {other:?}"),
    }
    assert_eq!(error.class(), ErrorClass::Permanent);
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "one login attempt, no retries");
    let data = &seen[0].body["data"];
    assert_eq!(data["LOGIN_NAME"], "testUser");
    assert_eq!(data["PASSWORD"], PASSWORD);
    assert_eq!(data["ACCOUNT_NAME"], "XY12345");
    assert!(data["SESSION_PARAMETERS"].is_object());
    assert_eq!(seen[0].query.get("databaseName").map(String::as_str), Some("TEST_DB"));
    assert!(!format!("{error} {error:?}").contains(PASSWORD));

    // An HTTP 403 on login is just as final.
    let server = Replay::start(|_, _| reply(403, r#"{"message":"account is locked"}"#)).await;
    let error = Client::connect(config(&server)).await.unwrap_err();
    assert!(
        matches!(&error, Error::Auth { message, .. } if message == "account is locked"),
        "{error:?}"
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn five_hundreds_then_success_are_retried_with_the_same_request_id() {
    let server = Replay::start(|request, earlier| {
        login_or(request, || {
            let tries = earlier.iter().filter(|s| s.path == QUERY).count();
            if tries < 2 {
                reply(503, "<html>Service Unavailable</html>")
            } else {
                ok(fixture("select1_json_rowset.json"))
            }
        })
    })
    .await;
    let client = Client::connect(config(&server)).await.unwrap();
    let result = client.query("select 1").await.unwrap();
    assert_eq!(result.query_id, "01ba13b4-0104-e9fd-0000-0111029ca00e");
    assert_eq!(result.schema.field(0).data_type(), &DataType::Int64);
    assert_eq!(result.batches[0].column(0).as_primitive::<Int64Type>().value(0), 1);

    let queries = server.seen_at(QUERY);
    assert_eq!(queries.len(), 3);
    let request_ids: Vec<_> = queries.iter().map(|q| q.query["requestId"].clone()).collect();
    assert!(request_ids.iter().all(|id| *id == request_ids[0]), "{request_ids:?}");
    let guids: std::collections::HashSet<_> = queries.iter().map(|q| q.query["request_guid"].clone()).collect();
    assert_eq!(guids.len(), 3, "a fresh request_guid per attempt");
    assert_eq!(queries[0].query.get("retryCount"), None);
    assert_eq!(queries[1].query["retryCount"], "1");
    assert_eq!(queries[2].query["retryCount"], "2");
    assert_eq!(queries[2].query["retryReason"], "503");
    assert_eq!(queries[0].authorization(), Some("Snowflake Token=\"session token\""));
    assert_eq!(queries[0].body["sqlText"], "select 1");
}

#[tokio::test]
async fn five_hundreds_forever_end_after_max_attempts_as_transient_with_the_servers_message() {
    let server =
        Replay::start(|request, _| login_or(request, || reply(500, r#"{"message":"warehouse overloaded"}"#))).await;
    let client = Client::connect(config(&server)).await.unwrap();
    let error = client.query("select 1").await.unwrap_err();
    assert!(
        matches!(&error, Error::Http { status: 500, message, .. } if message == "warehouse overloaded"),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::Transient);
    assert_eq!(server.seen_at(QUERY).len(), 3, "max_attempts");

    let server = Replay::start(|request, _| login_or(request, || reply(429, "slow down"))).await;
    let client = Client::connect(config(&server)).await.unwrap();
    let error = client.query("select 1").await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Throttled);
    assert!(error.to_string().contains("slow down"), "{error}");
    assert_eq!(server.seen_at(QUERY).len(), 3);
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_network_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut config = ClientConfig::new("acct", "u", Auth::Password(Secret::new(PASSWORD)));
    config.base_url = url;
    config.retry = RetrySettings {
        max_attempts: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    };
    let error = Client::connect(config).await.unwrap_err();
    assert!(matches!(error, Error::Network { .. }), "{error:?}");
    assert_eq!(error.class(), ErrorClass::Transient);
    assert!(!error.to_string().contains("request_guid"), "{error}");
}

/// Token renewal as the official drivers do it (gosnowflake `restful.go`:
/// `renewRestfulSession`, `renewSessionResponseMain`): the master token in the
/// Authorization header, `{"oldSessionToken", "requestType": "RENEW"}`, and the statement
/// resent with its request id.
#[tokio::test]
async fn an_expired_session_token_is_renewed_with_the_master_token() {
    let server = Replay::start(|request, _| {
        login_or(request, || match request.path.as_str() {
            "/session/token-request" => ok(json!({
                "data": {
                    "sessionToken": "renewed token",
                    "validityInSecondsST": 3600,
                    "masterToken": "master token 2",
                    "validityInSecondsMT": 14400,
                    "sessionId": 1172562260498u64
                },
                "code": null, "message": null, "success": true
            })),
            QUERY if request.authorization() == Some("Snowflake Token=\"session token\"") => ok(json!({
                "data": null, "code": "390112",
                "message": "Your session has expired. Please login again.", "success": false
            })),
            QUERY => ok(fixture("select1_json_rowset.json")),
            other => panic!("unexpected {other}"),
        })
    })
    .await;
    let client = Client::connect(config(&server)).await.unwrap();
    let result = client.query("select 1").await.unwrap();
    assert_eq!(result.num_rows(), 1);
    let renewals = server.seen_at("/session/token-request");
    assert_eq!(renewals.len(), 1);
    assert_eq!(renewals[0].authorization(), Some("Snowflake Token=\"master token\""));
    assert_eq!(
        renewals[0].body,
        json!({"oldSessionToken": "session token", "requestType": "RENEW"})
    );
    let queries = server.seen_at(QUERY);
    assert_eq!(queries.len(), 2);
    assert_eq!(queries[0].query["requestId"], queries[1].query["requestId"]);
    assert_eq!(queries[1].authorization(), Some("Snowflake Token=\"renewed token\""));
    // The next statement uses the renewed token straight away.
    client.query("select 1").await.unwrap();
    assert_eq!(server.seen_at("/session/token-request").len(), 1);
}

#[tokio::test]
async fn a_statement_in_progress_is_polled_until_its_result_arrives() {
    let result_path = "/queries/01bfd516-0009-ae23-0000-4c390101d1aa/result";
    let server = Replay::start(move |request, earlier| {
        login_or(request, || {
            if request.path == QUERY {
                return ok(fixture("query_in_progress_async.json"));
            }
            assert_eq!(request.path, result_path);
            assert_eq!(request.method, Method::GET);
            let polls = earlier.iter().filter(|s| s.path == result_path).count();
            if polls < 2 {
                // Still running: the same answer again (code 333333 this time).
                let mut answer = fixture("query_in_progress_async.json");
                answer["code"] = json!("333333");
                ok(answer)
            } else {
                ok(fixture("query_result.json"))
            }
        })
    })
    .await;
    let client = Client::connect(config(&server)).await.unwrap();
    let result = client.query("select ms, sum(c1) from t group by ms").await.unwrap();
    assert_eq!(result.query_id, "mock-query-id-12345");
    assert_eq!(result.schema.field(1).name(), "SUM(C1)");
    let sums = result.batches[0].column(1).as_primitive::<Decimal128Type>();
    assert_eq!((sums.value(0), sums.value(1)), (5050, 5100));
    assert_eq!(server.seen_at(result_path).len(), 3);
    assert!(
        server
            .seen_at(result_path)
            .iter()
            .all(|s| s.authorization() == Some("Snowflake Token=\"session token\""))
    );
}

#[tokio::test]
async fn a_statement_running_past_statement_timeout_is_a_transient_timeout() {
    let server = Replay::start(|request, _| {
        login_or(request, || match request.path.as_str() {
            "/queries/v1/abort-request" => ok(json!({"data": null, "success": true})),
            _ => ok(fixture("query_in_progress_async.json")),
        })
    })
    .await;
    let mut config = config(&server);
    config.statement_timeout = Duration::from_millis(100);
    let client = Client::connect(config).await.unwrap();
    let error = client.query("select system$wait(3600)").await.unwrap_err();
    match &error {
        Error::StatementTimeout { query_id, waited } => {
            assert_eq!(query_id, "01bfd516-0009-ae23-0000-4c390101d1aa");
            assert!(*waited >= Duration::from_millis(100));
        }
        other => panic!("expected a statement timeout, got {other:?}"),
    }
    assert_eq!(error.class(), ErrorClass::Transient);
    // The statement is cancelled on the server, by the request id it was sent with
    // (snowflake-connector-python `connection.py` `_cancel_query`: `{"sqlText", "requestId"}`).
    let aborts = server.seen_at("/queries/v1/abort-request");
    assert_eq!(aborts.len(), 1);
    assert_eq!(aborts[0].body["requestId"], server.seen_at(QUERY)[0].query["requestId"]);
    assert_eq!(aborts[0].body["sqlText"], "select system$wait(3600)");
}

fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// `value` in every row but the NULL row (id 0).
fn present<T: Copy>(ids: &[i32], value: T) -> Vec<Option<T>> {
    ids.iter().map(|id| (*id != 0).then_some(value)).collect()
}

/// Rows `ids` in real Snowflake's Arrow encodings, as the official Go driver's converters
/// read them (`arrowbatches/converter.go`, `converter.go`): NUMBER as the narrowest integer
/// holding the value scaled by 10^scale; TIMESTAMP_NTZ(9) as struct{epoch s, fraction ns};
/// TIMESTAMP_LTZ(3) as int64 ms; TIMESTAMP_TZ(3) as struct{epoch ms, timezone (offset
/// minutes + 1440)}; TIMESTAMP_TZ(9) as struct{epoch, fraction, timezone}; TIME(3) as int32
/// ms; DATE as date32. Row id 0 is all NULLs.
fn snowflake_arrow_stream(ids: &[i32]) -> Vec<u8> {
    let n = ids.len();
    let epoch_field = Field::new("epoch", DataType::Int64, false);
    let fraction_field = Field::new("fraction", DataType::Int32, false);
    let tz_field = Field::new("timezone", DataType::Int32, false);
    let nulls = arrow::buffer::NullBuffer::from(ids.iter().map(|id| *id != 0).collect::<Vec<_>>());
    let ntz = StructArray::new(
        Fields::from(vec![epoch_field.clone(), fraction_field.clone()]),
        vec![
            Arc::new(Int64Array::from(vec![1_704_164_645i64; n])) as ArrayRef,
            Arc::new(Int32Array::from(vec![123_456_789; n])),
        ],
        Some(nulls.clone()),
    );
    let tz3 = StructArray::new(
        Fields::from(vec![epoch_field.clone(), tz_field.clone()]),
        vec![
            Arc::new(Int64Array::from(vec![1_704_164_645_500i64; n])) as ArrayRef,
            Arc::new(Int32Array::from(vec![1440 + 120; n])),
        ],
        Some(nulls.clone()),
    );
    let tz9 = StructArray::new(
        Fields::from(vec![epoch_field, fraction_field, tz_field]),
        vec![
            Arc::new(Int64Array::from(vec![-1i64; n])) as ArrayRef,
            Arc::new(Int32Array::from(vec![999_999_999; n])),
            Arc::new(Int32Array::from(vec![1440 - 300; n])),
        ],
        Some(nulls),
    );
    let columns: Vec<(&str, ArrayRef, HashMap<String, String>)> = vec![
        (
            "ID",
            Arc::new(Int32Array::from(ids.to_vec())),
            meta(&[("logicalType", "FIXED"), ("precision", "18"), ("scale", "0")]),
        ),
        (
            "N",
            Arc::new(Int16Array::from(present(ids, 1234i16))),
            meta(&[("logicalType", "FIXED"), ("precision", "10"), ("scale", "2")]),
        ),
        (
            "BIG",
            Arc::new(Int8Array::from(present(ids, 5i8))),
            meta(&[("logicalType", "FIXED"), ("precision", "38"), ("scale", "0")]),
        ),
        (
            "TS_NTZ",
            Arc::new(ntz),
            meta(&[("logicalType", "TIMESTAMP_NTZ"), ("scale", "9")]),
        ),
        (
            "TS_LTZ",
            Arc::new(Int64Array::from(present(ids, 1_704_164_645_123i64))),
            meta(&[("logicalType", "TIMESTAMP_LTZ"), ("scale", "3")]),
        ),
        (
            "TS_TZ3",
            Arc::new(tz3),
            meta(&[("logicalType", "TIMESTAMP_TZ"), ("scale", "3")]),
        ),
        (
            "TS_TZ9",
            Arc::new(tz9),
            meta(&[("logicalType", "TIMESTAMP_TZ"), ("scale", "9")]),
        ),
        (
            "T",
            Arc::new(Int32Array::from(present(ids, 3_723_004i32))),
            meta(&[("logicalType", "TIME"), ("scale", "3")]),
        ),
        (
            "D",
            Arc::new(Date32Array::from(present(ids, 19_724))),
            meta(&[("logicalType", "DATE")]),
        ),
        (
            "B",
            Arc::new(BooleanArray::from(present(ids, true))),
            meta(&[("logicalType", "BOOLEAN")]),
        ),
        (
            "BIN",
            Arc::new(BinaryArray::from(present(ids, &b"\xab\xcd"[..]))),
            meta(&[("logicalType", "BINARY")]),
        ),
        (
            "S",
            Arc::new(StringArray::from(present(ids, "x"))),
            meta(&[("logicalType", "TEXT")]),
        ),
        (
            "V",
            Arc::new(StringArray::from(present(ids, "{\"a\":1}"))),
            meta(&[("logicalType", "VARIANT")]),
        ),
        (
            "R",
            Arc::new(Float64Array::from(present(ids, 1.5))),
            meta(&[("logicalType", "REAL")]),
        ),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, array, metadata)| {
                Field::new(*name, array.data_type().clone(), true).with_metadata(metadata.clone())
            })
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|(_, a, _)| a).collect()).unwrap();
    let mut out = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    drop(writer);
    out
}

fn row_types() -> Value {
    let col = |name: &str, type_name: &str, precision: Value, scale: Value| json!({"name": name, "type": type_name, "precision": precision, "scale": scale, "nullable": true});
    json!([
        col("ID", "fixed", json!(18), json!(0)),
        col("N", "fixed", json!(10), json!(2)),
        col("BIG", "fixed", json!(38), json!(0)),
        col("TS_NTZ", "timestamp_ntz", json!(0), json!(9)),
        col("TS_LTZ", "timestamp_ltz", json!(0), json!(3)),
        col("TS_TZ3", "timestamp_tz", json!(0), json!(3)),
        col("TS_TZ9", "timestamp_tz", json!(0), json!(9)),
        col("T", "time", json!(0), json!(3)),
        col("D", "date", Value::Null, Value::Null),
        col("B", "boolean", Value::Null, Value::Null),
        col("BIN", "binary", Value::Null, Value::Null),
        col("S", "text", Value::Null, Value::Null),
        col("V", "variant", Value::Null, Value::Null),
        col("R", "real", Value::Null, Value::Null),
    ])
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn check_decoded_types(result: &backhaul_snowflake_client::QueryResult, expected_ids: &[i64]) {
    let schema = &result.schema;
    let types: Vec<_> = schema.fields().iter().map(|f| f.data_type().clone()).collect();
    let utc = Some("UTC".into());
    assert_eq!(
        types,
        vec![
            DataType::Int64,
            DataType::Decimal128(10, 2),
            DataType::Decimal128(38, 0),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            DataType::Timestamp(TimeUnit::Millisecond, utc.clone()),
            DataType::Timestamp(TimeUnit::Millisecond, utc.clone()),
            DataType::Timestamp(TimeUnit::Nanosecond, utc),
            DataType::Time64(TimeUnit::Microsecond),
            DataType::Date32,
            DataType::Boolean,
            DataType::Binary,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Float64,
        ]
    );
    assert_eq!(
        schema
            .field(12)
            .metadata()
            .get("ARROW:extension:name")
            .map(String::as_str),
        Some("arrow.json")
    );
    let batch = arrow::compute::concat_batches(schema, &result.batches).unwrap();
    let ids: Vec<i64> = batch.column(0).as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(ids, expected_ids, "inline rowset first, then the chunks in order");
    let row = ids.iter().position(|id| *id != 0).unwrap();
    assert_eq!(batch.column(1).as_primitive::<Decimal128Type>().value(row), 1234);
    assert_eq!(batch.column(2).as_primitive::<Decimal128Type>().value(row), 5);
    assert_eq!(
        batch.column(3).as_primitive::<TimestampNanosecondType>().value(row),
        1_704_164_645_123_456_789
    );
    assert_eq!(
        batch.column(4).as_primitive::<TimestampMillisecondType>().value(row),
        1_704_164_645_123
    );
    assert_eq!(
        batch.column(5).as_primitive::<TimestampMillisecondType>().value(row),
        1_704_164_645_500
    );
    assert_eq!(batch.column(6).as_primitive::<TimestampNanosecondType>().value(row), -1);
    assert_eq!(
        batch.column(7).as_primitive::<Time64MicrosecondType>().value(row),
        3_723_004_000
    );
    assert_eq!(batch.column(8).as_primitive::<Date32Type>().value(row), 19_724);
    assert!(batch.column(9).as_boolean().value(row));
    assert_eq!(batch.column(10).as_binary::<i32>().value(row), b"\xab\xcd");
    assert_eq!(batch.column(11).as_string::<i32>().value(row), "x");
    assert_eq!(batch.column(12).as_string::<i32>().value(row), "{\"a\":1}");
    assert_eq!(
        batch
            .column(13)
            .as_primitive::<arrow::datatypes::Float64Type>()
            .value(row),
        1.5
    );
    let null_row = ids.iter().position(|id| *id == 0).unwrap();
    for (index, column) in batch.columns().iter().enumerate().skip(1) {
        assert!(arrow::array::Array::is_null(column, null_row), "column {index}");
    }
}

/// A result in three parts (gosnowflake `query.go` `execResponseData`: `rowsetBase64`,
/// `chunks[].url`, `chunkHeaders`; `chunk_downloader.go`: chunks fetched with those headers
/// and no session token, gzip detected by its magic bytes).
#[tokio::test]
async fn arrow_results_in_chunks_decode_in_order_with_snowflakes_encodings() {
    let chunk_one = gzip(&snowflake_arrow_stream(&[3, 0]));
    let chunk_two = snowflake_arrow_stream(&[5]);
    let server = Replay::start(move |request, _| {
        login_or(request, || match request.path.as_str() {
            QUERY => {
                let base = request.headers["host"].to_str().unwrap().to_string();
                ok(json!({
                    "data": {
                        "rowtype": row_types(),
                        "queryResultFormat": "arrow",
                        "rowsetBase64": base64::engine::general_purpose::STANDARD.encode(snowflake_arrow_stream(&[1, 2])),
                        "chunks": [
                            {"url": format!("http://{base}/results/chunk_1?X-Amz-Signature=chunk-secret"), "rowCount": 2, "uncompressedSize": 1000, "compressedSize": 500},
                            {"url": format!("http://{base}/results/chunk_2?X-Amz-Signature=chunk-secret"), "rowCount": 1, "uncompressedSize": 1000, "compressedSize": 1000}
                        ],
                        "chunkHeaders": {"x-amz-server-side-encryption-customer-key": "chunk-key", "x-amz-server-side-encryption-customer-algorithm": "AES256"},
                        "total": 5, "returned": 2, "queryId": "01-arrow-chunks", "statementTypeId": 4096
                    },
                    "code": null, "message": null, "success": true
                }))
            }
            "/results/chunk_1" => reply(200, chunk_one.clone()),
            "/results/chunk_2" => reply(200, chunk_two.clone()),
            other => panic!("unexpected {other}"),
        })
    })
    .await;
    let client = Client::connect(config(&server)).await.unwrap();
    let result = client.query("select * from t").await.unwrap();
    assert_eq!(result.query_id, "01-arrow-chunks");
    assert_eq!(result.rows_affected, None);
    check_decoded_types(&result, &[1, 2, 3, 0, 5]);
    for chunk in ["/results/chunk_1", "/results/chunk_2"] {
        let seen = server.seen_at(chunk);
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].headers["x-amz-server-side-encryption-customer-key"],
            "chunk-key"
        );
        assert_eq!(seen[0].authorization(), None, "no session token to cloud storage");
    }
}

/// The same values as Snowflake's JSON rowset encodes them (gosnowflake `converter.go`
/// `stringToValue`: numbers as decimal text, timestamps as `seconds.fraction` [+ ` tz`],
/// TIME as seconds, DATE as days, BINARY as hex, BOOLEAN as 1/0), in a JSON chunk fetched with
/// the SSE-C headers built from `qrmk`.
#[tokio::test]
async fn json_results_and_chunks_with_qrmk_decode_to_the_same_types() {
    let row = |id: &str| {
        json!([
            id,
            "12.34",
            "5",
            "1704164645.123456789",
            "1704164645.123",
            "1704164645.500 1560",
            "-0.000000001 1140",
            "3723.004",
            "19724",
            "1",
            "ABCD",
            "x",
            "{\"a\":1}",
            "1.5"
        ])
    };
    let nulls = json!([
        "0", null, null, null, null, null, null, null, null, null, null, null, null, null
    ]);
    let chunk = gzip(format!("{},{}", row("3"), nulls).as_bytes());
    let server = Replay::start(move |request, _| {
        login_or(request, || match request.path.as_str() {
            QUERY => {
                let base = request.headers["host"].to_str().unwrap().to_string();
                ok(json!({
                    "data": {
                        "rowtype": row_types(),
                        "queryResultFormat": "json",
                        "rowset": [row("1"), row("2")],
                        "chunks": [{"url": format!("http://{base}/results/json_1?sig=chunk-secret"), "rowCount": 2}],
                        "qrmk": "qrmk-key",
                        "total": 4, "returned": 2, "queryId": "01-json-chunks", "statementTypeId": 4096
                    },
                    "success": true
                }))
            }
            "/results/json_1" => {
                assert_eq!(request.headers["x-amz-server-side-encryption-customer-key"], "qrmk-key");
                assert_eq!(
                    request.headers["x-amz-server-side-encryption-customer-algorithm"],
                    "AES256"
                );
                reply(200, chunk.clone())
            }
            other => panic!("unexpected {other}"),
        })
    })
    .await;
    let client = Client::connect(config(&server)).await.unwrap();
    let result = client.query("select * from t").await.unwrap();
    check_decoded_types(&result, &[1, 2, 3, 0]);
}

#[tokio::test]
async fn a_failed_chunk_download_names_the_url_without_its_signature() {
    let server = Replay::start(|request, _| {
        login_or(request, || match request.path.as_str() {
            QUERY => {
                let base = request.headers["host"].to_str().unwrap().to_string();
                ok(json!({
                    "data": {
                        "rowtype": [{"name": "ID", "type": "fixed", "precision": 18, "scale": 0}],
                        "queryResultFormat": "json", "rowset": [["1"]],
                        "chunks": [{"url": format!("http://{base}/results/gone?X-Amz-Signature=chunk-secret"), "rowCount": 1}],
                        "queryId": "q"
                    },
                    "success": true
                }))
            }
            _ => reply(403, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"),
        })
    })
    .await;
    let client = Client::connect(config(&server)).await.unwrap();
    let error = client.query("select 1").await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::Http { status: 403, .. }), "{error:?}");
    assert!(
        text.contains("/results/gone") && text.contains("Request has expired"),
        "{text}"
    );
    assert!(!text.contains("chunk-secret"), "{text}");
    assert_eq!(error.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn statement_errors_carry_code_sqlstate_and_class() {
    let server = Replay::start(|request, _| {
        login_or(request, || {
            let (code, state, message) = match request.body["sqlText"].as_str().unwrap() {
                "missing" => (
                    "002003",
                    "42S02",
                    "SQL compilation error: Object 'T' does not exist or not authorized.",
                ),
                "timeout" => (
                    "000630",
                    "57014",
                    "Statement reached its statement or warehouse timeout of 10 second(s) and was canceled.",
                ),
                _ => (
                    "000606",
                    "57P03",
                    "No active warehouse selected in the current session.",
                ),
            };
            ok(json!({
                "data": {"errorCode": code, "sqlState": state, "queryId": "01-failed"},
                "code": code, "message": message, "success": false
            }))
        })
    })
    .await;
    let client = Client::connect(config(&server)).await.unwrap();
    for (sql, class) in [
        ("missing", ErrorClass::Permanent),
        ("timeout", ErrorClass::Transient),
        ("no warehouse", ErrorClass::Permanent),
    ] {
        let error = client.query(sql).await.unwrap_err();
        assert!(
            matches!(&error, Error::Sql { query_id: Some(id), .. } if id == "01-failed"),
            "{error:?}"
        );
        assert_eq!(error.class(), class, "{sql}: {error}");
    }
    // Each failed statement was sent once: SQL errors are answers, not retried.
    assert_eq!(server.seen_at(QUERY).len(), 3);
}

/// When the master token has expired too (code 390114 from the token request), the client
/// logs in again, once, and carries on.
#[tokio::test]
async fn an_expired_master_token_leads_to_one_new_login() {
    let server = Replay::start(|request, earlier| {
        let logins = earlier.iter().filter(|s| s.path == LOGIN).count();
        match request.path.as_str() {
            LOGIN if logins == 0 => ok(fixture("login_success.json")),
            LOGIN => {
                let mut answer = fixture("login_success.json");
                answer["data"]["token"] = json!("second login token");
                ok(answer)
            }
            "/session/token-request" => ok(json!({
                "data": null, "code": "390114",
                "message": "Authentication token has expired.  The user must authenticate again.",
                "success": false
            })),
            "/session/heartbeat" if request.authorization() == Some("Snowflake Token=\"session token\"") => ok(json!({
                "data": null, "code": "390112",
                "message": "Your session has expired. Please login again.", "success": false
            })),
            "/session/heartbeat" => ok(json!({"data": null, "success": true})),
            "/session" => {
                assert_eq!(request.query.get("delete").map(String::as_str), Some("true"));
                assert_eq!(request.authorization(), Some("Snowflake Token=\"second login token\""));
                ok(json!({"data": null, "code": null, "message": null, "success": true}))
            }
            other => panic!("unexpected {other}"),
        }
    })
    .await;
    let client = Client::connect(config(&server)).await.unwrap();
    client.heartbeat().await.unwrap();
    assert_eq!(server.seen_at(LOGIN).len(), 2);
    assert_eq!(server.seen_at("/session/token-request").len(), 1);
    let heartbeats = server.seen_at("/session/heartbeat");
    assert_eq!(heartbeats.len(), 2);
    assert_eq!(
        heartbeats[1].authorization(),
        Some("Snowflake Token=\"second login token\"")
    );
    client.close().await.unwrap();
    assert_eq!(server.seen_at("/session").len(), 1);
}

/// A login answered 5xx is retried (it is not a refusal); a refusal never is.
#[tokio::test]
async fn a_login_answered_5xx_is_retried_until_it_succeeds() {
    let server = Replay::start(|_, earlier| {
        if earlier.is_empty() {
            reply(502, "<html>Bad Gateway</html>")
        } else {
            ok(fixture("login_success.json"))
        }
    })
    .await;
    Client::connect(config(&server)).await.unwrap();
    let logins = server.seen_at(LOGIN);
    assert_eq!(logins.len(), 2);
    assert_eq!(logins[0].query["request_id"], logins[1].query["request_id"]);
    assert_eq!(logins[1].query["retryReason"], "502");
}
