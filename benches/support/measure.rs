//! Shared by the benchmarks that run `backhaul` as a child process: one run, measured by the
//! kernel (`wait4` rusage), so peak RSS and CPU time are the child's own.

use std::io::Read;
use std::process::{Command, Stdio};

/// Runs `cmd` and returns its output, peak RSS in KiB and CPU seconds (user + system), from
/// `wait4`: the child's alone, not that of servers it talks to.
pub fn run_measured(cmd: &mut Command) -> (std::process::Output, i64, f64) {
    let child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    // Reaped below with wait4 (for its rusage), not Child::wait.
    let mut child = child;
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut b = Vec::new();
        stdout.read_to_end(&mut b).ok();
        b
    });
    let err_thread = std::thread::spawn(move || {
        let mut b = Vec::new();
        stderr.read_to_end(&mut b).ok();
        b
    });
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child, which we reap exactly once.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 failed");
    let output = std::process::Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (output, usage.ru_maxrss, secs(usage.ru_utime) + secs(usage.ru_stime))
}
