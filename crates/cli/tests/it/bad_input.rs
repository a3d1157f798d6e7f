//! Bad input: a clear error naming the field or object and the file, a non-zero exit, and
//! nothing half-written (no job in state, no table at the destination).

use std::process::Output;

use crate::util::{JobDir, JobParams, spec_text, text};

fn fails_with(out: &Output, needles: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1; stdout: {} stderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    for n in needles {
        assert!(err.contains(n), "error should mention `{n}`:\n{err}");
    }
}

fn nothing_written(job: &JobDir) {
    assert!(
        !job.path().join("warehouse/orders").exists(),
        "destination table was created"
    );
    let status = job.json(&["status"]);
    assert_eq!(
        status["jobs"].as_array().map(Vec::len),
        Some(0),
        "a job was stored: {status}"
    );
}

fn try_spec(spec: &str, needles: &[&str]) {
    let job = JobDir::new(&JobParams::default());
    let path = job.write_spec("bad.toml", spec);
    for cmd in ["plan", "backfill"] {
        let out = job.run(&[cmd, path.to_str().unwrap()]);
        fails_with(&out, needles);
    }
    nothing_written(&job);
}

#[test]
fn misspelled_key_names_the_key_and_file() {
    let spec = spec_text(&JobParams::default()).replace("cursor = ", "cursr = ");
    try_spec(&spec, &["bad.toml", "cursr"]);
}

#[test]
fn unknown_section_names_it() {
    let spec = format!("{}\n[retries]\nmax = 3\n", spec_text(&JobParams::default()));
    try_spec(&spec, &["bad.toml", "retries"]);
}

#[test]
fn from_not_before_to() {
    let spec = spec_text(&JobParams {
        from: "2023-03-11",
        to: "2023-03-01",
        ..JobParams::default()
    });
    try_spec(&spec, &["bad.toml", "range", "must be before"]);
}

#[test]
fn unknown_cursor_column() {
    let spec = spec_text(&JobParams::default()).replace("cursor = \"created_at\"", "cursor = \"created\"");
    try_spec(&spec, &["created", "orders"]);
}

#[test]
fn non_orderable_cursor_column() {
    let spec = spec_text(&JobParams::default()).replace("cursor = \"created_at\"", "cursor = \"status\"");
    try_spec(&spec, &["status"]);
}

#[test]
fn stage_path_that_is_not_a_writable_directory() {
    let job = JobDir::new(&JobParams::default());
    std::fs::write(job.path().join("stage-file"), "not a directory").unwrap();
    let spec = spec_text(&JobParams::default()).replace("path = \"stage\"", "path = \"stage-file\"");
    let path = job.write_spec("bad.toml", &spec);
    fails_with(
        &job.run(&["backfill", path.to_str().unwrap()]),
        &["bad.toml", "stage.path"],
    );
    nothing_written(&job);
}

#[test]
fn small_file_size_without_the_flag() {
    let spec = spec_text(&JobParams::default()).replace("allow_small_files = true", "");
    try_spec(&spec, &["bad.toml", "destination.file_size", "128MiB"]);
}

#[test]
fn destination_table_of_another_job_is_refused() {
    let job = JobDir::new(&JobParams {
        to: "2023-03-03",
        ..JobParams::default()
    });
    job.ok(&["backfill", job.spec().to_str().unwrap()]);
    let counts = job.counts();
    let other = spec_text(&JobParams {
        name: "other",
        to: "2023-03-03",
        ..JobParams::default()
    });
    let path = job.write_spec("other.toml", &other);
    let out = job.run(&["backfill", path.to_str().unwrap()]);
    fails_with(&out, &["orders", "other"]);
    assert_eq!(job.counts(), counts, "the existing table changed");
    let jobs = job.json(&["status"]);
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "{jobs}");
}

#[test]
fn changed_spec_under_the_same_name_is_refused() {
    let job = JobDir::new(&JobParams {
        to: "2023-03-03",
        ..JobParams::default()
    });
    job.ok(&["backfill", job.spec().to_str().unwrap()]);
    let changed = spec_text(&JobParams {
        to: "2023-03-05",
        ..JobParams::default()
    });
    let path = job.write_spec("job.toml", &changed);
    fails_with(
        &job.run(&["backfill", path.to_str().unwrap()]),
        &["orders", "different spec"],
    );
}

#[test]
fn errors_are_json_with_class_when_asked() {
    let job = JobDir::new(&JobParams::default());
    let spec = spec_text(&JobParams::default()).replace("cursor = ", "cursr = ");
    let path = job.write_spec("bad.toml", &spec);
    let out = job.run(&["plan", path.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json error");
    assert_eq!(v["error"]["class"], "permanent");
    assert!(v["error"]["message"].as_str().unwrap().contains("cursr"));
}

#[test]
fn unknown_job_and_usage_errors() {
    let job = JobDir::new(&JobParams::default());
    fails_with(&job.run(&["verify", "nope"]), &["nope"]);
    let out = job.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
}

#[test]
fn plan_is_deterministic_and_covers_the_range() {
    let job = JobDir::new(&JobParams {
        chunking: "policy = \"target_bytes\"\ntarget_bytes = \"256KiB\"",
        ..JobParams::default()
    });
    let spec = job.spec();
    let a = job.json(&["plan", spec.to_str().unwrap()]);
    let b = job.json(&["plan", spec.to_str().unwrap()]);
    assert_eq!(a, b);
    let chunks = a["chunks"].as_array().unwrap();
    assert!(chunks.len() > 2, "{a}");
    assert_eq!(chunks[0]["from"], "2023-03-01T00:00:00Z");
    assert_eq!(chunks.last().unwrap()["to"], "2023-03-11T00:00:00Z");
    for w in chunks.windows(2) {
        assert_eq!(w[0]["to"], w[1]["from"]);
    }
    // plan never creates the destination table.
    assert!(!job.path().join("warehouse/orders").exists());
}
