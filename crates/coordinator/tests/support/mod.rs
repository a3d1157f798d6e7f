//! A coordinator serving one stored job on a loopback port, for the race tests and the
//! coordinator-scale benchmark (which includes this file by path): the job is stored
//! directly, so nothing is planned and no connector is ever built.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use backhaul_coordinator::{CoordinatorService, JobRow, RetryPolicy, ServeOptions, StateStore, Store, serve};
use backhaul_core::chunking::PlannedChunk;
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::registry::Registry;
use tokio_util::sync::CancellationToken;

/// A served coordinator; cancel `stop` and await `server` to shut it down.
pub struct ServedJob {
    /// Holds the state database (removed on drop).
    pub _dir: tempfile::TempDir,
    /// The embedded store the service uses.
    pub store: Store,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Stops the server.
    pub stop: CancellationToken,
    /// The server task.
    pub server: tokio::task::JoinHandle<backhaul_coordinator::Result<()>>,
}

/// Stores job `job_id` with `chunks` integer chunks of one cursor unit each and serves it with
/// leases of `ttl`.
pub async fn serve_job(job_id: &str, chunks: u64, ttl: Duration) -> ServedJob {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_exclusive(&dir.path().join("state.db")).expect("store");
    let job = JobRow {
        job_id: job_id.into(),
        spec_toml: "spec".into(),
        base_dir: dir.path().into(),
        cursor_kind: CursorKind::Integer,
        range: CursorRange::new(0, chunks as i64),
        created_at_us: 0,
        cancelled_at_us: None,
        synced_at_us: None,
    };
    let planned: Vec<PlannedChunk> = (0..chunks)
        .map(|i| PlannedChunk {
            index: i,
            range: CursorRange::new(i as i64, i as i64 + 1),
            estimated_rows: 1000,
            estimated_bytes: 100_000,
        })
        .collect();
    StateStore::submit(&store, job, planned).await.expect("submit");
    let service = CoordinatorService::new(
        Arc::new(store.clone()),
        Arc::new(Registry::new()),
        ttl,
        // Expired leases are retried at once: these tests are about fencing, not backoff.
        RetryPolicy {
            transient_base: Duration::ZERO,
            max_backoff: Duration::ZERO,
            ..RetryPolicy::default()
        },
    );
    let stop = CancellationToken::new();
    let (addr, server) = serve(
        service,
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ServeOptions::default(),
        stop.clone(),
    )
    .await
    .expect("serve");
    ServedJob {
        _dir: dir,
        store,
        url: format!("http://{addr}"),
        stop,
        server: tokio::spawn(server),
    }
}
