//! The auth service's API: the messages its workers handle, and what they
//! answer. Who asks (the caller and their session, the request id) travels
//! beside each message, in its [`crate::api::RequestContext`].

use std::fmt;

use serde::Serialize;
use uuid::Uuid;

use super::model::{ClientInfo, Credentials, NewUser, Session, User};
use super::tokens::RefreshToken;
use crate::api::{Caller, Page, PageRequest};
use crate::idempotency::IdempotencyKey;

pub use crate::api::Reply;

/// The outcome of a registration: a new user, or the stored answer to an
/// idempotency key seen before.
#[derive(Debug)]
pub enum Registered {
    New(User),
    Replayed { status: u16, body: Vec<u8> },
}

/// What login and refresh answer:
/// `{access_token, refresh_token, token_type: "Bearer", expires_in, user}`.
/// Its tokens never appear in `Debug` output.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    #[schema(value_type = String, pattern = "^Bearer$")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub user: User,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("user", &self.user)
            .finish()
    }
}

pub enum AuthMsg {
    Register {
        user: NewUser,
        idempotency: Option<IdempotencyKey>,
        reply: Reply<Registered>,
    },
    Login {
        credentials: Credentials,
        client: ClientInfo,
        reply: Reply<TokenPair>,
    },
    Refresh {
        token: RefreshToken,
        reply: Reply<TokenPair>,
    },
    /// Revokes the session the caller's token belongs to.
    Logout { session_id: Uuid, reply: Reply<()> },
    /// Whether a session is neither revoked nor expired (for `/validate`,
    /// which checks the database as well as the key-value store).
    SessionActive {
        session_id: Uuid,
        reply: Reply<bool>,
    },
    /// The caller; their session's `last_used_at` is updated.
    Me { reply: Reply<User> },
    /// The caller's session is marked `current` in the list.
    ListSessions {
        /// Admins may ask for another user's sessions; for users it is
        /// ignored (they always see their own).
        user_id: Option<Uuid>,
        page: PageRequest,
        reply: Reply<Page<Session>>,
    },
    /// Revokes a session of the caller's own, or anyone's for an admin.
    RevokeSession { id: Uuid, reply: Reply<()> },
}

impl AuthMsg {
    /// Whose sessions a list request shows, given who asks.
    pub fn list_target(caller: &Caller, user_id: Option<Uuid>) -> Uuid {
        match (caller.is_admin(), user_id) {
            (true, Some(user)) => user,
            _ => caller.user_id,
        }
    }
}
