//! The analytics service: figures computed from the other services' events
//! — counters per hour and per day, kept up to date as events arrive,
//! closed and rolled up by scheduled jobs.
//!
//! * `messages.rs` — [`AnalyticsMsg`] (the service's API) and the jobs' message
//! * `actor.rs` — the worker that applies events and answers the routes
//! * `jobs.rs` — the scheduled jobs, their schedulers and supervised worker
//! * `store/` + `migrations/` — its own database
//! * `model.rs` — facts, metrics, buckets, the typed query parameters
//! * `routes.rs` — `/api/v1/analytics`
//! * `settings.rs` — `[services.analytics]` (schedules, retention)
//! * `topics.rs` — the topics it publishes (none)
//!
//! Consumes `user.registered`, `user.logged_in`, `order.created`,
//! `order.cancelled`, `invoice.created`, `invoice.paid`, `invoice.voided`
//! and `invoice.refunded`, in batches, each event once (its inbox).

pub mod actor;
pub mod jobs;
pub mod messages;
pub mod model;
mod openapi;
pub mod routes;
pub mod settings;
pub mod store;
pub mod topics;

use std::sync::Arc;

use supervision::{ServiceSupervisor, SupervisionPolicy};

pub use messages::AnalyticsMsg;

use crate::auth::topics::{USER_LOGGED_IN, USER_REGISTERED};
use crate::billing::topics::{INVOICE_CREATED, INVOICE_PAID, INVOICE_REFUNDED, INVOICE_VOIDED};
use crate::events::{Subscription, Topics};
use crate::instance::InstanceId;
use crate::orders::topics::{ORDER_CANCELLED, ORDER_CREATED};
use crate::service::{Service, ServiceContext, ServiceDefinition, StartError, StartedService};
use actor::{Analytics as Shared, AnalyticsWorker};
use jobs::{Job, JobWorker, Jobs, Scheduler};
use settings::AnalyticsSettings;
use store::AnalyticsStore;

pub const SERVICE: ServiceDefinition = ServiceDefinition::of::<Analytics>();

/// The analytics service, for [`ServiceDefinition::of`].
pub struct Analytics;

impl Service for Analytics {
    const NAME: &'static str = "analytics";
    type Settings = AnalyticsSettings;

    fn openapi() -> crate::api::openapi::Document {
        openapi::document()
    }

    async fn start(
        ctx: ServiceContext,
        settings: AnalyticsSettings,
    ) -> Result<StartedService, StartError> {
        let store = AnalyticsStore::open(&ctx.data_dir, &ctx.storage)
            .await
            .map_err(StartError::store(Analytics::NAME))?;
        let settings = Arc::new(settings);
        let (handle, starter) = ServiceSupervisor::<AnalyticsWorker>::build(
            ctx.name,
            ctx.policy.clone(),
            ctx.workers,
            ctx.call_timeout,
            Shared {
                store: store.clone(),
                settings: settings.clone(),
            },
        );
        let (jobs, jobs_starter) = jobs_part(&ctx, &store, &settings);
        let holder: Arc<str> = ctx
            .resources
            .get::<InstanceId>()
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), |id| id.0)
            .into();
        for job in Job::ALL {
            Scheduler::register_metrics(job);
            let scheduler = Scheduler {
                job,
                schedule: job.schedule(&settings).clone(),
                store: store.clone(),
                jobs: jobs.clone(),
                holder: holder.clone(),
            };
            tokio::spawn(scheduler.run());
        }
        let subscription = Subscription::new(
            Analytics::NAME,
            TOPICS,
            ctx.workers,
            handle.clone(),
            |event, reply| AnalyticsMsg::Apply { event, reply },
        )
        .with_batches(handle.clone(), |events, reply| AnalyticsMsg::ApplyAll {
            events,
            reply,
        })
        .with_inbox(store.inbox());
        Ok(StartedService {
            starter,
            routes: routes::routes(handle),
            dependencies: vec![store.dependency()],
            outbox: None,
            subscriptions: vec![subscription],
            parts: vec![jobs_starter],
        })
    }
}

/// The jobs as a supervised service of their own (`analytics-jobs`), one
/// worker (a job at a time), with the service's restart policy: a job that
/// panics is restarted there, without touching the routes' workers.
fn jobs_part(
    ctx: &ServiceContext,
    store: &AnalyticsStore,
    settings: &AnalyticsSettings,
) -> (jobs::JobsHandle, Arc<dyn supervision::ServiceStarter>) {
    let policy = SupervisionPolicy {
        read_workers: 0,
        ..ctx.policy.clone()
    };
    ServiceSupervisor::<JobWorker>::build(
        format!("{}-jobs", ctx.name),
        policy,
        1,
        settings.job_timeout,
        Jobs {
            store: store.clone(),
            retention: settings.hourly_retention,
        },
    )
}

/// The topics analytics counts. `invoice.refunded` is counted too
/// (`invoices.refunded`, `revenue.refunded.<CUR>`), apart from the
/// payments: a refunded invoice was paid.
const TOPICS: Topics = Topics::Named(&[
    USER_REGISTERED,
    USER_LOGGED_IN,
    ORDER_CREATED,
    ORDER_CANCELLED,
    INVOICE_CREATED,
    INVOICE_PAID,
    INVOICE_VOIDED,
    INVOICE_REFUNDED,
]);
