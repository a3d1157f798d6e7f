//! The HTML report renders in a real browser: headless Chromium (Debian package `chromium`,
//! installed by scripts/ensure-servers) loads the page offline, the page's own script checks
//! that every bar of the chart was laid out, and no script error is logged.
//!
//! Set `BACKHAUL_CHROMIUM` to use another binary; `BACKHAUL_SKIP_CHROMIUM=1` skips the test
//! explicitly (it never skips silently).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backhaul_cost::config::CostConfig;
use backhaul_cost::estimate::{EstimateInput, estimate};
use backhaul_cost::prices::PriceBook;
use backhaul_cost::profile::Profile;
use backhaul_cost::report::to_html;
use chrono::NaiveDate;

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BACKHAUL_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn the_html_report_renders_its_chart_in_headless_chromium() {
    if std::env::var_os("BACKHAUL_SKIP_CHROMIUM").is_some() {
        eprintln!("BACKHAUL_SKIP_CHROMIUM is set: not checking the HTML report in a browser");
        return;
    }
    let Some(browser) = chromium() else {
        panic!(
            "chromium not found: run scripts/ensure-servers (apt-get install chromium), or set BACKHAUL_SKIP_CHROMIUM=1"
        );
    };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let profile = Profile::load(&fixtures.join("profile.toml")).unwrap();
    let config = CostConfig::load(&fixtures.join("cost.toml")).unwrap();
    let book = PriceBook::builtin().unwrap();
    let report = estimate(&EstimateInput {
        profile: &profile,
        book: &book,
        config: &config,
        as_of: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
        strict: false,
    })
    .unwrap();
    let html = to_html(&report);
    // Self-contained: nothing is fetched from anywhere.
    assert!(!html.contains("<script src") && !html.contains("<link") && !html.contains("@import"));

    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html).unwrap();
    let mut child = Command::new(&browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("chromium-profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .env("DBUS_SESSION_BUS_ADDRESS", "disabled:")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", browser.display()));
    // Read both pipes on threads so a full pipe never blocks the browser.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dom = out.join().unwrap();
    let log = err.join().unwrap();
    assert!(status.success(), "chromium failed: {status}\n{log}");

    let bars = 2 * report.options.len();
    assert!(dom.contains("<svg id=\"chart\""), "no chart in the DOM:\n{dom}");
    assert_eq!(dom.matches("<rect class=\"bar ").count(), bars);
    assert!(
        dom.contains("data-chart=\"rendered\""),
        "the page did not mark its chart rendered: {}",
        dom.lines().find(|l| l.contains("<body")).unwrap_or("<no body>")
    );
    assert!(dom.contains(&format!("data-bars=\"{bars}\"")));
    let script_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error")))
        .collect();
    assert!(script_errors.is_empty(), "script errors: {script_errors:#?}");
}
