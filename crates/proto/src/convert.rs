//! The one mapping between core's types and their wire forms, used by the coordinator, the
//! worker and the CLI alike (they must not each keep their own copy, which could drift).

use backhaul_core::ErrorClass;

use crate::v1 as pb;

impl From<ErrorClass> for pb::ErrorClass {
    fn from(class: ErrorClass) -> Self {
        match class {
            ErrorClass::Transient => pb::ErrorClass::Transient,
            ErrorClass::Throttled => pb::ErrorClass::Throttled,
            ErrorClass::Permanent => pb::ErrorClass::Permanent,
        }
    }
}

impl TryFrom<pb::ErrorClass> for ErrorClass {
    /// `Unspecified` is no class: the error was not typed.
    type Error = pb::ErrorClass;

    fn try_from(class: pb::ErrorClass) -> Result<Self, Self::Error> {
        match class {
            pb::ErrorClass::Transient => Ok(ErrorClass::Transient),
            pb::ErrorClass::Throttled => Ok(ErrorClass::Throttled),
            pb::ErrorClass::Permanent => Ok(ErrorClass::Permanent),
            pb::ErrorClass::Unspecified => Err(class),
        }
    }
}

/// The retry class in a wire field; `None` when it is unspecified or unknown to this build.
pub fn error_class(wire: i32) -> Option<ErrorClass> {
    pb::ErrorClass::try_from(wire)
        .ok()
        .and_then(|class| ErrorClass::try_from(class).ok())
}

impl pb::JobState {
    /// The state's lower-case name, as `status`, the status page and JSON output show it.
    pub fn label(self) -> &'static str {
        match self {
            pb::JobState::Running => "running",
            pb::JobState::Succeeded => "succeeded",
            pb::JobState::Parked => "parked",
            pb::JobState::Cancelled => "cancelled",
            pb::JobState::Unspecified => "unknown",
        }
    }

    /// The label of a wire field; `unknown` for values this build does not know.
    pub fn label_of(wire: i32) -> &'static str {
        pb::JobState::try_from(wire).map_or("unknown", pb::JobState::label)
    }
}

impl From<&backhaul_core::ratelimit::RatePool> for pb::RatePool {
    fn from(pool: &backhaul_core::ratelimit::RatePool) -> Self {
        pb::RatePool {
            name: pool.name.clone(),
            requests_per_second: pool.requests_per_second,
            burst: pool.burst,
            daily_cap: pool.daily_cap,
        }
    }
}

impl From<&pb::RatePool> for backhaul_core::ratelimit::RatePool {
    /// Unchecked: the receiver validates it (`RatePool::validate`).
    fn from(pool: &pb::RatePool) -> Self {
        backhaul_core::ratelimit::RatePool {
            name: pool.name.clone(),
            requests_per_second: pool.requests_per_second,
            burst: pool.burst,
            daily_cap: pool.daily_cap,
        }
    }
}

impl From<&backhaul_core::notes::BreakerReport> for pb::SourceBreaker {
    fn from(b: &backhaul_core::notes::BreakerReport) -> Self {
        pb::SourceBreaker {
            state: b.phase.as_str().into(),
            consecutive_failures: b.consecutive_failures,
            open_until_ms: b.open_until_unix_ms.unwrap_or(0),
            reported_at_us: 0,
        }
    }
}

impl pb::SourceBreaker {
    /// The report, or `None` when the state is one this build does not know.
    pub fn report(&self) -> Option<backhaul_core::notes::BreakerReport> {
        Some(backhaul_core::notes::BreakerReport {
            phase: backhaul_core::notes::BreakerPhase::parse(&self.state)?,
            consecutive_failures: self.consecutive_failures,
            open_until_unix_ms: (self.open_until_ms != 0).then_some(self.open_until_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes_round_trip_and_unspecified_is_none() {
        for class in [ErrorClass::Transient, ErrorClass::Throttled, ErrorClass::Permanent] {
            assert_eq!(error_class(pb::ErrorClass::from(class) as i32), Some(class));
            assert_eq!(ErrorClass::try_from(pb::ErrorClass::from(class)), Ok(class));
        }
        assert_eq!(error_class(pb::ErrorClass::Unspecified as i32), None);
        assert_eq!(error_class(99), None);
    }

    #[test]
    fn job_states_have_names() {
        assert_eq!(pb::JobState::label_of(pb::JobState::Succeeded as i32), "succeeded");
        assert_eq!(pb::JobState::Parked.label(), "parked");
        assert_eq!(pb::JobState::label_of(99), "unknown");
    }

    #[test]
    fn breaker_reports_round_trip() {
        use backhaul_core::notes::{BreakerPhase, BreakerReport};
        for report in [
            BreakerReport {
                phase: BreakerPhase::Open,
                consecutive_failures: 0,
                open_until_unix_ms: Some(1_767_607_200_000),
            },
            BreakerReport {
                phase: BreakerPhase::Closed,
                consecutive_failures: 2,
                open_until_unix_ms: None,
            },
        ] {
            assert_eq!(pb::SourceBreaker::from(&report).report(), Some(report));
        }
        let unknown = pb::SourceBreaker {
            state: "melted".into(),
            ..Default::default()
        };
        assert_eq!(unknown.report(), None);
    }
}
