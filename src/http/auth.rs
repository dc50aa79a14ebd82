//! Authentication at the edge: the front-end verifies the access token itself
//! (signature, algorithm, issuer, audience, expiry: no actor round trip),
//! checks that its session has not been revoked, and hands the services a
//! typed [`Caller`].

use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::HeaderMap;

use actors::access::{is_session_revoked, TokenKeys};
use actors::api::Caller;
use actors::kv::KvStore;
use actors::ServiceError;

/// One message for every refused token: which check failed goes to the logs.
const REFUSED: &str = "invalid, expired or revoked access token";

pub struct Authenticator {
    keys: Arc<TokenKeys>,
    kv: Arc<dyn KvStore>,
}

impl Authenticator {
    pub fn new(keys: Arc<TokenKeys>, kv: Arc<dyn KvStore>) -> Self {
        Self { keys, kv }
    }

    /// The caller named by the request's bearer token.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, ServiceError> {
        let token = bearer(headers)?;
        let claims = self.keys.verify_access(token).map_err(|err| {
            tracing::info!(reason = err.reason(), "access token refused");
            ServiceError::Unauthenticated(REFUSED.into())
        })?;
        if is_session_revoked(self.kv.as_ref(), claims.session_id).await? {
            tracing::info!(
                audit = "revoked_token_refused",
                user_id = %claims.user_id,
                session_id = %claims.session_id,
                "access token of a revoked session refused"
            );
            return Err(ServiceError::Unauthenticated(REFUSED.into()));
        }
        Ok(Caller {
            user_id: claims.user_id,
            role: claims.role,
            session_id: Some(claims.session_id),
        })
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ServiceError> {
    let value = headers.get(AUTHORIZATION).ok_or_else(|| {
        ServiceError::Unauthenticated(
            "authentication required: send authorization: Bearer <access token>".into(),
        )
    })?;
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ServiceError::Unauthenticated(
                "malformed authorization header: expected Bearer <access token>".into(),
            )
        })
}
