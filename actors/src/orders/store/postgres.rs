//! The orders SQL on PostgreSQL: native UUID and TIMESTAMPTZ columns, one
//! pool for reads and writes (the server handles concurrent writers).

use sqlx::{Acquire, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{parse_status, COLUMNS};
use crate::api::PageRequest;
use crate::events::{inbox, outbox, Event};
use crate::idempotency::{self, IdempotencyKey};
use crate::orders::model::{Order, OrderFilter};
use crate::storage::postgres::PgDb;
use crate::storage::StoreError;

const INSERT_ORDER: &str = "INSERT INTO orders (id, user_id, amount, currency, description, status, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

type OrderRow = (Uuid, Uuid, i64, String, Option<String>, String, OffsetDateTime, OffsetDateTime);

pub(super) async fn insert(
    db: &PgDb,
    order: &Order,
    response: Option<(&IdempotencyKey, &[u8])>,
    event: &Event,
) -> Result<(), StoreError> {
    let mut conn = db.acquire().await?;
    let mut tx: Transaction<'_, Postgres> = conn.begin().await?;
    insert_order(order).execute(&mut *tx).await?;
    outbox::postgres::append_in(&mut tx, event).await?;
    if let Some((key, body)) = response {
        idempotency::postgres::complete_in(&mut tx, key, 201, body).await?;
    }
    tx.commit().await?;
    Ok(())
}

fn insert_order(order: &Order) -> sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(INSERT_ORDER)
        .bind(order.id)
        .bind(order.user_id)
        .bind(order.amount)
        .bind(order.currency.clone())
        .bind(order.description.clone())
        .bind(order.status.as_str())
        .bind(order.created_at)
        .bind(order.updated_at)
}

pub(super) async fn get(db: &PgDb, id: Uuid) -> Result<Option<Order>, StoreError> {
    let mut conn = db.acquire().await?;
    let row: Option<OrderRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(order_from_row).transpose()
}

pub(super) async fn list(db: &PgDb, filter: OrderFilter, page: PageRequest) -> Result<(Vec<Order>, i64), StoreError> {
    let mut conn = db.acquire().await?;
    let user = match filter {
        OrderFilter::All => None,
        OrderFilter::User(user) => Some(user),
    };
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM orders WHERE ($1::uuid IS NULL OR user_id = $1) ORDER BY id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(user)
    .bind(i64::from(page.limit))
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE ($1::uuid IS NULL OR user_id = $1)")
        .bind(user)
        .fetch_one(&mut *conn)
        .await?;
    let orders = rows.into_iter().map(order_from_row).collect::<Result<_, _>>()?;
    Ok((orders, total))
}

/// The cancelled order (and its event, from `announce`, in the same
/// transaction) if it was `created`, else the order as it is (if any).
pub(super) async fn cancel(
    db: &PgDb,
    id: Uuid,
    now: OffsetDateTime,
    announce: &(dyn Fn(&Order) -> Result<Event, StoreError> + Sync),
) -> Result<(Option<Order>, Option<Order>), StoreError> {
    let mut conn = db.acquire().await?;
    let mut tx: Transaction<'_, Postgres> = conn.begin().await?;
    let updated: Option<OrderRow> = sqlx::query_as(&format!(
        "UPDATE orders SET status = 'cancelled', updated_at = $1
         WHERE id = $2 AND status = 'created' RETURNING {COLUMNS}"
    ))
    .bind(now)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = updated {
        let order = order_from_row(row)?;
        outbox::postgres::append_in(&mut tx, &announce(&order)?).await?;
        tx.commit().await?;
        return Ok((Some(order), None));
    }
    tx.rollback().await?;
    let current: Option<OrderRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok((None, current.map(order_from_row).transpose()?))
}

/// Records `event` and marks the order paid if it is `created`. Answers
/// whether the event was new, and the order's status after (if it exists).
pub(super) async fn mark_paid(
    db: &PgDb,
    event: &Event,
    order_id: Uuid,
    now: OffsetDateTime,
) -> Result<(bool, Option<String>), StoreError> {
    let mut conn = db.acquire().await?;
    let mut tx: Transaction<'_, Postgres> = conn.begin().await?;
    if !inbox::postgres::record_in(&mut tx, event).await? {
        return Ok((false, None));
    }
    let status: Option<String> = sqlx::query_scalar(
        "UPDATE orders SET status = CASE WHEN status = 'created' THEN 'paid' ELSE status END,
                updated_at = CASE WHEN status = 'created' THEN $1 ELSE updated_at END
         WHERE id = $2 RETURNING status",
    )
    .bind(now)
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((true, status))
}

fn order_from_row(row: OrderRow) -> Result<Order, StoreError> {
    let (id, user_id, amount, currency, description, status, created_at, updated_at) = row;
    Ok(Order {
        status: parse_status(&id.to_string(), &status)?,
        id,
        user_id,
        amount,
        currency,
        description,
        created_at,
        updated_at,
    })
}
