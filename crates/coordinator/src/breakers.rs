//! The circuit breakers of jobs' sources, as workers last reported them with a chunk's
//! completion or failure (docs/sources/http.md, "Circuit breaker"). A breaker lives in each
//! worker's copy of the source; the coordinator keeps the latest report per job in memory
//! (after a restart, the next chunk that ends reports again) for `status` to show.

use std::collections::HashMap;
use std::sync::Mutex;

use backhaul_proto::v1 as pb;

/// The latest breaker report per job.
#[derive(Debug, Default)]
pub struct SourceBreakers {
    latest: Mutex<HashMap<String, pb::SourceBreaker>>,
}

impl SourceBreakers {
    /// Keeps `report` as the job's latest, stamped `now_us`.
    pub fn record(&self, job_id: &str, mut report: pb::SourceBreaker, now_us: i64) {
        report.reported_at_us = now_us;
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.insert(job_id.to_string(), report);
    }

    /// The job's latest report, if a worker sent one.
    pub fn of(&self, job_id: &str) -> Option<pb::SourceBreaker> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.get(job_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_report_per_job_wins() {
        let breakers = SourceBreakers::default();
        assert!(breakers.of("a").is_none());
        let open = pb::SourceBreaker {
            state: "open".into(),
            open_until_ms: 5,
            ..Default::default()
        };
        breakers.record("a", open, 10);
        breakers.record("b", pb::SourceBreaker::default(), 11);
        assert_eq!(
            breakers.of("a").map(|b| (b.state, b.reported_at_us)),
            Some(("open".into(), 10))
        );
        let closed = pb::SourceBreaker {
            state: "closed".into(),
            ..Default::default()
        };
        breakers.record("a", closed, 12);
        assert_eq!(breakers.of("a").unwrap().state, "closed");
    }
}
