//! The outbox statements both backends share, written once
//! ([`per_backend!`]); `sqlite.rs` and `postgres.rs` use them next to the
//! ones that differ (multi-row appends, claims, lists of seqs).

use sqlx::Transaction;
use time::OffsetDateTime;

use super::serialize;
use crate::events::Event;
use crate::storage::sql::per_backend;
use crate::storage::{unix_millis, StoreError};

per_backend! {
    /// Appends `event` inside the caller's transaction ([`super::OutboxSql`]).
    pub(in crate::events::outbox) async fn append_in(tx: &mut Transaction<'_, DB>, event: &Event) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO outbox (id, topic, event, created_at) VALUES ($1, $2, $3, $4)")
            .bind(DB::id(event.id))
            .bind(event.topic.as_str())
            .bind(serialize(event)?)
            .bind(unix_millis(OffsetDateTime::now_utc()))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// How many rows are unpublished, and when the oldest was written.
    pub(in crate::events::outbox) async fn backlog(db: &Db) -> Result<(i64, Option<i64>), StoreError> {
        let mut conn = db.read().await?;
        Ok(
            sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&mut *conn)
                .await?,
        )
    }

    /// Deletes rows published before `cutoff` (unix ms); returns how many.
    pub(in crate::events::outbox) async fn purge_published(db: &Db, cutoff: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1")
                .bind(cutoff)
                .execute(db.writer())
                .await?;
        Ok(done.rows_affected())
    }
}
