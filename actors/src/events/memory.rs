//! The in-process transport (no Redis): the bus puts each event on a queue
//! per subscribing service, and a consumer task per subscriber settles them
//! up to its concurrency. Queues live in memory only; an event leaves its
//! outbox (is marked published) when every subscriber has settled it, so a
//! process killed with events on these queues delivers them again after it
//! restarts, and subscribers' processed-event tables make that harmless.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::delivery::{Attempt, Settled, Settler};
use super::outbox::OutboxRecord;
use super::{lock, Event, Subscription};

/// An event on its way to one subscriber.
struct Delivery {
    event: Event,
    ticket: Arc<Ticket>,
}

/// Counts the subscribers that still owe an event; the last one to settle it
/// tells the relay, which marks the outbox row published.
struct Ticket {
    remaining: AtomicUsize,
    seq: i64,
    event_id: Uuid,
    done: mpsc::UnboundedSender<i64>,
    in_flight: Arc<Mutex<HashSet<Uuid>>>,
}

impl Ticket {
    fn settled(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            lock(&self.in_flight).remove(&self.event_id);
            // The relay may have stopped (shutdown): the row then stays
            // unpublished and is delivered again after the restart.
            let _ = self.done.send(self.seq);
        }
    }
}

/// The events waiting for one subscriber, oldest first (UUIDv7 ids sort by time).
#[derive(Default)]
pub struct Waiting(Mutex<BTreeMap<Uuid, OffsetDateTime>>);

impl Waiting {
    /// How many, and how long the oldest has waited.
    pub fn summary(&self) -> (u64, Option<Duration>) {
        let waiting = lock(&self.0);
        let oldest = waiting
            .values()
            .min()
            .map(|at| Duration::try_from(OffsetDateTime::now_utc() - *at).unwrap_or_default());
        (waiting.len() as u64, oldest)
    }
}

struct Queue {
    subscription: Subscription,
    sender: mpsc::UnboundedSender<Delivery>,
    waiting: Arc<Waiting>,
}

pub struct MemoryBus {
    queues: Vec<Queue>,
    receivers: Mutex<Vec<mpsc::UnboundedReceiver<Delivery>>>,
    /// Events on the queues now: one lease running out must not queue an
    /// event twice.
    in_flight: Arc<Mutex<HashSet<Uuid>>>,
}

impl MemoryBus {
    pub fn new(subscriptions: &[Subscription]) -> Self {
        let mut queues = Vec::new();
        let mut receivers = Vec::new();
        for subscription in subscriptions {
            let (sender, receiver) = mpsc::unbounded_channel();
            queues.push(Queue {
                subscription: subscription.clone(),
                sender,
                waiting: Arc::new(Waiting::default()),
            });
            receivers.push(receiver);
        }
        Self {
            queues,
            receivers: Mutex::new(receivers),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Queues each record for its subscribers; `done` hears its seq once all
    /// have settled it (at once when nobody subscribes). Answers how many
    /// records were new (not already on the queues).
    pub fn publish(&self, records: Vec<OutboxRecord>, done: &mpsc::UnboundedSender<i64>) -> usize {
        let mut accepted = 0;
        for record in records {
            if !lock(&self.in_flight).insert(record.event.id) {
                continue;
            }
            accepted += 1;
            metrics::counter!("events_published_total", "topic" => record.event.topic.label())
                .increment(1);
            let targets: Vec<&Queue> = self
                .queues
                .iter()
                .filter(|q| q.subscription.wants(&record.event.topic))
                .collect();
            let ticket = Arc::new(Ticket {
                remaining: AtomicUsize::new(targets.len() + 1),
                seq: record.seq,
                event_id: record.event.id,
                done: done.clone(),
                in_flight: self.in_flight.clone(),
            });
            for queue in targets {
                lock(&queue.waiting.0).insert(record.event.id, record.event.occurred_at);
                let delivery = Delivery {
                    event: record.event.clone(),
                    ticket: ticket.clone(),
                };
                if queue.sender.send(delivery).is_err() {
                    // The consumer has stopped (shutdown): the event stays in
                    // its outbox for the next start.
                    lock(&queue.waiting.0).remove(&record.event.id);
                }
            }
            // The publisher's own share: settles a topic nobody consumes.
            ticket.settled();
        }
        accepted
    }

    /// The waiting events of `subscriber`.
    pub fn waiting(&self, subscriber: &str) -> Option<Arc<Waiting>> {
        self.queues
            .iter()
            .find(|q| q.subscription.subscriber == subscriber)
            .map(|q| q.waiting.clone())
    }

    /// Starts one consumer task per subscriber (once).
    pub fn spawn_consumers(&self, settlers: Vec<Settler>) -> Vec<JoinHandle<()>> {
        let receivers = std::mem::take(&mut *lock(&self.receivers));
        receivers
            .into_iter()
            .zip(settlers)
            .zip(self.queues.iter().map(|q| q.waiting.clone()))
            .map(|((receiver, settler), waiting)| tokio::spawn(consume(receiver, settler, waiting)))
            .collect()
    }
}

/// How many waiting events a consumer hands its subscriber in one message at most.
const DELIVERY_BATCH: usize = 256;

/// Settles a subscriber's deliveries: whatever is queued goes to the
/// subscriber as one batch (up to [`DELIVERY_BATCH`]), up to its
/// concurrency of batches at once. An event whose first attempt failed is
/// retried on its own, without holding up the next batches.
async fn consume(
    mut receiver: mpsc::UnboundedReceiver<Delivery>,
    settler: Settler,
    waiting: Arc<Waiting>,
) {
    let slots = Arc::new(Semaphore::new(settler.subscription.concurrency));
    let mut stop = settler.stop.clone();
    let mut batch = Vec::with_capacity(DELIVERY_BATCH);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let received = tokio::select! {
            received = receiver.recv_many(&mut batch, DELIVERY_BATCH) => received,
            _ = super::stopped(&mut stop) => 0,
        };
        if received == 0 {
            return;
        }
        let deliveries = std::mem::take(&mut batch);
        let (settler, waiting) = (settler.clone(), waiting.clone());
        tokio::spawn(async move {
            let events: Vec<Event> = deliveries.iter().map(|d| d.event.clone()).collect();
            let attempts = settler.attempt_all(&events).await;
            drop(slot);
            for (delivery, attempt) in deliveries.into_iter().zip(attempts) {
                if attempt == Attempt::Applied {
                    lock(&waiting.0).remove(&delivery.event.id);
                    delivery.ticket.settled();
                    continue;
                }
                let (settler, waiting) = (settler.clone(), waiting.clone());
                tokio::spawn(async move {
                    let id = delivery.event.id;
                    let outcome = settler.settle_after(delivery.event, attempt).await;
                    lock(&waiting.0).remove(&id);
                    if outcome != Settled::Abandoned {
                        delivery.ticket.settled();
                    }
                });
            }
        });
    }
}
