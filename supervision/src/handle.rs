//! [`ServiceHandle`]: how callers (the HTTP front-end, other services) ask a
//! supervised service something: circuit check, least-loaded worker, a reply
//! port and a timeout, and one error type for everything that can go wrong.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};

use crate::circuit::Admission;
use crate::service::SupervisorMsg;
use crate::shared::ServiceShared;
use crate::worker::Envelope;

/// How long a caller is told to wait when no worker is up yet (starting or
/// restarting): restarts are backed off by at most `backoff_max`, usually far less.
const RESTARTING_RETRY_AFTER: Duration = Duration::from_secs(1);

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
    /// No reply within the call timeout. The worker is restarted.
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
        C: Default,
    {
        self.call_with(C::default(), build).await
    }

    /// Sends the message built around a reply port, with `ctx` beside it, to
    /// the least-loaded live worker and waits for the reply, at most the call
    /// timeout.
    pub async fn call_with<R, F>(&self, ctx: C, build: F) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(RpcReplyPort<R>) -> M,
    {
        let service = || self.shared.name().to_owned();
        if let Admission::Reject { retry_after } = self.shared.admit() {
            return Err(CallError::CircuitOpen {
                service: service(),
                retry_after,
            });
        }
        let unavailable = || CallError::Unavailable {
            service: service(),
            retry_after: RESTARTING_RETRY_AFTER,
        };
        let (index, worker) = self.pick_worker().ok_or_else(unavailable)?;

        let (tx, rx) = ractor::concurrency::oneshot();
        let started = Arc::new(AtomicBool::new(false));
        let envelope = Envelope {
            msg: build(tx.into()),
            ctx,
            span: tracing::Span::current(),
            started: started.clone(),
        };
        let stats = self.shared.worker(index);
        stats.message_sent();
        if worker.send_message(envelope).is_err() {
            stats.message_unsent();
            return Err(unavailable());
        }

        match tokio::time::timeout(self.call_timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_dropped)) if started.load(Ordering::Acquire) => {
                Err(CallError::Crashed { service: service() })
            }
            Ok(Err(_dropped)) => Err(unavailable()),
            Err(_elapsed) => {
                self.report_timeout(index, &worker);
                Err(CallError::Timeout {
                    service: service(),
                    timeout: self.call_timeout,
                })
            }
        }
    }

    /// The live worker with the fewest messages in flight (the first on a tie).
    fn pick_worker(&self) -> Option<(usize, ActorRef<Envelope<M, C>>)> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| slot.as_ref().map(|w| (i, w)))
            .min_by_key(|(i, _)| self.shared.worker(*i).in_flight())
            .map(|(i, w)| (i, w.clone()))
    }

    /// A reply that misses its timeout is a failure: the supervisor restarts
    /// the stuck worker.
    fn report_timeout(&self, index: usize, worker: &ActorRef<Envelope<M, C>>) {
        if let Some(supervisor) = self.shared.supervisor() {
            let _ = supervisor.send_message(SupervisorMsg::CallTimedOut {
                index,
                actor: worker.get_id(),
                after: self.call_timeout,
            });
        }
    }
}
