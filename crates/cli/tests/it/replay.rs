//! Replaying a range re-runs its chunks and leaves counts and checksums unchanged.

use crate::util::{JobDir, JobParams, expected_rows};

#[test]
fn replay_of_a_range_keeps_counts_and_checksums() {
    let job = JobDir::new(&JobParams::default());
    let spec = job.spec();
    job.ok(&["backfill", spec.to_str().unwrap()]);
    let before = job.committed_chunks("orders");
    assert_eq!(before.len(), 10);
    // The type-fidelity report is written at submit, next to the state database.
    let report = std::fs::read_to_string(job.path().join("reports/orders/type-fidelity.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let columns = report["columns"].as_array().unwrap();
    assert!(
        columns.iter().all(|c| c["lossy_steps"].as_array().unwrap().is_empty()),
        "{report}"
    );
    let amount = columns.iter().find(|c| c["name"] == "amount").unwrap();
    assert_eq!(amount["arrow_type"], "Decimal128(18, 2)");
    assert!(job.path().join("reports/orders/type-fidelity.md").exists());
    let counts_before = job.counts();

    let out = job.json(&[
        "replay",
        "orders",
        "--from",
        "2023-03-03",
        "--to",
        "2023-03-05T12:00:00Z",
    ]);
    assert_eq!(out["summary"]["parked"], 0, "{out}");
    let after = job.committed_chunks("orders");
    assert_eq!(after.len(), before.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (b.0, b.1, b.2),
            (a.0, a.1, a.2),
            "chunk rows/checksum changed by replay"
        );
        // Chunks 2, 3 and 4 overlap the range and ran again; the rest did not.
        let replayed = (2..=4).contains(&b.0);
        assert_eq!(a.3, if replayed { b.3 + 1 } else { b.3 }, "attempts of chunk {}", b.0);
    }
    assert_eq!(job.counts(), counts_before);
    let expected = expected_rows(300, "2023-03-01", "2023-03-11");
    assert_eq!(counts_before, (expected, expected));
    assert_eq!(job.json(&["verify", "orders"])["verified"], true);
}

#[test]
fn verify_fails_when_committed_data_is_tampered_with() {
    let job = JobDir::new(&JobParams {
        to: "2023-03-04",
        ..JobParams::default()
    });
    job.ok(&["backfill", job.spec().to_str().unwrap()]);
    // Replace one committed file by another chunk's file: rows differ, verify must notice.
    let data = job.path().join("warehouse/orders/data");
    let mut files: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 2);
    std::fs::copy(&files[0], &files[1]).unwrap();
    let out = job.run(&["verify", "orders", "--output", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["result"]["problems"][0]["problem"], "mismatch");
}
