//! The stage conformance suite against a local directory and against S3 (moto in server mode).
//! GCS has no local server that object_store's GCS client can write to (its writes use the XML
//! API, which fake-gcs-server and gcp-storage-emulator do not serve), so gs:// stages are
//! covered by the URL and credential unit tests in `backhaul_core::stage`.

use backhaul_conformance::stage_conformance::check_stage;
use backhaul_core::spec::StageSpec;
use backhaul_core::stage::{Stage, StageEnv, StageKind};
use backhaul_testkit::moto::{MotoServer, SECRET_ACCESS_KEY};

#[tokio::test]
async fn local_directory_stage_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let stage = Stage::from_spec(&StageSpec::local(dir.path().join("stage")), "job.toml")
        .await
        .unwrap();
    check_stage(&stage).await.unwrap();
}

#[tokio::test]
async fn file_url_stage_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/stage", dir.path().display());
    let stage = Stage::from_spec(&StageSpec::url(url), "job.toml").await.unwrap();
    check_stage(&stage).await.unwrap();
}

#[tokio::test]
async fn s3_stage_on_moto_conforms() {
    let moto = MotoServer::start("stage-conformance").unwrap_or_else(|e| panic!("{e}"));
    let spec = StageSpec {
        endpoint: Some(moto.endpoint()),
        ..StageSpec::url("s3://stage-conformance/some/prefix")
    };
    let stage = Stage::from_spec_in(&spec, "job.toml", &StageEnv::from_vars(MotoServer::env()))
        .await
        .unwrap();
    assert_eq!(stage.kind(), StageKind::S3);
    assert_eq!(stage.url(), "s3://stage-conformance/some/prefix");
    assert!(!format!("{stage:?}").contains(SECRET_ACCESS_KEY));
    check_stage(&stage).await.unwrap();
    // The prefix is applied inside the stage: everything the suite wrote lived under it, and
    // it removed all of it.
    assert_eq!(moto.list("").unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn s3_stage_objects_live_under_the_url_prefix() {
    let moto = MotoServer::start("prefixed").unwrap_or_else(|e| panic!("{e}"));
    let spec = StageSpec {
        endpoint: Some(moto.endpoint()),
        ..StageSpec::url("s3://prefixed/exports/orders")
    };
    let stage = Stage::from_spec_in(&spec, "job.toml", &StageEnv::from_vars(MotoServer::env()))
        .await
        .unwrap();
    let part = Stage::part_path("job", 1, 1, 0);
    use object_store::ObjectStoreExt;
    stage.store().put(&part, "x".into()).await.unwrap();
    assert_eq!(
        moto.list("exports/").unwrap(),
        vec!["exports/orders/job/chunk-000001/attempt-001/part-0000.parquet".to_string()]
    );
    assert_eq!(
        stage.file_url(&part),
        "s3://prefixed/exports/orders/job/chunk-000001/attempt-001/part-0000.parquet"
    );
}

#[tokio::test]
async fn a_missing_bucket_is_a_config_error_naming_stage_url() {
    let moto = MotoServer::start("exists").unwrap_or_else(|e| panic!("{e}"));
    let spec = StageSpec {
        endpoint: Some(moto.endpoint()),
        ..StageSpec::url("s3://does-not-exist/p")
    };
    let e = Stage::from_spec_in(&spec, "job.toml", &StageEnv::from_vars(MotoServer::env()))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("job.toml: stage.url: stage s3://does-not-exist/p is not writable"),
        "{text}"
    );
    assert!(!text.contains(SECRET_ACCESS_KEY), "{text}");
}
