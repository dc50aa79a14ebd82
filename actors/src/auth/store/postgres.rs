//! The auth SQL on PostgreSQL: native UUID and TIMESTAMPTZ columns, one pool
//! for reads and writes. A rotation locks its session's row
//! (`SELECT … FOR UPDATE`), so replicas redeeming the same refresh token at
//! once are serialised: the first rotates, the second sees a spent token.
//! Events go to the outbox inside the transaction of their change.

use sqlx::{Acquire, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    judge_rotation, stored_role, AnnounceRevocation, NewSession, Rotation, RotationStep,
    SESSION_COLUMNS, USER_COLUMNS,
};
use crate::api::{PageRequest, Role};
use crate::auth::model::{role_str, SessionRecord, User};
use crate::auth::tokens::RefreshHash;
use crate::events::outbox::OutboxSql;
use crate::events::Event;
use crate::idempotency::{IdempotencyKey, IdempotencySql};
use crate::storage::postgres::PgDb;
use crate::storage::StoreError;

type UserRow = (Uuid, String, String, String, OffsetDateTime);
type SessionRow = (
    Uuid,
    Uuid,
    OffsetDateTime,
    OffsetDateTime,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Option<String>,
    Option<String>,
);

/// A session row followed by its current refresh hash.
type SessionAndHashRow = (
    Uuid,
    Uuid,
    OffsetDateTime,
    OffsetDateTime,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Option<String>,
    Option<String>,
    String,
);

pub(super) async fn insert_user(
    db: &PgDb,
    user: &User,
    password_hash: &str,
    response: Option<(&IdempotencyKey, &[u8])>,
    event: &Event,
) -> Result<bool, StoreError> {
    let mut conn = db.acquire().await?;
    let mut tx: Transaction<'_, Postgres> = conn.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, role, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (email) DO NOTHING",
    )
    .bind(user.id)
    .bind(&user.email)
    .bind(&user.name)
    .bind(password_hash)
    .bind(role_str(user.role))
    .bind(user.created_at)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        // Dropping the transaction rolls it back: nothing was written.
        return Ok(false);
    }
    Postgres::append_in(&mut tx, event).await?;
    if let Some((key, body)) = response {
        Postgres::complete_in(&mut tx, key, 201, body).await?;
    }
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn user_by_email(
    db: &PgDb,
    email: &str,
) -> Result<Option<(User, String)>, StoreError> {
    let mut conn = db.acquire().await?;
    let row: Option<(Uuid, String, String, String, OffsetDateTime, String)> = sqlx::query_as(
        &format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1"),
    )
    .bind(email)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(id, email, name, role, created_at, hash)| {
        Ok((user_from_row((id, email, name, role, created_at))?, hash))
    })
    .transpose()
}

pub(super) async fn user_by_id(db: &PgDb, id: Uuid) -> Result<Option<User>, StoreError> {
    let mut conn = db.acquire().await?;
    let row: Option<UserRow> =
        sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(user_from_row).transpose()
}

pub(super) async fn set_password_hash(
    db: &PgDb,
    id: Uuid,
    hash: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let mut conn = db.acquire().await?;
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(hash)
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The user with this email after making them an admin, and the role they had.
pub(super) async fn promote(
    db: &PgDb,
    email: &str,
    now: OffsetDateTime,
) -> Result<Option<(User, Role)>, StoreError> {
    let mut conn = db.acquire().await?;
    let mut tx: Transaction<'_, Postgres> = conn.begin().await?;
    let row: Option<UserRow> = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE email = $1 FOR UPDATE"
    ))
    .bind(email)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(mut user) = row.map(user_from_row).transpose()? else {
        return Ok(None);
    };
    let was = user.role;
    if was != Role::Admin {
        sqlx::query("UPDATE users SET role = 'admin', updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
        user.role = Role::Admin;
    }
    tx.commit().await?;
    Ok(Some((user, was)))
}

pub(super) async fn insert_session(
    db: &PgDb,
    new: &NewSession<'_>,
    event: &Event,
) -> Result<(), StoreError> {
    let s = &new.record;
    let mut conn = db.acquire().await?;
    let mut tx: Transaction<'_, Postgres> = conn.begin().await?;
    sqlx::query(
        "INSERT INTO sessions (id, user_id, refresh_hash, created_at, last_used_at, expires_at,
                               revoked_at, user_agent, ip)
         VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8)",
    )
    .bind(s.id)
    .bind(s.user_id)
    .bind(new.refresh.as_str())
    .bind(s.created_at)
    .bind(s.last_used_at)
    .bind(s.expires_at)
    .bind(&s.user_agent)
    .bind(&s.ip)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, session_id, created_at, spent_at) VALUES ($1, $2, $3, NULL)",
    )
    .bind(new.refresh.as_str())
    .bind(s.id)
    .bind(s.created_at)
    .execute(&mut *tx)
    .await?;
    Postgres::append_in(&mut tx, event).await?;
    tx.commit().await?;
    Ok(())
}

/// The rotation's outcome, and whether it wrote an event (a reuse that
/// revoked a live session).
pub(super) async fn rotate(
    db: &PgDb,
    presented: &RefreshHash,
    next: &RefreshHash,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
    announce: &AnnounceRevocation<'_>,
) -> Result<(Rotation, bool), StoreError> {
    let mut conn = db.acquire().await?;
    let mut tx: Transaction<'_, Postgres> = conn.begin().await?;
    let session_id: Option<Uuid> =
        sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE hash = $1")
            .bind(presented.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    let Some(session_id) = session_id else {
        return Ok((Rotation::Invalid, false));
    };
    // The lock makes a concurrent rotation wait, then read the hash this one
    // wrote: the current hash is judged after the lock, never before.
    let row: Option<SessionAndHashRow> = sqlx::query_as(&format!(
        "SELECT {SESSION_COLUMNS}, refresh_hash FROM sessions WHERE id = $1 FOR UPDATE"
    ))
    .bind(session_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, user_id, created, used, expires, revoked, agent, ip, current)) = row else {
        return Ok((Rotation::Invalid, false));
    };
    let mut session = session_from_row((id, user_id, created, used, expires, revoked, agent, ip));
    match judge_rotation(&session, &current, presented, now) {
        RotationStep::Refuse => Ok((Rotation::Invalid, false)),
        RotationStep::RevokeForReuse => {
            // A session revoked already keeps its first revocation and its
            // one event (the row lock orders concurrent reuses).
            let revoked = sqlx::query(
                "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(session_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if revoked {
                Postgres::append_in(&mut tx, &announce(session.id, session.user_id)?)
                    .await?;
            }
            tx.commit().await?;
            let reused = Rotation::Reused {
                session_id: session.id,
                user_id: session.user_id,
            };
            Ok((reused, revoked))
        }
        RotationStep::Rotate => {
            sqlx::query(
                "UPDATE sessions SET refresh_hash = $1, last_used_at = $2, expires_at = $3
                 WHERE id = $4",
            )
            .bind(next.as_str())
            .bind(now)
            .bind(expires_at)
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE refresh_tokens SET spent_at = $1 WHERE hash = $2")
                .bind(now)
                .bind(presented.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (hash, session_id, created_at, spent_at)
                 VALUES ($1, $2, $3, NULL)",
            )
            .bind(next.as_str())
            .bind(session_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            session.last_used_at = now;
            session.expires_at = expires_at;
            Ok((Rotation::Rotated(session), false))
        }
    }
}

pub(super) async fn session(db: &PgDb, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
    let mut conn = db.acquire().await?;
    let row: Option<SessionRow> = sqlx::query_as(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(session_from_row))
}

/// Whether the session was active until now; if so its event (from
/// `announce`) is written in the same transaction.
pub(super) async fn revoke(
    db: &PgDb,
    id: Uuid,
    now: OffsetDateTime,
    announce: &AnnounceRevocation<'_>,
) -> Result<bool, StoreError> {
    let mut conn = db.acquire().await?;
    let mut tx: Transaction<'_, Postgres> = conn.begin().await?;
    let owner: Option<Uuid> = sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL
         RETURNING user_id",
    )
    .bind(now)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user_id) = owner else {
        // Unknown or revoked already: nothing changed, nothing to announce.
        return Ok(false);
    };
    Postgres::append_in(&mut tx, &announce(id, user_id)?).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn list_sessions(
    db: &PgDb,
    user_id: Uuid,
    now: OffsetDateTime,
    page: PageRequest,
) -> Result<(Vec<SessionRecord>, i64), StoreError> {
    let mut conn = db.acquire().await?;
    let rows: Vec<SessionRow> = sqlx::query_as(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
         ORDER BY id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(user_id)
    .bind(now)
    .bind(i64::from(page.limit))
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(user_id)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok((rows.into_iter().map(session_from_row).collect(), total))
}

pub(super) async fn touch(
    db: &PgDb,
    id: Uuid,
    now: OffsetDateTime,
    before: OffsetDateTime,
) -> Result<(), StoreError> {
    let mut conn = db.acquire().await?;
    sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2 AND last_used_at < $3")
        .bind(now)
        .bind(id)
        .bind(before)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn revoked_since(
    db: &PgDb,
    since: OffsetDateTime,
) -> Result<Vec<(Uuid, OffsetDateTime)>, StoreError> {
    let mut conn = db.acquire().await?;
    let rows: Vec<(Uuid, OffsetDateTime)> =
        sqlx::query_as("SELECT id, revoked_at FROM sessions WHERE revoked_at > $1")
            .bind(since)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows)
}

pub(super) async fn purge_sessions(db: &PgDb, cutoff: OffsetDateTime) -> Result<u64, StoreError> {
    let mut conn = db.acquire().await?;
    // The refresh tokens go with them (ON DELETE CASCADE).
    let done = sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
        .bind(cutoff)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

fn user_from_row(row: UserRow) -> Result<User, StoreError> {
    let (id, email, name, role, created_at) = row;
    Ok(User {
        role: stored_role(&id.to_string(), &role)?,
        id,
        email,
        name,
        created_at,
    })
}

fn session_from_row(row: SessionRow) -> SessionRecord {
    let (id, user_id, created_at, last_used_at, expires_at, revoked_at, user_agent, ip) = row;
    SessionRecord {
        id,
        user_id,
        created_at,
        last_used_at,
        expires_at,
        revoked_at,
        user_agent,
        ip,
    }
}
