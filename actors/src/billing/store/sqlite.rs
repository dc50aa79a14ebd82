//! The billing SQL on SQLite: ids and times stored as text (hyphenated UUIDs,
//! RFC 3339 with six fraction digits, so both sort as text); writes through
//! the single writer connection, reads through the reader pool. The single
//! writer is also what serializes invoice creators: a transaction that finds
//! no invoice for its order and takes the next number cannot interleave with
//! another one.

use sqlx::{Sqlite, Transaction};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{corrupt, parse_status, ApplyOutcome, Cause, PayOutcome, COLUMNS};
use crate::api::PageRequest;
use crate::billing::model::{invoice_number, Invoice, InvoiceFilter, InvoiceStatus};
use crate::events::{inbox, outbox, Event, Topic};
use crate::storage::sqlite::SqliteDb;
use crate::storage::StoreError;

type InvoiceRow = (
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

/// RFC 3339 with exactly six fraction digits, so stored times sort as text.
const STORED_TIME: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

/// The invoice whose `column` (`id` or `order_id`) is `value`.
pub(super) async fn get(
    db: &SqliteDb,
    column: &'static str,
    value: Uuid,
) -> Result<Option<Invoice>, StoreError> {
    let mut conn = db.read().await?;
    let row: Option<InvoiceRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE {column} = $1"
    ))
    .bind(value.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(invoice_from_row).transpose()
}

pub(super) async fn list(
    db: &SqliteDb,
    filter: InvoiceFilter,
    page: PageRequest,
) -> Result<(Vec<Invoice>, i64), StoreError> {
    let mut conn = db.read().await?;
    let user = match filter {
        InvoiceFilter::All => None,
        InvoiceFilter::User(user) => Some(user.to_string()),
    };
    // `$1 IS NULL` lets one statement serve both the admin's list and a user's.
    let rows: Vec<InvoiceRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE ($1 IS NULL OR user_id = $1) ORDER BY id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(&user)
    .bind(i64::from(page.limit))
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM invoices WHERE ($1 IS NULL OR user_id = $1)")
            .bind(&user)
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
    db: &SqliteDb,
    event: &Event,
    mut invoice: Invoice,
    prefix: &str,
    cause: Cause<'_>,
) -> Result<ApplyOutcome, StoreError> {
    let mut tx: Transaction<'_, Sqlite> = db.writer().begin().await?;
    if !inbox::sqlite::record_in(&mut tx, event).await? {
        tx.rollback().await?;
        return Ok(ApplyOutcome::AlreadyApplied);
    }
    // Another event named this order before: one invoice per order.
    if let Some(existing) = by_order_in(&mut tx, invoice.order_id).await? {
        tx.commit().await?;
        return Ok(ApplyOutcome::AlreadyInvoiced(existing));
    }
    let seq: i64 = sqlx::query_scalar(
        "UPDATE invoice_counter SET last = last + 1 WHERE id = 1 RETURNING last",
    )
    .fetch_one(&mut *tx)
    .await?;
    invoice.number = invoice_number(prefix, seq);
    sqlx::query(
        "INSERT INTO invoices (id, seq, number, order_id, user_id, amount, currency, status, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(invoice.id.to_string())
    .bind(seq)
    .bind(&invoice.number)
    .bind(invoice.order_id.to_string())
    .bind(invoice.user_id.to_string())
    .bind(invoice.amount)
    .bind(&invoice.currency)
    .bind(invoice.status.as_str())
    .bind(timestamp(invoice.created_at)?)
    .execute(&mut *tx)
    .await?;
    outbox::sqlite::append_in(&mut tx, &cause.announce(Topic::InvoiceCreated, &invoice)?).await?;
    tx.commit().await?;
    Ok(ApplyOutcome::Invoiced(invoice))
}

/// Applies `order.cancelled`: records the event and voids the order's open
/// invoice, with `invoice.voided`. `None`, with nothing recorded, when the
/// order has no invoice yet.
pub(super) async fn void(
    db: &SqliteDb,
    event: &Event,
    order_id: Uuid,
    now: OffsetDateTime,
    cause: Cause<'_>,
) -> Result<Option<ApplyOutcome>, StoreError> {
    let mut tx: Transaction<'_, Sqlite> = db.writer().begin().await?;
    if !inbox::sqlite::record_in(&mut tx, event).await? {
        tx.rollback().await?;
        return Ok(Some(ApplyOutcome::AlreadyApplied));
    }
    let Some(current) = by_order_in(&mut tx, order_id).await? else {
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
            .bind(timestamp(now)?)
            .bind(current.id.to_string())
            .fetch_one(&mut *tx)
            .await?;
            let voided = invoice_from_row(row)?;
            outbox::sqlite::append_in(&mut tx, &cause.announce(Topic::InvoiceVoided, &voided)?)
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
    db: &SqliteDb,
    id: Uuid,
    now: OffsetDateTime,
    cause: Cause<'_>,
) -> Result<PayOutcome, StoreError> {
    let mut tx: Transaction<'_, Sqlite> = db.writer().begin().await?;
    let current: Option<InvoiceRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM invoices WHERE id = $1"))
            .bind(id.to_string())
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
    .bind(timestamp(now)?)
    .bind(id.to_string())
    .fetch_one(&mut *tx)
    .await?;
    let paid = invoice_from_row(row)?;
    outbox::sqlite::append_in(&mut tx, &cause.announce(Topic::InvoicePaid, &paid)?).await?;
    tx.commit().await?;
    Ok(PayOutcome::Paid(paid))
}

/// The order's invoice, read inside the writer's transaction (the reader
/// pool may not see the latest commit yet).
async fn by_order_in(
    tx: &mut Transaction<'_, Sqlite>,
    order_id: Uuid,
) -> Result<Option<Invoice>, StoreError> {
    let row: Option<InvoiceRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE order_id = $1"
    ))
    .bind(order_id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    row.map(invoice_from_row).transpose()
}

fn timestamp(t: OffsetDateTime) -> Result<String, StoreError> {
    t.to_offset(time::UtcOffset::UTC)
        .format(STORED_TIME)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_time(id: &str, what: &str, value: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|_| corrupt(id, what, value))
}

fn parse_uuid(id: &str, what: &str, value: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(value).map_err(|_| corrupt(id, what, value))
}

fn invoice_from_row(row: InvoiceRow) -> Result<Invoice, StoreError> {
    let (id, number, order_id, user_id, amount, currency, status, created_at, paid_at, voided_at) =
        row;
    Ok(Invoice {
        number,
        order_id: parse_uuid(&id, "order_id", &order_id)?,
        user_id: parse_uuid(&id, "user_id", &user_id)?,
        amount,
        currency,
        status: parse_status(&id, &status)?,
        created_at: parse_time(&id, "created_at", &created_at)?,
        paid_at: paid_at
            .map(|t| parse_time(&id, "paid_at", &t))
            .transpose()?,
        voided_at: voided_at
            .map(|t| parse_time(&id, "voided_at", &t))
            .transpose()?,
        id: parse_uuid(&id, "id", &id)?,
    })
}
