//! `[checks]`: what the coordinator checks after each run of a job, and where it sends alerts
//! (docs/job-spec.md `[checks]`, docs/pipelines.md "Checks and alerts").

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::units::Span;

/// Volume anomalies are flagged beyond this many robust standard deviations by default.
pub const DEFAULT_VOLUME_K: f64 = 3.0;
/// Days of history a volume check needs before it flags anything, by default.
pub const DEFAULT_VOLUME_MIN_DAYS: u32 = 7;

/// `[checks]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChecksSpec {
    /// Newest cursor value loaded must be at most this old (`25h`); no freshness check when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness_sla: Option<String>,
    /// Robust deviations (median ± k·1.4826·MAD over the trailing 28 days) a day's rows may
    /// stray before it is flagged; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_k: Option<f64>,
    /// Days of history needed before volume anomalies are flagged; default 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_min_days: Option<u32>,
    /// Name of the environment variable (on the coordinator) holding the alert webhook URL;
    /// the URL is a secret and never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url_env: Option<String>,
}

/// `[checks]` with parsed values.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedChecks {
    /// Freshness SLA in microseconds, if any.
    pub freshness_sla: Option<Span>,
    /// Band width in robust deviations.
    pub volume_k: f64,
    /// Minimum history in days.
    pub volume_min_days: u32,
    /// Environment variable naming the webhook URL.
    pub webhook_url_env: Option<String>,
}

impl ChecksSpec {
    /// Pure validation; errors name `checks.<key>`.
    pub fn validate(&self, origin: &str) -> Result<ValidatedChecks> {
        let freshness_sla = match &self.freshness_sla {
            Some(text) => {
                let span = Span::parse(text).map_err(|m| Error::config(origin, "checks.freshness_sla", m))?;
                if span.micros <= 0 {
                    return Err(Error::config(origin, "checks.freshness_sla", "must be positive"));
                }
                Some(span)
            }
            None => None,
        };
        let volume_k = self.volume_k.unwrap_or(DEFAULT_VOLUME_K);
        if !(volume_k.is_finite() && volume_k > 0.0) {
            return Err(Error::config(
                origin,
                "checks.volume_k",
                format!("{volume_k} is not a positive number"),
            ));
        }
        let volume_min_days = self.volume_min_days.unwrap_or(DEFAULT_VOLUME_MIN_DAYS);
        if !(3..=28).contains(&volume_min_days) {
            return Err(Error::config(
                origin,
                "checks.volume_min_days",
                format!("{volume_min_days} is not between 3 and 28 (the trailing window)"),
            ));
        }
        if let Some(var) = &self.webhook_url_env
            && (var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(Error::config(
                origin,
                "checks.webhook_url_env",
                // Not echoed: a URL put here by mistake is a secret.
                "is not an environment variable name (letters, digits, `_`); name the variable holding the webhook URL, not the URL",
            ));
        }
        Ok(ValidatedChecks {
            freshness_sla,
            volume_k,
            volume_min_days,
            webhook_url_env: self.webhook_url_env.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> ChecksSpec {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_and_parsed_values() {
        let v = parse("freshness_sla = \"25h\"\nwebhook_url_env = \"SLACK_WEBHOOK\"")
            .validate("s.toml")
            .unwrap();
        assert_eq!(v.freshness_sla.unwrap().micros, 25 * 3_600_000_000);
        assert_eq!((v.volume_k, v.volume_min_days), (3.0, 7));
        assert_eq!(v.webhook_url_env.as_deref(), Some("SLACK_WEBHOOK"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |t: &str| parse(t).validate("s.toml").unwrap_err().to_string();
        assert!(err("freshness_sla = \"soon\"").contains("checks.freshness_sla"));
        assert!(err("volume_k = -1.0").contains("checks.volume_k"));
        assert!(err("volume_min_days = 1").contains("checks.volume_min_days"));
        let e = err("webhook_url_env = \"https://hooks.slack.com/services/T/B/secret\"");
        assert!(e.contains("checks.webhook_url_env") && !e.contains("secret"), "{e}");
        assert!(toml::from_str::<ChecksSpec>("freshnes_sla = \"1h\"").is_err());
    }
}
