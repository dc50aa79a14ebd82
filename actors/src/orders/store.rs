//! The orders service's SQL: its own SQLite database (`orders.db`), migrations
//! in `migrations/sqlite/`. Nothing outside this service reads these tables.

use std::path::Path;
use std::time::Duration;

use sqlx::migrate::Migrator;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::model::{NewOrder, Order, OrderFilter, OrderStatus};
use crate::api::PageRequest;
use crate::idempotency::{self, Claim, IdempotencyKey};
use crate::storage::sqlite::SqliteDb;
use crate::storage::{StorageSettings, StoreError};

static MIGRATIONS: Migrator = sqlx::migrate!("src/orders/migrations/sqlite");

const COLUMNS: &str = "id, user_id, amount, currency, description, status, created_at, updated_at";

type OrderRow = (String, String, i64, String, Option<String>, String, String, String);

/// What cancelling found.
#[derive(Debug)]
pub enum CancelOutcome {
    Cancelled(Order),
    /// The order exists but is no longer `created`.
    NotCancellable(Order),
    NotFound,
}

#[derive(Clone, Debug)]
pub struct OrdersStore {
    db: SqliteDb,
    /// How long an unfinished idempotency claim holds its key.
    claim_lease: Duration,
}

impl OrdersStore {
    pub async fn open(
        data_dir: &Path,
        settings: &StorageSettings,
        claim_lease: Duration,
    ) -> Result<Self, StoreError> {
        let db = SqliteDb::open(data_dir, "orders", settings, &MIGRATIONS).await?;
        Ok(Self { db, claim_lease })
    }

    pub fn db(&self) -> &SqliteDb {
        &self.db
    }

    pub async fn claim(&self, key: &IdempotencyKey) -> Result<Claim, StoreError> {
        idempotency::claim(self.db.writer(), key, self.claim_lease).await
    }

    pub async fn release(&self, key: &IdempotencyKey) -> Result<(), StoreError> {
        idempotency::release(self.db.writer(), key).await
    }

    pub async fn purge_expired_keys(&self) -> Result<u64, StoreError> {
        idempotency::purge_expired(self.db.writer()).await
    }

    /// Inserts the order and, in the same transaction, stores the response for
    /// its idempotency key.
    pub async fn insert(
        &self,
        user_id: Uuid,
        new: &NewOrder,
        key: Option<&IdempotencyKey>,
    ) -> Result<Order, StoreError> {
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
        let mut tx = self.db.writer().begin().await?;
        sqlx::query(
            "INSERT INTO orders (id, user_id, amount, currency, description, status, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(order.id.to_string())
        .bind(order.user_id.to_string())
        .bind(order.amount)
        .bind(&order.currency)
        .bind(&order.description)
        .bind(order.status.as_str())
        .bind(timestamp(order.created_at)?)
        .bind(timestamp(order.updated_at)?)
        .execute(&mut *tx)
        .await?;
        if let Some(key) = key {
            let body = serde_json::to_vec(&order).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            idempotency::complete_in(&mut tx, key, 201, &body).await?;
        }
        tx.commit().await?;
        Ok(order)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let row: Option<OrderRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(self.db.reader())
            .await?;
        row.map(order_from_row).transpose()
    }

    /// One page of orders, newest first (UUIDv7 ids sort by creation time).
    pub async fn list(&self, filter: OrderFilter, page: PageRequest) -> Result<(Vec<Order>, u64), StoreError> {
        let (rows, total): (Vec<OrderRow>, i64) = match filter {
            OrderFilter::All => {
                let rows = sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders ORDER BY id DESC LIMIT ? OFFSET ?"))
                    .bind(i64::from(page.limit))
                    .bind(page.offset())
                    .fetch_all(self.db.reader())
                    .await?;
                let total = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
                    .fetch_one(self.db.reader())
                    .await?;
                (rows, total)
            }
            OrderFilter::User(user) => {
                let rows = sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM orders WHERE user_id = ? ORDER BY id DESC LIMIT ? OFFSET ?"
                ))
                .bind(user.to_string())
                .bind(i64::from(page.limit))
                .bind(page.offset())
                .fetch_all(self.db.reader())
                .await?;
                let total = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE user_id = ?")
                    .bind(user.to_string())
                    .fetch_one(self.db.reader())
                    .await?;
                (rows, total)
            }
        };
        let orders = rows.into_iter().map(order_from_row).collect::<Result<_, _>>()?;
        Ok((orders, u64::try_from(total).unwrap_or(0)))
    }

    /// Cancels an order that is still `created`, atomically.
    pub async fn cancel(&self, id: Uuid) -> Result<CancelOutcome, StoreError> {
        let updated: Option<OrderRow> = sqlx::query_as(&format!(
            "UPDATE orders SET status = 'cancelled', updated_at = ?
             WHERE id = ? AND status = 'created' RETURNING {COLUMNS}"
        ))
        .bind(timestamp(now_micros())?)
        .bind(id.to_string())
        .fetch_optional(self.db.writer())
        .await?;
        if let Some(row) = updated {
            return Ok(CancelOutcome::Cancelled(order_from_row(row)?));
        }
        // Read through the writer: the reader pool may not see the latest commit yet.
        let current: Option<OrderRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(self.db.writer())
            .await?;
        Ok(match current {
            Some(row) => CancelOutcome::NotCancellable(order_from_row(row)?),
            None => CancelOutcome::NotFound,
        })
    }
}

/// Now, truncated to microseconds so that what is stored is what was returned.
fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000).unwrap_or(now)
}

/// RFC 3339 with exactly six fraction digits, so stored times sort as text.
const STORED_TIME: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

fn timestamp(t: OffsetDateTime) -> Result<String, StoreError> {
    t.to_offset(time::UtcOffset::UTC)
        .format(STORED_TIME)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn order_from_row(row: OrderRow) -> Result<Order, StoreError> {
    let (id, user_id, amount, currency, description, status, created_at, updated_at) = row;
    let corrupt = |what: &str, value: &str| StoreError::Corrupt(format!("order {id}: bad {what} `{value}`"));
    Ok(Order {
        id: Uuid::parse_str(&id).map_err(|_| corrupt("id", &id))?,
        user_id: Uuid::parse_str(&user_id).map_err(|_| corrupt("user_id", &user_id))?,
        amount,
        currency,
        description,
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        created_at: OffsetDateTime::parse(&created_at, &Rfc3339).map_err(|_| corrupt("created_at", &created_at))?,
        updated_at: OffsetDateTime::parse(&updated_at, &Rfc3339).map_err(|_| corrupt("updated_at", &updated_at))?,
    })
}
