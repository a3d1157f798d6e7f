//! `backhaul schedule` against a real coordinator process: bad cron and zone are refused naming
//! the field, adding is idempotent, pause/resume/run-now/remove change the stored schedule, and
//! run-now makes the coordinator submit the job itself. `status --check` exits 5 on a stale job.

use std::time::Duration;

use crate::cluster::{Coordinator, client, client_json, wait_until};
use crate::util::{JobDir, JobParams, text};

#[test]
fn schedules_are_managed_through_the_coordinator_which_starts_the_runs() {
    let job = JobDir::new(&JobParams::default());
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &[]);
    let url = coordinator.url();
    let spec = job.spec();
    let spec = spec.to_str().unwrap();

    let bad = client(
        &job,
        &["schedule", "add", spec, "--cron", "0 25 * * *", "--coordinator", &url],
        &[],
    );
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(err.contains("cron") && err.contains("hour field `25`"), "{err}");
    let bad = client(
        &job,
        &[
            "schedule",
            "add",
            spec,
            "--cron",
            "0 2 * * *",
            "--tz",
            "Europe/Atlantis",
            "--coordinator",
            &url,
        ],
        &[],
    );
    assert!(text(&bad.stderr).contains("time_zone"), "{}", text(&bad.stderr));

    let add = [
        "schedule",
        "add",
        spec,
        "--cron",
        "0 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--coordinator",
        &url,
    ];
    let added = client_json(&job, &add, &[]);
    assert_eq!(
        (added["outcome"].as_str(), added["name"].as_str()),
        (Some("added"), Some("orders")),
        "{added}"
    );
    assert!(added["next_tick"].is_string(), "{added}");
    assert_eq!(client_json(&job, &add, &[])["outcome"], "unchanged");

    let paused = client_json(&job, &["schedule", "pause", "orders", "--coordinator", &url], &[]);
    assert_eq!(paused["paused"], true, "{paused}");
    let listed = client_json(&job, &["schedule", "list", "--coordinator", &url], &[]);
    assert_eq!(listed["schedules"][0]["name"], "orders", "{listed}");

    // run-now starts a run even while paused: the coordinator submits the job itself.
    client_json(&job, &["schedule", "run-now", "orders", "--coordinator", &url], &[]);
    wait_until("the scheduled run is submitted", Duration::from_secs(60), || {
        client(&job, &["status", "orders", "--coordinator", &url], &[])
            .status
            .success()
    });
    let after = client_json(&job, &["schedule", "list", "--coordinator", &url], &[]);
    assert_eq!(after["schedules"][0]["last_run_job"], "orders", "{after}");
    assert_eq!(after["schedules"][0]["run_requested"], false, "{after}");

    let resumed = client_json(&job, &["schedule", "resume", "orders", "--coordinator", &url], &[]);
    assert_eq!(resumed["paused"], false, "{resumed}");
    client_json(&job, &["schedule", "remove", "orders", "--coordinator", &url], &[]);
    let gone = client(&job, &["schedule", "pause", "orders", "--coordinator", &url], &[]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        text(&gone.stderr).contains("no schedule `orders`"),
        "{}",
        text(&gone.stderr)
    );
}

#[test]
fn status_check_exits_5_when_a_job_is_stale() {
    let params = JobParams::default();
    let job = JobDir::new(&params);
    let mut spec = std::fs::read_to_string(job.spec()).unwrap();
    spec.push_str("\n[checks]\nfreshness_sla = \"25h\"\n");
    std::fs::write(job.spec(), spec).unwrap();
    job.ok(&["backfill", job.spec().to_str().unwrap(), "--workers", "2"]);
    // The demo range ended long ago: stale.
    let out = job.run(&["status", "--check", "--output", "json"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["failed"], 1, "{v}");
    assert_eq!(v["checks"][0]["job_id"], "orders", "{v}");
    assert_eq!(v["checks"][0]["freshness"]["ok"], false, "{v}");
    let plain = job.run(&["status", "orders", "--check"]);
    assert_eq!(plain.status.code(), Some(5));
    assert!(text(&plain.stdout).contains("STALE"), "{}", text(&plain.stdout));
}
