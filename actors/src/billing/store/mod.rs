//! The billing service's data: its own database, SQLite (`sqlite.rs`, the file
//! `billing.db`) or PostgreSQL (`postgres.rs`, the schema `billing`), with the
//! migrations of each in `../migrations/`. Nothing outside this service reads
//! these tables. This module holds what both backends share and picks one.
//!
//! Every change is one transaction with what it owes the event flow: a
//! consumed event is recorded (`processed_events`) before its effect, and
//! the event billing publishes about the change goes into its outbox. An
//! event recorded before is a redelivery and changes nothing.
//!
//! Invoice numbers come from the one-row `invoice_counter`, bumped in the
//! invoice's own transaction: a rollback gives the number back, so numbers
//! have no gaps, and the row's lock (PostgreSQL) or the single writer
//! connection (SQLite) hands them out one creator at a time.

mod postgres;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use sqlx::migrate::Migrator;
use uuid::Uuid;

use super::model::{Invoice, InvoiceFilter, InvoiceStatus, OrderEvent};
use crate::api::PageRequest;
use crate::events::{Event, Outbox, Topic};
use crate::storage::{now_micros, Database, Dependency, Migrations, StorageSettings, StoreError};
use crate::ServiceError;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("src/billing/migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("src/billing/migrations/postgres");

const COLUMNS: &str =
    "id, number, order_id, user_id, amount, currency, status, created_at, paid_at, voided_at";

/// What applying a consumed event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// `order.created`: the order's new invoice (`invoice.created` is in the outbox).
    Invoiced(Invoice),
    /// `order.created` for an order that has its invoice already (another
    /// event named the same order): the event is recorded, nothing created.
    AlreadyInvoiced(Invoice),
    /// `order.cancelled`: the open invoice is void now (`invoice.voided` is in
    /// the outbox).
    Voided(Invoice),
    /// `order.cancelled` for a paid invoice: nothing changed, the event is
    /// recorded; the money must be refunded.
    RefundNeeded(Invoice),
    /// `order.cancelled` for an invoice already void: the event is recorded.
    AlreadyVoid(Invoice),
    /// The event was applied before: nothing changed.
    AlreadyApplied,
}

/// What paying found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayOutcome {
    /// Paid now (`invoice.paid` is in the outbox).
    Paid(Invoice),
    /// The invoice exists but is no longer `open`.
    NotPayable(Invoice),
    NotFound,
}

#[derive(Clone, Debug)]
pub struct BillingStore {
    db: Database,
    /// Where the relay reads billing's events; woken after each commit that
    /// appended one.
    outbox: Outbox,
    /// What invoice numbers start with (`INV-`).
    prefix: Arc<str>,
}

impl BillingStore {
    pub async fn open(
        data_dir: &Path,
        settings: &StorageSettings,
        prefix: &str,
    ) -> Result<Self, StoreError> {
        let migrations = Migrations {
            sqlite: &SQLITE_MIGRATIONS,
            postgres: &POSTGRES_MIGRATIONS,
        };
        let db = Database::open("billing", data_dir, settings, &migrations).await?;
        Ok(Self {
            outbox: Outbox::new("billing", db.clone()),
            db,
            prefix: prefix.into(),
        })
    }

    /// Called by each worker as it starts: fails while the database is unreachable.
    pub async fn ensure_ready(&self) -> Result<(), StoreError> {
        self.db.ensure_ready().await
    }

    pub fn dependency(&self) -> Arc<dyn Dependency> {
        self.db.dependency()
    }

    /// The service's outbox, for the relay (and tests).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The events this service applied, for the bus's purge.
    pub fn inbox(&self) -> crate::events::inbox::Inbox {
        crate::events::inbox::Inbox::new("billing", self.db.clone())
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Invoice>, StoreError> {
        match &self.db {
            Database::Sqlite(db) => sqlite::get(db, "id", id).await,
            Database::Postgres(db) => postgres::get(db, "id", id).await,
        }
    }

    /// The order's invoice, once its `order.created` has been applied.
    pub async fn get_by_order(&self, order_id: Uuid) -> Result<Option<Invoice>, StoreError> {
        match &self.db {
            Database::Sqlite(db) => sqlite::get(db, "order_id", order_id).await,
            Database::Postgres(db) => postgres::get(db, "order_id", order_id).await,
        }
    }

    /// One page of invoices, newest first (UUIDv7 ids sort by creation
    /// time), and the total.
    pub async fn list(
        &self,
        filter: InvoiceFilter,
        page: PageRequest,
    ) -> Result<(Vec<Invoice>, u64), StoreError> {
        let (invoices, total) = match &self.db {
            Database::Sqlite(db) => sqlite::list(db, filter, page).await?,
            Database::Postgres(db) => postgres::list(db, filter, page).await?,
        };
        Ok((invoices, u64::try_from(total).unwrap_or(0)))
    }

    /// Pays an `open` invoice, atomically, with its `invoice.paid` event
    /// (caused by `request_id`, acted by `actor_id`).
    pub async fn pay(
        &self,
        id: Uuid,
        request_id: &str,
        actor_id: Uuid,
    ) -> Result<PayOutcome, StoreError> {
        let cause = Cause {
            request_id: Some(request_id),
            actor_id: Some(actor_id),
        };
        let now = now_micros();
        let outcome = match &self.db {
            Database::Sqlite(db) => sqlite::pay(db, id, now, cause).await?,
            Database::Postgres(db) => postgres::pay(db, id, now, cause).await?,
        };
        if matches!(outcome, PayOutcome::Paid(_)) {
            self.outbox.committed();
        }
        Ok(outcome)
    }

    /// Applies a consumed event, once: `order.created` invoices the order,
    /// `order.cancelled` voids its open invoice.
    ///
    /// Errors are what the bus should retry: a malformed event (`Conflict`,
    /// it will end among the dead letters), an `order.cancelled` whose
    /// invoice does not exist yet (`Conflict`, nothing recorded: deliveries
    /// can be reordered, and a later attempt finds it), or a store failure
    /// (`Internal`, logged).
    pub async fn apply(&self, event: &Event) -> Result<ApplyOutcome, ServiceError> {
        // The events billing's changes cause carry the consumed event's
        // request and actor, so one request can be followed to the last consumer.
        let cause = Cause {
            request_id: event.request_id.as_deref(),
            actor_id: event.actor_id,
        };
        let outcome = match OrderEvent::from_event(event)? {
            OrderEvent::Created(order) => {
                let invoice = Invoice {
                    id: Uuid::now_v7(),
                    number: String::new(), // set from the counter, in the transaction
                    order_id: order.id,
                    user_id: order.user_id,
                    amount: order.amount,
                    currency: order.currency,
                    status: InvoiceStatus::Open,
                    created_at: now_micros(),
                    paid_at: None,
                    voided_at: None,
                };
                match &self.db {
                    Database::Sqlite(db) => {
                        sqlite::create(db, event, invoice, &self.prefix, cause).await
                    }
                    Database::Postgres(db) => {
                        postgres::create(db, event, invoice, &self.prefix, cause).await
                    }
                }
                .map_err(internal)?
            }
            OrderEvent::Cancelled(order) => {
                let now = now_micros();
                let voided = match &self.db {
                    Database::Sqlite(db) => sqlite::void(db, event, order.id, now, cause).await,
                    Database::Postgres(db) => postgres::void(db, event, order.id, now, cause).await,
                }
                .map_err(internal)?;
                voided.ok_or_else(|| {
                    ServiceError::Conflict(format!("no invoice for order {} yet", order.id))
                })?
            }
        };
        if matches!(outcome, ApplyOutcome::Invoiced(_) | ApplyOutcome::Voided(_)) {
            self.outbox.committed();
        }
        Ok(outcome)
    }
}

/// A store failure as a reply: internal (a worker failure, so a broken
/// database trips the circuit), with the detail in the log.
pub(super) fn internal(err: StoreError) -> ServiceError {
    tracing::error!(error = %err, "billing store failed");
    ServiceError::internal(err)
}

/// What caused a change: copied into the event that announces it.
#[derive(Clone, Copy, Debug)]
struct Cause<'a> {
    request_id: Option<&'a str>,
    actor_id: Option<Uuid>,
}

impl Cause<'_> {
    /// The event announcing `invoice`'s change.
    fn announce(self, topic: Topic, invoice: &Invoice) -> Result<Event, StoreError> {
        Event::new(topic, self.request_id, self.actor_id, invoice).map_err(|e| {
            StoreError::Corrupt(format!("invoice {} does not serialize: {e}", invoice.id))
        })
    }
}

fn corrupt(id: &str, what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("invoice {id}: bad {what} `{value}`"))
}

fn parse_status(id: &str, status: &str) -> Result<InvoiceStatus, StoreError> {
    InvoiceStatus::parse(status).ok_or_else(|| corrupt(id, "status", status))
}
