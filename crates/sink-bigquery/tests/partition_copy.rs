//! `replace = "partition_copy"` against bqemulator, through a shim for the one call it lacks.
//!
//! bqemulator drops partition decorators (`orders$20230315` is "Invalid table id"), so a copy
//! job into a partition cannot run there. The shim below forwards every request to the emulator
//! except `jobs.insert` of a copy job into a decorated table: that it carries out the way
//! BigQuery documents `WRITE_TRUNCATE` into a partition (the partition's rows become exactly
//! the source table's, other partitions untouched), with DML on the emulator, and then answers
//! `jobs.get` for that id with a DONE job. Everything else (staging load, fingerprint queries,
//! the control-table transaction, the fence) is the emulator's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use backhaul_core::connector::{ChunkCommit, Destination, Source, StagedFile};
use backhaul_core::cursor::{CursorKind, CursorRange, SpecBound};
use backhaul_core::registry::DestinationConfig;
use backhaul_core::stage::Stage;
use backhaul_sink_bigquery::spec::{AuthMethod, Replace};
use backhaul_sink_bigquery::{BigQuerySpec, BigQueryTable};
use backhaul_source_embedded::{EmbeddedSource, EmbeddedSourceSpec};
use backhaul_testkit::bqemulator::{BqEmulator, PROJECT};
use futures::TryStreamExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DATASET: &str = "sales";
const CURSOR: &str = "created_at";

/// What the shim saw: copy jobs it carried out (id → destination table).
#[derive(Default)]
struct Seen {
    copies: Vec<(String, String)>,
    done: HashSet<String>,
}

/// The shim in front of the emulator.
struct Shim {
    base_url: String,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shim {
    async fn start(emulator_base: String) -> Shim {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/bigquery/v2", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            // One request at a time is enough: the destination's calls are sequential.
            while let Ok((socket, _)) = listener.accept().await {
                serve(socket, &http, &emulator_base, &state).await;
            }
        });
        Shim { base_url, seen, task }
    }
}

/// Reads one HTTP/1.1 request: method, path and body.
async fn read_request(socket: &mut TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            })
            .unwrap_or(0);
        if buf.len() >= end + 4 + length {
            let mut words = head.lines().next()?.split(' ');
            let method = words.next()?.to_string();
            let path = words.next()?.to_string();
            return Some((method, path, buf[end + 4..end + 4 + length].to_vec()));
        }
    }
}

async fn serve(mut socket: TcpStream, http: &reqwest::Client, emulator_base: &str, seen: &Mutex<Seen>) {
    let Some((method, path, body)) = read_request(&mut socket).await else {
        return;
    };
    let (status, reply) = match answer_copy(&method, &path, &body, http, emulator_base, seen).await {
        Some(answer) => answer,
        None => {
            // Forward as is. The emulator's base URL ends in /bigquery/v2, as does the path.
            let origin = emulator_base.trim_end_matches("/bigquery/v2");
            let request = http.request(method.parse().unwrap(), format!("{origin}{path}"));
            let request = if body.is_empty() {
                request
            } else {
                request.header("content-type", "application/json").body(body)
            };
            let resp = request.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.len()
    );
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(reply.as_bytes()).await;
    let _ = socket.shutdown().await;
}

/// A copy job into `table$YYYYMMDD`, done as BigQuery documents it; `jobs.get` of one.
async fn answer_copy(
    method: &str,
    path: &str,
    body: &[u8],
    http: &reqwest::Client,
    emulator_base: &str,
    seen: &Mutex<Seen>,
) -> Option<(u16, String)> {
    let done = |job_id: &str| {
        json!({
            "kind": "bigquery#job",
            "id": format!("{PROJECT}:{job_id}"),
            "jobReference": {"projectId": PROJECT, "jobId": job_id},
            "status": {"state": "DONE"},
        })
        .to_string()
    };
    if method == "GET"
        && let Some(id) = path
            .split("/jobs/")
            .nth(1)
            .map(|rest| rest.split('?').next().unwrap_or(rest))
        && seen.lock().unwrap().done.contains(id)
    {
        return Some((200, done(id)));
    }
    if method != "POST" || !path.ends_with("/jobs") {
        return None;
    }
    let job: Value = serde_json::from_slice(body).ok()?;
    let copy = job["configuration"].get("copy")?;
    let destination = copy["destinationTable"]["tableId"].as_str()?;
    let (table, partition) = destination.split_once('$')?;
    assert_eq!(copy["writeDisposition"], "WRITE_TRUNCATE");
    let source = copy["sourceTable"]["tableId"].as_str().unwrap();
    let day = format!("{}-{}-{}", &partition[..4], &partition[4..6], &partition[6..8]);
    let q = |t: &str| format!("`{PROJECT}.{DATASET}.{t}`");
    for sql in [
        format!("DELETE FROM {} WHERE DATE(`{CURSOR}`) = DATE '{day}'", q(table)),
        format!("INSERT INTO {} SELECT * FROM {}", q(table), q(source)),
    ] {
        let resp = http
            .post(format!("{emulator_base}/projects/{PROJECT}/queries"))
            .json(&json!({"query": sql, "useLegacySql": false}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{sql}: {}", resp.text().await.unwrap());
    }
    let job_id = job["jobReference"]["jobId"].as_str().unwrap().to_string();
    let mut seen = seen.lock().unwrap();
    seen.copies.push((job_id.clone(), destination.to_string()));
    seen.done.insert(job_id.clone());
    Some((200, done(&job_id)))
}

fn micros(text: &str) -> i64 {
    SpecBound::parse(text)
        .unwrap()
        .to_cursor(CursorKind::Timestamp)
        .unwrap()
}

/// Two days of embedded-source rows, by day.
async fn days(dir: &TempDir) -> [(CursorRange, Vec<RecordBatch>); 2] {
    let source = EmbeddedSource::open(&EmbeddedSourceSpec {
        path: dir.path().join("orders.db"),
        table: "orders".into(),
        cursor: CURSOR.into(),
        rows_per_day: 50,
        seed: 11,
    })
    .unwrap();
    let mut out = Vec::new();
    for (from, to) in [
        ("2023-03-15T00:00:00Z", "2023-03-16T00:00:00Z"),
        ("2023-03-16T00:00:00Z", "2023-03-17T00:00:00Z"),
    ] {
        let range = CursorRange::new(micros(from), micros(to));
        source.prepare(range).await.unwrap();
        let batches: Vec<RecordBatch> = source.extract(range, 1_000).await.unwrap().try_collect().await.unwrap();
        out.push((range, batches));
    }
    out.try_into().unwrap()
}

async fn commit(
    table: &BigQueryTable,
    stage: &Stage,
    chunk_id: u64,
    attempt: u32,
    range: CursorRange,
    rows: &[RecordBatch],
) -> backhaul_core::Result<backhaul_core::proof::ChunkProof> {
    let schema = rows[0].schema();
    let files: Vec<StagedFile> = backhaul_conformance::stage_batches(stage, "job", chunk_id, attempt, &schema, rows, 1)
        .await
        .unwrap();
    let commit = ChunkCommit {
        job_id: "job".into(),
        chunk_id,
        attempt,
        range,
        cursor_column: CURSOR.into(),
        files,
        extracted: backhaul_conformance::evidence(&schema, rows).unwrap(),
        sync: None,
    };
    let proof = table.commit_chunk(stage, &commit).await?;
    proof.check(&commit.extracted).unwrap();
    Ok(proof)
}

#[tokio::test]
async fn a_day_chunk_replaces_its_partition_by_copy_and_stale_attempts_are_refused() {
    let emulator = BqEmulator::start().unwrap();
    let stage = Stage::local(&emulator.bucket_dir("bkt").unwrap().join("stage"))
        .await
        .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/projects/{PROJECT}/datasets", emulator.base_url()))
        .json(&json!({"datasetReference": {"projectId": PROJECT, "datasetId": DATASET}}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let shim = Shim::start(emulator.base_url()).await;

    let mut spec = BigQuerySpec::new(PROJECT, DATASET, "orders");
    spec.base_url = Some(shim.base_url.clone());
    spec.auth = AuthMethod::None;
    spec.file_size = Some(backhaul_core::spec::ByteSizeText("1MiB".into()));
    spec.allow_small_files = true;
    spec.job_timeout = Some("2m".into());
    spec.stage_gcs_url = Some("gs://bkt/stage".into());
    spec.replace = Replace::PartitionCopy;
    spec.validate("job.toml").unwrap();
    let table = BigQueryTable::new(spec.clone()).unwrap();

    let dir = TempDir::new().unwrap();
    let [(day1, rows1), (day2, rows2)] = days(&dir).await;
    table.prepare("job", rows1[0].schema()).await.unwrap();

    // Two day chunks: each replaces its own partition by a copy job; both stay.
    commit(&table, &stage, 0, 1, day1, &rows1).await.unwrap();
    commit(&table, &stage, 1, 1, day2, &rows2).await.unwrap();
    let copies = shim.seen.lock().unwrap().copies.clone();
    assert_eq!(
        copies.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
        ["orders$20230315", "orders$20230316"]
    );
    assert_eq!(copies[0].0, table.copy_job_id("job", 0, 1));

    // A newer attempt of day 1 replaces it (not doubled); the older one is then refused.
    commit(&table, &stage, 0, 2, day1, &rows1).await.unwrap();
    let e = commit(&table, &stage, 0, 1, day1, &rows1).await.unwrap_err();
    assert!(matches!(e, backhaul_core::Error::LeaseLost { .. }), "{e}");
    assert_eq!(
        shim.seen.lock().unwrap().copies.len(),
        3,
        "the stale attempt copied nothing"
    );
    let rest = table.rest().await.unwrap();
    let rows = rest
        .query(&format!("SELECT COUNT(*) FROM {}", table.target()))
        .await
        .unwrap();
    let expected: usize = rows1.iter().chain(&rows2).map(|b| b.num_rows()).sum();
    assert_eq!(rows[0][0].as_deref(), Some(expected.to_string().as_str()));
    // A fresh handle reads both back with their proofs (what `verify` does).
    let fresh = BigQueryTable::new(spec).unwrap();
    assert!(fresh.read_back("job", 0).await.unwrap().is_some());
    assert!(fresh.read_back("job", 1).await.unwrap().is_some());

    // A chunk that is not one whole day takes the transaction: no copy job.
    let half = CursorRange::new(day2.from, day2.from + (day2.to - day2.from) / 2);
    let half_rows: Vec<RecordBatch> = rows2
        .iter()
        .map(|b| {
            let created = b
                .column_by_name(CURSOR)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                .unwrap();
            let keep: arrow::array::BooleanArray = created.iter().map(|v| v.map(|v| v < half.to)).collect();
            arrow::compute::filter_record_batch(b, &keep).unwrap()
        })
        .collect();
    commit(&table, &stage, 2, 1, half, &half_rows).await.unwrap();
    assert_eq!(shim.seen.lock().unwrap().copies.len(), 3);
}
