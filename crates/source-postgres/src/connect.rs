//! Connections (plain or rustls TLS) and the mapping of PostgreSQL errors to retry classes.
//!
//! The class comes from the SQLSTATE of a server error, or from the IO error kind of a
//! connection failure; messages never carry the password (it is only in the tokio-postgres
//! config, whose `Debug` redacts it).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::spec::PostgresSourceSpec;
use crate::transport::{self, Transport};
use backhaul_core::spec::database::{TlsMode, TlsSpec};
use backhaul_core::{Error, ErrorClass, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long establishing a connection (TCP, TLS, authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything needed to open connections; built once from the spec (reads the password file
/// and the CA file).
#[derive(Clone)]
pub(crate) struct Connector {
    config: Config,
    /// Where the socket goes (`config` holds them too, but only `connect` would use them).
    host: String,
    port: u16,
    tls: Option<MakeRustlsConnect>,
    /// `user@host:port/database`, for messages.
    pub(crate) endpoint: String,
    user: String,
    database: String,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub(crate) fn new(spec: &PostgresSourceSpec) -> Result<Self> {
        // Only what the startup message carries: the socket is opened here (`transport`), so
        // the config's host and port would go unread.
        let mut config = Config::new();
        config
            .user(&spec.connection.user)
            .dbname(&spec.connection.database)
            .application_name("backhaul");
        if let Some(password) = spec.connection.password.read("<spec>", "source.password")? {
            config.password(password);
        }
        let tls = match spec.connection.tls.mode {
            TlsMode::Disable => {
                config.ssl_mode(SslMode::Disable);
                None
            }
            TlsMode::VerifyFull | TlsMode::VerifyCa => {
                config.ssl_mode(SslMode::Require);
                Some(MakeRustlsConnect::new(client_config(&spec.connection.tls)?))
            }
        };
        Ok(Connector {
            config,
            host: spec.connection.host.clone(),
            port: spec.port_or_default(),
            tls,
            endpoint: format!(
                "{}@{}:{}/{}",
                spec.connection.user,
                spec.connection.host,
                spec.port_or_default(),
                spec.connection.database
            ),
            user: spec.connection.user.clone(),
            database: spec.connection.database.clone(),
        })
    }

    /// Opens a connection whose IO task lives as long as the returned [`Conn`].
    pub(crate) async fn connect(&self) -> Result<Conn> {
        let attempt = async {
            let socket = transport::open(&self.host, self.port)
                .await
                .map_err(|e| self.socket_error(&e))?;
            let connected =
                match &self.tls {
                    None => self
                        .config
                        .connect_raw(socket, NoTls)
                        .await
                        .map(|(c, conn)| spawn(c, conn)),
                    Some(make) => {
                        let tls = MakeTlsConnect::<Transport>::make_tls_connect(&mut make.clone(), &self.host)
                            .map_err(|e| Error::InvalidObject {
                                object: format!("postgres server {}", self.endpoint),
                                message: format!("TLS for host {}: {e}", self.host),
                            })?;
                        self.config
                            .connect_raw(socket, tls)
                            .await
                            .map(|(c, conn)| spawn(c, conn))
                    }
                };
            connected.map_err(|e| self.error(&e, None, "connect"))
        };
        let (client, task, failure) = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Unreachable {
                    system: "source".into(),
                    message: format!("postgres {}: no connection within {CONNECT_TIMEOUT:?}", self.endpoint),
                });
            }
        };
        Ok(Conn {
            client,
            _task: AbortOnDrop(task),
            failure,
            connector: self.clone(),
        })
    }

    /// Maps a failure to open the socket (refused, unknown host, unreachable) to its class.
    fn socket_error(&self, e: &std::io::Error) -> Error {
        self.io_error(e.kind(), format!("postgres {} (connect): {e}", self.endpoint))
    }

    /// The class of an IO failure, by its kind: the one rule for sockets opened here and for IO
    /// errors inside tokio-postgres.
    fn io_error(&self, kind: std::io::ErrorKind, message: String) -> Error {
        if io_is_permanent(kind) {
            Error::InvalidObject {
                object: format!("postgres server {}", self.endpoint),
                message,
            }
        } else {
            Error::Unreachable {
                system: "source".into(),
                message,
            }
        }
    }

    /// Maps a tokio-postgres error to the core error of its class. `what` says what was being
    /// done (`connect`, `COPY public.t`, ...).
    pub(crate) fn error(&self, e: &tokio_postgres::Error, failure: Option<&str>, what: &str) -> Error {
        let place = format!("postgres {} ({what})", self.endpoint);
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            let mut message = format!("{}: {} [SQLSTATE {}]", place, db.message(), code.code());
            if let Some(detail) = db.detail() {
                message.push_str(&format!("; detail: {detail}"));
            }
            if let Some(hint) = db.hint() {
                message.push_str(&format!("; hint: {hint}"));
            }
            return classify_sqlstate(code, message, &self.user, &self.database, &self.endpoint);
        }
        let mut message = format!("{place}: {e}");
        if let Some(source) = std::error::Error::source(e) {
            message.push_str(&format!(": {source}"));
        }
        if let Some(f) = failure {
            message.push_str(&format!(" (connection: {f})"));
        }
        if e.is_closed() {
            return Error::Unreachable {
                system: "source".into(),
                message,
            };
        }
        match io_kind(e) {
            Some(kind) => self.io_error(kind, message),
            // Protocol, authentication-method and configuration errors: retrying cannot help.
            None => Error::InvalidObject {
                object: format!("postgres server {}", self.endpoint),
                message,
            },
        }
    }
}

/// The first IO error kind in the error's source chain.
fn io_kind(e: &tokio_postgres::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

/// IO failures a retry cannot fix: TLS certificate problems surface as `InvalidData`.
fn io_is_permanent(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(kind, InvalidData | InvalidInput | PermissionDenied | Unsupported)
}

/// The error of a server error's class ([`backhaul_core::sqlstate::class_of`], the table the
/// coordinator's PostgreSQL state uses too); a permanent one names what to fix.
fn classify_sqlstate(code: &SqlState, message: String, user: &str, database: &str, endpoint: &str) -> Error {
    let c = code.code();
    match backhaul_core::sqlstate::class_of(c) {
        ErrorClass::Transient => {
            return Error::Unreachable {
                system: "source".into(),
                message,
            };
        }
        ErrorClass::Throttled => {
            return Error::Throttled {
                system: "source".into(),
                message,
            };
        }
        ErrorClass::Permanent => {}
    }
    let object = match c {
        "28P01" | "28000" => {
            return Error::InvalidObject {
                object: format!("postgres role `{user}` at {endpoint}"),
                message: format!("authentication failed; check `source.user` and `source.password`: {message}"),
            };
        }
        "3D000" => format!("postgres database `{database}`"),
        "42501" => format!("postgres privileges of `{user}`"),
        _ => format!("postgres {endpoint}"),
    };
    Error::InvalidObject { object, message }
}

type Parts = (Client, JoinHandle<()>, Arc<Mutex<Option<String>>>);

/// Runs the connection's IO on its own task, remembering why it ended if it failed.
fn spawn<S, T>(client: Client, connection: tokio_postgres::Connection<S, T>) -> Parts
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let failure = Arc::new(Mutex::new(None));
    let slot = failure.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            let mut text = e.to_string();
            if let Some(s) = std::error::Error::source(&e) {
                text.push_str(&format!(": {s}"));
            }
            *slot.lock().expect("failure slot") = Some(text);
        }
    });
    (client, task, failure)
}

/// Aborts the connection task when the connection is dropped, closing the socket at once
/// (the server then ends the session and any `COPY` it was sending).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An open connection. Dropping it closes the socket.
pub(crate) struct Conn {
    pub(crate) client: Client,
    _task: AbortOnDrop,
    failure: Arc<Mutex<Option<String>>>,
    connector: Connector,
}

impl Conn {
    /// Maps an error of this connection, adding why the connection ended if it did.
    pub(crate) fn error(&self, e: &tokio_postgres::Error, what: &str) -> Error {
        let failure = self.failure.lock().expect("failure slot").clone();
        self.connector.error(e, failure.as_deref(), what)
    }

    /// The endpoint, for messages.
    pub(crate) fn endpoint(&self) -> &str {
        &self.connector.endpoint
    }
}

/// rustls with the ring provider; verification per `tls.mode`.
fn client_config(spec: &TlsSpec) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match &spec.ca_file {
        Some(path) => {
            let bad = |m: String| Error::config("<spec>", "source.tls.ca_file", m);
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(format!("{}: {e}", path.display())))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(bad(format!("{} holds no PEM certificate", path.display())));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(format!("{}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("rustls: {e}")))?;
    let config = match spec.mode {
        TlsMode::VerifyCa => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::config("<spec>", "source.tls.ca_file", format!("{e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                .with_no_client_auth()
        }
        _ => builder.with_root_certificates(roots).with_no_client_auth(),
    };
    Ok(config)
}

/// `verify_ca`: the chain must lead to a trusted CA, but the certificate may name another host.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
