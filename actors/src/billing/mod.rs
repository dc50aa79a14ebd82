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
//! * `settings.rs` — `[services.billing]` (the invoice prefix)
//! * `topics.rs` — the topics it publishes
//!
//! Consumes `order.created` and `order.cancelled`; publishes
//! `invoice.created`, `invoice.paid` and `invoice.voided`.

pub mod actor;
pub mod messages;
pub mod model;
mod openapi;
pub mod routes;
pub mod settings;
pub mod store;
pub mod topics;

use supervision::ServiceSupervisor;

pub use messages::BillingMsg;

use crate::events::{Subscription, Topics};
use crate::orders::topics::{ORDER_CANCELLED, ORDER_CREATED};
use crate::service::{Service, ServiceContext, ServiceDefinition, StartError, StartedService};
use actor::BillingWorker;
use settings::BillingSettings;
use store::BillingStore;

pub const SERVICE: ServiceDefinition = ServiceDefinition::of::<Billing>();

/// The billing service, for [`ServiceDefinition::of`].
pub struct Billing;

impl Service for Billing {
    const NAME: &'static str = "billing";
    type Settings = BillingSettings;

    fn openapi() -> crate::api::openapi::Document {
        openapi::document()
    }

    async fn start(
        ctx: ServiceContext,
        settings: BillingSettings,
    ) -> Result<StartedService, StartError> {
        let store = BillingStore::open(
            &ctx.data_dir,
            &ctx.storage,
            settings.invoice_prefix.as_str(),
        )
        .await
        .map_err(StartError::store(Billing::NAME))?;
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
                Billing::NAME,
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
            parts: Vec::new(),
        })
    }
}

/// The topics billing consumes.
const TOPICS: Topics = Topics::Named(&[ORDER_CREATED, ORDER_CANCELLED]);
