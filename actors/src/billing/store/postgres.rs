//! The billing SQL on PostgreSQL: native UUID and TIMESTAMPTZ columns, one
//! pool for reads and writes. Concurrent writers (workers, replicas) are
//! ordered by row locks: invoice creators queue on the counter row, pay and
//! void on the invoice's row.

use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    parse_status, ApplyOutcome, BillingSql, BillingWrite, Cause, InvoiceWrite, PayOutcome,
    COLUMNS,
};
use crate::api::PageRequest;
use crate::billing::model::{Invoice, InvoiceFilter, InvoiceStatus};
use crate::events::inbox::InboxSql;
use crate::events::outbox::OutboxSql;
use crate::events::{Event, Topic};
use crate::storage::postgres::PgDb;
use crate::storage::StoreError;

type InvoiceRow = (
    Uuid,
    String,
    Uuid,
    Uuid,
    i64,
    String,
    String,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
);

/// The invoice whose `column` (`id` or `order_id`) is `value`.
pub(super) async fn get(
    db: &PgDb,
    column: &'static str,
    value: Uuid,
) -> Result<Option<Invoice>, StoreError> {
    let mut conn = db.acquire().await?;
    let row: Option<InvoiceRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE {column} = $1"
    ))
    .bind(value)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(invoice_from_row).transpose()
}

pub(super) async fn list(
    db: &PgDb,
    filter: InvoiceFilter,
    page: PageRequest,
) -> Result<(Vec<Invoice>, i64), StoreError> {
    let mut conn = db.acquire().await?;
    let user = match filter {
        InvoiceFilter::All => None,
        InvoiceFilter::User(user) => Some(user),
    };
    let rows: Vec<InvoiceRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE ($1::uuid IS NULL OR user_id = $1) ORDER BY id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(user)
    .bind(i64::from(page.limit))
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM invoices WHERE ($1::uuid IS NULL OR user_id = $1)",
    )
    .bind(user)
    .fetch_one(&mut *conn)
    .await?;
    let invoices = rows
        .into_iter()
        .map(invoice_from_row)
        .collect::<Result<_, _>>()?;
    Ok((invoices, total))
}

impl BillingSql for Postgres {
    /// Applies a batch's `order.created` events: records them (one statement;
    /// a concurrent delivery of the same event waits here for the first to
    /// commit, then finds it recorded), then, holding the counter row's lock,
    /// reads the invoices their orders have, inserts the new invoices numbered
    /// on from the counter, moves the counter, and appends their
    /// `invoice.created` (one statement each). The lock orders all invoice
    /// creators, replicas included: numbers stay gap-free and unique, and no
    /// other creator can invoice one of these orders in between. Taken once per
    /// batch, it is held for five round trips however many invoices the batch has.
    async fn invoice_all(
        tx: &mut Transaction<'static, Postgres>,
        invoices: &[InvoiceWrite<'_>],
    ) -> Result<Vec<ApplyOutcome>, StoreError> {
        if invoices.is_empty() {
            return Ok(Vec::new());
        }
        let events: Vec<&Event> = invoices.iter().map(|(event, _, _)| *event).collect();
        let fresh = Postgres::record_all_in(tx, &events).await?;
        if fresh.is_empty() {
            return Ok(vec![ApplyOutcome::AlreadyApplied; invoices.len()]);
        }
        let last: i64 = sqlx::query_scalar("SELECT last FROM invoice_counter WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut **tx)
            .await?;
        let orders: Vec<Uuid> = invoices
            .iter()
            .filter(|(event, _, _)| fresh.contains(&event.id))
            .map(|(_, invoice, _)| invoice.order_id)
            .collect();
        // `IN (SELECT unnest(…))`, not `= ANY(…)`: the plan PostgreSQL caches
        // for a prepared `= ANY` can be a scan comparing every row with the
        // array (seen in bench/: most of the server's CPU); a semi-join on the
        // unnested array keeps to the index.
        let rows: Vec<InvoiceRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM invoices WHERE order_id IN (SELECT unnest($1::uuid[]))"
        ))
        .bind(&orders)
        .fetch_all(&mut **tx)
        .await?;
        let existing = rows
            .into_iter()
            .map(|row| invoice_from_row(row).map(|i| (i.order_id, i)))
            .collect::<Result<_, _>>()?;
        let plan = BillingWrite::plan(invoices, &fresh, existing, last);
        if plan.new.is_empty() {
            return Ok(plan.outcomes);
        }
        let new = || plan.new.iter().map(|(_, invoice)| invoice);
        sqlx::query(
            "INSERT INTO invoices (id, seq, number, order_id, user_id, amount, currency, status, created_at)
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::uuid[], $5::uuid[],
                                  $6::bigint[], $7::text[], $8::text[], $9::timestamptz[])",
        )
        .bind(new().map(|i| i.id).collect::<Vec<_>>())
        .bind((last + 1..).take(plan.new.len()).collect::<Vec<i64>>())
        .bind(new().map(|i| i.number.as_str()).collect::<Vec<_>>())
        .bind(new().map(|i| i.order_id).collect::<Vec<_>>())
        .bind(new().map(|i| i.user_id).collect::<Vec<_>>())
        .bind(new().map(|i| i.amount).collect::<Vec<_>>())
        .bind(new().map(|i| i.currency.as_str()).collect::<Vec<_>>())
        .bind(new().map(|i| i.status.as_str()).collect::<Vec<_>>())
        .bind(new().map(|i| i.created_at).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
        sqlx::query("UPDATE invoice_counter SET last = $1 WHERE id = 1")
            .bind(last + plan.new.len() as i64)
            .execute(&mut **tx)
            .await?;
        let announced = plan
            .new
            .iter()
            .map(|(event, invoice)| BillingWrite::announce(event, Topic::InvoiceCreated, invoice))
            .collect::<Result<Vec<_>, _>>()?;
        Postgres::append_all_in(tx, &announced.iter().collect::<Vec<_>>()).await?;
        Ok(plan.outcomes)
    }

    /// Applies `order.cancelled`: voids the order's open invoice with
    /// `invoice.voided`, and records the event. `None`, with nothing written,
    /// when the order has no invoice yet (the bus tries again later).
    async fn void_in(
        tx: &mut Transaction<'static, Postgres>,
        event: &Event,
        order_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<ApplyOutcome>, StoreError> {
        // The row lock orders this against a concurrent pay of the same invoice.
        let Some(current) = locked_by_order(tx, order_id).await? else {
            return Ok(None);
        };
        if !Postgres::record_in(tx, event).await? {
            return Ok(Some(ApplyOutcome::AlreadyApplied));
        }
        Ok(Some(match current.status {
            InvoiceStatus::Open => {
                let row: InvoiceRow = sqlx::query_as(&format!(
                    "UPDATE invoices SET status = 'void', voided_at = $1 WHERE id = $2 RETURNING {COLUMNS}"
                ))
                .bind(now)
                .bind(current.id)
                .fetch_one(&mut **tx)
                .await?;
                let voided = invoice_from_row(row)?;
                let announced = BillingWrite::announce(event, Topic::InvoiceVoided, &voided)?;
                Postgres::append_in(tx, &announced).await?;
                ApplyOutcome::Voided(voided)
            }
            InvoiceStatus::Paid => ApplyOutcome::RefundNeeded(current),
            InvoiceStatus::Void => ApplyOutcome::AlreadyVoid(current),
        }))
    }

    /// Pays the invoice if it is `open`, with `invoice.paid`.
    async fn pay_in(
        tx: &mut Transaction<'static, Postgres>,
        id: Uuid,
        now: OffsetDateTime,
        request_id: &str,
        actor_id: Uuid,
    ) -> Result<PayOutcome, StoreError> {
        // The row lock makes two concurrent payments (or a payment and a void)
        // take turns: the second sees the first's outcome.
        let current: Option<InvoiceRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM invoices WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(current) = current.map(invoice_from_row).transpose()? else {
            return Ok(PayOutcome::NotFound);
        };
        if current.status != InvoiceStatus::Open {
            return Ok(PayOutcome::NotPayable(current));
        }
        let row: InvoiceRow = sqlx::query_as(&format!(
            "UPDATE invoices SET status = 'paid', paid_at = $1 WHERE id = $2 RETURNING {COLUMNS}"
        ))
        .bind(now)
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
        let paid = invoice_from_row(row)?;
        let cause = Cause {
            request_id: Some(request_id),
            actor_id: Some(actor_id),
        };
        Postgres::append_in(tx, &cause.announce(Topic::InvoicePaid, &paid)?).await?;
        Ok(PayOutcome::Paid(paid))
    }
}

/// The order's invoice, its row locked until the transaction ends.
async fn locked_by_order(
    tx: &mut Transaction<'static, Postgres>,
    order_id: Uuid,
) -> Result<Option<Invoice>, StoreError> {
    let row: Option<InvoiceRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE order_id = $1 FOR UPDATE"
    ))
    .bind(order_id)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(invoice_from_row).transpose()
}

fn invoice_from_row(row: InvoiceRow) -> Result<Invoice, StoreError> {
    let (id, number, order_id, user_id, amount, currency, status, created_at, paid_at, voided_at) =
        row;
    Ok(Invoice {
        status: parse_status(&id.to_string(), &status)?,
        id,
        number,
        order_id,
        user_id,
        amount,
        currency,
        created_at,
        paid_at,
        voided_at,
    })
}
