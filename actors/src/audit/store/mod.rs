//! The audit service's data: its own database, SQLite (the file `audit.db`)
//! or PostgreSQL (the schema `audit`), with the migrations of each in
//! `../migrations/`. Nothing outside this service reads these tables. This
//! module holds the store; `sql.rs` its SQL written once for both backends;
//! `sqlite.rs` and `postgres.rs` the two statements that differ (which of a
//! batch's ids exist, and the multi-row insert).
//!
//! Every append is one transaction that reads the chain's head (locked `FOR
//! UPDATE` on PostgreSQL; SQLite's single writer connection serialises),
//! skips the entries whose id is recorded already (insert-if-absent: an
//! event redelivered any number of times is one entry), numbers and hashes
//! the rest on from the head, inserts them and moves the head. Writes are
//! grouped (group commit): a batch of events and concurrent posts share
//! one transaction and one turn on the head.

mod postgres;
mod sql;
mod sqlite;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::chain::Link;
use super::model::{Entry, Filter, NewEntry, Verified};
use crate::api::PageRequest;
use crate::idempotency::{self, Claim, IdempotencyKey};
use crate::storage::group_commit::Writer;
use crate::storage::{
    Database, Dependency, Migrations, Schema, SharedTable, StorageSettings, StoreError,
};
use crate::ServiceError;

static SCHEMA: Schema = Schema {
    sqlite: Migrations {
        own: &sqlx::migrate!("src/audit/migrations/sqlite"),
        earlier: &[],
    },
    postgres: Migrations {
        own: &sqlx::migrate!("src/audit/migrations/postgres"),
        earlier: &[],
    },
    shared: &[SharedTable::IdempotencyKeys],
};

const COLUMNS: &str = "seq, id, occurred_at, recorded_at, action, actor_id, resource_type, \
                       resource_id, request_id, data, hash";

/// Rows read per page by an export and by `/verify`: what either holds in
/// memory at once, whatever the table's size.
pub const PAGE_ROWS: i64 = 500;

/// An entry as stored: its data as the JSON text that was hashed.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub seq: i64,
    pub id: Uuid,
    pub occurred_at: OffsetDateTime,
    pub recorded_at: OffsetDateTime,
    pub action: String,
    pub actor_id: Option<Uuid>,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub request_id: Option<String>,
    pub data: String,
    pub hash: String,
}

impl Stored {
    fn link(&self) -> Link<'_> {
        Link {
            seq: self.seq,
            id: self.id,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            action: &self.action,
            actor_id: self.actor_id,
            resource_type: &self.resource_type,
            resource_id: self.resource_id.as_deref(),
            request_id: self.request_id.as_deref(),
            data: &self.data,
        }
    }

    /// The entry as the API shows it.
    pub fn into_entry(self) -> Result<Entry, StoreError> {
        let data = serde_json::from_str(&self.data)
            .map_err(|e| StoreError::Corrupt(format!("audit entry {}: data: {e}", self.id)))?;
        Ok(Entry {
            id: self.id,
            seq: self.seq,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            action: self.action,
            actor_id: self.actor_id,
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            request_id: self.request_id,
            data,
            hash: self.hash,
        })
    }
}

/// A write: entries to append, in order, and the idempotency key whose
/// response (the first entry, 201) is stored in the same transaction.
pub(super) struct AuditWrite {
    entries: Vec<NewEntry>,
    key: Option<IdempotencyKey>,
}

/// What happened to each entry of a write.
#[derive(Clone, Debug)]
pub enum Recorded {
    /// Appended now.
    New(Box<Entry>),
    /// An entry with this id was recorded before (a redelivered event).
    Existing(Uuid),
}

/// What a post found.
#[derive(Clone, Debug)]
pub enum Posted {
    New(Box<Entry>),
    Replayed { status: u16, body: Vec<u8> },
}

/// The two statements whose text differs per backend (`sqlite.rs`,
/// `postgres.rs`).
pub(super) trait AuditSql: sqlx::Database {
    /// Which of `ids` are recorded already.
    fn existing(
        tx: &mut sqlx::Transaction<'_, Self>,
        ids: &[Uuid],
    ) -> impl std::future::Future<Output = Result<std::collections::HashSet<Uuid>, StoreError>> + Send;

    /// Inserts `entries` (numbered and hashed) in one statement.
    fn insert_all(
        tx: &mut sqlx::Transaction<'_, Self>,
        entries: &[Stored],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

#[derive(Clone, Debug)]
pub struct AuditStore {
    db: Database,
    writer: Writer<AuditWrite>,
    /// How long an unfinished idempotency claim holds its key.
    claim_lease: Duration,
}

impl AuditStore {
    pub async fn open(
        data_dir: &Path,
        settings: &StorageSettings,
        claim_lease: Duration,
    ) -> Result<Self, StoreError> {
        let db = Database::open("audit", data_dir, settings, &SCHEMA).await?;
        Ok(Self {
            writer: Writer::start("audit", &db, settings.group_commit, None),
            db,
            claim_lease,
        })
    }

    /// Called by each worker as it starts: fails while the database is unreachable.
    pub async fn ensure_ready(&self) -> Result<(), StoreError> {
        self.db.ensure_ready().await
    }

    pub fn dependency(&self) -> Arc<dyn Dependency> {
        self.db.dependency()
    }

    /// Appends `entries` (those whose id is new) in one transaction.
    pub async fn record(&self, entries: Vec<NewEntry>) -> Result<Vec<Recorded>, StoreError> {
        self.writer.submit(AuditWrite { entries, key: None }).await
    }

    /// Posts one entry, honouring its idempotency key.
    pub async fn post(
        &self,
        entry: NewEntry,
        key: Option<IdempotencyKey>,
    ) -> Result<Posted, ServiceError> {
        if let Some(key) = &key {
            match idempotency::claim(&self.db, key, self.claim_lease)
                .await
                .map_err(internal)?
            {
                Claim::Claimed => {}
                Claim::Replay { status, body } => return Ok(Posted::Replayed { status, body }),
                other => {
                    return Err(other
                        .conflict_error()
                        .unwrap_or_else(|| ServiceError::internal("claim")))
                }
            }
        }
        let written = self
            .writer
            .submit(AuditWrite {
                entries: vec![entry],
                key: key.clone(),
            })
            .await;
        match written {
            Ok(mut recorded) => match recorded.pop() {
                Some(Recorded::New(entry)) => Ok(Posted::New(entry)),
                other => Err(ServiceError::internal(format!(
                    "a posted entry was not appended: {other:?}"
                ))),
            },
            Err(err) => {
                if let Some(key) = &key {
                    if let Err(release) = idempotency::release(&self.db, key).await {
                        tracing::warn!(error = %release, "could not release the idempotency key");
                    }
                }
                Err(internal(err))
            }
        }
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Entry>, StoreError> {
        let stored = match &self.db {
            Database::Sqlite(db) => sql::sqlite::get(db, id).await?,
            Database::Postgres(db) => sql::postgres::get(db, id).await?,
        };
        stored.map(Stored::into_entry).transpose()
    }

    /// One page of the entries `filter` selects, newest first, and their total.
    pub async fn search(
        &self,
        filter: &Filter,
        page: PageRequest,
    ) -> Result<(Vec<Entry>, u64), StoreError> {
        let (rows, total) = match &self.db {
            Database::Sqlite(db) => sql::sqlite::search(db, filter, page).await?,
            Database::Postgres(db) => sql::postgres::search(db, filter, page).await?,
        };
        let entries = rows
            .into_iter()
            .map(Stored::into_entry)
            .collect::<Result<_, _>>()?;
        Ok((entries, u64::try_from(total).unwrap_or(0)))
    }

    /// Up to [`PAGE_ROWS`] entries `filter` selects after `after` (a seq), by seq.
    pub async fn export_page(
        &self,
        filter: &Filter,
        after: i64,
    ) -> Result<Vec<Stored>, StoreError> {
        match &self.db {
            Database::Sqlite(db) => sql::sqlite::export_page(db, filter, after).await,
            Database::Postgres(db) => sql::postgres::export_page(db, filter, after).await,
        }
    }

    /// Recomputes the chain from the anchor to the head as it is now, a
    /// page at a time.
    pub async fn verify(&self) -> Result<Verified, StoreError> {
        let head = match &self.db {
            Database::Sqlite(db) => sql::sqlite::head(db).await?,
            Database::Postgres(db) => sql::postgres::head(db).await?,
        };
        let (mut seq, mut hash) = (head.anchor_seq, head.anchor_hash.clone());
        let mut entries = 0u64;
        let bad = |entries, seq| Verified {
            entries,
            valid: false,
            first_bad_seq: Some(seq),
        };
        while seq < head.seq {
            let page = match &self.db {
                Database::Sqlite(db) => sql::sqlite::chain_page(db, seq, head.seq).await?,
                Database::Postgres(db) => sql::postgres::chain_page(db, seq, head.seq).await?,
            };
            if page.is_empty() {
                // Rows up to the head are missing: the first of them is bad.
                return Ok(bad(entries, seq + 1));
            }
            for stored in page {
                entries += 1;
                if stored.seq != seq + 1 || stored.link().hash(&hash)? != stored.hash {
                    return Ok(bad(entries, seq + 1));
                }
                (seq, hash) = (stored.seq, stored.hash);
            }
        }
        if hash != head.hash {
            return Ok(bad(entries, head.seq));
        }
        Ok(Verified {
            entries,
            valid: true,
            first_bad_seq: None,
        })
    }

    /// Deletes the oldest entries recorded before `cutoff`, a whole prefix
    /// of the chain, and keeps the last deleted one's hash as the anchor.
    pub async fn purge_before(&self, cutoff: OffsetDateTime) -> Result<u64, StoreError> {
        match &self.db {
            Database::Sqlite(db) => sql::sqlite::purge_before(db.writer(), cutoff).await,
            Database::Postgres(db) => sql::postgres::purge_before(db.writer(), cutoff).await,
        }
    }

    /// Deletes completed idempotency keys past their retention.
    pub async fn purge_expired_keys(&self) -> Result<u64, StoreError> {
        idempotency::purge_expired(&self.db).await
    }
}

/// The chain's head row.
#[derive(Clone, Debug)]
pub(super) struct Head {
    seq: i64,
    hash: String,
    anchor_seq: i64,
    anchor_hash: String,
}

/// A store failure as a reply: 503 when the database is down, else 500.
pub(super) fn internal(err: StoreError) -> ServiceError {
    ServiceError::from_store("audit", err)
}

/// The SQLite row decoders, for the fuzz targets (`fuzz/`, target
/// `stored_rows`): whatever a row read back from disk holds, it becomes the
/// model or a corrupt-row error, never a panic.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use super::sql::sqlite::{stored_from_row, EntryRow};
}
