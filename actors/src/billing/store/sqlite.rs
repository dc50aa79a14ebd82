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

use super::{
    corrupt, parse_status, ApplyOutcome, BillingSql, BillingWrite, Cause, InvoiceWrite,
    PayOutcome, COLUMNS,
};
use crate::api::PageRequest;
use crate::billing::model::{Invoice, InvoiceFilter, InvoiceStatus};
use crate::events::inbox::InboxSql;
use crate::events::outbox::OutboxSql;
use crate::events::{Event, Topic};
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

impl BillingSql for Sqlite {
    /// Applies a batch's `order.created` events: records them (one statement),
    /// reads the invoices their orders have (one), bumps the counter once and
    /// inserts the new invoices and their `invoice.created` (one each). The
    /// single writer connection keeps other creators out meanwhile.
    async fn invoice_all(
        tx: &mut Transaction<'static, Sqlite>,
        invoices: &[InvoiceWrite<'_>],
    ) -> Result<Vec<ApplyOutcome>, StoreError> {
        if invoices.is_empty() {
            return Ok(Vec::new());
        }
        let events: Vec<&Event> = invoices.iter().map(|(event, _, _)| *event).collect();
        let fresh = Sqlite::record_all_in(tx, &events).await?;
        let orders: Vec<String> = invoices
            .iter()
            .filter(|(event, _, _)| fresh.contains(&event.id))
            .map(|(_, invoice, _)| invoice.order_id.to_string())
            .collect();
        let rows: Vec<InvoiceRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM invoices WHERE order_id IN (SELECT value FROM json_each($1))"
        ))
        .bind(json_list(&orders)?)
        .fetch_all(&mut **tx)
        .await?;
        let existing = rows
            .into_iter()
            .map(|row| invoice_from_row(row).map(|i| (i.order_id, i)))
            .collect::<Result<_, _>>()?;
        let last: i64 = sqlx::query_scalar("SELECT last FROM invoice_counter WHERE id = 1")
            .fetch_one(&mut **tx)
            .await?;
        let plan = BillingWrite::plan(invoices, &fresh, existing, last);
        if plan.new.is_empty() {
            return Ok(plan.outcomes);
        }
        let rows = plan
            .new
            .iter()
            .zip(last + 1..)
            .map(|((_, invoice), seq)| {
                Ok(serde_json::json!([
                    invoice.id.to_string(),
                    seq,
                    invoice.number,
                    invoice.order_id.to_string(),
                    invoice.user_id.to_string(),
                    invoice.amount,
                    invoice.currency,
                    invoice.status.as_str(),
                    timestamp(invoice.created_at)?,
                ]))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        sqlx::query(
            "INSERT INTO invoices (id, seq, number, order_id, user_id, amount, currency, status, created_at)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
                    value ->> 6, value ->> 7, value ->> 8
             FROM json_each($1)",
        )
        .bind(serde_json::Value::Array(rows).to_string())
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
        Sqlite::append_all_in(tx, &announced.iter().collect::<Vec<_>>()).await?;
        Ok(plan.outcomes)
    }

    /// Applies `order.cancelled`: voids the order's open invoice with
    /// `invoice.voided`, and records the event. `None`, with nothing written,
    /// when the order has no invoice yet (the bus tries again later).
    async fn void_in(
        tx: &mut Transaction<'static, Sqlite>,
        event: &Event,
        order_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<ApplyOutcome>, StoreError> {
        let Some(current) = by_order_in(tx, order_id).await? else {
            return Ok(None);
        };
        if !Sqlite::record_in(tx, event).await? {
            return Ok(Some(ApplyOutcome::AlreadyApplied));
        }
        Ok(Some(match current.status {
            InvoiceStatus::Open => {
                let row: InvoiceRow = sqlx::query_as(&format!(
                    "UPDATE invoices SET status = 'void', voided_at = $1 WHERE id = $2 RETURNING {COLUMNS}"
                ))
                .bind(timestamp(now)?)
                .bind(current.id.to_string())
                .fetch_one(&mut **tx)
                .await?;
                let voided = invoice_from_row(row)?;
                let announced = BillingWrite::announce(event, Topic::InvoiceVoided, &voided)?;
                Sqlite::append_in(tx, &announced).await?;
                ApplyOutcome::Voided(voided)
            }
            InvoiceStatus::Paid => ApplyOutcome::RefundNeeded(current),
            InvoiceStatus::Void => ApplyOutcome::AlreadyVoid(current),
        }))
    }

    /// Pays the invoice if it is `open`, with `invoice.paid`.
    async fn pay_in(
        tx: &mut Transaction<'static, Sqlite>,
        id: Uuid,
        now: OffsetDateTime,
        request_id: &str,
        actor_id: Uuid,
    ) -> Result<PayOutcome, StoreError> {
        let current: Option<InvoiceRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM invoices WHERE id = $1"))
                .bind(id.to_string())
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
        .bind(timestamp(now)?)
        .bind(id.to_string())
        .fetch_one(&mut **tx)
        .await?;
        let paid = invoice_from_row(row)?;
        let cause = Cause {
            request_id: Some(request_id),
            actor_id: Some(actor_id),
        };
        Sqlite::append_in(tx, &cause.announce(Topic::InvoicePaid, &paid)?).await?;
        Ok(PayOutcome::Paid(paid))
    }
}

fn json_list(values: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(values).map_err(|e| StoreError::Corrupt(e.to_string()))
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
