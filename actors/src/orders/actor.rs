//! The orders worker: handles one [`OrdersMsg`] at a time against the store.
//! The service runs `workers` of them under its supervisor, so a slow query
//! holds up one worker, not the service.

use supervision::{BoxError, WorkerHandler};

use super::messages::{Created, OrdersMsg};
use super::model::NewOrder;
use super::store::{CancelOutcome, Cause, InvoicePaid, OrdersStore, PaidOutcome};
use crate::api::{Page, RequestContext};
use crate::billing::topics;
use crate::events::Event;
use crate::idempotency::{Claim, IdempotencyKey};
use crate::service::respond;
use crate::storage::StoreError;
use crate::ServiceError;

pub struct OrdersWorker;

impl WorkerHandler for OrdersWorker {
    type Msg = OrdersMsg;
    type Context = RequestContext;
    type State = OrdersStore;
    type Args = OrdersStore;

    fn kind(msg: &OrdersMsg) -> &'static str {
        match msg {
            OrdersMsg::Create { .. } => "Create",
            OrdersMsg::Get { .. } => "Get",
            OrdersMsg::List { .. } => "List",
            OrdersMsg::Cancel { .. } => "Cancel",
            OrdersMsg::Apply { .. } => "Apply",
        }
    }

    /// On PostgreSQL, the first workers to start set up the schema and run the
    /// migrations (once per process): a database that is down then is a
    /// failed start, which the supervisor backs off and, past the intensity,
    /// turns into an open circuit until it comes back. Later starts, and
    /// SQLite (migrated when the service opened it), have nothing to wait for.
    async fn init(store: &OrdersStore, _index: usize) -> Result<OrdersStore, BoxError> {
        store.ensure_ready().await?;
        Ok(store.clone())
    }

    async fn before(ctx: &RequestContext) -> Result<(), BoxError> {
        ctx.strike_fault().await
    }

    async fn handle(
        msg: OrdersMsg,
        ctx: &RequestContext,
        store: &mut OrdersStore,
    ) -> Result<(), BoxError> {
        match msg {
            OrdersMsg::Create {
                order,
                idempotency,
                reply,
            } => respond(reply, create(store, ctx, &order, idempotency).await),
            OrdersMsg::Get { id, reply } => {
                let result = async {
                    let caller = ctx.caller()?;
                    let order = store.get(id).await.map_err(internal)?;
                    order
                        .filter(|o| caller.may_access(o.user_id))
                        .ok_or_else(|| ServiceError::NotFound("order not found".into()))
                }
                .await;
                respond(reply, result)
            }
            OrdersMsg::List {
                user_id,
                page,
                reply,
            } => {
                let result = async {
                    let filter = OrdersMsg::list_filter(ctx.caller()?, user_id);
                    let (orders, total) = store.list(filter, page).await.map_err(internal)?;
                    Ok(Page::new(orders, page, total))
                }
                .await;
                respond(reply, result)
            }
            OrdersMsg::Cancel { id, reply } => respond(reply, cancel(store, ctx, id).await),
            OrdersMsg::Apply { event, reply } => respond(reply, apply(store, &event).await),
        }
    }
}

/// A store failure as a reply: 503 when the database is down, else 500;
/// either is the worker's failure, so a broken database trips the circuit.
fn internal(err: StoreError) -> ServiceError {
    ServiceError::from_store("orders", err)
}

async fn create(
    store: &OrdersStore,
    ctx: &RequestContext,
    order: &NewOrder,
    key: Option<IdempotencyKey>,
) -> Result<Created, ServiceError> {
    let caller = ctx.caller()?;
    if let Some(key) = &key {
        match store.claim(key).await.map_err(internal)? {
            Claim::Claimed => {}
            Claim::Replay { status, body } => return Ok(Created::Replayed { status, body }),
            other => {
                return Err(other
                    .conflict_error()
                    .unwrap_or_else(|| ServiceError::internal("claim")))
            }
        }
    }
    let cause = Cause {
        request_id: &ctx.request_id,
        actor: caller.user_id,
    };
    match store
        .insert(cause, order, key.as_ref())
        .await
        .map_err(internal)
    {
        Ok(order) => {
            tracing::info!(order_id = %order.id, user_id = %caller.user_id, amount = order.amount, "order created");
            Ok(Created::New(order))
        }
        Err(err) => {
            if let Some(key) = &key {
                if let Err(release) = store.release(key).await {
                    tracing::warn!(error = %release, "could not release the idempotency key");
                }
            }
            Err(err)
        }
    }
}

async fn cancel(
    store: &OrdersStore,
    ctx: &RequestContext,
    id: uuid::Uuid,
) -> Result<super::model::Order, ServiceError> {
    let caller = ctx.caller()?;
    let not_found = || ServiceError::NotFound("order not found".into());
    // Check ownership before changing anything: another user's order is "not found".
    let existing = store
        .get(id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    if !caller.may_access(existing.user_id) {
        return Err(not_found());
    }
    let cause = Cause {
        request_id: &ctx.request_id,
        actor: caller.user_id,
    };
    match store.cancel(id, cause).await.map_err(internal)? {
        CancelOutcome::Cancelled(order) => {
            tracing::info!(order_id = %order.id, user_id = %caller.user_id, "order cancelled");
            Ok(order)
        }
        CancelOutcome::NotCancellable(order) => Err(ServiceError::Conflict(format!(
            "order is {} and can no longer be cancelled",
            order.status.as_str()
        ))),
        CancelOutcome::NotFound => Err(not_found()),
    }
}

/// Applies an event orders subscribes to (`invoice.paid`: the order is paid).
async fn apply(store: &OrdersStore, event: &Event) -> Result<(), ServiceError> {
    crate::fault::poison::strike("orders", event);
    if event.topic != topics::INVOICE_PAID {
        return Ok(());
    }
    let paid: InvoicePaid = event.payload()?;
    match store
        .apply_invoice_paid(event, &paid)
        .await
        .map_err(internal)?
    {
        PaidOutcome::Paid => tracing::info!(order_id = %paid.order_id, "order paid"),
        PaidOutcome::AlreadyApplied => {
            tracing::debug!(order_id = %paid.order_id, "invoice.paid seen before")
        }
        PaidOutcome::NotPayable(status) => tracing::warn!(
            order_id = %paid.order_id,
            status = status.as_str(),
            "invoice paid for an order that is no longer open; left as it is (billing refunds the payment when it sees the cancel)"
        ),
        PaidOutcome::Unknown => {
            tracing::warn!(order_id = %paid.order_id, "invoice paid for an unknown order")
        }
    }
    Ok(())
}
