//! The auth SQL on SQLite: ids and times stored as text (hyphenated UUIDs,
//! RFC 3339 with six fraction digits, so both sort and compare as text);
//! writes through the single writer connection, which also serialises every
//! rotation, and reads through the reader pool. Events go to the outbox
//! inside the transaction of their change.

use sqlx::{Sqlite, Transaction};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    corrupt, judge_rotation, stored_role, AnnounceRevocation, NewSession, Rotation, RotationStep,
    SESSION_COLUMNS, USER_COLUMNS,
};
use crate::api::{PageRequest, Role};
use crate::auth::model::{role_str, SessionRecord, User};
use crate::auth::tokens::RefreshHash;
use crate::events::outbox::OutboxSql;
use crate::events::Event;
use crate::idempotency::{IdempotencyKey, IdempotencySql};
use crate::storage::sqlite::SqliteDb;
use crate::storage::StoreError;

type UserRow = (String, String, String, String, String);
type SessionRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A session row followed by its current refresh hash.
type SessionAndHashRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// RFC 3339 with exactly six fraction digits, so stored times sort as text.
const STORED_TIME: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

pub(super) async fn insert_user(
    db: &SqliteDb,
    user: &User,
    password_hash: &str,
    response: Option<(&IdempotencyKey, &[u8])>,
    event: &Event,
) -> Result<bool, StoreError> {
    let mut tx: Transaction<'_, Sqlite> = db.writer().begin().await?;
    let now = timestamp(user.created_at)?;
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, role, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (email) DO NOTHING",
    )
    .bind(user.id.to_string())
    .bind(&user.email)
    .bind(&user.name)
    .bind(password_hash)
    .bind(role_str(user.role))
    .bind(&now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        // Dropping the transaction rolls it back: nothing was written.
        return Ok(false);
    }
    Sqlite::append_in(&mut tx, event).await?;
    if let Some((key, body)) = response {
        Sqlite::complete_in(&mut tx, key, 201, body).await?;
    }
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn user_by_email(
    db: &SqliteDb,
    email: &str,
) -> Result<Option<(User, String)>, StoreError> {
    let mut conn = db.read().await?;
    let row: Option<(String, String, String, String, String, String)> = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1"
    ))
    .bind(email)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(id, email, name, role, created_at, hash)| {
        Ok((user_from_row((id, email, name, role, created_at))?, hash))
    })
    .transpose()
}

pub(super) async fn user_by_id(db: &SqliteDb, id: Uuid) -> Result<Option<User>, StoreError> {
    let mut conn = db.read().await?;
    let row: Option<UserRow> =
        sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    row.map(user_from_row).transpose()
}

pub(super) async fn set_password_hash(
    db: &SqliteDb,
    id: Uuid,
    hash: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(hash)
        .bind(timestamp(now)?)
        .bind(id.to_string())
        .execute(db.writer())
        .await?;
    Ok(())
}

/// The user with this email after making them an admin, and the role they had.
pub(super) async fn promote(
    db: &SqliteDb,
    email: &str,
    now: OffsetDateTime,
) -> Result<Option<(User, Role)>, StoreError> {
    let mut tx: Transaction<'_, Sqlite> = db.writer().begin().await?;
    let row: Option<UserRow> = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
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
            .bind(timestamp(now)?)
            .bind(user.id.to_string())
            .execute(&mut *tx)
            .await?;
        user.role = Role::Admin;
    }
    tx.commit().await?;
    Ok(Some((user, was)))
}

pub(super) async fn insert_session(
    db: &SqliteDb,
    new: &NewSession<'_>,
    event: &Event,
) -> Result<(), StoreError> {
    let s = &new.record;
    let created_at = timestamp(s.created_at)?;
    let mut tx: Transaction<'_, Sqlite> = db.writer().begin().await?;
    sqlx::query(
        "INSERT INTO sessions (id, user_id, refresh_hash, created_at, last_used_at, expires_at,
                               revoked_at, user_agent, ip)
         VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8)",
    )
    .bind(s.id.to_string())
    .bind(s.user_id.to_string())
    .bind(new.refresh.as_str())
    .bind(&created_at)
    .bind(timestamp(s.last_used_at)?)
    .bind(timestamp(s.expires_at)?)
    .bind(&s.user_agent)
    .bind(&s.ip)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, session_id, created_at, spent_at) VALUES ($1, $2, $3, NULL)",
    )
    .bind(new.refresh.as_str())
    .bind(s.id.to_string())
    .bind(&created_at)
    .execute(&mut *tx)
    .await?;
    Sqlite::append_in(&mut tx, event).await?;
    tx.commit().await?;
    Ok(())
}

/// The rotation's outcome, and whether it wrote an event (a reuse that
/// revoked a live session).
pub(super) async fn rotate(
    db: &SqliteDb,
    presented: &RefreshHash,
    next: &RefreshHash,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
    announce: &AnnounceRevocation<'_>,
) -> Result<(Rotation, bool), StoreError> {
    // Everything on the writer, in one transaction: the single writer
    // connection makes this read-decide-write sequence atomic.
    let mut tx: Transaction<'_, Sqlite> = db.writer().begin().await?;
    let session_id: Option<String> =
        sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE hash = $1")
            .bind(presented.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    let Some(session_id) = session_id else {
        return Ok((Rotation::Invalid, false));
    };
    let row: Option<SessionAndHashRow> = sqlx::query_as(&format!(
        "SELECT {SESSION_COLUMNS}, refresh_hash FROM sessions WHERE id = $1"
    ))
    .bind(&session_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, user_id, created, used, expires, revoked, agent, ip, current)) = row else {
        return Ok((Rotation::Invalid, false));
    };
    let mut session = session_from_row((id, user_id, created, used, expires, revoked, agent, ip))?;
    let now_text = timestamp(now)?;
    match judge_rotation(&session, &current, presented, now) {
        RotationStep::Refuse => Ok((Rotation::Invalid, false)),
        RotationStep::RevokeForReuse => {
            // A session revoked already keeps its first revocation and its
            // one event.
            let revoked = sqlx::query(
                "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(&now_text)
            .bind(&session_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if revoked {
                Sqlite::append_in(&mut tx, &announce(session.id, session.user_id)?).await?;
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
            .bind(&now_text)
            .bind(timestamp(expires_at)?)
            .bind(&session_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE refresh_tokens SET spent_at = $1 WHERE hash = $2")
                .bind(&now_text)
                .bind(presented.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (hash, session_id, created_at, spent_at)
                 VALUES ($1, $2, $3, NULL)",
            )
            .bind(next.as_str())
            .bind(&session_id)
            .bind(&now_text)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            session.last_used_at = now;
            session.expires_at = expires_at;
            Ok((Rotation::Rotated(session), false))
        }
    }
}

pub(super) async fn session(db: &SqliteDb, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
    // Through the writer: a session is often read right after it changed
    // (revoked, rotated), and the reader pool may not see the latest commit.
    let row: Option<SessionRow> = sqlx::query_as(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(db.writer())
    .await?;
    row.map(session_from_row).transpose()
}

/// Whether the session was active until now; if so its event (from
/// `announce`) is written in the same transaction.
pub(super) async fn revoke(
    db: &SqliteDb,
    id: Uuid,
    now: OffsetDateTime,
    announce: &AnnounceRevocation<'_>,
) -> Result<bool, StoreError> {
    let mut tx: Transaction<'_, Sqlite> = db.writer().begin().await?;
    let owner: Option<String> = sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL
         RETURNING user_id",
    )
    .bind(timestamp(now)?)
    .bind(id.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(owner) = owner else {
        // Unknown or revoked already: nothing changed, nothing to announce.
        return Ok(false);
    };
    let user_id = Uuid::parse_str(&owner)
        .map_err(|_| corrupt("session", &id.to_string(), "user_id", &owner))?;
    Sqlite::append_in(&mut tx, &announce(id, user_id)?).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn list_sessions(
    db: &SqliteDb,
    user_id: Uuid,
    now: OffsetDateTime,
    page: PageRequest,
) -> Result<(Vec<SessionRecord>, i64), StoreError> {
    let mut conn = db.read().await?;
    let (user, now) = (user_id.to_string(), timestamp(now)?);
    let rows: Vec<SessionRow> = sqlx::query_as(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
         ORDER BY id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(&user)
    .bind(&now)
    .bind(i64::from(page.limit))
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(&user)
    .bind(&now)
    .fetch_one(&mut *conn)
    .await?;
    let sessions = rows
        .into_iter()
        .map(session_from_row)
        .collect::<Result<_, _>>()?;
    Ok((sessions, total))
}

pub(super) async fn touch(
    db: &SqliteDb,
    id: Uuid,
    now: OffsetDateTime,
    before: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2 AND last_used_at < $3")
        .bind(timestamp(now)?)
        .bind(id.to_string())
        .bind(timestamp(before)?)
        .execute(db.writer())
        .await?;
    Ok(())
}

pub(super) async fn revoked_since(
    db: &SqliteDb,
    since: OffsetDateTime,
) -> Result<Vec<(Uuid, OffsetDateTime)>, StoreError> {
    let mut conn = db.read().await?;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, revoked_at FROM sessions WHERE revoked_at > $1")
            .bind(timestamp(since)?)
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter()
        .map(|(id, at)| {
            Ok((
                Uuid::parse_str(&id).map_err(|_| corrupt("session", &id, "id", &id))?,
                parse_time("session", &id, "revoked_at", &at)?,
            ))
        })
        .collect()
}

pub(super) async fn purge_sessions(
    db: &SqliteDb,
    cutoff: OffsetDateTime,
) -> Result<u64, StoreError> {
    // The refresh tokens go with them (ON DELETE CASCADE; foreign keys are on).
    let done = sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
        .bind(timestamp(cutoff)?)
        .execute(db.writer())
        .await?;
    Ok(done.rows_affected())
}

fn timestamp(t: OffsetDateTime) -> Result<String, StoreError> {
    t.to_offset(time::UtcOffset::UTC)
        .format(STORED_TIME)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_time(
    what: &str,
    id: &str,
    field: &str,
    value: &str,
) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|_| corrupt(what, id, field, value))
}

fn user_from_row(row: UserRow) -> Result<User, StoreError> {
    let (id, email, name, role, created_at) = row;
    Ok(User {
        role: stored_role(&id, &role)?,
        created_at: parse_time("user", &id, "created_at", &created_at)?,
        email,
        name,
        id: Uuid::parse_str(&id).map_err(|_| corrupt("user", &id, "id", &id))?,
    })
}

fn session_from_row(row: SessionRow) -> Result<SessionRecord, StoreError> {
    let (id, user_id, created_at, last_used_at, expires_at, revoked_at, user_agent, ip) = row;
    let time = |field: &str, value: &str| parse_time("session", &id, field, value);
    Ok(SessionRecord {
        user_id: Uuid::parse_str(&user_id)
            .map_err(|_| corrupt("session", &id, "user_id", &user_id))?,
        created_at: time("created_at", &created_at)?,
        last_used_at: time("last_used_at", &last_used_at)?,
        expires_at: time("expires_at", &expires_at)?,
        revoked_at: revoked_at
            .as_deref()
            .map(|at| time("revoked_at", at))
            .transpose()?,
        user_agent,
        ip,
        id: Uuid::parse_str(&id).map_err(|_| corrupt("session", &id, "id", &id))?,
    })
}
