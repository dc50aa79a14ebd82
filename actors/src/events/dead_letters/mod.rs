//! The dead-letter store: events a subscriber failed on `events.max_attempts`
//! times, kept with the last error in the event bus's own database (SQLite
//! `events.db`, or the PostgreSQL schema `events`) until an operator replays
//! them. A dead letter is written before its delivery is acknowledged, so an
//! event is always either waiting, applied, or here.

mod sql;

use sql::{postgres, sqlite};

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Event;
use crate::storage::{
    unix_millis, Database, Dependency, Migrations, Schema, StorageSettings, StoreError,
};

/// The event bus's own table; it uses none of the shared ones.
static SCHEMA: Schema = Schema {
    sqlite: Migrations {
        own: &sqlx::migrate!("src/events/migrations/sqlite"),
        earlier: &[],
    },
    postgres: Migrations {
        own: &sqlx::migrate!("src/events/migrations/postgres"),
        earlier: &[],
    },
    shared: &[],
};

/// One dead letter, as `/admin/events/dead-letters` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    pub id: Uuid,
    pub subscriber: String,
    pub attempts: i64,
    pub last_error: String,
    #[serde(with = "time::serde::rfc3339")]
    pub failed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub replayed_at: Option<OffsetDateTime>,
    pub event: Event,
}

/// A row as stored: `(id, subscriber, event, attempts, last_error, failed_at, replayed_at)`.
pub type Row = (String, String, String, i64, String, i64, Option<i64>);

#[derive(Clone, Debug)]
pub struct DeadLetterStore {
    db: Database,
}

impl DeadLetterStore {
    pub async fn open(data_dir: &Path, settings: &StorageSettings) -> Result<Self, StoreError> {
        let db = Database::open(super::bus::SERVICE_NAME, data_dir, settings, &SCHEMA).await?;
        Ok(Self { db })
    }

    pub async fn ensure_ready(&self) -> Result<(), StoreError> {
        self.db.ensure_ready().await
    }

    pub fn dependency(&self) -> Arc<dyn Dependency> {
        self.db.dependency()
    }

    /// Keeps `event` as dead for `subscriber`. The same event dead again
    /// (after a replay failed, or redelivered) updates its letter.
    pub async fn put(
        &self,
        subscriber: &str,
        event: &Event,
        attempts: u32,
        last_error: &str,
    ) -> Result<Uuid, StoreError> {
        self.db.ensure_ready().await?;
        let json = event
            .to_json()
            .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", event.id)))?;
        let letter = NewLetter {
            id: Uuid::now_v7(),
            subscriber,
            event,
            json: &json,
            attempts: i64::from(attempts),
            last_error,
            failed_at: unix_millis(OffsetDateTime::now_utc()),
        };
        match &self.db {
            Database::Sqlite(db) => sqlite::put(db, &letter).await,
            Database::Postgres(db) => postgres::put(db, &letter).await,
        }
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<DeadLetter>, StoreError> {
        self.db.ensure_ready().await?;
        let row = match &self.db {
            Database::Sqlite(db) => sqlite::get(db, id).await?,
            Database::Postgres(db) => postgres::get(db, id).await?,
        };
        row.map(letter_from_row).transpose()
    }

    /// The newest `limit` letters, waiting ones only unless `all`.
    pub async fn list(&self, all: bool, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        self.db.ensure_ready().await?;
        let rows = match &self.db {
            Database::Sqlite(db) => sqlite::list(db, all, limit).await?,
            Database::Postgres(db) => postgres::list(db, all, limit).await?,
        };
        rows.into_iter().map(letter_from_row).collect()
    }

    /// Waiting letters per subscriber.
    pub async fn waiting(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.db.ensure_ready().await?;
        let rows = match &self.db {
            Database::Sqlite(db) => sqlite::waiting(db).await?,
            Database::Postgres(db) => postgres::waiting(db).await?,
        };
        Ok(rows
            .into_iter()
            .map(|(s, n)| (s, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Records the outcome of a replay: applied (`Ok`) or failed again.
    pub async fn replayed(&self, id: Uuid, outcome: Result<(), &str>) -> Result<(), StoreError> {
        let now = unix_millis(OffsetDateTime::now_utc());
        match (&self.db, outcome) {
            (Database::Sqlite(db), Ok(())) => sqlite::mark_replayed(db, id, now).await,
            (Database::Postgres(db), Ok(())) => postgres::mark_replayed(db, id, now).await,
            (Database::Sqlite(db), Err(error)) => sqlite::failed_again(db, id, error, now).await,
            (Database::Postgres(db), Err(error)) => {
                postgres::failed_again(db, id, error, now).await
            }
        }
    }
}

struct NewLetter<'a> {
    id: Uuid,
    subscriber: &'a str,
    event: &'a Event,
    json: &'a str,
    attempts: i64,
    last_error: &'a str,
    failed_at: i64,
}

/// What a stored row holds, or a corrupt-row error (public for the fuzz
/// target `stored_rows`).
pub fn letter_from_row(row: Row) -> Result<DeadLetter, StoreError> {
    let (id, subscriber, event, attempts, last_error, failed_at, replayed_at) = row;
    let corrupt = |what: &str| StoreError::Corrupt(format!("dead letter {id}: bad {what}"));
    let time = |ms: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000);
    Ok(DeadLetter {
        id: Uuid::parse_str(&id).map_err(|_| corrupt("id"))?,
        event: Event::from_json(&event).map_err(|_| corrupt("event"))?,
        attempts,
        last_error,
        failed_at: time(failed_at).map_err(|_| corrupt("failed_at"))?,
        replayed_at: replayed_at
            .map(time)
            .transpose()
            .map_err(|_| corrupt("replayed_at"))?,
        subscriber,
    })
}
