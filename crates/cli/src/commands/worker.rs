//! `backhaul worker`: lease chunks from a coordinator and run them until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use backhaul_proto::ServerTls;
use backhaul_worker::{CoordinatorBudget, Shutdown, Worker, WorkerConfig};
use clap::Args;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::common;
use super::remote::RemoteArgs;
use super::serve::{HttpArgs, Signals, bind_http};
use crate::Globals;
use crate::connectors::builtin_connectors_with;

/// Arguments of `worker`.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Chunks this worker runs at once.
    #[arg(long, env = "BACKHAUL_WORKER_SLOTS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    slots: u16,
    /// Name in the coordinator's state and in logs; default: host name and process id.
    #[arg(long, env = "BACKHAUL_WORKER_ID")]
    id: Option<String>,
    /// Only run chunks of this job, and exit once it is finished.
    #[arg(long, value_name = "JOB")]
    job: Option<String>,
    /// On SIGTERM or SIGINT, running chunks get this long to finish before they are handed
    /// back; a second signal hands them back at once.
    #[arg(long, default_value = "60s", value_parser = common::parse_duration)]
    drain_timeout: Duration,
    /// Directory for Parquet parts before they are staged; default: the system temp dir.
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
    #[command(flatten)]
    http: HttpArgs,
    /// Address for the Arrow Flight data plane: previews (`backhaul preview`) and cluster-mode
    /// profiling (`backhaul profile --coordinator`). Off unless given.
    #[arg(long, value_name = "ADDR")]
    flight_listen: Option<SocketAddr>,
    /// URL others reach the Flight listener at (needed when it listens on 0.0.0.0, e.g. the
    /// pod IP); default: http://<bound address>, or https:// with --flight-tls-cert.
    #[arg(long, env = "BACKHAUL_FLIGHT_ADVERTISE", value_name = "URL")]
    flight_advertise: Option<String>,
    /// TLS certificate chain (PEM) to serve Flight over TLS (rustls, ring).
    #[arg(
        long,
        env = "BACKHAUL_FLIGHT_TLS_CERT",
        value_name = "PEM",
        requires = "flight_tls_key",
        requires = "flight_listen"
    )]
    flight_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --flight-tls-cert.
    #[arg(
        long,
        env = "BACKHAUL_FLIGHT_TLS_KEY",
        value_name = "PEM",
        requires = "flight_tls_cert"
    )]
    flight_tls_key: Option<PathBuf>,
    /// CA (PEM) client certificates on the Flight port must chain to: turns on mutual TLS.
    #[arg(
        long,
        env = "BACKHAUL_FLIGHT_TLS_CLIENT_CA",
        value_name = "PEM",
        requires = "flight_tls_cert"
    )]
    flight_tls_client_ca: Option<PathBuf>,
    /// Serve Flight without a token on an address other than loopback (anyone who can connect
    /// may have this worker read the sources its credentials reach).
    #[arg(long, requires = "flight_listen")]
    flight_allow_unauthenticated: bool,
}

/// The Flight port's TLS settings, read and checked now so a bad file stops the worker at
/// start, naming the file.
fn flight_tls(args: &WorkerArgs) -> Result<Option<tonic::transport::ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&args.flight_tls_cert, &args.flight_tls_key) else {
        return Ok(None);
    };
    let tls = ServerTls {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: args.flight_tls_client_ca.clone(),
    };
    Ok(Some(tls.config().context("Flight TLS (--flight-tls-*)")?))
}

/// How long open HTTP and Flight calls may run on once the worker stops.
const SERVER_GRACE: Duration = Duration::from_secs(10);

fn default_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// Runs until the job (with --job) is finished, or a signal drains the worker.
pub async fn run(_globals: &Globals, args: WorkerArgs) -> Result<u8> {
    let mut signals = Signals::install()?;
    let client = args.remote.client()?;
    let spool_dir = args.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&spool_dir).with_context(|| format!("creating {}", spool_dir.display()))?;
    let flight_tls = flight_tls(&args)?;
    let tls = flight_tls.is_some();
    // (The reverse, https:// on a plain port, is a TLS proxy in front of the worker.)
    if let Some(url) = &args.flight_advertise
        && tls
        && url.starts_with("http://")
    {
        bail!("--flight-advertise {url}: the Flight port serves TLS; advertise an https:// URL");
    }
    let token = args.remote.token.token()?;
    let flight = match args.flight_listen {
        Some(addr) if token.is_none() && !addr.ip().is_loopback() && !args.flight_allow_unauthenticated => {
            bail!(
                "refusing to serve Arrow Flight on {addr} without a token: give --token-file (or $BACKHAUL_TOKEN), or --flight-allow-unauthenticated"
            );
        }
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the Flight listener on {addr}"))?;
            let url =
                backhaul_worker::flight::advertised_url(listener.local_addr()?, args.flight_advertise.as_deref(), tls);
            Some((listener, url))
        }
        None => None,
    };
    let config = WorkerConfig {
        slots: usize::from(args.slots),
        flight_url: flight.as_ref().map(|(_, url)| url.clone()),
        job_filter: args.job.clone(),
        spool_dir,
        ..WorkerConfig::new(args.id.clone().unwrap_or_else(default_id))
    };
    // API sources on this worker lease their requests from the coordinator's rate-limit pools.
    let budgets = backhaul_core::ratelimit::Budgets::default();
    budgets.install(Arc::new(CoordinatorBudget::new(
        client.clone(),
        config.worker_id.clone(),
    )));
    let worker = Arc::new(Worker::new(client, Arc::new(builtin_connectors_with(&budgets)), config));
    let http = bind_http(&args.http, args.remote.token.token()?).await?;
    let stop_http = CancellationToken::new();
    let mut http_task: JoinSet<Result<()>> = JoinSet::new();
    if let Some(listener) = http {
        let router = backhaul_worker::http::router(worker.metrics(), usize::from(args.slots));
        http_task.spawn(listener.serve(router, stop_http.clone()));
    }
    if let Some((listener, url)) = flight {
        let server = backhaul_worker::flight::serve(worker.clone(), listener, token, flight_tls, stop_http.clone())
            .context("Flight TLS (--flight-tls-*)")?;
        tracing::info!(url = %url, tls, mutual_tls = args.flight_tls_client_ca.is_some(), "serving the Arrow Flight data plane");
        http_task.spawn(async move { server.await.context("Flight server") });
    }
    tracing::info!(
        worker = %worker.config().worker_id,
        coordinator = %args.remote.url()?,
        slots = args.slots,
        job = args.job.as_deref().unwrap_or("any"),
        "worker started"
    );
    let shutdown = Shutdown::default();
    let run = worker.clone().run(shutdown.clone());
    tokio::pin!(run);
    let mut stopped_by = None;
    // Armed by the first signal: when it fires, running chunks are handed back.
    let drain_deadline = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain_deadline);
    let result = loop {
        tokio::select! {
            r = &mut run => break r.map_err(anyhow::Error::from),
            signal = signals.next() => {
                if stopped_by.is_none() {
                    stopped_by = Some(signal);
                    tracing::info!(?signal, drain_timeout = ?args.drain_timeout, "draining: no new chunks; running ones finish or are handed back");
                    shutdown.drain.cancel();
                    drain_deadline.as_mut().reset(tokio::time::Instant::now() + args.drain_timeout);
                } else {
                    tracing::info!("second signal: handing running chunks back now");
                    shutdown.abort.cancel();
                }
            }
            _ = &mut drain_deadline, if stopped_by.is_some() && !shutdown.abort.is_cancelled() => {
                tracing::info!("drain timeout: handing running chunks back");
                shutdown.abort.cancel();
            }
        }
    };
    shutdown.abort.cancel();
    stop_http.cancel();
    // The servers take no new calls now; calls in flight (a Flight stream) get a short grace,
    // and a client that never answers HTTP/2's goodbye cannot keep the worker alive.
    let servers = async {
        while let Some(joined) = http_task.join_next().await {
            joined.map_err(|e| anyhow!(e))??;
        }
        Ok::<_, anyhow::Error>(())
    };
    let stopped = tokio::time::timeout(SERVER_GRACE, servers).await;
    match stopped {
        Ok(servers) => servers?,
        Err(_) => {
            tracing::warn!(grace = ?SERVER_GRACE, "HTTP or Flight calls still open after the grace; closing them");
            http_task.shutdown().await;
        }
    }
    result.context("the worker stopped")?;
    Ok(stopped_by.map(|s| s.exit_code()).unwrap_or(0))
}
