//! Bearer-token authentication.
//!
//! Tokens are compared in constant time: both sides are hashed with SHA-256 first, so
//! neither the content nor the length of a configured token leaks through timing.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::AuthConfig;

/// The accepted tokens, kept only as digests.
#[derive(Clone)]
pub struct Tokens {
    api: Vec<[u8; 32]>,
    /// `None`: the API tokens open `/admin/*` too.
    admin: Option<Vec<[u8; 32]>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Checks every candidate (no early exit) so the time taken does not say which matched.
fn any_matches(known: &[[u8; 32]], presented: &[u8; 32]) -> bool {
    known
        .iter()
        .fold(subtle::Choice::from(0), |acc, k| acc | k.ct_eq(presented))
        .into()
}

impl Tokens {
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            api: config.tokens.iter().map(|t| digest(t)).collect(),
            admin: config
                .admin_tokens
                .as_ref()
                .map(|ts| ts.iter().map(|t| digest(t)).collect()),
        }
    }

    /// With `[auth] admin_tokens` set, `/admin/*` takes only those; the endpoint and
    /// delivery routes take both kinds, since operators (and the console, which acts
    /// with the admin token) enable, disable and test endpoints and retry deliveries;
    /// ingest takes only the API tokens.
    fn allows(&self, path: &str, presented: &str) -> bool {
        let presented = digest(presented);
        let Some(admin) = &self.admin else {
            return any_matches(&self.api, &presented);
        };
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/admin") {
            any_matches(admin, &presented)
        } else if under("/v1/endpoints") || under("/v1/deliveries") {
            // Both lists, each checked in full (`|`, not `||`): timing says nothing.
            any_matches(admin, &presented) | any_matches(&self.api, &presented)
        } else {
            any_matches(&self.api, &presented)
        }
    }
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware: 401 unless the request carries an accepted bearer token.
pub async fn require_token(
    State(tokens): State<Tokens>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match bearer(&req) {
        Some(token) if tokens.allows(req.uri().path(), token) => Ok(next.run(req).await),
        _ => Err(ApiError::unauthorized()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_tokens_split_the_routes() {
        let t = Tokens::new(&AuthConfig {
            tokens: vec!["api-token-0123456789".into()],
            admin_tokens: Some(vec!["admin-token-0123456789".into()]),
        });
        assert!(t.allows("/v1/orders/x", "api-token-0123456789"));
        assert!(!t.allows("/v1/orders/x", "admin-token-0123456789"));
        assert!(t.allows("/admin/clock", "admin-token-0123456789"));
        assert!(!t.allows("/admin/clock", "api-token-0123456789"));
        assert!(!t.allows("/v1/orders/x", "api-token-012345678"));
        // Operations on endpoints and deliveries: both kinds, and nothing else.
        for path in [
            "/v1/endpoints",
            "/v1/endpoints/e/enable",
            "/v1/deliveries/d/retry",
        ] {
            assert!(t.allows(path, "admin-token-0123456789"), "{path}");
            assert!(t.allows(path, "api-token-0123456789"), "{path}");
            assert!(!t.allows(path, "other-token-0123456789"), "{path}");
        }
        assert!(!t.allows("/v1/endpointsx", "admin-token-0123456789"));
        assert!(!t.allows("/v1/events", "admin-token-0123456789"));
        assert!(!t.allows("/adminx", "admin-token-0123456789"));
    }

    #[test]
    fn without_admin_tokens_the_api_tokens_open_everything() {
        let t = Tokens::new(&AuthConfig {
            tokens: vec!["api-token-0123456789".into()],
            admin_tokens: None,
        });
        for path in [
            "/v1/orders/x",
            "/v1/endpoints",
            "/admin/clock",
            "/admin/ui/x",
        ] {
            assert!(t.allows(path, "api-token-0123456789"), "{path}");
            assert!(!t.allows(path, "admin-token-0123456789"), "{path}");
        }
    }
}
