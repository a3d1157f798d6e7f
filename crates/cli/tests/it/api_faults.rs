//! What an API source's trouble looks like from outside (issue 14), against the project's test
//! API (`backhaul_testkit::rate_limited_api`): records that do not match the declared schema
//! go to the chunk's dead-letter file, whose size the chunk reports into the coordinator's
//! state and `status`; an API that keeps failing opens the source's circuit breaker, which
//! `status` (over the coordinator) and a local run's report show.

use std::time::Duration;

use backhaul_testkit::rate_limited_api::{ApiConfig, RateLimitedApi};

use crate::cluster::{Coordinator, client, client_json, start_worker};
use crate::util::{JobDir, text};

const FIRST_CREATED: i64 = 1_700_000_000;
const SPACING: i64 = 60;
const ITEMS: u64 = 30;

fn api(error_rate: f64) -> RateLimitedApi {
    RateLimitedApi::start(ApiConfig {
        requests_per_second: 1_000,
        items: ITEMS,
        first_created: FIRST_CREATED,
        spacing_seconds: SPACING,
        error_rate,
        ..ApiConfig::default()
    })
    .expect("start the test API")
}

/// A job over every item of `api`, in chunks of `every`. `amount` is declared `decimal(3,0)`:
/// the API's amounts are `n * 100 + 99` for item `n`, so items from 10 on do not fit.
fn spec(job: &str, api: &RateLimitedApi, every: &str, extra: &str) -> String {
    let at = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap().to_rfc3339();
    format!(
        r#"version = 1
name = "{job}"

[source]
kind = "http"
base_url = "{base}"
stream = {{ name = "items", path = "/v1/items", record_selector = "$.data", primary_key = ["id"], cursor_field = "created", cursor_format = "unix_seconds" }}
columns = [
  {{ name = "id", type = "string", nullable = false }},
  {{ name = "created", type = "timestamp", nullable = false }},
  {{ name = "amount", type = "decimal(3,0)", nullable = false }},
]
window = {{ from_param = "created[gte]", to_param = "created[lt]", format = "unix_seconds" }}
pagination = {{ type = "last_id", id_field = "id", param = "starting_after", has_more_path = "$.has_more" }}
params = {{ limit = "10" }}
dead_letter_dir = "dead"
{extra}

[range]
from = "{from}"
to = "{to}"

[chunking]
policy = "fixed"
every = "{every}"

[destination]
kind = "local"
path = "warehouse"
table = "items"

[stage]
path = "stage"
"#,
        base = api.base_url(),
        from = at(FIRST_CREATED),
        to = at(FIRST_CREATED + ITEMS as i64 * SPACING),
    )
}

#[test]
fn each_chunk_reports_its_dead_letters_into_state_and_status() {
    let api = api(0.0);
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let spec_path = job.write_spec("job.toml", &spec("api-items", &api, "15m", ""));
    let out = job.ok(&["backfill", spec_path.to_str().unwrap()]);
    assert!(out.contains("20 records in dead-letter files"), "{out}");

    let status = job.json(&["status", "api-items", "--chunks"]);
    assert_eq!(status["summary"]["committed_rows"], 10, "{status}");
    assert_eq!(status["summary"]["dead_letters"], 20, "{status}");
    let chunks = status["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 2, "{status}");
    let stamp = |v: &serde_json::Value| v.as_str().unwrap().replace([':', '-'], "").replace('.', "_");
    for c in chunks {
        // The file is named after the job, the stream and the chunk's window.
        let file = job.path().join("dead").join(format!(
            "api-items-items-{}-{}.jsonl",
            stamp(&c["from"]),
            stamp(&c["to"])
        ));
        let lines = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .lines()
            .count();
        assert_eq!(c["dead_letters"], lines as u64, "{c}");
    }
    assert_eq!(
        chunks
            .iter()
            .map(|c| c["dead_letters"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [5, 15]
    );

    let text = job.ok(&["status", "api-items", "--chunks"]);
    assert!(text.contains("dead letters"), "{text}");
    assert!(text.contains("20 records in dead-letter files"), "{text}");
}

/// The chunk fails on every attempt: the breaker (threshold 2, no request retries) opens on
/// the second attempt and refuses the third without calling the API.
const BREAKER: &str = "max_retries = 0\ncircuit_breaker = { failure_threshold = 2, open_seconds = 600 }";

#[test]
fn an_api_that_keeps_failing_opens_the_breaker_and_status_shows_it() {
    let api = api(1.0);
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let spec_path = job.write_spec("job.toml", &spec("api-down", &api, "30m", BREAKER));
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &["--max-attempts", "3", "--retry-backoff", "50ms"]);
    let url = coordinator.url();
    client_json(
        &job,
        &["submit", spec_path.to_str().unwrap(), "--coordinator", &url],
        &[],
    );
    let mut worker = start_worker(&job, &url, "w0", &["--job", "api-down"]);
    let exit = worker.wait_exit(Duration::from_secs(120));
    assert!(exit.success(), "worker failed:\n{}", worker.log_text());
    assert_eq!(api.stats().errors, 2, "the open breaker sent nothing");

    let listed = client_json(&job, &["status", "--coordinator", &url], &[]);
    let breaker = &listed["jobs"][0]["breaker"];
    assert_eq!(breaker["state"], "open", "{listed}");
    assert!(breaker["open_until"].is_string(), "{listed}");
    let one = client_json(&job, &["status", "api-down", "--coordinator", &url], &[]);
    assert_eq!(one["state"], "parked", "{one}");
    assert_eq!(one["breaker"]["state"], "open", "{one}");
    let out = client(&job, &["status", "api-down", "--coordinator", &url], &[]);
    let shown = text(&out.stdout);
    assert!(shown.contains("breaker   open until"), "{shown}");
}

/// One worker: each worker's copy of the source has its own breaker.
#[test]
fn a_local_run_reports_an_open_breaker() {
    let api = api(1.0);
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let spec_path = job.write_spec("job.toml", &spec("api-down", &api, "30m", BREAKER));
    let out = job.run(&[
        "backfill",
        spec_path.to_str().unwrap(),
        "--workers",
        "1",
        "--max-attempts",
        "3",
        "--retry-backoff",
        "50ms",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(4), "parked: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&text(&out.stdout)).expect("json report");
    assert_eq!(report["breaker"]["phase"], "open", "{report}");
    assert!(report["breaker"]["open_until_unix_ms"].is_i64(), "{report}");
}
