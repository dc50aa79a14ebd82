//! The notifications service's data: its own database, SQLite (the file
//! `notifications.db`) or PostgreSQL (the schema `notifications`), with the
//! migrations of each in `../migrations/`. Nothing outside this service
//! reads these tables. This module holds the store and the values its
//! writes take; `sql.rs` their SQL, written once for both backends.
//!
//! The queue is the `notifications` table itself: a notification is
//! accepted once its row is committed (with its idempotency response, or
//! the inbox row of the event it answers, in the same transaction), and a
//! sender *claims* due rows for a lease before sending (`FOR UPDATE SKIP
//! LOCKED` on PostgreSQL, so replicas take different rows; SQLite's single
//! writer serialises claims). Settling a row (sent, retry, dead) checks the
//! sender still holds it and appends its event to the outbox in the same
//! transaction.

mod sql;

use std::path::Path;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use super::model::{
    BatchProgress, Channel, Notification, NotificationFilter, Preferences, PushSubscription,
    Status, Template, TemplateInput,
};
use crate::api::PageRequest;
use crate::events::inbox::Inbox;
use crate::events::{Event, Outbox};
use crate::idempotency::{self, Claim, IdempotencyKey};
use crate::storage::{
    now_micros, unix_millis, Database, Dependency, Migrations, Schema, SharedTable,
    StorageSettings, StoreError,
};

static SCHEMA: Schema = Schema {
    sqlite: Migrations {
        own: &sqlx::migrate!("src/notifications/migrations/sqlite"),
        earlier: &[],
    },
    postgres: Migrations {
        own: &sqlx::migrate!("src/notifications/migrations/postgres"),
        earlier: &[],
    },
    shared: &[
        SharedTable::Outbox,
        SharedTable::ProcessedEvents,
        SharedTable::IdempotencyKeys,
    ],
};

const COLUMNS: &str = "id, channel, recipient, user_id, template, subject, status, attempts, \
                       last_error, batch_id, created_at, sent_at";

/// One notification to insert, rendered.
#[derive(Clone, Debug)]
pub struct NewRow {
    pub id: Uuid,
    pub channel: Channel,
    pub to: Option<String>,
    pub user_id: Option<Uuid>,
    /// What deliveries are ordered by: the address, or the user.
    pub recipient_key: String,
    pub template: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
    /// `Queued`, or `Skipped` for a user who opted out of the channel.
    pub status: Status,
}

/// What an event changes beside the notification it sends.
#[derive(Clone, Debug)]
pub enum EventEffect {
    /// `user.registered`: the service's own copy of the user's address.
    User {
        id: Uuid,
        email: String,
        name: String,
    },
}

/// One accepting transaction: rows, their batch, the idempotency response,
/// the event they answer.
#[derive(Debug)]
pub struct Enqueue {
    pub rows: Vec<NewRow>,
    pub now: OffsetDateTime,
    /// `send-bulk`: the batch id and its size.
    pub batch: Option<(Uuid, usize)>,
    /// The key's stored response (202 and the body).
    pub response: Option<(IdempotencyKey, Vec<u8>)>,
    /// The consumed event this answers (recorded in the inbox: once).
    pub event: Option<Event>,
    pub effect: Option<EventEffect>,
}

/// What the service knows of some users: their addresses (from
/// `user.registered`), their opt-ins (absent: all on) and whether each has
/// a push subscription.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    pub emails: std::collections::HashMap<Uuid, String>,
    pub preferences: std::collections::HashMap<Uuid, Preferences>,
    pub subscribed: std::collections::HashSet<Uuid>,
}

/// A notification a sender holds.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: Uuid,
    pub channel: Channel,
    pub to: Option<String>,
    pub user_id: Option<Uuid>,
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
    /// Attempts so far, this one included.
    pub attempts: u32,
    pub batch_id: Option<Uuid>,
}

/// How a sender settles what it claimed.
#[derive(Clone, Debug)]
pub enum Settle {
    Sent {
        at: OffsetDateTime,
    },
    /// Failed: due again at `at` (unix ms).
    Retry {
        error: String,
        at: i64,
    },
    Dead {
        error: String,
    },
    /// Not tried (its provider's circuit is open): due again at `at`, the
    /// attempt given back.
    NotTried {
        at: i64,
    },
}

/// Calls `sql::sqlite::$f` or `sql::postgres::$f` with the database first.
macro_rules! on_db {
    ($db:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $db {
            Database::Sqlite(db) => sql::sqlite::$f(db, $($arg),*).await,
            Database::Postgres(db) => sql::postgres::$f(db, $($arg),*).await,
        }
    };
}

#[derive(Clone, Debug)]
pub struct NotificationsStore {
    db: Database,
    outbox: Outbox,
    /// How long an unfinished idempotency claim holds its key.
    claim_lease: std::time::Duration,
}

impl NotificationsStore {
    pub async fn open(
        data_dir: &Path,
        settings: &StorageSettings,
        claim_lease: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let db = Database::open("notifications", data_dir, settings, &SCHEMA).await?;
        Ok(Self {
            outbox: Outbox::new("notifications", db.clone()),
            db,
            claim_lease,
        })
    }

    pub async fn ensure_ready(&self) -> Result<(), StoreError> {
        self.db.ensure_ready().await
    }

    pub fn dependency(&self) -> Arc<dyn Dependency> {
        self.db.dependency()
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn inbox(&self) -> Inbox {
        Inbox::new("notifications", self.db.clone())
    }

    pub async fn claim_key(&self, key: &IdempotencyKey) -> Result<Claim, StoreError> {
        idempotency::claim(&self.db, key, self.claim_lease).await
    }

    pub async fn release_key(&self, key: &IdempotencyKey) -> Result<(), StoreError> {
        idempotency::release(&self.db, key).await
    }

    pub async fn purge_expired_keys(&self) -> Result<u64, StoreError> {
        idempotency::purge_expired(&self.db).await
    }

    /// Commits what `enqueue` holds; `false` if its event was applied before
    /// (nothing written).
    pub async fn enqueue(&self, enqueue: &Enqueue) -> Result<bool, StoreError> {
        on_db!(&self.db, enqueue(enqueue))
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Notification>, StoreError> {
        on_db!(&self.db, get(id))
    }

    pub async fn list(
        &self,
        filter: &NotificationFilter,
        page: PageRequest,
    ) -> Result<(Vec<Notification>, u64), StoreError> {
        let (list, total) = on_db!(&self.db, list(filter, page))?;
        Ok((list, u64::try_from(total).unwrap_or(0)))
    }

    pub async fn batch(&self, id: Uuid) -> Result<Option<BatchProgress>, StoreError> {
        let Some((total, created_at, counts)) = on_db!(&self.db, batch(id))? else {
            return Ok(None);
        };
        let mut progress: std::collections::BTreeMap<&'static str, u64> =
            Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for (status, count) in counts {
            if let Some(status) = Status::parse(&status) {
                progress.insert(status.as_str(), u64::try_from(count).unwrap_or(0));
            }
        }
        Ok(Some(BatchProgress {
            id,
            total: u64::try_from(total).unwrap_or(0),
            counts: progress,
            created_at,
        }))
    }

    /// How many notifications are in each status.
    pub async fn depth(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        let counts = on_db!(&self.db, depth())?;
        Ok(Status::ALL
            .iter()
            .map(|s| {
                let n = counts
                    .iter()
                    .find(|(status, _)| status == s.as_str())
                    .map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0));
                (*s, n)
            })
            .collect())
    }

    pub async fn claim(
        &self,
        channel: Channel,
        holder: &str,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let now = unix_millis(OffsetDateTime::now_utc());
        let lease_until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        on_db!(&self.db, claim(channel, holder, limit, now, lease_until))
    }

    /// Settles what `holder` claimed; `false` if it no longer holds it
    /// (its lease ran out and another sender took it).
    pub async fn settle(
        &self,
        id: Uuid,
        holder: &str,
        settle: &Settle,
        event: Option<&Event>,
    ) -> Result<bool, StoreError> {
        let done = on_db!(&self.db, settle(id, holder, settle, event))?;
        if done && event.is_some() {
            self.outbox.committed();
        }
        Ok(done)
    }

    pub async fn take_back(&self, holder: &str) -> Result<u64, StoreError> {
        let now = unix_millis(OffsetDateTime::now_utc());
        on_db!(&self.db, take_back(holder, now))
    }

    /// Queues a dead notification again and appends `event` (who asked)
    /// in the same transaction; `false` if it is not dead.
    pub async fn retry_dead(&self, id: Uuid, event: &Event) -> Result<bool, StoreError> {
        let now = unix_millis(OffsetDateTime::now_utc());
        let done = on_db!(&self.db, retry_dead(id, now, event))?;
        if done {
            self.outbox.committed();
        }
        Ok(done)
    }

    pub async fn templates(&self) -> Result<Vec<Template>, StoreError> {
        on_db!(&self.db, templates())
    }

    pub async fn template(&self, name: &str) -> Result<Option<Template>, StoreError> {
        on_db!(&self.db, template(name))
    }

    /// Creates a template; `false` if the name is taken.
    pub async fn create_template(&self, input: &TemplateInput) -> Result<bool, StoreError> {
        on_db!(&self.db, create_template(input, now_micros(), false))
    }

    /// Creates a default template unless it was created once before.
    pub async fn seed_template(&self, input: &TemplateInput) -> Result<bool, StoreError> {
        on_db!(&self.db, create_template(input, now_micros(), true))
    }

    pub async fn replace_template(&self, input: &TemplateInput) -> Result<bool, StoreError> {
        on_db!(&self.db, replace_template(input, now_micros()))
    }

    pub async fn delete_template(&self, name: &str) -> Result<bool, StoreError> {
        on_db!(&self.db, delete_template(name))
    }

    /// A user's opt-ins; everything on for a user who set none.
    pub async fn preferences(&self, user: Uuid) -> Result<Preferences, StoreError> {
        Ok(on_db!(&self.db, preferences(user))?.unwrap_or_default())
    }

    pub async fn put_preferences(&self, user: Uuid, prefs: Preferences) -> Result<(), StoreError> {
        on_db!(&self.db, put_preferences(user, prefs))
    }

    /// What the service knows of `users` (for addressing their notifications).
    pub async fn directory(&self, users: &[Uuid]) -> Result<Directory, StoreError> {
        if users.is_empty() {
            return Ok(Directory::default());
        }
        on_db!(&self.db, directory(users))
    }

    pub async fn email_of(&self, user: Uuid) -> Result<Option<String>, StoreError> {
        on_db!(&self.db, email_of(user))
    }

    pub async fn subscribe(&self, sub: &PushSubscription) -> Result<PushSubscription, StoreError> {
        on_db!(&self.db, subscribe(sub))
    }

    pub async fn subscriptions(&self, user: Uuid) -> Result<Vec<PushSubscription>, StoreError> {
        on_db!(&self.db, subscriptions(user))
    }

    pub async fn subscription_owner(&self, id: Uuid) -> Result<Option<Uuid>, StoreError> {
        on_db!(&self.db, subscription_owner(id))
    }

    pub async fn unsubscribe(&self, id: Uuid) -> Result<bool, StoreError> {
        on_db!(&self.db, unsubscribe(id))
    }
}

/// The SQLite row decoders, for the fuzz targets (`fuzz/`, target
/// `stored_rows`): whatever a row read back from disk holds, it becomes the
/// model or a corrupt-row error, never a panic.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use super::sql::sqlite::{
        notification_from_row, template_from_row, NotificationRow, TemplateRow,
    };
}
