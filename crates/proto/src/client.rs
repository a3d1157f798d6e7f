//! Connecting to a coordinator or to a worker's Flight port: one place that turns a URL, a
//! token and TLS settings into a channel, used by workers and by the CLI alike.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::WireError;
use crate::auth::{ClientAuth, Token};
use crate::tls::ClientTls;
use crate::v1::coordinator_client::CoordinatorClient;

/// A coordinator client that authenticates every call.
pub type Client = CoordinatorClient<InterceptedService<Channel, ClientAuth>>;

/// Where a server is and how to talk to it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port`, or `https://host:port` with TLS.
    pub url: String,
    /// Shared token, when the server requires one.
    pub token: Option<Token>,
    /// TLS settings; required for `https://` URLs (an empty one trusts no CA: give `ca`).
    pub tls: Option<ClientTls>,
    /// Longest a single call may take until its response starts (a streamed response may
    /// take longer) before it fails with `DEADLINE_EXCEEDED`/`CANCELLED`.
    pub call_timeout: Duration,
    /// Longest a connection attempt may take.
    pub connect_timeout: Duration,
}

/// How long a data-plane call may take until its first answer: a worker describes, samples
/// statistics or starts a source query first.
const DATA_PLANE_CALL_TIMEOUT: Duration = Duration::from_secs(300);

impl ClientConfig {
    /// Plain HTTP/2 to `url` without a token (local mode on loopback).
    pub fn plain(url: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            token: None,
            tls: None,
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// The settings for a worker's Flight endpoint at `url`, derived from these coordinator
    /// settings: the same token and TLS files (one CA signs both, see docs/distributed.md),
    /// without the coordinator's expected server name, and a longer call timeout. TLS is used
    /// only for an `https://` URL; one without TLS settings is refused by [`Self::channel`].
    pub fn data_plane(&self, url: &str) -> ClientConfig {
        let tls = match &self.tls {
            Some(tls) if url.starts_with("https://") => Some(ClientTls {
                domain: None,
                ..tls.clone()
            }),
            _ => None,
        };
        ClientConfig {
            url: url.to_string(),
            token: self.token.clone(),
            tls,
            call_timeout: DATA_PLANE_CALL_TIMEOUT,
            connect_timeout: self.connect_timeout,
        }
    }

    /// A channel that connects on first use and reconnects after the server comes back. Dead
    /// connections are noticed by HTTP/2 keep-alive pings, not only when a call times out.
    /// `what` names the server in errors, e.g. `coordinator` or `worker Flight`.
    pub fn channel(&self, what: &str) -> Result<Channel, WireError> {
        let https = self.url.starts_with("https://");
        if !https && !self.url.starts_with("http://") {
            return Err(WireError::InvalidConfig(format!(
                "{what} URL `{}` must start with http:// or https://",
                self.url
            )));
        }
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| WireError::InvalidConfig(format!("{what} URL `{}`: {e}", self.url)))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.call_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        match (&self.tls, https) {
            (Some(tls), true) => endpoint = endpoint.tls_config(tls.config()?).map_err(WireError::Transport)?,
            (None, true) => {
                return Err(WireError::InvalidConfig(format!(
                    "the https:// {what} URL `{}` needs TLS settings (--tls-ca)",
                    self.url
                )));
            }
            (Some(_), false) => {
                return Err(WireError::InvalidConfig(format!(
                    "TLS settings were given for the http:// {what} URL `{}`; use https://",
                    self.url
                )));
            }
            (None, false) => {}
        }
        Ok(endpoint.connect_lazy())
    }

    /// A coordinator client that connects on first use and reconnects after the coordinator
    /// comes back, so a worker can start before its coordinator and survive its restarts.
    pub fn connect_lazy(&self) -> Result<Client, WireError> {
        let channel = self.channel("coordinator")?;
        Ok(
            CoordinatorClient::with_interceptor(channel, ClientAuth::new(self.token.as_ref()))
                .max_decoding_message_size(64 * 1024 * 1024),
        )
    }
}

/// A failed call's message with the errors behind it (a TLS alert, a refused connection),
/// which tonic keeps in the status's source chain rather than its message.
pub fn status_detail(status: &tonic::Status) -> String {
    let mut detail = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if !detail.contains(&text) {
            if !detail.is_empty() {
                detail.push_str(": ");
            }
            detail.push_str(&text);
        }
        source = e.source();
    }
    detail
}

/// A client of the coordinator's `Schedules` service (same server, token and TLS).
pub type SchedulesClient = crate::v1::schedules_client::SchedulesClient<InterceptedService<Channel, ClientAuth>>;

impl ClientConfig {
    /// A lazily connecting client of the `Schedules` service.
    pub fn connect_schedules_lazy(&self) -> Result<SchedulesClient, WireError> {
        let channel = self.channel("coordinator")?;
        Ok(crate::v1::schedules_client::SchedulesClient::with_interceptor(
            channel,
            ClientAuth::new(self.token.as_ref()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_plane_settings_follow_the_flight_url() {
        let coordinator = ClientConfig {
            token: Some(Token::new("t0k").unwrap()),
            tls: Some(ClientTls {
                ca: Some("ca.pem".into()),
                domain: Some("coordinator.internal".into()),
                ..ClientTls::default()
            }),
            ..ClientConfig::plain("https://coordinator:7070")
        };
        let tls = coordinator.data_plane("https://10.0.0.7:7171");
        let t = tls.tls.as_ref().expect("tls for https");
        assert_eq!(t.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(t.domain, None, "the coordinator's name is not the worker's");
        assert!(tls.token.is_some());
        assert!(coordinator.data_plane("http://10.0.0.7:7171").tls.is_none());
        // An https:// worker without any TLS settings is refused with a message naming it.
        let plain = ClientConfig::plain("http://coordinator:7070").data_plane("https://10.0.0.7:7171");
        let err = plain.channel("worker Flight").expect_err("no TLS settings").to_string();
        assert!(
            err.contains("https:// worker Flight URL `https://10.0.0.7:7171` needs TLS settings"),
            "{err}"
        );
    }
}
