//! The coordinator's status page, rendered by headless Chromium: the DOM it builds must show
//! each chunk's attempts on the time axis, coloured by how they ended.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{Coordinator, SourceLock, client_json, start_worker, wait_for_lease_by};
use crate::util::{JobDir, JobParams};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium with `args` and `url`; returns stdout. Panics after 60 s.
fn chromium(profile: &Path, args: &[&str], url: &str) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/ensure-servers (installs the Debian chromium package)"
    );
    let out_path = profile.join("stdout");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.join("profile").display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(out_path).unwrap()
}

fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

#[test]
fn status_page_draws_attempts_on_a_time_axis_in_chromium() {
    let params = JobParams::default();
    let job = JobDir::new(&params);
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &["--lease-ttl", "2s"]);
    let url = coordinator.url();
    client_json(
        &job,
        &["submit", job.spec().to_str().unwrap(), "--coordinator", &url],
        &[],
    );
    // One worker dies holding a chunk (an expired attempt), another finishes the job.
    let mut lock = SourceLock::take(&job);
    let mut a = start_worker(&job, &url, "doomed", &[]);
    let lost = wait_for_lease_by(&job, "orders", "doomed");
    a.kill9();
    lock.release();
    let mut b = start_worker(&job, &url, "survivor", &["--job", "orders"]);
    assert!(b.wait_exit(Duration::from_secs(120)).success(), "{}", b.log_text());

    let http = coordinator.http.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dom = chromium(scratch.path(), &["--dump-dom"], &format!("http://{http}/jobs/orders"));
    assert!(dom.contains("<svg id=\"timeline\""), "no timeline in the DOM:\n{dom}");
    assert!(dom.contains("data-state=\"succeeded\""), "{dom}");
    // Every chunk committed once, and the lost lease drawn as expired on its chunk's row.
    assert_eq!(count(&dom, "class=\"attempt committed\""), 10, "{dom}");
    assert_eq!(count(&dom, "class=\"attempt expired\""), 1, "{dom}");
    assert!(
        dom.contains(&format!(
            "class=\"attempt expired\" data-chunk=\"{lost}\" data-attempt=\"1\""
        )),
        "{dom}"
    );
    assert!(
        dom.contains("on doomed#0: expired"),
        "the tooltip names the worker: {dom}"
    );
    // A legend and a time axis.
    for legend in ["committed", "expired", "failed", "running"] {
        assert!(dom.contains(&format!("data-legend=\"{legend}\"")), "{legend}");
    }
    assert!(count(&dom, "class=\"tick\"") >= 2, "{dom}");
    // No script and nothing fetched from elsewhere.
    assert!(!dom.contains("<script") && !dom.contains("https://"), "{dom}");

    // The job list links to the job; a screenshot renders without error.
    let index = chromium(scratch.path(), &["--dump-dom"], &format!("http://{http}/"));
    assert!(index.contains("href=\"/jobs/orders\""), "{index}");
    let png = scratch.path().join("page.png");
    chromium(
        scratch.path(),
        &[&format!("--screenshot={}", png.display()), "--window-size=1200,800"],
        &format!("http://{http}/jobs/orders"),
    );
    let bytes = std::fs::read(&png).expect("screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000,
        "{} bytes",
        bytes.len()
    );
    // An unknown job is a 404 page, not an error in the server.
    let (code, body) = coordinator.http_get("/jobs/nope");
    assert_eq!(code, 404, "{body}");
    assert_eq!(coordinator.http_get("/healthz").0, 200);
}
