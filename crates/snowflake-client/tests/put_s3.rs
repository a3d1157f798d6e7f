//! PUT into an S3 stage, against moto (`backhaul_testkit::moto`), with stage answers shaped like
//! real Snowflake's: the fields the official Python connector's unit tests mock for an S3 stage
//! (snowflake-connector-python `test/unit/test_s3_util.py`: `command`, `src_locations`,
//! `stageInfo{creds{AWS_SECRET_KEY, AWS_KEY_ID, AWS_TOKEN}, location, region, locationType,
//! path, endPoint}`), plus `encryptionMaterial{queryStageMasterKey, queryId, smkId}`,
//! `threshold` and `parallel` as internal stages send them. `endPoint` is moto's URL: an
//! endpoint with a scheme is addressed path-style.

#[path = "put_support/mod.rs"]
mod support;

use backhaul_core::ErrorClass;
use backhaul_snowflake_client::{Error, PutOptions, StageAnswer, UploadTuning, upload_files};
use backhaul_testkit::moto::{self, MotoServer};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStoreExt};
use support::{MASTER_KEY_128, MASTER_KEY_256, ScriptedAnswers, data, decrypt, digest, source};

const PREFIX: &str = "z6x/users/1/backhaul/job/chunk-000001/";

fn s3_answer(server: &MotoServer, bucket: &str, master_key: Option<&str>) -> serde_json::Value {
    let mut answer = serde_json::json!({
        "command": "UPLOAD",
        "autoCompress": false,
        "sourceCompression": "none",
        "overwrite": true,
        "parallel": 4,
        "queryId": "01b2c3d4-0000-1111-0000-000123456789",
        "src_locations": ["/backhaul/small.parquet"],
        "stageInfo": {
            "locationType": "S3",
            "location": format!("{bucket}/{PREFIX}"),
            "path": PREFIX,
            "region": "us-east-1",
            "endPoint": server.endpoint(),
            "isClientSideEncrypted": master_key.is_some(),
            "ciphers": "AES_CBC",
            "useS3RegionalUrl": false,
            "storageAccount": null,
            "creds": {
                "AWS_KEY_ID": moto::ACCESS_KEY_ID,
                "AWS_SECRET_KEY": moto::SECRET_ACCESS_KEY,
                "AWS_TOKEN": "session-token-not-for-printing"
            }
        },
        "threshold": 209_715_200
    });
    if let Some(key) = master_key {
        answer["encryptionMaterial"] = serde_json::json!({
            "queryStageMasterKey": key,
            "queryId": "01b2c3d4-0000-1111-0000-000123456789",
            "smkId": 11_624_616_794_387_406_u64
        });
    }
    answer
}

/// Small enough parts that a 12 MiB file goes up in three (S3's minimum part is 5 MiB).
fn tuning() -> UploadTuning {
    UploadTuning {
        part_size: 5 << 20,
        max_attempts: 3,
        retry_base_delay: std::time::Duration::from_millis(1),
        ..UploadTuning::default()
    }
}

struct Stored {
    body: Vec<u8>,
    attributes: Attributes,
    e_tag: String,
}

/// Reads what landed, signed with moto's credentials (moto refuses anonymous reads of objects
/// written with credentials).
async fn fetch(server: &MotoServer, bucket: &str, name: &str) -> Stored {
    let store = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id(moto::ACCESS_KEY_ID)
        .with_secret_access_key(moto::SECRET_ACCESS_KEY)
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .build()
        .unwrap();
    let got = store.get(&Path::from(format!("{PREFIX}{name}"))).await.unwrap();
    let attributes = got.attributes.clone();
    let e_tag = got.meta.e_tag.clone().unwrap_or_default();
    Stored {
        body: got.bytes().await.unwrap().to_vec(),
        attributes,
        e_tag,
    }
}

/// The user metadata `x-amz-meta-<suffix>`.
fn header<'a>(stored: &'a Stored, suffix: &str) -> &'a str {
    stored
        .attributes
        .get(&Attribute::Metadata(suffix.to_string().into()))
        .unwrap_or_else(|| panic!("no x-amz-meta-{suffix} in {:?}", stored.attributes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stage_small_and_multipart_files_plain_and_encrypted() {
    let server = MotoServer::start("sfc-stage").unwrap();
    let small = data(1000, 1);
    let large = data((12 << 20) + 5, 2);

    // Without encryption (an external stage): the bytes as they are, and the digest.
    let files = source(&[("small.parquet", &small), ("large.parquet", &large)]).await;
    let answer_json = s3_answer(&server, "sfc-stage", None);
    let answers = ScriptedAnswers::new(|_: &str, _| unreachable!("S3 credentials cover every file"));
    let outcomes = upload_files(
        StageAnswer::parse(&answer_json).unwrap(),
        &files,
        &PutOptions::default(),
        &tuning(),
        &answers,
    )
    .await
    .unwrap();
    assert_eq!(
        outcomes.iter().map(|o| (o.name.as_str(), o.bytes)).collect::<Vec<_>>(),
        [("small.parquet", 1000), ("large.parquet", large.len() as u64)]
    );
    for (name, plain) in [("small.parquet", &small), ("large.parquet", &large)] {
        let stored = fetch(&server, "sfc-stage", name).await;
        assert!(stored.body == *plain, "{name} landed unchanged");
        assert_eq!(header(&stored, "sfc-digest"), digest(plain));
        assert!(
            stored
                .attributes
                .get(&Attribute::Metadata("x-amz-key".into()))
                .is_none()
        );
    }
    let large_etag = fetch(&server, "sfc-stage", "large.parquet").await.e_tag;
    assert!(
        large_etag.trim_matches('"').ends_with("-3"),
        "three parts: {large_etag}"
    );

    // With client-side encryption (an internal stage), 128- and 256-bit master keys.
    for (key, bits) in [(MASTER_KEY_128, 128), (MASTER_KEY_256, 256)] {
        let small_name = format!("small-{bits}.parquet");
        let large_name = format!("large-{bits}.parquet");
        let files = source(&[(&small_name, &small), (&large_name, &large)]).await;
        let answer_json = s3_answer(&server, "sfc-stage", Some(key));
        upload_files(
            StageAnswer::parse(&answer_json).unwrap(),
            &files,
            &PutOptions::default(),
            &tuning(),
            &answers,
        )
        .await
        .unwrap();
        let mut wrapped_keys = Vec::new();
        for (name, plain) in [(&small_name, &small), (&large_name, &large)] {
            let stored = fetch(&server, "sfc-stage", name).await;
            assert_eq!(
                stored.body.len(),
                (plain.len() / 16 + 1) * 16,
                "{name}: padded to whole blocks"
            );
            let wrapped = header(&stored, "x-amz-key");
            let iv = header(&stored, "x-amz-iv");
            assert!(
                decrypt(key, wrapped, iv, &stored.body) == *plain,
                "{name} decrypts to the source"
            );
            assert_eq!(header(&stored, "sfc-digest"), digest(plain), "digest of the plaintext");
            let matdesc: serde_json::Value = serde_json::from_str(header(&stored, "x-amz-matdesc")).unwrap();
            assert_eq!(
                matdesc,
                serde_json::json!({"queryId": "01b2c3d4-0000-1111-0000-000123456789",
                                   "smkId": "11624616794387406", "keySize": bits.to_string()})
            );
            wrapped_keys.push(wrapped.to_string());
        }
        assert_ne!(wrapped_keys[0], wrapped_keys[1], "a fresh key per file");
    }
    assert!(answers.asked().is_empty());
}

#[tokio::test]
async fn s3_stage_missing_bucket_fails_permanently_without_leaking_credentials() {
    let server = MotoServer::start("sfc-stage").unwrap();
    let files = source(&[("a.parquet", &data(10, 3))]).await;
    let answer_json = s3_answer(&server, "no-such-bucket", None);
    let answers = ScriptedAnswers::new(|_: &str, _| unreachable!());
    let error = upload_files(
        StageAnswer::parse(&answer_json).unwrap(),
        &files,
        &PutOptions::default(),
        &tuning(),
        &answers,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, Error::Upload { ref file, .. } if file == "a.parquet"),
        "{error}"
    );
    assert_eq!(error.class(), ErrorClass::Permanent, "{error}");
    let shown = format!("{error} {error:?}");
    assert!(
        !shown.contains(moto::SECRET_ACCESS_KEY) && !shown.contains("session-token"),
        "{shown}"
    );
}

/// An S3 stage answer pointing at the scripted local server, with session token `token`.
fn scripted_s3_answer(addr: std::net::SocketAddr, token: &str) -> serde_json::Value {
    serde_json::json!({
        "command": "UPLOAD",
        "stageInfo": {
            "locationType": "S3", "location": format!("sfc-stage/{PREFIX}"), "region": "us-west-2",
            "endPoint": format!("http://{addr}"),
            "creds": {"AWS_KEY_ID": "AKIA-test", "AWS_SECRET_KEY": "secret-not-for-printing", "AWS_TOKEN": token}
        }
    })
}

/// S3's answer to a request signed with an expired session token (AWS's documented error
/// response; the official connectors look for this code).
const EXPIRED_TOKEN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>ExpiredToken</Code>\
    <Message>The provided token has expired.</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>";

#[tokio::test]
async fn s3_expired_token_gets_fresh_credentials_once_and_5xx_is_retried() {
    let server = support::start().await;
    let files = source(&[("a.parquet", &data(100, 7))]).await;
    let addr = server.addr;
    let answers = ScriptedAnswers::new(move |_: &str, n| scripted_s3_answer(addr, &format!("fresh-token-{n}")));

    server.capture.script(&[503]);
    server.capture.script_body(400, EXPIRED_TOKEN);
    let first = StageAnswer::parse(&scripted_s3_answer(addr, "old-token")).unwrap();
    upload_files(first, &files, &PutOptions::default(), &tuning(), &answers)
        .await
        .unwrap();
    assert_eq!(answers.asked(), ["a.parquet"]);
    let requests = server.capture.requests();
    let tokens: Vec<&str> = requests
        .iter()
        .map(|r| r.headers["x-amz-security-token"].to_str().unwrap())
        .collect();
    // 503 retried by the S3 client with the same token, then the expired token renewed once.
    assert_eq!(tokens, ["old-token", "old-token", "fresh-token-1"]);
    assert_eq!(requests[2].path, format!("/sfc-stage/{PREFIX}a.parquet"));
    assert!(requests[2].headers.contains_key("x-amz-meta-sfc-digest"));

    // Refused (403) even with fresh credentials: permanent, after exactly one renewal.
    server.capture.script(&[403, 403]);
    let first = StageAnswer::parse(&scripted_s3_answer(addr, "old-token")).unwrap();
    let error = upload_files(first, &files, &PutOptions::default(), &tuning(), &answers)
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent, "{error}");
    assert_eq!(answers.asked().len(), 2);
    let shown = format!("{error} {error:?}");
    assert!(
        !shown.contains("not-for-printing") && !shown.contains("fresh-token"),
        "{shown}"
    );
}
