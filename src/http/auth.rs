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

/// The request's bearer token.
///
/// * Sent twice, the header is a 400 naming it: two credentials have no one
///   meaning, and a proxy that reads the first while we read the last is
///   how a request gets authorised as someone else.
/// * The scheme is matched case-insensitively (RFC 7235 §2.1: `Bearer`,
///   `bearer` and `BEARER` are the same scheme); the token is what follows
///   the spaces after it.
fn bearer(headers: &HeaderMap) -> Result<&str, ServiceError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or_else(|| {
        ServiceError::Unauthenticated(
            "authentication required: send authorization: Bearer <access token>".into(),
        )
    })?;
    if values.next().is_some() {
        return Err(ServiceError::BadRequest(
            "the authorization header must be sent once, not several times".into(),
        ));
    }
    value.to_str().ok().and_then(bearer_token).ok_or_else(|| {
        ServiceError::Unauthenticated(
            "malformed authorization header: expected Bearer <access token>".into(),
        )
    })
}

/// The token of an `authorization` value with the `Bearer` scheme, in any
/// case; `None` for another scheme or an empty token. Shared with the admin
/// listener's token check.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR   abc "] {
            assert_eq!(bearer_token(value), Some("abc"), "{value}");
        }
        for value in [
            "Bearer",
            "Bearer ",
            "Basic abc",
            "Bearerabc",
            "",
            " Bearer abc",
        ] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn two_authorization_headers_are_a_bad_request() {
        let mut headers = HeaderMap::new();
        headers.append(AUTHORIZATION, "Bearer a".parse().expect("value"));
        headers.append(AUTHORIZATION, "Bearer b".parse().expect("value"));
        let err = bearer(&headers).expect_err("refused");
        assert_eq!(err.code(), "BAD_REQUEST");
        assert!(err.to_string().contains("authorization"), "{err}");
    }
}
