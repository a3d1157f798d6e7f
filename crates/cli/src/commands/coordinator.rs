//! `backhaul coordinator`: serve leases, job submission and status to workers and clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use backhaul_coordinator::{CoordinatorService, RetryPolicy, ServeOptions, serve};
use backhaul_proto::ServerTls;
use clap::Args;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::common;
use super::remote::TokenArgs;
use super::serve::{HttpArgs, Signals, bind_http, write_addr_file};
use crate::Globals;
use crate::connectors::builtin_connectors;

/// Arguments of `coordinator`.
#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// Address for gRPC (workers and clients). Port 0 picks a free port; see --addr-file.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    listen: SocketAddr,
    /// Write the bound gRPC address (host:port) to this file once listening.
    #[arg(long, value_name = "PATH")]
    addr_file: Option<PathBuf>,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Serve without a token on an address other than loopback (anyone who can connect may
    /// submit and cancel jobs).
    #[arg(long)]
    allow_unauthenticated: bool,
    /// TLS certificate chain (PEM) to serve gRPC over TLS.
    #[arg(long, env = "BACKHAUL_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "BACKHAUL_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) client certificates must chain to: turns on mutual TLS.
    #[arg(long, env = "BACKHAUL_TLS_CLIENT_CA", value_name = "PEM", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Lease time-to-live: a chunk whose worker stops heartbeating is handed out again after it.
    #[arg(long, default_value = "30s", value_parser = common::parse_duration)]
    lease_ttl: Duration,
    /// Failed attempts after which a chunk is parked instead of retried.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,
    /// First retry backoff after a transient failure (doubles per failure, ±25% jitter).
    #[arg(long, default_value = "1s", value_parser = common::parse_duration)]
    retry_backoff: Duration,
}

/// Serves until SIGTERM (exit 0) or SIGINT (exit 130).
pub async fn run(globals: &Globals, args: CoordinatorArgs) -> Result<u8> {
    let token = args.token.token()?;
    if token.is_none() && !args.listen.ip().is_loopback() && !args.allow_unauthenticated {
        bail!(
            "refusing to serve on {} without a token: give --token-file (or $BACKHAUL_TOKEN), or --allow-unauthenticated",
            args.listen
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        }),
        _ => None,
    };
    let mut signals = Signals::install()?;
    // A distributed coordinator never hands leases back on start: workers of the previous
    // process may still be running them. They heartbeat to this process, or their leases expire.
    // `--state` is a file (locked against a second coordinator) or a postgres:// URL (a
    // serving lock in the database does the same).
    let store = common::state_location(globals)
        .open_serving(common::state_password(globals)?)
        .await?;
    let retry = RetryPolicy {
        max_attempts: args.max_attempts,
        transient_base: args.retry_backoff,
        ..RetryPolicy::default()
    };
    let mut service = CoordinatorService::new(store.clone(), Arc::new(builtin_connectors()), args.lease_ttl, retry);
    // Type-fidelity reports of submitted jobs go next to a state file, as in local runs.
    if let backhaul_coordinator::StateLocation::File(path) = common::state_location(globals) {
        service = service.with_reports_dir(super::backfill::reports_dir(&path));
    }
    // Schedules start runs through the same submit path as `backhaul submit`.
    let clock: Arc<dyn backhaul_coordinator::clock::Clock> = Arc::new(backhaul_coordinator::clock::SystemClock);
    let launcher = Arc::new(backhaul_coordinator::SubmitLauncher::new(
        store.clone(),
        Arc::new(builtin_connectors()),
    ));
    let scheduler = backhaul_coordinator::Scheduler::new(store.clone(), launcher, clock.clone());
    // Syncs this coordinator's workers load (scheduled or `sync --coordinator`) get their delete
    // detection here, once their chunks committed.
    let deletes = Arc::new(backhaul_coordinator::deletes::DeleteSweeper::new(
        store.clone(),
        Arc::new(builtin_connectors()),
    ));
    service = service.with_scheduler(scheduler.handle());
    let metrics = service.metrics();
    let monitor =
        Arc::new(backhaul_coordinator::alerts::CheckMonitor::new(store.clone(), clock).with_metrics(metrics.clone()));
    let pools = service.pools();
    let stop = CancellationToken::new();
    let options = ServeOptions {
        token: token.clone(),
        tls: tls.clone(),
    };
    let (addr, server) = serve(service, args.listen, options, stop.clone())
        .await
        .with_context(|| format!("serving gRPC on {}", args.listen))?;
    let http = bind_http(&args.http, token.clone()).await?;
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    tasks.spawn(async move { server.await.map_err(anyhow::Error::from) });
    let scheduler_stop = stop.clone();
    tasks.spawn(async move {
        scheduler.run(scheduler_stop.clone()).await;
        stopped_by(&scheduler_stop, "the scheduler")
    });
    let checks_stop = stop.clone();
    tasks.spawn(async move {
        monitor
            .run(backhaul_coordinator::alerts::CHECK_INTERVAL, checks_stop.clone())
            .await;
        stopped_by(&checks_stop, "the checks")
    });
    let deletes_stop = stop.clone();
    tasks.spawn(async move {
        deletes
            .run(backhaul_coordinator::deletes::SWEEP_INTERVAL, deletes_stop.clone())
            .await;
        stopped_by(&deletes_stop, "delete detection")
    });
    if let Some(listener) = http {
        let router = backhaul_coordinator::http::router(store.clone(), metrics, pools);
        tasks.spawn(listener.serve(router, stop.clone()));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        addr = %addr,
        state = %store.describe(),
        auth = if token.is_some() { "token" } else { "none" },
        tls = tls.is_some(),
        mutual_tls = args.tls_client_ca.is_some(),
        "coordinator serving"
    );
    if let Some(path) = &args.addr_file {
        write_addr_file(path, addr)?;
    }
    println!("backhaul coordinator listening on {scheme}://{addr}");
    let outcome = tokio::select! {
        signal = signals.next() => {
            tracing::info!(?signal, "stopping: no new calls; workers keep their leases until they expire");
            Ok(signal.exit_code())
        }
        joined = tasks.join_next() => match joined {
            Some(Ok(Ok(()))) | None => Err(anyhow!("a server stopped unexpectedly")),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(anyhow!(e)),
        },
    };
    stop.cancel();
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| anyhow!(e))??;
    }
    outcome
}

/// A background loop ends only when told to; anything else is an error of the coordinator.
fn stopped_by(stop: &CancellationToken, what: &str) -> Result<()> {
    if stop.is_cancelled() {
        Ok(())
    } else {
        Err(anyhow!("{what} stopped unexpectedly"))
    }
}
