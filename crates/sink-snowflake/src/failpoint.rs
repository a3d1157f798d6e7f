//! Injected failures for tests: a commit can be made to fail right after its PUT or right after
//! its COPY (before COMMIT), as a crashed worker would, so tests can show a retry ends exact.
//!
//! Armed from the environment for end-to-end runs of the binary —
//! `BACKHAUL_SNOWFLAKE_FAILPOINT=after_put:2` fails the first two commits of this process after
//! their PUT — or with [`arm`] by in-process tests, for one table. Unarmed, a check is one
//! uncontended lock.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Where a commit can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failpoint {
    /// After the files are in the Snowflake stage, before the transaction begins.
    AfterPut,
    /// After COPY and the proof, before COMMIT: the session is closed with the transaction open.
    AfterCopy,
}

impl Failpoint {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "after_put" => Some(Failpoint::AfterPut),
            "after_copy" => Some(Failpoint::AfterCopy),
            _ => None,
        }
    }
}

/// The environment variable arming a failpoint for every table.
pub const ENV: &str = "BACKHAUL_SNOWFLAKE_FAILPOINT";
const ANY_TABLE: &str = "*";

/// Remaining failures by (table, point).
fn armed() -> &'static Mutex<HashMap<(String, Failpoint), u32>> {
    static ARMED: OnceLock<Mutex<HashMap<(String, Failpoint), u32>>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let mut map = HashMap::new();
        if let Ok(text) = std::env::var(ENV) {
            let (name, times) = text.split_once(':').unwrap_or((text.as_str(), "1"));
            match (Failpoint::parse(name.trim()), times.trim().parse::<u32>()) {
                (Some(point), Ok(times)) => {
                    map.insert((ANY_TABLE.to_string(), point), times);
                }
                _ => tracing::warn!("{ENV}=`{text}` is not `after_put[:N]` or `after_copy[:N]`; ignored"),
            }
        }
        Mutex::new(map)
    })
}

/// Makes the next `times` commits into `table` fail at `point`.
pub fn arm(table: &str, point: Failpoint, times: u32) {
    armed()
        .lock()
        .expect("failpoint lock")
        .insert((table.to_ascii_uppercase(), point), times);
}

/// Whether this commit into `table` fails at `point` (and counts it).
pub(crate) fn fires(table: &str, point: Failpoint) -> bool {
    let mut map = armed().lock().expect("failpoint lock");
    for key in [(table.to_ascii_uppercase(), point), (ANY_TABLE.to_string(), point)] {
        if let Some(left) = map.get_mut(&key)
            && *left > 0
        {
            *left -= 1;
            return true;
        }
    }
    false
}
