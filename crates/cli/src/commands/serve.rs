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

/// Binds the HTTP listener when asked, announcing its address.
pub async fn bind_http(addr: Option<SocketAddr>, addr_file: Option<&Path>) -> Result<Option<TcpListener>> {
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
