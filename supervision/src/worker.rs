//! [`Worker`]: the ractor actor that runs a service's [`WorkerHandler`] under a
//! service supervisor, counting what it handles and carrying each caller's
//! tracing span and request context into the handler.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use crate::outage::DependencyDown;
use crate::shared::ServiceShared;
use crate::ticket::{Deadline, Pickup, Ticket};
use crate::BoxError;

/// What a service implements: how a worker starts and how it handles one message.
///
/// Returning `Err` from [`WorkerHandler::handle`] (or panicking) is a failure:
/// the worker is restarted per the service's strategy and the failure counts
/// against its restart intensity. Business outcomes (not found, invalid input)
/// are replies, not errors.
pub trait WorkerHandler: Send + Sync + 'static {
    /// The service's messages (its API).
    type Msg: Send + 'static;
    /// What travels with every message beside it, in the envelope: who asks
    /// and on what terms (a request id, a deadline…), set once by the caller
    /// rather than repeated in every message. `()` for handlers that need none.
    type Context: Deadline + Send + Sync + 'static;
    /// What one worker keeps between messages.
    type State: Send + 'static;
    /// What every worker of the service starts from (a store handle, settings).
    type Args: Clone + Send + Sync + 'static;

    /// Builds a worker's state; an error (or panic) is a failed start.
    fn init(
        args: &Self::Args,
        index: usize,
    ) -> impl Future<Output = Result<Self::State, BoxError>> + Send;

    /// Runs once for every message, before [`WorkerHandler::handle`], with the
    /// message's context: one place for what every message needs done first
    /// (the services strike an injected fault here). A panic or an `Err` is a
    /// failure like one in `handle`; the message is then dropped unhandled,
    /// so its caller sees [`crate::CallError::Crashed`].
    fn before(_ctx: &Self::Context) -> impl Future<Output = Result<(), BoxError>> + Send {
        std::future::ready(Ok(()))
    }

    /// The message's kind (its variant's name), for the span of its
    /// handling when traces are on (`orders/Create`).
    fn kind(_msg: &Self::Msg) -> &'static str {
        "message"
    }

    fn handle(
        msg: Self::Msg,
        ctx: &Self::Context,
        state: &mut Self::State,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A message on its way to a worker, with the caller's span (so that every
/// log line the handler writes carries the request id) and context.
pub struct Envelope<M, C> {
    pub(crate) msg: M,
    pub(crate) ctx: C,
    pub(crate) span: tracing::Span,
    /// Shared with the caller: whether the message started, finished or was
    /// given up, so a reply that never comes is told apart ("it crashed on
    /// mine", "it never got to it") and a message nobody waits for is skipped.
    pub(crate) ticket: Arc<Ticket>,
}

/// The span of one message's handling, named `service/kind` as RPC spans are.
fn call_span(
    parent: &tracing::Span,
    service: &str,
    worker: usize,
    kind: &'static str,
    waited: std::time::Duration,
) -> tracing::Span {
    let name = format!("{service}/{kind}");
    tracing::info_span!(
        target: crate::trace::TARGET,
        parent: parent,
        "actor",
        otel.name = name.as_str(),
        otel.kind = "internal",
        rpc.system = "ractor",
        rpc.service = service,
        rpc.method = kind,
        stageworks.worker = worker,
        stageworks.queue_wait_ms = waited.as_secs_f64() * 1000.0,
    )
}

/// The ractor actor behind each worker of a service.
pub struct Worker<H>(PhantomData<fn() -> H>);

impl<H> Default for Worker<H> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

pub struct WorkerArgs<H: WorkerHandler> {
    pub(crate) index: usize,
    pub(crate) args: H::Args,
    pub(crate) shared: Arc<ServiceShared>,
}

pub struct WorkerState<H: WorkerHandler> {
    index: usize,
    state: H::State,
    shared: Arc<ServiceShared>,
}

impl<H: WorkerHandler> Actor for Worker<H> {
    type Msg = Envelope<H::Msg, H::Context>;
    type State = WorkerState<H>;
    type Arguments = WorkerArgs<H>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let state = H::init(&args.args, args.index).await?;
        Ok(WorkerState {
            index: args.index,
            state,
            shared: args.shared,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        envelope: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let stats = st.shared.worker(st.index);
        stats.message_received();
        let Envelope {
            msg,
            ctx,
            span,
            ticket,
        } = envelope;
        let actor = st.shared.name().to_owned();
        if st.shared.dependency_down() {
            // Queued before the outage began: refused unstarted (its caller
            // hears "unavailable, retry"), not left to wait for a connection.
            stats.message_skipped(&ticket);
            metrics::counter!("actor_refused_total", "actor" => actor, "reason" => "dependency_down")
                .increment(1);
            return Ok(());
        }
        let waited = match ticket.pick_up() {
            Pickup::Handle { waited } => waited,
            Pickup::Skip { waited } => {
                // Its caller has gone: doing the work now would only delay
                // the messages behind it (and a write nobody hears of).
                st.shared.record_wait(waited);
                st.shared.record_expired();
                stats.message_skipped(&ticket);
                tracing::debug!(parent: &span, service = %actor, ?waited, "skipped a message whose caller gave up");
                return Ok(());
            }
        };
        st.shared.record_wait(waited);
        let started_at = Instant::now();
        // Traces only: the handling as a child of the caller's span, so
        // that the handler's own spans (its database work) hang below it.
        let call = if crate::trace::enabled() {
            call_span(&span, &actor, st.index, H::kind(&msg), waited)
        } else {
            tracing::Span::none()
        };
        let result = async {
            H::before(&ctx).await?;
            H::handle(msg, &ctx, &mut st.state).await
        }
        .instrument(call)
        .instrument(span)
        .await;
        ticket.finish();
        let took = started_at.elapsed();
        st.shared.record_handling(st.index, took);
        metrics::histogram!("actor_message_duration_seconds", "actor" => actor.clone())
            .record(took.as_secs_f64());
        metrics::counter!("actor_messages_total", "actor" => actor).increment(1);
        stats.message_handled(&ticket);
        if let Err(err) = &result {
            if let Some(down) = err.downcast_ref::<DependencyDown>() {
                st.shared.record_dependency_down(down);
            }
        }
        result?;
        st.shared.record_success();
        Ok(())
    }
}
