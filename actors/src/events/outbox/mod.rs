//! The transactional outbox. Each producing service has a table `outbox` in
//! its own database (see the end of this note) and
//! appends its events with `sqlite::append_in` / `postgres::append_in`
//! inside the transaction that makes the change they announce. The relay
//! ([`crate::events::relay`]) reads them back through an [`Outbox`].
//!
//! Rows are *claimed* for a lease before they are handed on, so replicas
//! sharing one PostgreSQL database each take their own rows (`FOR UPDATE
//! SKIP LOCKED`), and a row whose relay died is taken again once its lease
//! has run out. On SQLite, whose file one process owns, a cursor in this
//! process does the lease's job (see [`Outbox::claim`]). A row is marked
//! published when every subscriber has it (in-process: applied or
//! dead-lettered; Redis: appended to the stream).
//!
//! The table is one of the storage layer's shared tables, created for every
//! service whose schema names [`crate::storage::SharedTable::Outbox`]; its
//! definition is `actors/src/storage/migrations/<backend>/1001*.sql`.

pub mod postgres;
mod sql;
pub mod sqlite;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;

use super::Event;
use crate::storage::{unix_millis, Database, StoreError};

/// What a store runs on its outbox inside its own transactions, on either
/// backend, so that statements written once for both (see
/// [`crate::storage::sql`]) call `DB::append_in`.
pub trait OutboxSql: sqlx::Database {
    /// Appends `event` inside the caller's transaction.
    fn append_in(
        tx: &mut sqlx::Transaction<'_, Self>,
        event: &Event,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    /// Appends `events` inside the caller's transaction, in order, in one
    /// statement.
    fn append_all_in(
        tx: &mut sqlx::Transaction<'_, Self>,
        events: &[&Event],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

/// An event read back from an outbox, with its place in it.
#[derive(Clone, Debug)]
pub struct OutboxRecord {
    pub seq: i64,
    pub event: Event,
}

/// How far behind an outbox is.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Backlog {
    pub unpublished: u64,
    /// Age of the oldest unpublished event.
    pub oldest: Option<Duration>,
}

/// A producing service's outbox, as the relay sees it. Cloned into the
/// service's store, which calls [`Outbox::committed`] after each commit that
/// appended an event, so the relay picks it up at once instead of at its
/// next poll.
#[derive(Clone, Debug)]
pub struct Outbox {
    service: &'static str,
    db: Database,
    committed: Arc<Notify>,
    /// SQLite: the last seq handed to the relay (see [`Outbox::claim`]).
    cursor: Arc<AtomicI64>,
}

impl Outbox {
    pub fn new(service: &'static str, db: Database) -> Self {
        Self {
            service,
            db,
            committed: Arc::new(Notify::new()),
            cursor: Arc::new(AtomicI64::new(0)),
        }
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Wakes the relay: an event was committed.
    pub fn committed(&self) {
        self.committed.notify_one();
    }

    /// Appends `event` in a transaction of its own and wakes the relay: how
    /// the admin listener's fault-injection route
    /// (`POST /admin/faults/events/{producer}`) puts a scripted event, with
    /// the id and `occurred_at` a test chose, on the real path a service's
    /// own events take.
    #[cfg(feature = "fault-injection")]
    pub async fn append(&self, event: &Event) -> Result<(), StoreError> {
        self.db.ensure_ready().await?;
        match &self.db {
            Database::Sqlite(db) => {
                let mut tx = db.writer().begin().await?;
                <sqlx::Sqlite as OutboxSql>::append_in(&mut tx, event).await?;
                tx.commit().await?;
            }
            Database::Postgres(db) => {
                let mut tx = db.pool().begin().await?;
                <sqlx::Postgres as OutboxSql>::append_in(&mut tx, event).await?;
                tx.commit().await?;
            }
        }
        self.committed();
        Ok(())
    }

    /// Resolves when [`Outbox::committed`] was called (at most one wake-up is
    /// kept while nobody waits).
    pub async fn wait_committed(&self) {
        self.committed.notified().await;
    }

    /// Claims up to `limit` unpublished rows that no live lease holds, for
    /// `lease`; oldest first.
    ///
    /// On SQLite the relay of this process is the only reader of the file's
    /// outbox, and rows commit in seq order (one writer), so a cursor does
    /// what the lease does on PostgreSQL: rows after the last one handed on,
    /// read through the reader pool, with no write at all. Rows already
    /// handed on but not yet published are not scanned again at every claim
    /// (with thousands in flight, that scan was most of the relay's cost).
    /// The cursor starts at 0 with the process: whatever a killed process
    /// had claimed goes out again at once. On PostgreSQL a claim names its
    /// `holder` (the instance id), so a restarted instance ends its own
    /// leases at start ([`Outbox::take_back`]) instead of waiting them out.
    pub async fn claim(
        &self,
        holder: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        // The relay starts with the process: on PostgreSQL the table may not
        // exist before the service's migrations ran (once; cheap after).
        self.db.ensure_ready().await?;
        let now = OffsetDateTime::now_utc();
        let mut rows = match &self.db {
            Database::Sqlite(db) => {
                let rows =
                    sqlite::claim_after(db, self.cursor.load(Ordering::Acquire), limit).await?;
                if let Some(last) = rows.iter().map(|(seq, _)| *seq).max() {
                    self.cursor.fetch_max(last, Ordering::AcqRel);
                }
                rows
            }
            Database::Postgres(db) => {
                postgres::claim(
                    db,
                    holder,
                    unix_millis(now),
                    unix_millis(now + lease),
                    limit,
                )
                .await?
            }
        };
        rows.sort_by_key(|(seq, _)| *seq);
        rows.into_iter()
            .map(|(seq, json)| {
                let event = Event::from_json(&json).map_err(|e| {
                    StoreError::Corrupt(format!("{} outbox row {seq}: {e}", self.service))
                })?;
                Ok(OutboxRecord { seq, event })
            })
            .collect()
    }

    /// Ends the leases `holder` (this instance, restarted) still holds, so
    /// what it had claimed before it died goes out at once; another
    /// instance's leases still run out first. Nothing to do on SQLite,
    /// whose cursor starts again with the process. Returns how many rows.
    pub async fn take_back(&self, holder: &str) -> Result<u64, StoreError> {
        self.db.ensure_ready().await?;
        match &self.db {
            Database::Sqlite(_) => Ok(0),
            Database::Postgres(db) => postgres::take_back(db, holder).await,
        }
    }

    pub async fn mark_published(&self, seqs: &[i64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let now = unix_millis(OffsetDateTime::now_utc());
        match &self.db {
            Database::Sqlite(db) => sqlite::mark_published(db, seqs, now).await,
            Database::Postgres(db) => postgres::mark_published(db, seqs, now).await,
        }
    }

    /// Gives claimed rows back before their lease runs out (the relay is
    /// stopping, or the bus refused them), so they are taken again at once.
    pub async fn release(&self, seqs: &[i64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        match &self.db {
            Database::Sqlite(_) => {
                // The next claim starts again before the first row given back.
                if let Some(first) = seqs.iter().min() {
                    self.cursor.fetch_min(first - 1, Ordering::AcqRel);
                }
                Ok(())
            }
            Database::Postgres(db) => postgres::release(db, seqs).await,
        }
    }

    pub async fn backlog(&self) -> Result<Backlog, StoreError> {
        self.db.ensure_ready().await?;
        let (count, oldest) = match &self.db {
            Database::Sqlite(db) => sqlite::backlog(db).await?,
            Database::Postgres(db) => postgres::backlog(db).await?,
        };
        let now = unix_millis(OffsetDateTime::now_utc());
        Ok(Backlog {
            unpublished: u64::try_from(count).unwrap_or(0),
            oldest: oldest.map(|at| Duration::from_millis(u64::try_from(now - at).unwrap_or(0))),
        })
    }

    /// Deletes published rows older than `retention`.
    pub async fn purge_published(&self, retention: Duration) -> Result<u64, StoreError> {
        let cutoff = unix_millis(OffsetDateTime::now_utc() - retention);
        match &self.db {
            Database::Sqlite(db) => sqlite::purge_published(db, cutoff).await,
            Database::Postgres(db) => postgres::purge_published(db, cutoff).await,
        }
    }
}

fn serialize(event: &Event) -> Result<String, StoreError> {
    event
        .to_json()
        .map_err(|e| StoreError::Corrupt(format!("event {} does not serialize: {e}", event.id)))
}
