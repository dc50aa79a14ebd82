//! The orders SQL on SQLite: ids and times stored as text (hyphenated UUIDs,
//! RFC 3339 with six fraction digits, so both sort as text); writes through
//! the single writer connection, reads through the reader pool.

use sqlx::{Sqlite, Transaction};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{corrupt, parse_status, CancelOutcome, CreateWrite, OrderWrite, OrderWritten, OrdersSql, COLUMNS};
use crate::api::PageRequest;
use crate::events::{inbox, outbox, Event};
use crate::idempotency;
use crate::orders::model::{Order, OrderFilter};
use crate::storage::sqlite::SqliteDb;
use crate::storage::StoreError;

const INSERT_ORDERS: &str = "INSERT INTO orders (id, user_id, amount, currency, description, status, created_at, updated_at)
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7
     FROM json_each($1)";

type OrderRow = (String, String, i64, String, Option<String>, String, String, String);

/// RFC 3339 with exactly six fraction digits, so stored times sort as text.
const STORED_TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

impl OrdersSql for Sqlite {
    /// The orders, their events and their idempotency responses: one statement
    /// per table (`json_each` stands in for PostgreSQL's array binds).
    async fn insert_all(
        tx: &mut Transaction<'static, Sqlite>,
        creates: &[CreateWrite<'_>],
    ) -> Result<(), StoreError> {
        if creates.is_empty() {
            return Ok(());
        }
        let rows = creates
            .iter()
            .map(|(order, _, _)| {
                Ok(serde_json::json!([
                    order.id.to_string(),
                    order.user_id.to_string(),
                    order.amount,
                    order.currency,
                    order.description,
                    order.status.as_str(),
                    timestamp(order.created_at)?,
                    timestamp(order.updated_at)?,
                ]))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        sqlx::query(INSERT_ORDERS)
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(&mut **tx)
            .await?;
        let events: Vec<&Event> = creates.iter().map(|(_, event, _)| *event).collect();
        outbox::sqlite::append_all_in(tx, &events).await?;
        for (_, _, response) in creates {
            if let Some((key, body)) = response {
                idempotency::sqlite::complete_in(tx, key, 201, body).await?;
            }
        }
        Ok(())
    }

    /// Cancels the order if it is `created`, with its `order.cancelled`.
    async fn cancel_in(
        tx: &mut Transaction<'static, Sqlite>,
        id: Uuid,
        now: OffsetDateTime,
        request_id: &str,
        actor: Uuid,
    ) -> Result<OrderWritten, StoreError> {
        let updated: Option<OrderRow> = sqlx::query_as(&format!(
            "UPDATE orders SET status = 'cancelled', updated_at = $1
             WHERE id = $2 AND status = 'created' RETURNING {COLUMNS}"
        ))
        .bind(timestamp(now)?)
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(row) = updated {
            let order = order_from_row(row)?;
            let event = OrderWrite::cancelled(&order, request_id, actor)?;
            outbox::sqlite::append_in(tx, &event).await?;
            return Ok(OrderWritten::Cancel(CancelOutcome::Cancelled(order)));
        }
        let current: Option<OrderRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
                .bind(id.to_string())
                .fetch_optional(&mut **tx)
                .await?;
        Ok(OrderWritten::Cancel(match current {
            Some(row) => CancelOutcome::NotCancellable(order_from_row(row)?),
            None => CancelOutcome::NotFound,
        }))
    }

    /// Records `event` and marks the order paid if it is `created`.
    async fn mark_paid_in(
        tx: &mut Transaction<'static, Sqlite>,
        event: &Event,
        order_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<OrderWritten, StoreError> {
        if !inbox::sqlite::record_in(tx, event).await? {
            return Ok(OrderWritten::MarkPaid {
                first_time: false,
                status: None,
            });
        }
        sqlx::query(
            "UPDATE orders SET status = 'paid', updated_at = $1 WHERE id = $2 AND status = 'created'",
        )
        .bind(timestamp(now)?)
        .bind(order_id.to_string())
        .execute(&mut **tx)
        .await?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
            .bind(order_id.to_string())
            .fetch_optional(&mut **tx)
            .await?;
        Ok(OrderWritten::MarkPaid {
            first_time: true,
            status,
        })
    }
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
