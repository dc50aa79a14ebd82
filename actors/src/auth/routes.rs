//! `/api/v1/auth`: each handler parses the request into typed values, asks
//! an [`AuthMsg`] and maps the reply to a response.
//!
//! Register, login, refresh and validate are public; logout, me and the
//! session routes need a caller, which the front-end establishes from the
//! access token, session included ([`crate::api::Caller::session_id`]), and
//! sends beside the message in its context, with the client's address.

use std::sync::Arc;

use http::{header, HeaderName, HeaderValue, StatusCode};
use serde_json::json;
use supervision::ServiceHandle;
use time::format_description::well_known::Rfc3339;

use super::messages::{AuthMsg, Registered};
use super::model::{parse_single_string, role_str, ClientInfo, Credentials, Email, NewUser};
use super::revocation::is_session_revoked;
use super::tokens::{RefreshToken, TokenKeys};
use crate::api::Access::{Public, User};
use crate::api::{ApiRequest, ApiResponse, LimitGroup, RequestContext, Route, Routes};
use crate::idempotency::IdempotencyKey;
use crate::kv::{KvStore, RateLimit};
use crate::ServiceError;

/// Everything the handlers need besides the request.
#[derive(Clone)]
struct Ctx {
    auth: ServiceHandle<AuthMsg, RequestContext>,
    keys: Arc<TokenKeys>,
    kv: Arc<dyn KvStore>,
    per_email: Option<RateLimit>,
}

pub fn routes(
    auth: ServiceHandle<AuthMsg, RequestContext>,
    keys: Arc<TokenKeys>,
    kv: Arc<dyn KvStore>,
    per_email: Option<RateLimit>,
) -> Vec<Route> {
    let shared = auth.shared().clone();
    let r = Routes::new(
        shared,
        Ctx {
            auth,
            keys,
            kv,
            per_email,
        },
    );
    vec![
        r.post("/api/v1/auth/register", Public, register)
            .limited_as(LimitGroup::Auth),
        r.post("/api/v1/auth/login", Public, login)
            .limited_as(LimitGroup::Auth),
        r.post("/api/v1/auth/refresh", Public, refresh),
        r.post("/api/v1/auth/logout", User, logout),
        r.post("/api/v1/auth/validate", Public, validate),
        r.get("/api/v1/auth/me", User, me),
        r.get("/api/v1/auth/sessions", User, list_sessions),
        r.delete("/api/v1/auth/sessions/{id}", User, revoke_session),
    ]
}

/// Token answers must not be cached by anything between us and the client
/// (RFC 6749 §5.1).
fn no_store(response: ApiResponse) -> ApiResponse {
    response.with_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

fn no_content() -> ApiResponse {
    ApiResponse::raw(StatusCode::NO_CONTENT, bytes::Bytes::new())
}

/// Who is signing in from where: the user agent they sent, the address the
/// edge saw.
fn client_info(req: &ApiRequest) -> ClientInfo {
    let user_agent = req
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    ClientInfo::new(user_agent, req.ctx.client_ip)
}

async fn register(ctx: Ctx, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let body = req.json_object()?;
    let user = NewUser::parse(&body).map_err(ServiceError::Validation)?;
    // No caller yet: every anonymous client shares the scope. A replay needs
    // the same body, password included, so it tells nobody anything new.
    let scope = "anonymous:POST /api/v1/auth/register".to_owned();
    let mut idempotency = IdempotencyKey::from_request(&req.headers, scope, &req.body)?;
    if let Some(key) = &mut idempotency {
        // The body holds the password: keep only a keyed fingerprint of it.
        key.request_hash = ctx
            .keys
            .fingerprint(&req.body)
            .map_err(ServiceError::internal)?;
    }
    let registered = req
        .ask(&ctx.auth, |reply| AuthMsg::Register {
            user,
            idempotency,
            reply,
        })
        .await?;
    match registered {
        Registered::New(user) => ApiResponse::json(StatusCode::CREATED, &user),
        Registered::Replayed { status, body } => {
            let status = StatusCode::from_u16(status).map_err(ServiceError::internal)?;
            Ok(ApiResponse::raw(status, body.into()).with_header(
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            ))
        }
    }
}

async fn login(ctx: Ctx, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let body = req.json_object()?;
    let credentials = Credentials::parse(&body).map_err(ServiceError::Validation)?;
    limit_per_email(&ctx, &credentials.email).await?;
    let client = client_info(&req);
    let pair = req
        .ask(&ctx.auth, |reply| AuthMsg::Login {
            credentials,
            client,
            reply,
        })
        .await?;
    Ok(no_store(ApiResponse::json(StatusCode::OK, &pair)?))
}

/// Sign-in attempts per email, across every client address (password
/// guessing spread over many IPs). A store that cannot answer lets the attempt
/// through, as the edge's limits do.
async fn limit_per_email(ctx: &Ctx, email: &Email) -> Result<(), ServiceError> {
    let Some(limit) = ctx.per_email else {
        return Ok(());
    };
    match ctx
        .kv
        .rate_limit(&format!("rl:email:{}", email.as_str()), limit)
        .await
    {
        Ok(decision) if decision.allowed => Ok(()),
        Ok(decision) => {
            tracing::info!(
                audit = "login_rate_limited",
                "sign-in attempts for one email over the limit"
            );
            Err(ServiceError::RateLimited {
                retry_after: decision.retry_after,
                limit: decision.limit,
                reset_after: decision.reset_after,
            })
        }
        Err(err) => {
            tracing::warn!(error = %err, "per-email limit store unavailable; letting the attempt through");
            Ok(())
        }
    }
}

async fn refresh(ctx: Ctx, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let body = req.json_object()?;
    let presented =
        parse_single_string(&body, "refresh_token").map_err(ServiceError::Validation)?;
    // Not the shape of a token we issue: refused without a database round trip.
    let token = RefreshToken::parse(&presented).ok_or_else(|| {
        tracing::info!(
            audit = "refresh_failed",
            reason = "malformed",
            "refresh failed"
        );
        ServiceError::Unauthenticated(super::actor::INVALID_REFRESH.into())
    })?;
    let pair = req
        .ask(&ctx.auth, |reply| AuthMsg::Refresh { token, reply })
        .await?;
    Ok(no_store(ApiResponse::json(StatusCode::OK, &pair)?))
}

async fn logout(ctx: Ctx, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let session_id = req.caller()?.session_id.ok_or_else(|| {
        ServiceError::Unauthenticated("logout needs a bearer access token".into())
    })?;
    req.ask(&ctx.auth, |reply| AuthMsg::Logout { session_id, reply })
        .await?;
    Ok(no_content())
}

async fn validate(ctx: Ctx, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let body = req.json_object()?;
    let token = parse_single_string(&body, "token").map_err(ServiceError::Validation)?;
    let invalid = |reason: &str| {
        ApiResponse::json(StatusCode::OK, &json!({"valid": false, "reason": reason}))
    };
    let claims = match ctx.keys.verify_access(token.trim()) {
        Ok(claims) => claims,
        Err(reason) => return invalid(reason.reason()),
    };
    if is_session_revoked(ctx.kv.as_ref(), claims.session_id).await? {
        return invalid("revoked");
    }
    // The database is the truth: a revocation the key-value store lost
    // (an in-memory store after a restart) is still seen here.
    let session_id = claims.session_id;
    let active = req
        .ask(&ctx.auth, |reply| AuthMsg::SessionActive {
            session_id,
            reply,
        })
        .await?;
    if !active {
        return invalid("revoked");
    }
    let expires_at = claims
        .expires_at
        .format(&Rfc3339)
        .map_err(ServiceError::internal)?;
    ApiResponse::json(
        StatusCode::OK,
        &json!({
            "valid": true,
            "user_id": claims.user_id,
            "role": role_str(claims.role),
            "session_id": claims.session_id,
            "expires_at": expires_at,
        }),
    )
}

async fn me(ctx: Ctx, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let user = req.ask(&ctx.auth, |reply| AuthMsg::Me { reply }).await?;
    ApiResponse::json(StatusCode::OK, &user)
}

async fn list_sessions(ctx: Ctx, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let (page, user_id) = (req.page_request()?, req.uuid_query("user_id")?);
    let page = req
        .ask(&ctx.auth, |reply| AuthMsg::ListSessions {
            user_id,
            page,
            reply,
        })
        .await?;
    ApiResponse::json(StatusCode::OK, &page)
}

async fn revoke_session(ctx: Ctx, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let id = req.uuid_param("id", "session")?;
    req.ask(&ctx.auth, |reply| AuthMsg::RevokeSession { id, reply })
        .await?;
    Ok(no_content())
}
