//! Alerts of failed checks: the coordinator's [`CheckMonitor`] evaluates the checks of every
//! job with a `[checks]` section (at each look, so a table whose runs stopped goes stale too),
//! and when a job's state changes (a check starts or stops failing) posts one Slack-compatible
//! message to the job's webhook, retried with backoff. The webhook URL is a secret: read from
//! the environment variable the spec names, never logged, never in an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::checks::{JobChecks, checks_of, evaluate};
use crate::clock::Clock;
use crate::error::{CoordinatorError, Result};
use crate::metrics::CoordinatorMetrics;
use crate::state::StateStore;

/// How often the coordinator looks at every job's checks.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Attempts to deliver one alert before it waits for the next look.
const DELIVERY_ATTEMPTS: u32 = 5;
/// Backoff before the second attempt; doubles after each.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// One delivery attempt's time limit.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A webhook URL. `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    /// Wraps a URL read from the environment.
    pub fn new(url: String) -> Self {
        WebhookUrl(url)
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookUrl(<redacted>)")
    }
}

/// Posts `payload` to `url`, retrying connection errors, 429 and 5xx answers with backoff.
pub async fn deliver(client: &reqwest::Client, url: &WebhookUrl, payload: &serde_json::Value) -> Result<()> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let sent = client.post(&url.0).timeout(DELIVERY_TIMEOUT).json(payload).send().await;
        let error = match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                let code = r.status().as_u16();
                let error = CoordinatorError::AlertDelivery(format!("the webhook answered HTTP {code}"));
                if code != 429 && r.status().is_client_error() {
                    return Err(error);
                }
                error
            }
            // Without the URL: it is a secret.
            Err(e) => CoordinatorError::AlertDelivery(format!("the webhook could not be reached: {}", e.without_url())),
        };
        if attempt >= DELIVERY_ATTEMPTS {
            return Err(error);
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

/// The Slack-compatible message about one job's checks: `text` for notifications, and one
/// `mrkdwn` section block per check.
pub fn slack_payload(checks: &JobChecks) -> serde_json::Value {
    let job = &checks.job_id;
    let headline = if checks.ok() {
        format!(":white_check_mark: backhaul job `{job}`: checks pass again")
    } else {
        format!(":rotating_light: backhaul job `{job}`: checks failed")
    };
    let mut lines = Vec::new();
    if let Some(f) = &checks.freshness {
        lines.push(format!("*freshness*: {}", f.describe()));
    }
    if let Some(v) = &checks.volume {
        lines.push(format!("*volume* on {}", v.describe()));
    }
    let blocks: Vec<serde_json::Value> = std::iter::once(headline.clone())
        .chain(lines.iter().cloned())
        .map(|t| json!({"type": "section", "text": {"type": "mrkdwn", "text": t}}))
        .collect();
    json!({"text": format!("{headline}\n{}", lines.join("\n")), "blocks": blocks})
}

/// Reads an environment variable on the coordinator (injectable for tests).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Evaluates the checks of every job and alerts on state changes.
pub struct CheckMonitor {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    env: EnvLookup,
    client: reqwest::Client,
    /// Per job: whether its checks passed at the last delivered (or alert-less) state. A job
    /// not seen yet counts as passing, so a first failure alerts and a first pass does not.
    alerted_ok: Mutex<HashMap<String, bool>>,
    /// Where the latest results are kept for `/metrics` and the status page.
    metrics: Arc<CoordinatorMetrics>,
}

impl CheckMonitor {
    /// A monitor over `store` reading time from `clock` and webhook URLs from the process
    /// environment.
    pub fn new(store: Arc<dyn StateStore>, clock: Arc<dyn Clock>) -> Self {
        Self::with_env(store, clock, Arc::new(|name| std::env::var(name).ok()))
    }

    /// As [`CheckMonitor::new`], with the environment lookup given (tests).
    pub fn with_env(store: Arc<dyn StateStore>, clock: Arc<dyn Clock>, env: EnvLookup) -> Self {
        CheckMonitor {
            store,
            clock,
            env,
            client: reqwest::Client::new(),
            alerted_ok: Mutex::new(HashMap::new()),
            metrics: Arc::default(),
        }
    }

    /// Keeps each look's results in `metrics` (the service's, shown by `/metrics` and `/`).
    pub fn with_metrics(mut self, metrics: Arc<CoordinatorMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Evaluates every job's checks now and sends the alerts of state changes; returns the
    /// results.
    pub async fn tick(&self) -> Result<Vec<JobChecks>> {
        let now = self.clock.now_us();
        let mut results = Vec::new();
        for (job, _) in self.store.jobs().await? {
            let Some((checks, _)) = checks_of(&job) else { continue };
            let chunks = self.store.chunks(&job.job_id).await?;
            let Some(result) = evaluate(&job, &chunks, now) else {
                continue;
            };
            let was_ok = self
                .alerted_ok
                .lock()
                .ok()
                .and_then(|m| m.get(&job.job_id).copied())
                .unwrap_or(true);
            if was_ok != result.ok() {
                let delivered = match checks.webhook_url_env.as_deref() {
                    None => true,
                    Some(var) => self.alert(&result, var).await,
                };
                if delivered && let Ok(mut m) = self.alerted_ok.lock() {
                    m.insert(job.job_id.clone(), result.ok());
                }
            }
            results.push(result);
        }
        self.metrics.set_checks(results.clone());
        Ok(results)
    }

    /// Sends one alert; false when it could not be delivered (tried again at the next look).
    async fn alert(&self, result: &JobChecks, var: &str) -> bool {
        let Some(url) = (self.env)(var) else {
            warn!(job = %result.job_id, variable = %var, "checks changed state but the webhook variable is not set on the coordinator");
            return false;
        };
        match deliver(&self.client, &WebhookUrl::new(url), &slack_payload(result)).await {
            Ok(()) => {
                info!(job = %result.job_id, ok = result.ok(), "check alert delivered");
                true
            }
            Err(e) => {
                warn!(job = %result.job_id, error = %e, "check alert not delivered; trying again at the next look");
                false
            }
        }
    }

    /// Looks every `every` until `cancel` fires. Owned by the coordinator's task set.
    pub async fn run(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.tick().await {
                warn!(error = %e, "checks could not read the state");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}
