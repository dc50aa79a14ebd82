//! Events between services: nothing a service accepted is lost.
//!
//! * A service writes its state change and its [`Event`] into its own
//!   **outbox** table in one transaction ([`outbox`]); nothing else is needed
//!   for the event to be delivered eventually, even if the process is killed
//!   the next instant.
//! * A **relay** per producing service ([`relay`]) claims committed outbox
//!   rows and hands them to the **event bus** ([`bus`]), an actor in the
//!   supervision tree, which fans them out to the subscribing services —
//!   in-process by default, through Redis Streams with one consumer group per
//!   subscriber when replicas share Redis ([`stream`]).
//! * Delivery is at-least-once. A subscriber records the ids of the events
//!   it applied in its own database, in the same transaction as the effect
//!   ([`inbox`]), so a redelivered event changes nothing.
//! * A delivery that fails is retried with backoff; after
//!   `events.max_attempts` the event is kept in the **dead-letter** store
//!   ([`dead_letters`], the bus's own database) with its last error, for the
//!   operator to see and replay (`/admin/events`). A subscriber whose circuit
//!   is open is not failing *this* event: its events wait, uncounted.

pub mod bus;
pub mod dead_letters;
pub mod delivery;
pub mod inbox;
pub mod memory;
pub mod outbox;
pub mod relay;
pub mod stream;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use supervision::{CallError, ServiceHandle};
use time::OffsetDateTime;
use tracing::Instrument;
use uuid::Uuid;

use crate::ServiceError;

pub use bus::{EventBus, EventsSettings};
pub use outbox::Outbox;

/// What a service publishes (API.md, Events). Serialized as is into the
/// outbox, the stream and the dead-letter store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: Uuid,
    pub topic: Topic,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// The request that caused it, so one request can be followed from the
    /// HTTP call to the last consumer in the logs.
    pub request_id: Option<String>,
    /// The user who acted, if any.
    pub actor_id: Option<Uuid>,
    pub data: serde_json::Value,
    /// The W3C trace context of the span that caused it, when traces are on:
    /// its deliveries continue that trace. Absent from events written
    /// before (or with traces off), which still decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Event {
    /// A new event (UUIDv7 id: ids sort by creation time), in the trace of
    /// the current span (when traces are on).
    pub fn new(
        topic: Topic,
        request_id: Option<&str>,
        actor_id: Option<Uuid>,
        data: &impl Serialize,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            id: Uuid::now_v7(),
            topic,
            occurred_at: crate::storage::now_micros(),
            request_id: request_id.map(str::to_owned),
            actor_id,
            data: serde_json::to_value(data)?,
            traceparent: supervision::trace::current_traceparent(),
        })
    }

    /// The same event in the trace of `traceparent` instead (an event made
    /// away from the span that caused it, in a group-commit writer).
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        if traceparent.is_some() {
            self.traceparent = traceparent;
        }
        self
    }

    /// A copy whose `traceparent` is the current span's when that span is in
    /// this event's trace (the subscriber applying it), else the event's
    /// own: what a subscriber's writer announces as a consequence of this
    /// event then continues from where the subscriber handled it. In a batch
    /// the work runs in the first event's trace, so the others keep theirs.
    pub fn continued_here(&self) -> Event {
        let mut copy = self.clone();
        if let Some(current) = supervision::trace::current_traceparent() {
            let same_trace = match &self.traceparent {
                Some(own) => trace_id(own).is_some() && trace_id(own) == trace_id(&current),
                None => true,
            };
            if same_trace {
                copy.traceparent = Some(current);
            }
        }
        copy
    }

    /// The event's `data` read as the payload type its topic carries.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, ServiceError> {
        T::deserialize(&self.data).map_err(|e| {
            ServiceError::Conflict(format!(
                "event {} ({}) has a malformed payload: {e}",
                self.id, self.topic
            ))
        })
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Seconds from the event to now (0 if the clocks disagree).
    pub fn age(&self) -> Duration {
        let age = OffsetDateTime::now_utc() - self.occurred_at;
        Duration::try_from(age).unwrap_or_default()
    }
}

/// The name of a kind of event (API.md, Events): `<resource>.<what happened>`.
///
/// Topics belong to their publisher: each publishing service declares the
/// ones it publishes as constants in its own `topics.rs`
/// (`orders::topics::ORDER_CREATED`), and subscribers name those. The bus
/// carries any topic, so a new service adds topics without an edit here.
/// Topics read back from storage or a stream are checked by
/// [`Topic::parse`]'s rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Cow<'static, str>);

impl Topic {
    /// A topic a service publishes; its name follows [`Topic::parse`]'s rules
    /// (checked by the publisher's tests: `topics_are_well_formed`).
    pub const fn new(name: &'static str) -> Self {
        Topic(Cow::Borrowed(name))
    }

    /// A topic named at run time: two or more dot-separated parts of
    /// lowercase ASCII letters, digits and `_`, at most 100 characters.
    pub fn parse(name: &str) -> Result<Self, String> {
        let part_ok = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if name.len() <= 100 && name.contains('.') && name.split('.').all(part_ok) {
            Ok(Topic(Cow::Owned(name.to_owned())))
        } else {
            Err(format!(
                "`{name}` is not a topic (dot-separated lowercase words, e.g. `order.created`)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a metrics label (no copy for a declared topic).
    pub fn label(&self) -> Cow<'static, str> {
        self.0.clone()
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Topic {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Topic {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Topic::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// The topics a subscriber takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topics {
    /// These, by name.
    Named(&'static [Topic]),
    /// Every topic, present and future (audit, analytics).
    All,
}

impl Topics {
    pub fn contains(&self, topic: &Topic) -> bool {
        match self {
            Topics::Named(topics) => topics.contains(topic),
            Topics::All => true,
        }
    }

    /// What `/admin/events` shows: the names, or `*` for every topic.
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            Topics::Named(topics) => topics.iter().map(Topic::as_str).collect(),
            Topics::All => vec!["*"],
        }
    }
}

/// Why a delivery did not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The subscriber is not taking messages (circuit open, restarting): the
    /// event waits for it and the attempt does not count.
    #[error("subscriber unavailable: {reason}")]
    Unavailable {
        retry_after: Duration,
        reason: String,
    },
    /// The subscriber tried and failed (an error, a panic, a timeout): the
    /// attempt counts towards `events.max_attempts`.
    #[error("{0}")]
    Failed(String),
}

/// The reply a subscriber's worker sends once it has applied an event (or
/// found it applied before).
pub type Applied = RpcReplyPort<Result<(), ServiceError>>;

/// The reply to a batch of events: one outcome per event, in order.
pub type AppliedAll = RpcReplyPort<Vec<Result<(), ServiceError>>>;

type DeliverFn = dyn Fn(Event) -> BoxFuture<'static, Result<(), DeliveryError>> + Send + Sync;

/// Delivers a batch in one message: per event, or an error for the whole.
type DeliverAllFn = dyn Fn(Vec<Event>) -> BoxFuture<'static, Result<Vec<Result<(), DeliveryError>>, DeliveryError>>
    + Send
    + Sync;

/// A service's subscription: the topics it consumes and how an event reaches
/// its workers.
#[derive(Clone)]
pub struct Subscription {
    pub subscriber: &'static str,
    pub topics: Topics,
    /// How many events it is handed at once (its worker count).
    pub concurrency: usize,
    deliver: Arc<DeliverFn>,
    /// One permit per event message in flight to it, `concurrency` in all:
    /// a backlog of single events (a batch of the bus, or retries coming
    /// due together) reaches it at its pace, not as hundreds of calls that
    /// fill its queue and shed its own users' requests.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// How a batch reaches it in one message, if it takes batches.
    deliver_all: Option<Arc<DeliverAllFn>>,
    /// Its applied-event ids, purged hourly past [`inbox::RETENTION`].
    pub inbox: Option<inbox::Inbox>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("subscriber", &self.subscriber)
            .field("topics", &self.topics)
            .finish()
    }
}

impl Subscription {
    /// Events reach the service as a message built by `message`, asked
    /// through its supervised handle like any request: its crash, timeout
    /// or open circuit follows the supervision rules. They carry the
    /// default context (no caller: the event's cause is in the event).
    pub fn new<M: Send + 'static, C: Default + supervision::Deadline + Send + Sync + 'static>(
        subscriber: &'static str,
        topics: Topics,
        concurrency: usize,
        handle: ServiceHandle<M, C>,
        message: fn(Event, Applied) -> M,
    ) -> Self {
        let deliver = move |event: Event| -> BoxFuture<'static, Result<(), DeliveryError>> {
            let handle = handle.clone();
            Box::pin(async move {
                match handle.call(|reply| message(event, reply)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(err)) => Err(refused(err)),
                    Err(err) => Err(call_failure(err)),
                }
            })
        };
        Self::of(subscriber, topics, concurrency, Arc::new(deliver))
    }

    fn of(
        subscriber: &'static str,
        topics: Topics,
        concurrency: usize,
        deliver: Arc<DeliverFn>,
    ) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            subscriber,
            topics,
            concurrency,
            deliver,
            in_flight: Arc::new(tokio::sync::Semaphore::new(concurrency)),
            deliver_all: None,
            inbox: None,
        }
    }

    /// The service also takes events in batches, as one message built by
    /// `message`, answering per event: the bus hands it whatever is waiting
    /// at once, so one worker applies them together (and its writer commits
    /// them in one transaction) instead of one message per event.
    pub fn with_batches<
        M: Send + 'static,
        C: Default + supervision::Deadline + Send + Sync + 'static,
    >(
        mut self,
        handle: ServiceHandle<M, C>,
        message: fn(Vec<Event>, AppliedAll) -> M,
    ) -> Self {
        let deliver_all = move |events: Vec<Event>| -> BoxFuture<
            'static,
            Result<Vec<Result<(), DeliveryError>>, DeliveryError>,
        > {
            let handle = handle.clone();
            Box::pin(async move {
                let results = handle
                    .call(|reply| message(events, reply))
                    .await
                    .map_err(call_failure)?;
                Ok(results
                    .into_iter()
                    .map(|result| result.map_err(refused))
                    .collect())
            })
        };
        self.deliver_all = Some(Arc::new(deliver_all));
        self
    }

    /// Where the service records applied events, so the bus purges old ones.
    pub fn with_inbox(mut self, inbox: inbox::Inbox) -> Self {
        self.inbox = Some(inbox);
        self
    }

    pub fn wants(&self, topic: &Topic) -> bool {
        self.topics.contains(topic)
    }

    /// One delivery attempt (in a span of its own when traces are on),
    /// once fewer than `concurrency` others are in flight.
    pub async fn deliver(&self, event: Event) -> Result<(), DeliveryError> {
        // The semaphore is never closed; were it, the delivery would go
        // ahead unbounded rather than never.
        let _permit = self.in_flight.acquire().await.ok();
        let span = delivery_span(&event, self.subscriber, 1);
        (self.deliver)(event).instrument(span).await
    }

    /// One attempt at each of `events`: in one message if the service takes
    /// batches, else one message each, `concurrency` at a time (across
    /// every batch and retry). `Err`: the batch's message failed as a whole.
    pub async fn deliver_all(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<Result<(), DeliveryError>>, DeliveryError> {
        match &self.deliver_all {
            Some(deliver_all) if events.len() > 1 => {
                // Each event's trace gets its delivery span; the batch's one
                // message (and the subscriber's work for it) runs in the
                // first's, linked to the others.
                let spans: Vec<tracing::Span> = events
                    .iter()
                    .map(|event| delivery_span(event, self.subscriber, events.len()))
                    .collect();
                let lead = spans.first().cloned().unwrap_or_else(tracing::Span::none);
                for event in events.iter().skip(1) {
                    if let Some(traceparent) = &event.traceparent {
                        supervision::trace::add_link(&lead, traceparent);
                    }
                }
                let results = deliver_all(events).instrument(lead).await;
                drop(spans);
                results
            }
            _ => Ok(futures::future::join_all(events.into_iter().map(|e| self.deliver(e))).await),
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

/// The span of one delivery of `event` to `subscriber` when traces are on
/// (none otherwise): a consumer span continuing the event's trace, so that
/// what the subscriber does for it is in the trace of the request that
/// caused the event. Its fields are those of the delivery's log span too.
fn delivery_span(event: &Event, subscriber: &'static str, batch: usize) -> tracing::Span {
    if !supervision::trace::enabled() {
        return tracing::Span::none();
    }
    let name = format!("process {}", event.topic);
    let span = tracing::info_span!(
        "event",
        otel.name = name.as_str(),
        otel.kind = "consumer",
        event_id = %event.id,
        topic = event.topic.as_str(),
        subscriber,
        request_id = event.request_id.as_deref().unwrap_or(""),
        messaging.system = "stageworks",
        messaging.operation.type = "process",
        messaging.destination.name = event.topic.as_str(),
        messaging.message.id = %event.id,
        messaging.consumer.group.name = subscriber,
        messaging.batch.message_count = batch,
    );
    if let Some(traceparent) = &event.traceparent {
        supervision::trace::set_parent(&span, traceparent);
    }
    span
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (sets and counters updated in one step).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Resolves once `stop` turns true (the process is shutting down).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A subscriber's answer of failure: its database being down (a 503) is
/// waited out like an open circuit, without spending an attempt; anything
/// else counts.
fn refused(err: ServiceError) -> DeliveryError {
    match err.retry_after() {
        Some(retry_after) if err.status() == http::StatusCode::SERVICE_UNAVAILABLE => {
            DeliveryError::Unavailable {
                retry_after,
                reason: err.to_string(),
            }
        }
        _ => DeliveryError::Failed(err.to_string()),
    }
}

fn call_failure(err: CallError) -> DeliveryError {
    match err {
        // Load and an open circuit are no reason to give up on the event:
        // it waits without spending an attempt.
        CallError::CircuitOpen { retry_after, .. }
        | CallError::Unavailable { retry_after, .. }
        | CallError::Shed { retry_after, .. }
        | CallError::DependencyDown { retry_after, .. } => DeliveryError::Unavailable {
            retry_after,
            reason: err.to_string(),
        },
        CallError::Timeout { .. } | CallError::Crashed { .. } => {
            DeliveryError::Failed(err.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_the_api_documents_them() {
        let event = Event::new(
            Topic::new("order.created"),
            Some("req-1"),
            None,
            &serde_json::json!({"a": 1}),
        )
        .expect("serializable");
        let json: serde_json::Value =
            serde_json::from_str(&event.to_json().expect("json")).expect("parse");
        assert_eq!(json["topic"], "order.created");
        assert_eq!(json["request_id"], "req-1");
        assert!(json["actor_id"].is_null());
        assert_eq!(json["data"]["a"], 1);
        assert_eq!(
            Event::from_json(&event.to_json().expect("json")).expect("back"),
            event
        );
    }

    #[test]
    fn the_trace_context_is_optional_on_the_wire() {
        // Written before traces existed (outbox rows, stream entries, dead
        // letters): no `traceparent` member, and it still decodes.
        let old = r#"{"id":"0190b3a0-0000-7000-8000-000000000001","topic":"order.created",
            "occurred_at":"2026-01-01T00:00:00Z","request_id":null,"actor_id":null,"data":{}}"#;
        let event = Event::from_json(old).expect("an event of before");
        assert_eq!(event.traceparent, None);
        // Without one it is not written either, so the JSON is as before.
        assert!(!event.to_json().expect("json").contains("traceparent"));
        let traced = event.with_traceparent(Some(
            "00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-01".into(),
        ));
        let back = Event::from_json(&traced.to_json().expect("json")).expect("back");
        assert_eq!(back.traceparent, traced.traceparent);
        assert_eq!(
            trace_id(back.traceparent.as_deref().unwrap_or_default()),
            Some("5b8aa5a2d2c872e8321cf37308d69df2")
        );
    }

    #[test]
    fn topics_travel_as_their_names_and_nothing_else_reads_as_one() {
        let topic = Topic::new("order.created");
        let json = serde_json::to_value(&topic).expect("json");
        assert_eq!(json, "order.created");
        assert_eq!(serde_json::from_value::<Topic>(json).expect("back"), topic);
        for bad in [
            "",
            "order",
            "Order.created",
            "order..created",
            "order.created ",
            "a.b-c",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad:?} is not a topic");
            assert!(serde_json::from_value::<Topic>(serde_json::json!(bad)).is_err());
        }
        assert!(Topics::All.contains(&Topic::new("anything.new")));
        const NAMED: Topics = Topics::Named(&[Topic::new("order.created")]);
        let named = NAMED;
        assert!(named.contains(&topic));
        assert!(!named.contains(&Topic::new("order.cancelled")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_reaches_a_subscriber_of_single_events_at_its_concurrency() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, m) = (now.clone(), most.clone());
        let deliver = move |_event: Event| -> BoxFuture<'static, Result<(), DeliveryError>> {
            let (now, most) = (n.clone(), m.clone());
            Box::pin(async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
        };
        let subscription = Subscription::of("counter", Topics::All, 3, Arc::new(deliver));
        let events: Vec<Event> = (0..100)
            .map(|i| {
                Event::new(
                    Topic::new("order.created"),
                    None,
                    None,
                    &serde_json::json!({"i": i}),
                )
                .expect("serializable")
            })
            .collect();
        // Two batches at once, as the bus hands them out, and a retry.
        let (first, second, retry) = tokio::join!(
            subscription.deliver_all(events[..50].to_vec()),
            subscription.deliver_all(events[50..].to_vec()),
            subscription.deliver(events[0].clone()),
        );
        let results: Vec<_> = first
            .expect("delivered")
            .into_iter()
            .chain(second.expect("delivered"))
            .collect();
        assert_eq!(results.len(), 100);
        assert!(results.iter().all(Result::is_ok));
        assert!(retry.is_ok());
        assert_eq!(
            most.load(Ordering::SeqCst),
            3,
            "events in flight at once (the subscriber's concurrency is 3)"
        );
    }
}
