//! The hand-written fake connector: exact windows (conformance suite), the checkpointed
//! single chunk killed and resumed, and connectors that misbehave.

use std::path::Path;
use std::time::Duration;

use backhaul_conformance::source::check_source;
use backhaul_core::ErrorClass;
use backhaul_core::connector::Source;

use super::*;

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fake_source.py")
        .display()
        .to_string()
}

/// A windowed fake: ~39 events a day (one every 37 minutes).
fn windowed() -> AirbyteSource {
    source(&format!(
        r#"command = ["python3", "{}"]
stream = "events"
cursor_field = "at"
window = {{ start_key = "start_date", end_key = "end_date" }}
estimated_records_per_day = 39
"#,
        script()
    ))
}

/// An un-windowed fake emitting `config` (a TOML inline table's body), checkpointed in `state_dir`.
fn checkpointed(config: &str, state_dir: &Path) -> AirbyteSource {
    source(&format!(
        r#"command = ["python3", "{}"]
stream = "events"
cursor_field = "at"
state_dir = "{}"
config = {{ {config} }}
"#,
        script(),
        state_dir.display()
    ))
}

#[tokio::test]
async fn windowed_connector_passes_the_source_conformance_suite() {
    let source = windowed();
    let report = check_source(&source, range("2024-01-01", "2024-01-04"))
        .await
        .unwrap_or_else(|v| panic!("{v}"));
    // Events 0..=116 fall in three days of 37-minute steps.
    assert_eq!(report.rows, 117);
    let d = source.describe().await.unwrap();
    assert_eq!(d.key_columns, ["id"]);
    let types: Vec<String> = d.schema.fields().iter().map(|f| f.data_type().to_string()).collect();
    assert_eq!(
        types,
        ["Int64", "Timestamp(µs, \"UTC\")", "Date32", "Float64", "Utf8", "Utf8"]
    );
    assert_eq!(
        d.schema
            .field(4)
            .metadata()
            .get("ARROW:extension:name")
            .map(String::as_str),
        Some("arrow.json")
    );
}

#[tokio::test]
async fn a_window_keeps_exactly_its_records_and_counts_the_others() {
    let source = windowed();
    // 03:42 is event 6's time: the fake emits it (its end is inclusive), the window does not keep it.
    let batches = read_all(&source, range("2024-01-01", "2024-01-01T03:42:00Z"), 4)
        .await
        .unwrap();
    assert_eq!(ids(&batches), (0..6).collect());
    assert!(batches.iter().all(|b| b.num_rows() <= 4));
    let stats = source.last_extract().unwrap();
    assert_eq!((stats.read, stats.outside), (7, 1));
    // No statistics from a connector: the estimate spreads `estimated_records_per_day`.
    let density = source.density(range("2024-01-01", "2024-01-03")).await.unwrap();
    assert_eq!(density.len(), 2);
    assert_eq!(density[0].rows, 39.0);
}

#[tokio::test]
async fn a_killed_chunk_resumes_from_its_checkpoint_with_every_row() {
    let state_dir = tempfile::tempdir().unwrap();
    let config = "total = 200, per_state = 10, slow_after = 40, slow_seconds = 0.02";
    let source = checkpointed(config, state_dir.path());
    let whole = range("2024-01-01", "2025-01-01");
    // One chunk: no statistics, so the byte-target planner cuts nothing.
    assert!(source.density(whole).await.unwrap().is_empty());

    // Read three batches, then drop the stream: the connector is killed mid-run.
    let mut stream = source.extract(whole, 10).await.unwrap();
    for _ in 0..3 {
        stream.next().await.unwrap().unwrap();
    }
    drop(stream);

    // The next attempt may find the dying one still holding the checkpoint: that is a
    // transient failure the pipeline retries, as this loop does.
    let mut attempts = 0;
    let batches = loop {
        match read_all(&source, whole, 10).await {
            Err(e) if e.class() == ErrorClass::Transient && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(ids(&batches), (0..200).collect());
    let stats = source.last_extract().unwrap();
    assert!(stats.resumed_from_state, "{stats:?}");
    assert!(stats.replayed >= 30 && stats.replayed < 200, "{stats:?}");
    assert_eq!(stats.replayed + stats.read, 200, "{stats:?}");

    // A retry of the finished chunk gives the same rows: all replayed, nothing new emitted.
    let again = read_all(&source, whole, 50).await.unwrap();
    assert_eq!(ids(&again), (0..200).collect());
    let stats = source.last_extract().unwrap();
    assert_eq!((stats.replayed, stats.read), (200, 0));
}

/// The error of an extract of the fake told to fail in `mode`.
async fn failing(mode: &str) -> backhaul_core::Error {
    let dir = tempfile::tempdir().unwrap();
    let source = checkpointed(&format!("fail = \"{mode}\""), dir.path());
    extract_error(&source, range("2024-01-01", "2024-02-01")).await
}

#[tokio::test]
async fn a_connector_exiting_non_zero_fails_permanently_with_its_last_messages() {
    let e = failing("exit").await;
    assert_eq!(e.class(), ErrorClass::Permanent);
    let e = e.to_string();
    assert!(e.contains("`read` failed: exited with status 3"), "{e}");
    assert!(e.contains("INFO about to fail"), "{e}");
    assert!(e.contains("fatal: the fake source gave up"), "{e}");
}

#[tokio::test]
async fn a_connector_printing_non_protocol_lines_fails_the_chunk() {
    let e = failing("garbage").await;
    assert_eq!(e.class(), ErrorClass::Permanent);
    let e = e.to_string();
    assert!(
        e.contains("printed a line on stdout that is not an Airbyte message: `hello, this is not a protocol message`"),
        "{e}"
    );
    assert!(e.contains("INFO reading events"), "{e}");
}

#[tokio::test]
async fn a_transient_error_trace_is_retried() {
    let e = failing("transient").await;
    assert_eq!(e.class(), ErrorClass::Transient);
    assert!(e.to_string().contains("(transient_error): the API is down"), "{e}");
}

#[tokio::test]
async fn a_value_that_does_not_fit_its_type_names_stream_field_and_value() {
    let e = failing("bad_value").await;
    assert_eq!(e.kind(), "type_fidelity");
    let e = e.to_string();
    assert!(
        e.contains("stream `events`, field `id`: `\"seven\"` is not an integer"),
        "{e}"
    );
}

#[tokio::test]
async fn an_unknown_stream_or_window_key_is_named_with_what_exists() {
    let section = |extra: &str, stream: &str| {
        source(&format!(
            "command = [\"python3\", \"{}\"]\nstream = \"{stream}\"\ncursor_field = \"at\"\n{extra}",
            script()
        ))
    };
    let e = section("", "evnts").describe().await.unwrap_err().to_string();
    assert!(
        e.contains("airbyte stream `evnts`: not in the connector's catalog; it has `events`, `audit`"),
        "{e}"
    );
    let e = section("window = { start_key = \"since\", end_key = \"end_date\" }\n", "events")
        .describe()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("source.window.start_key: the connector's config has no `since`"),
        "{e}"
    );
    let e = section("primary_key = [\"uuid\"]\n", "events")
        .describe()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("primary key `uuid` is not one of its fields: `id`, `at`"),
        "{e}"
    );
}
