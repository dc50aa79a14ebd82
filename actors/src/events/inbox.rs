//! The consumer side of at-least-once delivery: each subscribing service
//! keeps the ids of the events it applied in its own table
//! `processed_events`, written in the same transaction as the effect, so a
//! redelivered event is recognised and changes nothing.
//!
//! ```sql
//! CREATE TABLE processed_events (
//!     event_id     TEXT PRIMARY KEY NOT NULL,  -- UUID on PostgreSQL
//!     topic        TEXT NOT NULL,
//!     processed_at INTEGER NOT NULL            -- unix ms (BIGINT on PostgreSQL)
//! );
//! ```

use time::OffsetDateTime;

use super::outbox::millis;

/// SQLite.
pub mod sqlite {
    use sqlx::{Sqlite, Transaction};

    use super::*;
    use crate::events::Event;
    use crate::storage::StoreError;

    /// Records `event` as applied; `false` if it was applied before (the
    /// caller then commits nothing else).
    pub async fn record_in(
        tx: &mut Transaction<'_, Sqlite>,
        event: &Event,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO processed_events (event_id, topic, processed_at) VALUES ($1, $2, $3)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event.id.to_string())
        .bind(event.topic.as_str())
        .bind(millis(OffsetDateTime::now_utc()))
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// PostgreSQL. A concurrent delivery of the same event waits on the first
/// one's uncommitted row and then finds it there.
pub mod postgres {
    use sqlx::{Postgres, Transaction};

    use super::*;
    use crate::events::Event;
    use crate::storage::StoreError;

    /// Records `event` as applied; `false` if it was applied before (the
    /// caller then commits nothing else).
    pub async fn record_in(
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO processed_events (event_id, topic, processed_at) VALUES ($1, $2, $3)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event.id)
        .bind(event.topic.as_str())
        .bind(millis(OffsetDateTime::now_utc()))
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
