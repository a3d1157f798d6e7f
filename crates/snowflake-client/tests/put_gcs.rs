//! PUT into GCS stages over HTTP, against a local server on a port from the OS that records
//! every request and answers from a script: presigned URLs (what fakesnow and real GCS
//! internal stages without a token give, one URL per file) and the access-token XML API.

#[path = "put_support/mod.rs"]
mod support;

use std::net::SocketAddr;

use axum::http::Method;
use backhaul_core::ErrorClass;
use backhaul_snowflake_client::{Error, PutOptions, StageAnswer, UploadTuning, upload_files};
use support::{MASTER_KEY_256, ScriptedAnswers, data, decrypt, digest, source, start};

const SIGNATURE: &str = "X-Goog-Signature=not-for-printing";

/// A fakesnow-style answer: a GCS stage with a presigned URL for the file the statement named.
fn presigned_answer(addr: SocketAddr, name: &str, generation: usize) -> serde_json::Value {
    serde_json::json!({
        "command": "UPLOAD",
        "src_locations": [format!("/backhaul/{name}")],
        "parallel": 4, "autoCompress": false, "sourceCompression": "none", "overwrite": true,
        "stageInfo": {
            "locationType": "GCS",
            "location": "DB.SCH.ST/",
            "creds": {},
            "presignedUrl": format!("http://{addr}/fs_bucket/DB/SCH/ST/{name}?g={generation}&{SIGNATURE}")
        }
    })
}

fn tuning() -> UploadTuning {
    UploadTuning {
        part_size: 64 << 10,
        max_attempts: 3,
        retry_base_delay: std::time::Duration::from_millis(1),
        ..UploadTuning::default()
    }
}

#[tokio::test]
async fn presigned_url_per_file_small_and_streamed() {
    let server = start().await;
    let small = data(3000, 1);
    let large = data((200 << 10) + 7, 2);
    let files = source(&[("a.parquet", &small), ("b.parquet", &large)]).await;
    let addr = server.addr;
    let answers = ScriptedAnswers::new(move |name: &str, n| presigned_answer(addr, name, n));
    let first = StageAnswer::parse(&presigned_answer(addr, "a.parquet", 0)).unwrap();
    let outcomes = upload_files(first, &files, &PutOptions::default(), &tuning(), &answers)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 2);
    // The first file's URL came with the first answer; the second file asked for its own.
    assert_eq!(answers.asked(), ["b.parquet"]);
    let mut requests = server.capture.requests();
    requests.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(requests.len(), 2);
    for (request, (name, plain)) in requests.iter().zip([("a.parquet", &small), ("b.parquet", &large)]) {
        assert_eq!(request.method, Method::PUT);
        assert_eq!(request.path, format!("/fs_bucket/DB/SCH/ST/{name}"));
        assert!(request.query.contains(SIGNATURE));
        assert!(request.body == *plain, "{name}: body as the source");
        assert_eq!(request.headers["x-goog-meta-sfc-digest"], digest(plain).as_str());
        assert_eq!(request.headers["content-length"], plain.len().to_string().as_str());
        assert!(request.headers.get("authorization").is_none());
        assert!(request.headers.get("x-goog-meta-encryptiondata").is_none());
    }
}

#[tokio::test]
async fn presigned_upload_retries_transient_failures_and_renews_an_expired_url_once() {
    let server = start().await;
    let plain = data(100, 3);
    let files = source(&[("a.parquet", &plain)]).await;
    let addr = server.addr;
    let answers = ScriptedAnswers::new(move |name: &str, n| presigned_answer(addr, name, n));
    // 503 (retried), then 400: how an expired presigned URL answers (renewed), then success.
    server.capture.script(&[503, 400]);
    let first = StageAnswer::parse(&presigned_answer(addr, "a.parquet", 0)).unwrap();
    upload_files(first, &files, &PutOptions::default(), &tuning(), &answers)
        .await
        .unwrap();
    assert_eq!(answers.asked(), ["a.parquet"], "one fresh URL");
    let queries: Vec<String> = server.capture.requests().iter().map(|r| r.query.clone()).collect();
    assert_eq!(queries.len(), 3);
    assert!(
        queries[0].starts_with("g=0&") && queries[1].starts_with("g=0&") && queries[2].starts_with("g=1&"),
        "{queries:?}"
    );
}

#[tokio::test]
async fn refused_twice_is_permanent_after_one_renewal_and_throttling_is_throttled() {
    let server = start().await;
    let files = source(&[("a.parquet", &data(100, 4))]).await;
    let addr = server.addr;
    let answers = ScriptedAnswers::new(move |name: &str, n| presigned_answer(addr, name, n));
    server.capture.script(&[403, 403]);
    let first = StageAnswer::parse(&presigned_answer(addr, "a.parquet", 0)).unwrap();
    let error = upload_files(first.clone(), &files, &PutOptions::default(), &tuning(), &answers)
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent);
    assert_eq!(answers.asked().len(), 1, "exactly one renewal, no storm");
    let shown = format!("{error} {error:?}");
    assert!(matches!(error, Error::Upload { .. }));
    assert!(
        shown.contains("403") && shown.contains("scripted failure 403"),
        "server's message: {shown}"
    );
    assert!(!shown.contains("not-for-printing"), "{shown}");

    // 429 on every attempt: throttled, after max_attempts requests.
    let before = server.capture.requests().len();
    server.capture.script(&[429, 429, 429]);
    let error = upload_files(first, &files, &PutOptions::default(), &tuning(), &answers)
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::Throttled, "{error}");
    assert_eq!(server.capture.requests().len() - before, 3);
}

#[tokio::test]
async fn access_token_upload_with_client_side_encryption() {
    let server = start().await;
    let small = data(1000, 5);
    let large = data((300 << 10) + 1, 6);
    let files = source(&[("s.parquet", &small), ("l.parquet", &large)]).await;
    let answer_json = serde_json::json!({
        "command": "UPLOAD",
        "stageInfo": {
            "locationType": "GCS",
            "location": "sfc-gcs-bucket/stages/abc/backhaul/",
            "region": "US-CENTRAL1",
            "endPoint": format!("http://{}", server.addr),
            "isClientSideEncrypted": true,
            "creds": {"GCS_ACCESS_TOKEN": "ya29.token-not-for-printing"}
        },
        "encryptionMaterial": {"queryStageMasterKey": MASTER_KEY_256, "queryId": "01b2-q", "smkId": 7}
    });
    let answers = ScriptedAnswers::new(|_: &str, _| unreachable!("a token covers every file"));
    upload_files(
        StageAnswer::parse(&answer_json).unwrap(),
        &files,
        &PutOptions::default(),
        &tuning(),
        &answers,
    )
    .await
    .unwrap();
    let mut requests = server.capture.requests();
    requests.sort_by(|a, b| a.path.cmp(&b.path));
    for (request, (name, plain)) in requests.iter().zip([("l.parquet", &large), ("s.parquet", &small)]) {
        assert_eq!(request.path, format!("/sfc-gcs-bucket/stages/abc/backhaul/{name}"));
        assert_eq!(request.headers["authorization"], "Bearer ya29.token-not-for-printing");
        let data: serde_json::Value =
            serde_json::from_str(request.headers["x-goog-meta-encryptiondata"].to_str().unwrap()).unwrap();
        assert_eq!(data["EncryptionMode"], "FullBlob");
        assert_eq!(data["WrappedContentKey"]["KeyId"], "symmKey1");
        let decrypted = decrypt(
            MASTER_KEY_256,
            data["WrappedContentKey"]["EncryptedKey"].as_str().unwrap(),
            data["ContentEncryptionIV"].as_str().unwrap(),
            &request.body,
        );
        assert!(decrypted == *plain, "{name} decrypts to the source");
        assert_eq!(request.headers["x-goog-meta-sfc-digest"], digest(plain).as_str());
        let matdesc: serde_json::Value =
            serde_json::from_str(request.headers["x-goog-meta-matdesc"].to_str().unwrap()).unwrap();
        assert_eq!(
            matdesc,
            serde_json::json!({"queryId": "01b2-q", "smkId": "7", "keySize": "256"})
        );
    }
}
