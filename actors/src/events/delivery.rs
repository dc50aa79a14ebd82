//! Settling one event with one subscriber: deliver, retry failures with
//! backoff, and after `events.max_attempts` keep it as a dead letter. Both
//! transports (in-process and Redis Streams) settle events this way and
//! acknowledge only what is settled, so an event abandoned half-way (the
//! process stopping or killed) is delivered again later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use supervision::Backoff;
use tokio::sync::watch;
use tracing::Instrument;

use super::dead_letters::DeadLetterStore;
use super::{DeliveryError, Event, Subscription};

/// How a delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The subscriber applied it (or had applied it before).
    Applied,
    /// It failed every attempt and is kept as a dead letter.
    DeadLettered,
    /// The process is stopping: not settled, it will come again.
    Abandoned,
}

/// How long to wait for a subscriber that is not taking messages, at most:
/// its `retry_after` may be long (an open circuit), but a closed one should
/// be noticed soon.
const UNAVAILABLE_WAIT_MAX: Duration = Duration::from_secs(2);

/// How often a dead letter that cannot be written (its database down) is tried again.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// What a subscriber's deliveries have done since the process started.
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dead_lettered: AtomicU64,
}

/// Everything settling needs besides the event.
#[derive(Clone)]
pub struct Settler {
    pub subscription: Subscription,
    pub dead_letters: DeadLetterStore,
    pub max_attempts: u32,
    pub retry: Backoff,
    pub counters: Arc<DeliveryCounters>,
    pub stop: watch::Receiver<bool>,
}

/// The first attempt at one event of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Applied (or applied before): settled.
    Applied,
    /// This event's delivery failed (or its subscriber was unavailable).
    Failed(DeliveryError),
    /// Not known: the batch's delivery failed as a whole (its worker
    /// crashed or timed out), so which event is at fault is not known and
    /// the attempt does not count; the event is tried again alone.
    NotTried,
}

impl Settler {
    /// Settles one event from scratch.
    pub async fn settle(&self, event: Event) -> Settled {
        self.settle_after(event, Attempt::NotTried).await
    }

    /// One attempt at all of `events` together (one message to the
    /// subscriber, whose writes then share transactions): per event, what
    /// came of it. The applied ones are settled; the others are for
    /// [`Settler::settle_after`].
    pub async fn attempt_all(&self, events: &[Event]) -> Vec<Attempt> {
        if *self.stop.borrow() {
            return vec![Attempt::NotTried; events.len()];
        }
        let span = tracing::info_span!(
            "events",
            count = events.len(),
            subscriber = self.subscription.subscriber,
        );
        match self
            .subscription
            .deliver_all(events.to_vec())
            .instrument(span)
            .await
        {
            Ok(results) => events
                .iter()
                .zip(results)
                .map(|(event, result)| match result {
                    Ok(()) => {
                        self.applied(event);
                        Attempt::Applied
                    }
                    Err(err) => Attempt::Failed(err),
                })
                .collect(),
            Err(err) => {
                tracing::debug!(error = %err, count = events.len(), "a batch of events failed as a whole; each is tried alone");
                vec![Attempt::NotTried; events.len()]
            }
        }
    }

    /// Settles an event whose first attempt came to `first`: retrying,
    /// waiting for an unavailable subscriber, dead-lettering.
    pub async fn settle_after(&self, event: Event, first: Attempt) -> Settled {
        if first == Attempt::Applied {
            return Settled::Applied;
        }
        let span = tracing::info_span!(
            "event",
            event_id = %event.id,
            topic = %event.topic,
            subscriber = self.subscription.subscriber,
            request_id = event.request_id.as_deref().unwrap_or(""),
        );
        let first = match first {
            Attempt::Failed(err) => Some(err),
            _ => None,
        };
        self.settle_inner(event, first).instrument(span).await
    }

    fn applied(&self, event: &Event) {
        let subscriber = self.subscription.subscriber;
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("events_delivered_total", "topic" => event.topic.label(), "subscriber" => subscriber)
            .increment(1);
        metrics::histogram!("event_delivery_lag_seconds", "subscriber" => subscriber)
            .record(event.age().as_secs_f64());
    }

    async fn settle_inner(&self, event: Event, mut first: Option<DeliveryError>) -> Settled {
        let subscriber = self.subscription.subscriber;
        let mut failures = 0u32;
        loop {
            if *self.stop.borrow() {
                return Settled::Abandoned;
            }
            let attempt = match first.take() {
                Some(err) => Err(err),
                None => self.subscription.deliver(event.clone()).await,
            };
            let wait = match attempt {
                Ok(()) => {
                    self.applied(&event);
                    tracing::debug!("event applied");
                    return Settled::Applied;
                }
                Err(DeliveryError::Unavailable {
                    retry_after,
                    reason,
                }) => {
                    tracing::debug!(%reason, "subscriber unavailable; the event waits");
                    retry_after.clamp(Duration::from_millis(50), UNAVAILABLE_WAIT_MAX)
                }
                Err(DeliveryError::Failed(reason)) => {
                    failures += 1;
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("events_failed_total", "topic" => event.topic.label(), "subscriber" => subscriber)
                        .increment(1);
                    if failures >= self.max_attempts {
                        return self.bury(&event, failures, &reason).await;
                    }
                    tracing::warn!(attempt = failures, error = %reason, "event delivery failed; retrying");
                    self.retry.ceiling(failures)
                }
            };
            if !self.pause(wait).await {
                return Settled::Abandoned;
            }
        }
    }

    /// Writes the dead letter, retrying while its database is down: the
    /// delivery is acknowledged only once the letter is safe.
    async fn bury(&self, event: &Event, attempts: u32, reason: &str) -> Settled {
        let subscriber = self.subscription.subscriber;
        loop {
            match self
                .dead_letters
                .put(subscriber, event, attempts, reason)
                .await
            {
                Ok(id) => {
                    self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(dead_letter = %id, attempts, error = %reason, "event dead-lettered");
                    return Settled::DeadLettered;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot store the dead letter; retrying");
                    if !self.pause(DEAD_LETTER_RETRY).await {
                        return Settled::Abandoned;
                    }
                }
            }
        }
    }

    /// Sleeps, unless the process stops first (then `false`).
    async fn pause(&self, wait: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => !*stop.borrow(),
            _ = super::stopped(&mut stop) => false,
        }
    }
}
