//! The billing SQL that differs on SQLite: invoicing a batch of
//! `order.created` events, with `json_each` standing in for PostgreSQL's
//! array binds (the rest is written once, in `sql.rs`). The single writer
//! connection is what serializes invoice creators: a transaction that finds
//! no invoice for its order and takes the next number cannot interleave with
//! another one.

use sqlx::{Sqlite, Transaction};

use super::sql::sqlite::{invoice_from_row, InvoiceRow};
use super::{ApplyOutcome, BillingSql, BillingWrite, InvoiceWrite, COLUMNS};
use crate::billing::topics;
use crate::events::inbox::InboxSql;
use crate::events::outbox::OutboxSql;
use crate::events::Event;
use crate::storage::sql::Dialect;
use crate::storage::StoreError;

impl BillingSql for Sqlite {
    /// Applies a batch's `order.created` events: records them (one statement),
    /// reads the invoices their orders have (one), bumps the counter once and
    /// inserts the new invoices and their `invoice.created` (one each). The
    /// single writer connection keeps other creators out meanwhile.
    async fn invoice_all(
        tx: &mut Transaction<'_, Sqlite>,
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
            .map(|(_, invoice, _)| Sqlite::id(invoice.order_id))
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
                    Sqlite::id(invoice.id),
                    seq,
                    invoice.number,
                    Sqlite::id(invoice.order_id),
                    Sqlite::id(invoice.user_id),
                    invoice.amount,
                    invoice.currency,
                    invoice.status.as_str(),
                    Sqlite::time(invoice.created_at)?,
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
            .map(|(event, invoice)| BillingWrite::announce(event, topics::INVOICE_CREATED, invoice))
            .collect::<Result<Vec<_>, _>>()?;
        Sqlite::append_all_in(tx, &announced.iter().collect::<Vec<_>>()).await?;
        Ok(plan.outcomes)
    }
}

fn json_list(values: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(values).map_err(|e| StoreError::Corrupt(e.to_string()))
}
