//! `--log-format json`: every log line is one JSON object a log collector can index, with the
//! job, chunk, attempt and worker fields at the top level. (A command's own messages to people,
//! such as "planned job …", stay sentences; `--output json` is for those.)

use crate::util::{JobDir, JobParams, text};

#[test]
fn json_logs_are_one_object_per_line_with_chunk_fields() {
    let job = JobDir::new(&JobParams::default());
    let spec = job.spec();
    let out = job
        .cmd()
        .env("RUST_LOG", "info")
        .args(["--log-format", "json", "backfill", spec.to_str().unwrap()])
        .output()
        .expect("spawn backhaul");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for level in [" INFO ", " WARN ", " ERROR "] {
        assert!(!stderr.contains(level), "a text log line in {stderr}");
    }
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        assert!(line["timestamp"].is_string() && line["level"].is_string(), "{line}");
        assert!(line["message"].is_string(), "{line}");
    }
    let committed = lines
        .iter()
        .find(|l| l["message"] == "chunk committed")
        .unwrap_or_else(|| panic!("no `chunk committed` line in {stderr}"));
    assert_eq!(committed["job"], "orders", "{committed}");
    assert!(
        committed["chunk"].is_u64() && committed["attempt"].is_u64(),
        "{committed}"
    );
}
