//! The HTTP side of the long-running roles: serving a router until cancelled, and the shared
//! token on it. With a token, every path except the probes needs `Authorization: Bearer
//! <token>` (Prometheus' `authorization` / `bearer_token_file`) or HTTP Basic with the token as
//! the password (any user name: what a browser asks for on the status page). Refusals are
//! logged with path, peer and reason only, like refused gRPC calls.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Token;

/// Paths answered without credentials: liveness and readiness probes carry no secrets.
pub const OPEN_PATHS: &[&str] = &["/healthz"];

/// Why a request was refused; `None` when its credentials carry `token`.
fn refusal(token: &Token, headers: &HeaderMap) -> Option<&'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Some("no authorization header");
    };
    let value = value.as_bytes();
    if let Some(presented) = value.strip_prefix(b"Bearer ") {
        return (!token.matches(presented)).then_some("wrong token");
    }
    if let Some(encoded) = value.strip_prefix(b"Basic ") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return Some("malformed basic credentials");
        };
        // `user:password`; the user name is free, the password is the token.
        let password = match decoded.iter().position(|&b| b == b':') {
            Some(colon) => &decoded[colon + 1..],
            None => return Some("malformed basic credentials"),
        };
        return (!token.matches(password)).then_some("wrong token");
    }
    Some("authorization is neither bearer nor basic")
}

/// Requires `token` on every path of `router` except [`OPEN_PATHS`]; `None` leaves it open.
pub fn require_token(router: Router, token: Option<Token>) -> Router {
    let Some(token) = token else { return router };
    router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let token = token.clone();
        async move {
            if OPEN_PATHS.contains(&req.uri().path()) {
                return next.run(req).await;
            }
            match refusal(&token, req.headers()) {
                None => next.run(req).await,
                Some(reason) => {
                    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
                    tracing::warn!(path = %req.uri().path(), ?peer, reason, "refused an unauthenticated HTTP request");
                    unauthorized()
                }
            }
        }
    }))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, r#"Basic realm="backhaul", charset="UTF-8""#)],
        "missing or invalid token: send `Authorization: Bearer <token>`, or basic credentials with the token as password\n",
    )
        .into_response()
}

/// Serves `router` on `listener` until `cancel` fires, with each request's peer address known
/// (for refusal logs).
pub async fn serve(listener: TcpListener, router: Router, cancel: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_and_basic_carry_the_token() {
        let t = Token::new("s3cret").unwrap();
        let basic = |cred: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(cred));
        assert_eq!(refusal(&t, &headers(Some("Bearer s3cret"))), None);
        assert_eq!(refusal(&t, &headers(Some(&basic("anyone:s3cret")))), None);
        assert_eq!(refusal(&t, &headers(Some(&basic(":s3cret")))), None);
        assert_eq!(refusal(&t, &headers(None)), Some("no authorization header"));
        assert_eq!(refusal(&t, &headers(Some("Bearer s3cre"))), Some("wrong token"));
        assert_eq!(refusal(&t, &headers(Some(&basic("s3cret:nope")))), Some("wrong token"));
        assert_eq!(
            refusal(&t, &headers(Some(&basic("s3cret")))),
            Some("malformed basic credentials")
        );
        assert_eq!(
            refusal(&t, &headers(Some("Basic !!!"))),
            Some("malformed basic credentials")
        );
        assert_eq!(
            refusal(&t, &headers(Some("Token s3cret"))),
            Some("authorization is neither bearer nor basic")
        );
    }
}
