//! One rate-limit pool for the whole cluster (issue 14), checked at the API by a referee that
//! counts requests per wall-clock second (`backhaul_testkit::rate_limited_api`).
//!
//! `four_clients_in_two_processes_keep_one_pools_limit`: a `backhaul coordinator` process
//! holds the pool; two client processes (this test binary, started again with
//! [`CLIENT_ENV`] set, running [`pool_client_process`]) each run two tasks that page through
//! time windows of the API, asking a `CoordinatorBudget` before every request, as the HTTP
//! source does. The API injects 500s and timeouts. No second may see more than rate + burst
//! requests, and every item must arrive exactly once.
//!
//! `http_source_backfill_keeps_the_pools_limit` is the same through the real pipeline (a job
//! of `kind = "http"` (`crates/source-http`) run by two `backhaul worker` processes of two
//! slots each.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use backhaul_core::ratelimit::{RatePool, RequestBudget};
use backhaul_proto::ClientConfig;
use backhaul_testkit::rate_limited_api::{ApiConfig, RateLimitedApi};
use backhaul_worker::CoordinatorBudget;

use crate::cluster::{Coordinator, client_json};
use crate::util::JobDir;

/// Set in a client process: `<coordinator url> <api url> <process index>`.
const CLIENT_ENV: &str = "BACKHAUL_TEST_POOL_CLIENT";
/// The pool's rate and burst; the API accepts the same.
const RATE: u32 = 20;
const BURST: u32 = 10;
/// Time windows the items are fetched in, spread over 2 processes × 2 tasks.
const WINDOWS: i64 = 8;
const ITEMS: u64 = 1200;
const SPACING: i64 = 30;
const FIRST_CREATED: i64 = 1_700_000_000;

fn pool() -> RatePool {
    RatePool {
        name: "test-api".into(),
        requests_per_second: f64::from(RATE),
        burst: BURST,
        daily_cap: None,
    }
}

fn api_config() -> ApiConfig {
    ApiConfig {
        requests_per_second: RATE,
        burst: BURST,
        retry_after_seconds: 1,
        error_rate: 0.05,
        timeout_rate: 0.02,
        timeout_hold: Duration::from_secs(2),
        items: ITEMS,
        first_created: FIRST_CREATED,
        spacing_seconds: SPACING,
        ..ApiConfig::default()
    }
}

#[test]
fn four_clients_in_two_processes_keep_one_pools_limit() {
    let api = RateLimitedApi::start(api_config()).expect("start the test API");
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &[]);
    let started = std::time::Instant::now();
    let children: Vec<_> = (0..2)
        .map(|process| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "rate_limit_pool::pool_client_process",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(
                    CLIENT_ENV,
                    format!("{} {} {process}", coordinator.url(), api.base_url()),
                )
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a client process")
        })
        .collect();
    let mut arrived: HashMap<String, u32> = HashMap::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "client process failed\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ids = stdout
            .lines()
            // The harness prints the test's name on the same line first.
            .find_map(|l| l.split_once("POOL-IDS ").map(|(_, ids)| ids))
            .unwrap_or_else(|| panic!("no ids from a client process:\n{stdout}"));
        for id in ids.split(',').filter(|id| !id.is_empty()) {
            *arrived.entry(id.to_string()).or_default() += 1;
        }
    }
    let took = started.elapsed();
    let stats = api.stats();
    eprintln!(
        "rate-limit pool: {} requests ({} ok, {} 500s, {} timeouts, {} 429s) in {took:.1?}; \
         busiest second {} requests (rate + burst = {}); per second: {:?}",
        stats.requests(),
        stats.ok,
        stats.errors,
        stats.timeouts,
        stats.throttled,
        stats.max_per_second(),
        RATE + BURST,
        stats.per_second.values().collect::<Vec<_>>()
    );
    assert!(
        stats.max_per_second() <= RATE + BURST,
        "a second saw {} requests: {:?}",
        stats.max_per_second(),
        stats.per_second
    );
    assert!(
        stats.errors > 0 && stats.timeouts > 0,
        "faults were injected: {stats:?}"
    );
    // Every item arrived, each exactly once.
    assert_eq!(arrived.len() as u64, ITEMS);
    for (id, _) in api.items() {
        assert_eq!(arrived.get(&id), Some(&1), "{id}");
    }

    // The pool shows in `status` and in the metrics.
    let status = client_json(&job, &["status", "--coordinator", &coordinator.url()], &[]);
    let pools = status["pools"].as_array().expect("pools in status");
    assert_eq!(pools.len(), 1, "{status}");
    assert_eq!(pools[0]["pool"], "test-api");
    assert_eq!(pools[0]["configured_rate"], f64::from(RATE));
    let granted = pools[0]["tokens_granted"].as_u64().unwrap();
    assert!(
        granted >= stats.requests(),
        "{granted} tokens for {} requests",
        stats.requests()
    );
    let metric = coordinator.metric("backhaul_coordinator_pool_tokens_granted_total{pool=\"test-api\"}");
    assert_eq!(metric as u64, granted);
}

/// A client process of the test above; does nothing unless [`CLIENT_ENV`] is set.
#[test]
fn pool_client_process() {
    let Ok(args) = std::env::var(CLIENT_ENV) else {
        return;
    };
    let mut parts = args.split(' ');
    let (coordinator, api, process) = (
        parts.next().unwrap().to_string(),
        parts.next().unwrap().to_string(),
        parts.next().unwrap().parse::<i64>().unwrap(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ids = runtime.block_on(async move {
        let client = ClientConfig::plain(coordinator).connect_lazy().unwrap();
        let budget = Arc::new(CoordinatorBudget::new(client, format!("client-{process}")));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..2 {
            let slot = process * 2 + task;
            let (budget, http, api) = (budget.clone(), http.clone(), api.clone());
            tasks.spawn(async move {
                let mut ids = Vec::new();
                for window in (0..WINDOWS).filter(|w| w % 4 == slot) {
                    ids.extend(fetch_window(budget.as_ref(), &http, &api, window).await);
                }
                ids
            });
        }
        let mut ids = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            ids.extend(joined.unwrap());
        }
        ids
    });
    println!("POOL-IDS {}", ids.join(","));
}

/// Pages through one time window, asking the budget before every request and retrying
/// 429s (reported to the budget), 5xx and timeouts.
async fn fetch_window(budget: &dyn RequestBudget, http: &reqwest::Client, api: &str, window: i64) -> Vec<String> {
    let span = ITEMS as i64 * SPACING / WINDOWS;
    let (from, to) = (FIRST_CREATED + window * span, FIRST_CREATED + (window + 1) * span);
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        budget.acquire(&pool()).await.expect("a token");
        let mut url = format!("{api}/v1/items?created%5Bgte%5D={from}&created%5Blt%5D={to}&limit=10");
        if let Some(id) = &after {
            url.push_str(&format!("&starting_after={id}"));
        }
        let Ok(resp) = http.get(&url).send().await else {
            continue; // timed out: ask again
        };
        match resp.status().as_u16() {
            200 => {
                let page: serde_json::Value = resp.json().await.expect("a JSON page");
                let data = page["data"].as_array().expect("data");
                ids.extend(data.iter().map(|i| i["id"].as_str().unwrap().to_string()));
                if !page["has_more"].as_bool().unwrap() {
                    return ids;
                }
                after = ids.last().cloned();
            }
            429 => {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_secs);
                budget.throttled(&pool(), retry_after);
            }
            _ => {} // 500 or 504: ask again
        }
    }
}

/// The full pipeline: a job of `kind = "http"` against the test API, run by two worker
/// processes of two slots each, sharing the pool through the coordinator.
#[test]
fn http_source_backfill_keeps_the_pools_limit() {
    use crate::cluster::{chunks, start_worker};

    let api = RateLimitedApi::start(api_config()).expect("start the test API");
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let to = FIRST_CREATED + ITEMS as i64 * SPACING;
    let spec = format!(
        r#"version = 1
name = "items"

[source]
kind = "http"
base_url = "{base}"
stream = {{ name = "items", path = "/v1/items", record_selector = "$.data", primary_key = ["id"], cursor_field = "created", cursor_format = "unix_seconds" }}
columns = [
  {{ name = "id", type = "string", nullable = false }},
  {{ name = "created", type = "timestamp", nullable = false }},
  {{ name = "amount", type = "int64", nullable = false }},
]
window = {{ from_param = "created[gte]", to_param = "created[lt]", format = "unix_seconds" }}
pagination = {{ type = "last_id", id_field = "id", param = "starting_after", has_more_path = "$.has_more" }}
params = {{ limit = "10" }}
rate_limit = {{ name = "test-api", requests_per_second = {RATE}.0, burst = {BURST} }}

[range]
from = "{from}"
to = "{to}"

[chunking]
policy = "fixed"
every = "{every}s"

[destination]
kind = "local"
path = "warehouse"
table = "items"

[stage]
path = "stage"
"#,
        base = api.base_url(),
        every = ITEMS as i64 * SPACING / WINDOWS,
        from = chrono::DateTime::from_timestamp(FIRST_CREATED, 0).unwrap().to_rfc3339(),
        to = chrono::DateTime::from_timestamp(to, 0).unwrap().to_rfc3339(),
    );
    let spec_path = job.write_spec("job.toml", &spec);
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &["--lease-ttl", "10s"]);
    let url = coordinator.url();
    client_json(
        &job,
        &["submit", spec_path.to_str().unwrap(), "--coordinator", &url],
        &[],
    );
    let mut workers: Vec<_> = (0..2)
        .map(|i| start_worker(&job, &url, &format!("w{i}"), &["--slots", "2", "--job", "items"]))
        .collect();
    for w in &mut workers {
        let exit = w.wait_exit(Duration::from_secs(180));
        assert!(exit.success(), "worker failed:\n{}", w.log_text());
    }
    let status = client_json(&job, &["status", "items", "--coordinator", &url], &[]);
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["summary"]["committed_rows"], ITEMS, "{status}");
    assert!(!chunks(&job, "items").is_empty());
    let stats = api.stats();
    eprintln!(
        "http source through the pool: busiest second {} requests (rate + burst = {}), {} 429s",
        stats.max_per_second(),
        RATE + BURST,
        stats.throttled
    );
    assert!(stats.max_per_second() <= RATE + BURST, "{:?}", stats.per_second);
    // Every item served at least once; the committed rows are exactly the items.
    assert_eq!(stats.served.len() as u64, ITEMS);
}
