//! The socket under a connection, opened here rather than by tokio-postgres so that its reads
//! are buffered.
//!
//! tokio-postgres reads into a buffer of about 8 KiB, so a `COPY` of a large table costs one
//! `recv` per 8 KiB, each with its share of TCP acknowledgement work in the kernel: about an
//! eighth of the client's CPU on TPC-H lineitem. A read buffer in front of the socket takes
//! whatever the socket holds in one call (docs/benchmarks.md has the figures).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Bytes read from the socket at most per call.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// TCP keepalive probes start after this much silence.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// A connection whose sent data stays unacknowledged this long is dead.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(120);

/// A buffered TCP or Unix socket.
pub(crate) type Transport = BufReader<Socket>;

/// TCP, or a Unix socket when the host is a directory (as libpq does: `/run/postgresql`).
pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Connects to `host:port`, trying every address the name resolves to.
pub(crate) async fn open(host: &str, port: u16) -> io::Result<Transport> {
    let socket = if host.starts_with('/') {
        Socket::Unix(UnixStream::connect(Path::new(host).join(format!(".s.PGSQL.{port}"))).await?)
    } else {
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let options = socket2::SockRef::from(&tcp);
        options.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE))?;
        #[cfg(target_os = "linux")]
        options.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))?;
        Socket::Tcp(tcp)
    };
    Ok(BufReader::with_capacity(READ_BUFFER_BYTES, socket))
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
