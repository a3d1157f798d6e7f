//! Shared-token authentication of every gRPC call: the client side adds
//! `authorization: Bearer <token>`, the server side refuses calls without the right token.
//!
//! The token is compared in constant time, never printed (`Debug` shows `Token(***)`), and a
//! refused call is logged with its method, peer and reason only.

use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Status};

use crate::WireError;

/// A shared secret. Cheap to clone; never printed.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// A token from its text. Surrounding whitespace (a trailing newline in a file) is dropped;
    /// an empty token, or one that cannot travel in an HTTP header, is refused.
    pub fn new(text: &str) -> Result<Self, WireError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(WireError::InvalidToken("the token is empty".into()));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(WireError::InvalidToken(
                "the token must be printable ASCII without spaces".into(),
            ));
        }
        Ok(Token(text.into()))
    }

    /// Reads a token file (e.g. a mounted Kubernetes Secret).
    pub fn from_file(path: &Path) -> Result<Self, WireError> {
        let text = std::fs::read_to_string(path).map_err(|source| WireError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Token::new(&text).map_err(|e| match e {
            WireError::InvalidToken(m) => WireError::InvalidToken(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Constant-time comparison with a presented token: the time taken depends on the lengths
    /// only, never on where the first differing byte is.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        let mut diff = (ours.len() ^ presented.len()) as u8 | u8::from(ours.len() != presented.len());
        for (i, &b) in presented.iter().enumerate() {
            diff |= b ^ ours.get(i).copied().unwrap_or(0);
        }
        std::hint::black_box(diff) == 0
    }

    fn header(&self) -> MetadataValue<Ascii> {
        MetadataValue::try_from(format!("Bearer {}", self.0)).expect("checked printable ASCII in Token::new")
    }
}

/// Client side: adds the token to every call (nothing when there is none).
#[derive(Clone, Default)]
pub struct ClientAuth {
    header: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("token", &self.header.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ClientAuth {
    /// Authenticates with `token`, or not at all.
    pub fn new(token: Option<&Token>) -> Self {
        ClientAuth {
            header: token.map(Token::header),
        }
    }
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            request.metadata_mut().insert("authorization", h.clone());
        }
        Ok(request)
    }
}

/// Server side: a tower layer in front of every gRPC service that refuses calls without the
/// token with `UNAUTHENTICATED`. Without a token it lets everything through.
#[derive(Clone, Debug, Default)]
pub struct AuthLayer {
    token: Option<Token>,
}

impl AuthLayer {
    /// Requires `token` on every call, or nothing.
    pub fn new(token: Option<Token>) -> Self {
        AuthLayer { token }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            token: self.token.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the gRPC routes.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    token: Option<Token>,
}

/// Why a call was refused; the log names the reason, never what was presented.
fn refusal<B>(token: &Token, req: &http::Request<B>) -> Option<&'static str> {
    let Some(value) = req.headers().get(http::header::AUTHORIZATION) else {
        return Some("no authorization header");
    };
    let Some(presented) = value.as_bytes().strip_prefix(b"Bearer ") else {
        return Some("authorization is not a bearer token");
    };
    (!token.matches(presented)).then_some("wrong token")
}

fn peer<B>(req: &http::Request<B>) -> Option<std::net::SocketAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>().and_then(|i| i.remote_addr()).or_else(|| {
        ext.get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.get_ref().remote_addr())
    })
}

impl<S, B> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(token) = &self.token
            && let Some(reason) = refusal(token, &req)
        {
            tracing::warn!(
                method = %req.uri().path(),
                peer = ?peer(&req),
                reason,
                "refused an unauthenticated gRPC call"
            );
            let response = Status::unauthenticated("missing or invalid token").into_http();
            return Box::pin(std::future::ready(Ok(response)));
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly_and_hide_themselves() {
        let t = Token::new("s3cret-token\n").unwrap();
        assert!(t.matches(b"s3cret-token"));
        assert!(!t.matches(b"s3cret-tokem"));
        assert!(!t.matches(b"s3cret-token2"));
        assert!(!t.matches(b"s3cret"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "Token(***)");
        assert!(!format!("{:?}", ClientAuth::new(Some(&t))).contains("s3cret"));
        assert!(Token::new("  \n").is_err());
        assert!(Token::new("two words").is_err());
    }

    #[test]
    fn refusal_reasons() {
        let t = Token::new("abc").unwrap();
        let req = |h: Option<&str>| {
            let mut b = http::Request::builder();
            if let Some(h) = h {
                b = b.header("authorization", h);
            }
            b.body(()).unwrap()
        };
        assert_eq!(refusal(&t, &req(None)), Some("no authorization header"));
        assert_eq!(
            refusal(&t, &req(Some("Basic abc"))),
            Some("authorization is not a bearer token")
        );
        assert_eq!(refusal(&t, &req(Some("Bearer abd"))), Some("wrong token"));
        assert_eq!(refusal(&t, &req(Some("Bearer abc"))), None);
    }
}
