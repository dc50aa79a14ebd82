//! The billing service: an invoice for every order, made from the orders
//! service's events (never twice), voided when the order is cancelled, paid
//! by its owner.
//!
//! * `messages.rs` — [`BillingMsg`], the service's API (routes and events)
//! * `actor.rs` — the worker that handles them
//! * `store/` + `migrations/` — its own database, with its outbox and the
//!   record of the events it applied
//! * `model.rs` — the invoice, its number, and the order events it reads
//! * `routes.rs` — `/api/v1/invoices`
//!
//! Consumes `order.created` and `order.cancelled`; publishes
//! `invoice.created`, `invoice.paid` and `invoice.voided`.

pub mod actor;
pub mod messages;
pub mod model;
pub mod routes;
pub mod store;
pub mod topics;

use supervision::ServiceSupervisor;

pub use messages::BillingMsg;

use crate::orders::topics::{ORDER_CANCELLED, ORDER_CREATED};
use crate::events::{Subscription, Topics};
use crate::service::{ServiceContext, ServiceDefinition, StartError, StartedService};
use actor::BillingWorker;
use store::BillingStore;

pub const SERVICE: ServiceDefinition = ServiceDefinition {
    name: "billing",
    start: |ctx| Box::pin(start(ctx)),
};

/// The topics billing consumes.
const TOPICS: Topics = Topics::Named(&[
    ORDER_CREATED,
    ORDER_CANCELLED,
]);

async fn start(ctx: ServiceContext) -> Result<StartedService, StartError> {
    let store = BillingStore::open(&ctx.data_dir, &ctx.storage, &ctx.invoice_prefix)
        .await
        .map_err(|source| StartError::Store {
            service: "billing",
            source,
        })?;
    let outbox = store.outbox().clone();
    let (handle, starter) = ServiceSupervisor::<BillingWorker>::build(
        ctx.name,
        ctx.policy.clone(),
        ctx.workers,
        ctx.call_timeout,
        store.clone(),
    );
    Ok(StartedService {
        starter,
        routes: routes::routes(handle.clone()),
        dependencies: vec![store.dependency()],
        outbox: Some(outbox),
        // As many events at once as there are workers to apply them.
        subscriptions: vec![Subscription::new(
            "billing",
            TOPICS,
            ctx.workers,
            handle.clone(),
            |event, reply| BillingMsg::Apply { event, reply },
        )
        .with_batches(handle, |events, reply| BillingMsg::ApplyAll {
            events,
            reply,
        })
        .with_inbox(store.inbox())],
    })
}
