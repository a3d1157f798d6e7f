//! Airbyte connectors backfilled into the local warehouse by the `backhaul` binary: Airbyte's
//! `source-faker` as one checkpointed chunk (it takes no dates), and the fake connector of
//! `crates/source-airbyte/tests` cut into daily windows.

use crate::util::JobDir;

const USERS: u64 = 500;

fn spec_text(source: &str, chunking: &str) -> String {
    format!(
        r#"version = 1
name = "airbyte"

[source]
kind = "airbyte"
{source}

[range]
from = "1970-01-01"
to = "2030-01-01"
{chunking}

[stage]
path = "stage"

[destination]
kind = "local"
path = "warehouse"
table = "rows"
file_size = "1MiB"
allow_small_files = true
"#
    )
}

fn counts(job: &JobDir) -> (u64, u64) {
    let v = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM rows",
    ]);
    (v[0]["n"].as_u64().expect("n"), v[0]["d"].as_u64().expect("d"))
}

#[test]
fn faker_users_backfill_as_one_chunk_with_exact_counts() {
    let Some(faker) = backhaul_testkit::airbyte::source_faker() else {
        return;
    };
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let source = format!(
        r#"command = ["{}"]
stream = "users"
cursor_field = "created_at"
config = {{ count = {USERS}, seed = 3, records_per_slice = 100, parallelism = 1, always_updated = false }}"#,
        faker.display()
    );
    let spec = job.write_spec("job.toml", &spec_text(&source, ""));
    let spec = spec.to_str().unwrap();
    job.ok(&["backfill", spec, "--workers", "2"]);
    let status = job.json(&["status", "airbyte"]);
    assert_eq!(status["summary"]["committed"], 1, "{status}");
    assert_eq!(status["summary"]["committed_rows"], USERS, "{status}");
    assert_eq!(counts(&job), (USERS, USERS));
    assert_eq!(job.json(&["verify", "airbyte"])["verified"], true);
    // The checkpoint of the chunk is kept next to the spec.
    assert!(job.path().join("airbyte-state").read_dir().unwrap().next().is_some());
}

#[test]
fn a_windowed_connector_backfills_in_daily_chunks() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../source-airbyte/tests/fake_source.py");
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let source = format!(
        r#"command = ["python3", "{}"]
stream = "events"
cursor_field = "at"
window = {{ start_key = "start_date", end_key = "end_date" }}"#,
        script.display()
    );
    let text = spec_text(&source, "\n[chunking]\npolicy = \"fixed\"\nevery = \"1d\"")
        .replace("1970-01-01", "2024-01-01")
        .replace("2030-01-01", "2024-01-05");
    let spec = job.write_spec("job.toml", &text);
    job.ok(&["backfill", spec.to_str().unwrap(), "--workers", "2"]);
    let status = job.json(&["status", "airbyte"]);
    assert_eq!(status["summary"]["committed"], 4, "{status}");
    // One event every 37 minutes: events 0..=155 fall in four days.
    assert_eq!(counts(&job), (156, 156));
}
