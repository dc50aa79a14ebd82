//! The outbox SQL that differs on SQLite (the shared statements are in
//! `sql.rs`, re-exported here). Writes go through the service's single writer
//! connection; the relay claims with a cursor instead of a lease (see
//! `Outbox::claim`); `json_each` passes a list of seqs as one parameter.

use sqlx::{Sqlite, Transaction};
use time::OffsetDateTime;

use super::{serialize, OutboxSql};
use crate::events::Event;
use crate::storage::sqlite::SqliteDb;
use crate::storage::{unix_millis, StoreError};

pub(super) use super::sql::sqlite::{backlog, purge_published};

impl OutboxSql for Sqlite {
    async fn append_in(tx: &mut Transaction<'_, Sqlite>, event: &Event) -> Result<(), StoreError> {
        super::sql::sqlite::append_in(tx, event).await
    }

    /// One statement (`json_each` stands in for PostgreSQL's array binds).
    async fn append_all_in(
        tx: &mut Transaction<'_, Sqlite>,
        events: &[&Event],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let now = unix_millis(OffsetDateTime::now_utc());
        let rows = events
            .iter()
            .map(|event| {
                Ok(serde_json::json!([
                    event.id.to_string(),
                    event.topic.as_str(),
                    serialize(event)?,
                    now
                ]))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        sqlx::query(
            "INSERT INTO outbox (id, topic, event, created_at)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each($1)",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// The unpublished rows after `after`, oldest first, read on a reader
/// connection (the relay's cursor stands in for the lease: see
/// `Outbox::claim`).
pub(super) async fn claim_after(
    db: &SqliteDb,
    after: i64,
    limit: u32,
) -> Result<Vec<(i64, String)>, StoreError> {
    let mut conn = db.read().await?;
    Ok(sqlx::query_as(
        "SELECT seq, event FROM outbox WHERE published_at IS NULL AND seq > $1
         ORDER BY seq LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?)
}

pub(super) async fn mark_published(
    db: &SqliteDb,
    seqs: &[i64],
    now: i64,
) -> Result<(), StoreError> {
    let list = serde_json::to_string(seqs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query(
        "UPDATE outbox SET published_at = $1 WHERE seq IN (SELECT value FROM json_each($2))",
    )
    .bind(now)
    .bind(list)
    .execute(db.writer())
    .await?;
    Ok(())
}
