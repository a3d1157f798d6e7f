//! PUT throughput against the local servers: a measurement harness, not a test (ignored; it
//! asserts nothing about speed). Run it optimized:
//!
//! ```text
//! BACKHAUL_PUT_BENCH_MIB=256 cargo test --profile bench -p backhaul-snowflake-client \
//!     --test put_throughput -- --ignored --nocapture
//! ```
//!
//! It prints MB/s for one file of that size: to moto (S3 multipart, plain and client-side
//! encrypted) and to fakesnow (the presigned-URL PUT, streamed).

#[path = "put_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use backhaul_snowflake_client::{
    Auth, Client, ClientConfig, PutOptions, RetrySettings, Secret, StageAnswer, UploadTuning, upload_files,
};
use backhaul_testkit::fakesnow::FakeSnow;
use backhaul_testkit::moto::{self, MotoServer};
use support::{MASTER_KEY_256, ScriptedAnswers, data, source};

fn mib() -> usize {
    std::env::var("BACKHAUL_PUT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn report(what: &str, bytes: usize, took: Duration) {
    let mb = bytes as f64 / 1e6;
    println!(
        "{what}: {mb:.1} MB in {:.2} s = {:.1} MB/s",
        took.as_secs_f64(),
        mb / took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture in the bench profile"]
async fn put_throughput() {
    let bytes = mib() << 20;
    let body = data(bytes, 42);
    let tuning = UploadTuning::default();

    let server = MotoServer::start("bench").unwrap();
    for encrypted in [false, true] {
        let name = format!("f-{encrypted}.parquet");
        let files = source(&[(&name, &body)]).await;
        let mut answer = serde_json::json!({
            "command": "UPLOAD",
            "stageInfo": {"locationType": "S3", "location": "bench/stage/", "region": "us-east-1",
                          "endPoint": server.endpoint(),
                          "creds": {"AWS_KEY_ID": moto::ACCESS_KEY_ID, "AWS_SECRET_KEY": moto::SECRET_ACCESS_KEY}}
        });
        if encrypted {
            answer["encryptionMaterial"] =
                serde_json::json!({"queryStageMasterKey": MASTER_KEY_256, "queryId": "q", "smkId": 1});
        }
        let answers = ScriptedAnswers::new(|_: &str, _| unreachable!());
        let started = Instant::now();
        upload_files(
            StageAnswer::parse(&answer).unwrap(),
            &files,
            &PutOptions::default(),
            &tuning,
            &answers,
        )
        .await
        .unwrap();
        let what = if encrypted {
            "moto S3 multipart, encrypted"
        } else {
            "moto S3 multipart, plain"
        };
        report(what, bytes, started.elapsed());
    }

    let Some(fakesnow) = FakeSnow::start() else { return };
    let mut config = ClientConfig::new("fakeacct", "bench", Auth::Password(Secret::new("any")));
    config.base_url = fakesnow.url.clone();
    config.database = Some("BENCH_DB".into());
    config.schema = Some("PUBLIC".into());
    config.retry = RetrySettings {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    let client = Client::connect(config).await.unwrap();
    client.query("CREATE DATABASE IF NOT EXISTS BENCH_DB").await.unwrap();
    client
        .query("CREATE SCHEMA IF NOT EXISTS BENCH_DB.PUBLIC")
        .await
        .unwrap();
    client
        .query("CREATE OR REPLACE STAGE BENCH_DB.PUBLIC.ST")
        .await
        .unwrap();
    let files = source(&[("f.parquet", &body)]).await;
    let started = Instant::now();
    client.put(&files, "@ST/bench/", &PutOptions::default()).await.unwrap();
    report(
        "fakesnow presigned PUT (incl. the PUT statement)",
        bytes,
        started.elapsed(),
    );
}
