//! The dead-letter SQL on PostgreSQL.

use uuid::Uuid;

use super::{NewLetter, Row};
use crate::storage::postgres::PgDb;
use crate::storage::StoreError;

const COLUMNS: &str = "id::text, subscriber, event, attempts, last_error, failed_at, replayed_at";

pub(super) async fn put(db: &PgDb, l: &NewLetter<'_>) -> Result<Uuid, StoreError> {
    let mut conn = db.acquire().await?;
    Ok(sqlx::query_scalar(
        "INSERT INTO dead_letters (id, subscriber, event_id, topic, event, attempts, last_error, failed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (subscriber, event_id) DO UPDATE
           SET attempts = dead_letters.attempts + excluded.attempts, last_error = excluded.last_error,
               failed_at = excluded.failed_at, replayed_at = NULL
         RETURNING id",
    )
    .bind(l.id)
    .bind(l.subscriber)
    .bind(l.event.id)
    .bind(l.event.topic.as_str())
    .bind(l.json)
    .bind(l.attempts)
    .bind(l.last_error)
    .bind(l.failed_at)
    .fetch_one(&mut *conn)
    .await?)
}

pub(super) async fn get(db: &PgDb, id: Uuid) -> Result<Option<Row>, StoreError> {
    let mut conn = db.acquire().await?;
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

pub(super) async fn list(db: &PgDb, all: bool, limit: u32) -> Result<Vec<Row>, StoreError> {
    let mut conn = db.acquire().await?;
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE ($1 OR replayed_at IS NULL) ORDER BY failed_at DESC LIMIT $2"
    ))
    .bind(all)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?)
}

pub(super) async fn waiting(db: &PgDb) -> Result<Vec<(String, i64)>, StoreError> {
    let mut conn = db.acquire().await?;
    Ok(sqlx::query_as(
        "SELECT subscriber, COUNT(*) FROM dead_letters WHERE replayed_at IS NULL GROUP BY subscriber",
    )
    .fetch_all(&mut *conn)
    .await?)
}

pub(super) async fn mark_replayed(db: &PgDb, id: Uuid, now: i64) -> Result<(), StoreError> {
    let mut conn = db.acquire().await?;
    sqlx::query("UPDATE dead_letters SET replayed_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn failed_again(
    db: &PgDb,
    id: Uuid,
    error: &str,
    now: i64,
) -> Result<(), StoreError> {
    let mut conn = db.acquire().await?;
    sqlx::query("UPDATE dead_letters SET attempts = attempts + 1, last_error = $1, failed_at = $2 WHERE id = $3")
        .bind(error)
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
