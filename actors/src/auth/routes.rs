//! `/api/v1/auth`: turns each request into an [`AuthMsg`] and the reply into
//! a response. Input is parsed here, at the edge, into typed values.
//!
//! Register, login, refresh and validate are public; logout, me and the
//! session routes need a caller, which the front-end establishes from the
//! access token. The caller's *session* is not in [`Caller`] yet, so these
//! routes read it from the bearer token itself, verified again here (one
//! HMAC): unlike a header set by the front-end, a client cannot forge it.

use std::net::IpAddr;
use std::sync::Arc;

use http::{header, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::json;
use supervision::ServiceHandle;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::messages::{AuthMsg, Registered, TokenPair};
use super::model::{parse_single_string, role_str, ClientInfo, Credentials, Email, NewUser};
use super::revocation::is_session_revoked;
use super::tokens::{RefreshToken, TokenKeys};
use crate::api::{LimitGroup, Access, ApiRequest, ApiResponse, Route};
use crate::idempotency::IdempotencyKey;
use crate::kv::{KvStore, RateLimit};
use crate::ServiceError;

/// Where the front-end puts the client's address (the peer, or the
/// configured proxy header's value); it must drop any value a client sent.
pub const CLIENT_IP_HEADER: &str = "x-stageworks-client-ip";

/// Everything the handlers need besides the request.
#[derive(Clone)]
struct Ctx {
    auth: ServiceHandle<AuthMsg>,
    keys: Arc<TokenKeys>,
    kv: Arc<dyn KvStore>,
    per_email: Option<RateLimit>,
}

pub fn routes(
    auth: ServiceHandle<AuthMsg>,
    keys: Arc<TokenKeys>,
    kv: Arc<dyn KvStore>,
    per_email: Option<RateLimit>,
) -> Vec<Route> {
    let shared = auth.shared().clone();
    let ctx = Ctx {
        auth,
        keys,
        kv,
        per_email,
    };
    let route = |method: Method, path: &'static str, access: Access, handler: Handler| {
        let ctx = ctx.clone();
        Route::new(method, path, access, shared.clone(), move |req| {
            handler(ctx.clone(), req)
        })
    };
    vec![
        route(
            Method::POST,
            "/api/v1/auth/register",
            Access::Public,
            |c, r| Box::pin(register(c, r)),
        )
        .limited_as(LimitGroup::Auth),
        route(
            Method::POST,
            "/api/v1/auth/login",
            Access::Public,
            |c, r| Box::pin(login(c, r)),
        )
        .limited_as(LimitGroup::Auth),
        route(
            Method::POST,
            "/api/v1/auth/refresh",
            Access::Public,
            |c, r| Box::pin(refresh(c, r)),
        ),
        route(Method::POST, "/api/v1/auth/logout", Access::User, |c, r| {
            Box::pin(logout(c, r))
        }),
        route(
            Method::POST,
            "/api/v1/auth/validate",
            Access::Public,
            |c, r| Box::pin(validate(c, r)),
        ),
        route(Method::GET, "/api/v1/auth/me", Access::User, |c, r| {
            Box::pin(me(c, r))
        }),
        route(
            Method::GET,
            "/api/v1/auth/sessions",
            Access::User,
            |c, r| Box::pin(list_sessions(c, r)),
        ),
        route(
            Method::DELETE,
            "/api/v1/auth/sessions/{id}",
            Access::User,
            |c, r| Box::pin(revoke_session(c, r)),
        ),
    ]
}

type Handler =
    fn(Ctx, ApiRequest) -> futures::future::BoxFuture<'static, Result<ApiResponse, ServiceError>>;

/// Token answers must not be cached by anything between us and the client
/// (RFC 6749 §5.1).
fn no_store(response: ApiResponse) -> ApiResponse {
    response.with_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

fn no_content() -> ApiResponse {
    ApiResponse::raw(StatusCode::NO_CONTENT, bytes::Bytes::new())
}

/// The session of the caller's access token, if the request carries one
/// that verifies and names the same user as the caller. `None` without a
/// bearer token (the front-end's stand-in authentication).
fn caller_session(req: &ApiRequest, keys: &TokenKeys) -> Result<Option<Uuid>, ServiceError> {
    let caller = req.caller()?;
    let Some(value) = req.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| ServiceError::Unauthenticated("malformed authorization header".into()))?;
    let claims = keys.verify_access(token.trim()).map_err(|reason| {
        tracing::info!(reason = reason.reason(), "access token refused");
        ServiceError::Unauthenticated("invalid or expired access token".into())
    })?;
    if claims.user_id != caller.user_id {
        return Err(ServiceError::Unauthenticated(
            "invalid or expired access token".into(),
        ));
    }
    Ok(Some(claims.session_id))
}

fn client_info(req: &ApiRequest) -> ClientInfo {
    let user_agent = req
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let ip = req
        .headers
        .get(CLIENT_IP_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    ClientInfo::new(user_agent, ip)
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
    let req_ctx = req.ctx;
    let registered = ctx
        .auth
        .call(|reply| AuthMsg::Register {
            ctx: req_ctx,
            user,
            idempotency,
            reply,
        })
        .await??;
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
    let req_ctx = req.ctx;
    let pair: TokenPair = ctx
        .auth
        .call(|reply| AuthMsg::Login {
            ctx: req_ctx,
            credentials,
            client,
            reply,
        })
        .await??;
    Ok(no_store(ApiResponse::json(StatusCode::OK, &pair)?))
}

/// Sign-in attempts per email, across every client address (password
/// guessing spread over many IPs). A store that cannot answer lets the attempt
/// through, as the edge's limits do.
async fn limit_per_email(ctx: &Ctx, email: &Email) -> Result<(), ServiceError> {
    let Some(limit) = ctx.per_email else {
        return Ok(());
    };
    match ctx.kv.rate_limit(&format!("rl:email:{}", email.as_str()), limit).await {
        Ok(decision) if decision.allowed => Ok(()),
        Ok(decision) => {
            tracing::info!(audit = "login_rate_limited", "sign-in attempts for one email over the limit");
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
    let req_ctx = req.ctx;
    let pair = ctx
        .auth
        .call(|reply| AuthMsg::Refresh {
            ctx: req_ctx,
            token,
            reply,
        })
        .await??;
    Ok(no_store(ApiResponse::json(StatusCode::OK, &pair)?))
}

async fn logout(ctx: Ctx, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let caller = req.caller()?.clone();
    let session_id = caller_session(&req, &ctx.keys)?.ok_or_else(|| {
        ServiceError::Unauthenticated("logout needs a bearer access token".into())
    })?;
    let req_ctx = req.ctx;
    ctx.auth
        .call(|reply| AuthMsg::Logout {
            ctx: req_ctx,
            caller,
            session_id,
            reply,
        })
        .await??;
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
    let req_ctx = req.ctx;
    let session_id = claims.session_id;
    let active = ctx
        .auth
        .call(|reply| AuthMsg::SessionActive {
            ctx: req_ctx,
            session_id,
            reply,
        })
        .await??;
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
    let caller = req.caller()?.clone();
    let session_id = caller_session(&req, &ctx.keys)?;
    let req_ctx = req.ctx;
    let user = ctx
        .auth
        .call(|reply| AuthMsg::Me {
            ctx: req_ctx,
            caller,
            session_id,
            reply,
        })
        .await??;
    ApiResponse::json(StatusCode::OK, &user)
}

async fn list_sessions(ctx: Ctx, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let caller = req.caller()?.clone();
    let session_id = caller_session(&req, &ctx.keys)?;
    let page = req.page_request()?;
    let user_id = req.uuid_query("user_id")?;
    let req_ctx = req.ctx;
    let page = ctx
        .auth
        .call(|reply| AuthMsg::ListSessions {
            ctx: req_ctx,
            caller,
            session_id,
            user_id,
            page,
            reply,
        })
        .await??;
    ApiResponse::json(StatusCode::OK, &page)
}

async fn revoke_session(ctx: Ctx, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let caller = req.caller()?.clone();
    let id = req.uuid_param("id", "session")?;
    let req_ctx = req.ctx;
    ctx.auth
        .call(|reply| AuthMsg::RevokeSession {
            ctx: req_ctx,
            caller,
            id,
            reply,
        })
        .await??;
    Ok(no_content())
}
