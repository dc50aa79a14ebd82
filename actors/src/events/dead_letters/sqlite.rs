//! The dead-letter SQL on SQLite.

use uuid::Uuid;

use super::{NewLetter, Row};
use crate::storage::sqlite::SqliteDb;
use crate::storage::StoreError;

const COLUMNS: &str = "id, subscriber, event, attempts, last_error, failed_at, replayed_at";

pub(super) async fn put(db: &SqliteDb, l: &NewLetter<'_>) -> Result<Uuid, StoreError> {
    let id: String = sqlx::query_scalar(
        "INSERT INTO dead_letters (id, subscriber, event_id, topic, event, attempts, last_error, failed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (subscriber, event_id) DO UPDATE
           SET attempts = dead_letters.attempts + excluded.attempts, last_error = excluded.last_error,
               failed_at = excluded.failed_at, replayed_at = NULL
         RETURNING id",
    )
    .bind(l.id.to_string())
    .bind(l.subscriber)
    .bind(l.event.id.to_string())
    .bind(l.event.topic.as_str())
    .bind(l.json)
    .bind(l.attempts)
    .bind(l.last_error)
    .bind(l.failed_at)
    .fetch_one(db.writer())
    .await?;
    Uuid::parse_str(&id).map_err(|_| StoreError::Corrupt(format!("dead letter id {id}")))
}

pub(super) async fn get(db: &SqliteDb, id: Uuid) -> Result<Option<Row>, StoreError> {
    // Through the writer: a letter just written must be seen.
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(db.writer())
            .await?,
    )
}

pub(super) async fn list(db: &SqliteDb, all: bool, limit: u32) -> Result<Vec<Row>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE ($1 OR replayed_at IS NULL) ORDER BY failed_at DESC LIMIT $2"
    ))
    .bind(all)
    .bind(i64::from(limit))
    .fetch_all(db.writer())
    .await?)
}

pub(super) async fn waiting(db: &SqliteDb) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT subscriber, COUNT(*) FROM dead_letters WHERE replayed_at IS NULL GROUP BY subscriber",
    )
    .fetch_all(db.writer())
    .await?)
}

pub(super) async fn mark_replayed(db: &SqliteDb, id: Uuid, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE dead_letters SET replayed_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id.to_string())
        .execute(db.writer())
        .await?;
    Ok(())
}

pub(super) async fn failed_again(
    db: &SqliteDb,
    id: Uuid,
    error: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE dead_letters SET attempts = attempts + 1, last_error = $1, failed_at = $2 WHERE id = $3")
        .bind(error)
        .bind(now)
        .bind(id.to_string())
        .execute(db.writer())
        .await?;
    Ok(())
}
