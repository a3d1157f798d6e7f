//! What the long-running roles (`coordinator`, `worker`) share: announcing bound addresses,
//! an optional HTTP listener, and a signal listener that tells SIGTERM from SIGINT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokio::net::TcpListener;

/// Writes `addr` to `path` atomically (temp file + rename), so a reader never sees half of it.
pub fn write_addr_file(path: &Path, addr: SocketAddr) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{addr}\n")).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The HTTP listener of a long-running role (status page, `/metrics`, `/healthz`).
#[derive(clap::Args, Debug)]
pub struct HttpArgs {
    /// Address for HTTP (`/metrics`, `/healthz`, and the coordinator's status page). Off
    /// unless given. With a token, every path but `/healthz` needs it (Bearer, or HTTP Basic
    /// with the token as password).
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Write the bound HTTP address to this file once listening.
    #[arg(long, value_name = "PATH")]
    pub http_addr_file: Option<PathBuf>,
    /// Serve the HTTP paths without the token even when one is set (for a scraper or a
    /// dashboard on a trusted network; the pages show job names, counts and error messages).
    #[arg(long)]
    pub http_open: bool,
}

/// A bound HTTP listener and the token its paths need, if any.
pub struct HttpListener {
    listener: TcpListener,
    token: Option<backhaul_proto::Token>,
}

impl HttpListener {
    /// Serves `router` until `stop` fires.
    pub async fn serve(self, router: axum::Router, stop: tokio_util::sync::CancellationToken) -> Result<()> {
        let router = backhaul_proto::http::require_token(router, self.token);
        backhaul_proto::http::serve(self.listener, router, stop)
            .await
            .context("HTTP server")
    }
}

/// Binds the HTTP listener when asked, announcing its address; `token` guards it unless
/// `--http-open`.
pub async fn bind_http(args: &HttpArgs, token: Option<backhaul_proto::Token>) -> Result<Option<HttpListener>> {
    let Some(listener) = bind_listener(args.http_listen, args.http_addr_file.as_deref()).await? else {
        return Ok(None);
    };
    let token = if args.http_open { None } else { token };
    Ok(Some(HttpListener { listener, token }))
}

async fn bind_listener(addr: Option<SocketAddr>, addr_file: Option<&Path>) -> Result<Option<TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP listener on {addr}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving /metrics and /healthz over HTTP");
    if let Some(path) = addr_file {
        write_addr_file(path, bound)?;
    }
    Ok(Some(listener))
}

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: an orchestrator stopping us; a clean stop exits 0.
    Terminate,
    /// SIGINT (Ctrl-C): exits 130 like every interrupted backhaul command.
    Interrupt,
}

impl StopSignal {
    /// The exit code after a clean stop on this signal.
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Terminate => 0,
            StopSignal::Interrupt => crate::exit::INTERRUPTED,
        }
    }
}

/// Listens for SIGTERM and SIGINT for the life of the process (installed once, so a signal
/// between two waits is never lost).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// The next stop signal.
    pub async fn next(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.term.recv() => StopSignal::Terminate,
            _ = self.int.recv() => StopSignal::Interrupt,
        }
    }
}
