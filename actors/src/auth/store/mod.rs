//! The auth service's data: its own database, SQLite (`sqlite.rs`, the file
//! `auth.db`) or PostgreSQL (`postgres.rs`, the schema `auth`), with the
//! migrations of each in `../migrations/`. Nothing outside this service reads
//! these tables. This module holds what both backends share (the rules of
//! refresh-token rotation among them) and picks one.
//!
//! Refresh tokens: a session holds the hash of its current token; every
//! token ever issued to it is kept in `refresh_tokens` (its hash, and when
//! it was spent). Rotation happens under the session's row lock
//! (PostgreSQL) or the single writer connection (SQLite), so of two
//! concurrent refreshes with one token exactly one rotates and the other is
//! seen as reuse.
//!
//! Events: every change others must hear of writes its event to the outbox
//! in the same transaction — `user.registered` (a user created),
//! `user.logged_in` (a session opened), `session.revoked` (a session ended
//! by logout, by `DELETE /sessions/{id}`, or by refresh-token reuse; only
//! when the revocation changed a row). Their data never holds a password,
//! a hash or a token.

mod sql;

use sql::{postgres, sqlite};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::model::{parse_role, ClientInfo, DisplayName, Email, SessionRecord, User};
use super::tokens::RefreshHash;
use crate::api::{PageRequest, Role};
use crate::auth::topics;
use crate::events::{Event, Outbox, Topic};
use crate::idempotency::{self, Claim, IdempotencyKey};
use crate::storage::{
    now_micros, Database, Dependency, Earlier, Migrations, Schema, SharedTable, StorageSettings,
    StoreError,
};

/// The auth schema: its own migrations and the shared tables it uses. The
/// `earlier` checksums are those of the files as releases before the shared
/// tables moved to the storage layer applied them (see `storage::schema`).
static SCHEMA: Schema = Schema {
    sqlite: Migrations {
        own: &sqlx::migrate!("src/auth/migrations/sqlite"),
        earlier: &[
            Earlier {
                version: 1,
                checksum: "5927ac4cf12ecb2296d41a854a49f713238329a694f592f4eb13a1117bcb40bac3f08cbe934285a2ef8ddbd1dcff52a4",
            },
            Earlier {
                version: 2,
                checksum: "055ef6384fb1a5b5a799b944eb917437c2c344ba6808f6cf0c09ef54668c27cd89ba401405db3d872bc41ce692751abf",
            },
        ],
    },
    postgres: Migrations {
        own: &sqlx::migrate!("src/auth/migrations/postgres"),
        earlier: &[
            Earlier {
                version: 1,
                checksum: "eafb5975222162dbb24513e4a3354c7390652a106bd98e54fcafae570f538cf16244e9ba9fd81b84f413d3a5dd0ad95c",
            },
            Earlier {
                version: 2,
                checksum: "aae131a5ff2783d3281df57a2cc0a76cf348cf4322673cb8c59e2f8d8d317d6630d75c29ea3109082e1b326c855067ba",
            },
        ],
    },
    shared: &[SharedTable::Outbox, SharedTable::IdempotencyKeys],
};

const USER_COLUMNS: &str = "id, email, name, role, created_at";
const SESSION_COLUMNS: &str =
    "id, user_id, created_at, last_used_at, expires_at, revoked_at, user_agent, ip";

/// What creating a user found.
#[derive(Debug)]
pub enum CreateUser {
    Created(User),
    /// Another user has this email.
    EmailTaken,
}

/// What granting the admin role found.
#[derive(Debug, PartialEq, Eq)]
pub enum GrantAdmin {
    /// No user had the email: one was created, as admin.
    Created(User),
    /// The user existed as a plain user and is now an admin.
    Promoted(User),
    /// Nothing to do.
    AlreadyAdmin(User),
    /// No user has the email, and no password hash was given to create one.
    NoSuchUser,
}

/// What presenting a refresh token found.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// It was the session's current token: a new one is current now, and
    /// the session's expiry moved forward.
    Rotated(SessionRecord),
    /// It was spent before: someone replayed it (or a client raced itself).
    /// The whole session is revoked now.
    Reused { session_id: Uuid, user_id: Uuid },
    /// Unknown, or its session expired or was revoked.
    Invalid,
}

/// What the rotation rules decide for a known token's session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RotationStep {
    Rotate,
    RevokeForReuse,
    Refuse,
}

/// The rotation rules, in order: an expired session refuses everything;
/// a token that is not the session's current one is a spent one (it is in
/// `refresh_tokens` for this session), which revokes the session even if it
/// was revoked already; a revoked session refuses its current token too.
pub(crate) fn judge_rotation(
    session: &SessionRecord,
    current_hash: &str,
    presented: &RefreshHash,
    now: OffsetDateTime,
) -> RotationStep {
    if session.expires_at <= now {
        RotationStep::Refuse
    } else if current_hash != presented.as_str() {
        RotationStep::RevokeForReuse
    } else if session.revoked_at.is_some() {
        RotationStep::Refuse
    } else {
        RotationStep::Rotate
    }
}

/// A new session, before it is stored.
pub(crate) struct NewSession<'a> {
    pub record: SessionRecord,
    pub refresh: &'a RefreshHash,
}

/// Who caused a change, for the event that announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cause<'a> {
    /// The request's id; `None` outside a request (an operator's command).
    pub request_id: Option<&'a str>,
    pub actor: ActedBy,
}

impl<'a> Cause<'a> {
    /// An operator's command (`stageworks user create --admin`, the
    /// bootstrap admin): no request, nobody acting.
    pub const COMMAND: Cause<'static> = Cause {
        request_id: None,
        actor: ActedBy::Nobody,
    };

    /// The request `request_id`, made by `actor`.
    pub fn request(request_id: &'a str, actor: ActedBy) -> Self {
        Self {
            request_id: Some(request_id),
            actor,
        }
    }
}

/// Who acted, as an event names them (its `actor_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActedBy {
    /// This user (the caller).
    User(Uuid),
    /// The user the change is about, whose id only the store knows: the new
    /// user of a registration, the owner of a session whose spent refresh
    /// token came back.
    Subject,
    /// Nobody: an operator's command.
    Nobody,
}

impl ActedBy {
    fn resolve(self, subject: Uuid) -> Option<Uuid> {
        match self {
            ActedBy::User(id) => Some(id),
            ActedBy::Subject => Some(subject),
            ActedBy::Nobody => None,
        }
    }
}

/// Why a session was revoked: the `reason` of its `session.revoked` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// Its holder logged out with it.
    Logout,
    /// Revoked through the sessions API, by its owner or an admin (the
    /// event's actor says which).
    Revoked,
    /// A spent refresh token of it was presented (see [`Rotation::Reused`]).
    RefreshTokenReused,
}

/// `user.logged_in`'s data.
#[derive(Debug, Serialize)]
struct LoggedIn<'a> {
    user_id: Uuid,
    session_id: Uuid,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
}

/// `session.revoked`'s data.
#[derive(Debug, Serialize)]
struct SessionRevoked {
    session_id: Uuid,
    user_id: Uuid,
    reason: RevokeReason,
}

/// Builds the event announcing a session's revocation, given the session
/// (id, owner) the revocation actually changed; the backends call it inside
/// their transaction, once they know.
pub(crate) type AnnounceRevocation<'a> =
    dyn Fn(Uuid, Uuid) -> Result<Event, StoreError> + Send + Sync + 'a;

#[derive(Clone, Debug)]
pub struct AuthStore {
    db: Database,
    outbox: Outbox,
    /// How long an unfinished idempotency claim holds its key.
    claim_lease: Duration,
}

impl AuthStore {
    pub async fn open(
        data_dir: &Path,
        settings: &StorageSettings,
        claim_lease: Duration,
    ) -> Result<Self, StoreError> {
        let db = Database::open("auth", data_dir, settings, &SCHEMA).await?;
        let outbox = Outbox::new("auth", db.clone());
        Ok(Self {
            db,
            outbox,
            claim_lease,
        })
    }

    /// Where the relay finds this service's events.
    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    /// Called by each worker as it starts: fails while the database is unreachable.
    pub async fn ensure_ready(&self) -> Result<(), StoreError> {
        self.db.ensure_ready().await
    }

    pub fn dependency(&self) -> Arc<dyn Dependency> {
        self.db.dependency()
    }

    pub async fn claim(&self, key: &IdempotencyKey) -> Result<Claim, StoreError> {
        idempotency::claim(&self.db, key, self.claim_lease).await
    }

    pub async fn release(&self, key: &IdempotencyKey) -> Result<(), StoreError> {
        idempotency::release(&self.db, key).await
    }

    pub async fn purge_expired_keys(&self) -> Result<u64, StoreError> {
        // The first purge runs at boot, maybe before the migrations.
        self.db.ensure_ready().await?;
        idempotency::purge_expired(&self.db).await
    }

    /// Creates a user with an already hashed password, and in the same
    /// transaction its `user.registered` event (data: the user as the API
    /// shows it, never the hash) and, with an idempotency key, its response
    /// (201 and the user). A taken email changes nothing.
    pub async fn create_user(
        &self,
        cause: Cause<'_>,
        email: &Email,
        name: &DisplayName,
        password_hash: &str,
        role: Role,
        key: Option<&IdempotencyKey>,
    ) -> Result<CreateUser, StoreError> {
        let now = now_micros();
        let user = User {
            id: Uuid::now_v7(),
            email: email.as_str().to_owned(),
            name: name.as_str().to_owned(),
            role,
            created_at: now,
        };
        let body = match key {
            Some(key) => Some((
                key,
                serde_json::to_vec(&user).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )),
            None => None,
        };
        let response = body.as_ref().map(|(key, body)| (*key, body.as_slice()));
        let event = event(topics::USER_REGISTERED, cause, user.id, &user)?;
        let inserted = match &self.db {
            Database::Sqlite(db) => {
                sqlite::insert_user(db, &user, password_hash, response, &event).await?
            }
            Database::Postgres(db) => {
                postgres::insert_user(db, &user, password_hash, response, &event).await?
            }
        };
        Ok(if inserted {
            self.outbox.committed();
            CreateUser::Created(user)
        } else {
            CreateUser::EmailTaken
        })
    }

    /// The user with this email and their password hash.
    pub async fn find_user_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<(User, String)>, StoreError> {
        match &self.db {
            Database::Sqlite(db) => sqlite::user_by_email(db, email.as_str()).await,
            Database::Postgres(db) => postgres::user_by_email(db, email.as_str()).await,
        }
    }

    pub async fn find_user_by_id(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        match &self.db {
            Database::Sqlite(db) => sqlite::user_by_id(db, id).await,
            Database::Postgres(db) => postgres::user_by_id(db, id).await,
        }
    }

    /// Replaces a user's password hash (a rehash at new parameters).
    pub async fn set_password_hash(&self, id: Uuid, hash: &str) -> Result<(), StoreError> {
        let now = now_micros();
        match &self.db {
            Database::Sqlite(db) => sqlite::set_password_hash(db, id, hash, now).await,
            Database::Postgres(db) => postgres::set_password_hash(db, id, hash, now).await,
        }
    }

    /// Makes the user with this email an admin; creates them (as admin, with
    /// `new_user`'s name and password hash) if there is none and `new_user`
    /// is given. An existing user's password is never changed here. A user
    /// created here is announced (`user.registered`) as an operator's
    /// command: no request id, no actor.
    pub async fn grant_admin(
        &self,
        email: &Email,
        new_user: Option<(&DisplayName, &str)>,
    ) -> Result<GrantAdmin, StoreError> {
        if let Some(outcome) = self.promote(email).await? {
            return Ok(outcome);
        }
        let Some((name, hash)) = new_user else {
            return Ok(GrantAdmin::NoSuchUser);
        };
        match self
            .create_user(Cause::COMMAND, email, name, hash, Role::Admin, None)
            .await?
        {
            CreateUser::Created(user) => Ok(GrantAdmin::Created(user)),
            // Registered between our look-up and the insert: promote them.
            CreateUser::EmailTaken => {
                Ok(self.promote(email).await?.unwrap_or(GrantAdmin::NoSuchUser))
            }
        }
    }

    async fn promote(&self, email: &Email) -> Result<Option<GrantAdmin>, StoreError> {
        let now = now_micros();
        let found = match &self.db {
            Database::Sqlite(db) => sqlite::promote(db, email.as_str(), now).await?,
            Database::Postgres(db) => postgres::promote(db, email.as_str(), now).await?,
        };
        Ok(found.map(|(user, was)| match was {
            Role::Admin => GrantAdmin::AlreadyAdmin(user),
            Role::User => GrantAdmin::Promoted(user),
        }))
    }

    /// Opens a session for the user whose first refresh token is `refresh`;
    /// it expires after `ttl` unless refreshed. Its `user.logged_in` event
    /// is written in the same transaction.
    pub async fn create_session(
        &self,
        cause: Cause<'_>,
        user_id: Uuid,
        refresh: &RefreshHash,
        ttl: Duration,
        client: &ClientInfo,
    ) -> Result<SessionRecord, StoreError> {
        let now = now_micros();
        let record = SessionRecord {
            id: Uuid::now_v7(),
            user_id,
            created_at: now,
            last_used_at: now,
            expires_at: now + ttl,
            revoked_at: None,
            user_agent: client.user_agent.clone(),
            ip: client.ip.map(|ip| ip.to_string()),
        };
        let logged_in = LoggedIn {
            user_id,
            session_id: record.id,
            ip: record.ip.as_deref(),
            user_agent: record.user_agent.as_deref(),
        };
        let event = event(topics::USER_LOGGED_IN, cause, user_id, &logged_in)?;
        let new = NewSession {
            record: record.clone(),
            refresh,
        };
        match &self.db {
            Database::Sqlite(db) => sqlite::insert_session(db, &new, &event).await?,
            Database::Postgres(db) => postgres::insert_session(db, &new, &event).await?,
        }
        self.outbox.committed();
        Ok(record)
    }

    /// Redeems `presented` for `next`, atomically (see [`Rotation`] and
    /// [`judge_rotation`]); on success the session expires `ttl` from now.
    /// A reuse that revokes a live session writes its `session.revoked`
    /// event (reason `refresh_token_reused`) in the same transaction; one
    /// that finds it revoked already writes none.
    pub async fn rotate_refresh(
        &self,
        cause: Cause<'_>,
        presented: &RefreshHash,
        next: &RefreshHash,
        ttl: Duration,
    ) -> Result<Rotation, StoreError> {
        let now = now_micros();
        let announce = revocation(cause, RevokeReason::RefreshTokenReused);
        let (rotation, announced) = match &self.db {
            Database::Sqlite(db) => {
                sqlite::rotate(db, presented, next, now, now + ttl, &announce).await?
            }
            Database::Postgres(db) => {
                postgres::rotate(db, presented, next, now, now + ttl, &announce).await?
            }
        };
        if announced {
            self.outbox.committed();
        }
        Ok(rotation)
    }

    pub async fn get_session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
        match &self.db {
            Database::Sqlite(db) => sqlite::session(db, id).await,
            Database::Postgres(db) => postgres::session(db, id).await,
        }
    }

    /// Revokes the session; returns whether it was active until now (only
    /// then is its `session.revoked` event written, in the same
    /// transaction).
    pub async fn revoke_session(
        &self,
        id: Uuid,
        cause: Cause<'_>,
        reason: RevokeReason,
    ) -> Result<bool, StoreError> {
        let now = now_micros();
        let announce = revocation(cause, reason);
        let revoked = match &self.db {
            Database::Sqlite(db) => sqlite::revoke(db, id, now, &announce).await?,
            Database::Postgres(db) => postgres::revoke(db, id, now, &announce).await?,
        };
        if revoked {
            self.outbox.committed();
        }
        Ok(revoked)
    }

    /// One page of a user's active sessions, newest first, and their total.
    pub async fn list_sessions(
        &self,
        user_id: Uuid,
        page: PageRequest,
    ) -> Result<(Vec<SessionRecord>, u64), StoreError> {
        let now = now_micros();
        let (sessions, total) = match &self.db {
            Database::Sqlite(db) => sqlite::list_sessions(db, user_id, now, page).await?,
            Database::Postgres(db) => postgres::list_sessions(db, user_id, now, page).await?,
        };
        Ok((sessions, u64::try_from(total).unwrap_or(0)))
    }

    /// Sets the session's `last_used_at` to now, unless it was set less than
    /// `granularity` ago: a write per request would be the price otherwise.
    pub async fn touch_session(&self, id: Uuid, granularity: Duration) -> Result<(), StoreError> {
        let now = now_micros();
        let before = now - granularity;
        match &self.db {
            Database::Sqlite(db) => sqlite::touch(db, id, now, before).await,
            Database::Postgres(db) => postgres::touch(db, id, now, before).await,
        }
    }

    /// Sessions revoked since `since`, with when: what the key-value store
    /// must still remember.
    pub async fn revoked_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<(Uuid, OffsetDateTime)>, StoreError> {
        match &self.db {
            Database::Sqlite(db) => sqlite::revoked_since(db, since).await,
            Database::Postgres(db) => postgres::revoked_since(db, since).await,
        }
    }

    /// Deletes sessions that expired before `cutoff`, with their refresh
    /// tokens; returns how many sessions.
    pub async fn purge_sessions(&self, cutoff: OffsetDateTime) -> Result<u64, StoreError> {
        self.db.ensure_ready().await?;
        match &self.db {
            Database::Sqlite(db) => sqlite::purge_sessions(db, cutoff).await,
            Database::Postgres(db) => postgres::purge_sessions(db, cutoff).await,
        }
    }
}

/// An event about `subject` (a user), caused by `cause`.
fn event(
    topic: Topic,
    cause: Cause<'_>,
    subject: Uuid,
    data: &impl Serialize,
) -> Result<Event, StoreError> {
    Event::new(
        topic.clone(),
        cause.request_id,
        cause.actor.resolve(subject),
        data,
    )
    .map_err(|e| StoreError::Corrupt(format!("{topic} event for user {subject}: {e}")))
}

/// What announces a revocation by `cause` for `reason`, once the backend
/// knows which session (and whose) it changed.
fn revocation(
    cause: Cause<'_>,
    reason: RevokeReason,
) -> impl Fn(Uuid, Uuid) -> Result<Event, StoreError> + Send + Sync + '_ {
    move |session_id, user_id| {
        let data = SessionRevoked {
            session_id,
            user_id,
            reason,
        };
        event(topics::SESSION_REVOKED, cause, user_id, &data)
    }
}

fn corrupt(what: &str, id: &str, field: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {id}: bad {field} `{value}`"))
}

fn stored_role(id: &str, role: &str) -> Result<Role, StoreError> {
    parse_role(role).ok_or_else(|| corrupt("user", id, "role", role))
}

/// The SQLite row decoders, for the fuzz targets (`fuzz/`, target
/// `stored_rows`): whatever a row read back from disk holds, it becomes the
/// model or a corrupt-row error, never a panic.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use super::sql::sqlite::{session_from_row, user_from_row, SessionRow, UserRow};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::RefreshToken;

    fn session(expires_in: time::Duration, revoked: bool) -> SessionRecord {
        let now = OffsetDateTime::now_utc();
        SessionRecord {
            id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            created_at: now,
            last_used_at: now,
            expires_at: now + expires_in,
            revoked_at: revoked.then_some(now),
            user_agent: None,
            ip: None,
        }
    }

    #[test]
    fn rotation_rules() {
        let now = OffsetDateTime::now_utc();
        let current = RefreshToken::generate().expect("random").hash();
        let spent = RefreshToken::generate().expect("random").hash();
        let live = session(time::Duration::hours(1), false);
        let c = current.as_str();
        assert_eq!(
            judge_rotation(&live, c, &current, now),
            RotationStep::Rotate
        );
        assert_eq!(
            judge_rotation(&live, c, &spent, now),
            RotationStep::RevokeForReuse
        );
        let revoked = session(time::Duration::hours(1), true);
        assert_eq!(
            judge_rotation(&revoked, c, &current, now),
            RotationStep::Refuse
        );
        assert_eq!(
            judge_rotation(&revoked, c, &spent, now),
            RotationStep::RevokeForReuse
        );
        let expired = session(-time::Duration::seconds(1), false);
        assert_eq!(
            judge_rotation(&expired, c, &current, now),
            RotationStep::Refuse
        );
        assert_eq!(
            judge_rotation(&expired, c, &spent, now),
            RotationStep::Refuse
        );
    }
}
