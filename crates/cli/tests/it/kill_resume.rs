//! Kill -9 the whole process mid-run, more than once; resuming finishes with every chunk
//! exactly once.

use crate::util::{JobDir, JobParams, expected_rows};

#[test]
fn kill_nine_then_resume_loads_every_row_exactly_once() {
    let params = JobParams {
        from: "2023-05-01",
        to: "2023-06-20",
        chunking: "policy = \"fixed\"\nevery = \"1d\"",
        ..JobParams::default()
    };
    let job = JobDir::new(&params);
    let spec = job.spec();
    let spec = spec.to_str().unwrap();
    // Kill at two different points of progress, then let the third run finish.
    for kill_after in [3usize, 12] {
        let mut child = job
            .cmd()
            .args(["backfill", spec, "--workers", "2"])
            .spawn()
            .expect("spawn");
        job.wait_for_commits(&mut child, "orders", kill_after);
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
    }
    let committed_before_resume = job.count_committed("orders");
    assert!(
        (12..50).contains(&committed_before_resume),
        "killed too late: {committed_before_resume}"
    );

    job.ok(&["backfill", spec, "--workers", "2"]);
    let status = job.json(&["status", "orders"]);
    assert_eq!(status["summary"]["committed"], 50, "{status}");
    assert_eq!(status["finished"], true);

    let verify = job.json(&["verify", "orders"]);
    assert_eq!(verify["verified"], true, "{verify}");

    let expected = expected_rows(params.rows_per_day, params.from, params.to);
    let (rows, distinct) = job.counts();
    assert_eq!(rows, expected, "rows in warehouse vs generator");
    assert_eq!(distinct, expected, "duplicate order ids in warehouse");
    assert_eq!(status["summary"]["committed_rows"], expected);

    // No orphan from killed attempts is visible, and the stage holds no leftovers of
    // committed chunks.
    let staged: Vec<_> = walk(&job.path().join("stage"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(staged.is_empty(), "stage still holds {staged:?}");
}

#[test]
fn resume_by_job_name_without_the_spec_file() {
    let job = JobDir::new(&JobParams::default());
    let spec = job.spec();
    let mut child = job
        .cmd()
        .args(["backfill", spec.to_str().unwrap(), "--workers", "1"])
        .spawn()
        .expect("spawn");
    job.wait_for_commits(&mut child, "orders", 2);
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_file(&spec).unwrap();
    job.ok(&["backfill", "--resume", "orders"]);
    assert_eq!(job.json(&["verify", "orders"])["verified"], true);
    let expected = expected_rows(300, "2023-03-01", "2023-03-11");
    assert_eq!(job.counts(), (expected, expected));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn ctrl_c_hands_chunks_back_without_counting_failures() {
    let params = JobParams {
        from: "2023-05-01",
        to: "2023-06-20",
        ..JobParams::default()
    };
    let job = JobDir::new(&params);
    let spec = job.spec();
    let mut child = job
        .cmd()
        .args(["backfill", spec.to_str().unwrap(), "--workers", "2"])
        .spawn()
        .expect("spawn");
    job.wait_for_commits(&mut child, "orders", 3);
    // SAFETY: sending SIGINT to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted runs exit 130");
    let s = job.json(&["status", "orders", "--chunks"]);
    assert_eq!(s["summary"]["leased"], 0, "chunks were not handed back: {s}");
    assert!(
        s["chunks"].as_array().unwrap().iter().all(|c| c["failures"] == 0),
        "a hand-back counted as a failure: {s}"
    );
    job.ok(&["backfill", spec.to_str().unwrap()]);
    let expected = expected_rows(params.rows_per_day, params.from, params.to);
    assert_eq!(job.counts(), (expected, expected));
}
