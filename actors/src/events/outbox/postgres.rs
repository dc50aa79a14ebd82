//! The outbox SQL that differs on PostgreSQL (the shared statements are in
//! `sql.rs`, re-exported here). Claims take `FOR UPDATE SKIP LOCKED`, so
//! replicas relaying from one database each take their own rows.

use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;

use super::{serialize, OutboxSql};
use crate::events::Event;
use crate::storage::postgres::PgDb;
use crate::storage::{unix_millis, StoreError};

pub(super) use super::sql::postgres::{backlog, purge_published};

impl OutboxSql for Postgres {
    async fn append_in(
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
    ) -> Result<(), StoreError> {
        super::sql::postgres::append_in(tx, event).await
    }

    /// One statement (array binds).
    async fn append_all_in(
        tx: &mut Transaction<'_, Postgres>,
        events: &[&Event],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
        let bodies = events
            .iter()
            .map(|e| serialize(e))
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query(
            "INSERT INTO outbox (id, topic, event, created_at)
             SELECT id, topic, event, $4 FROM UNNEST($1::uuid[], $2::text[], $3::text[])
                 WITH ORDINALITY AS e(id, topic, event, n) ORDER BY n",
        )
        .bind(ids)
        .bind(topics)
        .bind(bodies)
        .bind(unix_millis(OffsetDateTime::now_utc()))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

pub(super) async fn claim(
    db: &PgDb,
    holder: &str,
    now: i64,
    until: i64,
    limit: u32,
) -> Result<Vec<(i64, String)>, StoreError> {
    let mut conn = db.acquire().await?;
    Ok(sqlx::query_as(
        "UPDATE outbox SET claimed_until = $1, claimed_by = $2
         WHERE seq IN (SELECT seq FROM outbox
                       WHERE published_at IS NULL AND claimed_until < $3
                       ORDER BY seq LIMIT $4
                       FOR UPDATE SKIP LOCKED)
         RETURNING seq, event",
    )
    .bind(until)
    .bind(holder)
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?)
}

/// Ends the leases `holder` still has on unpublished rows; returns how many.
pub(super) async fn take_back(db: &PgDb, holder: &str) -> Result<u64, StoreError> {
    let mut conn = db.acquire().await?;
    let done = sqlx::query(
        "UPDATE outbox SET claimed_until = 0
         WHERE published_at IS NULL AND claimed_by = $1 AND claimed_until > 0",
    )
    .bind(holder)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

pub(super) async fn mark_published(db: &PgDb, seqs: &[i64], now: i64) -> Result<(), StoreError> {
    let mut conn = db.acquire().await?;
    // Planned with these seqs each time (`storage::postgres`, "Statements
    // whose plan depends on the data are not prepared").
    sqlx::query("UPDATE outbox SET published_at = $1 WHERE seq IN (SELECT unnest($2::bigint[]))")
        .persistent(false)
        .bind(now)
        .bind(seqs)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn release(db: &PgDb, seqs: &[i64]) -> Result<(), StoreError> {
    let mut conn = db.acquire().await?;
    sqlx::query(
        "UPDATE outbox SET claimed_until = 0
         WHERE published_at IS NULL AND seq IN (SELECT unnest($1::bigint[]))",
    )
    .persistent(false)
    .bind(seqs)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
