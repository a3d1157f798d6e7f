//! The HTTP source against localstripe, a stateful fake Stripe started on a port from the OS:
//! the source conformance suite, and Stripe's `starting_after` + `has_more` pagination read in
//! time windows, whose union is exactly what was created.
//!
//! localstripe sets `created` to the creation second and cannot backdate it, so records are
//! created in three bursts a little over a second apart and windows are cut around now.
//! `/v1/customers` refuses a `created` filter there, so the customers stream fetches the whole
//! list and keeps the window's records by cursor; `/v1/events` takes `created[gte]` and
//! `created[lt]`, so the events stream sends the window as Stripe does.

use std::collections::BTreeSet;

use arrow::array::{Array, RecordBatch, StringArray};
use backhaul_conformance::source::{SourceOptions, check_source_with};
use backhaul_core::connector::Source;
use backhaul_core::cursor::CursorRange;
use backhaul_core::ratelimit::Budgets;
use backhaul_source_http::{HttpSource, HttpSourceSpec};
use backhaul_testkit::localstripe::{LocalStripe, SECRET_KEY};
use futures::StreamExt;

const KEY_ENV: &str = "BACKHAUL_TEST_LOCALSTRIPE_KEY";

fn spec(url: &str, stream: &str, extra: &str) -> HttpSourceSpec {
    let text = format!(
        r#"
base_url = "{url}"
stream = {stream}
params = {{ limit = "100" }}
pagination = {{ type = "last_id", param = "starting_after", has_more_path = "$.has_more" }}
auth = {{ type = "bearer", token_env = "{KEY_ENV}" }}
rate_limit = {{ name = "localstripe", requests_per_second = 200.0, burst = 20 }}
{extra}
"#
    );
    let table: toml::Table = toml::from_str(&text).unwrap();
    backhaul_core::spec::parse_section(&table, "source", "stripe.toml").unwrap()
}

fn customers(url: &str) -> HttpSource {
    let s = spec(
        url,
        r#"{ name = "customers", path = "/v1/customers", record_selector = "$.data", primary_key = ["id"], cursor_field = "created", cursor_format = "unix_seconds" }"#,
        r#"columns = [
  { name = "id", type = "string", nullable = false },
  { name = "created", type = "timestamp", nullable = false },
  { name = "email", type = "string" },
  { name = "account_balance", type = "int64" },
  { name = "livemode", type = "bool", nullable = false },
  { name = "metadata", type = "json" },
]"#,
    );
    HttpSource::build(
        s,
        Budgets::default(),
        "stripe.toml",
        backhaul_source_http::system_clock(),
    )
    .unwrap()
}

fn events(url: &str) -> HttpSource {
    let s = spec(
        url,
        r#"{ name = "events", path = "/v1/events", record_selector = "data", primary_key = ["id"], cursor_field = "created", cursor_format = "unix_seconds" }"#,
        r#"window = { from_param = "created[gte]", to_param = "created[lt]", format = "unix_seconds" }
columns = [
  { name = "id", type = "string", nullable = false },
  { name = "created", type = "timestamp", nullable = false },
  { name = "type", type = "string", nullable = false },
  { name = "data", type = "json", nullable = false },
]"#,
    );
    HttpSource::build(
        s,
        Budgets::default(),
        "stripe.toml",
        backhaul_source_http::system_clock(),
    )
    .unwrap()
}

async fn read(source: &HttpSource, range: CursorRange) -> Vec<RecordBatch> {
    let mut stream = source.extract(range, 50).await.unwrap();
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        out.push(b.unwrap());
    }
    out
}

fn column(batches: &[RecordBatch], i: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column(i).as_any().downcast_ref::<StringArray>().unwrap();
            (0..a.len()).map(|r| a.value(r).to_string()).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_customers_and_events_backfill_in_windows_and_pass_the_conformance_suite() {
    let Some(server) = LocalStripe::start() else { return };
    // SAFETY: set before the sources read it; no other test in this binary uses the variable.
    unsafe { std::env::set_var(KEY_ENV, SECRET_KEY) };
    let created = tokio::task::block_in_place(|| server.create_customers(3, 60)).unwrap();
    let first = created.iter().map(|c| c.1).min().unwrap();
    let last = created.iter().map(|c| c.1).max().unwrap();
    let all = CursorRange::new(first * 1_000_000, (last + 1) * 1_000_000);
    let expected: BTreeSet<String> = created.iter().map(|c| c.0.clone()).collect();

    let source = customers(&server.url);
    let report = check_source_with(
        &source,
        all,
        &SourceOptions {
            batch_rows: 50,
            // An API has no statistics: density is the spec's estimate, not a measurement.
            density_tolerance: None,
            ..SourceOptions::default()
        },
    )
    .await
    .unwrap_or_else(|v| panic!("{v:?}"));
    assert_eq!(report.rows, created.len() as u64);

    // One-second windows, as the planner would cut them: each window holds exactly the
    // customers created in that second, and together they hold every one once. An event is
    // stamped by localstripe when it is made, which can be the second after its customer's:
    // event windows run one second further and are checked as a whole.
    for (name, source) in [("customers", &source), ("events", &events(&server.url))] {
        let mut seen = Vec::new();
        let end = if name == "customers" { last } else { last + 1 };
        for second in first..=end {
            let window = CursorRange::new(second * 1_000_000, (second + 1) * 1_000_000);
            let batches = read(source, window).await;
            if name == "customers" {
                let want = created.iter().filter(|c| c.1 == second).count();
                assert_eq!(
                    batches.iter().map(|b| b.num_rows()).sum::<usize>(),
                    want,
                    "{name} at {second}"
                );
            }
            seen.extend(if name == "customers" {
                column(&batches, 0)
            } else {
                column(&batches, 3)
                    .iter()
                    .map(|data| {
                        let v: serde_json::Value = serde_json::from_str(data).unwrap();
                        v["object"]["id"].as_str().unwrap().to_string()
                    })
                    .collect()
            });
        }
        assert_eq!(seen.len(), created.len(), "{name}: no record twice");
        assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected, "{name}");
    }
    assert_eq!(source.dead_letter_count(), 0);
}
