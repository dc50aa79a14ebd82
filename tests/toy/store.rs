//! The notes service's database: its own tables (`migrations/`), the shared
//! outbox it publishes `note.created` through, and the shared record of the
//! events it applied. SQL written once for both backends (`per_backend!`).

use std::path::Path;

use actors::events::inbox::{Inbox, InboxSql};
use actors::events::outbox::OutboxSql;
use actors::events::{Event, Outbox};
use actors::storage::sql::Dialect;
use actors::storage::{Database, Migrations, Schema, SharedTable, StorageSettings, StoreError};
use uuid::Uuid;

use super::{Note, NAME};

static SCHEMA: Schema = Schema {
    sqlite: Migrations {
        own: &sqlx::migrate!("tests/toy/migrations/sqlite"),
        earlier: &[],
    },
    postgres: Migrations {
        own: &sqlx::migrate!("tests/toy/migrations/postgres"),
        earlier: &[],
    },
    shared: &[SharedTable::Outbox, SharedTable::ProcessedEvents],
};

#[derive(Clone)]
pub struct NotesStore {
    db: Database,
    outbox: Outbox,
}

/// Calls the same function on whichever backend the store runs on.
macro_rules! on_backend {
    ($db:expr, $f:ident($($arg:expr),*)) => {
        match $db {
            Database::Sqlite(db) => sql::sqlite::$f(db, $($arg),*).await,
            Database::Postgres(db) => sql::postgres::$f(db, $($arg),*).await,
        }
    };
}

impl NotesStore {
    pub async fn open(data_dir: &Path, settings: &StorageSettings) -> Result<Self, StoreError> {
        let db = Database::open(NAME, data_dir, settings, &SCHEMA).await?;
        Ok(Self {
            outbox: Outbox::new(NAME, db.clone()),
            db,
        })
    }

    pub async fn ensure_ready(&self) -> Result<(), StoreError> {
        self.db.ensure_ready().await
    }

    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    pub fn inbox(&self) -> Inbox {
        Inbox::new(NAME, self.db.clone())
    }

    pub fn dependency(&self) -> std::sync::Arc<dyn actors::storage::Dependency> {
        self.db.dependency()
    }

    /// The note and its `note.created`, in one transaction.
    pub async fn create(&self, note: &Note, event: &Event) -> Result<(), StoreError> {
        on_backend!(&self.db, create(note, event))?;
        self.outbox.committed();
        Ok(())
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Note>, StoreError> {
        on_backend!(&self.db, get(id))
    }

    pub async fn orders_seen(&self, user: Uuid) -> Result<i64, StoreError> {
        on_backend!(&self.db, orders_seen(user))
    }

    /// Counts an `order.created` for its user, once per event.
    pub async fn count_order(&self, event: &Event, user: Uuid) -> Result<(), StoreError> {
        on_backend!(&self.db, count_order(event, user))
    }

    /// Marks a note whose `note.created` came back through the bus.
    pub async fn announce(&self, event: &Event, note: Uuid) -> Result<(), StoreError> {
        on_backend!(&self.db, announce(event, note))
    }
}

mod sql {
    use super::*;

    actors::per_backend! {
        pub async fn create(db: &Db, note: &Note, event: &Event) -> Result<(), StoreError> {
            let mut tx = db.writer().begin().await?;
            sqlx::query("INSERT INTO notes (id, user_id, text) VALUES ($1, $2, $3)")
                .bind(DB::id(note.id))
                .bind(DB::id(note.user_id))
                .bind(&note.text)
                .execute(&mut *tx)
                .await?;
            DB::append_in(&mut tx, event).await?;
            tx.commit().await?;
            Ok(())
        }

        pub async fn get(db: &Db, id: Uuid) -> Result<Option<Note>, StoreError> {
            let mut conn = db.read().await?;
            let row: Option<(<DB as Dialect>::Id, <DB as Dialect>::Id, String, bool)> =
                sqlx::query_as("SELECT id, user_id, text, announced FROM notes WHERE id = $1")
                    .bind(DB::id(id))
                    .fetch_optional(&mut *conn)
                    .await?;
            row.map(|(id, user_id, text, announced)| {
                Ok(Note {
                    id: DB::read_id(id, "note id")?,
                    user_id: DB::read_id(user_id, "note user")?,
                    text,
                    announced,
                })
            })
            .transpose()
        }

        pub async fn orders_seen(db: &Db, user: Uuid) -> Result<i64, StoreError> {
            let mut conn = db.read().await?;
            let count: Option<i64> =
                sqlx::query_scalar("SELECT orders FROM orders_seen WHERE user_id = $1")
                    .bind(DB::id(user))
                    .fetch_optional(&mut *conn)
                    .await?;
            Ok(count.unwrap_or(0))
        }

        pub async fn count_order(db: &Db, event: &Event, user: Uuid) -> Result<(), StoreError> {
            let mut tx = db.writer().begin().await?;
            if DB::record_in(&mut tx, event).await? {
                sqlx::query(
                    "INSERT INTO orders_seen (user_id, orders) VALUES ($1, 1) \
                     ON CONFLICT (user_id) DO UPDATE SET orders = orders_seen.orders + 1",
                )
                .bind(DB::id(user))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }

        pub async fn announce(db: &Db, event: &Event, note: Uuid) -> Result<(), StoreError> {
            let mut tx = db.writer().begin().await?;
            if DB::record_in(&mut tx, event).await? {
                sqlx::query("UPDATE notes SET announced = TRUE WHERE id = $1")
                    .bind(DB::id(note))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }
    }
}
