//! The notifications service: email, SMS, push and webhook messages from
//! templates, through a durable queue in its own database with retries and
//! dead letters. It consumes `user.registered` (keeping its own copy of
//! each user's address) and the events mapped to templates
//! (`notifications.events`), and publishes `notification.sent` and
//! `notification.dead`.
//!
//! * `messages.rs` — [`NotificationsMsg`], the service's API
//! * `actor.rs` — the worker that accepts, renders and answers
//! * `delivery.rs` — the senders that drain the queue, and the providers'
//!   supervised workers
//! * `providers/` — SMTP, Twilio-compatible SMS, Web Push, webhooks
//! * `templates.rs` — Handlebars, strict; the default templates
//! * `store/` + `migrations/` — its own database, the queue included
//! * `model.rs` — typed input values and the rows as the contract shows them
//! * `routes.rs` — `/api/v1/notifications`
//! * `settings.rs` — `[services.notifications]` and its providers
//! * `topics.rs` — the topics it publishes

pub mod actor;
pub mod delivery;
pub mod messages;
pub mod model;
mod openapi;
pub mod providers;
pub mod routes;
pub mod settings;
pub mod store;
pub mod templates;
pub mod topics;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use supervision::{Backoff, ServiceSupervisor, SupervisionPolicy};
use tokio::sync::Notify;

pub use messages::NotificationsMsg;

use crate::auth::topics::USER_REGISTERED;
use crate::events::{Subscription, Topic, Topics};
use crate::instance::InstanceId;
use crate::service::{Service, ServiceContext, ServiceDefinition, StartError, StartedService};
use crate::storage::upkeep::{is_closed, spawn_purge};
use crate::storage::{Dependency, StoreError};
use actor::{NotificationsWorker, Notifier};
use delivery::{ProviderWorker, Sender};
use model::{Status, TemplateName};
use providers::Provider;
use settings::NotificationsSettings;
use store::NotificationsStore;

pub const SERVICE: ServiceDefinition = ServiceDefinition::of::<Notifications>();

/// The notifications service, for [`ServiceDefinition::of`].
pub struct Notifications;

impl Service for Notifications {
    const NAME: &'static str = "notifications";
    type Settings = NotificationsSettings;

    fn openapi() -> crate::api::openapi::Document {
        openapi::document()
    }

    async fn start(
        ctx: ServiceContext,
        settings: NotificationsSettings,
    ) -> Result<StartedService, StartError> {
        // An unfinished idempotency claim outlives its request by the call timeout at most.
        let store = NotificationsStore::open(&ctx.data_dir, &ctx.storage, ctx.call_timeout * 2)
            .await
            .map_err(StartError::store(Notifications::NAME))?;
        let providers = settings.providers().build().unwrap_or_else(|problems| {
            // `check` refused these before start; a program embedding
            // Stageworks that skipped it gets no provider rather than a crash.
            tracing::error!(?problems, "notification providers not built");
            Vec::new()
        });
        let wake = Arc::new(Notify::new());
        let events: BTreeMap<String, TemplateName> = settings
            .events
            .iter()
            .filter_map(|(topic, name)| Some((topic.clone(), TemplateName::parse(name).ok()?)))
            .collect();
        let notifier = Notifier {
            store: store.clone(),
            renderer: Arc::default(),
            channels: Arc::new(
                providers
                    .iter()
                    .map(|p| p.channel())
                    .collect::<HashSet<_>>(),
            ),
            events: Arc::new(events),
            wake: wake.clone(),
        };
        let (handle, starter) = ServiceSupervisor::<NotificationsWorker>::build(
            ctx.name,
            ctx.policy.clone(),
            ctx.workers,
            ctx.call_timeout,
            notifier,
        );
        let holder: Arc<str> = ctx
            .resources
            .get::<InstanceId>()
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), |id| id.0)
            .into();
        let mut parts = Vec::new();
        let mut dependencies = vec![store.dependency()];
        for provider in providers {
            if settings.is_required(provider.channel()) {
                dependencies.push(Arc::new(RequiredProvider(provider.clone())));
            }
            let (provider_handle, provider_starter) =
                provider_service(&ctx, provider.clone(), &settings);
            parts.push(provider_starter);
            let sender = Sender {
                channel: provider.channel(),
                provider: provider_handle,
                store: store.clone(),
                holder: holder.clone(),
                max_attempts: settings.max_attempts,
                backoff: Backoff {
                    min: settings.retry_base,
                    max: settings.retry_max,
                },
                lease: settings.lease,
                send_timeout: settings.provider_call_timeout(provider.channel()),
                senders: settings.senders,
                per_second: settings.per_second(provider.channel()),
                poll_every: settings.poll_every,
                wake: wake.clone(),
            };
            metrics::counter!("notifications_sent_total", "channel" => provider.channel().as_str())
                .increment(0);
            metrics::counter!("notifications_failed_total", "channel" => provider.channel().as_str()).increment(0);
            tokio::spawn(sender.run());
        }
        spawn_upkeep(store.clone());
        let subscription = Subscription::new(
            Notifications::NAME,
            topics_of(&settings),
            ctx.workers,
            handle.clone(),
            |event, reply| NotificationsMsg::Apply { event, reply },
        )
        .with_inbox(store.inbox());
        Ok(StartedService {
            starter,
            routes: routes::routes(handle),
            dependencies,
            outbox: Some(store.outbox().clone()),
            subscriptions: vec![subscription],
            parts,
        })
    }
}

/// A provider as a supervised service of its own (`notifications-email`),
/// with the notifications service's restart policy and one worker per
/// concurrent send, so its failures open its own circuit.
fn provider_service(
    ctx: &ServiceContext,
    provider: Arc<dyn Provider>,
    settings: &NotificationsSettings,
) -> (
    delivery::ProviderHandle,
    Arc<dyn supervision::ServiceStarter>,
) {
    let policy = SupervisionPolicy {
        read_workers: 0,
        ..ctx.policy.clone()
    };
    let name = format!("{}-{}", ctx.name, provider.channel().as_str());
    let call_timeout = settings.provider_call_timeout(provider.channel());
    ServiceSupervisor::<ProviderWorker>::build(
        name,
        policy,
        settings.senders,
        call_timeout,
        provider,
    )
}

/// A provider the operator marked `required`: `/ready` fails while its
/// server does not answer. It never holds the service's calls: an SMTP
/// outage only makes email wait.
struct RequiredProvider(Arc<dyn Provider>);

impl Dependency for RequiredProvider {
    fn name(&self) -> String {
        format!("provider:{}", self.0.channel())
    }

    fn ping(&self) -> BoxFuture<'_, Result<Duration, String>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            match self.0.ping() {
                Some(ping) => ping.await.map(|()| started.elapsed()),
                // Refused by the settings' check: push and webhooks have no one server.
                None => Ok(Duration::ZERO),
            }
        })
    }

    fn gates_calls(&self) -> bool {
        false
    }
}

/// The topics the service consumes: `user.registered` always (its copy of
/// the users' addresses), and every topic mapped to a template. Leaked
/// once per start: [`Topics::Named`] takes a static list, and the list is
/// read from the configuration.
fn topics_of(settings: &NotificationsSettings) -> Topics {
    let mut topics = vec![USER_REGISTERED];
    for name in settings.events.keys() {
        if let Ok(topic) = Topic::parse(name) {
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
    }
    Topics::Named(Box::leak(topics.into_boxed_slice()))
}

/// How often the queue-depth gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(5);
/// How often completed idempotency keys past their retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Creates the default templates once the database is ready (PostgreSQL
/// may be down at start), then keeps the queue gauges, until the store
/// closes at shutdown; purges expired idempotency keys hourly.
fn spawn_upkeep(store: NotificationsStore) {
    let keys = store.clone();
    spawn_purge("idempotency keys", PURGE_EVERY, move || {
        let keys = keys.clone();
        async move { keys.purge_expired_keys().await }
    });
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(200);
        loop {
            match seed_defaults(&store).await {
                Ok(()) => break,
                Err(err) if is_closed(&err) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "default templates not created yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
        let mut gauges = tokio::time::interval(GAUGES_EVERY);
        loop {
            gauges.tick().await;
            match store.depth().await {
                Ok(depth) => publish_depth(&depth),
                Err(err) if is_closed(&err) => return,
                Err(err) => tracing::debug!(error = %err, "queue depth not read"),
            }
        }
    });
}

async fn seed_defaults(store: &NotificationsStore) -> Result<(), StoreError> {
    store.ensure_ready().await?;
    for default in templates::DEFAULTS {
        if store.seed_template(&default.input()).await? {
            tracing::info!(template = default.name, "default template created");
        }
    }
    Ok(())
}

fn publish_depth(depth: &[(Status, u64)]) {
    for (status, count) in depth {
        metrics::gauge!("notifications_queue_depth", "status" => status.as_str())
            .set(*count as f64);
    }
}
