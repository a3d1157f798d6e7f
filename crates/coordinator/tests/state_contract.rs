//! The state store contract, run against both backends through the [`StateStore`] trait: the
//! embedded SQLite store in a temporary directory and PostgreSQL in a fresh database of the
//! testkit's private server. Each rule is one function; `contract!` runs it on both. Both
//! stores read a [`ManualClock`]: rules about lease expiry and backoff move it instead of
//! sleeping.
//!
//! PostgreSQL-only rules follow: one serving coordinator per database, a lost serving lock
//! stops state changes, the password is never shown, and the schema matches SQLite's.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backhaul_coordinator::clock::ManualClock;
use backhaul_coordinator::split::SplitOutcome;
use backhaul_coordinator::store::{Failure, Lease, NoLease};
use backhaul_coordinator::{
    ChunkState, CoordinatorError, Extension, JobRow, PgStore, RetryPolicy, ScheduleRow, StateStore, Store, Submitted,
};
use backhaul_core::ErrorClass;
use backhaul_core::checksum::RowSummary;
use backhaul_core::chunking::PlannedChunk;
use backhaul_core::connector::{ExtractFacts, StagedFile};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::fingerprint::{ChunkFingerprint, ColumnFingerprint, ColumnMeasure};
use backhaul_core::proof::{ChunkEvidence, ChunkProof, ProofLevel};
use backhaul_testkit::postgres::PostgresServer;

/// A store and whatever must live as long as it.
struct Opened {
    store: Arc<dyn StateStore>,
    clock: Arc<ManualClock>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_exclusive(&dir.path().join("state.db")).unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    store.set_clock(clock.clone());
    Opened {
        store: Arc::new(store),
        clock,
        _dir: Some(dir),
    }
}

/// A URL for a fresh database on the shared server, without the password (given separately).
fn fresh_postgres_url() -> String {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    format!("postgres://{}@{}:{}/{db}", server.user(), server.host(), server.port())
}

fn password() -> Option<String> {
    Some(PostgresServer::shared().password().to_string())
}

async fn postgres() -> Opened {
    let url = fresh_postgres_url();
    let clock = Arc::new(ManualClock::starting_now());
    let store = PgStore::open_serving(&url, password()).await.unwrap();
    Opened {
        store: Arc::new(store.with_clock(clock.clone())),
        clock,
        _dir: None,
    }
}

/// Runs every rule against both backends: `timed` rules also get the stores' clock.
macro_rules! contract {
    ($($rule:ident),* $(,)?; timed: $($timed:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $rule() {
                    let opened = super::sqlite().await;
                    super::$rule(opened.store.clone()).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $timed() {
                    let opened = super::sqlite().await;
                    super::$timed(opened.store.clone(), opened.clock.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $rule() {
                    let opened = super::postgres().await;
                    super::$rule(opened.store.clone()).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $timed() {
                    let opened = super::postgres().await;
                    super::$timed(opened.store.clone(), opened.clock.clone()).await;
                }
            )*
        }
    };
}

contract!(
    mismatching_output_is_refused,
    proofs_are_checked_at_their_level_and_stored,
    permanent_failure_parks_at_once,
    release_does_not_count_a_failure,
    cancel_stops_every_open_chunk,
    submit_accepts_the_same_spec_and_refuses_a_changed_one,
    extending_a_job_appends_chunks_and_moves_the_mark,
    summary_progress_and_attempts_tell_the_history,
    leases_follow_plan_order_and_a_finished_job_has_none,
    concurrent_leasers_never_share_a_chunk,
    schedules_are_kept_paused_fired_and_removed,
    dead_letters_are_kept_with_the_completion;
    timed:
    stale_lease_is_refused_after_re_lease,
    expired_but_not_re_leased_completion_is_accepted,
    transient_failures_back_off_then_park,
    expired_leases_count_as_lost_workers_until_the_chunk_parks,
    a_late_report_of_an_expired_attempt_counts_once,
    a_running_chunk_splits_once_for_its_current_lease,
);

const EV: ChunkEvidence = ChunkEvidence {
    summary: RowSummary { rows: 10, checksum: 42 },
    fingerprint: ChunkFingerprint {
        rows: 10,
        columns: Vec::new(),
    },
};
const PROOF: ChunkProof = ChunkProof {
    level: ProofLevel::ExactChecksum,
    rows: 10,
    checksum: Some(42),
    fingerprint: None,
};

fn planned(job_id: &str, chunks: u64) -> (JobRow, Vec<PlannedChunk>) {
    let job = JobRow {
        job_id: job_id.into(),
        spec_toml: format!("spec of {job_id}"),
        base_dir: "/tmp".into(),
        cursor_kind: CursorKind::Integer,
        range: CursorRange::new(0, chunks as i64 * 10),
        created_at_us: 1,
        cancelled_at_us: None,
        synced_at_us: None,
    };
    let planned = (0..chunks)
        .map(|i| PlannedChunk {
            index: i,
            range: CursorRange::new(i as i64 * 10, (i as i64 + 1) * 10),
            estimated_rows: 10,
            estimated_bytes: 100,
        })
        .collect();
    (job, planned)
}

async fn submit(store: &Arc<dyn StateStore>, job_id: &str, chunks: u64) {
    let (job, planned) = planned(job_id, chunks);
    assert_eq!(store.submit(job, planned).await.unwrap(), Submitted::Created);
}

async fn lease(store: &Arc<dyn StateStore>, job: &str, ttl_ms: u32) -> Lease {
    lease_under(store, job, ttl_ms, &RetryPolicy::default()).await
}

/// A lease whose call counts expired leases under `policy`.
async fn lease_under(store: &Arc<dyn StateStore>, job: &str, ttl_ms: u32, policy: &RetryPolicy) -> Lease {
    match store.lease("w", Some(job), ttl_ms, policy).await.unwrap() {
        Ok(lease) => lease,
        Err(no) => panic!("no lease: {no:?}"),
    }
}

/// Longer than any backoff of the default policy after a few failures.
const PAST_BACKOFF: Duration = Duration::from_secs(60);

async fn assert_finished(store: &Arc<dyn StateStore>, job: &str) {
    let answer = store
        .lease("w", Some(job), 1000, &RetryPolicy::default())
        .await
        .unwrap();
    assert!(matches!(answer, Err(NoLease::Finished)), "{answer:?}");
}

fn failure(class: ErrorClass, kind: &str) -> Failure {
    Failure {
        class,
        kind: kind.into(),
        message: format!("{kind} happened"),
    }
}

fn is_stale(e: &CoordinatorError) -> bool {
    matches!(e, CoordinatorError::StaleLease { .. })
}

async fn stale_lease_is_refused_after_re_lease(store: Arc<dyn StateStore>, clock: Arc<ManualClock>) {
    submit(&store, "j", 1).await;
    let first = lease(&store, "j", 1).await;
    clock.advance(Duration::from_millis(5));
    // The expiry counts as a failure: the chunk waits out a backoff, then goes to a second
    // worker with attempt 2.
    let waiting = store
        .lease("w", Some("j"), 60_000, &RetryPolicy::default())
        .await
        .unwrap();
    assert!(matches!(waiting, Err(NoLease::RetryAfterMs(_))), "{waiting:?}");
    clock.advance(PAST_BACKOFF);
    let second = lease(&store, "j", 60_000).await;
    assert_eq!((first.chunk.attempt, second.chunk.attempt), (1, 2));
    let err = store.complete(&first.lease_id, vec![], EV, PROOF).await.unwrap_err();
    assert!(is_stale(&err), "{err}");
    assert!(is_stale(&store.heartbeat(&first.lease_id, 1000).await.unwrap_err()));
    assert!(is_stale(&store.progress(&first.lease_id, 1, 1).await.unwrap_err()));
    store.heartbeat(&second.lease_id, 60_000).await.unwrap();
    store.complete(&second.lease_id, vec![], EV, PROOF).await.unwrap();
    // A retried completion of the committing attempt is acknowledged; the stale one stays
    // refused, and nobody can fail or release the committed chunk.
    store.complete(&second.lease_id, vec![], EV, PROOF).await.unwrap();
    assert!(store.complete(&first.lease_id, vec![], EV, PROOF).await.is_err());
    let late = failure(ErrorClass::Transient, "late");
    assert!(
        store
            .fail(&second.lease_id, late, RetryPolicy::default())
            .await
            .is_err()
    );
    assert!(store.release(&second.lease_id).await.is_err());
    assert!(is_stale(&store.heartbeat("garbage", 1).await.unwrap_err()));
    let s = store.summary("j").await.unwrap();
    assert_eq!((s.committed, s.committed_rows), (1, 10));
    assert_finished(&store, "j").await;
}

async fn dead_letters_are_kept_with_the_completion(store: Arc<dyn StateStore>) {
    submit(&store, "j", 3).await;
    let a = lease(&store, "j", 60_000).await;
    let b = lease(&store, "j", 60_000).await;
    let c = lease(&store, "j", 60_000).await;
    let facts = |dead_letters| ExtractFacts { dead_letters };
    store
        .complete_with_facts(&a.lease_id, vec![], EV, PROOF, facts(3))
        .await
        .unwrap();
    store.complete(&b.lease_id, vec![], EV, PROOF).await.unwrap();
    let refused = store
        .complete_with_facts(&c.lease_id, vec![], EV, ChunkProof { rows: 9, ..PROOF }, facts(5))
        .await;
    assert!(refused.is_err());
    let dead: Vec<u64> = store
        .chunks("j")
        .await
        .unwrap()
        .iter()
        .map(|c| c.dead_letters)
        .collect();
    assert_eq!(dead, [3, 0, 0], "a refused completion stores nothing");
    assert_eq!(store.summary("j").await.unwrap().dead_letters, 3);
    let listed = store.jobs().await.unwrap();
    assert_eq!(listed[0].1.dead_letters, 3);
}

async fn expired_but_not_re_leased_completion_is_accepted(store: Arc<dyn StateStore>, clock: Arc<ManualClock>) {
    submit(&store, "j", 2).await;
    let first = lease(&store, "j", 1).await;
    clock.advance(Duration::from_millis(5));
    // A lease call for another job expires the first lease without re-leasing its chunk.
    assert_finished(&store, "other").await;
    assert_eq!(store.chunks("j").await.unwrap()[0].state, ChunkState::Pending);
    // It may not heartbeat any more, but its result is as good as any.
    assert!(store.heartbeat(&first.lease_id, 1000).await.is_err());
    let file = StagedFile {
        path: "j/chunk-0/attempt-1/part-0.parquet".into(),
        bytes: 123,
        rows: 10,
        xxh3: None,
    };
    store.complete(&first.lease_id, vec![file], EV, PROOF).await.unwrap();
    let chunk = &store.chunks("j").await.unwrap()[0];
    assert_eq!(chunk.state, ChunkState::Committed);
    assert_eq!(
        (chunk.committed.clone(), chunk.committed_bytes),
        (Some(PROOF), Some(123))
    );
    assert_eq!(chunk.last_error, None, "the commit clears the lost worker");
    let outcomes: Vec<_> = store
        .attempts("j")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, vec![Some("committed".to_string())]);
}

async fn mismatching_output_is_refused(store: Arc<dyn StateStore>) {
    submit(&store, "j", 1).await;
    let l = lease(&store, "j", 60_000).await;
    let bad = ChunkProof { rows: 9, ..PROOF };
    let err = store.complete(&l.lease_id, vec![], EV, bad).await.unwrap_err();
    assert!(
        matches!(
            err,
            CoordinatorError::Core(backhaul_core::Error::VerificationFailed { .. })
        ),
        "{err}"
    );
    let chunk = &store.chunks("j").await.unwrap()[0];
    assert_eq!((chunk.state, chunk.committed.clone()), (ChunkState::Leased, None));
    // The holder may still report the failure.
    let verification = failure(ErrorClass::Permanent, "verification");
    assert!(
        !store
            .fail(&l.lease_id, verification, RetryPolicy::default())
            .await
            .unwrap()
    );
}

async fn transient_failures_back_off_then_park(store: Arc<dyn StateStore>, clock: Arc<ManualClock>) {
    submit(&store, "j", 1).await;
    // A long backoff keeps the chunk from being leased at once.
    let l = lease(&store, "j", 60_000).await;
    let slow = RetryPolicy {
        transient_base: Duration::from_secs(60),
        ..RetryPolicy::default()
    };
    assert!(
        store
            .fail(&l.lease_id, failure(ErrorClass::Transient, "reset"), slow.clone())
            .await
            .unwrap()
    );
    assert!(matches!(
        store.lease("w", Some("j"), 1000, &slow).await.unwrap(),
        Err(NoLease::RetryAfterMs(_))
    ));
    let chunk = &store.chunks("j").await.unwrap()[0];
    assert_eq!((chunk.state, chunk.failures), (ChunkState::Pending, 1));
    store.cancel("j").await.unwrap();

    submit(&store, "k", 1).await;
    let quick = RetryPolicy {
        max_attempts: 3,
        transient_base: Duration::from_millis(1),
        throttled_base: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    };
    for (expected_retry, class) in [
        (true, ErrorClass::Transient),
        (true, ErrorClass::Throttled),
        (false, ErrorClass::Transient),
    ] {
        clock.advance(Duration::from_millis(5));
        let l = lease(&store, "k", 60_000).await;
        let retried = store
            .fail(&l.lease_id, failure(class, "unreachable"), quick.clone())
            .await
            .unwrap();
        assert_eq!(retried, expected_retry);
    }
    let chunk = &store.chunks("k").await.unwrap()[0];
    assert_eq!((chunk.state, chunk.failures, chunk.attempt), (ChunkState::Parked, 3, 3));
    let (class, kind, message) = chunk.last_error.clone().unwrap();
    assert_eq!(
        (class.as_str(), kind.as_str(), message.as_str()),
        ("transient", "unreachable", "unreachable happened")
    );
    assert_finished(&store, "k").await;
}

/// A chunk whose worker dies every time (out of memory, a crashing decoder) is not leased
/// forever: each expired lease counts as a transient `worker_lost` failure with its backoff,
/// and `max_attempts` of them park the chunk with the reason.
async fn expired_leases_count_as_lost_workers_until_the_chunk_parks(
    store: Arc<dyn StateStore>,
    clock: Arc<ManualClock>,
) {
    submit(&store, "j", 1).await;
    let policy = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    let mut last = None;
    for lost in 1..=3u32 {
        let l = lease_under(&store, "j", 1_000, &policy).await;
        assert_eq!(l.chunk.attempt, lost);
        // The worker dies: no heartbeat, no report. The next lease call finds the lease ran out.
        clock.advance(Duration::from_millis(1_001));
        let answer = store.lease("w", Some("j"), 1_000, &policy).await.unwrap();
        let chunk = store.chunks("j").await.unwrap()[0].clone();
        assert_eq!(chunk.failures, lost);
        let (class, kind, message) = chunk.last_error.clone().expect("the expiry is the last error");
        assert_eq!((class.as_str(), kind.as_str()), ("transient", "worker_lost"));
        let times = if lost == 1 { "time" } else { "times" };
        assert!(message.starts_with(&format!("worker lost {lost} {times}")), "{message}");
        if lost < 3 {
            assert_eq!(chunk.state, ChunkState::Pending);
            assert!(matches!(answer, Err(NoLease::RetryAfterMs(_))), "backs off: {answer:?}");
            clock.advance(PAST_BACKOFF);
        } else {
            assert_eq!(chunk.state, ChunkState::Parked);
            assert!(matches!(answer, Err(NoLease::Finished)), "{answer:?}");
        }
        last = Some(l);
    }
    // The last lost worker cannot commit the parked chunk; a person replays it.
    let late = store.complete(&last.unwrap().lease_id, vec![], EV, PROOF).await;
    assert!(is_stale(&late.unwrap_err()));
    let s = store.summary("j").await.unwrap();
    assert_eq!((s.parked, s.failures), (1, 3));
    let history: Vec<_> = store
        .attempts("j")
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.attempt, a.outcome, a.error_class))
        .collect();
    let expired = |attempt| (attempt, Some("expired".to_string()), Some("transient".to_string()));
    assert_eq!(history, vec![expired(1), expired(2), expired(3)]);
}

/// A worker whose lease expired may still report how its attempt ended: a failure replaces
/// the lost-worker error but is not counted twice.
async fn a_late_report_of_an_expired_attempt_counts_once(store: Arc<dyn StateStore>, clock: Arc<ManualClock>) {
    submit(&store, "j", 1).await;
    let l = lease(&store, "j", 1_000).await;
    clock.advance(Duration::from_millis(1_001));
    assert_finished(&store, "other").await;
    let chunk = store.chunks("j").await.unwrap()[0].clone();
    assert_eq!((chunk.state, chunk.failures), (ChunkState::Pending, 1));
    let reset = failure(ErrorClass::Transient, "reset");
    assert!(store.fail(&l.lease_id, reset, RetryPolicy::default()).await.unwrap());
    let chunk = store.chunks("j").await.unwrap()[0].clone();
    assert_eq!((chunk.state, chunk.failures), (ChunkState::Pending, 1));
    assert_eq!(chunk.last_error.unwrap().1, "reset");
    clock.advance(PAST_BACKOFF);
    assert_eq!(lease(&store, "j", 1_000).await.chunk.attempt, 2);
}

async fn permanent_failure_parks_at_once(store: Arc<dyn StateStore>) {
    submit(&store, "j", 3).await;
    let l = lease(&store, "j", 60_000).await;
    let config = failure(ErrorClass::Permanent, "config");
    assert!(!store.fail(&l.lease_id, config, RetryPolicy::default()).await.unwrap());
    let s = store.summary("j").await.unwrap();
    assert_eq!((s.parked, s.pending, s.failures), (1, 2, 1));
    // A second report of the same failure is refused: the chunk is parked.
    let again = failure(ErrorClass::Permanent, "config");
    assert!(is_stale(
        &store
            .fail(&l.lease_id, again, RetryPolicy::default())
            .await
            .unwrap_err()
    ));
}

async fn release_does_not_count_a_failure(store: Arc<dyn StateStore>) {
    submit(&store, "j", 1).await;
    for _ in 0..10 {
        let l = lease(&store, "j", 60_000).await;
        store.release(&l.lease_id).await.unwrap();
        assert!(
            store.release(&l.lease_id).await.is_ok(),
            "a second release of the same attempt is harmless"
        );
    }
    let chunk = &store.chunks("j").await.unwrap()[0];
    assert_eq!(
        (chunk.state, chunk.failures, chunk.attempt),
        (ChunkState::Pending, 0, 10)
    );
    let attempts = store.attempts("j").await.unwrap();
    assert_eq!(attempts.len(), 10);
    assert!(attempts.iter().all(|a| a.outcome.as_deref() == Some("released")));
}

async fn cancel_stops_every_open_chunk(store: Arc<dyn StateStore>) {
    submit(&store, "j", 4).await;
    let done = lease(&store, "j", 60_000).await;
    store.complete(&done.lease_id, vec![], EV, PROOF).await.unwrap();
    let running = lease(&store, "j", 60_000).await;
    assert_eq!(store.cancel("j").await.unwrap(), 3, "one leased and two pending chunks");
    assert!(is_stale(&store.heartbeat(&running.lease_id, 1000).await.unwrap_err()));
    assert_finished(&store, "j").await;
    let s = store.summary("j").await.unwrap();
    assert_eq!((s.committed, s.cancelled, s.pending, s.leased), (1, 3, 0, 0));
    assert!(s.is_finished());
    let job = store.job("j").await.unwrap();
    let cancelled_at = job.cancelled_at_us.expect("cancelled");
    assert_eq!(store.cancel("j").await.unwrap(), 0, "cancelling twice is harmless");
    assert_eq!(store.job("j").await.unwrap().cancelled_at_us, Some(cancelled_at));
    let outcomes: Vec<_> = store
        .attempts("j")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, vec![Some("committed".into()), Some("cancelled".into())]);
    assert!(matches!(
        store.cancel("nope").await.unwrap_err(),
        CoordinatorError::UnknownJob(_)
    ));
}

async fn extending_a_job_appends_chunks_and_moves_the_mark(store: Arc<dyn StateStore>) {
    let (job, chunks) = planned("j", 2);
    store.submit(job, chunks).await.unwrap();
    let before = store.chunks("j").await.unwrap();
    assert_eq!(store.job("j").await.unwrap().high_water(), 20);
    let chunk = |from, to| PlannedChunk {
        index: 0,
        range: CursorRange::new(from, to),
        estimated_rows: 1,
        estimated_bytes: 1,
    };
    let ext = Extension {
        job_id: "j".into(),
        spec_toml: "spec of j, extended".into(),
        from_mark: 20,
        to_mark: 40,
        // A lookback chunk over [15, 20), then the new range: indexes are renumbered.
        chunks: vec![chunk(15, 20), chunk(20, 30), chunk(30, 40)],
        at_us: 77,
    };
    assert_eq!(store.extend(ext.clone()).await.unwrap(), vec![2, 3, 4]);
    let job = store.job("j").await.unwrap();
    assert_eq!(
        (
            job.high_water(),
            job.range.from,
            job.synced_at_us,
            job.spec_toml.as_str()
        ),
        (40, 0, Some(77), "spec of j, extended")
    );
    let after = store.chunks("j").await.unwrap();
    let ids = |c: &[backhaul_coordinator::ChunkRow]| c.iter().map(|c| (c.chunk_id, c.range)).collect::<Vec<_>>();
    assert_eq!(
        ids(&after[..2]),
        ids(&before),
        "earlier chunks keep their ids and ranges"
    );
    assert_eq!(after[2].range, CursorRange::new(15, 20));
    assert!(after[2..].iter().all(|c| c.state == ChunkState::Pending));
    assert_eq!(store.summary("j").await.unwrap().chunks, 5);
    // Planned from a mark the job no longer has (a concurrent sync moved it): refused, unchanged.
    let err = store.extend(ext).await.unwrap_err();
    assert!(matches!(err, CoordinatorError::MarkMoved { .. }), "{err}");
    assert_eq!(store.chunks("j").await.unwrap().len(), 5);
    // A mark that would go back is refused; the same mark (a full refresh of a fixed range)
    // adds chunks and keeps it.
    let back = Extension {
        job_id: "j".into(),
        spec_toml: "spec of j, extended".into(),
        from_mark: 40,
        to_mark: 39,
        chunks: vec![chunk(0, 39)],
        at_us: 78,
    };
    let err = store.extend(back.clone()).await.unwrap_err();
    assert!(matches!(err, CoordinatorError::MarkMoved { .. }), "{err}");
    let same = Extension { to_mark: 40, ..back };
    assert_eq!(store.extend(same).await.unwrap(), vec![5]);
    assert_eq!(store.job("j").await.unwrap().high_water(), 40);
    assert!(matches!(
        store
            .extend(Extension {
                job_id: "nope".into(),
                spec_toml: String::new(),
                from_mark: 0,
                to_mark: 1,
                chunks: vec![],
                at_us: 0
            })
            .await
            .unwrap_err(),
        CoordinatorError::UnknownJob(_)
    ));
}

async fn submit_accepts_the_same_spec_and_refuses_a_changed_one(store: Arc<dyn StateStore>) {
    let (job, chunks) = planned("j", 3);
    assert_eq!(
        store.submit(job.clone(), chunks.clone()).await.unwrap(),
        Submitted::Created
    );
    assert_eq!(
        store.submit(job.clone(), chunks.clone()).await.unwrap(),
        Submitted::Existing
    );
    let changed = JobRow {
        spec_toml: "another spec".into(),
        ..job.clone()
    };
    let err = store.submit(changed, chunks).await.unwrap_err();
    assert!(matches!(err, CoordinatorError::SpecChanged { .. }), "{err}");
    let stored = store.job("j").await.unwrap();
    assert_eq!(
        (
            stored.spec_toml,
            stored.base_dir,
            stored.cursor_kind,
            stored.range,
            stored.created_at_us,
            stored.cancelled_at_us
        ),
        (
            job.spec_toml,
            job.base_dir,
            job.cursor_kind,
            job.range,
            job.created_at_us,
            None
        )
    );
    let chunks = store.chunks("j").await.unwrap();
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[2].range, CursorRange::new(20, 30));
    assert!(matches!(
        store.job("nope").await.unwrap_err(),
        CoordinatorError::UnknownJob(_)
    ));
    // A big plan goes in whole.
    submit(&store, "big", 25_000).await;
    assert_eq!(store.summary("big").await.unwrap().chunks, 25_000);
}

async fn summary_progress_and_attempts_tell_the_history(store: Arc<dyn StateStore>) {
    submit(&store, "j", 3).await;
    let a = lease(&store, "j", 60_000).await;
    let files = vec![
        StagedFile {
            path: "p0".into(),
            bytes: 1000,
            rows: 4,
            xxh3: None,
        },
        StagedFile {
            path: "p1".into(),
            bytes: 500,
            rows: 6,
            xxh3: None,
        },
    ];
    store.complete(&a.lease_id, files, EV, PROOF).await.unwrap();
    let b = lease(&store, "j", 60_000).await;
    // Chunk 1 waits out its backoff (the default 1 s and more), so chunk 2 is leased next.
    let timeout = failure(ErrorClass::Transient, "timeout");
    assert!(store.fail(&b.lease_id, timeout, RetryPolicy::default()).await.unwrap());
    let c = lease(&store, "j", 60_000).await;
    assert_eq!(c.chunk.chunk_id, 2);
    store.progress(&c.lease_id, 7, 700).await.unwrap();
    let chunk = store.chunks("j").await.unwrap()[c.chunk.chunk_id as usize].clone();
    assert_eq!(
        (
            chunk.state,
            chunk.progress_rows,
            chunk.progress_bytes,
            chunk.lease_worker.as_deref()
        ),
        (ChunkState::Leased, 7, 700, Some("w"))
    );
    let s = store.summary("j").await.unwrap();
    assert_eq!(
        (s.chunks, s.pending, s.leased, s.committed, s.parked, s.cancelled),
        (3, 1, 1, 1, 0, 0)
    );
    assert_eq!((s.committed_rows, s.committed_bytes, s.in_flight_rows), (10, 1500, 7));
    assert_eq!((s.estimated_rows, s.estimated_bytes, s.failures), (30, 300, 1));
    assert!(!s.is_finished());
    let history: Vec<_> = store
        .attempts("j")
        .await
        .unwrap()
        .into_iter()
        .map(|a| {
            (
                a.chunk_id,
                a.attempt,
                a.worker_id,
                a.outcome,
                a.error_class,
                a.ended_at_us.is_some(),
            )
        })
        .collect();
    assert_eq!(
        history,
        vec![
            (0, 1, "w".into(), Some("committed".into()), None, true),
            (1, 1, "w".into(), Some("failed".into()), Some("transient".into()), true),
            (2, 1, "w".into(), None, None, false),
        ]
    );
    let all = store.jobs().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].0.job_id.as_str(), all[0].1.committed_rows), ("j", 10));
    store.ping().await.unwrap();
    assert!(!store.describe().is_empty());
}

async fn leases_follow_plan_order_and_a_finished_job_has_none(store: Arc<dyn StateStore>) {
    submit(&store, "b", 2).await;
    submit(&store, "a", 2).await;
    let mut order = Vec::new();
    loop {
        match store.lease("w", None, 60_000, &RetryPolicy::default()).await.unwrap() {
            Ok(l) => {
                order.push((l.job.job_id.clone(), l.chunk.chunk_id));
                store.complete(&l.lease_id, vec![], EV, PROOF).await.unwrap();
            }
            Err(NoLease::Finished) => break,
            Err(other) => panic!("{other:?}"),
        }
    }
    let expected: Vec<(String, u64)> = vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 0), ("b".into(), 1)];
    assert_eq!(order, expected);
    let jobs: Vec<_> = store
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|(j, s)| (j.job_id, s.committed))
        .collect();
    assert_eq!(jobs, vec![("a".to_string(), 2), ("b".to_string(), 2)]);
    assert_finished(&store, "a").await;
}

/// 32 leasers race over 500 chunks: each chunk is handed out once and committed once.
async fn concurrent_leasers_never_share_a_chunk(store: Arc<dyn StateStore>) {
    const CHUNKS: u64 = 500;
    submit(&store, "race", CHUNKS).await;
    let leased = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..32 {
        let (store, leased) = (store.clone(), leased.clone());
        tasks.spawn(async move {
            let worker = format!("w{w}");
            loop {
                match store
                    .lease(&worker, Some("race"), 60_000, &RetryPolicy::default())
                    .await
                {
                    Ok(Ok(l)) => {
                        leased.lock().unwrap().push((l.chunk.chunk_id, l.chunk.attempt));
                        let evidence = ChunkEvidence {
                            summary: RowSummary {
                                rows: l.chunk.chunk_id,
                                checksum: l.chunk.chunk_id * 7,
                            },
                            fingerprint: ChunkFingerprint::default(),
                        };
                        let proof = ChunkProof::from_evidence(ProofLevel::CountOnly, &evidence);
                        store.complete(&l.lease_id, vec![], evidence, proof).await.unwrap();
                    }
                    Ok(Err(NoLease::Finished)) => return,
                    Ok(Err(NoLease::RetryAfterMs(_))) => tokio::time::sleep(Duration::from_millis(5)).await,
                    // A worker retries what the store calls transient.
                    Err(e) if e.class() != ErrorClass::Permanent => {}
                    Err(e) => panic!("{e}"),
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    let leased = leased.lock().unwrap().clone();
    let unique: HashSet<_> = leased.iter().map(|(chunk, _)| *chunk).collect();
    assert_eq!(leased.len(), CHUNKS as usize, "a chunk was handed out twice");
    assert_eq!(unique.len(), CHUNKS as usize);
    assert!(leased.iter().all(|(_, attempt)| *attempt == 1));
    let s = store.summary("race").await.unwrap();
    assert_eq!((s.committed, s.committed_rows), (CHUNKS, (0..CHUNKS).sum()));
}

// PostgreSQL only.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serving_store_on_one_database_is_refused() {
    let url = fresh_postgres_url();
    let with_secret = url.replacen(
        "postgres@",
        &format!("postgres:{}@", PostgresServer::shared().password()),
        1,
    );
    let first = PgStore::open_serving(&with_secret, None).await.unwrap();
    let err = PgStore::open_serving(&with_secret, None).await.err().expect("refused");
    assert!(matches!(err, CoordinatorError::PostgresStateLocked { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("in use by another coordinator"), "{text}");
    assert!(!text.contains(PostgresServer::shared().password()), "{text}");
    // Readers need no lock.
    let reader = PgStore::open(&url, password()).await.unwrap();
    assert!(reader.jobs().await.unwrap().is_empty());
    // The lock ends with its store, as it does with a killed process's connections.
    drop(first);
    open_serving_once_free(&url, Duration::from_millis(50)).await;
    // Another schema of the same database is another state, with a lock of its own.
    let server = PostgresServer::shared();
    let db = url.rsplit('/').next().unwrap();
    server.psql(db, "CREATE SCHEMA other").unwrap();
    let other = format!("{url}?options=-csearch_path%3Dother");
    let in_other = PgStore::open_serving(&other, password()).await.unwrap();
    submit(&(Arc::new(in_other) as Arc<dyn StateStore>), "j", 1).await;
    assert_eq!(
        server
            .psql(
                db,
                "SELECT count(*) FROM other.chunks; SELECT count(*) FROM public.chunks"
            )
            .unwrap(),
        "1\n0"
    );
}

/// The serving lock's session is killed: state changes stop until the lock is held again; if
/// another coordinator takes it meanwhile, they stop for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_serving_lock_stops_state_changes() {
    let url = fresh_postgres_url();
    let server = PostgresServer::shared();
    let db = url.rsplit('/').next().unwrap().to_string();
    let store: Arc<dyn StateStore> = Arc::new(PgStore::open_serving(&url, password()).await.unwrap());
    submit(&store, "j", 10).await;
    let kill_lock_session = || {
        server
            .psql(
                &db,
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .unwrap()
    };
    assert_eq!(kill_lock_session(), "t");
    let refused = wait_for_refusal(&store).await;
    assert!(
        matches!(refused, CoordinatorError::StateUnavailable { .. }),
        "{refused}"
    );
    assert_eq!(refused.class(), ErrorClass::Transient);
    // Reads go on; changes come back once the lock is held again with the same epoch.
    assert_eq!(store.summary("j").await.unwrap().chunks, 10);
    let mut back = false;
    for _ in 0..200 {
        if store
            .lease("w", Some("j"), 60_000, &RetryPolicy::default())
            .await
            .is_ok()
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the store never took its serving lock back");

    // Now another coordinator takes over while the lock is free.
    assert_eq!(kill_lock_session(), "t");
    // Polling faster than the first store tries to take its lock back (every second).
    let takeover: Arc<dyn StateStore> = Arc::new(open_serving_once_free(&url, Duration::from_millis(5)).await);
    let lost = wait_for_lost(&store).await;
    assert_eq!(lost.class(), ErrorClass::Permanent);
    assert!(lost.to_string().contains("restart it"), "{lost}");
    assert!(store.ping().await.is_err(), "health probes see it");
    takeover
        .lease("w2", Some("j"), 60_000, &RetryPolicy::default())
        .await
        .unwrap()
        .expect("the new server leases");
}

/// Opens a serving store as soon as the serving lock is free, trying every `pause`.
async fn open_serving_once_free(url: &str, pause: Duration) -> PgStore {
    for _ in 0..(5000 / pause.as_millis().max(1)) {
        match PgStore::open_serving(url, password()).await {
            Ok(store) => return store,
            Err(CoordinatorError::PostgresStateLocked { .. }) => tokio::time::sleep(pause).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the serving lock stayed taken for 5 s");
}

/// Leases until one is refused for lack of the serving lock; returns the refusal.
async fn wait_for_refusal(store: &Arc<dyn StateStore>) -> CoordinatorError {
    for _ in 0..400 {
        match store.lease("w", Some("j"), 60_000, &RetryPolicy::default()).await {
            Err(e) => return e,
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    panic!("state changes went on without the serving lock");
}

async fn wait_for_lost(store: &Arc<dyn StateStore>) -> CoordinatorError {
    for _ in 0..400 {
        match store.lease("w", Some("j"), 60_000, &RetryPolicy::default()).await {
            Err(e @ CoordinatorError::StateLockLost { .. }) => return e,
            Err(_) | Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    panic!("the store kept changing state after another coordinator took over");
}

#[tokio::test]
async fn the_password_is_never_shown() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    let wrong = "wr0ng-s3cret-pw";
    let url = format!("postgres://postgres:{wrong}@127.0.0.1:{}/{db}", server.port());
    let err = PgStore::open(&url, None)
        .await
        .err()
        .expect("a wrong password is refused");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(wrong), "{text}");
    assert!(text.contains("postgres@127.0.0.1"), "{text}");
    assert_eq!(err.class(), ErrorClass::Permanent, "{text}");
    let right = format!(
        "postgres://postgres:{}@127.0.0.1:{}/{db}",
        server.password(),
        server.port()
    );
    let store = PgStore::open(&right, None).await.unwrap();
    assert!(!store.describe().contains(server.password()));
    // Nobody listens here: a connection failure is transient.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = PgStore::open(&format!("postgres://u:{wrong}@127.0.0.1:{port}/db"), None)
        .await
        .err()
        .expect("nobody listens");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(!err.to_string().contains(wrong), "{err}");
}

/// PostgreSQL holds the same tables and columns as the embedded store (plus its serving epoch).
#[tokio::test]
async fn both_backends_have_the_same_tables_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut sqlite: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for table in tables {
        let columns = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        sqlite.insert(table, columns);
    }

    let url = fresh_postgres_url();
    let _store = PgStore::open(&url, password()).await.unwrap();
    let db = url.rsplit('/').next().unwrap();
    let listing = PostgresServer::shared()
        .psql(
            db,
            "SELECT table_name || ' ' || column_name || ' ' || data_type FROM information_schema.columns
             WHERE table_schema = 'public' ORDER BY 1",
        )
        .unwrap();
    let mut postgres: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in listing.lines() {
        let mut parts = line.splitn(3, ' ');
        let (table, column, data_type) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        assert_ne!(data_type, "integer", "{table}.{column} must be BIGINT");
        postgres.entry(table.into()).or_default().insert(column.into());
    }
    assert!(postgres.remove("backhaul_serving").is_some());
    assert_eq!(postgres, sqlite);
}

/// `sslmode=verify-full` with `sslrootcert`: the server's certificate must chain to that CA and
/// name the host; a server that requires TLS refuses `sslmode=disable`.
#[tokio::test]
async fn tls_verify_full_checks_the_server() {
    use backhaul_testkit::postgres::PostgresOptions;
    let server = PostgresServer::start(PostgresOptions { tls: true }).unwrap();
    let files = server.tls_files().unwrap();
    let url = |host: &str, query: String| format!("postgres://postgres@{host}:{}/postgres?{query}", server.port());
    let pw = || Some(server.password().to_string());
    let verified = url(
        "localhost",
        format!("sslmode=verify-full&sslrootcert={}", files.ca_cert.display()),
    );
    let store: Arc<dyn StateStore> = Arc::new(PgStore::open_serving(&verified, pw()).await.unwrap());
    submit(&store, "j", 2).await;
    let encrypted: u32 = server
        .psql("postgres", "SELECT count(*) FROM pg_stat_ssl WHERE ssl")
        .unwrap()
        .parse()
        .unwrap();
    assert!(encrypted >= 1, "the store's sessions use TLS");
    for (host, ca) in [("localhost", &files.other_ca_cert), ("127.0.0.1", &files.ca_cert)] {
        let refused = url(host, format!("sslmode=verify-full&sslrootcert={}", ca.display()));
        let err = PgStore::open(&refused, pw()).await.err().expect("certificate refused");
        assert_eq!(err.class(), ErrorClass::Permanent, "{host}: {err}");
    }
    let plain = url("localhost", "sslmode=disable".into());
    let err = PgStore::open(&plain, pw()).await.err().expect("TLS required");
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(!err.to_string().contains(server.password()));
}

/// The database restarts under a serving store: calls fail as transient meanwhile, then the
/// store reconnects, takes its serving lock back (same epoch) and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_the_database_restarts() {
    use backhaul_testkit::postgres::PostgresOptions;
    let server = PostgresServer::start(PostgresOptions::default()).unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port());
    let store: Arc<dyn StateStore> = Arc::new(
        PgStore::open_serving(&url, Some(server.password().into()))
            .await
            .unwrap(),
    );
    submit(&store, "j", 3).await;
    let held = lease(&store, "j", 60_000).await;
    server.stop_immediately().unwrap();
    let err = store.heartbeat(&held.lease_id, 60_000).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    server.start_again().unwrap();
    let mut accepted = false;
    for _ in 0..300 {
        if store.heartbeat(&held.lease_id, 60_000).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "the store never came back after the restart");
    store.complete(&held.lease_id, vec![], EV, PROOF).await.unwrap();
    assert_eq!(store.summary("j").await.unwrap().committed, 1);
}

/// Evidence of 10 rows with one string column of `bytes` bytes.
fn fingerprinted(bytes: u64) -> ChunkFingerprint {
    ChunkFingerprint {
        rows: 10,
        columns: vec![ColumnFingerprint {
            name: "name".into(),
            nulls: 1,
            measure: ColumnMeasure::ByteLength { bytes },
        }],
    }
}

async fn proofs_are_checked_at_their_level_and_stored(store: Arc<dyn StateStore>) {
    submit(&store, "j", 2).await;
    let evidence = ChunkEvidence {
        summary: EV.summary,
        fingerprint: fingerprinted(90),
    };
    // A fingerprint proof whose column differs is refused, naming the column and both values.
    let l = lease(&store, "j", 60_000).await;
    let wrong = ChunkProof {
        level: ProofLevel::Fingerprint,
        rows: 10,
        checksum: None,
        fingerprint: Some(fingerprinted(91)),
    };
    let err = store
        .complete(&l.lease_id, vec![], evidence.clone(), wrong)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("chunk 0 of job j") && text.contains("column `name` byte_length: expected 90, found 91"),
        "{text}"
    );
    // The right one commits, and the chunk keeps its level, the evidence and the proof.
    let right = ChunkProof {
        fingerprint: Some(fingerprinted(90)),
        ..ChunkProof::from_evidence(ProofLevel::Fingerprint, &evidence)
    };
    let right = ChunkProof {
        checksum: None,
        ..right
    };
    store
        .complete(&l.lease_id, vec![], evidence.clone(), right.clone())
        .await
        .unwrap();
    // A count-only proof is stored as such, without a checksum.
    let l = lease(&store, "j", 60_000).await;
    let count = ChunkProof {
        level: ProofLevel::CountOnly,
        rows: 10,
        checksum: None,
        fingerprint: None,
    };
    store
        .complete(&l.lease_id, vec![], evidence.clone(), count.clone())
        .await
        .unwrap();
    let chunks = store.chunks("j").await.unwrap();
    assert_eq!(chunks[0].extracted.as_ref(), Some(&evidence));
    assert_eq!(chunks[0].committed.as_ref(), Some(&right));
    assert_eq!(chunks[1].committed.as_ref(), Some(&count));
    assert_eq!(chunks[1].committed.as_ref().unwrap().check(&evidence), Ok(()));
}

/// Schedules: added once (again with the same definition is a no-op, with another one refused),
/// paused and resumed (resuming forgets the ticks missed meanwhile), fired, skipped, removed.
async fn schedules_are_kept_paused_fired_and_removed(store: Arc<dyn StateStore>) {
    let row = |cron: &str| {
        ScheduleRow::new(
            "nightly",
            "spec".into(),
            "/tmp".into(),
            cron,
            "Europe/Berlin",
            "t",
            1_000,
        )
        .unwrap()
    };
    assert_eq!(store.add_schedule(row("0 2 * * *")).await.unwrap(), Submitted::Created);
    assert_eq!(store.add_schedule(row("0 2 * * *")).await.unwrap(), Submitted::Existing);
    assert!(matches!(
        store.add_schedule(row("0 3 * * *")).await.unwrap_err(),
        CoordinatorError::ScheduleChanged { .. }
    ));
    store.record_fire("nightly", 5_000, "nightly").await.unwrap();
    store.record_skip("nightly", 6_000).await.unwrap();
    store.set_schedule_paused("nightly", true, 7_000).await.unwrap();
    let got = store.schedule("nightly").await.unwrap();
    assert!(got.paused);
    assert_eq!(
        (
            got.last_fired_us,
            got.last_tick_us,
            got.skipped_ticks,
            got.last_run_job.as_deref()
        ),
        (Some(5_000), Some(6_000), 1, Some("nightly"))
    );
    store.set_schedule_paused("nightly", false, 9_000).await.unwrap();
    store.set_schedule_paused("nightly", false, 10_000).await.unwrap();
    store.request_run("nightly").await.unwrap();
    let got = store.schedule("nightly").await.unwrap();
    assert!(!got.paused && got.run_requested);
    assert_eq!(
        got.last_tick_us,
        Some(9_000),
        "resuming a running schedule changes nothing"
    );
    store.record_fire("nightly", 11_000, "nightly").await.unwrap();
    assert!(!store.schedule("nightly").await.unwrap().run_requested);
    assert_eq!(store.schedules().await.unwrap().len(), 1);
    store.remove_schedule("nightly").await.unwrap();
    assert!(matches!(
        store.schedule("nightly").await.unwrap_err(),
        CoordinatorError::UnknownSchedule(_)
    ));
    assert!(matches!(
        store.request_run("nightly").await.unwrap_err(),
        CoordinatorError::UnknownSchedule(_)
    ));
}

/// A running chunk's tail becomes a pending chunk of its own, numbered after the job's last
/// one, with the estimates shared by width; asking again with the same point gets the same
/// answer; a stale lease is refused; a chunk whose earlier lease expired is not split.
async fn a_running_chunk_splits_once_for_its_current_lease(store: Arc<dyn StateStore>, clock: Arc<ManualClock>) {
    submit(&store, "j", 2).await;
    let first = lease(&store, "j", 60_000).await;
    assert_eq!(first.chunk.range, CursorRange::new(0, 10));
    let kept = CursorRange::new(0, 4);
    let split = SplitOutcome::Split { kept, new_chunk_id: 2 };
    assert_eq!(store.split(&first.lease_id, 4).await.unwrap(), split);
    // A lost answer asked for again: the same split, not a second one.
    assert_eq!(store.split(&first.lease_id, 4).await.unwrap(), split);
    let chunks = store.chunks("j").await.unwrap();
    let view: Vec<_> = chunks
        .iter()
        .map(|c| {
            (
                c.chunk_id,
                c.range,
                c.state,
                c.estimated_rows,
                c.estimated_bytes,
                c.split_from,
            )
        })
        .collect();
    assert_eq!(
        view,
        vec![
            (0, kept, ChunkState::Leased, 4, 40, None),
            (1, CursorRange::new(10, 20), ChunkState::Pending, 10, 100, None),
            (2, CursorRange::new(4, 10), ChunkState::Pending, 6, 60, Some(0)),
        ]
    );
    let s = store.summary("j").await.unwrap();
    assert_eq!((s.chunks, s.pending, s.leased, s.estimated_rows), (3, 2, 1, 20));
    // Points outside what the chunk now owns are refused; nothing changes.
    assert!(matches!(
        store.split(&first.lease_id, 0).await.unwrap(),
        SplitOutcome::Refused(_)
    ));
    assert!(matches!(
        store.split(&first.lease_id, 9).await.unwrap(),
        SplitOutcome::Refused(_)
    ));
    assert_eq!(store.chunks("j").await.unwrap().len(), 3);
    // The shrunk chunk commits as usual; the tail is leased in plan order after chunk 1.
    store.complete(&first.lease_id, vec![], EV, PROOF).await.unwrap();
    assert_eq!(lease(&store, "j", 60_000).await.chunk.chunk_id, 1);
    let tail = lease(&store, "j", 1_000).await;
    assert_eq!((tail.chunk.chunk_id, tail.chunk.range), (2, CursorRange::new(4, 10)));
    // The tail's lease runs out; its worker may still be running [4, 10), so the next lease
    // of the chunk may not cut it.
    clock.advance(Duration::from_millis(1_001));
    assert!(matches!(
        store
            .lease("w", Some("j"), 60_000, &RetryPolicy::default())
            .await
            .unwrap(),
        Err(NoLease::RetryAfterMs(_))
    ));
    let stale = store.split(&tail.lease_id, 7).await.unwrap_err();
    assert!(is_stale(&stale), "{stale}");
    clock.advance(PAST_BACKOFF);
    let again = lease(&store, "j", 60_000).await;
    assert_eq!((again.chunk.chunk_id, again.chunk.attempt), (2, 2));
    let SplitOutcome::Refused(why) = store.split(&again.lease_id, 7).await.unwrap() else {
        panic!("split a chunk whose earlier lease expired")
    };
    assert!(why.contains("expired"), "{why}");
}
