//! Bearer tokens for the `authorization` header. Where tokens come from (a service-account
//! key, the metadata server) is the caller's business: it implements [`TokenProvider`].

use futures::future::BoxFuture;

pub use backhaul_core::secret::Secret;

/// Why a provider has no token.
#[derive(Debug, Clone)]
pub enum TokenError {
    /// Try again later (the metadata server or token endpoint is unreachable).
    Unavailable(String),
    /// Will not work until the configuration changes (bad key, no identity).
    Refused(String),
}

/// Produces an OAuth2 access token for each call; called before every RPC, so a provider
/// caches and refreshes its token itself.
pub trait TokenProvider: Send + Sync + 'static {
    /// A currently valid access token.
    fn token(&self) -> BoxFuture<'_, Result<Secret, TokenError>>;
}

/// A fixed token: for tests and for callers that refresh by building a new client.
#[derive(Debug, Clone)]
pub struct StaticToken(pub Secret);

impl TokenProvider for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<Secret, TokenError>> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() {
        let token = StaticToken(Secret::new("ya29.very-secret"));
        assert!(!format!("{token:?}").contains("very-secret"));
    }
}
