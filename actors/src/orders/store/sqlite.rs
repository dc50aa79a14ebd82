//! The orders SQL on SQLite: ids and times stored as text (hyphenated UUIDs,
//! RFC 3339 with six fraction digits, so both sort as text); writes through
//! the single writer connection, reads through the reader pool.

use sqlx::{Sqlite, Transaction};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{corrupt, parse_status, COLUMNS};
use crate::api::PageRequest;
use crate::events::{inbox, outbox, Event};
use crate::idempotency::{self, IdempotencyKey};
use crate::orders::model::{Order, OrderFilter};
use crate::storage::sqlite::SqliteDb;
use crate::storage::StoreError;

const INSERT_ORDER: &str = "INSERT INTO orders (id, user_id, amount, currency, description, status, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

type OrderRow = (String, String, i64, String, Option<String>, String, String, String);

/// RFC 3339 with exactly six fraction digits, so stored times sort as text.
const STORED_TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

pub(super) async fn insert(
    db: &SqliteDb,
    order: &Order,
    response: Option<(&IdempotencyKey, &[u8])>,
    event: &Event,
) -> Result<(), StoreError> {
    let mut tx: Transaction<'_, Sqlite> = db.writer().begin().await?;
    insert_order(order)?.execute(&mut *tx).await?;
    outbox::sqlite::append_in(&mut tx, event).await?;
    if let Some((key, body)) = response {
        idempotency::sqlite::complete_in(&mut tx, key, 201, body).await?;
    }
    tx.commit().await?;
    Ok(())
}

fn insert_order(
    order: &Order,
) -> Result<sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments<'static>>, StoreError> {
    Ok(sqlx::query(INSERT_ORDER)
        .bind(order.id.to_string())
        .bind(order.user_id.to_string())
        .bind(order.amount)
        .bind(order.currency.clone())
        .bind(order.description.clone())
        .bind(order.status.as_str())
        .bind(timestamp(order.created_at)?)
        .bind(timestamp(order.updated_at)?))
}

pub(super) async fn get(db: &SqliteDb, id: Uuid) -> Result<Option<Order>, StoreError> {
    let mut conn = db.read().await?;
    let row: Option<OrderRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(order_from_row).transpose()
}

pub(super) async fn list(db: &SqliteDb, filter: OrderFilter, page: PageRequest) -> Result<(Vec<Order>, i64), StoreError> {
    let mut conn = db.read().await?;
    let user = match filter {
        OrderFilter::All => None,
        OrderFilter::User(user) => Some(user.to_string()),
    };
    // `$1 IS NULL` lets one statement serve both the admin's list and a user's.
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM orders WHERE ($1 IS NULL OR user_id = $1) ORDER BY id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(&user)
    .bind(i64::from(page.limit))
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE ($1 IS NULL OR user_id = $1)")
        .bind(&user)
        .fetch_one(&mut *conn)
        .await?;
    let orders = rows.into_iter().map(order_from_row).collect::<Result<_, _>>()?;
    Ok((orders, total))
}

/// The cancelled order (and its event, from `announce`, in the same
/// transaction) if it was `created`, else the order as it is (if any).
pub(super) async fn cancel(
    db: &SqliteDb,
    id: Uuid,
    now: OffsetDateTime,
    announce: &(dyn Fn(&Order) -> Result<Event, StoreError> + Sync),
) -> Result<(Option<Order>, Option<Order>), StoreError> {
    let mut tx: Transaction<'_, Sqlite> = db.writer().begin().await?;
    let updated: Option<OrderRow> = sqlx::query_as(&format!(
        "UPDATE orders SET status = 'cancelled', updated_at = $1
         WHERE id = $2 AND status = 'created' RETURNING {COLUMNS}"
    ))
    .bind(timestamp(now)?)
    .bind(id.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = updated {
        let order = order_from_row(row)?;
        outbox::sqlite::append_in(&mut tx, &announce(&order)?).await?;
        tx.commit().await?;
        return Ok((Some(order), None));
    }
    tx.rollback().await?;
    // Read through the writer: the reader pool may not see the latest commit yet.
    let current: Option<OrderRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(db.writer())
        .await?;
    Ok((None, current.map(order_from_row).transpose()?))
}

/// Records `event` and marks the order paid if it is `created`. Answers
/// whether the event was new, and the order's status after (if it exists).
pub(super) async fn mark_paid(
    db: &SqliteDb,
    event: &Event,
    order_id: Uuid,
    now: OffsetDateTime,
) -> Result<(bool, Option<String>), StoreError> {
    let mut tx: Transaction<'_, Sqlite> = db.writer().begin().await?;
    if !inbox::sqlite::record_in(&mut tx, event).await? {
        return Ok((false, None));
    }
    sqlx::query("UPDATE orders SET status = 'paid', updated_at = $1 WHERE id = $2 AND status = 'created'")
        .bind(timestamp(now)?)
        .bind(order_id.to_string())
        .execute(&mut *tx)
        .await?;
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
        .bind(order_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((true, status))
}

fn timestamp(t: OffsetDateTime) -> Result<String, StoreError> {
    t.to_offset(time::UtcOffset::UTC)
        .format(STORED_TIME)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn order_from_row(row: OrderRow) -> Result<Order, StoreError> {
    let (id, user_id, amount, currency, description, status, created_at, updated_at) = row;
    Ok(Order {
        user_id: Uuid::parse_str(&user_id).map_err(|_| corrupt(&id, "user_id", &user_id))?,
        amount,
        currency,
        description,
        status: parse_status(&id, &status)?,
        created_at: OffsetDateTime::parse(&created_at, &Rfc3339).map_err(|_| corrupt(&id, "created_at", &created_at))?,
        updated_at: OffsetDateTime::parse(&updated_at, &Rfc3339).map_err(|_| corrupt(&id, "updated_at", &updated_at))?,
        id: Uuid::parse_str(&id).map_err(|_| corrupt(&id, "id", &id))?,
    })
}
