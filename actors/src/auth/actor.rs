//! The auth worker: handles one [`AuthMsg`] at a time against the store. The
//! service runs `workers` of them under its supervisor; password hashing
//! inside a handler runs on the hashing threads (`password.rs`), so a worker
//! waiting for a hash holds no runtime thread.
//!
//! Audit trail: logins, failed logins, refreshes, refresh-token reuse and
//! revocations are logged at info (reuse at warn) with an `audit` field, the
//! user id and the session id, inside the request's span (so with its
//! request id). Never a password or a token, and never the email of a
//! failed login either: people type their password into the email field.

use std::sync::Arc;
use std::time::Duration;

use supervision::{BoxError, WorkerHandler};
use time::OffsetDateTime;
use uuid::Uuid;

use super::messages::{AuthMsg, Registered, TokenPair};
use super::model::{ClientInfo, Credentials, NewUser, Session, User};
use super::password::{self, PasswordError};
use super::revocation::{revocation_ttl, revoke_session_tokens};
use super::store::{ActedBy, AuthStore, Cause, CreateUser, RevokeReason, Rotation};
use super::tokens::{IssueError, RefreshToken, TokenKeys};
use crate::api::{Page, PageRequest, RequestContext, Role};
use crate::idempotency::{Claim, IdempotencyKey};
use crate::kv::KvStore;
use crate::service::respond;
use crate::storage::StoreError;
use crate::ServiceError;

/// The one message for every failed login, so that a wrong password and an
/// unknown email give byte-identical answers.
pub const INVALID_CREDENTIALS: &str = "invalid email or password";
/// The one message for every refused refresh token (unknown, spent, expired,
/// revoked).
pub const INVALID_REFRESH: &str = "refresh token is invalid, expired or revoked";
/// `last_used_at` is written at most this often per session.
const TOUCH_GRANULARITY: Duration = Duration::from_secs(60);

/// What every worker starts from, and keeps.
#[derive(Clone)]
pub struct AuthState {
    pub store: AuthStore,
    pub keys: Arc<TokenKeys>,
    pub kv: Arc<dyn KvStore>,
}

pub struct AuthWorker;

impl WorkerHandler for AuthWorker {
    type Msg = AuthMsg;
    type Context = RequestContext;
    type State = AuthState;
    type Args = AuthState;

    fn kind(msg: &AuthMsg) -> &'static str {
        match msg {
            AuthMsg::Register { .. } => "Register",
            AuthMsg::Login { .. } => "Login",
            AuthMsg::Refresh { .. } => "Refresh",
            AuthMsg::Logout { .. } => "Logout",
            AuthMsg::SessionActive { .. } => "SessionActive",
            AuthMsg::Me { .. } => "Me",
            AuthMsg::ListSessions { .. } => "ListSessions",
            AuthMsg::RevokeSession { .. } => "RevokeSession",
        }
    }

    /// Waits for the database (PostgreSQL: schema and migrations, once per
    /// process; a database that is down is a failed start the supervisor
    /// backs off). The first worker then copies recent revocations into the
    /// key-value store, in case it is an in-memory one that was lost with
    /// the previous process.
    async fn init(state: &AuthState, index: usize) -> Result<AuthState, BoxError> {
        state.store.ensure_ready().await?;
        if index == 0 {
            restore_revocations(state).await;
        }
        Ok(state.clone())
    }

    async fn before(ctx: &RequestContext) -> Result<(), BoxError> {
        ctx.strike_fault().await
    }

    async fn handle(
        msg: AuthMsg,
        ctx: &RequestContext,
        state: &mut AuthState,
    ) -> Result<(), BoxError> {
        match msg {
            AuthMsg::Register {
                user,
                idempotency,
                reply,
            } => respond(reply, register(state, ctx, user, idempotency).await),
            AuthMsg::Login {
                credentials,
                client,
                reply,
            } => respond(reply, login(state, ctx, credentials, &client).await),
            AuthMsg::Refresh { token, reply } => respond(reply, refresh(state, ctx, &token).await),
            AuthMsg::Logout { session_id, reply } => {
                respond(reply, logout(state, ctx, session_id).await)
            }
            AuthMsg::SessionActive { session_id, reply } => {
                let result = async {
                    let session = state
                        .store
                        .get_session(session_id)
                        .await
                        .map_err(internal)?;
                    Ok(session.is_some_and(|s| s.is_active(OffsetDateTime::now_utc())))
                }
                .await;
                respond(reply, result)
            }
            AuthMsg::Me { reply } => respond(reply, me(state, ctx).await),
            AuthMsg::ListSessions {
                user_id,
                page,
                reply,
            } => respond(reply, list_sessions(state, ctx, user_id, page).await),
            AuthMsg::RevokeSession { id, reply } => {
                respond(reply, revoke_session(state, ctx, id).await)
            }
        }
    }
}

/// A store failure as a reply: 503 when the database is down, else 500;
/// either is the worker's failure, so a broken database trips the circuit.
fn internal(err: StoreError) -> ServiceError {
    ServiceError::from_store("auth", err)
}

fn hashing_failed(err: PasswordError) -> ServiceError {
    if let PasswordError::Busy = err {
        // Load, not a fault: refused at once, and not the worker's failure.
        return ServiceError::Unavailable {
            message: "too many sign-ins at once, try again shortly".into(),
            retry_after: std::time::Duration::from_secs(1),
        };
    }
    tracing::error!(error = %err, "password hashing failed");
    ServiceError::internal(err)
}

fn issuing_failed(err: IssueError) -> ServiceError {
    tracing::error!(error = %err, "cannot issue a token");
    ServiceError::internal(err)
}

fn invalid_credentials() -> ServiceError {
    ServiceError::Unauthenticated(INVALID_CREDENTIALS.into())
}

fn invalid_refresh() -> ServiceError {
    ServiceError::Unauthenticated(INVALID_REFRESH.into())
}

/// Marks the session's access tokens revoked in the key-value store.
async fn revoke_tokens(state: &AuthState, session_id: Uuid) -> Result<(), ServiceError> {
    let ttl = revocation_ttl(state.keys.access_ttl());
    revoke_session_tokens(state.kv.as_ref(), session_id, ttl)
        .await
        .map_err(ServiceError::from)
}

async fn restore_revocations(state: &AuthState) {
    let now = OffsetDateTime::now_utc();
    let window = revocation_ttl(state.keys.access_ttl());
    let revoked = match state.store.revoked_since(now - window).await {
        Ok(revoked) => revoked,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read recent revocations");
            return;
        }
    };
    let mut restored = 0usize;
    for (session_id, revoked_at) in revoked {
        let left = (revoked_at + window) - now;
        let Ok(left) = Duration::try_from(left) else {
            continue;
        };
        if left.is_zero() {
            continue;
        }
        match revoke_session_tokens(state.kv.as_ref(), session_id, left).await {
            Ok(()) => restored += 1,
            Err(err) => {
                tracing::warn!(error = %err, "cannot restore revocations into the key-value store");
                return;
            }
        }
    }
    if restored > 0 {
        tracing::info!(sessions = restored, "restored recent session revocations");
    }
}

fn pair(
    state: &AuthState,
    user: User,
    session_id: Uuid,
    refresh: &RefreshToken,
) -> Result<TokenPair, ServiceError> {
    let access = state
        .keys
        .issue_access(user.id, user.role, session_id)
        .map_err(issuing_failed)?;
    Ok(TokenPair {
        access_token: access.token,
        refresh_token: refresh.as_str().to_owned(),
        token_type: "Bearer",
        expires_in: state.keys.access_ttl().as_secs(),
        user,
    })
}

async fn register(
    state: &AuthState,
    ctx: &RequestContext,
    new: NewUser,
    key: Option<IdempotencyKey>,
) -> Result<Registered, ServiceError> {
    if let Some(key) = &key {
        match state.store.claim(key).await.map_err(internal)? {
            Claim::Claimed => {}
            Claim::Replay { status, body } => return Ok(Registered::Replayed { status, body }),
            other => {
                return Err(other
                    .conflict_error()
                    .unwrap_or_else(|| ServiceError::internal("unexpected idempotency claim")))
            }
        }
    }
    let result = async {
        let hash = password::hash(new.password.clone())
            .await
            .map_err(hashing_failed)?;
        // The new user is the actor of their own registration.
        let cause = Cause::request(&ctx.request_id, ActedBy::Subject);
        match state
            .store
            .create_user(
                cause,
                &new.email,
                &new.name,
                &hash,
                Role::User,
                key.as_ref(),
            )
            .await
            .map_err(internal)?
        {
            CreateUser::Created(user) => Ok(user),
            CreateUser::EmailTaken => Err(ServiceError::Conflict(
                "a user with this email already exists".into(),
            )),
        }
    }
    .await;
    match result {
        Ok(user) => {
            tracing::info!(audit = "user_registered", user_id = %user.id, "user registered");
            Ok(Registered::New(user))
        }
        Err(err) => {
            if let Some(key) = &key {
                if let Err(release) = state.store.release(key).await {
                    tracing::warn!(error = %release, "could not release the idempotency key");
                }
            }
            Err(err)
        }
    }
}

async fn login(
    state: &AuthState,
    ctx: &RequestContext,
    credentials: Credentials,
    client: &ClientInfo,
) -> Result<TokenPair, ServiceError> {
    let Credentials { email, password } = credentials;
    let found = state
        .store
        .find_user_by_email(&email)
        .await
        .map_err(internal)?;
    // Both branches run one argon2 verification at the same cost, so the
    // time taken does not say whether the email has an account.
    let (user, stored_hash) = match found {
        Some((user, stored_hash)) => {
            let matches = password::verify(password.clone(), stored_hash.clone())
                .await
                .map_err(hashing_failed)?;
            if !matches {
                tracing::info!(audit = "login_failed", user_id = %user.id, reason = "wrong_password", "login failed");
                return Err(invalid_credentials());
            }
            (user, stored_hash)
        }
        None => {
            password::verify_dummy(password)
                .await
                .map_err(hashing_failed)?;
            tracing::info!(
                audit = "login_failed",
                reason = "unknown_email",
                "login failed"
            );
            return Err(invalid_credentials());
        }
    };
    if password::needs_rehash(&stored_hash) {
        // Best effort: the login succeeds whether or not the upgrade does.
        match password::hash(password).await {
            Ok(hash) => {
                if let Err(err) = state.store.set_password_hash(user.id, &hash).await {
                    tracing::warn!(error = %err, user_id = %user.id, "could not store the rehashed password");
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not rehash the password"),
        }
    }
    let refresh = RefreshToken::generate().map_err(issuing_failed)?;
    let cause = Cause::request(&ctx.request_id, ActedBy::User(user.id));
    let session = state
        .store
        .create_session(
            cause,
            user.id,
            &refresh.hash(),
            state.keys.refresh_ttl(),
            client,
        )
        .await
        .map_err(internal)?;
    tracing::info!(audit = "login", user_id = %user.id, session_id = %session.id, "login");
    pair(state, user, session.id, &refresh)
}

async fn refresh(
    state: &AuthState,
    ctx: &RequestContext,
    presented: &RefreshToken,
) -> Result<TokenPair, ServiceError> {
    let next = RefreshToken::generate().map_err(issuing_failed)?;
    // A refresh is anonymous: a revocation for reuse is put on the session's owner.
    let cause = Cause::request(&ctx.request_id, ActedBy::Subject);
    let rotation = state
        .store
        .rotate_refresh(
            cause,
            &presented.hash(),
            &next.hash(),
            state.keys.refresh_ttl(),
        )
        .await
        .map_err(internal)?;
    match rotation {
        Rotation::Rotated(session) => {
            // The role is read afresh: a promotion shows in the next token.
            let Some(user) = state
                .store
                .find_user_by_id(session.user_id)
                .await
                .map_err(internal)?
            else {
                tracing::info!(audit = "refresh_failed", session_id = %session.id, reason = "no_user", "refresh failed");
                return Err(invalid_refresh());
            };
            tracing::info!(audit = "refresh", user_id = %user.id, session_id = %session.id, "refresh");
            pair(state, user, session.id, &next)
        }
        Rotation::Reused {
            session_id,
            user_id,
        } => {
            tracing::warn!(
                audit = "refresh_token_reused",
                user_id = %user_id,
                session_id = %session_id,
                "a spent refresh token was presented: session revoked"
            );
            revoke_tokens(state, session_id).await?;
            Err(invalid_refresh())
        }
        Rotation::Invalid => {
            tracing::info!(
                audit = "refresh_failed",
                reason = "invalid",
                "refresh failed"
            );
            Err(invalid_refresh())
        }
    }
}

async fn logout(
    state: &AuthState,
    ctx: &RequestContext,
    session_id: Uuid,
) -> Result<(), ServiceError> {
    let caller = ctx.caller()?;
    let session = state
        .store
        .get_session(session_id)
        .await
        .map_err(internal)?;
    // The session id comes from the caller's verified token, so a mismatch
    // is a bug in the front-end, not a user's doing; refuse anyway.
    if session
        .as_ref()
        .is_some_and(|s| s.user_id != caller.user_id)
    {
        return Err(ServiceError::Unauthenticated(
            "session does not belong to the caller".into(),
        ));
    }
    let cause = Cause::request(&ctx.request_id, ActedBy::User(caller.user_id));
    state
        .store
        .revoke_session(session_id, cause, RevokeReason::Logout)
        .await
        .map_err(internal)?;
    revoke_tokens(state, session_id).await?;
    tracing::info!(audit = "logout", user_id = %caller.user_id, session_id = %session_id, "logout");
    Ok(())
}

async fn touch(state: &AuthState, session_id: Option<Uuid>) {
    if let Some(id) = session_id {
        // Best effort: failing to record activity must not fail the request.
        if let Err(err) = state.store.touch_session(id, TOUCH_GRANULARITY).await {
            tracing::warn!(error = %err, session_id = %id, "could not update last_used_at");
        }
    }
}

async fn me(state: &AuthState, ctx: &RequestContext) -> Result<User, ServiceError> {
    let caller = ctx.caller()?;
    touch(state, caller.session_id).await;
    state
        .store
        .find_user_by_id(caller.user_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ServiceError::NotFound("user not found".into()))
}

async fn list_sessions(
    state: &AuthState,
    ctx: &RequestContext,
    user_id: Option<Uuid>,
    page: PageRequest,
) -> Result<Page<Session>, ServiceError> {
    let caller = ctx.caller()?;
    let session_id = caller.session_id;
    touch(state, session_id).await;
    let target = AuthMsg::list_target(caller, user_id);
    let (records, total) = state
        .store
        .list_sessions(target, page)
        .await
        .map_err(internal)?;
    let sessions = records.into_iter().map(|r| r.view(session_id)).collect();
    Ok(Page::new(sessions, page, total))
}

async fn revoke_session(
    state: &AuthState,
    ctx: &RequestContext,
    id: Uuid,
) -> Result<(), ServiceError> {
    let caller = ctx.caller()?;
    let not_found = || ServiceError::NotFound("session not found".into());
    // Another user's session is "not found": its existence is not revealed.
    let session = state
        .store
        .get_session(id)
        .await
        .map_err(internal)?
        .filter(|s| caller.may_access(s.user_id))
        .ok_or_else(not_found)?;
    let cause = Cause::request(&ctx.request_id, ActedBy::User(caller.user_id));
    state
        .store
        .revoke_session(id, cause, RevokeReason::Revoked)
        .await
        .map_err(internal)?;
    revoke_tokens(state, id).await?;
    tracing::info!(
        audit = "session_revoked",
        user_id = %session.user_id,
        session_id = %id,
        by = %caller.user_id,
        "session revoked"
    );
    Ok(())
}
