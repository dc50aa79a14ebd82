//! The orders SQL on PostgreSQL: native UUID and TIMESTAMPTZ columns, one
//! pool for reads and writes (the server handles concurrent writers).

use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{parse_status, CancelOutcome, CreateWrite, OrderWrite, OrderWritten, OrdersSql, COLUMNS};
use crate::api::PageRequest;
use crate::events::{inbox, outbox, Event};
use crate::idempotency;
use crate::orders::model::{Order, OrderFilter};
use crate::storage::postgres::PgDb;
use crate::storage::StoreError;

const INSERT_ORDERS: &str = "INSERT INTO orders (id, user_id, amount, currency, description, status, created_at, updated_at)
     SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                          $7::timestamptz[], $8::timestamptz[])";

type OrderRow = (Uuid, Uuid, i64, String, Option<String>, String, OffsetDateTime, OffsetDateTime);

impl OrdersSql for Postgres {
    /// The orders, their events and their idempotency responses: one statement
    /// per table (array binds).
    async fn insert_all(
        tx: &mut Transaction<'static, Postgres>,
        creates: &[CreateWrite<'_>],
    ) -> Result<(), StoreError> {
        if creates.is_empty() {
            return Ok(());
        }
        let orders = || creates.iter().map(|(order, _, _)| *order);
        sqlx::query(INSERT_ORDERS)
            .bind(orders().map(|o| o.id).collect::<Vec<_>>())
            .bind(orders().map(|o| o.user_id).collect::<Vec<_>>())
            .bind(orders().map(|o| o.amount).collect::<Vec<_>>())
            .bind(orders().map(|o| o.currency.as_str()).collect::<Vec<_>>())
            .bind(orders().map(|o| o.description.as_deref()).collect::<Vec<_>>())
            .bind(orders().map(|o| o.status.as_str()).collect::<Vec<_>>())
            .bind(orders().map(|o| o.created_at).collect::<Vec<_>>())
            .bind(orders().map(|o| o.updated_at).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        let events: Vec<&Event> = creates.iter().map(|(_, event, _)| *event).collect();
        outbox::postgres::append_all_in(tx, &events).await?;
        for (_, _, response) in creates {
            if let Some((key, body)) = response {
                idempotency::postgres::complete_in(tx, key, 201, body).await?;
            }
        }
        Ok(())
    }

    /// Cancels the order if it is `created`, with its `order.cancelled`.
    async fn cancel_in(
        tx: &mut Transaction<'static, Postgres>,
        id: Uuid,
        now: OffsetDateTime,
        request_id: &str,
        actor: Uuid,
    ) -> Result<OrderWritten, StoreError> {
        let updated: Option<OrderRow> = sqlx::query_as(&format!(
            "UPDATE orders SET status = 'cancelled', updated_at = $1
             WHERE id = $2 AND status = 'created' RETURNING {COLUMNS}"
        ))
        .bind(now)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(row) = updated {
            let order = order_from_row(row)?;
            let event = OrderWrite::cancelled(&order, request_id, actor)?;
            outbox::postgres::append_in(tx, &event).await?;
            return Ok(OrderWritten::Cancel(CancelOutcome::Cancelled(order)));
        }
        let current: Option<OrderRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
        Ok(OrderWritten::Cancel(match current {
            Some(row) => CancelOutcome::NotCancellable(order_from_row(row)?),
            None => CancelOutcome::NotFound,
        }))
    }

    /// Records `event` and marks the order paid if it is `created`.
    async fn mark_paid_in(
        tx: &mut Transaction<'static, Postgres>,
        event: &Event,
        order_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<OrderWritten, StoreError> {
        if !inbox::postgres::record_in(tx, event).await? {
            return Ok(OrderWritten::MarkPaid {
                first_time: false,
                status: None,
            });
        }
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE orders SET status = CASE WHEN status = 'created' THEN 'paid' ELSE status END,
                    updated_at = CASE WHEN status = 'created' THEN $1 ELSE updated_at END
             WHERE id = $2 RETURNING status",
        )
        .bind(now)
        .bind(order_id)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(OrderWritten::MarkPaid {
            first_time: true,
            status,
        })
    }
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
