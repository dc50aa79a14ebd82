//! The auth service: users register and log in, get short-lived access
//! tokens (JWT) and long-lived rotating refresh tokens, list and revoke their
//! sessions.
//!
//! * `messages.rs` — [`AuthMsg`], the service's API
//! * `actor.rs` — the worker that handles them
//! * `store/` + `migrations/` — its own database (users, sessions, refresh
//!   token hashes, idempotency keys, the outbox of the events it publishes:
//!   `user.registered`, `user.logged_in`, `session.revoked`)
//! * `model.rs` — typed input values ([`model::Email`],
//!   [`model::Password`], …), the user and the session
//! * `password.rs` — argon2id hashing on its own low-priority threads
//! * [`crate::access`] (shared with the front-end, not in this folder):
//!   [`TokenKeys`] — access tokens issued and verified, refresh tokens, the
//!   secret — and ended sessions in the key-value store ([`is_session_revoked`])
//! * `routes.rs` — `/api/v1/auth`
//! * `settings.rs` — `[services.auth]` (the per-email sign-in limit)
//! * `topics.rs` — the topics it publishes
//!
//! The front-end verifies access tokens itself with the same
//! `Arc<TokenKeys>` (a shared resource: [`TokenKeys::verify_access`], then
//! [`is_session_revoked`]); no message to this service is needed for that.

pub mod actor;
pub mod messages;
pub mod model;
mod openapi;
pub mod password;
pub mod routes;
pub mod settings;
pub mod store;
pub mod topics;

/// Tokens and revocations live in [`crate::access`], shared with the edge.
pub use crate::access::{revocation, tokens};

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use supervision::ServiceSupervisor;
use time::OffsetDateTime;

pub use crate::access::{is_session_revoked, AccessClaims, TokenError, TokenKeys, TokenSettings};
pub use messages::AuthMsg;

use crate::kv::KvStore;
use crate::service::{
    RateLimiting, Service, ServiceContext, ServiceDefinition, StartError, StartedService,
};
use crate::storage::upkeep::spawn_purge;
use crate::storage::StoreError;
use actor::{AuthState, AuthWorker};
use model::{DisplayName, Email, Password};
use password::PasswordError;
use settings::AuthSettings;
use store::{AuthStore, GrantAdmin};

/// The service's name: its `[services.auth]` section, its database file
/// (`auth.db`) or PostgreSQL schema (`auth`), its node in the tree.
pub const NAME: &str = "auth";

pub const SERVICE: ServiceDefinition = ServiceDefinition::of::<Auth>();

/// The auth service, for [`ServiceDefinition::of`]. It needs two shared
/// resources: the token keys (`Arc<TokenKeys>`, the same the front-end
/// verifies with) and the key-value store (`Arc<dyn KvStore>`).
pub struct Auth;

impl Service for Auth {
    const NAME: &'static str = NAME;
    type Settings = AuthSettings;

    fn openapi() -> crate::api::openapi::Document {
        openapi::document()
    }

    async fn start(
        ctx: ServiceContext,
        settings: AuthSettings,
    ) -> Result<StartedService, StartError> {
        let keys: Arc<TokenKeys> = ctx.resource()?;
        let kv: Arc<dyn KvStore> = ctx.resource()?;
        let limits_apply = ctx
            .resources
            .get::<RateLimiting>()
            .is_none_or(|limiting| limiting.enabled);
        let per_email = limits_apply.then(|| settings.email_limit.rate_limit());
        // An unfinished idempotency claim outlives its request by the call timeout at most.
        let claim_lease = ctx.call_timeout * 2;
        let store = AuthStore::open(&ctx.data_dir, &ctx.storage, claim_lease)
            .await
            .map_err(StartError::store(NAME))?;
        spawn_purges(&store);
        let state = AuthState {
            store: store.clone(),
            keys: keys.clone(),
            kv: kv.clone(),
        };
        let (handle, starter) = ServiceSupervisor::<AuthWorker>::build(
            ctx.name,
            ctx.policy.clone(),
            ctx.workers,
            ctx.call_timeout,
            state,
        );
        Ok(StartedService {
            starter,
            routes: routes::routes(handle, keys, kv, per_email),
            dependencies: vec![store.dependency()],
            outbox: Some(store.outbox()),
            subscriptions: Vec::new(),
            parts: Vec::new(),
        })
    }
}

/// How often expired idempotency keys and sessions are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60 * 60);

/// The name a bootstrapped admin is created with.
const ADMIN_NAME: &str = "Administrator";

fn spawn_purges(store: &AuthStore) {
    let keys = store.clone();
    spawn_purge("idempotency keys", PURGE_EVERY, move || {
        let keys = keys.clone();
        async move { keys.purge_expired_keys().await }
    });
    // An expired session's tokens are all dead: its refresh tokens can no
    // longer be redeemed nor reused, its access tokens have expired long before.
    let sessions = store.clone();
    spawn_purge("expired sessions", PURGE_EVERY, move || {
        let sessions = sessions.clone();
        async move { sessions.purge_sessions(OffsetDateTime::now_utc()).await }
    });
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("no user has the email {email}; a password is needed to create the admin")]
    PasswordRequired { email: String },
    #[error("invalid admin name: {0}")]
    Name(&'static str),
}

/// Makes sure the user with `email` exists and is an admin: for the
/// `stageworks user create --admin` command and the `auth.bootstrap_admin`
/// setting. An existing user is promoted and keeps their password; a missing
/// one is created with `password` (an error without one). Idempotent: run
/// it at every start if you like.
pub async fn ensure_admin(
    store: &AuthStore,
    email: &Email,
    password: Option<Password>,
) -> Result<GrantAdmin, BootstrapError> {
    store.ensure_ready().await?;
    let outcome = if store.find_user_by_email(email).await?.is_some() {
        store.grant_admin(email, None).await?
    } else {
        let Some(password) = password else {
            return Err(BootstrapError::PasswordRequired {
                email: email.as_str().to_owned(),
            });
        };
        let name = DisplayName::parse(ADMIN_NAME).map_err(BootstrapError::Name)?;
        let hash = password::hash(password).await?;
        store.grant_admin(email, Some((&name, &hash))).await?
    };
    match &outcome {
        GrantAdmin::Created(user) => {
            tracing::info!(audit = "admin_created", user_id = %user.id, "admin created");
        }
        GrantAdmin::Promoted(user) => {
            tracing::info!(audit = "admin_granted", user_id = %user.id, "admin role granted");
        }
        GrantAdmin::AlreadyAdmin(_) | GrantAdmin::NoSuchUser => {}
    }
    Ok(outcome)
}
