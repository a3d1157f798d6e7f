//! Connecting to a coordinator: one place that turns a URL, a token and TLS settings into a
//! client, used by workers and by the CLI alike.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::WireError;
use crate::auth::{ClientAuth, Token};
use crate::tls::ClientTls;
use crate::v1::coordinator_client::CoordinatorClient;

/// A coordinator client that authenticates every call.
pub type Client = CoordinatorClient<InterceptedService<Channel, ClientAuth>>;

/// Where a coordinator is and how to talk to it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port`, or `https://host:port` with TLS.
    pub url: String,
    /// Shared token, when the coordinator requires one.
    pub token: Option<Token>,
    /// TLS settings; required for `https://` URLs (an empty one trusts no CA: give `ca`).
    pub tls: Option<ClientTls>,
    /// Longest a single call may take before it fails with `DEADLINE_EXCEEDED`/`CANCELLED`.
    pub call_timeout: Duration,
    /// Longest a connection attempt may take.
    pub connect_timeout: Duration,
}

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

    /// A client that connects on first use and reconnects after the coordinator comes back, so
    /// a worker can start before its coordinator and survive its restarts. Dead connections are
    /// noticed by HTTP/2 keep-alive pings, not only when a call times out.
    pub fn connect_lazy(&self) -> Result<Client, WireError> {
        let https = self.url.starts_with("https://");
        if !https && !self.url.starts_with("http://") {
            return Err(WireError::InvalidConfig(format!(
                "coordinator URL `{}` must start with http:// or https://",
                self.url
            )));
        }
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| WireError::InvalidConfig(format!("coordinator URL `{}`: {e}", self.url)))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.call_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        match (&self.tls, https) {
            (Some(tls), true) => endpoint = endpoint.tls_config(tls.config()?).map_err(WireError::Transport)?,
            (None, true) => {
                return Err(WireError::InvalidConfig(
                    "an https:// coordinator URL needs TLS settings (--tls-ca)".into(),
                ));
            }
            (Some(_), false) => {
                return Err(WireError::InvalidConfig(
                    "TLS settings were given for an http:// coordinator URL; use https://".into(),
                ));
            }
            (None, false) => {}
        }
        let channel = endpoint.connect_lazy();
        Ok(
            CoordinatorClient::with_interceptor(channel, ClientAuth::new(self.token.as_ref()))
                .max_decoding_message_size(64 * 1024 * 1024),
        )
    }
}
