//! CPU time of a private PostgreSQL server, read from `/proc`, so a benchmark can charge each
//! run with the database work it caused.
//!
//! Method: the server's CPU so far is the postmaster's own `utime + stime`, plus its `cutime +
//! cstime` (the CPU of every child it has already reaped: backends of closed connections,
//! parallel workers), plus `utime + stime` of every live child (backends, checkpointer, WAL
//! writer, background writer …). A run's figure is the difference of two readings: one before
//! it starts, and one after its client has exited *and* the postmaster has reaped every child
//! the run added ([`ServerCpu::settle`]), so no exiting backend is missed or counted twice in
//! between. Needs the right to read the server's `/proc/<pid>/stat` (the benchmark runs as
//! the server's parent).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// One process's fields of `/proc/<pid>/stat` that the method needs, in clock ticks.
struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: fields after the
    // last ')' start at field 3 (state).
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        ppid: field(4)? as u32,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

/// Reads the CPU seconds of the server whose postmaster is `postmaster`.
pub struct ServerCpu {
    postmaster: u32,
    ticks_per_second: f64,
}

impl ServerCpu {
    pub fn new(postmaster: u32) -> ServerCpu {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        assert!(ticks > 0, "sysconf(_SC_CLK_TCK) failed");
        ServerCpu {
            postmaster,
            ticks_per_second: ticks as f64,
        }
    }

    /// The postmaster's children alive now (zombies included until reaped).
    pub fn children(&self) -> BTreeSet<u32> {
        let mut children = BTreeSet::new();
        for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if stat(pid).is_some_and(|s| s.ppid == self.postmaster) {
                children.insert(pid);
            }
        }
        children
    }

    /// CPU seconds (user + system) the server has used so far; see the module doc.
    pub fn seconds(&self) -> f64 {
        let postmaster = stat(self.postmaster).expect("the postmaster is running");
        let mut ticks = postmaster.utime + postmaster.stime + postmaster.cutime + postmaster.cstime;
        for pid in self.children() {
            if let Some(s) = stat(pid).filter(|s| s.ppid == self.postmaster) {
                ticks += s.utime + s.stime;
            }
        }
        ticks as f64 / self.ticks_per_second
    }

    /// Waits (up to 30 s) until no child outside `baseline` is left, i.e. the postmaster has
    /// reaped every backend a finished run started and counted it in its `cutime`/`cstime`.
    pub fn settle(&self, baseline: &BTreeSet<u32>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.children().is_subset(baseline) {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL backends still running 30 s after the client exited"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
