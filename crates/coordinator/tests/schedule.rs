//! Schedules and checks in the coordinator, with an injected clock (nothing waits for real
//! minutes): a schedule fires on time, survives a restart of the coordinator's state, never
//! runs twice at once and catches up once after downtime; a stale table and a day with 10×
//! fewer rows raise alerts delivered to a webhook receiver on 127.0.0.1:0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backhaul_coordinator::alerts::CheckMonitor;
use backhaul_coordinator::clock::{Clock, ManualClock};
use backhaul_coordinator::schedule::scheduler::TickOutcome;
use backhaul_coordinator::{JobRow, Result, RetryPolicy, RunLauncher, ScheduleRow, Scheduler, StateStore, Store};
use backhaul_core::chunking::PlannedChunk;
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::proof::{ChunkProof, ProofLevel};
use tokio_util::sync::CancellationToken;

/// Records the runs it starts; `busy` says whether the last one is still going.
#[derive(Default)]
struct FakeLauncher {
    started: Mutex<Vec<(String, i64)>>,
    busy: AtomicBool,
}

#[tonic::async_trait]
impl RunLauncher for FakeLauncher {
    async fn start(&self, schedule: &ScheduleRow, now_us: i64) -> Result<String> {
        self.started.lock().unwrap().push((schedule.name.clone(), now_us));
        Ok(schedule.name.clone())
    }
    async fn running(&self, _schedule: &ScheduleRow, _run: &str) -> Result<bool> {
        Ok(self.busy.load(Ordering::SeqCst))
    }
}

impl FakeLauncher {
    fn runs(&self) -> usize {
        self.started.lock().unwrap().len()
    }
}

const HOUR_US: i64 = 3_600_000_000;

fn open(path: &std::path::Path) -> Arc<dyn StateStore> {
    Arc::new(Store::open(path).unwrap())
}

async fn add_nightly(store: &Arc<dyn StateStore>, clock: &ManualClock) -> ScheduleRow {
    let row = ScheduleRow::new(
        "nightly",
        "spec".into(),
        "/tmp".into(),
        "0 2 * * *",
        "Europe/Berlin",
        "test",
        clock.now_us(),
    )
    .unwrap();
    store.add_schedule(row.clone()).await.unwrap();
    row
}

/// Moves `clock` to `at_us` (never backwards).
fn move_to(clock: &ManualClock, at_us: i64) {
    let by = at_us - clock.now_us();
    assert!(by >= 0);
    clock.advance(Duration::from_micros(by as u64));
}

/// A nightly schedule in a fresh state, a manual clock before its first tick, and a scheduler.
struct Nightly {
    _dir: tempfile::TempDir,
    store: Arc<dyn StateStore>,
    clock: Arc<ManualClock>,
    launcher: Arc<FakeLauncher>,
    due: i64,
    scheduler: Scheduler,
}

impl Nightly {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("state.db"));
        let clock = Arc::new(ManualClock::starting_now());
        let launcher = Arc::new(FakeLauncher::default());
        let due = add_nightly(&store, &clock).await.next_tick_us().unwrap();
        let scheduler = Scheduler::new(store.clone(), launcher.clone(), clock.clone());
        Nightly {
            _dir: dir,
            store,
            clock,
            launcher,
            due,
            scheduler,
        }
    }
}

#[tokio::test]
async fn a_schedule_fires_on_time_once_and_never_beside_a_running_run() {
    let Nightly {
        _dir,
        store,
        clock,
        launcher,
        due,
        scheduler,
    } = Nightly::new().await;

    move_to(&clock, due - 1);
    let early = scheduler.tick().await.unwrap();
    assert_eq!(early.started, vec![]);
    assert_eq!(early.next_due_us, Some(due), "the loop sleeps until the tick");

    move_to(&clock, due);
    let on_time = scheduler.tick().await.unwrap();
    assert_eq!(on_time.started, vec![("nightly".to_string(), "nightly".to_string())]);
    assert_eq!(scheduler.tick().await.unwrap().started, vec![], "one run per tick");

    // The next night's tick finds the run still going: skipped and recorded.
    launcher.busy.store(true, Ordering::SeqCst);
    move_to(&clock, due + 24 * HOUR_US);
    let busy = scheduler.tick().await.unwrap();
    assert_eq!(
        (busy.started.len(), busy.skipped.clone()),
        (0, vec!["nightly".to_string()])
    );
    assert_eq!(store.schedule("nightly").await.unwrap().skipped_ticks, 1);
    // A run-now request waits for the running run instead of starting beside it.
    store.request_run("nightly").await.unwrap();
    assert_eq!(
        scheduler.tick().await.unwrap(),
        TickOutcome {
            next_due_us: Some(due + 48 * HOUR_US),
            ..TickOutcome::default()
        }
    );
    launcher.busy.store(false, Ordering::SeqCst);
    assert_eq!(
        scheduler.tick().await.unwrap().started.len(),
        1,
        "run-now once the run ended"
    );
    assert_eq!(launcher.runs(), 2);
}

#[tokio::test]
async fn a_schedule_survives_a_restart_and_catches_up_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = Arc::new(ManualClock::starting_now());
    let launcher = Arc::new(FakeLauncher::default());
    let due = {
        let store = open(&path);
        let due = add_nightly(&store, &clock).await.next_tick_us().unwrap();
        move_to(&clock, due);
        let scheduler = Scheduler::new(store.clone(), launcher.clone(), clock.clone());
        assert_eq!(scheduler.tick().await.unwrap().started.len(), 1);
        due
    };
    // The coordinator is down for three nights and a bit.
    move_to(&clock, due + 3 * 24 * HOUR_US + HOUR_US);
    let store = open(&path);
    let back = store.schedule("nightly").await.unwrap();
    assert_eq!(back.last_fired_us, Some(due), "the state kept the last run");
    let scheduler = Scheduler::new(store.clone(), launcher.clone(), clock.clone());
    let caught_up = scheduler.tick().await.unwrap();
    assert_eq!(caught_up.started.len(), 1, "three missed ticks make one run");
    assert_eq!(scheduler.tick().await.unwrap().started.len(), 0);
    assert_eq!(
        caught_up.next_due_us,
        Some(due + 4 * 24 * HOUR_US),
        "then the regular schedule again"
    );
    assert_eq!(launcher.runs(), 2);
}

#[tokio::test]
async fn a_paused_schedule_does_not_fire_and_resuming_skips_the_missed_ticks() {
    let Nightly {
        _dir,
        store,
        clock,
        launcher,
        due,
        scheduler,
    } = Nightly::new().await;
    store
        .set_schedule_paused("nightly", true, clock.now_us())
        .await
        .unwrap();
    move_to(&clock, due + 2 * 24 * HOUR_US);
    assert_eq!(scheduler.tick().await.unwrap().next_due_us, None);
    store
        .set_schedule_paused("nightly", false, clock.now_us())
        .await
        .unwrap();
    let resumed = scheduler.tick().await.unwrap();
    assert_eq!(resumed.started.len(), 0);
    assert_eq!(resumed.next_due_us, Some(due + 3 * 24 * HOUR_US));
    assert_eq!(launcher.runs(), 0);
}

/// A clock that follows tokio's (paused) time from the wall time of its creation.
struct TokioClock {
    start_us: i64,
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now_us(&self) -> i64 {
        self.start_us + self.start.elapsed().as_micros() as i64
    }
}

#[tokio::test(start_paused = true)]
async fn the_loop_wakes_at_the_due_tick() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("state.db"));
    let clock = Arc::new(TokioClock {
        start_us: chrono::Utc::now().timestamp_micros(),
        start: tokio::time::Instant::now(),
    });
    let row = ScheduleRow::new(
        "nightly",
        "spec".into(),
        "/tmp".into(),
        "*/5 * * * *",
        "UTC",
        "t",
        clock.now_us(),
    )
    .unwrap();
    let due = row.next_tick_us().unwrap();
    store.add_schedule(row).await.unwrap();
    let launcher = Arc::new(FakeLauncher::default());
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(Scheduler::new(store.clone(), launcher.clone(), clock.clone()).run(cancel.clone()));
    // Paused time jumps to each sleep's end; the SQLite writer thread answers in real time.
    let waited = Duration::from_micros((due - clock.now_us()) as u64) + Duration::from_secs(1);
    tokio::time::sleep(waited).await;
    for _ in 0..200 {
        if launcher.runs() > 0 {
            break;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = launcher.started.lock().unwrap().clone();
    assert_eq!(started.len(), 1, "{started:?}");
    assert!(
        started[0].1 >= due && started[0].1 < due + 60_000_000,
        "started on time"
    );
    cancel.cancel();
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
}

// --- checks and alerts ---

const DAY_US: i64 = 24 * HOUR_US;

fn spec_with_checks(name: &str) -> String {
    format!(
        r#"version = 1
name = "{name}"
[source]
kind = "embedded"
path = "source.db"
cursor = "created_at"
[range]
from = "2026-01-01"
to = "2026-02-10"
[stage]
path = "stage"
[destination]
kind = "local"
path = "warehouse"
table = "{name}"
[checks]
freshness_sla = "25h"
webhook_url_env = "TEST_WEBHOOK"
"#
    )
}

/// A job of one chunk per day from `first_day_us`, with `rows(day)` rows each, all committed.
async fn loaded_job(store: &Arc<dyn StateStore>, name: &str, first_day_us: i64, rows: &[u64]) {
    let end = first_day_us + rows.len() as i64 * DAY_US;
    let job = JobRow {
        job_id: name.into(),
        spec_toml: spec_with_checks(name),
        base_dir: "/tmp".into(),
        cursor_kind: CursorKind::Timestamp,
        range: CursorRange::new(first_day_us, end),
        created_at_us: 1,
        cancelled_at_us: None,
        synced_at_us: None,
    };
    let planned = (0..rows.len())
        .map(|i| PlannedChunk {
            index: i as u64,
            range: CursorRange::new(first_day_us + i as i64 * DAY_US, first_day_us + (i as i64 + 1) * DAY_US),
            estimated_rows: 1000,
            estimated_bytes: 1,
        })
        .collect();
    store.submit(job, planned).await.unwrap();
    for &n in rows {
        let lease = store
            .lease("w", Some(name), 60_000, &RetryPolicy::default())
            .await
            .unwrap()
            .unwrap();
        let evidence = backhaul_core::proof::ChunkEvidence {
            summary: backhaul_core::checksum::RowSummary { rows: n, checksum: 7 },
            fingerprint: backhaul_core::fingerprint::ChunkFingerprint {
                rows: n,
                columns: vec![],
            },
        };
        let proof = ChunkProof::from_evidence(ProofLevel::ExactChecksum, &evidence);
        store.complete(&lease.lease_id, vec![], evidence, proof).await.unwrap();
    }
}

/// A webhook receiver on 127.0.0.1:0 that answers 503 to its first call (to be retried) and
/// keeps the JSON bodies of the others.
async fn receiver(tasks: &mut tokio::task::JoinSet<()>) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (kept, counted) = (got.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let (kept, counted) = (kept.clone(), counted.clone());
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                kept.lock().unwrap().push(serde_json::from_str(&body).unwrap());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tasks.spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, got)
}

#[tokio::test]
async fn a_stale_table_and_a_day_with_ten_times_fewer_rows_alert_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("state.db"));
    let day0 = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .timestamp_micros();
    // 30 regular days; "dip" has a last day of a tenth, "stale" stopped two days earlier.
    let regular: Vec<u64> = (0..30).map(|i| 1000 + (i % 7) * 15).collect();
    let mut dip = regular.clone();
    dip.push(100);
    loaded_job(&store, "dip", day0, &dip).await;
    loaded_job(&store, "stale", day0, &regular[..29]).await;
    // An hour after "dip"'s last day ended; "stale" ended two days and an hour ago.
    let now = day0 + 31 * DAY_US + HOUR_US;
    let mut tasks = tokio::task::JoinSet::new();
    let (url, got) = receiver(&mut tasks).await;
    let env_url = url.clone();
    let metrics = Arc::new(backhaul_coordinator::CoordinatorMetrics::default());
    let monitor = CheckMonitor::with_env(
        store.clone(),
        Arc::new(FixedClock(now)),
        Arc::new(move |var| (var == "TEST_WEBHOOK").then(|| env_url.clone())),
    )
    .with_metrics(metrics.clone());
    let results = monitor.tick().await.unwrap();
    let by = |job: &str| results.iter().find(|r| r.job_id == job).unwrap().clone();
    assert!(by("dip").freshness.as_ref().unwrap().ok);
    assert!(matches!(
        by("dip").volume.unwrap().verdict,
        backhaul_coordinator::checks::Volume::Anomaly { .. }
    ));
    assert!(!by("stale").freshness.as_ref().unwrap().ok);
    assert!(matches!(
        by("stale").volume.unwrap().verdict,
        backhaul_coordinator::checks::Volume::Normal { .. }
    ));

    let payloads = got.lock().unwrap().clone();
    assert_eq!(
        payloads.len(),
        2,
        "one alert per job (the first call was retried): {payloads:?}"
    );
    let text_of = |job: &str| {
        payloads
            .iter()
            .map(|p| p["text"].as_str().unwrap().to_string())
            .find(|t| t.contains(&format!("`{job}`")))
            .unwrap()
    };
    assert!(text_of("dip").contains("ANOMALY: 100 rows"), "{}", text_of("dip"));
    assert!(text_of("stale").contains("STALE"), "{}", text_of("stale"));
    assert!(
        payloads
            .iter()
            .all(|p| p["blocks"].as_array().is_some_and(|b| b.len() >= 2))
    );

    // The results reach /metrics and the status page.
    let exposition = metrics.render(store.as_ref(), &[]).await.unwrap();
    for line in [
        r#"backhaul_coordinator_check_ok{job="dip",check="volume"} 0"#,
        r#"backhaul_coordinator_check_ok{job="dip",check="freshness"} 1"#,
        r#"backhaul_coordinator_check_ok{job="stale",check="freshness"} 0"#,
        r#"backhaul_coordinator_volume_day_rows{job="dip"} 100"#,
    ] {
        assert!(exposition.contains(line), "{line} missing from:\n{exposition}");
    }
    let section = backhaul_coordinator::page::checks_section(&metrics.checks());
    assert!(
        section.contains("ANOMALY: 100 rows") && section.contains("STALE"),
        "{section}"
    );
    assert!(
        !exposition.contains(&url) && !section.contains(&url),
        "the webhook URL is a secret"
    );

    // Same state at the next look: no new alert.
    monitor.tick().await.unwrap();
    assert_eq!(got.lock().unwrap().len(), 2);
    tasks.abort_all();
}

/// A clock standing still.
struct FixedClock(i64);

impl Clock for FixedClock {
    fn now_us(&self) -> i64 {
        self.0
    }
}

// --- pipelines ---

/// A job of one pending chunk.
async fn pending_job(store: &Arc<dyn StateStore>, name: &str) {
    let job = JobRow {
        job_id: name.into(),
        spec_toml: spec_with_checks(name),
        base_dir: "/tmp".into(),
        cursor_kind: CursorKind::Timestamp,
        range: CursorRange::new(0, DAY_US),
        created_at_us: 1,
        cancelled_at_us: None,
        synced_at_us: None,
    };
    let planned = vec![PlannedChunk {
        index: 0,
        range: CursorRange::new(0, DAY_US),
        estimated_rows: 1,
        estimated_bytes: 1,
    }];
    store.submit(job, planned).await.unwrap();
}

/// A pipeline's scheduled run goes on while any of its tables' jobs (`<pipeline>-…`) has
/// chunks to load, whichever run planned them: at most one run of a pipeline at a time.
#[tokio::test]
async fn a_pipeline_run_goes_on_while_any_table_has_chunks_to_load() {
    use backhaul_coordinator::SubmitLauncher;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("state.db"));
    let launcher = SubmitLauncher::new(store.clone(), Arc::new(backhaul_core::registry::Registry::new()));
    let pipeline = "version = 1\n\n[pipeline]\nname = \"shop\"\n".to_string();
    let row = ScheduleRow::new("shop", pipeline, "/tmp".into(), "0 2 * * *", "UTC", "t", 0).unwrap();
    assert!(!launcher.running(&row, "shop").await.unwrap(), "no job yet");
    loaded_job(&store, "shop-orders", DAY_US, &[5, 5]).await;
    assert!(!launcher.running(&row, "shop").await.unwrap(), "every chunk committed");
    pending_job(&store, "shopping").await;
    assert!(
        !launcher.running(&row, "shop").await.unwrap(),
        "another job's chunks do not count"
    );
    pending_job(&store, "shop-items").await;
    assert!(launcher.running(&row, "shop").await.unwrap());
    store.cancel("shop-items").await.unwrap();
    assert!(
        !launcher.running(&row, "shop").await.unwrap(),
        "a cancelled job is done"
    );
}
