//! A backfill whose stage is an S3 bucket (moto in server mode), from the CLI: rows land in
//! the local warehouse, `verify` passes, committed chunks leave nothing in the bucket, and the
//! credentials (from the environment only) are never printed.

use backhaul_testkit::moto::{MotoServer, SECRET_ACCESS_KEY};

use crate::util::{JobDir, JobParams, expected_rows, spec_text, text};

fn s3_spec(params: &JobParams<'_>, stage: &str) -> String {
    // 256 KiB parts: each daily chunk rolls over several, so parts upload while the next ones
    // are written.
    spec_text(params)
        .replace("[stage]\npath = \"stage\"\n", &format!("[stage]\n{stage}\n"))
        .replace("file_size = \"1MiB\"", "file_size = \"256KiB\"")
}

#[test]
fn backfill_through_an_s3_stage_verifies_and_empties_the_bucket() {
    let moto = MotoServer::start("backhaul-stage").unwrap_or_else(|e| panic!("{e}"));
    // About 30,000 rows a day in 2023.
    let params = JobParams {
        rows_per_day: 4000,
        from: "2023-03-01",
        to: "2023-03-04",
        ..JobParams::default()
    };
    let spec = s3_spec(
        &params,
        &format!(
            "url = \"s3://backhaul-stage/runs/first\"\nendpoint = \"{}\"",
            moto.endpoint()
        ),
    );
    let mut job = JobDir::new(&params);
    let path = job.write_spec("s3.toml", &spec);
    job.env = MotoServer::env()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Debug logs of every crate: the secret must not appear in any of them.
    job.env.push(("RUST_LOG".into(), "debug".into()));

    let out = job.run(&["backfill", path.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "backfill failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        !stdout.contains(SECRET_ACCESS_KEY) && !stderr.contains(SECRET_ACCESS_KEY),
        "the secret access key was printed"
    );
    job.env.pop();

    let committed = job.committed_chunks("orders");
    assert_eq!(committed.len(), 3);
    let expected = expected_rows(params.rows_per_day, params.from, params.to);
    assert_eq!(committed.iter().map(|c| c.1 as u64).sum::<u64>(), expected);
    assert_eq!(job.counts(), (expected, expected));
    let files = std::fs::read_dir(job.path().join("warehouse/orders/data"))
        .unwrap()
        .count();
    assert!(
        files > committed.len(),
        "expected several parts per chunk, got {files} files"
    );

    let verify = job.run(&["verify", "orders"]);
    assert_eq!(verify.status.code(), Some(0), "verify: {}", text(&verify.stderr));

    // Staged parts of committed chunks are deleted; nothing was staged on the local disk.
    assert_eq!(moto.list("runs/first/").unwrap(), Vec::<String>::new());
    assert!(!job.path().join("stage").exists());
}

#[test]
fn an_unknown_stage_url_scheme_fails_naming_key_and_file() {
    let params = JobParams::default();
    let job = JobDir::new(&params);
    let path = job.write_spec("bad.toml", &s3_spec(&params, "url = \"ftp://x\""));
    for cmd in ["plan", "backfill"] {
        let out = job.run(&[cmd, path.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(err.contains("bad.toml") && err.contains("stage.url"), "{cmd}: {err}");
        assert!(err.contains("ftp://"), "{cmd}: {err}");
    }
    assert!(!job.path().join("warehouse/orders").exists());
}
