//! The audit service: a durable, searchable, tamper-evident record of
//! everything that happened — every event on the bus (all topics, present
//! and future), entries admins post, and the admin listener's actions.
//!
//! * `messages.rs` — [`AuditMsg`], the service's API (routes and events)
//! * `actor.rs` — the worker that handles them
//! * `store/` + `migrations/` — its own database: the entries, their hash
//!   chain's head, its idempotency keys
//! * `chain.rs` — the hash chain: what is hashed, exactly
//! * `model.rs` — the entry, the posted entry and the search filters
//! * `routes.rs` — `/api/v1/audit`; `export.rs` — the streamed CSV export
//! * `settings.rs` — `[services.audit]` (retention)
//! * `topics.rs` — the topics it publishes (none)
//!
//! An event becomes the entry whose id is the event's: appending skips ids
//! recorded before, so redeliveries change nothing and no inbox is needed.

pub mod actor;
pub mod chain;
pub mod export;
pub mod messages;
pub mod model;
mod openapi;
pub mod routes;
pub mod settings;
pub mod store;
pub mod topics;

use std::sync::Arc;

use futures::future::BoxFuture;
use supervision::ServiceSupervisor;
use uuid::Uuid;

pub use messages::AuditMsg;

use crate::admin_actions::{AdminAction, AdminActionRecorder, AdminActions};
use crate::events::{Subscription, Topics};
use crate::service::{Service, ServiceContext, ServiceDefinition, StartError, StartedService};
use crate::storage::upkeep::spawn_purge;
use actor::AuditWorker;
use model::NewEntry;
use settings::AuditSettings;
use store::AuditStore;

pub const SERVICE: ServiceDefinition = ServiceDefinition::of::<Audit>();

/// The audit service, for [`ServiceDefinition::of`].
pub struct Audit;

impl Service for Audit {
    const NAME: &'static str = "audit";
    type Settings = AuditSettings;

    fn openapi() -> crate::api::openapi::Document {
        openapi::document()
    }

    async fn start(
        ctx: ServiceContext,
        settings: AuditSettings,
    ) -> Result<StartedService, StartError> {
        // An unfinished idempotency claim outlives its request by the call timeout at most.
        let store = AuditStore::open(&ctx.data_dir, &ctx.storage, ctx.call_timeout * 2)
            .await
            .map_err(StartError::store(Audit::NAME))?;
        spawn_purges(&store, &settings);
        export::register_metrics();
        if let Some(actions) = ctx.resources.get::<AdminActions>() {
            actions.set(Arc::new(Recorder(store.clone())));
        }
        let (handle, starter) = ServiceSupervisor::<AuditWorker>::build(
            ctx.name,
            ctx.policy.clone(),
            ctx.workers,
            ctx.call_timeout,
            store.clone(),
        );
        Ok(StartedService {
            starter,
            routes: routes::routes(handle.clone(), store.clone()),
            dependencies: vec![store.dependency()],
            outbox: None,
            subscriptions: vec![Subscription::new(
                Audit::NAME,
                Topics::All,
                ctx.workers,
                handle.clone(),
                |event, reply| AuditMsg::Apply { event, reply },
            )
            .with_batches(handle, |events, reply| AuditMsg::ApplyAll { events, reply })],
            parts: Vec::new(),
        })
    }
}

/// Expired idempotency keys always; entries past the retention if one is set.
fn spawn_purges(store: &AuditStore, settings: &AuditSettings) {
    let keys = store.clone();
    spawn_purge("audit idempotency keys", settings.purge_every, move || {
        let keys = keys.clone();
        async move { keys.purge_expired_keys().await }
    });
    if let Some(retention) = settings.retention {
        let entries = store.clone();
        spawn_purge("audit entries", settings.purge_every, move || {
            let entries = entries.clone();
            async move {
                let cutoff = time::OffsetDateTime::now_utc() - retention;
                entries.purge_before(cutoff).await
            }
        });
    }
}

/// The admin listener's actions, appended as entries (no actor: the admin
/// token names no user; the admin request's id as the request id). Straight
/// to the store's writer, like an event's entry: nothing to ask a worker.
struct Recorder(AuditStore);

impl AdminActionRecorder for Recorder {
    fn record(&self, action: AdminAction) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let entry = NewEntry {
                id: Uuid::now_v7(),
                occurred_at: crate::storage::now_micros(),
                action: action.action.to_owned(),
                actor_id: None,
                resource_type: action.resource_type.to_owned(),
                resource_id: Some(action.resource_id),
                request_id: Some(action.request_id),
                data: action.data.to_string(),
            };
            self.0
                .record(vec![entry])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}
