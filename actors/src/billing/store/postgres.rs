//! The billing SQL on PostgreSQL: native UUID and TIMESTAMPTZ columns, one
//! pool for reads and writes. Concurrent writers (workers, replicas) are
//! ordered by row locks: invoice creators queue on the counter row, pay and
//! void on the invoice's row.

use sqlx::{Acquire, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{parse_status, ApplyOutcome, Cause, PayOutcome, COLUMNS};
use crate::api::PageRequest;
use crate::billing::model::{invoice_number, Invoice, InvoiceFilter, InvoiceStatus, NUMBER_DIGITS};
use crate::events::{inbox, outbox, Event, Topic};
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

/// Applies `order.created`: records the event, then numbers and inserts
/// `invoice` unless the order has one, with `invoice.created`.
pub(super) async fn create(
    db: &PgDb,
    event: &Event,
    mut invoice: Invoice,
    prefix: &str,
    cause: Cause<'_>,
) -> Result<ApplyOutcome, StoreError> {
    let mut conn = db.acquire().await?;
    let mut tx: Transaction<'_, Postgres> = conn.begin().await?;
    // A concurrent delivery of the same event waits here for the first to
    // commit, then finds it recorded.
    if !inbox::postgres::record_in(&mut tx, event).await? {
        tx.rollback().await?;
        return Ok(ApplyOutcome::AlreadyApplied);
    }
    if let Some(existing) = by_order(&mut tx, invoice.order_id).await? {
        tx.commit().await?;
        return Ok(ApplyOutcome::AlreadyInvoiced(existing));
    }
    // The counter row's lock serialises invoice creators (gap-free numbers),
    // so it is taken as late as possible and held for three round trips:
    // this statement (number and insert at once), the outbox row, the commit.
    // Another creator for the same order (under another event id) that
    // committed meanwhile makes the insert do nothing: the transaction is
    // rolled back, which gives the number back, and the order's invoice is
    // the answer.
    let numbered: Option<(i64, String)> = sqlx::query_as(
        "WITH next AS (UPDATE invoice_counter SET last = last + 1 WHERE id = 1 RETURNING last)
         INSERT INTO invoices (id, seq, number, order_id, user_id, amount, currency, status, created_at)
         SELECT $1, next.last, $2 || lpad(next.last::text, greatest($3, length(next.last::text)), '0'),
                $4, $5, $6, $7, $8, $9
         FROM next
         ON CONFLICT (order_id) DO NOTHING
         RETURNING seq, number",
    )
    .bind(invoice.id)
    .bind(prefix)
    .bind(i32::try_from(NUMBER_DIGITS).unwrap_or(6))
    .bind(invoice.order_id)
    .bind(invoice.user_id)
    .bind(invoice.amount)
    .bind(&invoice.currency)
    .bind(invoice.status.as_str())
    .bind(invoice.created_at)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((seq, number)) = numbered else {
        tx.rollback().await?;
        let existing = get(db, "order_id", invoice.order_id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("order {} conflicted but has no invoice", invoice.order_id))
        })?;
        return Ok(ApplyOutcome::AlreadyInvoiced(existing));
    };
    debug_assert_eq!(number, invoice_number(prefix, seq));
    invoice.number = number;
    outbox::postgres::append_in(&mut tx, &cause.announce(Topic::InvoiceCreated, &invoice)?).await?;
    tx.commit().await?;
    Ok(ApplyOutcome::Invoiced(invoice))
}

/// Applies `order.cancelled`: records the event and voids the order's open
/// invoice, with `invoice.voided`. `None`, with nothing recorded, when the
/// order has no invoice yet.
pub(super) async fn void(
    db: &PgDb,
    event: &Event,
    order_id: Uuid,
    now: OffsetDateTime,
    cause: Cause<'_>,
) -> Result<Option<ApplyOutcome>, StoreError> {
    let mut conn = db.acquire().await?;
    let mut tx: Transaction<'_, Postgres> = conn.begin().await?;
    if !inbox::postgres::record_in(&mut tx, event).await? {
        tx.rollback().await?;
        return Ok(Some(ApplyOutcome::AlreadyApplied));
    }
    // The row lock orders this against a concurrent pay of the same invoice.
    let Some(current) = locked_by_order(&mut tx, order_id).await? else {
        // Not recorded: the bus tries again, and finds the invoice once
        // `order.created` has been applied.
        tx.rollback().await?;
        return Ok(None);
    };
    let outcome = match current.status {
        InvoiceStatus::Open => {
            let row: InvoiceRow = sqlx::query_as(&format!(
                "UPDATE invoices SET status = 'void', voided_at = $1 WHERE id = $2 RETURNING {COLUMNS}"
            ))
            .bind(now)
            .bind(current.id)
            .fetch_one(&mut *tx)
            .await?;
            let voided = invoice_from_row(row)?;
            outbox::postgres::append_in(&mut tx, &cause.announce(Topic::InvoiceVoided, &voided)?)
                .await?;
            ApplyOutcome::Voided(voided)
        }
        InvoiceStatus::Paid => ApplyOutcome::RefundNeeded(current),
        InvoiceStatus::Void => ApplyOutcome::AlreadyVoid(current),
    };
    tx.commit().await?;
    Ok(Some(outcome))
}

/// Pays the invoice if it is `open`, with `invoice.paid`.
pub(super) async fn pay(
    db: &PgDb,
    id: Uuid,
    now: OffsetDateTime,
    cause: Cause<'_>,
) -> Result<PayOutcome, StoreError> {
    let mut conn = db.acquire().await?;
    let mut tx: Transaction<'_, Postgres> = conn.begin().await?;
    // The row lock makes two concurrent payments (or a payment and a void)
    // take turns: the second sees the first's outcome.
    let current: Option<InvoiceRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(current) = current.map(invoice_from_row).transpose()? else {
        tx.rollback().await?;
        return Ok(PayOutcome::NotFound);
    };
    if current.status != InvoiceStatus::Open {
        tx.rollback().await?;
        return Ok(PayOutcome::NotPayable(current));
    }
    let row: InvoiceRow = sqlx::query_as(&format!(
        "UPDATE invoices SET status = 'paid', paid_at = $1 WHERE id = $2 RETURNING {COLUMNS}"
    ))
    .bind(now)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let paid = invoice_from_row(row)?;
    outbox::postgres::append_in(&mut tx, &cause.announce(Topic::InvoicePaid, &paid)?).await?;
    tx.commit().await?;
    Ok(PayOutcome::Paid(paid))
}

/// The order's invoice, as this transaction sees it.
async fn by_order(
    tx: &mut Transaction<'_, Postgres>,
    order_id: Uuid,
) -> Result<Option<Invoice>, StoreError> {
    let row: Option<InvoiceRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(invoice_from_row).transpose()
}

/// The order's invoice, its row locked until the transaction ends.
async fn locked_by_order(
    tx: &mut Transaction<'_, Postgres>,
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
