//! The billing SQL written once for both backends ([`per_backend!`]): the
//! batch of writes around each backend's invoicing of `order.created`
//! events ([`BillingSql`], in `sqlite.rs` and `postgres.rs`), voiding,
//! paying and the reads. On PostgreSQL the rows a void or a payment reads
//! are locked (`DB::FOR_UPDATE`), so two of them on one invoice, from any
//! replica, take turns; on SQLite the single writer connection does that.

use sqlx::Transaction;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    parse_status, ApplyOutcome, BillingSql, BillingWrite, BillingWritten, Cause, PayOutcome,
    COLUMNS,
};
use crate::api::PageRequest;
use crate::billing::model::{Invoice, InvoiceFilter, InvoiceStatus};
use crate::billing::topics;
use crate::events::inbox::InboxSql;
use crate::events::outbox::OutboxSql;
use crate::events::Event;
use crate::storage::group_commit::Batch;
use crate::storage::sql::{per_backend, Dialect};
use crate::storage::StoreError;

per_backend! {
    /// A row of `invoices`, in [`COLUMNS`] order.
    pub type InvoiceRow = (
        <DB as Dialect>::Id,
        String,
        <DB as Dialect>::Id,
        <DB as Dialect>::Id,
        i64,
        String,
        String,
        <DB as Dialect>::Time,
        Option<<DB as Dialect>::Time>,
        Option<<DB as Dialect>::Time>,
        Option<<DB as Dialect>::Time>,
    );

    impl Batch<DB> for BillingWrite {
        type Output = BillingWritten;

        fn summary(&self) -> &'static str {
            match self {
                BillingWrite::Invoice { .. } => "INSERT invoices",
                BillingWrite::Void { .. } => "UPDATE invoices void",
                BillingWrite::Pay { .. } => "UPDATE invoices pay",
            }
        }

        async fn write(
            tx: &mut Transaction<'_, DB>,
            ops: &[Self],
        ) -> Result<Vec<BillingWritten>, StoreError> {
            let mut invoiced = DB::invoice_all(tx, &BillingWrite::invoices(ops))
                .await?
                .into_iter();
            let mut written = Vec::with_capacity(ops.len());
            for op in ops {
                written.push(match op {
                    BillingWrite::Invoice { .. } => BillingWritten::Applied(
                        invoiced.next().ok_or_else(|| {
                            StoreError::Corrupt("an invoice went unplanned".into())
                        })?,
                    ),
                    BillingWrite::Void {
                        event,
                        order_id,
                        now,
                    } => BillingWritten::Void(void_in(tx, event, *order_id, *now).await?),
                    BillingWrite::Pay {
                        id,
                        now,
                        request_id,
                        actor_id,
                        traceparent,
                    } => BillingWritten::Pay(
                        pay_in(tx, *id, *now, request_id, *actor_id, traceparent).await?,
                    ),
                });
            }
            Ok(written)
        }
    }

    /// Applies `order.cancelled`: voids the order's open invoice with
    /// `invoice.voided`, or refunds its paid one with `invoice.refunded`
    /// (the cancel and a payment raced, each service committing its own
    /// half; a cancelled order must not keep the money), and records the
    /// event. `None`, with nothing written, when the order has no invoice
    /// yet (the bus tries again later).
    async fn void_in(
        tx: &mut Transaction<'_, DB>,
        event: &Event,
        order_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<ApplyOutcome>, StoreError> {
        // The row lock orders this against a concurrent pay of the same invoice.
        let current: Option<InvoiceRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM invoices WHERE order_id = $1{}",
            DB::FOR_UPDATE
        ))
        .bind(DB::id(order_id))
        .fetch_optional(&mut **tx)
        .await?;
        let Some(current) = current.map(invoice_from_row).transpose()? else {
            return Ok(None);
        };
        if !DB::record_in(tx, event).await? {
            return Ok(Some(ApplyOutcome::AlreadyApplied));
        }
        Ok(Some(match current.status {
            InvoiceStatus::Open => {
                let row: InvoiceRow = sqlx::query_as(&format!(
                    "UPDATE invoices SET status = 'void', voided_at = $1 WHERE id = $2
                     RETURNING {COLUMNS}"
                ))
                .bind(DB::time(now)?)
                .bind(DB::id(current.id))
                .fetch_one(&mut **tx)
                .await?;
                let voided = invoice_from_row(row)?;
                let announced = BillingWrite::announce(event, topics::INVOICE_VOIDED, &voided)?;
                DB::append_in(tx, &announced).await?;
                ApplyOutcome::Voided(voided)
            }
            InvoiceStatus::Paid => {
                let refunded = refund_in(tx, event, &current, now).await?;
                let announced =
                    BillingWrite::announce(event, topics::INVOICE_REFUNDED, &refunded)?;
                DB::append_in(tx, &announced).await?;
                ApplyOutcome::Refunded(refunded)
            }
            InvoiceStatus::Void | InvoiceStatus::Refunded => ApplyOutcome::AlreadyClosed(current),
        }))
    }

    /// Refunds a paid invoice in full: its `refunds` row, and the invoice
    /// `refunded`. The caller holds the invoice's row (locked on PostgreSQL).
    async fn refund_in(
        tx: &mut Transaction<'_, DB>,
        event: &Event,
        paid: &Invoice,
        now: OffsetDateTime,
    ) -> Result<Invoice, StoreError> {
        sqlx::query(
            "INSERT INTO refunds (id, invoice_id, amount, currency, reason, cause_event, created_at)
             VALUES ($1, $2, $3, $4, 'order_cancelled', $5, $6)",
        )
        .bind(DB::id(Uuid::now_v7()))
        .bind(DB::id(paid.id))
        .bind(paid.amount)
        .bind(&paid.currency)
        .bind(DB::id(event.id))
        .bind(DB::time(now)?)
        .execute(&mut **tx)
        .await?;
        let row: InvoiceRow = sqlx::query_as(&format!(
            "UPDATE invoices SET status = 'refunded', refunded_at = $1 WHERE id = $2
             RETURNING {COLUMNS}"
        ))
        .bind(DB::time(now)?)
        .bind(DB::id(paid.id))
        .fetch_one(&mut **tx)
        .await?;
        invoice_from_row(row)
    }

    /// Pays the invoice if it is `open`, with `invoice.paid`.
    async fn pay_in(
        tx: &mut Transaction<'_, DB>,
        id: Uuid,
        now: OffsetDateTime,
        request_id: &str,
        actor_id: Uuid,
        traceparent: &Option<String>,
    ) -> Result<PayOutcome, StoreError> {
        // The row lock makes two concurrent payments (or a payment and a void)
        // take turns: the second sees the first's outcome.
        let current: Option<InvoiceRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM invoices WHERE id = $1{}",
            DB::FOR_UPDATE
        ))
        .bind(DB::id(id))
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
        .bind(DB::time(now)?)
        .bind(DB::id(id))
        .fetch_one(&mut **tx)
        .await?;
        let paid = invoice_from_row(row)?;
        let cause = Cause {
            request_id: Some(request_id),
            actor_id: Some(actor_id),
        };
        let event = cause
            .announce(topics::INVOICE_PAID, &paid)?
            .with_traceparent(traceparent.clone());
        DB::append_in(tx, &event).await?;
        Ok(PayOutcome::Paid(paid))
    }

    /// The invoice whose `column` (`id` or `order_id`) is `value`.
    pub(in crate::billing::store) async fn get(
        db: &Db,
        column: &'static str,
        value: Uuid,
    ) -> Result<Option<Invoice>, StoreError> {
        let mut conn = db.read().await?;
        let row: Option<InvoiceRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM invoices WHERE {column} = $1"))
                .bind(DB::id(value))
                .fetch_optional(&mut *conn)
                .await?;
        row.map(invoice_from_row).transpose()
    }

    /// One page of `filter`'s invoices, newest first, and their total.
    pub(in crate::billing::store) async fn list(
        db: &Db,
        filter: InvoiceFilter,
        page: PageRequest,
    ) -> Result<(Vec<Invoice>, i64), StoreError> {
        let mut conn = db.read().await?;
        let user = match filter {
            InvoiceFilter::All => None,
            InvoiceFilter::User(user) => Some(DB::id(user)),
        };
        // `$1 IS NULL` lets one statement serve both the admin's list and a user's.
        let rows: Vec<InvoiceRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM invoices WHERE ($1 IS NULL OR user_id = $1)
             ORDER BY id DESC LIMIT $2 OFFSET $3"
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

    pub fn invoice_from_row(
        row: InvoiceRow,
    ) -> Result<Invoice, StoreError> {
        let (
            id,
            number,
            order_id,
            user_id,
            amount,
            currency,
            status,
            created_at,
            paid_at,
            voided_at,
            refunded_at,
        ) = row;
        let id = DB::read_id(id, "invoice id")?;
        let field = |name: &str| format!("invoice {id}: {name}");
        let time = |t: Option<<DB as Dialect>::Time>, name: &str| {
            t.map(|t| DB::read_time(t, &field(name))).transpose()
        };
        Ok(Invoice {
            number,
            order_id: DB::read_id(order_id, &field("order_id"))?,
            user_id: DB::read_id(user_id, &field("user_id"))?,
            amount,
            currency,
            status: parse_status(&id.to_string(), &status)?,
            created_at: DB::read_time(created_at, &field("created_at"))?,
            paid_at: time(paid_at, "paid_at")?,
            voided_at: time(voided_at, "voided_at")?,
            refunded_at: time(refunded_at, "refunded_at")?,
            id,
        })
    }
}
