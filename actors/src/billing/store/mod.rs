//! The billing service's data: its own database, SQLite (the file
//! `billing.db`) or PostgreSQL (the schema `billing`), with the migrations
//! of each in `../migrations/`. Nothing outside this service reads these
//! tables. This module holds the store and its writes; `sql.rs` their SQL,
//! written once for both backends; `sqlite.rs` and `postgres.rs` the one
//! write that differs (invoicing a batch of events).
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
mod sql;
mod sqlite;

use std::path::Path;
use std::sync::Arc;
use tracing::Instrument;

use uuid::Uuid;

use super::model::{Invoice, InvoiceFilter, InvoiceStatus, OrderEvent};
use crate::api::PageRequest;
use crate::events::{Event, Outbox, Topic};
use crate::storage::group_commit::Writer;
use crate::storage::{
    now_micros, Database, Dependency, Earlier, Migrations, Schema, SharedTable, StorageSettings,
    StoreError,
};
use crate::ServiceError;

/// The billing schema: its own migrations and the shared tables it uses. The
/// `earlier` checksums are those of the files as releases before the shared
/// tables moved to the storage layer applied them (see `storage::schema`).
static SCHEMA: Schema = Schema {
    sqlite: Migrations {
        own: &sqlx::migrate!("src/billing/migrations/sqlite"),
        earlier: &[
            Earlier {
                version: 1,
                checksum: "75d84e94bcd8409c229d06eba61e13c1b5284c5a3a1dd46cf2e066f6c3c6cf53d33b1db5855ced462b170805d4c413f4",
            },
        ],
    },
    postgres: Migrations {
        own: &sqlx::migrate!("src/billing/migrations/postgres"),
        earlier: &[
            Earlier {
                version: 1,
                checksum: "79c720f607173c286e958e476905d66fd4cd765249569a9e1410c5584587210b9f58feabd33ac1d81bb96dbc84b432c9",
            },
        ],
    },
    shared: &[SharedTable::Outbox, SharedTable::ProcessedEvents],
};

const COLUMNS: &str =
    "id, number, order_id, user_id, amount, currency, status, created_at, paid_at, voided_at, refunded_at";

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
    /// `order.cancelled` for a paid invoice: its payment is refunded now (a
    /// `refunds` row, the invoice `refunded`, `invoice.refunded` in the
    /// outbox): a cancelled order never keeps its money.
    Refunded(Invoice),
    /// `order.cancelled` for an invoice already void or refunded: the event
    /// is recorded.
    AlreadyClosed(Invoice),
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

/// A write to the billing database. Concurrent writes are committed together
/// (group commit, [`crate::storage::group_commit`]); `sqlite.rs` and
/// `postgres.rs` write a batch of them, invoices as multi-row statements
/// numbered from one bump of the counter.
pub(super) enum BillingWrite {
    /// Record `event` (`order.created`) and invoice its order, once per order.
    Invoice {
        event: Event,
        /// Its number is set in the batch.
        invoice: Invoice,
        prefix: Arc<str>,
    },
    /// Record `event` (`order.cancelled`) and void the order's open invoice;
    /// nothing is written while the order has no invoice yet.
    Void {
        event: Event,
        order_id: Uuid,
        now: time::OffsetDateTime,
    },
    /// Pay the invoice if it is `open`.
    Pay {
        id: Uuid,
        now: time::OffsetDateTime,
        request_id: String,
        actor_id: Uuid,
        /// The trace of the caller (the event is made in the writer).
        traceparent: Option<String>,
    },
}

/// What a [`BillingWrite`] did.
#[derive(Debug)]
pub(super) enum BillingWritten {
    Applied(ApplyOutcome),
    /// `None`: the order has no invoice yet.
    Void(Option<ApplyOutcome>),
    Pay(PayOutcome),
}

/// What a batch's invoicing writes come to, before anything is inserted.
pub(super) struct InvoicePlan<'a> {
    /// One per invoicing write, in order.
    pub outcomes: Vec<ApplyOutcome>,
    /// The invoices to insert (numbered `last + 1`, `last + 2`, …) and the
    /// events they answer.
    pub new: Vec<(&'a Event, Invoice)>,
}

/// An invoicing write of a batch: its event, its unnumbered invoice, its prefix.
pub(super) type InvoiceWrite<'a> = (&'a Event, &'a Invoice, &'a str);

/// What each backend's SQL does for the billing writes (`sqlite.rs`,
/// `postgres.rs`); the batch around them is written once, below.
pub(super) trait BillingSql: sqlx::Database {
    /// A batch's `order.created` events: one outcome each, in order. The one
    /// write whose SQL differs per backend (multi-row statements, the
    /// counter's lock); the batch around it and every other statement are
    /// written once, in `sql.rs`.
    fn invoice_all(
        tx: &mut sqlx::Transaction<'_, Self>,
        invoices: &[InvoiceWrite<'_>],
    ) -> impl std::future::Future<Output = Result<Vec<ApplyOutcome>, StoreError>> + Send;
}

impl BillingWrite {
    /// The invoicing writes of a batch, written ahead of its other writes
    /// (a void in the same batch then finds the invoice it needs).
    fn invoices(ops: &[Self]) -> Vec<InvoiceWrite<'_>> {
        ops.iter()
            .filter_map(|op| match op {
                BillingWrite::Invoice {
                    event,
                    invoice,
                    prefix,
                } => Some((event, invoice, &**prefix)),
                _ => None,
            })
            .collect()
    }

    /// Plans a batch's invoices. `fresh`: the events recorded for the first
    /// time now (the others were applied before); `existing`: the invoices
    /// the database has for the batch's orders; `last`: the counter. An
    /// order with an invoice (there, or planned earlier in the batch) gets
    /// none; the others are numbered on from `last`, without gaps.
    pub(super) fn plan<'a>(
        invoices: &[InvoiceWrite<'a>],
        fresh: &std::collections::HashSet<Uuid>,
        mut existing: std::collections::HashMap<Uuid, Invoice>,
        last: i64,
    ) -> InvoicePlan<'a> {
        let mut seen = std::collections::HashSet::new();
        let mut new = Vec::new();
        let outcomes = invoices
            .iter()
            .map(|(event, invoice, prefix)| {
                // The same event twice in one batch: the second was applied by the first.
                if !fresh.contains(&event.id) || !seen.insert(event.id) {
                    return ApplyOutcome::AlreadyApplied;
                }
                if let Some(found) = existing.get(&invoice.order_id) {
                    return ApplyOutcome::AlreadyInvoiced(found.clone());
                }
                let mut invoice = (*invoice).clone();
                invoice.number = super::model::invoice_number(prefix, last + 1 + new.len() as i64);
                existing.insert(invoice.order_id, invoice.clone());
                new.push((*event, invoice.clone()));
                ApplyOutcome::Invoiced(invoice)
            })
            .collect();
        InvoicePlan { outcomes, new }
    }

    /// The event announcing a change to `invoice`, caused as `event` was.
    fn announce(event: &Event, topic: Topic, invoice: &Invoice) -> Result<Event, StoreError> {
        Cause {
            request_id: event.request_id.as_deref(),
            actor_id: event.actor_id,
        }
        .announce(topic, invoice)
        .map(|announced| announced.with_traceparent(event.traceparent.clone()))
    }
}

#[derive(Clone, Debug)]
pub struct BillingStore {
    db: Database,
    writer: Writer<BillingWrite>,
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
        let db = Database::open("billing", data_dir, settings, &SCHEMA).await?;
        Ok(Self {
            outbox: Outbox::new("billing", db.clone()),
            writer: Writer::start("billing", &db, settings.group_commit, None),
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
        async {
            match &self.db {
                Database::Sqlite(db) => sql::sqlite::get(db, "id", id).await,
                Database::Postgres(db) => sql::postgres::get(db, "id", id).await,
            }
        }
        .instrument(self.db.span("billing", "SELECT invoices"))
        .await
    }

    /// The order's invoice, once its `order.created` has been applied.
    pub async fn get_by_order(&self, order_id: Uuid) -> Result<Option<Invoice>, StoreError> {
        async {
            match &self.db {
                Database::Sqlite(db) => sql::sqlite::get(db, "order_id", order_id).await,
                Database::Postgres(db) => sql::postgres::get(db, "order_id", order_id).await,
            }
        }
        .instrument(self.db.span("billing", "SELECT invoices by order"))
        .await
    }

    /// One page of invoices, newest first (UUIDv7 ids sort by creation
    /// time), and the total.
    pub async fn list(
        &self,
        filter: InvoiceFilter,
        page: PageRequest,
    ) -> Result<(Vec<Invoice>, u64), StoreError> {
        let (invoices, total) = async {
            match &self.db {
                Database::Sqlite(db) => sql::sqlite::list(db, filter, page).await,
                Database::Postgres(db) => sql::postgres::list(db, filter, page).await,
            }
        }
        .instrument(self.db.span("billing", "SELECT invoices page"))
        .await?;
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
        let written = self
            .writer
            .submit(BillingWrite::Pay {
                id,
                now: now_micros(),
                request_id: request_id.to_owned(),
                actor_id,
                traceparent: supervision::trace::current_traceparent(),
            })
            .await?;
        let BillingWritten::Pay(outcome) = written else {
            return Err(unexpected(&written));
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
        // request and actor (see `BillingWrite::announce`), so one request
        // can be followed to the last consumer.
        let order_event = OrderEvent::from_event(event)?;
        let order_id = order_event.order().id;
        let write = match order_event {
            OrderEvent::Created(order) => BillingWrite::Invoice {
                event: event.continued_here(),
                invoice: Invoice {
                    id: Uuid::now_v7(),
                    number: String::new(), // set from the counter, in the batch
                    order_id: order.id,
                    user_id: order.user_id,
                    amount: order.amount,
                    currency: order.currency,
                    status: InvoiceStatus::Open,
                    created_at: now_micros(),
                    paid_at: None,
                    voided_at: None,
                    refunded_at: None,
                },
                prefix: self.prefix.clone(),
            },
            OrderEvent::Cancelled(order) => BillingWrite::Void {
                event: event.continued_here(),
                order_id: order.id,
                now: now_micros(),
            },
        };
        let outcome = match self.writer.submit(write).await.map_err(internal)? {
            BillingWritten::Applied(outcome) => outcome,
            BillingWritten::Void(Some(outcome)) => outcome,
            BillingWritten::Void(None) => {
                return Err(ServiceError::Conflict(format!(
                    "no invoice for order {order_id} yet"
                )));
            }
            other => return Err(internal(unexpected(&other))),
        };
        if matches!(outcome, ApplyOutcome::Invoiced(_) | ApplyOutcome::Voided(_)) {
            self.outbox.committed();
        }
        Ok(outcome)
    }
}

/// A store failure as a reply: 503 when the database is down, else 500;
/// either is the worker's failure, so a broken database trips the circuit.
pub(super) fn internal(err: StoreError) -> ServiceError {
    ServiceError::from_store("billing", err)
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

/// A write answered with another write's outcome: a bug in a backend's batch.
fn unexpected(written: &BillingWritten) -> StoreError {
    StoreError::Corrupt(format!("billing writer answered {written:?}"))
}

fn corrupt(id: &str, what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("invoice {id}: bad {what} `{value}`"))
}

fn parse_status(id: &str, status: &str) -> Result<InvoiceStatus, StoreError> {
    InvoiceStatus::parse(status).ok_or_else(|| corrupt(id, "status", status))
}

/// The SQLite row decoders, for the fuzz targets (`fuzz/`, target
/// `stored_rows`): whatever a row read back from disk holds, it becomes the
/// model or a corrupt-row error, never a panic.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use super::sql::sqlite::{invoice_from_row, InvoiceRow};
}
