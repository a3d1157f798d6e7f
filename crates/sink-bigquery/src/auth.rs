//! Access tokens for BigQuery: a service-account key file, the metadata server (workload
//! identity on GKE, the VM's service account on GCE), or a dummy token for test servers.
//!
//! Each is a `gcp_bigquery_client` [`Authenticator`], so the crate's REST calls and this
//! crate's own requests share one token source. Tokens and keys are never printed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::BoxFuture;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::error::BQError;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::error::{BigQueryError, Result};
use crate::spec::AuthMethod;

/// The OAuth scope of BigQuery (jobs, tables, queries).
const BIGQUERY_SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
/// The metadata server's token endpoint for the machine's default service account.
const METADATA_TOKEN_URL: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";
/// Refresh a cached metadata token this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Builds the token source for `method` (reads the key file: IO, build time of the client).
pub async fn authenticator(method: AuthMethod, key_file: Option<&PathBuf>) -> Result<Arc<dyn Authenticator>> {
    match method {
        AuthMethod::None => Ok(Arc::new(NoAuth)),
        AuthMethod::Metadata => Ok(Arc::new(MetadataServer::default())),
        AuthMethod::ServiceAccountKey => {
            let path = key_file.ok_or_else(|| BigQueryError::Auth {
                method: "service_account_key".into(),
                message: "no key_file".into(),
            })?;
            let key = yup_oauth2::read_service_account_key(path)
                .await
                .map_err(|e| BigQueryError::Auth {
                    method: "service_account_key".into(),
                    message: format!("cannot read key file {}: {e}", path.display()),
                })?;
            let inner = yup_oauth2::ServiceAccountAuthenticator::builder(key)
                .build()
                .await
                .map_err(|e| BigQueryError::Auth {
                    method: "service_account_key".into(),
                    message: format!("key file {}: {e}", path.display()),
                })?;
            let inner = Arc::new(inner);
            let fetch: TokenFn = Arc::new(move || {
                let inner = inner.clone();
                Box::pin(async move {
                    let token = inner.token(&[BIGQUERY_SCOPE]).await?;
                    token.token().map(str::to_string).ok_or(BQError::NoToken)
                })
            });
            Ok(Arc::new(ServiceAccount { fetch }))
        }
    }
}

/// A fixed dummy token, for test servers that accept any bearer token.
#[derive(Debug, Clone)]
struct NoAuth;

#[async_trait]
impl Authenticator for NoAuth {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok("backhaul-no-auth".into())
    }
}

/// Fetches a token; hides yup-oauth2's connector type.
type TokenFn = Arc<dyn Fn() -> BoxFuture<'static, Result<String, BQError>> + Send + Sync>;

/// A service-account key; yup-oauth2 caches and refreshes the token.
#[derive(Clone)]
struct ServiceAccount {
    fetch: TokenFn,
}

#[async_trait]
impl Authenticator for ServiceAccount {
    async fn access_token(&self) -> Result<String, BQError> {
        (self.fetch)().await
    }
}

/// The metadata server's token for the machine's service account, cached until shortly
/// before it expires.
#[derive(Clone, Default)]
struct MetadataServer {
    cached: Arc<Mutex<Option<(String, Instant)>>>,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct MetadataToken {
    access_token: String,
    expires_in: u64,
}

#[async_trait]
impl Authenticator for MetadataServer {
    async fn access_token(&self) -> Result<String, BQError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let resp = self
            .http
            .get(METADATA_TOKEN_URL)
            .header("Metadata-Flavor", "Google")
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .error_for_status()?;
        let token: MetadataToken = resp.json().await?;
        let until = Instant::now() + Duration::from_secs(token.expires_in).saturating_sub(REFRESH_MARGIN);
        *cached = Some((token.access_token.clone(), until));
        Ok(token.access_token)
    }
}
