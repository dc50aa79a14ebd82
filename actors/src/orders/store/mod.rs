//! The orders service's data: its own database, SQLite (the file
//! `orders.db`) or PostgreSQL (the schema `orders`), with the migrations of
//! each in `../migrations/`. Nothing outside this service reads these
//! tables. This module holds the store and its writes; `sql.rs` their SQL,
//! written once for both backends; `sqlite.rs` and `postgres.rs` the one
//! statement that differs (the multi-row insert).
//!
//! Every change that others must hear of writes its event (`order.created`,
//! `order.cancelled`) to the outbox in the same transaction; applied events
//! (`invoice.paid`) are recorded in the same transaction as their effect.

mod postgres;
mod sql;
mod sqlite;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use uuid::Uuid;

use super::model::{NewOrder, Order, OrderFilter, OrderStatus};
use crate::api::PageRequest;
use crate::events::inbox::Inbox;
use crate::events::{Event, Outbox, Topic};
use crate::idempotency::{self, Claim, IdempotencyKey};
use crate::orders::topics;
use crate::storage::group_commit::{OnCommit, Writer};
use crate::storage::row_cache::RowCache;
use crate::storage::{
    now_micros, Database, Dependency, Earlier, Migrations, Schema, SharedTable, StorageSettings,
    StoreError,
};

/// The orders schema: its own migrations and the shared tables it uses. The
/// `earlier` checksums are those of the files as releases before the shared
/// tables moved to the storage layer applied them (see `storage::schema`).
static SCHEMA: Schema = Schema {
    sqlite: Migrations {
        own: &sqlx::migrate!("src/orders/migrations/sqlite"),
        earlier: &[
            Earlier {
                version: 1,
                checksum: "2248714933e46590eac49b97fff2c3a9c6358d9c4e478cf797ba3a2418ff195b1fe765338e7989bb20f87fb2532ff17c",
            },
            Earlier {
                version: 2,
                checksum: "436c90108426c72b75807cd34ec0cf0122bed6c1945537e7158d890f0853522930f7ca17e3c29126c6dcb996774eaccb",
            },
        ],
    },
    postgres: Migrations {
        own: &sqlx::migrate!("src/orders/migrations/postgres"),
        earlier: &[
            Earlier {
                version: 1,
                checksum: "74eac531a762c03b33b794d93549cb32209b28e17525b8eb5829171083c6b06ff0a3bd27f76601aac98cffafc4ef32a0",
            },
            Earlier {
                version: 2,
                checksum: "36dff3e8c62a1f70ddb80ee1dbf93336a113932a4bc1c0c0686fdf75d5c0619b6a3928519f8f147ff6680e38ad9add6d",
            },
        ],
    },
    shared: &[
        SharedTable::Outbox,
        SharedTable::ProcessedEvents,
        SharedTable::IdempotencyKeys,
    ],
};

const COLUMNS: &str = "id, user_id, amount, currency, description, status, created_at, updated_at";

/// What cancelling found.
#[derive(Debug)]
pub enum CancelOutcome {
    Cancelled(Order),
    /// The order exists but is no longer `created`.
    NotCancellable(Order),
    NotFound,
}

/// What applying an `invoice.paid` found.
#[derive(Debug, PartialEq, Eq)]
pub enum PaidOutcome {
    /// The order is now `paid`.
    Paid,
    /// It was not `created` any more (cancelled meanwhile): left as it is.
    NotPayable(OrderStatus),
    /// No such order here.
    Unknown,
    /// The event had been applied before.
    AlreadyApplied,
}

/// The payload of `invoice.paid` that orders reads.
#[derive(Debug, serde::Deserialize)]
pub struct InvoicePaid {
    pub order_id: Uuid,
}

/// Who caused a change, for the event that announces it.
#[derive(Clone, Copy, Debug)]
pub struct Cause<'a> {
    pub request_id: &'a str,
    pub actor: Uuid,
}

/// A write to the orders database. Concurrent writes are committed together
/// (group commit, [`crate::storage::group_commit`]); `sqlite.rs` and
/// `postgres.rs` write a batch of them, creates as multi-row statements.
pub(super) enum OrderWrite {
    /// The order, its `order.created` and the response for its idempotency key.
    Create {
        order: Order,
        event: Event,
        response: Option<(IdempotencyKey, Vec<u8>)>,
    },
    /// Cancel the order if it is `created`, announcing it with an event
    /// caused by `request_id` and acted by `actor`.
    Cancel {
        id: Uuid,
        now: time::OffsetDateTime,
        request_id: String,
        actor: Uuid,
        /// The trace of the caller (the event is made in the writer).
        traceparent: Option<String>,
    },
    /// Record `event` (`invoice.paid`) and mark the order paid if it is `created`.
    MarkPaid {
        event: Event,
        order_id: Uuid,
        now: time::OffsetDateTime,
    },
}

/// A create of a batch: the order, its event, its idempotency response.
pub(super) type CreateWrite<'a> = (&'a Order, &'a Event, Option<&'a (IdempotencyKey, Vec<u8>)>);

/// What an [`OrderWrite`] did.
#[derive(Debug)]
pub(super) enum OrderWritten {
    Created,
    Cancel(CancelOutcome),
    /// Whether the event was new, and the order's status after (if it exists).
    MarkPaid {
        first_time: bool,
        status: Option<String>,
    },
}

/// The one statement whose text differs per backend: a batch's orders as
/// one multi-row insert (`sqlite.rs`: `json_each`; `postgres.rs`: `UNNEST`).
/// The batch around it and every other statement are written once, in
/// `sql.rs`.
pub(super) trait OrderRows: sqlx::Database {
    fn insert_orders(
        tx: &mut sqlx::Transaction<'_, Self>,
        orders: &[&Order],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

impl OrderWrite {
    /// The creates of a batch, which both backends write as multi-row
    /// statements ahead of the batch's other writes. Safe to reorder: no
    /// other write can name an order before its create has committed and
    /// answered.
    fn creates(ops: &[Self]) -> Vec<CreateWrite<'_>> {
        ops.iter()
            .filter_map(|op| match op {
                OrderWrite::Create {
                    order,
                    event,
                    response,
                } => Some((order, event, response.as_ref())),
                _ => None,
            })
            .collect()
    }

    /// The event announcing a cancel.
    fn cancelled(order: &Order, request_id: &str, actor: Uuid) -> Result<Event, StoreError> {
        event(topics::ORDER_CANCELLED, Cause { request_id, actor }, order)
    }
}

#[derive(Clone, Debug)]
pub struct OrdersStore {
    db: Database,
    writer: Writer<OrderWrite>,
    outbox: Outbox,
    /// The orders this process wrote, as they are now (SQLite only).
    cache: Option<Arc<RowCache<Uuid, Order>>>,
    /// How long an unfinished idempotency claim holds its key.
    claim_lease: Duration,
}

impl OrdersStore {
    pub async fn open(
        data_dir: &Path,
        settings: &StorageSettings,
        claim_lease: Duration,
    ) -> Result<Self, StoreError> {
        let db = Database::open("orders", data_dir, settings, &SCHEMA).await?;
        let outbox = Outbox::new("orders", db.clone());
        let cache = RowCache::for_backend("orders", &db, settings.row_cache).map(Arc::new);
        let on_commit = cache
            .clone()
            .map(|cache| -> OnCommit<OrderWrite, OrderWritten> {
                Arc::new(move |write, written| remember(&cache, write, written))
            });
        let writer = Writer::start("orders", &db, settings.group_commit, on_commit);
        Ok(Self {
            db,
            writer,
            outbox,
            cache,
            claim_lease,
        })
    }

    /// Where the relay finds this service's events.
    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    /// The events this service applied, for the bus's purge.
    pub fn inbox(&self) -> Inbox {
        Inbox::new("orders", self.db.clone())
    }

    /// Called by each worker as it starts: fails while the database is unreachable.
    pub async fn ensure_ready(&self) -> Result<(), StoreError> {
        self.db.ensure_ready().await
    }

    pub fn dependency(&self) -> Arc<dyn Dependency> {
        self.db.dependency()
    }

    pub async fn claim(&self, key: &IdempotencyKey) -> Result<Claim, StoreError> {
        idempotency::claim(&self.db, key, self.claim_lease).await
    }

    pub async fn release(&self, key: &IdempotencyKey) -> Result<(), StoreError> {
        idempotency::release(&self.db, key).await
    }

    pub async fn purge_expired_keys(&self) -> Result<u64, StoreError> {
        // The first purge runs at boot, maybe before the migrations.
        self.db.ensure_ready().await?;
        idempotency::purge_expired(&self.db).await
    }

    /// Inserts the order and, in the same transaction, its `order.created`
    /// event and the response for its idempotency key.
    pub async fn insert(
        &self,
        cause: Cause<'_>,
        new: &NewOrder,
        key: Option<&IdempotencyKey>,
    ) -> Result<Order, StoreError> {
        let user_id = cause.actor;
        let now = now_micros();
        let order = Order {
            id: Uuid::now_v7(),
            user_id,
            amount: new.amount.minor_units(),
            currency: new.currency.as_str().to_owned(),
            description: new.description.as_ref().map(|d| d.as_str().to_owned()),
            status: OrderStatus::Created,
            created_at: now,
            updated_at: now,
        };
        let response = match key {
            Some(key) => Some((
                key.clone(),
                serde_json::to_vec(&order).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )),
            None => None,
        };
        let event = event(topics::ORDER_CREATED, cause, &order)?;
        self.writer
            .submit(OrderWrite::Create {
                order: order.clone(),
                event,
                response,
            })
            .await?;
        self.outbox.committed();
        Ok(order)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        if let Some(order) = self.cache.as_ref().and_then(|cache| cache.get(&id)) {
            return Ok(Some(order));
        }
        async {
            match &self.db {
                Database::Sqlite(db) => sql::sqlite::get(db, id).await,
                Database::Postgres(db) => sql::postgres::get(db, id).await,
            }
        }
        .instrument(self.db.span("orders", "SELECT orders"))
        .await
    }

    /// One page of orders, newest first (UUIDv7 ids sort by creation time),
    /// and the total.
    pub async fn list(
        &self,
        filter: OrderFilter,
        page: PageRequest,
    ) -> Result<(Vec<Order>, u64), StoreError> {
        let (orders, total) = async {
            match &self.db {
                Database::Sqlite(db) => sql::sqlite::list(db, filter, page).await,
                Database::Postgres(db) => sql::postgres::list(db, filter, page).await,
            }
        }
        .instrument(self.db.span("orders", "SELECT orders page"))
        .await?;
        Ok((orders, u64::try_from(total).unwrap_or(0)))
    }

    /// Cancels an order that is still `created`, atomically, with its
    /// `order.cancelled` event.
    pub async fn cancel(&self, id: Uuid, cause: Cause<'_>) -> Result<CancelOutcome, StoreError> {
        let written = self
            .writer
            .submit(OrderWrite::Cancel {
                id,
                now: now_micros(),
                request_id: cause.request_id.to_owned(),
                actor: cause.actor,
                traceparent: supervision::trace::current_traceparent(),
            })
            .await?;
        let OrderWritten::Cancel(outcome) = written else {
            return Err(unexpected(&written));
        };
        if matches!(outcome, CancelOutcome::Cancelled(_)) {
            self.outbox.committed();
        }
        Ok(outcome)
    }
}

impl OrdersStore {
    /// Applies `invoice.paid`: the order becomes `paid` if it is still
    /// `created`, in one transaction with the record of the event.
    pub async fn apply_invoice_paid(
        &self,
        event: &Event,
        paid: &InvoicePaid,
    ) -> Result<PaidOutcome, StoreError> {
        let written = self
            .writer
            .submit(OrderWrite::MarkPaid {
                event: event.clone(),
                order_id: paid.order_id,
                now: now_micros(),
            })
            .await?;
        let OrderWritten::MarkPaid { first_time, status } = written else {
            return Err(unexpected(&written));
        };
        if !first_time {
            return Ok(PaidOutcome::AlreadyApplied);
        }
        Ok(match status {
            None => PaidOutcome::Unknown,
            Some(status) => match parse_status(&paid.order_id.to_string(), &status)? {
                OrderStatus::Paid => PaidOutcome::Paid,
                other => PaidOutcome::NotPayable(other),
            },
        })
    }
}

/// The event announcing a change to `order` (its data is the order, as the API shows it).
fn event(topic: Topic, cause: Cause<'_>, order: &Order) -> Result<Event, StoreError> {
    Event::new(topic, Some(cause.request_id), Some(cause.actor), order)
        .map_err(|e| StoreError::Corrupt(format!("order {}: {e}", order.id)))
}

/// Keeps the row cache in step with a committed write: the order as it is
/// now where the write knows it, forgotten where it does not (a payment
/// answers only the status).
fn remember(cache: &RowCache<Uuid, Order>, write: &OrderWrite, written: &OrderWritten) {
    match (write, written) {
        (OrderWrite::Create { order, .. }, OrderWritten::Created) => {
            cache.put(order.id, order.clone())
        }
        (
            OrderWrite::Cancel { .. },
            OrderWritten::Cancel(
                CancelOutcome::Cancelled(order) | CancelOutcome::NotCancellable(order),
            ),
        ) => cache.put(order.id, order.clone()),
        (OrderWrite::Cancel { id, .. }, _) => cache.forget(id),
        (OrderWrite::MarkPaid { order_id, .. }, _) => cache.forget(order_id),
        (OrderWrite::Create { order, .. }, _) => cache.forget(&order.id),
    }
}

/// A write answered with another write's outcome: a bug in a backend's batch.
fn unexpected(written: &OrderWritten) -> StoreError {
    StoreError::Corrupt(format!("orders writer answered {written:?}"))
}

fn corrupt(id: &str, what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("order {id}: bad {what} `{value}`"))
}

fn parse_status(id: &str, status: &str) -> Result<OrderStatus, StoreError> {
    OrderStatus::parse(status).ok_or_else(|| corrupt(id, "status", status))
}

/// The SQLite row decoders, for the fuzz targets (`fuzz/`, target
/// `stored_rows`): whatever a row read back from disk holds, it becomes the
/// model or a corrupt-row error, never a panic.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use super::sql::sqlite::{order_from_row, OrderRow};
}
