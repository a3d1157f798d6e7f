//! PUT into an Azure stage against Azurite, Microsoft's Azure Storage emulator (npm `azurite`,
//! installed into `.backhaul-test/azurite`; no Azure emulator is on PyPI), started on a port
//! from the OS with a SAS token the test signs with the emulator's published account key.

#[path = "put_support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use backhaul_snowflake_client::{PutOptions, StageAnswer, UploadTuning, upload_files};
use backhaul_testkit::fakesnow::REQUIRE_SERVERS_ENV;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use support::{MASTER_KEY_128, ScriptedAnswers, data, decrypt, digest, source};

/// The emulator's well-known account and key (published in Azurite's documentation).
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const CONTAINER: &str = "sfc-container";
const PREFIX: &str = "stages/abc/backhaul/";
const API_VERSION: &str = "2021-08-06";

struct Azurite {
    child: Child,
    port: u16,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$BACKHAUL_AZURITE`, else `.backhaul-test/azurite`. Missing: `None` (the test is skipped
/// with a note), unless `BACKHAUL_REQUIRE_SERVERS` is set, as for fakesnow.
fn azurite_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BACKHAUL_AZURITE") {
        return Some(path.into());
    }
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.backhaul-test/azurite/node_modules/.bin/azurite-blob");
    if path.exists() {
        return Some(path);
    }
    let note = "Azurite is not installed: run `npm install --prefix .backhaul-test/azurite azurite@3.37.0` \
                in the workspace (or set BACKHAUL_AZURITE to its azurite-blob)";
    if std::env::var_os(REQUIRE_SERVERS_ENV).is_some() {
        panic!("{note} ({REQUIRE_SERVERS_ENV} is set)");
    }
    eprintln!("skipping: {note}");
    None
}

/// Starts Azurite's blob service on a port the OS picks (it logs the port it listens on).
fn start_azurite() -> Option<Azurite> {
    let mut child = Command::new(azurite_path()?)
        .args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            "0",
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start azurite-blob");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = lines.next().expect("azurite exited before listening").unwrap();
        if let Some(rest) = line.split("listens on http://127.0.0.1:").nth(1) {
            break rest.trim().parse().unwrap();
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Some(Azurite { child, port })
}

/// An account SAS for the blob service (Microsoft's published string-to-sign for versions
/// from 2020-12-06), signed with `key`.
fn account_sas(key: &str) -> String {
    let (permissions, services, resource_types, expiry, protocol) =
        ("rwdlac", "b", "sco", "2099-01-01T00:00:00Z", "https,http");
    let to_sign =
        format!("{ACCOUNT}\n{permissions}\n{services}\n{resource_types}\n\n{expiry}\n\n{protocol}\n{API_VERSION}\n\n");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &STANDARD.decode(key).unwrap());
    let signature = STANDARD.encode(ring::hmac::sign(&key, to_sign.as_bytes()));
    let signature: String = url_encode(&signature);
    format!(
        "?sv={API_VERSION}&ss={services}&srt={resource_types}&sp={permissions}&se={expiry}&spr={protocol}&sig={signature}"
    )
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn endpoint(server: &Azurite) -> String {
    format!("http://127.0.0.1:{}", server.port)
}

async fn create_container(server: &Azurite, sas: &str) {
    let url = format!(
        "{}/{ACCOUNT}/{CONTAINER}?restype=container&{}",
        endpoint(server),
        &sas[1..]
    );
    let response = reqwest::Client::new()
        .put(url)
        .header("x-ms-version", API_VERSION)
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(status, 201, "create container: {}", response.text().await.unwrap());
}

fn azure_answer(server: &Azurite, sas: &str, master_key: Option<&str>) -> serde_json::Value {
    let mut answer = serde_json::json!({
        "command": "UPLOAD",
        "src_locations": ["/backhaul/small.parquet"],
        "parallel": 4, "autoCompress": false, "sourceCompression": "none", "overwrite": true,
        "stageInfo": {
            "locationType": "AZURE",
            "location": format!("{CONTAINER}/{PREFIX}"),
            "path": PREFIX,
            "region": "westus2",
            "storageAccount": ACCOUNT,
            "endPoint": endpoint(server),
            "isClientSideEncrypted": master_key.is_some(),
            "creds": {"AZURE_SAS_TOKEN": sas}
        }
    });
    if let Some(key) = master_key {
        answer["encryptionMaterial"] =
            serde_json::json!({"queryStageMasterKey": key, "queryId": "01b2-az", "smkId": 3});
    }
    answer
}

struct Blob {
    body: Vec<u8>,
    headers: reqwest::header::HeaderMap,
    committed_blocks: usize,
}

async fn fetch(server: &Azurite, sas: &str, name: &str) -> Blob {
    let url = format!("{}/{ACCOUNT}/{CONTAINER}/{PREFIX}{name}", endpoint(server));
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{url}?{}", &sas[1..]))
        .header("x-ms-version", API_VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {name}");
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap().to_vec();
    let list = http
        .get(format!("{url}?comp=blocklist&blocklisttype=committed&{}", &sas[1..]))
        .header("x-ms-version", API_VERSION)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Blob {
        body,
        headers,
        committed_blocks: list.matches("<Block>").count(),
    }
}

fn md5_base64(bytes: &[u8]) -> String {
    use md5::Digest;
    STANDARD.encode(md5::Md5::digest(bytes))
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
async fn azure_stage_put_blob_and_blocks_plain_and_encrypted_and_one_sas_renewal() {
    let Some(server) = start_azurite() else { return };
    let sas = account_sas(ACCOUNT_KEY);
    create_container(&server, &sas).await;
    let small = data(2000, 1);
    let large = data((300 << 10) + 9, 2);
    let answers = ScriptedAnswers::new(|_: &str, _| unreachable!("the SAS token covers every file"));

    // Plain: Put Blob for the small file, five blocks for the large one.
    let files = source(&[("small.parquet", &small), ("large.parquet", &large)]).await;
    let answer = StageAnswer::parse(&azure_answer(&server, &sas, None)).unwrap();
    upload_files(answer, &files, &PutOptions::default(), &tuning(), &answers)
        .await
        .unwrap();
    for (name, plain, blocks) in [("small.parquet", &small, 0), ("large.parquet", &large, 5)] {
        let blob = fetch(&server, &sas, name).await;
        assert!(blob.body == *plain, "{name} landed unchanged");
        assert_eq!(blob.headers["x-ms-meta-sfcdigest"], digest(plain).as_str());
        assert!(blob.headers.get("x-ms-meta-encryptiondata").is_none());
        assert_eq!(blob.committed_blocks, blocks, "{name}");
        assert_eq!(blob.headers["content-md5"], md5_base64(&blob.body).as_str(), "{name}");
    }

    // Encrypted, with a SAS token that the server refuses (403) until the file asks once for
    // a fresh one.
    let bad_sas = account_sas(&STANDARD.encode([7u8; 64]));
    let files = source(&[("small-enc.parquet", &small), ("large-enc.parquet", &large)]).await;
    let answer = StageAnswer::parse(&azure_answer(&server, &bad_sas, Some(MASTER_KEY_128))).unwrap();
    let renewing = ScriptedAnswers::new(|_: &str, _| azure_answer(&server, &sas, Some(MASTER_KEY_128)));
    upload_files(answer, &files, &PutOptions::default(), &tuning(), &renewing)
        .await
        .unwrap();
    let mut asked = renewing.asked();
    asked.sort();
    assert_eq!(
        asked,
        ["large-enc.parquet", "small-enc.parquet"],
        "one renewal per refused file"
    );
    for (name, plain) in [("small-enc.parquet", &small), ("large-enc.parquet", &large)] {
        let blob = fetch(&server, &sas, name).await;
        let data: serde_json::Value =
            serde_json::from_str(blob.headers["x-ms-meta-encryptiondata"].to_str().unwrap()).unwrap();
        assert_eq!(data["EncryptionMode"], "FullBlob");
        let decrypted = decrypt(
            MASTER_KEY_128,
            data["WrappedContentKey"]["EncryptedKey"].as_str().unwrap(),
            data["ContentEncryptionIV"].as_str().unwrap(),
            &blob.body,
        );
        assert!(decrypted == *plain, "{name} decrypts to the source");
        assert_eq!(blob.headers["x-ms-meta-sfcdigest"], digest(plain).as_str());
        assert_eq!(blob.headers["content-md5"], md5_base64(&blob.body).as_str(), "{name}");
        let matdesc: serde_json::Value =
            serde_json::from_str(blob.headers["x-ms-meta-matdesc"].to_str().unwrap()).unwrap();
        assert_eq!(
            matdesc,
            serde_json::json!({"queryId": "01b2-az", "smkId": "3", "keySize": "128"})
        );
    }
}
