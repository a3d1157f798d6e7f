//! Connecting: options, session setup, TLS, and the error classification every call shares.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::spec::MysqlSourceSpec;
use backhaul_core::Error;
use backhaul_core::secret::Secret;
use backhaul_core::spec::database::TlsMode;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};

use crate::tls;

/// How long connecting (TCP, TLS, authentication, session setup) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Statements run on every new connection.
///
/// - `time_zone = '+00:00'`: the server converts TIMESTAMP values to the session zone, so UTC
///   gives back exactly the stored instant (no DST gaps or folds).
/// - `NAMES utf8mb4`: text of any column character set arrives as UTF-8 without loss.
/// - `net_write_timeout`: a streaming read waits while the writer catches up (backpressure);
///   the default 60 s would make the server drop a connection that is merely slow to read.
const SESSION_SETUP: &[&str] = &[
    "SET time_zone = '+00:00'",
    "SET NAMES utf8mb4",
    "SET SESSION net_write_timeout = 3600",
];

/// Connection settings of one source. The password is kept here and nowhere else; `Debug`
/// never shows it.
#[derive(Clone)]
pub(crate) struct Connector {
    host: String,
    port: u16,
    user: String,
    database: String,
    password: Option<Secret>,
    tls_mode: TlsMode,
    ca_file: Option<std::path::PathBuf>,
    /// For `verify_ca`: a name the server's certificate holds, learnt once by a probe.
    ca_checked_name: Arc<tokio::sync::OnceCell<String>>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("password", &self.password)
            .field("tls_mode", &self.tls_mode)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Connector {
    /// Reads the password (IO at build time) and keeps the rest of the settings.
    pub(crate) fn new(spec: &MysqlSourceSpec) -> backhaul_core::Result<Self> {
        let password = spec
            .connection
            .password
            .read("<spec>", "source.password")?
            .map(Secret::new);
        Ok(Connector {
            host: spec.connection.host.clone(),
            port: spec.port_or_default(),
            user: spec.connection.user.clone(),
            database: spec.connection.database.clone(),
            password,
            tls_mode: spec.connection.tls.mode,
            ca_file: spec.connection.tls.ca_file.clone(),
            ca_checked_name: Arc::default(),
        })
    }

    /// `host:port`, for messages.
    pub(crate) fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Opens a connection with the session set up, within [`CONNECT_TIMEOUT`].
    pub(crate) async fn connect(&self) -> backhaul_core::Result<Conn> {
        let opts = self.opts().await?;
        match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.classify(e, "connecting")),
            Err(_) => Err(Error::Unreachable {
                system: format!("mysql {}", self.endpoint()),
                message: format!("connecting took longer than {CONNECT_TIMEOUT:?}"),
            }),
        }
    }

    async fn opts(&self) -> backhaul_core::Result<Opts> {
        let mut builder = OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(self.password.as_ref().map(|p| p.expose().to_string()))
            .db_name(Some(self.database.clone()))
            // A loopback host would otherwise be swapped for the unix socket, skipping TLS.
            .prefer_socket(false)
            .tcp_nodelay(true)
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .stmt_cache_size(8)
            .setup(SESSION_SETUP.iter().rev().map(|s| s.to_string()).collect::<Vec<_>>());
        builder = match self.tls_mode {
            TlsMode::Disable => builder.ssl_opts(None::<SslOpts>),
            TlsMode::VerifyFull => builder.ssl_opts(self.ssl_opts()),
            TlsMode::VerifyCa => {
                let name = self
                    .ca_checked_name
                    .get_or_try_init(|| tls::certificate_name(self))
                    .await?;
                // Naming a host the certificate holds makes the host-name check pass whatever
                // host we dialled; the chain is still verified against the CA.
                builder.ssl_opts(self.ssl_opts().with_danger_tls_hostname_override(Some(name.clone())))
            }
        };
        Ok(builder.into())
    }

    fn ssl_opts(&self) -> SslOpts {
        let opts = SslOpts::default();
        match &self.ca_file {
            Some(path) => opts
                .with_root_certs(vec![path.clone().into()])
                .with_disable_built_in_roots(true),
            None => opts,
        }
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    /// Maps a driver error to backhaul's error, by MySQL error code and IO kind. `doing` says
    /// what was being done (`connecting`, `reading orders`).
    pub(crate) fn classify(&self, e: mysql_async::Error, doing: &str) -> Error {
        classify(e, &self.endpoint(), &self.user, doing)
    }
}

/// MySQL/MariaDB server error codes backhaul treats specially.
pub(crate) mod code {
    pub const ACCESS_DENIED_DB: u16 = 1044;
    pub const ACCESS_DENIED: u16 = 1045;
    pub const UNKNOWN_DATABASE: u16 = 1049;
    pub const UNKNOWN_COLUMN: u16 = 1054;
    pub const NO_SUCH_TABLE: u16 = 1146;
    pub const TABLE_ACCESS_DENIED: u16 = 1142;
    pub const COLUMN_ACCESS_DENIED: u16 = 1143;
    pub const SPECIFIC_ACCESS_DENIED: u16 = 1227;
    pub const ACCESS_DENIED_NO_PASSWORD: u16 = 1698;
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
    pub const TOO_MANY_USER_CONNECTIONS: u16 = 1203;
    pub const USER_LIMIT_REACHED: u16 = 1226;
    pub const OUT_OF_RESOURCES: u16 = 1041;
    pub const CANT_CREATE_THREAD: u16 = 1135;
    pub const SERVER_SHUTDOWN: u16 = 1053;
    pub const NET_READ_ERROR: u16 = 1158;
    pub const NET_READ_INTERRUPTED: u16 = 1159;
    pub const NET_WRITE_ERROR: u16 = 1160;
    pub const NET_WRITE_INTERRUPTED: u16 = 1161;
    pub const LOCK_WAIT_TIMEOUT: u16 = 1205;
    pub const LOCK_DEADLOCK: u16 = 1213;
    pub const QUERY_INTERRUPTED: u16 = 1317;
    pub const NEED_REPREPARE: u16 = 1615;
    pub const CONNECTION_KILLED: u16 = 1927;
    pub const STATEMENT_TIMEOUT: u16 = 1969;
    pub const QUERY_TIMEOUT: u16 = 3024;
    pub const CLIENT_INTERACTION_TIMEOUT: u16 = 4031;
    pub const SERVER_GONE: u16 = 2006;
    pub const SERVER_LOST: u16 = 2013;
}

/// See [`Connector::classify`].
pub(crate) fn classify(e: mysql_async::Error, endpoint: &str, user: &str, doing: &str) -> Error {
    use mysql_async::{DriverError, IoError};
    let system = format!("mysql {endpoint}");
    let transient = |message: String| Error::Unreachable {
        system: system.clone(),
        message,
    };
    match e {
        mysql_async::Error::Server(s) => {
            let message = format!("{doing}: {} (error {}, SQLSTATE {})", s.message, s.code, s.state);
            match s.code {
                code::TOO_MANY_CONNECTIONS
                | code::TOO_MANY_USER_CONNECTIONS
                | code::USER_LIMIT_REACHED
                | code::OUT_OF_RESOURCES
                | code::CANT_CREATE_THREAD => Error::Throttled { system, message },
                code::SERVER_SHUTDOWN
                | code::NET_READ_ERROR
                | code::NET_READ_INTERRUPTED
                | code::NET_WRITE_ERROR
                | code::NET_WRITE_INTERRUPTED
                | code::LOCK_WAIT_TIMEOUT
                | code::LOCK_DEADLOCK
                | code::QUERY_INTERRUPTED
                | code::NEED_REPREPARE
                | code::CONNECTION_KILLED
                | code::STATEMENT_TIMEOUT
                | code::QUERY_TIMEOUT
                | code::CLIENT_INTERACTION_TIMEOUT
                | code::SERVER_GONE
                | code::SERVER_LOST => transient(message),
                code::ACCESS_DENIED
                | code::ACCESS_DENIED_DB
                | code::ACCESS_DENIED_NO_PASSWORD
                | code::TABLE_ACCESS_DENIED
                | code::COLUMN_ACCESS_DENIED
                | code::SPECIFIC_ACCESS_DENIED => Error::InvalidObject {
                    object: format!("mysql user `{user}` at {endpoint}"),
                    message: format!("{message}; check the user, its password and its grants"),
                },
                code::UNKNOWN_DATABASE | code::NO_SUCH_TABLE | code::UNKNOWN_COLUMN => Error::InvalidObject {
                    object: format!("mysql {endpoint}"),
                    message,
                },
                // SQLSTATE class 08 is a connection exception, 40 a rolled-back transaction:
                // both are worth another try.
                _ if s.state.starts_with("08") || s.state.starts_with("40") => transient(message),
                _ => Error::InvalidObject {
                    object: format!("mysql {endpoint}"),
                    message,
                },
            }
        }
        mysql_async::Error::Io(IoError::Io(io)) => {
            if let Some(tls_error) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                return tls_failure(endpoint, doing, &tls_error.to_string());
            }
            use std::io::ErrorKind::*;
            match io.kind() {
                InvalidData | InvalidInput | PermissionDenied | Unsupported => Error::InvalidObject {
                    object: format!("mysql {endpoint}"),
                    message: format!("{doing}: {io}"),
                },
                _ => transient(format!("{doing}: {io}")),
            }
        }
        mysql_async::Error::Io(IoError::Tls(t)) => tls_failure(endpoint, doing, &t.to_string()),
        mysql_async::Error::Driver(
            DriverError::ConnectionClosed | DriverError::PacketOutOfOrder | DriverError::UnexpectedPacket { .. },
        ) => transient(format!("{doing}: the connection broke")),
        mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => Error::InvalidObject {
            object: format!("mysql {endpoint}"),
            message: "the server does not offer TLS; set `tls.mode = \"disable\"` only on trusted networks".into(),
        },
        mysql_async::Error::Driver(d) => Error::InvalidObject {
            object: format!("mysql {endpoint}"),
            message: format!("{doing}: {d}"),
        },
        other => Error::Internal(format!("mysql {endpoint}: {doing}: {other}")),
    }
}

pub(crate) fn tls_failure(endpoint: &str, doing: &str, detail: &str) -> Error {
    Error::InvalidObject {
        object: format!("mysql {endpoint}"),
        message: format!("{doing}: TLS failed: {detail}; check `tls.mode`, `tls.ca_file` and the server certificate"),
    }
}
