//! The billing SQL that differs on PostgreSQL: invoicing a batch of
//! `order.created` events over array binds, under the counter row's lock
//! (the rest is written once, in `sql.rs`). Concurrent writers (workers,
//! replicas) are ordered by row locks: invoice creators queue on the counter
//! row, pay and void on the invoice's row.

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::sql::postgres::{invoice_from_row, InvoiceRow};
use super::{ApplyOutcome, BillingSql, BillingWrite, InvoiceWrite, COLUMNS};
use crate::billing::topics;
use crate::events::inbox::InboxSql;
use crate::events::outbox::OutboxSql;
use crate::events::Event;

use crate::storage::StoreError;

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
        tx: &mut Transaction<'_, Postgres>,
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
        let last: i64 =
            sqlx::query_scalar("SELECT last FROM invoice_counter WHERE id = 1 FOR UPDATE")
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
        // unnested array keeps to the index; and it is planned with these
        // ids each time (`storage::postgres`, "Statements whose plan depends
        // on the data are not prepared").
        let rows: Vec<InvoiceRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM invoices WHERE order_id IN (SELECT unnest($1::uuid[]))"
        ))
        .persistent(false)
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
            .map(|(event, invoice)| BillingWrite::announce(event, topics::INVOICE_CREATED, invoice))
            .collect::<Result<Vec<_>, _>>()?;
        Postgres::append_all_in(tx, &announced.iter().collect::<Vec<_>>()).await?;
        Ok(plan.outcomes)
    }
}
