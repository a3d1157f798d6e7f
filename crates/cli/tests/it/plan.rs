//! `backhaul plan` extracts nothing and so creates nothing; a finished backfill leaves no
//! empty stage directories; the run summary names its throughput for what it counts.

use crate::util::{JobDir, JobParams};

/// Every directory under `dir`, relative to it.
fn directories(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
                todo.push(path);
            }
        }
    }
    found
}

#[test]
fn plan_creates_no_stage_or_warehouse_and_backfill_leaves_no_empty_stage_dirs() {
    let job = JobDir::new(&JobParams::default());
    let spec = job.spec();
    let plan = job.json(&["plan", spec.to_str().unwrap()]);
    assert_eq!(plan["chunks"].as_array().map(Vec::len), Some(10), "{plan}");
    assert_eq!(plan["workers"], 2, "{plan}");
    // The embedded source cannot tell its physical order.
    assert!(plan["estimated_read_amplification"].is_null(), "{plan}");
    assert_eq!(plan["warnings"], serde_json::json!([]), "{plan}");
    let text = job.ok(&["plan", spec.to_str().unwrap()]);
    assert!(text.contains("balanced for 2 workers"), "{text}");
    for dir in ["stage", "warehouse"] {
        assert!(!job.path().join(dir).exists(), "`plan` created {dir}/");
    }

    let run = job.json(&["backfill", spec.to_str().unwrap()]);
    let parquet_rate = &run["this_run"]["parquet_mb_per_second"];
    assert!(parquet_rate.as_f64().is_some_and(|r| r > 0.0), "{run}");
    assert!(run["this_run"].get("mb_per_second").is_none(), "{run}");
    let left: Vec<String> = directories(&job.path().join("stage"))
        .into_iter()
        .filter(|d| d.contains("chunk-"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "committed chunks left stage directories");
}
