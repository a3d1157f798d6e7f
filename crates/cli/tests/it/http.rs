//! `backhaul backfill` of a declarative HTTP spec against localstripe (a fake Stripe on a port
//! from the OS): Stripe's `starting_after` + `has_more` pagination, one-second windows (the
//! customers are created in bursts a second apart: localstripe cannot backdate `created`),
//! into the local warehouse; counts and key set match what was created.

use backhaul_core::cursor::CursorKind;
use backhaul_testkit::localstripe::{LocalStripe, SECRET_KEY};

use crate::util::JobDir;

fn spec(url: &str, from: i64, to: i64) -> String {
    let at = |s: i64| CursorKind::Timestamp.format(s * 1_000_000);
    format!(
        r#"version = 1
name = "stripe-customers"

[source]
kind = "http"
base_url = "{url}"
stream = {{ name = "customers", path = "/v1/customers", record_selector = "$.data", primary_key = ["id"], cursor_field = "created", cursor_format = "unix_seconds" }}
columns = [
  {{ name = "id", type = "string", nullable = false }},
  {{ name = "created", type = "timestamp", nullable = false }},
  {{ name = "email", type = "string" }},
  {{ name = "metadata", type = "json" }},
]
pagination = {{ type = "last_id" }}
params = {{ limit = "100" }}
auth = {{ type = "bearer", token_env = "STRIPE_SECRET_KEY" }}
rate_limit = {{ name = "localstripe", requests_per_second = 100.0, burst = 10 }}

[range]
from = "{from}"
to = "{to}"

[chunking]
policy = "fixed"
every = "1s"

[stage]
path = "stage"

[destination]
kind = "local"
path = "warehouse"
table = "customers"
file_size = "1MiB"
allow_small_files = true
"#,
        from = at(from),
        to = at(to),
    )
}

#[test]
fn stripe_customers_backfill_in_time_windows_with_exact_keys() {
    let Some(server) = LocalStripe::start() else { return };
    let created = server.create_customers(3, 40).unwrap();
    let first = created.iter().map(|c| c.1).min().unwrap();
    let last = created.iter().map(|c| c.1).max().unwrap();
    let mut job = JobDir::in_dir(tempfile::tempdir().unwrap());
    job.env.push(("STRIPE_SECRET_KEY".into(), SECRET_KEY.into()));
    let spec = job.write_spec("job.toml", &spec(&server.url, first, last + 1));
    let out = job.ok(&["backfill", spec.to_str().unwrap(), "--workers", "2"]);
    assert!(!out.contains(SECRET_KEY), "{out}");

    let chunks = job.json(&["status", "stripe-customers", "--chunks"]);
    assert_eq!(
        chunks["chunks"].as_array().unwrap().len() as i64,
        last + 1 - first,
        "one chunk per second: {chunks}"
    );
    let v = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM customers",
    ]);
    assert_eq!(v[0]["n"].as_u64(), Some(created.len() as u64));
    assert_eq!(v[0]["d"].as_u64(), Some(created.len() as u64));
    let ids = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        "SELECT id FROM customers ORDER BY id",
    ]);
    let got: Vec<&str> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = created.iter().map(|c| c.0.as_str()).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(job.json(&["verify", "stripe-customers"])["verified"], true);
}
