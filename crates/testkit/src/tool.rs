//! What the launchers of tool servers (moto, fakesnow, bqemulator) share: finding the tool
//! `scripts/ensure-servers` installed, and spawning it so it dies with the test process.

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command};

/// `$<env_var>`, else `.backhaul-test/<installed>` in the repository (where
/// `scripts/ensure-servers` puts it), if `check` (relative to that path) exists there.
/// Missing: `NotFound`, telling to run `scripts/ensure-servers` for `used_for`.
pub(crate) fn installed(env_var: &str, installed: &str, check: &str, used_for: &str) -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(path.into());
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.backhaul-test")
        .join(installed);
    if path.join(check).exists() {
        return Ok(path);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "{} not found (nor set in {env_var}): run scripts/ensure-servers, which installs it for {used_for}",
            path.join(check).display()
        ),
    ))
}

/// Spawns `cmd` so the kernel kills it when the test process dies (`PR_SET_PDEATHSIG`), even
/// if nothing drops its handle.
pub(crate) fn spawn_dying_with_parent(mut cmd: Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let program = cmd.get_program().to_owned();
    cmd.spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display())))
}
