//! The consumer side of at-least-once delivery: each subscribing service
//! keeps the ids of the events it applied in its own table
//! `processed_events`, written in the same transaction as the effect, so a
//! redelivered event is recognised and changes nothing.
//!
//! The table is one of the storage layer's shared tables, created for every
//! service whose schema names [`crate::storage::SharedTable::ProcessedEvents`]
//! (`actors/src/storage/migrations/<backend>/1002*.sql`).

use std::collections::HashSet;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::Event;
use crate::storage::{unix_millis, Database, StoreError};

/// What a store records of applied events inside its own transactions, on
/// either backend, so that statements written once for both (see
/// [`crate::storage::sql`]) call `DB::record_in`.
pub trait InboxSql: sqlx::Database {
    /// Records `event` as applied; `false` if it was applied before (the
    /// caller then commits nothing else).
    fn record_in(
        tx: &mut sqlx::Transaction<'_, Self>,
        event: &Event,
    ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send;

    /// Records `events` as applied in one statement; answers the ids that
    /// were new (the others were applied before, or by a concurrent
    /// delivery that committed first).
    fn record_all_in(
        tx: &mut sqlx::Transaction<'_, Self>,
        events: &[&Event],
    ) -> impl std::future::Future<Output = Result<HashSet<Uuid>, StoreError>> + Send;
}

/// How long an applied event's id is kept. A redelivery comes from an
/// outbox row not yet marked published or a stream entry not yet
/// acknowledged: minutes, or the length of an outage, never a month.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// A subscribing service's record of applied events, for the bus's hourly purge.
#[derive(Clone, Debug)]
pub struct Inbox {
    service: &'static str,
    db: Database,
}

impl Inbox {
    pub fn new(service: &'static str, db: Database) -> Self {
        Self { service, db }
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Deletes the ids of events applied more than `retention` ago.
    pub async fn purge(&self, retention: Duration) -> Result<u64, StoreError> {
        self.db.ensure_ready().await?;
        let cutoff = unix_millis(OffsetDateTime::now_utc() - retention);
        let query = "DELETE FROM processed_events WHERE processed_at < $1";
        let deleted = match &self.db {
            Database::Sqlite(db) => {
                let done = sqlx::query(query).bind(cutoff).execute(db.writer()).await?;
                done.rows_affected()
            }
            Database::Postgres(db) => {
                let mut conn = db.acquire().await?;
                let done = sqlx::query(query).bind(cutoff).execute(&mut *conn).await?;
                done.rows_affected()
            }
        };
        Ok(deleted)
    }
}

/// Recording one event: the same statement on both backends.
mod single {
    use sqlx::Transaction;

    use super::*;
    use crate::storage::sql::per_backend;

    per_backend! {
        /// Records `event` as applied; `false` if it was applied before (the
        /// caller then commits nothing else). On PostgreSQL a concurrent
        /// delivery of the same event waits on the first one's row.
        pub(in crate::events::inbox) async fn record_in(
            tx: &mut Transaction<'_, DB>,
            event: &Event,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(
                "INSERT INTO processed_events (event_id, topic, processed_at) VALUES ($1, $2, $3)
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(DB::id(event.id))
            .bind(event.topic.as_str())
            .bind(unix_millis(OffsetDateTime::now_utc()))
            .execute(&mut **tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }
    }
}

/// SQLite.
pub mod sqlite {
    use sqlx::{Sqlite, Transaction};

    use super::*;

    impl InboxSql for Sqlite {
        async fn record_in(
            tx: &mut Transaction<'_, Sqlite>,
            event: &Event,
        ) -> Result<bool, StoreError> {
            super::single::sqlite::record_in(tx, event).await
        }

        async fn record_all_in(
            tx: &mut Transaction<'_, Sqlite>,
            events: &[&Event],
        ) -> Result<HashSet<Uuid>, StoreError> {
            record_all(tx, events).await
        }
    }

    /// One statement: `json_each` stands in for PostgreSQL's array binds.
    async fn record_all(
        tx: &mut Transaction<'_, Sqlite>,
        events: &[&Event],
    ) -> Result<HashSet<Uuid>, StoreError> {
        let now = unix_millis(OffsetDateTime::now_utc());
        let rows: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::json!([e.id.to_string(), e.topic.as_str(), now]))
            .collect();
        // `WHERE true` tells SQLite's parser the ON CONFLICT is the upsert's.
        let fresh: Vec<String> = sqlx::query_scalar(
            "INSERT INTO processed_events (event_id, topic, processed_at)
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($1) WHERE true
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .fetch_all(&mut **tx)
        .await?;
        fresh
            .iter()
            .map(|id| {
                Uuid::parse_str(id)
                    .map_err(|_| StoreError::Corrupt(format!("processed event id `{id}`")))
            })
            .collect()
    }
}

/// PostgreSQL. A concurrent delivery of the same event waits on the first
/// one's uncommitted row and then finds it there.
pub mod postgres {
    use sqlx::{Postgres, Transaction};

    use super::*;

    impl InboxSql for Postgres {
        async fn record_in(
            tx: &mut Transaction<'_, Postgres>,
            event: &Event,
        ) -> Result<bool, StoreError> {
            super::single::postgres::record_in(tx, event).await
        }

        async fn record_all_in(
            tx: &mut Transaction<'_, Postgres>,
            events: &[&Event],
        ) -> Result<HashSet<Uuid>, StoreError> {
            record_all(tx, events).await
        }
    }

    /// One statement, with array binds.
    async fn record_all(
        tx: &mut Transaction<'_, Postgres>,
        events: &[&Event],
    ) -> Result<HashSet<Uuid>, StoreError> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
        let fresh: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO processed_events (event_id, topic, processed_at)
             SELECT id, topic, $3 FROM UNNEST($1::uuid[], $2::text[]) AS e(id, topic)
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id",
        )
        .bind(ids)
        .bind(topics)
        .bind(unix_millis(OffsetDateTime::now_utc()))
        .fetch_all(&mut **tx)
        .await?;
        Ok(fresh.into_iter().collect())
    }
}
