//! The dead-letter SQL, written once for both backends ([`per_backend!`]).
//! Everything goes through the writer (on SQLite a letter just written must
//! be seen, and readers could lag a commit behind).

use uuid::Uuid;

use super::{NewLetter, Row};
use crate::storage::sql::per_backend;
use crate::storage::StoreError;

/// The id as text on both backends (`CAST` reads the same in both dialects).
const COLUMNS: &str =
    "CAST(id AS TEXT), subscriber, event, attempts, last_error, failed_at, replayed_at";

per_backend! {
    pub(crate) async fn put(db: &Db, l: &NewLetter<'_>) -> Result<Uuid, StoreError> {
        let id: String = sqlx::query_scalar(
            "INSERT INTO dead_letters (id, subscriber, event_id, topic, event, attempts, last_error, failed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (subscriber, event_id) DO UPDATE
               SET attempts = dead_letters.attempts + excluded.attempts, last_error = excluded.last_error,
                   failed_at = excluded.failed_at, replayed_at = NULL
             RETURNING CAST(id AS TEXT)",
        )
        .bind(DB::id(l.id))
        .bind(l.subscriber)
        .bind(DB::id(l.event.id))
        .bind(l.event.topic.as_str())
        .bind(l.json)
        .bind(l.attempts)
        .bind(l.last_error)
        .bind(l.failed_at)
        .fetch_one(db.writer())
        .await?;
        Uuid::parse_str(&id).map_err(|_| StoreError::Corrupt(format!("dead letter id {id}")))
    }

    pub(crate) async fn get(db: &Db, id: Uuid) -> Result<Option<Row>, StoreError> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"))
                .bind(DB::id(id))
                .fetch_optional(db.writer())
                .await?,
        )
    }

    pub(crate) async fn list(db: &Db, all: bool, limit: u32) -> Result<Vec<Row>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM dead_letters WHERE ($1 OR replayed_at IS NULL)
             ORDER BY failed_at DESC LIMIT $2"
        ))
        .bind(all)
        .bind(i64::from(limit))
        .fetch_all(db.writer())
        .await?)
    }

    pub(crate) async fn waiting(db: &Db) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT subscriber, COUNT(*) FROM dead_letters WHERE replayed_at IS NULL GROUP BY subscriber",
        )
        .fetch_all(db.writer())
        .await?)
    }

    pub(crate) async fn mark_replayed(db: &Db, id: Uuid, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE dead_letters SET replayed_at = $1 WHERE id = $2")
            .bind(now)
            .bind(DB::id(id))
            .execute(db.writer())
            .await?;
        Ok(())
    }

    pub(crate) async fn failed_again(
        db: &Db,
        id: Uuid,
        error: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE dead_letters SET attempts = attempts + 1, last_error = $1, failed_at = $2
             WHERE id = $3",
        )
        .bind(error)
        .bind(now)
        .bind(DB::id(id))
        .execute(db.writer())
        .await?;
        Ok(())
    }
}
