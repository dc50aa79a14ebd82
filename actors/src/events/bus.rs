//! The event bus: an actor in the supervision tree (the `events` service)
//! that takes committed events from the relays and fans them out to the
//! subscribing services, in-process ([`super::memory`]) or through Redis
//! Streams ([`super::stream`]). It also answers the admin listener: what
//! each subscriber has delivered, what waits, the dead letters, and replays.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use supervision::{
    Backoff, BoxError, ServiceStarter, ServiceSupervisor, SupervisionPolicy, WorkerHandler,
};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::dead_letters::{DeadLetter, DeadLetterStore};
use super::delivery::{DeliveryCounters, Settler};
use super::lock;
use super::memory::MemoryBus;
use super::outbox::{Outbox, OutboxRecord};
use super::stream::RedisStream;
use super::{relay, DeliveryError, Subscription, Topics};
use crate::kv::RedisSettings;
use crate::service::respond;
use crate::storage::{Dependency, StorageSettings, StoreError};
use crate::ServiceError;

/// The bus's name in the supervision tree and in `[services.events]`
/// (supervision settings and its own `database_url`).
pub const SERVICE_NAME: &str = "events";

/// `[events]` in the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsSettings {
    pub max_attempts: u32,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub relay_batch: u32,
    pub relay_interval: Duration,
    pub claim_lease: Duration,
    pub stream_claim_idle: Duration,
    pub outbox_retention: Duration,
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            relay_batch: 256,
            relay_interval: Duration::from_millis(500),
            claim_lease: Duration::from_secs(30),
            stream_claim_idle: Duration::from_secs(60),
            outbox_retention: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Everything the bus needs to start.
pub struct BusConfig {
    pub settings: EventsSettings,
    pub data_dir: PathBuf,
    /// Where the dead letters live (`[services.events] database_url`, or the shared database).
    pub storage: StorageSettings,
    /// Redis Streams when set; in-process otherwise.
    pub redis: Option<RedisSettings>,
    /// This process's stable name among replicas ([`crate::instance`]).
    pub instance: String,
    pub policy: SupervisionPolicy,
    pub call_timeout: Duration,
    pub producers: Vec<Outbox>,
    pub subscriptions: Vec<Subscription>,
}

/// The counters of each named topic a subscriber takes, at 0 from the
/// start, so that `rate()` and alerts see them before the first event. A
/// subscriber of every topic (audit) adds no series: the topics it will
/// see are not known until they are published.
fn register_metrics(subscriptions: &[Subscription]) {
    for subscription in subscriptions {
        let subscriber = subscription.subscriber;
        let Topics::Named(topics) = subscription.topics else {
            continue;
        };
        for topic in topics {
            metrics::counter!("events_published_total", "topic" => topic.label()).increment(0);
            for counter in ["events_delivered_total", "events_failed_total"] {
                metrics::counter!(counter, "topic" => topic.label(), "subscriber" => subscriber)
                    .increment(0);
            }
        }
    }
}

/// The started bus: its supervisor for the root, its database for the probes.
pub struct StartedBus {
    pub bus: EventBus,
    pub starter: Arc<dyn ServiceStarter>,
    pub dependencies: Vec<Arc<dyn Dependency>>,
}

enum Transport {
    Memory(MemoryBus),
    Redis(RedisStream),
}

/// What the relay is told after a publish.
#[derive(Debug)]
pub enum Published {
    /// On the in-process queues (this many new): the relay hears each seq on
    /// its `done` channel once every subscriber settled it.
    Queued(usize),
    /// Appended to the Redis stream: the rows can be marked published now.
    Appended,
}

/// The bus's messages.
pub enum BusMsg {
    Publish {
        records: Vec<OutboxRecord>,
        done: mpsc::UnboundedSender<i64>,
        reply: ractor::RpcReplyPort<Result<Published, ServiceError>>,
    },
}

/// What the bus worker and the [`EventBus`] handle share.
pub struct BusCore {
    transport: Transport,
    subscriptions: Vec<Subscription>,
    producers: Vec<Outbox>,
    dead_letters: DeadLetterStore,
    counters: HashMap<&'static str, Arc<DeliveryCounters>>,
    stop: watch::Sender<bool>,
    /// The relays' tasks, awaited at stop.
    relays: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A handle on the running bus (cheap to clone).
#[derive(Clone)]
pub struct EventBus {
    core: Arc<BusCore>,
}

/// The bus's single worker: publishing is sequential per process, and a
/// failure to publish (Redis down) is a failure the supervisor sees.
pub struct BusWorker;

impl WorkerHandler for BusWorker {
    type Msg = BusMsg;
    type Context = ();
    type State = Arc<BusCore>;
    type Args = Arc<BusCore>;

    async fn init(core: &Arc<BusCore>, _index: usize) -> Result<Arc<BusCore>, BoxError> {
        Ok(core.clone())
    }

    async fn handle(msg: BusMsg, _ctx: &(), core: &mut Arc<BusCore>) -> Result<(), BoxError> {
        match msg {
            BusMsg::Publish {
                records,
                done,
                reply,
            } => {
                let result = match &core.transport {
                    Transport::Memory(memory) => {
                        Ok(Published::Queued(memory.publish(records, &done)))
                    }
                    Transport::Redis(stream) => stream
                        .append(&records)
                        .await
                        .map(|()| Published::Appended)
                        .map_err(ServiceError::internal),
                };
                respond(reply, result)
            }
        }
    }
}

impl EventBus {
    /// Opens the dead-letter store, picks the transport, and starts the
    /// relays and the subscribers' consumers (they wait for the bus and the
    /// subscribers to be up: the root starts those).
    pub async fn start(config: BusConfig) -> Result<StartedBus, BusError> {
        let dead_letters = DeadLetterStore::open(&config.data_dir, &config.storage).await?;
        let transport = match &config.redis {
            Some(redis) => Transport::Redis(
                RedisStream::start(redis, &config.instance, config.settings.stream_claim_idle)
                    .map_err(BusError::Stream)?,
            ),
            None => Transport::Memory(MemoryBus::new(&config.subscriptions)),
        };
        register_metrics(&config.subscriptions);
        let (stop, stop_rx) = watch::channel(false);
        let counters = config
            .subscriptions
            .iter()
            .map(|s| (s.subscriber, Arc::new(DeliveryCounters::default())))
            .collect::<HashMap<_, _>>();
        let core = Arc::new(BusCore {
            transport,
            subscriptions: config.subscriptions.clone(),
            producers: config.producers.clone(),
            dead_letters: dead_letters.clone(),
            counters,
            stop,
            relays: std::sync::Mutex::new(Vec::new()),
        });
        let (handle, starter) = ServiceSupervisor::<BusWorker>::build(
            SERVICE_NAME,
            config.policy.clone(),
            1,
            config.call_timeout,
            core.clone(),
        );
        let bus = EventBus { core };
        bus.spawn_consumers(&config.settings, stop_rx.clone());
        let relays = config
            .producers
            .into_iter()
            .map(|outbox| {
                relay::spawn(
                    outbox,
                    handle.clone(),
                    config.settings.clone(),
                    config.instance.clone(),
                    stop_rx.clone(),
                )
            })
            .collect();
        *lock(&bus.core.relays) = relays;
        bus.spawn_inbox_purges(stop_rx.clone());
        bus.spawn_gauges(stop_rx);
        Ok(StartedBus {
            bus,
            starter,
            dependencies: vec![dead_letters.dependency()],
        })
    }

    fn settler(
        &self,
        subscription: &Subscription,
        settings: &EventsSettings,
        stop: watch::Receiver<bool>,
    ) -> Settler {
        Settler {
            subscription: subscription.clone(),
            dead_letters: self.core.dead_letters.clone(),
            max_attempts: settings.max_attempts,
            retry: Backoff {
                min: settings.retry_min,
                max: settings.retry_max,
            },
            counters: self
                .core
                .counters
                .get(subscription.subscriber)
                .cloned()
                .unwrap_or_default(),
            stop,
        }
    }

    fn spawn_consumers(&self, settings: &EventsSettings, stop: watch::Receiver<bool>) {
        let settlers: Vec<Settler> = self
            .core
            .subscriptions
            .iter()
            .map(|s| self.settler(s, settings, stop.clone()))
            .collect();
        match &self.core.transport {
            Transport::Memory(memory) => drop(memory.spawn_consumers(settlers)),
            Transport::Redis(stream) => {
                stream.spawn_trimmer(stop);
                for settler in settlers {
                    drop(stream.spawn_consumer(settler, settings.relay_batch));
                }
            }
        }
    }

    /// Deletes old applied-event ids of every subscriber, hourly.
    fn spawn_inbox_purges(&self, mut stop: watch::Receiver<bool>) {
        let inboxes: Vec<_> = self
            .core
            .subscriptions
            .iter()
            .filter_map(|s| s.inbox.clone())
            .collect();
        if inboxes.is_empty() {
            return;
        }
        tokio::spawn(async move {
            let mut every = tokio::time::interval(INBOX_PURGE_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = super::stopped(&mut stop) => return,
                }
                for inbox in &inboxes {
                    match inbox.purge(super::inbox::RETENTION).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            service = inbox.service(),
                            deleted = n,
                            "purged old processed-event ids"
                        ),
                        Err(err) => {
                            tracing::warn!(service = inbox.service(), error = %err, "cannot purge processed-event ids")
                        }
                    }
                }
            }
        });
    }

    /// Keeps `events_dead_letters{subscriber}` current.
    fn spawn_gauges(&self, mut stop: watch::Receiver<bool>) {
        let bus = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(GAUGE_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = super::stopped(&mut stop) => return,
                }
                bus.publish_gauges().await;
            }
        });
    }

    async fn publish_gauges(&self) {
        let waiting = match self.core.dead_letters.waiting().await {
            Ok(waiting) => waiting,
            Err(err) => {
                tracing::debug!(error = %err, "cannot count dead letters");
                return;
            }
        };
        for subscription in &self.core.subscriptions {
            let count = waiting
                .iter()
                .find(|(s, _)| s == subscription.subscriber)
                .map_or(0, |(_, n)| *n);
            metrics::gauge!("events_dead_letters", "subscriber" => subscription.subscriber)
                .set(count as f64);
        }
    }

    /// Stops the relays and consumers and waits for the relays to give their
    /// unsettled rows back: what was not settled stays in the outboxes (or
    /// pending in the stream) for the next start, or another replica.
    pub async fn stop(&self) {
        let _ = self.core.stop.send(true);
        let relays = std::mem::take(&mut *lock(&self.core.relays));
        for relay in relays {
            let _ = relay.await;
        }
    }

    pub fn transport(&self) -> &'static str {
        match self.core.transport {
            Transport::Memory(_) => "memory",
            Transport::Redis(_) => "redis_streams",
        }
    }

    /// Per subscriber and per producer: what `/admin/events` shows. A figure
    /// that cannot be read (its database or Redis down) is `null`, with the
    /// reason in `errors`: an outage is when an operator looks here.
    pub async fn overview(&self) -> EventsOverview {
        let mut errors = Vec::new();
        let waiting = match self.core.dead_letters.waiting().await {
            Ok(waiting) => Some(waiting),
            Err(err) => {
                errors.push(format!("dead letters: {err}"));
                None
            }
        };
        let mut subscribers = Vec::new();
        for subscription in &self.core.subscriptions {
            let name = subscription.subscriber;
            let counters = self.core.counters.get(name).cloned().unwrap_or_default();
            let backlog = match &self.core.transport {
                Transport::Memory(memory) => Some(
                    memory
                        .waiting(name)
                        .map(|w| w.summary())
                        .unwrap_or_default(),
                ),
                Transport::Redis(stream) => match stream.backlog(name).await {
                    Ok(backlog) => Some(backlog),
                    Err(err) => {
                        errors.push(format!("{name}: event stream: {err}"));
                        None
                    }
                },
            };
            use std::sync::atomic::Ordering::Relaxed;
            subscribers.push(SubscriberView {
                name,
                topics: subscription.topics.names(),
                delivered: counters.delivered.load(Relaxed),
                failed_attempts: counters.failed.load(Relaxed),
                pending: backlog.map(|(pending, _)| pending),
                lag_seconds: backlog.map(|(_, lag)| lag.map_or(0.0, |d| d.as_secs_f64())),
                dead_letters: waiting
                    .as_ref()
                    .map(|w| w.iter().find(|(s, _)| s == name).map_or(0, |(_, n)| *n)),
            });
        }
        let mut producers = Vec::new();
        for outbox in &self.core.producers {
            let backlog = match outbox.backlog().await {
                Ok(backlog) => Some(backlog),
                Err(err) => {
                    errors.push(format!("{} outbox: {err}", outbox.service()));
                    None
                }
            };
            producers.push(ProducerView {
                name: outbox.service(),
                unpublished: backlog.map(|b| b.unpublished),
                oldest_unpublished_seconds: backlog
                    .map(|b| b.oldest.map_or(0.0, |d| d.as_secs_f64())),
            });
        }
        EventsOverview {
            transport: self.transport(),
            subscribers,
            producers,
            errors,
        }
    }

    /// Appends a scripted `event` to `producer`'s outbox (fault-injection
    /// builds: the tests' way to feed subscribers events with a chosen id
    /// and `occurred_at` through the real relay and bus). `None`: no such
    /// producer here.
    #[cfg(feature = "fault-injection")]
    pub async fn inject(
        &self,
        producer: &str,
        event: &super::Event,
    ) -> Option<Result<(), StoreError>> {
        let outbox = self
            .core
            .producers
            .iter()
            .find(|o| o.service() == producer)?;
        Some(outbox.append(event).await)
    }

    pub async fn dead_letters(&self, all: bool, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        self.core.dead_letters.list(all, limit).await
    }

    /// Delivers a dead letter to its subscriber once more (one attempt, now).
    pub async fn replay(&self, id: Uuid) -> Result<DeadLetter, ReplayError> {
        let store = &self.core.dead_letters;
        let letter = store.get(id).await?.ok_or(ReplayError::NotFound)?;
        if letter.replayed_at.is_some() {
            return Err(ReplayError::AlreadyReplayed);
        }
        let subscription = self
            .core
            .subscriptions
            .iter()
            .find(|s| s.subscriber == letter.subscriber)
            .ok_or_else(|| ReplayError::NoSubscriber(letter.subscriber.clone()))?;
        let span = tracing::info_span!("replay", dead_letter = %id, event_id = %letter.event.id, subscriber = %letter.subscriber);
        let _entered = span.enter();
        match subscription.deliver(letter.event.clone()).await {
            Ok(()) => {
                store.replayed(id, Ok(())).await?;
                metrics::counter!("events_delivered_total", "topic" => letter.event.topic.label(), "subscriber" => subscription.subscriber)
                    .increment(1);
                tracing::info!("dead letter replayed");
                self.publish_gauges().await;
                store.get(id).await?.ok_or(ReplayError::NotFound)
            }
            Err(DeliveryError::Unavailable {
                retry_after,
                reason,
            }) => Err(ReplayError::Unavailable {
                retry_after,
                reason,
            }),
            Err(DeliveryError::Failed(reason)) => {
                store.replayed(id, Err(&reason)).await?;
                tracing::warn!(error = %reason, "dead letter failed again");
                Err(ReplayError::FailedAgain(reason))
            }
        }
    }
}

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("dead-letter store: {0}")]
    Store(#[from] StoreError),
    #[error("event stream: {0}")]
    Stream(String),
}

/// How often subscribers' old processed-event ids are deleted.
const INBOX_PURGE_EVERY: Duration = Duration::from_secs(60 * 60);

/// How often the dead-letter gauge is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("dead letter not found")]
    NotFound,
    #[error("dead letter was replayed already")]
    AlreadyReplayed,
    #[error("subscriber {0} is not running in this process (disabled?)")]
    NoSubscriber(String),
    #[error("the subscriber is unavailable: {reason}")]
    Unavailable {
        retry_after: Duration,
        reason: String,
    },
    #[error("the subscriber failed again: {0}; the dead letter is kept")]
    FailedAgain(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Serialize)]
pub struct EventsOverview {
    pub transport: &'static str,
    pub subscribers: Vec<SubscriberView>,
    pub producers: Vec<ProducerView>,
    /// Figures that could not be read, and why.
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SubscriberView {
    pub name: &'static str,
    pub topics: Vec<&'static str>,
    /// Applied by this process since it started.
    pub delivered: u64,
    /// Failed attempts in this process since it started.
    pub failed_attempts: u64,
    /// Handed to the subscriber and not settled yet (Redis: for the whole
    /// group, read or not).
    pub pending: Option<u64>,
    /// How long the oldest pending event has waited.
    pub lag_seconds: Option<f64>,
    /// Dead letters waiting for a replay.
    pub dead_letters: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ProducerView {
    pub name: &'static str,
    /// Committed events not yet handed on.
    pub unpublished: Option<u64>,
    pub oldest_unpublished_seconds: Option<f64>,
}
