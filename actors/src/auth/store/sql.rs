//! The auth SQL, written once for both backends ([`per_backend!`]): ids and
//! times as [`Dialect`] stores them (text on SQLite, so both sort and compare
//! as text; `UUID` and `TIMESTAMPTZ` on PostgreSQL). Writes go through the
//! writer; on SQLite its single connection also serialises every rotation,
//! on PostgreSQL a rotation locks its session's row (`DB::FOR_UPDATE`), so
//! replicas redeeming the same refresh token at once take turns: the first
//! rotates, the second sees a spent token. Events go to the outbox inside
//! the transaction of their change.

use sqlx::Transaction;
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
use crate::storage::sql::{per_backend, Dialect};
use crate::storage::StoreError;

per_backend! {
    /// How the backend stores an id and a time ([`Dialect`]).
    pub type Id = <DB as Dialect>::Id;
    pub type Time = <DB as Dialect>::Time;

    pub type UserRow = (Id, String, String, String, Time);
    pub type SessionRow = (Id, Id, Time, Time, Time, Option<Time>, Option<String>, Option<String>);

    /// A session row followed by its current refresh hash.
    type SessionAndHashRow = (
        Id,
        Id,
        Time,
        Time,
        Time,
        Option<Time>,
        Option<String>,
        Option<String>,
        String,
    );

    pub(in crate::auth::store) async fn insert_user(
        db: &Db,
        user: &User,
        password_hash: &str,
        response: Option<(&IdempotencyKey, &[u8])>,
        event: &Event,
    ) -> Result<bool, StoreError> {
        let mut tx: Transaction<'_, DB> = db.writer().begin().await?;
        let now = DB::time(user.created_at)?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, name, password_hash, role, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (email) DO NOTHING",
        )
        .bind(DB::id(user.id))
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
        DB::append_in(&mut tx, event).await?;
        if let Some((key, body)) = response {
            DB::complete_in(&mut tx, key, 201, body).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(in crate::auth::store) async fn user_by_email(
        db: &Db,
        email: &str,
    ) -> Result<Option<(User, String)>, StoreError> {
        let mut conn = db.read().await?;
        let row: Option<(Id, String, String, String, Time, String)> = sqlx::query_as(&format!(
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

    pub(in crate::auth::store) async fn user_by_id(db: &Db, id: Uuid) -> Result<Option<User>, StoreError> {
        let mut conn = db.read().await?;
        let row: Option<UserRow> =
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                .bind(DB::id(id))
                .fetch_optional(&mut *conn)
                .await?;
        row.map(user_from_row).transpose()
    }

    pub(in crate::auth::store) async fn set_password_hash(
        db: &Db,
        id: Uuid,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(DB::time(now)?)
            .bind(DB::id(id))
            .execute(db.writer())
            .await?;
        Ok(())
    }

    /// The user with this email after making them an admin, and the role they had.
    pub(in crate::auth::store) async fn promote(
        db: &Db,
        email: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(User, Role)>, StoreError> {
        let mut tx: Transaction<'_, DB> = db.writer().begin().await?;
        let row: Option<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1{}",
            DB::FOR_UPDATE
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
                .bind(DB::time(now)?)
                .bind(DB::id(user.id))
                .execute(&mut *tx)
                .await?;
            user.role = Role::Admin;
        }
        tx.commit().await?;
        Ok(Some((user, was)))
    }

    pub(in crate::auth::store) async fn insert_session(
        db: &Db,
        new: &NewSession<'_>,
        event: &Event,
    ) -> Result<(), StoreError> {
        let s = &new.record;
        let created_at = DB::time(s.created_at)?;
        let mut tx: Transaction<'_, DB> = db.writer().begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, refresh_hash, created_at, last_used_at, expires_at,
                                   revoked_at, user_agent, ip)
             VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8)",
        )
        .bind(DB::id(s.id))
        .bind(DB::id(s.user_id))
        .bind(new.refresh.as_str())
        .bind(&created_at)
        .bind(DB::time(s.last_used_at)?)
        .bind(DB::time(s.expires_at)?)
        .bind(&s.user_agent)
        .bind(&s.ip)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, session_id, created_at, spent_at) VALUES ($1, $2, $3, NULL)",
        )
        .bind(new.refresh.as_str())
        .bind(DB::id(s.id))
        .bind(&created_at)
        .execute(&mut *tx)
        .await?;
        DB::append_in(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The rotation's outcome, and whether it wrote an event (a reuse that
    /// revoked a live session).
    pub(in crate::auth::store) async fn rotate(
        db: &Db,
        presented: &RefreshHash,
        next: &RefreshHash,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        announce: &AnnounceRevocation<'_>,
    ) -> Result<(Rotation, bool), StoreError> {
        // Everything in one transaction on the writer. On SQLite the single
        // writer connection makes this read-decide-write sequence atomic; on
        // PostgreSQL the session row's lock does (below).
        let mut tx: Transaction<'_, DB> = db.writer().begin().await?;
        let session_id: Option<Id> =
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
            "SELECT {SESSION_COLUMNS}, refresh_hash FROM sessions WHERE id = $1{}",
            DB::FOR_UPDATE
        ))
        .bind(&session_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, user_id, created, used, expires, revoked, agent, ip, current)) = row else {
            return Ok((Rotation::Invalid, false));
        };
        let mut session = session_from_row((id, user_id, created, used, expires, revoked, agent, ip))?;
        let now_stored = DB::time(now)?;
        match judge_rotation(&session, &current, presented, now) {
            RotationStep::Refuse => Ok((Rotation::Invalid, false)),
            RotationStep::RevokeForReuse => {
                // A session revoked already keeps its first revocation and its
                // one event.
                let revoked = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(&now_stored)
                .bind(&session_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if revoked {
                    DB::append_in(&mut tx, &announce(session.id, session.user_id)?).await?;
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
                .bind(&now_stored)
                .bind(DB::time(expires_at)?)
                .bind(&session_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE refresh_tokens SET spent_at = $1 WHERE hash = $2")
                    .bind(&now_stored)
                    .bind(presented.as_str())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (hash, session_id, created_at, spent_at)
                     VALUES ($1, $2, $3, NULL)",
                )
                .bind(next.as_str())
                .bind(&session_id)
                .bind(&now_stored)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                session.last_used_at = now;
                session.expires_at = expires_at;
                Ok((Rotation::Rotated(session), false))
            }
        }
    }

    pub(in crate::auth::store) async fn session(db: &Db, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
        // Through the writer: a session is often read right after it changed
        // (revoked, rotated), and the reader pool may not see the latest commit.
        let row: Option<SessionRow> = sqlx::query_as(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
        ))
        .bind(DB::id(id))
        .fetch_optional(db.writer())
        .await?;
        row.map(session_from_row).transpose()
    }

    /// Whether the session was active until now; if so its event (from
    /// `announce`) is written in the same transaction.
    pub(in crate::auth::store) async fn revoke(
        db: &Db,
        id: Uuid,
        now: OffsetDateTime,
        announce: &AnnounceRevocation<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx: Transaction<'_, DB> = db.writer().begin().await?;
        let owner: Option<Id> = sqlx::query_scalar(
            "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL
             RETURNING user_id",
        )
        .bind(DB::time(now)?)
        .bind(DB::id(id))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(owner) = owner else {
            // Unknown or revoked already: nothing changed, nothing to announce.
            return Ok(false);
        };
        let user_id = DB::read_id(owner, &format!("session {id}: user_id"))?;
        DB::append_in(&mut tx, &announce(id, user_id)?).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(in crate::auth::store) async fn list_sessions(
        db: &Db,
        user_id: Uuid,
        now: OffsetDateTime,
        page: PageRequest,
    ) -> Result<(Vec<SessionRecord>, i64), StoreError> {
        let mut conn = db.read().await?;
        let (user, now) = (DB::id(user_id), DB::time(now)?);
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

    pub(in crate::auth::store) async fn touch(
        db: &Db,
        id: Uuid,
        now: OffsetDateTime,
        before: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2 AND last_used_at < $3")
            .bind(DB::time(now)?)
            .bind(DB::id(id))
            .bind(DB::time(before)?)
            .execute(db.writer())
            .await?;
        Ok(())
    }

    pub(in crate::auth::store) async fn revoked_since(
        db: &Db,
        since: OffsetDateTime,
    ) -> Result<Vec<(Uuid, OffsetDateTime)>, StoreError> {
        let mut conn = db.read().await?;
        let rows: Vec<(Id, Time)> =
            sqlx::query_as("SELECT id, revoked_at FROM sessions WHERE revoked_at > $1")
                .bind(DB::time(since)?)
                .fetch_all(&mut *conn)
                .await?;
        rows.into_iter()
            .map(|(id, at)| {
                let id = DB::read_id(id, "session id")?;
                Ok((id, DB::read_time(at, &format!("session {id}: revoked_at"))?))
            })
            .collect()
    }

    pub(in crate::auth::store) async fn purge_sessions(
        db: &Db,
        cutoff: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        // The refresh tokens go with them (ON DELETE CASCADE; foreign keys are on).
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(DB::time(cutoff)?)
            .execute(db.writer())
            .await?;
        Ok(done.rows_affected())
    }


    pub fn user_from_row(row: UserRow) -> Result<User, StoreError> {
        let (id, email, name, role, created_at) = row;
        let id = DB::read_id(id, "user id")?;
        Ok(User {
            role: stored_role(&id.to_string(), &role)?,
            created_at: DB::read_time(created_at, &format!("user {id}: created_at"))?,
            email,
            name,
            id,
        })
    }

    pub fn session_from_row(row: SessionRow) -> Result<SessionRecord, StoreError> {
        let (id, user_id, created_at, last_used_at, expires_at, revoked_at, user_agent, ip) = row;
        let id = DB::read_id(id, "session id")?;
        let field = |name: &str| format!("session {id}: {name}");
        Ok(SessionRecord {
            user_id: DB::read_id(user_id, &field("user_id"))?,
            created_at: DB::read_time(created_at, &field("created_at"))?,
            last_used_at: DB::read_time(last_used_at, &field("last_used_at"))?,
            expires_at: DB::read_time(expires_at, &field("expires_at"))?,
            revoked_at: revoked_at
                .map(|at| DB::read_time(at, &field("revoked_at")))
                .transpose()?,
            user_agent,
            ip,
            id,
        })
    }
}
