//! Delivery: the senders that drain the queue, and the providers they send
//! through, each provider a supervised service of its own.
//!
//! One sender task per configured channel claims due notifications for a
//! lease ([`NotificationsStore::claim`]), sends each through its channel's
//! provider, at most `senders` at once and `per_second` a second, and
//! settles it: `sent`; `retrying` with exponential backoff and jitter
//! (the supervisor's [`Backoff`]); `dead` once `max_attempts` ran out or the
//! provider rejected it for good. It sleeps until a commit wakes it, or
//! `poll_every` passes (retries coming due, other replicas' rows).
//!
//! A provider is a [`ServiceSupervisor`] (`notifications-email`, …) whose
//! workers call it: a send that fails in a way that may pass (connection
//! refused, 5xx, timeout) is also its worker's failure, so a provider that
//! keeps failing opens its own circuit, visible in `/admin/actors`, while
//! the others go on. Its notifications then wait — put back without
//! spending an attempt — until the circuit lets a call through again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use ractor::RpcReplyPort;
use supervision::{Backoff, BoxError, CallError, ServiceHandle, WorkerHandler};
use tokio::sync::Notify;

use super::model::Channel;
use super::providers::{Delivery, Provider, PushKeys, SendError};
use super::store::{Claimed, NotificationsStore, Settle};
use super::topics::{NOTIFICATION_DEAD, NOTIFICATION_SENT};
use crate::events::Event;
use crate::storage::{now_micros, unix_millis};

/// A message rendered and addressed, as a provider's worker takes it.
pub struct Outgoing {
    pub id: uuid::Uuid,
    pub to: String,
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
    pub push: Option<PushKeys>,
}

pub enum ProviderMsg {
    Send {
        message: Outgoing,
        reply: RpcReplyPort<Result<(), SendError>>,
    },
}

/// The worker behind a provider's service.
pub struct ProviderWorker;

impl WorkerHandler for ProviderWorker {
    type Msg = ProviderMsg;
    type Context = ();
    type State = Arc<dyn Provider>;
    type Args = Arc<dyn Provider>;

    async fn init(
        provider: &Arc<dyn Provider>,
        _index: usize,
    ) -> Result<Arc<dyn Provider>, BoxError> {
        Ok(provider.clone())
    }

    async fn handle(
        msg: ProviderMsg,
        _ctx: &(),
        provider: &mut Arc<dyn Provider>,
    ) -> Result<(), BoxError> {
        let ProviderMsg::Send { message, reply } = msg;
        let delivery = Delivery {
            id: message.id,
            to: &message.to,
            subject: message.subject.as_deref(),
            body: &message.body,
            html: message.html.as_deref(),
            push: message.push.as_ref(),
        };
        let channel = provider.channel().as_str();
        let started = Instant::now();
        let result = provider.send(&delivery).await;
        metrics::histogram!("notification_send_duration_seconds", "channel" => channel)
            .record(started.elapsed().as_secs_f64());
        let failure = match &result {
            Err(
                SendError::Retryable(reason)
                | SendError::Throttled {
                    message: reason, ..
                },
            ) => Some(reason.clone()),
            _ => None,
        };
        let _ = reply.send(result);
        match failure {
            // The provider, not the message: counted towards its circuit.
            Some(reason) => Err(format!("{channel} provider failed: {reason}").into()),
            None => Ok(()),
        }
    }
}

pub type ProviderHandle = ServiceHandle<ProviderMsg, ()>;

/// What the senders of one channel need.
#[derive(Clone)]
pub struct Sender {
    pub channel: Channel,
    pub provider: ProviderHandle,
    pub store: NotificationsStore,
    /// Who holds what this process claimed (its instance id).
    pub holder: Arc<str>,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub lease: Duration,
    /// The longest one send through the provider may take (its call
    /// timeout); the settings keep it below `lease`.
    pub send_timeout: Duration,
    pub senders: usize,
    pub per_second: u32,
    pub poll_every: Duration,
    pub wake: Arc<Notify>,
}

/// How one claimed notification ended.
enum Outcome {
    Sent,
    Failed {
        error: String,
        permanent: bool,
        /// The provider asked to wait at least this long (`retry-after`).
        not_before: Option<Duration>,
    },
    /// Not tried: the provider is not taking calls now.
    Waiting {
        retry_after: Duration,
    },
}

impl Outcome {
    /// A failure with no wait asked for (no `retry-after`).
    fn failed(error: impl Into<String>, permanent: bool) -> Self {
        Outcome::Failed {
            error: error.into(),
            permanent,
            not_before: None,
        }
    }
}

impl Sender {
    /// Claims, sends, settles, until the store closes (the process stops).
    pub async fn run(self) {
        if !self.take_back().await {
            return;
        }
        let pace = Pace::new(self.per_second);
        loop {
            // Registered before the claim, so a commit during it is not missed.
            let woken = self.wake.notified();
            // Before the claim: its lease runs from a moment after this.
            let start_by =
                tokio::time::Instant::now() + self.lease.saturating_sub(self.send_timeout);
            let claimed = match self
                .store
                .claim(self.channel, &self.holder, self.senders * 4, self.lease)
                .await
            {
                Ok(claimed) => claimed,
                Err(err) if crate::storage::upkeep::is_closed(&err) => return,
                Err(err) => {
                    tracing::warn!(channel = self.channel.as_str(), error = %err, "could not claim notifications");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    () = woken => {}
                    () = tokio::time::sleep(self.poll_every) => {}
                }
                continue;
            }
            let (this, pace) = (&self, &pace);
            stream::iter(claimed)
                .for_each_concurrent(self.senders, |claimed| async move {
                    let outcome = this.deliver_in_time(&claimed, pace, start_by).await;
                    this.settle(&claimed, outcome).await;
                })
                .await;
        }
    }

    /// Makes what this instance held at its last stop due again, once the
    /// database is migrated and answers (PostgreSQL may be down, or not
    /// migrated yet, when the senders start); false if the store closed
    /// first.
    async fn take_back(&self) -> bool {
        let mut wait = Duration::from_millis(200);
        loop {
            let taken = match self.store.ensure_ready().await {
                Ok(()) => self.store.take_back(&self.holder).await,
                Err(err) => Err(err),
            };
            match taken {
                Ok(0) => return true,
                Ok(n) => {
                    tracing::info!(
                        channel = self.channel.as_str(),
                        taken_back = n,
                        "notifications held at the last stop are due again"
                    );
                    return true;
                }
                Err(err) if crate::storage::upkeep::is_closed(&err) => return false,
                Err(err) => {
                    tracing::warn!(channel = self.channel.as_str(), error = %err, ?wait, "could not take back held notifications yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Delivers if the send can still end within the claim's lease (it
    /// starts by `start_by`); otherwise the notification goes back to the
    /// queue, due now, without spending an attempt. (A push to several
    /// subscriptions sends to each in turn, so it can still outlast it.)
    async fn deliver_in_time(
        &self,
        claimed: &Claimed,
        pace: &Pace,
        start_by: tokio::time::Instant,
    ) -> Outcome {
        let too_late = || tokio::time::Instant::now() > start_by;
        if !too_late() {
            pace.wait().await;
        }
        if too_late() {
            tracing::debug!(notification_id = %claimed.id, channel = self.channel.as_str(), "too little of the lease left to send: put back");
            return Outcome::Waiting {
                retry_after: Duration::ZERO,
            };
        }
        self.deliver(claimed).await
    }

    async fn deliver(&self, claimed: &Claimed) -> Outcome {
        match self.channel {
            Channel::Push => self.deliver_push(claimed).await,
            _ => {
                let to = match self.address(claimed).await {
                    Ok(to) => to,
                    Err(outcome) => return outcome,
                };
                self.send(claimed, to, None).await
            }
        }
    }

    /// The address: as accepted, or (an event's notification for a user
    /// not heard of then) the user's as known now.
    async fn address(&self, claimed: &Claimed) -> Result<String, Outcome> {
        if let Some(to) = &claimed.to {
            return Ok(to.clone());
        }
        let known = match (self.channel, claimed.user_id) {
            (Channel::Email, Some(user)) => self.store.email_of(user).await.ok().flatten(),
            _ => None,
        };
        known.ok_or_else(|| {
            Outcome::failed(
                "no address is known for the user yet",
                self.channel != Channel::Email,
            )
        })
    }

    /// Push goes to every subscription of the user; one that is gone
    /// (404/410) is removed. Sent if any took it.
    async fn deliver_push(&self, claimed: &Claimed) -> Outcome {
        let Some(user) = claimed.user_id else {
            return Outcome::failed("push needs a user", true);
        };
        let subscriptions = match self.store.subscriptions(user).await {
            Ok(subscriptions) => subscriptions,
            Err(err) => {
                return Outcome::failed(
                    format!("could not read the user's subscriptions: {err}"),
                    false,
                )
            }
        };
        let mut last = Outcome::failed("the user has no push subscription", true);
        let mut sent = false;
        for sub in subscriptions {
            let keys = PushKeys {
                p256dh: sub.p256dh.clone(),
                auth: sub.auth.clone(),
            };
            match self.send(claimed, sub.endpoint.clone(), Some(keys)).await {
                Outcome::Sent => sent = true,
                other => last = other,
            }
        }
        if sent {
            Outcome::Sent
        } else {
            last
        }
    }

    async fn send(&self, claimed: &Claimed, to: String, push: Option<PushKeys>) -> Outcome {
        let message = Outgoing {
            id: claimed.id,
            to,
            subject: claimed.subject.clone(),
            body: claimed.body.clone(),
            html: claimed.html.clone(),
            push,
        };
        let endpoint = message.to.clone();
        match self
            .provider
            .call(|reply| ProviderMsg::Send { message, reply })
            .await
        {
            Ok(Ok(())) => Outcome::Sent,
            Ok(Err(SendError::Retryable(error))) => Outcome::failed(error, false),
            Ok(Err(SendError::Throttled { message, wait })) => Outcome::Failed {
                error: message,
                permanent: false,
                not_before: Some(wait),
            },
            Ok(Err(SendError::Rejected(error))) => Outcome::failed(error, true),
            Ok(Err(SendError::Gone(error))) => {
                self.remove_gone(claimed, &endpoint).await;
                Outcome::failed(error, true)
            }
            Err(
                CallError::CircuitOpen { retry_after, .. }
                | CallError::Shed { retry_after, .. }
                | CallError::Unavailable { retry_after, .. }
                | CallError::DependencyDown { retry_after, .. },
            ) => Outcome::Waiting { retry_after },
            Err(err @ (CallError::Timeout { .. } | CallError::Crashed { .. })) => {
                Outcome::failed(err.to_string(), false)
            }
        }
    }

    async fn remove_gone(&self, claimed: &Claimed, endpoint: &str) {
        let Some(user) = claimed.user_id else { return };
        let Ok(subscriptions) = self.store.subscriptions(user).await else {
            return;
        };
        for sub in subscriptions.iter().filter(|s| s.endpoint == endpoint) {
            match self.store.unsubscribe(sub.id).await {
                Ok(_) => {
                    tracing::info!(subscription_id = %sub.id, "push subscription gone: removed")
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not remove a gone push subscription")
                }
            }
        }
    }

    async fn settle(&self, claimed: &Claimed, outcome: Outcome) {
        let channel = self.channel.as_str();
        let (settle, topic) = match outcome {
            Outcome::Sent => {
                metrics::counter!("notifications_sent_total", "channel" => channel).increment(1);
                (Settle::Sent { at: now_micros() }, Some(NOTIFICATION_SENT))
            }
            Outcome::Failed {
                error,
                permanent,
                not_before,
            } => {
                metrics::counter!("notifications_failed_total", "channel" => channel).increment(1);
                if permanent || claimed.attempts >= self.max_attempts {
                    tracing::warn!(notification_id = %claimed.id, channel, attempts = claimed.attempts, error = %error, "notification dead");
                    (Settle::Dead { error }, Some(NOTIFICATION_DEAD))
                } else {
                    let backoff = self.backoff.delay(claimed.attempts, &mut rand::rng());
                    let delay = not_before.map_or(backoff, |wait| wait.max(backoff));
                    tracing::info!(notification_id = %claimed.id, channel, attempts = claimed.attempts, ?delay, error = %error, "notification will be retried");
                    (
                        Settle::Retry {
                            error,
                            at: due_in(delay),
                        },
                        None,
                    )
                }
            }
            Outcome::Waiting { retry_after } => (
                Settle::NotTried {
                    at: due_in(retry_after),
                },
                None,
            ),
        };
        let event = match topic {
            Some(topic) => match announce(topic, claimed, &settle) {
                Ok(event) => Some(event),
                Err(err) => {
                    tracing::error!(error = %err, "could not build the notification's event");
                    None
                }
            },
            None => None,
        };
        match self
            .store
            .settle(claimed.id, &self.holder, &settle, event.as_ref())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(notification_id = %claimed.id, "lease lost before settling: another sender has it")
            }
            // Its lease runs out and it is sent again: at least once.
            Err(err) => {
                tracing::warn!(notification_id = %claimed.id, error = %err, "could not settle a notification")
            }
        }
    }
}

fn due_in(delay: Duration) -> i64 {
    unix_millis(time::OffsetDateTime::now_utc()) + i64::try_from(delay.as_millis()).unwrap_or(0)
}

/// `notification.sent` / `notification.dead`.
fn announce(
    topic: crate::events::Topic,
    claimed: &Claimed,
    settle: &Settle,
) -> Result<Event, serde_json::Error> {
    let last_error = match settle {
        Settle::Dead { error } => Some(error.as_str()),
        _ => None,
    };
    Event::new(
        topic,
        None,
        None,
        &serde_json::json!({
            "id": claimed.id,
            "channel": claimed.channel,
            "to": claimed.to,
            "user_id": claimed.user_id,
            "batch_id": claimed.batch_id,
            "attempts": claimed.attempts,
            "last_error": last_error,
        }),
    )
}

/// At most `per_second` sends a second from one sender task.
struct Pace {
    every: Option<Duration>,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pace {
    fn new(per_second: u32) -> Self {
        Self {
            every: (per_second > 0).then(|| Duration::from_secs(1) / per_second),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn wait(&self) {
        let Some(every) = self.every else { return };
        let at = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let at = (*next).max(now);
            *next = at + every;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}
