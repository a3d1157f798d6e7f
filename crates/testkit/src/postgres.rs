//! A private PostgreSQL server for tests.
//!
//! [`PostgresServer::shared`] starts one server per test process (the first call pays about a
//! second for `initdb`); tests isolate themselves with [`PostgresServer::fresh_database`].
//! [`PostgresServer::start`] starts an owned server for tests that stop, restart or configure
//! it (TLS); it stops when the handle drops.
//!
//! How a server runs:
//!
//! - binaries from `BACKHAUL_PG_BIN` or the newest `/usr/lib/postgresql/*/bin`;
//! - as the `postgres` user when the tests run as root (PostgreSQL refuses root), by setting the
//!   child's uid/gid before `exec` (what `runuser -u postgres` does, without a process in
//!   between, so the server is our direct child and its pid is ours to signal);
//! - in a directory under `$TMPDIR/backhaul-testkit/`, `initdb` done once per process and copied
//!   for every further server;
//! - on `127.0.0.1` and a port the OS picked (bind to port 0, release, start; retried when
//!   another process took the port in between), Unix socket in the server's directory;
//! - durability off (`fsync`, `full_page_writes`), since tests never survive a crash of the
//!   machine; commits still reach the WAL before they return, so an immediate shutdown (a
//!   simulated crash) loses nothing;
//! - authentication: `trust` over the Unix socket (what [`PostgresServer::psql`] uses), SCRAM
//!   password over TCP (what the code under test uses), so a wrong password really fails;
//! - with [`PostgresOptions::tls`], `ssl = on` with a certificate for the name `localhost` only
//!   (so connecting to `127.0.0.1` tests host-name checks) signed by a throw-away CA, and TCP
//!   connections without TLS rejected.
//!
//! Every server gets `PR_SET_PDEATHSIG` so it dies with the test process even when nothing
//! drops it (statics never drop), and directories left by dead test processes are removed the
//! next time a server starts.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The superuser every server is created with.
pub const SUPERUSER: &str = "postgres";

/// How long a server may take to accept connections before start-up is considered failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of an owned server.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// `ssl = on` with a generated certificate; TCP connections without TLS are rejected.
    pub tls: bool,
}

/// Certificate files of a TLS server.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the server certificate (PEM).
    pub ca_cert: PathBuf,
    /// Another CA that signed nothing this server presents (PEM), for negative tests.
    pub other_ca_cert: PathBuf,
}

/// A running private PostgreSQL server.
#[derive(Debug)]
pub struct PostgresServer {
    dir: PathBuf,
    /// Removes `dir` on drop for owned servers; `None` for the shared one (swept later).
    _temp: Option<tempfile::TempDir>,
    bin: PathBuf,
    port: u16,
    password: String,
    tls: Option<TlsFiles>,
    child: Mutex<Option<Child>>,
    databases: AtomicU64,
}

impl PostgresServer {
    /// The server shared by every test of this process, started on first use.
    ///
    /// Panics when no server can be started: a test that needs one cannot run without it.
    pub fn shared() -> &'static PostgresServer {
        static SHARED: OnceLock<PostgresServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = new_server_dir().expect("create server directory").keep();
            PostgresServer::launch(dir, None, &PostgresOptions::default())
                .unwrap_or_else(|e| panic!("cannot start the shared test PostgreSQL server: {e}"))
        })
    }

    /// Starts an owned server, stopped (and its files removed) when the handle drops.
    pub fn start(options: PostgresOptions) -> io::Result<PostgresServer> {
        let temp = new_server_dir()?;
        let dir = temp.path().to_path_buf();
        PostgresServer::launch(dir, Some(temp), &options)
    }

    fn launch(dir: PathBuf, temp: Option<tempfile::TempDir>, options: &PostgresOptions) -> io::Result<Self> {
        let bin = bin_dir()?;
        let template = template(&bin)?;
        copy_dir(&template.data, &dir.join("data"))?;
        let tls = if options.tls {
            Some(make_certificates(&dir)?)
        } else {
            None
        };
        let hba = if options.tls {
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n"
        } else {
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        };
        std::fs::write(dir.join("data/pg_hba.conf"), hba)?;
        std::fs::write(dir.join("password"), &template.password)?;
        chown_for_server(&dir)?;
        let server = PostgresServer {
            dir,
            _temp: temp,
            bin,
            port: 0,
            password: template.password.clone(),
            tls,
            child: Mutex::new(None),
            databases: AtomicU64::new(0),
        };
        server.boot_on_free_port()
    }

    /// Picks a port and starts; another process may take the port between our probe and the
    /// server's bind, so a bind failure is retried with a new port.
    fn boot_on_free_port(mut self) -> io::Result<Self> {
        let mut last = None;
        for _ in 0..8 {
            self.port = free_port()?;
            match self.boot() {
                Ok(()) => return Ok(self),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free port")))
    }

    /// Starts the server process on `self.port` and waits until it accepts connections.
    fn boot(&self) -> io::Result<()> {
        let log = self.dir.join("server.log");
        let _ = std::fs::remove_file(self.dir.join("data/postmaster.pid"));
        let log_file = std::fs::File::create(&log)?;
        chown_path(&log)?;
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D").arg(self.dir.join("data"));
        let mut settings = vec![
            format!("port={}", self.port),
            "listen_addresses=127.0.0.1".into(),
            format!("unix_socket_directories={}", self.dir.display()),
            "fsync=off".into(),
            "full_page_writes=off".into(),
            "max_connections=200".into(),
            "shared_buffers=64MB".into(),
            "max_wal_size=1GB".into(),
            "log_min_messages=warning".into(),
            "autovacuum=off".into(),
        ];
        if self.tls.is_some() {
            settings.push("ssl=on".into());
            settings.push(format!("ssl_cert_file={}", self.dir.join("server.crt").display()));
            settings.push(format!("ssl_key_file={}", self.dir.join("server.key").display()));
        }
        for s in &settings {
            cmd.arg("-c").arg(s);
        }
        cmd.stdin(Stdio::null()).stdout(log_file.try_clone()?).stderr(log_file);
        let mut child = spawn_server_process(cmd)?;
        let pid_file = self.dir.join("data/postmaster.pid");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let kind = if text.contains("Address already in use") {
                    io::ErrorKind::AddrInUse
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(
                    kind,
                    format!("postgres exited with {status} during start-up:\n{text}"),
                ));
            }
            // The postmaster writes `ready` as the last line of its pid file once it accepts
            // connections.
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && text.lines().nth(7).is_some_and(|l| l.trim() == "ready")
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("postgres did not become ready within {START_TIMEOUT:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *self.child.lock().expect("child lock") = Some(child);
        Ok(())
    }

    /// TCP host: `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's name.
    pub fn user(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password (required over TCP).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A file holding the superuser's password, for `[source.password] file = ...`.
    pub fn password_file(&self) -> PathBuf {
        self.dir.join("password")
    }

    /// Directory of the Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Process id of the running postmaster (the parent of every backend), for benchmarks that
    /// measure the server's CPU from `/proc`; `None` while the server is stopped.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.child.lock().expect("child lock").as_ref().map(|c| c.id())
    }

    /// Certificates of a TLS server.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// A libpq connection string for `database` over TCP.
    pub fn connection_string(&self, database: &str) -> String {
        format!(
            "host={} port={} user={} password={} dbname={database}",
            self.host(),
            self.port,
            SUPERUSER,
            self.password
        )
    }

    /// Creates a new, empty database with a name unique to this server and returns the name.
    pub fn fresh_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{n}");
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'"),
        )
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        name
    }

    /// A `psql -X -q -A -t -v ON_ERROR_STOP=1` command connected to `database` as the
    /// superuser over the Unix socket; add `-c ...` or `-f ...` and run it.
    pub fn psql_command(&self, database: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-d", database])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE");
        cmd
    }

    /// Runs `sql` (any number of statements, stopping at the first error) in `database` as the
    /// superuser over the Unix socket, and returns what `psql -At` prints.
    pub fn psql(&self, database: &str, sql: &str) -> io::Result<String> {
        let mut child = self
            .psql_command(database)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("stdin");
        let input = sql.to_string();
        // Feed stdin on a thread: large statements would otherwise fill the pipe while psql
        // is blocked writing its output.
        let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output()?;
        feeder.join().map_err(|_| io::Error::other("stdin thread panicked"))??;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "psql failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let mut text = String::from_utf8(out.stdout).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }

    /// Fast shutdown (`SIGINT`): sessions are terminated with `admin_shutdown`, then the server
    /// exits cleanly. Waits until it is gone.
    pub fn stop(&self) -> io::Result<()> {
        self.signal_and_wait(libc::SIGINT)
    }

    /// Immediate shutdown (`SIGQUIT`), the way a crash looks to clients: connections drop
    /// without a goodbye. Waits until the server is gone.
    pub fn stop_immediately(&self) -> io::Result<()> {
        self.signal_and_wait(libc::SIGQUIT)
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&self) -> io::Result<()> {
        self.boot()
    }

    /// Fast shutdown, then start again on the same port.
    pub fn restart(&self) -> io::Result<()> {
        self.stop()?;
        self.start_again()
    }

    fn signal_and_wait(&self, signal: libc::c_int) -> io::Result<()> {
        let Some(mut child) = self.child.lock().expect("child lock").take() else {
            return Ok(());
        };
        // SAFETY: the pid is our own unreaped child, so it cannot have been reused.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.signal_and_wait(libc::SIGQUIT);
    }
}

/// A `initdb`-ed data directory every server of this process copies.
struct Template {
    data: PathBuf,
    password: String,
}

fn template(bin: &Path) -> io::Result<&'static Template> {
    static TEMPLATE: OnceLock<Result<Template, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| init_template(bin).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))
}

fn init_template(bin: &Path) -> io::Result<Template> {
    let dir = new_server_dir()?.keep();
    let password = format!("pw-{}-{}", std::process::id(), nanos());
    let pwfile = dir.join("password");
    std::fs::write(&pwfile, &password)?;
    chown_for_server(&dir)?;
    let data = dir.join("data");
    let out = as_server_user(Command::new(bin.join("initdb")))
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(Template { data, password })
}

/// `BACKHAUL_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BACKHAUL_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                "no PostgreSQL binaries in /usr/lib/postgresql (install postgresql, or set BACKHAUL_PG_BIN)",
            )
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no /usr/lib/postgresql/*/bin/postgres"))
}

/// The directory all test servers live under; leftovers of dead processes are removed.
fn base_dir() -> io::Result<PathBuf> {
    let base = std::env::temp_dir().join("backhaul-testkit");
    std::fs::create_dir_all(&base)?;
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| sweep(&base));
    Ok(base)
}

/// Removes `pg-<pid>-*` directories whose process is gone.
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("pg-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive =
            unsafe { libc::kill(pid, 0) } == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A directory for one server (or the template), named after this process so that a later
/// process can remove it once this one is gone.
fn new_server_dir() -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("pg-{}-", std::process::id()))
        .tempdir_in(base_dir()?)
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The uid/gid to run server processes as: `postgres` when we are root, else ourselves.
fn server_ids() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    static IDS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *IDS.get_or_init(|| {
        let name = std::ffi::CString::new(SUPERUSER).expect("no NUL");
        // SAFETY: getpwnam returns NULL or a pointer to a static record; read at once under
        // the OnceLock, which serializes callers in this crate.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            return None;
        }
        // SAFETY: checked non-NULL above.
        let pw = unsafe { &*pw };
        Some((pw.pw_uid, pw.pw_gid))
    })
}

fn as_server_user(mut cmd: Command) -> Command {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = server_ids() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown_path(path: &Path) -> io::Result<()> {
    if let Some((uid, gid)) = server_ids() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Gives the server user everything under `dir` (recursively).
fn chown_for_server(dir: &Path) -> io::Result<()> {
    if server_ids().is_none() {
        return Ok(());
    }
    chown_path(dir)?;
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            chown_for_server(&entry?.path())?;
        }
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    let out = Command::new("cp").arg("-a").arg(from).arg(to).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "cp -a {} {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Starts a server process from one long-lived thread.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, so forking from
/// test threads (or Tokio's blocking pool, whose threads retire when idle) would kill servers
/// early. This thread lives as long as the process, so servers die exactly with the process.
fn spawn_server_process(cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (cmd, reply) in rx {
                    let _ = reply.send(spawn_with_death_signal(cmd));
                }
                // Every sender lives in a static, so the loop never ends; keep the thread
                // anyway should that change.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn testkit thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .expect("spawner lock")
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("testkit spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("testkit spawner thread is gone"))?
}

fn spawn_with_death_signal(cmd: Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = as_server_user(cmd);
    // SAFETY: prctl is async-signal-safe; std runs this after changing uid/gid, so the setting
    // survives (a credential change would clear it).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// A throw-away CA, a server certificate for the name `localhost` signed by it, and an
/// unrelated second CA; ECDSA P-256 keys (fast to generate, supported by rustls/ring).
fn make_certificates(dir: &Path) -> io::Result<TlsFiles> {
    let run = |args: &[&str]| -> io::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("openssl (needed for TLS test servers): {e}")))?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for (name, cn) in [("ca", "backhaul test CA"), ("other-ca", "backhaul other CA")] {
        let subject = format!("/CN={cn}");
        let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &crt, "-days", "3650", "-subj", &subject]);
        run(&args)?;
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    run(&args)?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "3650",
        "-extfile",
        "server.ext",
    ])?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600))?;
    Ok(TlsFiles {
        ca_cert: dir.join("ca.crt"),
        other_ca_cert: dir.join("other-ca.crt"),
    })
}

/// Reads a file written by the server user (e.g. its log), for diagnostics.
pub fn read_log(server: &PostgresServer) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(server.dir.join("server.log")) {
        let _ = f.read_to_string(&mut text);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_server_runs_sql_in_fresh_databases() {
        let server = PostgresServer::shared();
        let db = server.fresh_database();
        let out = server
            .psql(
                &db,
                "CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2); SELECT sum(v) FROM t;",
            )
            .unwrap();
        assert_eq!(out, "3");
        assert_ne!(db, server.fresh_database());
        assert!(server.psql(&db, "SELECT nope").is_err());
        assert_eq!(
            std::fs::read_to_string(server.password_file()).unwrap(),
            server.password()
        );
    }

    #[test]
    fn owned_tls_server_restarts_on_its_port() {
        let server = PostgresServer::start(PostgresOptions { tls: true }).unwrap();
        let files = server.tls_files().unwrap();
        assert!(files.ca_cert.exists() && files.other_ca_cert.exists());
        let port = server.port();
        assert_eq!(server.psql("postgres", "SHOW ssl").unwrap(), "on");
        server.restart().unwrap();
        assert_eq!(server.port(), port);
        assert_eq!(server.psql("postgres", "SELECT 1").unwrap(), "1");
        server.stop_immediately().unwrap();
        assert!(server.psql("postgres", "SELECT 1").is_err());
        let dir = server.dir.clone();
        drop(server);
        assert!(!dir.exists(), "owned server directory removed");
    }
}
