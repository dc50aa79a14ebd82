//! The orders SQL written once for both backends ([`per_backend!`]): the
//! batch of writes around each backend's multi-row insert ([`OrderRows`],
//! in `sqlite.rs` and `postgres.rs`), cancelling, paying, and the reads.

use sqlx::Transaction;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    parse_status, CancelOutcome, CreateWrite, OrderRows, OrderWrite, OrderWritten, COLUMNS,
};
use crate::api::PageRequest;
use crate::events::inbox::InboxSql;
use crate::events::outbox::OutboxSql;
use crate::events::Event;
use crate::idempotency::IdempotencySql;
use crate::orders::model::{Order, OrderFilter};
use crate::storage::group_commit::Batch;
use crate::storage::sql::{per_backend, Dialect};
use crate::storage::StoreError;

per_backend! {
    /// A row of `orders`, in [`COLUMNS`] order.
    pub type OrderRow = (
        <DB as Dialect>::Id,
        <DB as Dialect>::Id,
        i64,
        String,
        Option<String>,
        String,
        <DB as Dialect>::Time,
        <DB as Dialect>::Time,
    );

    impl Batch<DB> for OrderWrite {
        type Output = OrderWritten;

        fn summary(&self) -> &'static str {
            match self {
                OrderWrite::Create { .. } => "INSERT orders",
                OrderWrite::Cancel { .. } => "UPDATE orders cancel",
                OrderWrite::MarkPaid { .. } => "UPDATE orders paid",
            }
        }

        async fn write(
            tx: &mut Transaction<'_, DB>,
            ops: &[Self],
        ) -> Result<Vec<OrderWritten>, StoreError> {
            insert_all(tx, &OrderWrite::creates(ops)).await?;
            let mut written = Vec::with_capacity(ops.len());
            for op in ops {
                written.push(match op {
                    OrderWrite::Create { .. } => OrderWritten::Created,
                    OrderWrite::Cancel {
                        id,
                        now,
                        request_id,
                        actor,
                        traceparent,
                    } => cancel_in(tx, *id, *now, request_id, *actor, traceparent).await?,
                    OrderWrite::MarkPaid {
                        event,
                        order_id,
                        now,
                    } => mark_paid_in(tx, event, *order_id, *now).await?,
                });
            }
            Ok(written)
        }
    }

    /// The orders, their events and their idempotency responses: one
    /// statement per table.
    async fn insert_all(
        tx: &mut Transaction<'_, DB>,
        creates: &[CreateWrite<'_>],
    ) -> Result<(), StoreError> {
        if creates.is_empty() {
            return Ok(());
        }
        let orders: Vec<&Order> = creates.iter().map(|(order, _, _)| *order).collect();
        DB::insert_orders(tx, &orders).await?;
        let events: Vec<&Event> = creates.iter().map(|(_, event, _)| *event).collect();
        DB::append_all_in(tx, &events).await?;
        for (_, _, response) in creates {
            if let Some((key, body)) = response {
                DB::complete_in(tx, key, 201, body).await?;
            }
        }
        Ok(())
    }

    /// Cancels the order if it is `created`, with its `order.cancelled`.
    async fn cancel_in(
        tx: &mut Transaction<'_, DB>,
        id: Uuid,
        now: OffsetDateTime,
        request_id: &str,
        actor: Uuid,
        traceparent: &Option<String>,
    ) -> Result<OrderWritten, StoreError> {
        let updated: Option<OrderRow> = sqlx::query_as(&format!(
            "UPDATE orders SET status = 'cancelled', updated_at = $1
             WHERE id = $2 AND status = 'created' RETURNING {COLUMNS}"
        ))
        .bind(DB::time(now)?)
        .bind(DB::id(id))
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(row) = updated {
            let order = order_from_row(row)?;
            let event = OrderWrite::cancelled(&order, request_id, actor)?
                .with_traceparent(traceparent.clone());
            DB::append_in(tx, &event).await?;
            return Ok(OrderWritten::Cancel(CancelOutcome::Cancelled(order)));
        }
        let current: Option<OrderRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
                .bind(DB::id(id))
                .fetch_optional(&mut **tx)
                .await?;
        Ok(OrderWritten::Cancel(match current {
            Some(row) => CancelOutcome::NotCancellable(order_from_row(row)?),
            None => CancelOutcome::NotFound,
        }))
    }

    /// Records `event` and marks the order paid if it is `created`.
    async fn mark_paid_in(
        tx: &mut Transaction<'_, DB>,
        event: &Event,
        order_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<OrderWritten, StoreError> {
        if !DB::record_in(tx, event).await? {
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
        .bind(DB::time(now)?)
        .bind(DB::id(order_id))
        .fetch_optional(&mut **tx)
        .await?;
        Ok(OrderWritten::MarkPaid {
            first_time: true,
            status,
        })
    }

    pub(in crate::orders::store) async fn get(db: &Db, id: Uuid) -> Result<Option<Order>, StoreError> {
        let mut conn = db.read().await?;
        let row: Option<OrderRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
                .bind(DB::id(id))
                .fetch_optional(&mut *conn)
                .await?;
        row.map(order_from_row).transpose()
    }

    /// One page of `filter`'s orders, newest first, and their total.
    pub(in crate::orders::store) async fn list(
        db: &Db,
        filter: OrderFilter,
        page: PageRequest,
    ) -> Result<(Vec<Order>, i64), StoreError> {
        let mut conn = db.read().await?;
        let user = match filter {
            OrderFilter::All => None,
            OrderFilter::User(user) => Some(DB::id(user)),
        };
        // `$1 IS NULL` lets one statement serve both the admin's list and a user's.
        let rows: Vec<OrderRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM orders WHERE ($1 IS NULL OR user_id = $1)
             ORDER BY id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(&user)
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .fetch_all(&mut *conn)
        .await?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE ($1 IS NULL OR user_id = $1)")
                .bind(&user)
                .fetch_one(&mut *conn)
                .await?;
        let orders = rows.into_iter().map(order_from_row).collect::<Result<_, _>>()?;
        Ok((orders, total))
    }

    pub fn order_from_row(row: OrderRow) -> Result<Order, StoreError> {
        let (id, user_id, amount, currency, description, status, created_at, updated_at) = row;
        let id = DB::read_id(id, "order id")?;
        let field = |name: &str| format!("order {id}: {name}");
        Ok(Order {
            user_id: DB::read_id(user_id, &field("user_id"))?,
            amount,
            currency,
            description,
            status: parse_status(&id.to_string(), &status)?,
            created_at: DB::read_time(created_at, &field("created_at"))?,
            updated_at: DB::read_time(updated_at, &field("updated_at"))?,
            id,
        })
    }
}
