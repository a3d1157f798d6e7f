//! Connections to the PostgreSQL state database.
//!
//! - [`Connector`]: the `--state` URL as a tokio-postgres config plus TLS. `sslmode`
//!   (`disable` or `verify-full`) and `sslrootcert` are handled here with rustls on ring; every
//!   other part (user, host, port, database, `options=-csearch_path=...`, `connect_timeout`,
//!   `application_name`) is tokio-postgres's. The password appears in no message: errors and
//!   logs name [`Connector::shown`], the URL without it.
//! - [`Pool`]: a fixed number of connections, opened on demand and replaced once they die; each
//!   connection's IO task lives in the pool's `JoinSet`, so none outlives the store.
//! - [`LockSession`] and [`keep_serving_lock`]: the session-level advisory lock a serving store
//!   holds on a connection of its own, and the task that watches it. While the lock is not
//!   held the [`Fence`] refuses state changes; a serving epoch, bumped by every new holder,
//!   tells a store that got the lock back whether someone else served in between.

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinSet;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{CoordinatorError, Result};

/// How long establishing a connection may take unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the lock session is asked whether it is alive; a dead peer shows within
/// `LOCK_PING_EVERY + LOCK_PING_TIMEOUT`, not after TCP keepalive's minutes.
const LOCK_PING_EVERY: Duration = Duration::from_secs(2);
const LOCK_PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts to take a lost serving lock back.
const LOCK_RETRY_EVERY: Duration = Duration::from_secs(1);

/// Takes the serving lock of the schema the session works in (the first of its `search_path`),
/// so coordinators on different schemas of one database do not exclude each other.
const TRY_SERVING_LOCK: &str =
    "SELECT pg_try_advisory_lock(hashtextextended('backhaul-serving:' || coalesce(current_schema(), ''), 0)),
            (SELECT epoch FROM backhaul_serving)";

/// The IO half of a connection: runs until the connection ends.
type Driver = Pin<Box<dyn Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send>>;

/// Everything needed to open connections to the state database.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Config,
    tls: Option<MakeRustlsConnect>,
    /// The URL without its password: the only form that appears in messages.
    pub(crate) shown: String,
}

impl Connector {
    /// Parses a `postgres://` state URL. `password` fills in a URL without one (from a file or
    /// the environment, so it need not be in the URL).
    pub(crate) fn parse(url: &str, password: Option<String>) -> Result<Self> {
        let shown = without_password(url);
        let bad = |message: String| CoordinatorError::StateUrl {
            url: shown.clone(),
            message,
        };
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut sslmode, mut rootcert, mut rest) = (None, None, Vec::new());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match percent_decode(key).as_str() {
                "sslmode" => sslmode = Some(percent_decode(value)),
                "sslrootcert" => rootcert = Some(PathBuf::from(percent_decode(value))),
                _ => rest.push(pair),
            }
        }
        let text = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        // tokio-postgres's parse errors name the offending key, never a value.
        let mut config: Config = text.parse().map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
        if config.get_hosts().is_empty() {
            return Err(bad("the URL names no host".into()));
        }
        if config.get_password().is_none()
            && let Some(password) = password
        {
            config.password(password);
        }
        if config.get_application_name().is_none() {
            config.application_name("backhaul-coordinator");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // tokio-postgres's default idle time before keepalive probes is two hours.
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(30));
        }
        let local = config.get_hosts().iter().all(is_local);
        // A CA file only makes sense with verification, so it implies verify-full.
        let mode = sslmode.or_else(|| rootcert.as_ref().map(|_| "verify-full".to_string()));
        let tls = match mode.as_deref() {
            None if local => None,
            None => {
                return Err(bad(
                    "give sslmode for a host that is not loopback: sslmode=verify-full (with sslrootcert=PATH for a private CA), or sslmode=disable on a network you trust".into(),
                ));
            }
            Some("disable") if rootcert.is_some() => {
                return Err(bad("sslrootcert needs sslmode=verify-full".into()));
            }
            Some("disable") => None,
            Some("verify-full") => {
                config.ssl_mode(SslMode::Require);
                Some(MakeRustlsConnect::new(tls_config(rootcert.as_deref()).map_err(bad)?))
            }
            Some(other) => {
                return Err(bad(format!(
                    "sslmode={other} is not supported for the state database; use verify-full, or disable on a network you trust"
                )));
            }
        };
        if tls.is_none() {
            config.ssl_mode(SslMode::Disable);
        }
        Ok(Connector { config, tls, shown })
    }

    /// Opens a connection; the caller runs (or spawns) its driver.
    async fn connect(&self) -> std::result::Result<(Client, Driver), tokio_postgres::Error> {
        Ok(match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                (client, Box::pin(connection) as Driver)
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                (client, Box::pin(connection) as Driver)
            }
        })
    }

    /// The error of a failed call, naming the database without its password.
    pub(crate) fn error(&self, source: tokio_postgres::Error) -> CoordinatorError {
        CoordinatorError::Postgres {
            url: self.shown.clone(),
            source,
        }
    }
}

/// `postgres://user:secret@host/db?password=x&sslmode=...` without the secrets. Like
/// tokio-postgres, the credentials end at the first `@`.
pub(crate) fn without_password(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let rest = match rest.split_once('@') {
        Some((creds, after)) => {
            let user = creds.split_once(':').map_or(creds, |(user, _)| user);
            format!("{user}@{after}")
        }
        None => rest.to_string(),
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base.to_string(), Some(query)),
        None => (rest, None),
    };
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && percent_decode(p.split_once('=').map_or(*p, |(k, _)| k)) != "password")
        .collect();
    if kept.is_empty() {
        format!("{scheme}{base}")
    } else {
        format!("{scheme}{base}?{}", kept.join("&"))
    }
}

/// Decodes `%XX` escapes (invalid ones stay as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Unix socket, `localhost` or a loopback address: traffic that never leaves the machine.
fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// rustls on ring, trusting `rootcert` (PEM) or, without it, the public web PKI roots.
fn tls_config(rootcert: Option<&Path>) -> std::result::Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    match rootcert {
        Some(path) => {
            let shown = |e: &dyn std::fmt::Display| format!("sslrootcert {}: {e}", path.display());
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| shown(&e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| shown(&e))?;
            if certs.is_empty() {
                return Err(shown(&"no PEM certificate in the file"));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| shown(&e))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("rustls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Awaits `call` on a connection whose driver is `driver`, running the driver meanwhile.
async fn drive<T>(
    driver: &mut Driver,
    call: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> std::result::Result<T, tokio_postgres::Error> {
    tokio::pin!(call);
    tokio::select! {
        out = &mut call => out,
        ended = driver => match ended {
            Err(e) => Err(e),
            // The connection closed cleanly, so the call fails as closed; the driver is never
            // polled again.
            Ok(()) => call.await,
        },
    }
}

/// A fixed number of connections to the state database.
pub(crate) struct Pool {
    pub(crate) connector: Connector,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
    /// Connection IO tasks and the serving-lock keeper; aborted when the pool drops.
    pub(crate) tasks: Mutex<JoinSet<()>>,
}

impl Pool {
    /// A pool of at most `size` connections; none is opened yet.
    pub(crate) fn new(connector: Connector, size: usize) -> Self {
        Pool {
            connector,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// A connection: an idle one that is still open, or a new one.
    pub(crate) async fn get(&self) -> Result<Pooled<'_>> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| CoordinatorError::Task("the state connection pool closed".into()))?;
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            std::iter::from_fn(|| idle.pop()).find(|c| !c.is_closed())
        };
        let client = match reused {
            Some(client) => client,
            None => {
                let (client, driver) = self.connector.connect().await.map_err(|e| self.connector.error(e))?;
                self.spawn(async move {
                    if let Err(e) = driver.await {
                        tracing::debug!(error = %e, "a state database connection ended");
                    }
                });
                client
            }
        };
        Ok(Pooled {
            pool: self,
            client: Some(client),
            reusable: false,
            _permit: permit,
        })
    }

    /// Runs `task` in the pool's task set (reaping the ones that ended).
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }
}

/// A pooled connection. It goes back to the pool only after a call that ran to its end
/// ([`Pooled::settle`]); one dropped mid-call (timed out, or its caller went away) is closed,
/// since a connection that hung once is not worth a second try.
pub(crate) struct Pooled<'p> {
    pool: &'p Pool,
    client: Option<Client>,
    reusable: bool,
    _permit: SemaphorePermit<'p>,
}

impl Pooled<'_> {
    /// The outcome of a call bounded by `tokio::time::timeout`; marks the connection reusable
    /// when the call ended by itself.
    pub(crate) fn settle<T>(
        mut self,
        out: std::result::Result<Result<T>, tokio::time::error::Elapsed>,
        budget: Duration,
    ) -> Result<T> {
        match out {
            Ok(result) => {
                self.reusable = true;
                result
            }
            Err(_) => Err(CoordinatorError::StateUnavailable {
                url: self.pool.connector.shown.clone(),
                reason: format!("no answer within {budget:?}"),
            }),
        }
    }
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a pooled connection is present until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("a pooled connection is present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && self.reusable
            && !client.is_closed()
        {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(client);
        }
    }
}

/// Whether this store may change state: it holds the serving lock (or never needed it).
pub(crate) struct Fence {
    state: AtomicU8,
    /// The serving epoch this store set when it took the lock.
    pub(crate) epoch: i64,
}

const SERVING: u8 = 0;
const SUSPENDED: u8 = 1;
const LOST: u8 = 2;

impl Fence {
    pub(crate) fn new(epoch: i64) -> Self {
        Fence {
            state: AtomicU8::new(SERVING),
            epoch,
        }
    }

    /// Refuses while the lock is not held (for now, or for good).
    pub(crate) fn check(&self, url: &str) -> Result<()> {
        match self.state.load(Ordering::SeqCst) {
            SERVING => Ok(()),
            SUSPENDED => Err(CoordinatorError::StateUnavailable {
                url: url.into(),
                reason: "the serving lock is being taken again after its session ended".into(),
            }),
            _ => Err(CoordinatorError::StateLockLost { url: url.into() }),
        }
    }

    /// Whether another coordinator served since this one took the lock.
    pub(crate) fn is_lost(&self) -> bool {
        self.state.load(Ordering::SeqCst) == LOST
    }

    /// Another coordinator served since this one took the lock: never change state again.
    pub(crate) fn lose(&self) {
        self.state.store(LOST, Ordering::SeqCst);
    }

    fn set(&self, from: u8, to: u8) {
        let _ = self
            .state
            .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// A connection holding the serving lock; the lock lasts as long as the session.
pub(crate) struct LockSession {
    client: Client,
    driver: Driver,
}

impl LockSession {
    /// Connects and tries the lock; `None` when another session holds it. Also returns the
    /// serving epoch, read in the same statement.
    pub(crate) async fn acquire(
        connector: &Connector,
    ) -> std::result::Result<(Option<Self>, Option<i64>), tokio_postgres::Error> {
        let (client, mut driver) = connector.connect().await?;
        let row = drive(&mut driver, client.query_one(TRY_SERVING_LOCK, &[])).await?;
        let (held, epoch): (bool, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
        Ok((held.then_some(LockSession { client, driver }), epoch))
    }

    /// Runs the session until it is found dead; returns why.
    async fn watch(&mut self) -> String {
        let ended = |r: std::result::Result<(), tokio_postgres::Error>| match r {
            Ok(()) => "its session closed".to_string(),
            Err(e) => format!("its session failed: {e}"),
        };
        loop {
            tokio::select! {
                r = &mut self.driver => return ended(r),
                _ = tokio::time::sleep(LOCK_PING_EVERY) => {}
            }
            let ping = tokio::time::timeout(LOCK_PING_TIMEOUT, self.client.simple_query("SELECT 1"));
            tokio::select! {
                r = &mut self.driver => return ended(r),
                answer = ping => match answer {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("its session failed: {e}"),
                    Err(_) => return format!("its session did not answer within {LOCK_PING_TIMEOUT:?}"),
                },
            }
        }
    }
}

/// Holds the serving lock for the store's lifetime (the task is aborted with the pool). When
/// the session dies, state changes are refused until the lock is taken again with the
/// serving epoch unchanged; if another coordinator served in between, they stay refused.
pub(crate) async fn keep_serving_lock(connector: Connector, fence: Arc<Fence>, mut session: LockSession) {
    loop {
        let reason = session.watch().await;
        fence.set(SERVING, SUSPENDED);
        tracing::warn!(state = %connector.shown, %reason, "lost the serving lock of the state database; refusing state changes until it is held again");
        drop(session);
        session = loop {
            tokio::time::sleep(LOCK_RETRY_EVERY).await;
            let (candidate, epoch) = match LockSession::acquire(&connector).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::debug!(error = %e, "taking the serving lock again failed");
                    continue;
                }
            };
            // Whoever takes the lock bumps the epoch, so a new epoch means another server,
            // whether or not it still holds the lock.
            if epoch != Some(fence.epoch) {
                fence.lose();
                tracing::error!(state = %connector.shown, "another coordinator served this state database meanwhile; this one changes no state any more: restart it");
                return;
            }
            if let Some(session) = candidate {
                fence.set(SUSPENDED, SERVING);
                tracing::info!(state = %connector.shown, "holding the serving lock of the state database again");
                break session;
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_carry_no_password() {
        for (url, shown) in [
            (
                "postgres://u:s3cret@db.example:5433/state?sslmode=verify-full",
                "postgres://u@db.example:5433/state?sslmode=verify-full",
            ),
            (
                "postgresql://u@127.0.0.1/state?password=s3cret&options=-csearch_path%3Dbh",
                "postgresql://u@127.0.0.1/state?options=-csearch_path%3Dbh",
            ),
            ("postgres://u:s3cret@h/db?pass%77ord=s3cret", "postgres://u@h/db"),
            ("postgres://h/db", "postgres://h/db"),
        ] {
            assert_eq!(without_password(url), shown);
        }
    }

    #[test]
    fn ssl_modes_are_checked() {
        let parse = |url: &str| Connector::parse(url, None);
        assert!(parse("postgres://u@127.0.0.1/db").unwrap().tls.is_none());
        assert!(parse("postgres://u@localhost:5432/db").unwrap().tls.is_none());
        let err = parse("postgres://u:s3cret@db.example/db").err().unwrap();
        assert!(err.to_string().contains("sslmode=verify-full"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(
            parse("postgres://u@db.example/db?sslmode=disable")
                .unwrap()
                .tls
                .is_none()
        );
        assert!(
            parse("postgres://u@db.example/db?sslmode=verify-full")
                .unwrap()
                .tls
                .is_some()
        );
        for refused in [
            "postgres://u@db.example/db?sslmode=require",
            "postgres://u@db.example/db?sslmode=disable&sslrootcert=/ca.pem",
            "postgres://u@db.example/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "postgres://u@db.example/db?sslmode=disable&nonsense=1",
        ] {
            let err = parse(refused).err().unwrap();
            assert!(matches!(err, CoordinatorError::StateUrl { .. }), "{refused}: {err}");
            assert_eq!(err.class(), backhaul_core::ErrorClass::Permanent);
        }
    }

    #[test]
    fn a_password_from_elsewhere_fills_in_only_a_missing_one() {
        let c = Connector::parse("postgres://u@127.0.0.1/db", Some("from-file".into())).unwrap();
        assert_eq!(c.config.get_password(), Some(&b"from-file"[..]));
        let c = Connector::parse("postgres://u:in-url@127.0.0.1/db", Some("from-file".into())).unwrap();
        assert_eq!(c.config.get_password(), Some(&b"in-url"[..]));
        assert!(!c.shown.contains("in-url"));
    }

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("a%20b%2Fc%zz"), "a b/c%zz");
    }
}
