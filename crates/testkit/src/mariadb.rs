//! A private MariaDB server for tests.
//!
//! [`MariaDb::start`] initializes a data directory with `mariadb-install-db` (once per test
//! process; later servers copy that template), starts `mariadbd` on `127.0.0.1` with a port the
//! OS picked (retrying when another process takes it first) and waits until it answers.
//! [`MariaDb::shared`] is one server per test binary for tests that only need tables.
//!
//! Every server runs under a small supervisor shell that stops it and deletes its directory
//! when the handle is dropped *or* when the test process goes away (killed, or a `static`
//! handle that is never dropped), so no server outlives its tests.
//!
//! Servers run with a non-UTC default time zone (`+03:00`) and `utf8mb4` as the server
//! character set: sources must force their own session zone and character set, and the tests
//! prove they do. Each server has TLS: a private CA signs a certificate for `localhost` only
//! (no IP address), so connecting to `127.0.0.1` passes a CA check but fails a host-name check.
//!
//! SQL is run with the `mariadb` command-line client as `root` over the server's socket.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const MARIADBD: &str = "/usr/sbin/mariadbd";
const INSTALL_DB: &str = "mariadb-install-db";
const CLIENT: &str = "mariadb";
/// The default zone of every test server; anything but UTC, so zone handling is tested.
pub const SERVER_TIME_ZONE: &str = "+03:00";
const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Options the server is started with.
#[derive(Debug, Clone, Default)]
pub struct MariaDbOptions {
    /// Extra `mariadbd` arguments, e.g. `--max-connections=5`.
    pub extra_args: Vec<String>,
}

/// A running private MariaDB server; stopped and deleted on drop.
pub struct MariaDb {
    dir: PathBuf,
    port: u16,
    supervisor: Child,
    tls: TlsFiles,
}

/// PEM files of the server's TLS setup.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The private CA that signed the server certificate.
    pub ca: PathBuf,
    /// A CA that signed nothing the server uses: trusting only it must fail.
    pub other_ca: PathBuf,
    /// The DNS name in the server certificate (`localhost`).
    pub server_name: String,
}

impl MariaDb {
    /// One server for the whole test binary, started on first use.
    pub fn shared() -> &'static MariaDb {
        static SHARED: OnceLock<MariaDb> = OnceLock::new();
        SHARED.get_or_init(|| MariaDb::start(MariaDbOptions::default()).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Starts a new private server.
    pub fn start(options: MariaDbOptions) -> Result<MariaDb, String> {
        let template = template()?;
        let root = TempDir::with_prefix("backhaul-mariadb-").map_err(|e| format!("temp dir: {e}"))?;
        // The supervisor deletes the directory; the TempDir must not race it.
        let dir = root.keep();
        let data = dir.join("data");
        copy_dir(template, &data)?;
        let mut tls = make_certificates(&dir)?;
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let mut supervisor = spawn_supervised(&dir, port, &options)?;
            match wait_ready(&dir, &mut supervisor) {
                Ok(()) => {
                    return Ok(MariaDb {
                        dir,
                        port,
                        supervisor,
                        tls,
                    });
                }
                Err(e) => {
                    stop(&mut supervisor);
                    last = e;
                    // Only a port taken between probing and binding is worth another try.
                    if !last.contains("Bind on TCP/IP port") && !last.contains("Address already in use") {
                        break;
                    }
                    // The supervisor deleted the directory on exit; set it up again.
                    let _ = fs::create_dir_all(&dir);
                    copy_dir(template, &data)?;
                    tls = make_certificates(&dir)?;
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        Err(format!("could not start mariadbd: {last}"))
    }

    /// `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser, which has no password over TCP from 127.0.0.1.
    pub fn root_user(&self) -> &str {
        "root"
    }

    /// The server's TLS files.
    pub fn tls(&self) -> &TlsFiles {
        &self.tls
    }

    /// The server's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    /// A scratch directory that lives as long as the server.
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.join("scratch");
        let _ = fs::create_dir_all(&p);
        p
    }

    /// Runs SQL as root (statements separated by `;`) and returns the rows, tab-separated,
    /// one line per row, without a header. Panics with the server's message on failure.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`MariaDb::sql`] returning the client's error instead of panicking.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let mut child = Command::new(CLIENT)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["--user=root", "--batch", "--skip-column-names", "--raw"])
            .arg("--default-character-set=utf8mb4")
            .arg("--max-allowed-packet=256M")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {CLIENT}: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped");
        let text = sql.to_string();
        // Large scripts must not dead-lock against the client's output pipe.
        let feeder = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
        let out = child.wait_with_output().map_err(|e| format!("{CLIENT}: {e}"))?;
        let _ = feeder.join();
        if !out.status.success() {
            let shown: String = sql.chars().take(300).collect();
            return Err(format!(
                "SQL failed ({}): {}\n--- SQL ---\n{shown}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a database if missing.
    pub fn create_database(&self, name: &str) {
        self.sql(&format!(
            "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        ));
    }

    /// Creates (or replaces) a user with a password and full rights on one database.
    pub fn create_user(&self, user: &str, password: &str, database: &str) {
        self.sql(&format!(
            "CREATE OR REPLACE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}';
             CREATE OR REPLACE USER '{user}'@'localhost' IDENTIFIED BY '{password}';
             GRANT ALL ON `{database}`.* TO '{user}'@'127.0.0.1';
             GRANT ALL ON `{database}`.* TO '{user}'@'localhost';"
        ));
    }

    /// Kills the server process with SIGKILL, as a crash would. The server stays down (and its
    /// directory is deleted); use a server of its own for such tests, never [`MariaDb::shared`].
    pub fn kill_server(&self) {
        if let Ok(pid) = fs::read_to_string(self.dir.join("mariadbd.pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }

    /// The server's error log, for failure messages.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        stop(&mut self.supervisor);
    }
}

/// Asks the supervisor to stop the server and delete the directory, and waits for it.
fn stop(supervisor: &mut Child) {
    if let Ok(None) = supervisor.try_wait() {
        let _ = Command::new("kill")
            .args(["-TERM", &supervisor.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = supervisor.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = supervisor.kill();
        let _ = supervisor.wait();
    }
}

/// A data directory initialized once per test process; servers start from copies of it. A
/// watcher shell deletes it when the test process is gone (a `static` is never dropped).
fn template() -> Result<&'static Path, String> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let dir = TempDir::with_prefix("backhaul-mariadb-template-")
                .map_err(|e| format!("temp dir: {e}"))?
                .keep();
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "while kill -0 {} 2>/dev/null; do sleep 1; done; rm -rf '{}'",
                    std::process::id(),
                    dir.display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start the cleanup shell: {e}"))?;
            let data = dir.join("data");
            let mut cmd = Command::new(INSTALL_DB);
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args([
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--skip-name-resolve",
                    "--innodb-log-file-size=16M",
                    "--innodb-buffer-pool-size=64M",
                ]);
            if is_root() {
                cmd.arg("--user=root");
            }
            let out = cmd
                .output()
                .map_err(|e| format!("cannot run {INSTALL_DB} (install mariadb-server): {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{INSTALL_DB} failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(data)
        })
        .as_deref()
        .map_err(Clone::clone)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cp -a {} {} failed", from.display(), to.display()))
    }
}

/// A port nobody listens on right now. Another process may take it before the server binds
/// it; [`MariaDb::start`] retries then.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// Starts `mariadbd` under a shell that stops it and deletes `dir` when told to (SIGTERM) or
/// when the test process is gone.
fn spawn_supervised(dir: &Path, port: u16, options: &MariaDbOptions) -> Result<Child, String> {
    let mut args: Vec<String> = vec![
        "--no-defaults".into(),
        format!("--datadir={}", dir.join("data").display()),
        format!("--socket={}", dir.join("mysqld.sock").display()),
        format!("--pid-file={}", dir.join("mariadbd.pid").display()),
        format!("--log-error={}", dir.join("error.log").display()),
        format!("--tmpdir={}", dir.display()),
        format!("--port={port}"),
        "--bind-address=127.0.0.1".into(),
        "--skip-name-resolve".into(),
        format!("--default-time-zone={SERVER_TIME_ZONE}"),
        "--character-set-server=utf8mb4".into(),
        "--collation-server=utf8mb4_general_ci".into(),
        "--innodb-log-file-size=16M".into(),
        "--innodb-buffer-pool-size=64M".into(),
        "--innodb-flush-log-at-trx-commit=0".into(),
        "--innodb-doublewrite=0".into(),
        "--max-allowed-packet=64M".into(),
        format!("--ssl-ca={}", dir.join("ca.pem").display()),
        format!("--ssl-cert={}", dir.join("server.pem").display()),
        format!("--ssl-key={}", dir.join("server.key").display()),
    ];
    if is_root() {
        args.push("--user=root".into());
    }
    args.extend(options.extra_args.iter().cloned());
    let quoted: Vec<String> = std::iter::once(MARIADBD.to_string())
        .chain(args)
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let script = format!(
        r#"
owner={owner}
dir='{dir}'
{server} >/dev/null 2>&1 &
server=$!
finish() {{ kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"; exit 0; }}
trap finish TERM INT HUP
while kill -0 $owner 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 0.5 & wait $!; done
finish
"#,
        owner = std::process::id(),
        dir = dir.display(),
        server = quoted.join(" "),
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the supervisor shell: {e}"))
}

fn wait_ready(dir: &Path, supervisor: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let log = || fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    loop {
        if let Ok(Some(status)) = supervisor.try_wait() {
            return Err(format!("mariadbd exited ({status}) while starting:\n{}", log()));
        }
        let log_now = log();
        if log_now.contains("Bind on TCP/IP port") || log_now.contains("Address already in use") {
            return Err(log_now);
        }
        let ok = Command::new(CLIENT)
            .arg("--no-defaults")
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .args(["--user=root", "--connect-timeout=2", "-e", "SELECT 1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok && log_now.contains("ready for connections") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("mariadbd not ready within {READY_TIMEOUT:?}:\n{}", log()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private CA, a server certificate for `localhost` signed by it, and an unrelated CA.
fn make_certificates(dir: &Path) -> Result<TlsFiles, String> {
    let openssl = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("cannot run openssl (install it for the TLS tests): {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let ca = |name: &str| -> Result<(), String> {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "3650",
            "-subj",
            &format!("/CN=backhaul test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
    };
    ca("ca")?;
    ca("other-ca")?;
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ])?;
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| format!("write server.ext: {e}"))?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "3650",
        "-extfile",
        "server.ext",
    ])?;
    Ok(TlsFiles {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        server_name: "localhost".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_cleans_up() {
        let server = MariaDb::start(MariaDbOptions::default()).unwrap();
        assert_eq!(server.sql("SELECT 1 + 1").trim(), "2");
        assert_eq!(server.sql("SELECT @@time_zone").trim(), SERVER_TIME_ZONE);
        assert!(server.try_sql("SELECT * FROM nowhere.nothing").is_err());
        assert!(server.tls().ca.exists());
        let dir = server.dir.clone();
        drop(server);
        assert!(!dir.exists(), "{} was not deleted", dir.display());
    }
}
