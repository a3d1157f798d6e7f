//! A source that becomes unavailable mid-run: chunks fail as transient, are retried with
//! backoff, and the job still ends with exact counts and no duplicates.

use std::time::Duration;

use crate::util::{JobDir, JobParams, expected_rows};

#[test]
fn source_locked_mid_run_is_retried_until_exact() {
    let params = JobParams {
        from: "2023-05-01",
        to: "2023-06-30",
        ..JobParams::default()
    };
    let job = JobDir::new(&params);
    let spec = job.spec();
    let mut child = job
        .cmd()
        .args([
            "backfill",
            spec.to_str().unwrap(),
            "--workers",
            "1",
            "--retry-backoff",
            "200ms",
        ])
        .spawn()
        .expect("spawn");
    job.wait_for_commits(&mut child, "orders", 1);
    // Take the source database away from every other connection for longer than the
    // source's 10 s busy timeout: the running chunk fails as `unreachable` (transient).
    let lock = rusqlite::Connection::open(job.path().join("source.db")).unwrap();
    lock.pragma_update(None, "locking_mode", "EXCLUSIVE").unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::thread::sleep(Duration::from_secs(11));
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);

    let status = child.wait().unwrap();
    assert!(status.success(), "backfill failed after the source came back: {status}");
    let chunks = job.json(&["status", "orders", "--chunks"]);
    let retried = chunks["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["failures"].as_u64().unwrap() > 0)
        .count();
    assert!(retried >= 1, "no chunk recorded a transient failure: {chunks}");
    assert_eq!(chunks["summary"]["parked"], 0);
    assert_eq!(job.json(&["verify", "orders"])["verified"], true);
    let expected = expected_rows(params.rows_per_day, params.from, params.to);
    assert_eq!(job.counts(), (expected, expected));
}
