//! The orders service: users create, read, list and cancel orders. It
//! publishes `order.created` and `order.cancelled`, and consumes
//! `invoice.paid` (the order becomes `paid`).
//!
//! * `messages.rs` — [`OrdersMsg`], the service's API
//! * `actor.rs` — the worker that handles them
//! * `store.rs` + `migrations/` — its own database
//! * `model.rs` — typed input values and the order
//! * `routes.rs` — `/api/v1/orders`
//! * `settings.rs` — `[services.orders]` (the default currency)
//! * `topics.rs` — the topics it publishes

pub mod actor;
pub mod messages;
pub mod model;
mod openapi;
pub mod routes;
pub mod settings;
pub mod store;
pub mod topics;

use std::time::Duration;

use supervision::ServiceSupervisor;

pub use messages::OrdersMsg;

use crate::billing::topics::INVOICE_PAID;
use crate::events::{Subscription, Topics};
use crate::service::{Service, ServiceContext, ServiceDefinition, StartError, StartedService};
use crate::storage::upkeep::spawn_purge;
use actor::OrdersWorker;
use settings::OrdersSettings;
use store::OrdersStore;

pub const SERVICE: ServiceDefinition = ServiceDefinition::of::<Orders>();

/// The orders service, for [`ServiceDefinition::of`].
pub struct Orders;

impl Service for Orders {
    const NAME: &'static str = "orders";
    type Settings = OrdersSettings;

    fn openapi() -> crate::api::openapi::Document {
        openapi::document()
    }

    async fn start(
        ctx: ServiceContext,
        settings: OrdersSettings,
    ) -> Result<StartedService, StartError> {
        // An unfinished idempotency claim outlives its request by the call timeout at most.
        let claim_lease = ctx.call_timeout * 2;
        let store = OrdersStore::open(&ctx.data_dir, &ctx.storage, claim_lease)
            .await
            .map_err(StartError::store(Orders::NAME))?;
        let keys = store.clone();
        spawn_purge("idempotency keys", PURGE_EVERY, move || {
            let keys = keys.clone();
            async move { keys.purge_expired_keys().await }
        });
        let (handle, starter) = ServiceSupervisor::<OrdersWorker>::build(
            ctx.name,
            ctx.policy.clone(),
            ctx.workers,
            ctx.call_timeout,
            store.clone(),
        );
        let subscription = Subscription::new(
            Orders::NAME,
            TOPICS,
            ctx.workers,
            handle.clone(),
            |event, reply| OrdersMsg::Apply { event, reply },
        )
        .with_inbox(store.inbox());
        Ok(StartedService {
            starter,
            routes: routes::routes(handle, settings.default_currency),
            dependencies: vec![store.dependency()],
            outbox: Some(store.outbox()),
            subscriptions: vec![subscription],
            parts: Vec::new(),
        })
    }
}

/// How often completed idempotency keys past their retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60 * 60);

/// The topics orders consumes.
const TOPICS: Topics = Topics::Named(&[INVOICE_PAID]);
