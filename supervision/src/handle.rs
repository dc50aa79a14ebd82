//! [`ServiceHandle`]: how callers (the HTTP front-end, other services) ask a
//! supervised service something: circuit check, least-loaded worker, a reply
//! port and a timeout, and one error type for everything that can go wrong.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ractor::{ActorRef, RpcReplyPort};

use crate::circuit::Admission;
use crate::outage::OUTAGE_RETRY_AFTER;
use crate::service::SupervisorMsg;
use crate::shared::{Lane, ServiceShared};
use crate::ticket::{Deadline, Ticket};
use crate::worker::Envelope;

/// How long a caller is told to wait when no worker is up yet (starting or
/// restarting): restarts are backed off by at most `backoff_max`, usually far less.
const RESTARTING_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long a shed caller is told to wait: a full queue drains in about a
/// call timeout at worst, usually far less; a second is what clients can
/// act on without hammering.
const SHED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The live workers of a service, by index: `None` while one is down. Written
/// by the supervisor, read by every call.
pub(crate) type Slots<M, C> = Arc<RwLock<Vec<Option<ActorRef<Envelope<M, C>>>>>>;

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The circuit is open: refused without trying.
    #[error("service {service} is unavailable (circuit open)")]
    CircuitOpen {
        service: String,
        retry_after: Duration,
    },
    /// No worker could take the message (starting, restarting, stopping), or the
    /// worker died before it began on it. Nothing was done; safe to retry.
    #[error("service {service} is not running")]
    Unavailable {
        service: String,
        retry_after: Duration,
    },
    /// A dependency the service needs (its database) is down: refused at
    /// once until it answers again (see [`crate::outage`]); nothing was
    /// done, safe to retry after `retry_after`.
    #[error("service {service} is unavailable (a dependency is down)")]
    DependencyDown {
        service: String,
        retry_after: Duration,
    },
    /// The service's queue is full: refused at once, nothing was done (load
    /// shedding, not a failure); safe to retry after `retry_after`.
    #[error("service {service} is overloaded (its queue is full)")]
    Shed {
        service: String,
        retry_after: Duration,
    },
    /// No reply within the call timeout (or the caller's deadline). If the
    /// message never started, it is dropped from the queue and nobody
    /// failed; if it started and runs past the call timeout, its worker is
    /// stuck and restarted.
    #[error("service {service} did not answer within {timeout:?}")]
    Timeout { service: String, timeout: Duration },
    /// The worker failed while handling this message.
    #[error("service {service} failed while handling the request")]
    Crashed { service: String },
}

/// A typed, cloneable handle to one supervised service: `M` its messages, `C`
/// the context each travels with (see [`crate::WorkerHandler::Context`]).
pub struct ServiceHandle<M, C = ()> {
    shared: Arc<ServiceShared>,
    slots: Slots<M, C>,
    call_timeout: Duration,
}

impl<M, C> Clone for ServiceHandle<M, C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            slots: self.slots.clone(),
            call_timeout: self.call_timeout,
        }
    }
}

impl<M: Send + 'static, C: Send + 'static> ServiceHandle<M, C> {
    pub(crate) fn new(
        shared: Arc<ServiceShared>,
        slots: Slots<M, C>,
        call_timeout: Duration,
    ) -> Self {
        Self {
            shared,
            slots,
            call_timeout,
        }
    }

    pub fn shared(&self) -> &Arc<ServiceShared> {
        &self.shared
    }

    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Sends the message built around a reply port to the least-loaded live
    /// worker with the default context (callers that have none to pass on:
    /// the event bus, the relay).
    pub async fn call<R, F>(&self, build: F) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(RpcReplyPort<R>) -> M,
        C: Default + Deadline,
    {
        self.call_with(C::default(), build).await
    }

    /// Sends the message built around a reply port, with `ctx` beside it, to
    /// the least-loaded live worker and waits for the reply: at most the
    /// call timeout, or until the context's deadline if that comes first.
    /// A full queue refuses the call at once ([`CallError::Shed`]).
    pub async fn call_with<R, F>(&self, ctx: C, build: F) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(RpcReplyPort<R>) -> M,
        C: Deadline,
    {
        self.call_on(Lane::Main, ctx, build).await
    }

    /// [`ServiceHandle::call_with`] on one of the service's lanes: a call on
    /// [`Lane::Reads`] goes to the read workers, if the service has any,
    /// and is admitted against their queue alone.
    pub async fn call_on<R, F>(&self, lane: Lane, ctx: C, build: F) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(RpcReplyPort<R>) -> M,
        C: Deadline,
    {
        let service = || self.shared.name().to_owned();
        if let Admission::Reject { retry_after } = self.shared.admit() {
            return Err(CallError::CircuitOpen {
                service: service(),
                retry_after,
            });
        }
        if self.shared.dependency_down() {
            return Err(CallError::DependencyDown {
                service: service(),
                retry_after: OUTAGE_RETRY_AFTER,
            });
        }
        if !self.shared.has_room(lane) {
            self.shared.record_shed();
            return Err(CallError::Shed {
                service: service(),
                retry_after: SHED_RETRY_AFTER,
            });
        }
        let unavailable = || CallError::Unavailable {
            service: service(),
            retry_after: RESTARTING_RETRY_AFTER,
        };
        let (index, worker) = self.pick_worker(lane).ok_or_else(unavailable)?;

        let now = Instant::now();
        let deadline = match ctx.deadline() {
            Some(deadline) => deadline.min(now + self.call_timeout),
            None => now + self.call_timeout,
        };
        let (tx, rx) = ractor::concurrency::oneshot();
        let ticket = Arc::new(Ticket::new(deadline));
        let envelope = Envelope {
            msg: build(tx.into()),
            ctx,
            span: tracing::Span::current(),
            ticket: ticket.clone(),
        };
        let stats = self.shared.worker(index);
        stats.message_sent();
        if worker.send_message(envelope).is_err() {
            stats.message_unsent();
            return Err(unavailable());
        }

        // If this future is dropped (the client went away), the message is
        // given up as if the wait had run out.
        let waiting = Waiting {
            handle: self,
            index,
            worker: &worker,
            ticket: &ticket,
            done: false,
        };
        let outcome = tokio::time::timeout_at(deadline.into(), rx).await;
        if let Ok(Ok(_)) = &outcome {
            stats.reply_received(&ticket);
        }
        waiting.settle(outcome.is_ok());
        match outcome {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_dropped)) if ticket.started() => Err(CallError::Crashed { service: service() }),
            // Skipped by the worker: the deadline passed while it waited.
            Ok(Err(_dropped)) if Instant::now() >= deadline => Err(CallError::Timeout {
                service: service(),
                timeout: deadline.saturating_duration_since(now),
            }),
            // Refused unstarted by a worker that learnt of an outage.
            Ok(Err(_dropped)) if self.shared.dependency_down() => Err(CallError::DependencyDown {
                service: service(),
                retry_after: OUTAGE_RETRY_AFTER,
            }),
            Ok(Err(_dropped)) => Err(unavailable()),
            Err(_elapsed) => Err(CallError::Timeout {
                service: service(),
                timeout: deadline.saturating_duration_since(now),
            }),
        }
    }

    /// The lane's live worker with the fewest messages in flight (the
    /// first on a tie), with one more counted against it.
    fn pick_worker(&self, lane: Lane) -> Option<(usize, ActorRef<Envelope<M, C>>)> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        let live = self
            .shared
            .lane_workers(lane)
            .filter(|&i| slots.get(i).is_some_and(Option::is_some));
        let index = self.shared.reserve_least_loaded(live)?;
        slots[index].clone().map(|worker| (index, worker))
    }

    /// The caller stopped waiting for a message (its wait ran out, or it
    /// went away). One that never started is dropped from the queue: no
    /// failure. One that started is the worker's failure only if it runs
    /// past the call timeout: reported now if it already has, else checked
    /// again when it would have.
    fn give_up(&self, index: usize, worker: &ActorRef<Envelope<M, C>>, ticket: &Arc<Ticket>) {
        // Not started (now abandoned, or already skipped by the worker past
        // its deadline) or done: nobody is stuck.
        if ticket.abandon() || !ticket.started() || ticket.finished() {
            return;
        }
        let ran = ticket.running_for().unwrap_or_default();
        if ran >= self.call_timeout {
            report_stuck(&self.shared, index, worker.get_id(), self.call_timeout);
            return;
        }
        let (shared, ticket, actor) = (self.shared.clone(), ticket.clone(), worker.get_id());
        let call_timeout = self.call_timeout;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(call_timeout - ran).await;
                if !ticket.finished() {
                    report_stuck(&shared, index, actor, call_timeout);
                }
            });
        }
    }
}

/// A handler that ran past the call timeout is stuck: the supervisor
/// restarts its worker.
fn report_stuck(shared: &ServiceShared, index: usize, actor: ractor::ActorId, after: Duration) {
    if let Some(supervisor) = shared.supervisor() {
        let _ = supervisor.send_message(SupervisorMsg::CallTimedOut {
            index,
            actor,
            after,
        });
    }
}

/// A call waiting for its reply; settled when the wait ends, or given up
/// when dropped first.
struct Waiting<'a, M: Send + 'static, C: Send + 'static> {
    handle: &'a ServiceHandle<M, C>,
    index: usize,
    worker: &'a ActorRef<Envelope<M, C>>,
    ticket: &'a Arc<Ticket>,
    done: bool,
}

impl<M: Send + 'static, C: Send + 'static> Waiting<'_, M, C> {
    /// The wait ended: with a reply (or the worker's death), or not.
    fn settle(mut self, answered: bool) {
        self.done = true;
        if !answered {
            self.handle.give_up(self.index, self.worker, self.ticket);
        }
    }
}

impl<M: Send + 'static, C: Send + 'static> Drop for Waiting<'_, M, C> {
    fn drop(&mut self) {
        if !self.done {
            self.handle.give_up(self.index, self.worker, self.ticket);
        }
    }
}
