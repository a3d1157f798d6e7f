//! Credentials read from the spec's secret references, and how they sign a request.
//!
//! Secrets live in core's [`Secret`], whose `Debug` is redacted; no error message includes one.
//! `refresh` is what a 401/403 triggers once: OAuth2 fetches a new token, the static kinds read
//! their secret again (it may have been rotated under the same env var or file).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backhaul_core::secret::Secret;
use backhaul_core::spec::database::PasswordSpec;
use backhaul_core::{Error, Result};
use base64::Engine;
use tokio::time::Instant;

use crate::request::Prepared;
use crate::spec::{AuthSpec, KeyLocation, SignatureEncoding, secret};

/// Seconds since the Unix epoch: the wall clock HMAC signatures carry, injectable for tests.
pub type UnixClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> UnixClock {
    Arc::new(|| chrono::Utc::now().timestamp())
}

#[derive(Debug, Clone)]
struct Token {
    access: Secret,
    expires_at: Option<Instant>,
    /// A rotated refresh token the endpoint handed back.
    refresh: Option<Secret>,
}

/// The credentials of one source.
pub struct Credentials {
    spec: Option<AuthSpec>,
    origin: String,
    /// The static secret (token, key, password, HMAC secret), re-read on refresh.
    secret: Mutex<Option<Secret>>,
    /// OAuth2: the client secret and the current token.
    client_secret: Option<Secret>,
    token: tokio::sync::Mutex<Option<Token>>,
    clock: UnixClock,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.spec.as_ref().map(kind_name).unwrap_or("none");
        f.debug_struct("Credentials")
            .field("kind", &kind)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn kind_name(spec: &AuthSpec) -> &'static str {
    match spec {
        AuthSpec::Bearer { .. } => "bearer",
        AuthSpec::ApiKey { .. } => "api_key",
        AuthSpec::Basic { .. } => "basic",
        AuthSpec::Oauth2ClientCredentials { .. } => "oauth2_client_credentials",
        AuthSpec::Oauth2RefreshToken { .. } => "oauth2_refresh_token",
        AuthSpec::Hmac { .. } => "hmac",
    }
}

fn read(origin: &str, key: &str, spec: &PasswordSpec) -> Result<Option<Secret>> {
    Ok(spec.read(origin, &format!("source.auth.{key}"))?.map(Secret::new))
}

/// The static secret of `spec` (what a refresh re-reads).
fn static_secret(origin: &str, spec: &AuthSpec) -> Result<Option<Secret>> {
    match spec {
        AuthSpec::Bearer { token_env, token_file } => read(origin, "token", &secret(token_env, token_file)),
        AuthSpec::ApiKey { key_env, key_file, .. } => read(origin, "key", &secret(key_env, key_file)),
        AuthSpec::Basic {
            password_env,
            password_file,
            ..
        } => read(origin, "password", &secret(password_env, password_file)),
        AuthSpec::Hmac {
            secret_env,
            secret_file,
            ..
        } => read(origin, "secret", &secret(secret_env, secret_file)),
        AuthSpec::Oauth2RefreshToken {
            refresh_token_env,
            refresh_token_file,
            ..
        } => read(origin, "refresh_token", &secret(refresh_token_env, refresh_token_file)),
        AuthSpec::Oauth2ClientCredentials { .. } => Ok(None),
    }
}

impl Credentials {
    /// Reads the secrets `spec` names (IO: environment and files).
    pub fn build(spec: Option<AuthSpec>, origin: &str, clock: UnixClock) -> Result<Credentials> {
        let (secret, client_secret) = match &spec {
            None => (None, None),
            Some(s) => {
                let client = match s {
                    AuthSpec::Oauth2ClientCredentials {
                        client_secret_env,
                        client_secret_file,
                        ..
                    }
                    | AuthSpec::Oauth2RefreshToken {
                        client_secret_env,
                        client_secret_file,
                        ..
                    } => read(origin, "client_secret", &secret(client_secret_env, client_secret_file))?,
                    _ => None,
                };
                (static_secret(origin, s)?, client)
            }
        };
        Ok(Credentials {
            spec,
            origin: origin.into(),
            secret: Mutex::new(secret),
            client_secret,
            token: tokio::sync::Mutex::new(None),
            clock,
        })
    }

    fn secret(&self) -> String {
        self.secret
            .lock()
            .expect("secret lock")
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default()
    }

    /// After a 401/403: fetch a new token, or read the static secret again.
    pub async fn refresh(&self, http: &reqwest::Client) -> Result<()> {
        let Some(spec) = &self.spec else { return Ok(()) };
        match spec {
            AuthSpec::Oauth2ClientCredentials { .. } | AuthSpec::Oauth2RefreshToken { .. } => {
                let mut token = self.token.lock().await;
                let fresh = self.fetch_token(http, token.as_ref()).await?;
                *token = Some(fresh);
                Ok(())
            }
            _ => {
                let fresh = static_secret(&self.origin, spec)?;
                *self.secret.lock().expect("secret lock") = fresh;
                Ok(())
            }
        }
    }

    /// Adds the credentials to `req` (OAuth2: fetching or refreshing the token first when it
    /// is missing or expires within the skew).
    pub async fn apply(&self, http: &reqwest::Client, req: &mut Prepared) -> Result<()> {
        let Some(spec) = &self.spec else { return Ok(()) };
        match spec {
            AuthSpec::Bearer { .. } => req.header("Authorization", format!("Bearer {}", self.secret())),
            AuthSpec::ApiKey { name, location, .. } => match location {
                KeyLocation::Header => req.header(name, self.secret()),
                KeyLocation::Query => {
                    req.url.query_pairs_mut().append_pair(name, &self.secret());
                }
            },
            AuthSpec::Basic { username, .. } => {
                let pair = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", self.secret()));
                req.header("Authorization", format!("Basic {pair}"));
            }
            AuthSpec::Oauth2ClientCredentials {
                refresh_skew_seconds, ..
            }
            | AuthSpec::Oauth2RefreshToken {
                refresh_skew_seconds, ..
            } => {
                let mut token = self.token.lock().await;
                let skew = Duration::from_secs(*refresh_skew_seconds);
                let fresh_enough = token
                    .as_ref()
                    .is_some_and(|t| t.expires_at.is_none_or(|at| Instant::now() + skew < at));
                if !fresh_enough {
                    let fresh = self.fetch_token(http, token.as_ref()).await?;
                    *token = Some(fresh);
                }
                let access = token.as_ref().expect("token just set").access.expose().to_string();
                req.header("Authorization", format!("Bearer {access}"));
            }
            AuthSpec::Hmac {
                signature_header,
                timestamp_header,
                signature_prefix,
                separator,
                encoding,
                key_id_header,
                key_id,
                ..
            } => {
                let timestamp = (self.clock)().to_string();
                let message = hmac_message(&timestamp, req, separator);
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.secret().as_bytes());
                let tag = ring::hmac::sign(&key, message.as_bytes());
                let signature = match encoding {
                    SignatureEncoding::Hex => hex(tag.as_ref()),
                    SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
                };
                req.header(timestamp_header, timestamp);
                req.header(signature_header, format!("{signature_prefix}{signature}"));
                if let (Some(h), Some(id)) = (key_id_header, key_id) {
                    req.header(h, id.clone());
                }
            }
        }
        Ok(())
    }

    async fn fetch_token(&self, http: &reqwest::Client, current: Option<&Token>) -> Result<Token> {
        let spec = self.spec.as_ref().expect("oauth2 spec");
        let mut form: Vec<(&str, String)> = Vec::new();
        let (token_url, client_id) = match spec {
            AuthSpec::Oauth2ClientCredentials {
                token_url,
                client_id,
                scope,
                ..
            } => {
                form.push(("grant_type", "client_credentials".into()));
                if let Some(scope) = scope {
                    form.push(("scope", scope.clone()));
                }
                (token_url, client_id)
            }
            AuthSpec::Oauth2RefreshToken {
                token_url, client_id, ..
            } => {
                let refresh = current
                    .and_then(|t| t.refresh.clone())
                    .map(|s| s.expose().to_string())
                    .unwrap_or_else(|| self.secret());
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", refresh));
                (token_url, client_id)
            }
            _ => unreachable!("only oauth2 kinds fetch tokens"),
        };
        form.push(("client_id", client_id.clone()));
        if let Some(s) = &self.client_secret {
            form.push(("client_secret", s.expose().to_string()));
        }
        let system = "oauth2 token endpoint".to_string();
        let response = http
            .post(token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| Error::Unreachable {
                system: system.clone(),
                message: crate::request::describe_reqwest(&e),
            })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let message = format!("HTTP {status} from {}", strip_query(token_url));
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                Error::Unreachable { system, message }
            } else {
                Error::InvalidObject {
                    object: system,
                    message: format!("{message}: credentials refused"),
                }
            });
        }
        let parsed: serde_json::Value = serde_json::from_str(&body).map_err(|_| Error::InvalidObject {
            object: system.clone(),
            message: "the token response is not JSON".into(),
        })?;
        let access = parsed
            .get("access_token")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::InvalidObject {
                object: system.clone(),
                message: "the token response has no `access_token`".into(),
            })?;
        let expires_at = parsed
            .get("expires_in")
            .and_then(|v| v.as_u64())
            .map(|s| Instant::now() + Duration::from_secs(s));
        let refresh = parsed
            .get("refresh_token")
            .and_then(|v| v.as_str())
            .map(Secret::new)
            .or_else(|| current.and_then(|t| t.refresh.clone()));
        Ok(Token {
            access: Secret::new(access),
            expires_at,
            refresh,
        })
    }
}

/// The signed text: timestamp, method, path with query, body, joined by `separator`.
pub fn hmac_message(timestamp: &str, req: &Prepared, separator: &str) -> String {
    let mut path = req.url.path().to_string();
    if let Some(q) = req.url.query() {
        path.push('?');
        path.push_str(q);
    }
    [timestamp, req.method.as_str(), &path, req.body.as_deref().unwrap_or("")].join(separator)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A URL without its query (which may hold a key).
pub fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}
