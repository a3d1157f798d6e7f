//! Distributed mode with real processes on loopback: a coordinator and workers of the
//! `backhaul` binary, killed, restarted and cut off by the tests. Every test ends with the
//! destination holding exactly the source's rows (verify passes, no duplicate ids). One runs
//! the coordinator on PostgreSQL state.

use std::time::Duration;

use crate::cluster::{
    Coordinator, Proxy, SourceLock, attempts, chunks, client, client_json, start_worker, wait_for_lease_by, wait_until,
};
use crate::util::{JobDir, JobParams, expected_rows, text};
use backhaul_testkit::postgres::PostgresServer;

const JOB: &str = "orders";

/// Submits the job's spec to the coordinator and checks it was planned.
fn submit(job: &JobDir, url: &str) -> serde_json::Value {
    let spec = job.spec();
    let v = client_json(job, &["submit", spec.to_str().unwrap(), "--coordinator", url], &[]);
    assert_eq!(v["status"]["job"], JOB, "{v}");
    // The coordinator plans, so it reports how each column travels; the demo job is exact.
    let columns = v["type_fidelity"]["columns"].as_array().expect("type_fidelity columns");
    assert!(!columns.is_empty(), "{v}");
    assert!(columns.iter().all(|c| c["lossy_steps"] == serde_json::json!([])), "{v}");
    v
}

/// The job is finished, every chunk committed, verify passes and the warehouse holds each
/// generated row exactly once.
fn assert_exact(job: &JobDir, url: &str, params: &JobParams<'_>, chunks_total: u64) {
    let status = client_json(job, &["status", JOB, "--coordinator", url], &[]);
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["summary"]["committed"], chunks_total, "{status}");
    let verify = job.json(&["verify", JOB]);
    assert_eq!(verify["verified"], true, "{verify}");
    let expected = expected_rows(params.rows_per_day, params.from, params.to);
    assert_eq!(job.counts(), (expected, expected), "rows and distinct ids vs generator");
    assert_eq!(status["summary"]["committed_rows"], expected);
}

#[test]
fn worker_killed_mid_chunk_is_re_leased_after_expiry() {
    let params = JobParams::default();
    let job = JobDir::new(&params);
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &["--lease-ttl", "2s"]);
    let url = coordinator.url();
    submit(&job, &url);
    // The coordinator writes the type-fidelity report next to its state file, as local runs do.
    let report = job.path().join("reports").join(JOB).join("type-fidelity.json");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["job"], JOB);

    // Freeze the source so worker A is certainly mid-chunk when it dies.
    let mut lock = SourceLock::take(&job);
    let mut a = start_worker(&job, &url, "worker-a", &[]);
    let chunk = wait_for_lease_by(&job, JOB, "worker-a");
    a.kill9();
    lock.release();

    let mut b = start_worker(&job, &url, "worker-b", &["--job", JOB, "--slots", "2"]);
    let status = b.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "worker b: {status}\n{}", b.log_text());

    let history = attempts(&job, JOB, chunk);
    assert_eq!(history[0].1, "worker-a#0", "{history:?}");
    assert_eq!(
        history[0].2.as_deref(),
        Some("expired"),
        "the dead worker's lease expired: {history:?}"
    );
    let last = history.last().unwrap();
    assert!(last.0 >= 2 && last.1.starts_with("worker-b") && last.2.as_deref() == Some("committed"));
    assert_exact(&job, &url, &params, 10);
}

#[test]
fn coordinator_killed_mid_job_and_restarted_on_the_same_state() {
    let params = JobParams {
        from: "2023-05-01",
        to: "2023-06-20",
        ..JobParams::default()
    };
    let job = JobDir::new(&params);
    let mut coordinator = Coordinator::start(&job, "127.0.0.1:0", &["--lease-ttl", "10s"]);
    let url = coordinator.url();
    let listen = coordinator.addr.to_string();
    submit(&job, &url);
    let mut workers: Vec<_> = ["worker-a", "worker-b"]
        .into_iter()
        .map(|id| start_worker(&job, &url, id, &["--job", JOB]))
        .collect();

    wait_until("3 committed chunks", Duration::from_secs(120), || {
        job.count_committed(JOB) >= 3
    });
    coordinator.proc.kill9();
    let committed_at_kill = job.count_committed(JOB);
    assert!(committed_at_kill < 50, "the job finished before the kill");
    // Workers outlive their coordinator, retrying with backoff.
    std::thread::sleep(Duration::from_millis(1500));
    for w in &mut workers {
        assert!(w.is_running(), "a worker gave up on its coordinator:\n{}", w.log_text());
    }
    // Same port, same state: a second coordinator takes over.
    let restarted = Coordinator::start(&job, &listen, &["--lease-ttl", "10s"]);
    assert_eq!(restarted.addr, coordinator.addr);
    for w in &mut workers {
        let status = w.wait_exit(Duration::from_secs(180));
        assert!(status.success(), "worker: {status}\n{}", w.log_text());
    }
    assert!(
        workers
            .iter()
            .any(|w| w.log_text().contains("coordinator reachable again")),
        "no worker noticed the restart"
    );
    assert_exact(&job, &url, &params, 50);
}

/// The same kill -9 and restart with the coordinator's state in PostgreSQL (the testkit's
/// private server): the restarted process resumes from the database, the job ends exact, and
/// the password (given through the environment) appears in no output.
#[test]
fn coordinator_on_postgres_state_killed_mid_job_and_restarted() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    let url = format!("postgres://{}@127.0.0.1:{}/{db}", server.user(), server.port());
    let params = JobParams {
        from: "2023-05-01",
        to: "2023-06-20",
        ..JobParams::default()
    };
    let mut job = JobDir::new(&params);
    job.state = Some(url.clone());
    job.env
        .push(("BACKHAUL_STATE_PASSWORD".into(), server.password().into()));
    let committed = || {
        server
            .psql(
                &db,
                "SELECT count(*) FROM chunks WHERE job_id = 'orders' AND state = 'committed'",
            )
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut coordinator = Coordinator::start(&job, "127.0.0.1:0", &["--lease-ttl", "10s"]);
    let listen = coordinator.addr.to_string();
    let coordinator_url = coordinator.url();
    // A second coordinator on the same database is refused.
    let second = job.run(&["coordinator", "--listen", "127.0.0.1:0"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second.stderr).contains("in use by another coordinator"),
        "{}",
        text(&second.stderr)
    );
    submit(&job, &coordinator_url);
    let mut workers: Vec<_> = ["worker-a", "worker-b"]
        .into_iter()
        .map(|id| start_worker(&job, &coordinator_url, id, &["--job", JOB]))
        .collect();
    wait_until("3 committed chunks", Duration::from_secs(120), || committed() >= 3);
    coordinator.proc.kill9();
    assert!(committed() < 50, "the job finished before the kill");
    std::thread::sleep(Duration::from_millis(1500));
    for w in &mut workers {
        assert!(w.is_running(), "a worker gave up on its coordinator:\n{}", w.log_text());
    }
    let restarted = Coordinator::start(&job, &listen, &["--lease-ttl", "10s"]);
    for w in &mut workers {
        let status = w.wait_exit(Duration::from_secs(180));
        assert!(status.success(), "worker: {status}\n{}", w.log_text());
    }
    assert_exact(&job, &coordinator_url, &params, 50);
    assert_eq!(committed(), 50);
    let twice = server
        .psql(
            &db,
            "SELECT count(*) FROM (SELECT chunk_id FROM attempts WHERE outcome = 'committed' GROUP BY chunk_id HAVING count(*) > 1) AS t",
        )
        .unwrap();
    assert_eq!(twice, "0", "a chunk committed twice");
    // `status` reads the database directly too.
    let local = job.json(&["status", JOB]);
    assert_eq!(local["summary"]["committed"], 50, "{local}");
    for log in [coordinator.proc.log_text(), restarted.proc.log_text()] {
        assert!(log.contains(&url), "the log names the state database:\n{log}");
        assert!(!log.contains(server.password()), "a log shows the password");
    }
    assert!(!text(&second.stderr).contains(server.password()));
}

#[test]
fn worker_cut_off_by_a_partition_cannot_commit_late() {
    let params = JobParams::default();
    let job = JobDir::new(&params);
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &["--lease-ttl", "3s"]);
    let url = coordinator.url();
    submit(&job, &url);
    let proxy = Proxy::start(coordinator.addr);

    // Worker A reaches the coordinator only through the proxy; it is frozen mid-chunk.
    let mut lock = SourceLock::take(&job);
    let mut a = start_worker(&job, &proxy.url(), "worker-a", &[]);
    let chunk = wait_for_lease_by(&job, JOB, "worker-a");
    // Cut A off, then let it work: it finishes the chunk (committing it at the destination)
    // but can neither heartbeat nor report.
    proxy.pause();
    lock.release();

    // B, connected directly, runs the job; A's chunk goes to B once A's lease expires.
    let mut b = start_worker(&job, &url, "worker-b", &["--job", JOB]);
    let status = b.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "worker b: {status}\n{}", b.log_text());
    let history = attempts(&job, JOB, chunk);
    assert_eq!(
        (history[0].1.as_str(), history[0].2.as_deref()),
        ("worker-a#0", Some("expired")),
        "{history:?}"
    );
    assert!(history.len() >= 2, "{history:?}");

    // The partition heals. A either finished its commit at the destination before B did, and
    // its late completion report is refused by the coordinator, or (on a slow machine) B
    // committed first and the destination refused A's older attempt. Both keep the chunk
    // committed exactly once, by the later attempt.
    proxy.resume();
    wait_until("A's late completion to be refused", Duration::from_secs(90), || {
        let log = a.log_text();
        log.contains("coordinator refused completion") || log.contains("lease lost; chunk abandoned")
    });
    let log = a.log_text();
    if log.contains("coordinator refused completion") {
        assert!(coordinator.metric("backhaul_coordinator_stale_calls_total{call=\"complete\"}") >= 1.0);
        assert!(
            log.contains(&format!("chunk={chunk}")) && log.contains("FailedPrecondition"),
            "{log}"
        );
    } else {
        assert!(log.contains(&format!("chunk={chunk}")), "{log}");
    }
    let committed = chunks(&job, JOB);
    let c = committed.iter().find(|c| c.chunk == chunk).unwrap();
    assert_eq!(c.state, "committed");
    assert!(c.attempt >= 2, "the chunk is committed by the later attempt: {c:?}");
    assert_exact(&job, &url, &params, 10);

    // SIGTERM drains A cleanly.
    a.signal(libc::SIGTERM);
    let status = a.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", a.log_text());
}

#[test]
fn racing_workers_never_share_a_chunk() {
    let params = JobParams {
        from: "2023-04-01",
        to: "2023-05-01",
        rows_per_day: 50,
        ..JobParams::default()
    };
    let job = JobDir::new(&params);
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &["--lease-ttl", "60s"]);
    let url = coordinator.url();
    submit(&job, &url);
    let mut workers: Vec<_> = (0..3)
        .map(|i| start_worker(&job, &url, &format!("racer-{i}"), &["--job", JOB, "--slots", "3"]))
        .collect();
    for w in &mut workers {
        let status = w.wait_exit(Duration::from_secs(180));
        assert!(status.success(), "{}", w.log_text());
    }
    // Nine slots raced for 30 chunks: each was leased exactly once, nobody lost a lease.
    for c in chunks(&job, JOB) {
        assert_eq!((c.state.as_str(), c.attempt), ("committed", 1), "{c:?}");
    }
    assert_eq!(coordinator.metric("backhaul_coordinator_leases_granted_total"), 30.0);
    assert_eq!(
        coordinator.metric("backhaul_coordinator_stale_calls_total{call=\"complete\"}"),
        0.0
    );
    let holders: Vec<String> = (0..30)
        .flat_map(|c| attempts(&job, JOB, c))
        .map(|(_, w, _)| w)
        .collect();
    let by_worker: std::collections::BTreeSet<&str> = holders.iter().map(|w| w.split('#').next().unwrap()).collect();
    assert!(by_worker.len() >= 2, "only {by_worker:?} got work");
    // Three idle slots share one request at start: those leases are the worker's, not a slot's.
    assert!(holders.iter().any(|w| !w.contains('#')), "no batch lease: {holders:?}");
    assert_exact(&job, &url, &params, 30);
}

#[test]
fn spec_refused_at_submit_reaches_the_cli_typed() {
    let job = JobDir::new(&JobParams::default());
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &[]);
    let url = coordinator.url();
    let bad = crate::util::spec_text(&JobParams {
        from: "2023-03-11",
        to: "2023-03-01",
        ..JobParams::default()
    });
    job.write_spec("bad.toml", &bad);

    let out = client(
        &job,
        &["submit", "bad.toml", "--coordinator", &url, "--output", "json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).expect("json error");
    let e = &v["error"];
    assert_eq!(e["file"], "bad.toml", "{v}");
    assert_eq!(e["field"], "range", "{v}");
    assert_eq!(e["kind"], "config", "{v}");
    assert_eq!(e["class"], "permanent", "{v}");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("must be before"), "{v}");
    assert!(
        !message.contains("bad.toml"),
        "the message is not a blob of the other parts: {v}"
    );

    // A key the spec format does not know: the parse error names it, on the server.
    let typo = crate::util::spec_text(&JobParams::default()).replace("cursor = ", "cursr = ");
    job.write_spec("typo.toml", &typo);
    let out = client(&job, &["submit", "typo.toml", "--coordinator", &url], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("typo.toml: ") && err.contains("cursr"), "{err}");
    assert!(
        err.contains("refused by the coordinator: config error, permanent"),
        "{err}"
    );

    // A source table that does not exist is an object error, not a config one.
    let missing =
        crate::util::spec_text(&JobParams::default()).replace("cursor = \"created_at\"", "cursor = \"created\"");
    job.write_spec("missing.toml", &missing);
    let out = client(
        &job,
        &["submit", "missing.toml", "--coordinator", &url, "--output", "json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).expect("json error");
    assert!(v["error"]["message"].as_str().unwrap().contains("created"), "{v}");

    // Nothing was stored, and the coordinator counted three refusals.
    let jobs = client_json(&job, &["status", "--coordinator", &url], &[]);
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "{jobs}");
    assert_eq!(coordinator.metric("backhaul_coordinator_jobs_rejected_total"), 3.0);
}

#[test]
fn unwritable_fidelity_reports_lose_no_job() {
    let job = JobDir::new(&JobParams::default());
    // `reports` is a file, so the coordinator cannot write reports beside its state.
    std::fs::write(job.path().join("reports"), "not a directory").unwrap();
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &[]);
    let url = coordinator.url();
    let blocked = job.path().join("blocked");
    std::fs::write(&blocked, "not a directory").unwrap();
    let spec = job.spec();
    let out = client(
        &job,
        &[
            "submit",
            spec.to_str().unwrap(),
            "--coordinator",
            &url,
            "--fidelity-report",
            blocked.to_str().unwrap(),
        ],
        &[],
    );
    // The client's copy fails with a clear error naming the path; the job is stored anyway.
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("job orders was submitted, but its type-fidelity report could not be written")
            && err.contains("blocked"),
        "{err}"
    );
    let status = client_json(&job, &["status", JOB, "--coordinator", &url], &[]);
    assert_eq!(status["job"], JOB, "{status}");
    // The coordinator's copy is only worth a warning: the submission was answered normally.
    wait_until("the coordinator's warning", Duration::from_secs(30), || {
        coordinator
            .proc
            .log_text()
            .contains("could not write the type-fidelity report")
    });
}

#[test]
fn cancel_stops_a_running_job() {
    let params = JobParams {
        from: "2023-05-01",
        to: "2023-06-20",
        ..JobParams::default()
    };
    let job = JobDir::new(&params);
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &[]);
    let url = coordinator.url();
    submit(&job, &url);
    let mut w = start_worker(&job, &url, "worker-a", &["--job", JOB]);
    wait_until("2 committed chunks", Duration::from_secs(120), || {
        job.count_committed(JOB) >= 2
    });
    let v = client_json(&job, &["cancel", JOB, "--coordinator", &url], &[]);
    assert_eq!(v["status"]["state"], "cancelled", "{v}");
    assert!(v["chunks_cancelled"].as_u64().unwrap() > 0, "{v}");
    // The worker finds nothing more to do and exits; no chunk is left leased.
    let status = w.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", w.log_text());
    let s = client_json(&job, &["status", JOB, "--coordinator", &url, "--chunks"], &[]);
    assert_eq!(s["summary"]["leased"], 0, "{s}");
    assert_eq!(s["finished"], true, "{s}");
    let out = client(&job, &["status", JOB, "--coordinator", &url, "--follow"], &[]);
    assert_eq!(out.status.code(), Some(1), "a cancelled job exits 1 when followed");
}

#[test]
fn second_coordinator_on_the_same_state_is_refused() {
    let job = JobDir::new(&JobParams::default());
    let _first = Coordinator::start(&job, "127.0.0.1:0", &[]);
    let out = job.run(&["coordinator", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("in use by another coordinator"),
        "{}",
        text(&out.stderr)
    );
    // A local run on the same state is refused the same way; reading it is fine.
    let out = job.run(&["backfill", job.spec().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("in use by another coordinator"));
    job.ok(&["status"]);
}

#[test]
fn preview_reads_a_chunk_over_arrow_flight_from_a_worker() {
    let job = JobDir::new(&JobParams::default());
    let token = job.path().join("token");
    std::fs::write(&token, "preview-token-123\n").unwrap();
    let token = token.to_str().unwrap();
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &["--token-file", token]);
    let url = coordinator.url();
    let spec = job.spec();
    client_json(
        &job,
        &[
            "submit",
            spec.to_str().unwrap(),
            "--coordinator",
            &url,
            "--token-file",
            token,
        ],
        &[],
    );
    let preview = |extra: &[&str]| {
        let mut args = vec![
            "preview",
            JOB,
            "--chunk",
            "2",
            "--limit",
            "5",
            "--coordinator",
            &url,
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        client(&job, &args, &[])
    };
    // No worker serves Flight yet: the coordinator says so.
    let out = preview(&["--token-file", token]);
    assert_eq!(out.status.code(), Some(1));
    // With --output json the error is a JSON document on stdout.
    assert!(text(&out.stdout).contains("--flight-listen"), "{}", text(&out.stdout));

    let mut w = start_worker(
        &job,
        &url,
        "flight-worker",
        &["--token-file", token, "--flight-listen", "127.0.0.1:0"],
    );
    wait_until("the job to finish", Duration::from_secs(120), || {
        job.count_committed(JOB) == 10
    });
    let out = preview(&["--token-file", token]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), w.log_text());
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 5, "{v}");
    for r in rows {
        let at = r["created_at"].as_str().expect("created_at");
        assert!(at.starts_with("2023-03-03"), "row outside chunk 2's day: {r}");
    }
    assert!(v["worker"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{v}");
    assert!(w.log_text().contains("serving a preview"), "{}", w.log_text());
    // Without the token nothing is served.
    assert_eq!(preview(&[]).status.code(), Some(1));
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait_exit(Duration::from_secs(30)).code(), Some(0));
}
