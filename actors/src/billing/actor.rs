//! The billing worker: handles one [`BillingMsg`] at a time against the
//! store, whether it came from a route or from the event bus. The service
//! runs `workers` of them under its supervisor, so a slow query holds up one
//! worker, not the service.

use supervision::{BoxError, WorkerHandler};
use uuid::Uuid;

use super::messages::BillingMsg;
use super::model::Invoice;
use super::store::{internal, ApplyOutcome, BillingStore, PayOutcome};
use crate::api::{Caller, Page, RequestContext};
use crate::events::Event;
use crate::service::{respond, respond_all};
use crate::ServiceError;

pub struct BillingWorker;

impl WorkerHandler for BillingWorker {
    type Msg = BillingMsg;
    type Context = RequestContext;
    type State = BillingStore;
    type Args = BillingStore;

    fn kind(msg: &BillingMsg) -> &'static str {
        match msg {
            BillingMsg::List { .. } => "List",
            BillingMsg::Get { .. } => "Get",
            BillingMsg::ByOrder { .. } => "ByOrder",
            BillingMsg::Pay { .. } => "Pay",
            BillingMsg::Apply { .. } => "Apply",
            BillingMsg::ApplyAll { .. } => "ApplyAll",
        }
    }

    /// On PostgreSQL, the first workers to start set up the schema and run the
    /// migrations (once per process): a database that is down then is a
    /// failed start, which the supervisor backs off and, past the intensity,
    /// turns into an open circuit until it comes back. Later starts, and
    /// SQLite (migrated when the service opened it), have nothing to wait for.
    async fn init(store: &BillingStore, _index: usize) -> Result<BillingStore, BoxError> {
        store.ensure_ready().await?;
        Ok(store.clone())
    }

    async fn before(ctx: &RequestContext) -> Result<(), BoxError> {
        ctx.strike_fault().await
    }

    async fn handle(
        msg: BillingMsg,
        ctx: &RequestContext,
        store: &mut BillingStore,
    ) -> Result<(), BoxError> {
        match msg {
            BillingMsg::List {
                user_id,
                page,
                reply,
            } => {
                let result = async {
                    let filter = BillingMsg::list_filter(ctx.caller()?, user_id);
                    let (invoices, total) = store.list(filter, page).await.map_err(internal)?;
                    Ok(Page::new(invoices, page, total))
                }
                .await;
                respond(reply, result)
            }
            BillingMsg::Get { id, reply } => {
                let result =
                    async { visible(store.get(id).await.map_err(internal)?, ctx.caller()?) }.await;
                respond(reply, result)
            }
            BillingMsg::ByOrder { order_id, reply } => {
                let result = async {
                    visible(
                        store.get_by_order(order_id).await.map_err(internal)?,
                        ctx.caller()?,
                    )
                }
                .await;
                respond(reply, result)
            }
            BillingMsg::Pay { id, reply } => respond(reply, pay(store, ctx, id).await),
            BillingMsg::Apply { event, reply } => {
                // Panics here, in fault-injection builds, when a test poisoned
                // the event's user: the dead-letter path's test.
                crate::fault::poison::strike("billing", &event);
                respond(reply, apply(store, &event).await)
            }
            BillingMsg::ApplyAll { events, reply } => {
                for event in &events {
                    crate::fault::poison::strike("billing", event);
                }
                let store: &BillingStore = store;
                let results =
                    futures::future::join_all(events.iter().map(|event| apply(store, event))).await;
                respond_all(reply, results)
            }
        }
    }
}

fn not_found() -> ServiceError {
    ServiceError::NotFound("invoice not found".into())
}

/// Another user's invoice is "not found": its existence is not revealed.
fn visible(invoice: Option<Invoice>, caller: &Caller) -> Result<Invoice, ServiceError> {
    invoice
        .filter(|i| caller.may_access(i.user_id))
        .ok_or_else(not_found)
}

async fn pay(
    store: &BillingStore,
    ctx: &RequestContext,
    id: Uuid,
) -> Result<Invoice, ServiceError> {
    let caller = ctx.caller()?;
    // Check ownership before changing anything.
    visible(store.get(id).await.map_err(internal)?, caller)?;
    match store
        .pay(id, &ctx.request_id, caller.user_id)
        .await
        .map_err(internal)?
    {
        PayOutcome::Paid(invoice) => {
            tracing::info!(
                invoice_id = %invoice.id,
                number = %invoice.number,
                order_id = %invoice.order_id,
                user_id = %caller.user_id,
                "invoice paid"
            );
            Ok(invoice)
        }
        PayOutcome::NotPayable(invoice) => Err(ServiceError::Conflict(format!(
            "invoice is {} and cannot be paid",
            invoice.status.as_str()
        ))),
        PayOutcome::NotFound => Err(not_found()),
    }
}

/// Applies a consumed event and logs what it did; `Ok` also for an event
/// applied before, so the bus stops delivering it. The bus's delivery span
/// carries the event's request id into these lines.
async fn apply(store: &BillingStore, event: &Event) -> Result<(), ServiceError> {
    // An error goes back to the bus, which logs it and retries.
    let outcome = store.apply(event).await?;
    let (event_id, topic) = (event.id, &event.topic);
    match outcome {
        ApplyOutcome::Invoiced(invoice) => tracing::info!(
            invoice_id = %invoice.id,
            number = %invoice.number,
            order_id = %invoice.order_id,
            %event_id,
            "invoice created"
        ),
        ApplyOutcome::AlreadyInvoiced(invoice) => tracing::info!(
            invoice_id = %invoice.id,
            number = %invoice.number,
            order_id = %invoice.order_id,
            %event_id,
            "order already invoiced, nothing created"
        ),
        ApplyOutcome::Voided(invoice) => tracing::info!(
            invoice_id = %invoice.id,
            number = %invoice.number,
            order_id = %invoice.order_id,
            %event_id,
            "invoice voided"
        ),
        ApplyOutcome::Refunded(invoice) => tracing::info!(
            invoice_id = %invoice.id,
            number = %invoice.number,
            order_id = %invoice.order_id,
            amount = invoice.amount,
            currency = %invoice.currency,
            %event_id,
            "order cancelled after its invoice was paid: the payment is refunded"
        ),
        ApplyOutcome::AlreadyClosed(invoice) => tracing::info!(
            invoice_id = %invoice.id,
            number = %invoice.number,
            order_id = %invoice.order_id,
            %event_id,
            status = invoice.status.as_str(),
            "invoice already void or refunded"
        ),
        ApplyOutcome::AlreadyApplied => {
            tracing::debug!(%event_id, %topic, "event applied before, nothing to do")
        }
    }
    Ok(())
}
