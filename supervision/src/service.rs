//! [`ServiceSupervisor`]: supervises one service's pool of workers, applying its
//! strategy, intensity, backoff and circuit (see the crate docs for the rules).

use std::marker::PhantomData;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};

use crate::handle::{ServiceHandle, Slots};
use crate::intensity::Intensity;
use crate::policy::SupervisionPolicy;
use crate::root::ServiceStarter;
use crate::shared::{Lanes, QueueBounds, ServiceShared, ServiceStatus};
use crate::worker::{Worker, WorkerArgs, WorkerHandler};

/// What a service supervisor is told, by its own timers, by callers and by operators.
pub enum SupervisorMsg {
    /// A backoff delay ran out: restart these workers (unless `epoch` is stale).
    Restart { indices: Vec<usize>, epoch: u64 },
    /// `open_for` ran out: restart the workers half-open.
    HalfOpen { epoch: u64 },
    /// The workers have been running half-open for `open_for` without a
    /// failure (unless `epoch` is stale): close the circuit.
    Settle { epoch: u64 },
    /// A call to this worker missed its timeout: the worker is stuck.
    CallTimedOut {
        index: usize,
        actor: ActorId,
        after: Duration,
    },
    /// An operator restarts the whole service.
    RestartAll(RpcReplyPort<()>),
    /// An operator restarts one worker.
    RestartWorker(usize, RpcReplyPort<()>),
    /// An operator opens the circuit (it stays open until closed).
    ForceOpen(RpcReplyPort<()>),
    /// An operator closes the circuit (restarting workers that are down).
    ForceClose(RpcReplyPort<()>),
}

/// The supervisor of one service; `H` is the service's worker.
pub struct ServiceSupervisor<H>(PhantomData<fn() -> H>);

impl<H> Default for ServiceSupervisor<H> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

pub struct ServiceArgs<H: WorkerHandler> {
    shared: Arc<ServiceShared>,
    slots: Slots<H::Msg, H::Context>,
    args: H::Args,
}

impl<H: WorkerHandler> Clone for ServiceArgs<H> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            slots: self.slots.clone(),
            args: self.args.clone(),
        }
    }
}

pub struct SupervisorState<H: WorkerHandler> {
    service: ServiceArgs<H>,
    /// The running worker of each index; `None` while it is down.
    children: Vec<Option<ActorCell>>,
    /// Bumped whenever scheduled restarts must be forgotten (trip, operator action).
    epoch: u64,
}

impl<H: WorkerHandler> ServiceSupervisor<H> {
    /// Builds a supervised service: the typed handle callers use, and the
    /// starter the root supervisor runs (and re-runs, should the supervisor die).
    pub fn build(
        name: impl Into<String>,
        policy: SupervisionPolicy,
        workers: usize,
        call_timeout: Duration,
        args: H::Args,
    ) -> (ServiceHandle<H::Msg, H::Context>, Arc<dyn ServiceStarter>) {
        let max_wait = policy.max_queue_wait(call_timeout);
        let lanes = Lanes {
            main: QueueBounds {
                limit: policy.queue_limit(workers, call_timeout),
                max_wait,
            },
            reads: QueueBounds {
                limit: SupervisionPolicy::default_queue_limit(policy.read_workers, call_timeout),
                max_wait,
            },
        };
        let all_workers = workers + policy.read_workers;
        let shared = ServiceShared::new(name, policy, all_workers, lanes);
        let slots: Slots<H::Msg, H::Context> = Arc::new(RwLock::new(
            (0..shared.worker_count()).map(|_| None).collect(),
        ));
        let handle = ServiceHandle::new(shared.clone(), slots.clone(), call_timeout);
        let starter = Arc::new(ServiceArgs::<H> {
            shared,
            slots,
            args,
        });
        (handle, starter)
    }
}

impl<H: WorkerHandler> ServiceStarter for ServiceArgs<H> {
    fn shared(&self) -> &Arc<ServiceShared> {
        &self.shared
    }

    fn start(
        &self,
        root: ActorCell,
    ) -> futures::future::BoxFuture<'static, Result<ActorCell, ractor::SpawnErr>> {
        let args = self.clone();
        Box::pin(async move {
            // Unnamed: ractor's registry is global, and a restarted supervisor
            // could race its predecessor's unregistration. Our names live in
            // ServiceShared.
            let (actor, _) =
                Actor::spawn_linked(None, ServiceSupervisor::<H>::default(), args, root).await?;
            Ok(actor.get_cell())
        })
    }
}

impl<H: WorkerHandler> SupervisorState<H> {
    fn shared(&self) -> &ServiceShared {
        &self.service.shared
    }

    fn policy(&self) -> &SupervisionPolicy {
        self.service.shared.policy()
    }

    fn set_slot(
        &self,
        index: usize,
        worker: Option<ActorRef<crate::worker::Envelope<H::Msg, H::Context>>>,
    ) {
        let mut slots = self
            .service
            .slots
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        slots[index] = worker;
    }

    fn index_of(&self, cell: &ActorCell) -> Option<usize> {
        let id = cell.get_id();
        self.children
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.get_id() == id))
    }

    /// Takes a worker out of service: no new calls reach it, and its exit
    /// event (if it is still alive) is no longer ours to handle.
    fn detach(&mut self, index: usize) -> Option<ActorCell> {
        self.set_slot(index, None);
        self.shared().worker_down(index);
        self.children[index].take()
    }

    /// Stops these workers, last started first, each given the shutdown
    /// timeout to finish its message before it is killed.
    async fn stop_workers(&mut self, indices: impl DoubleEndedIterator<Item = usize>) {
        let timeout = self.policy().shutdown_timeout;
        for index in indices.rev() {
            if let Some(cell) = self.detach(index) {
                if cell
                    .stop_and_wait(Some("stopped by its supervisor".into()), Some(timeout))
                    .await
                    .is_err()
                {
                    cell.kill();
                }
            }
        }
    }

    async fn start_worker(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        index: usize,
    ) -> Result<(), String> {
        let args = WorkerArgs::<H> {
            index,
            args: self.service.args.clone(),
            shared: self.service.shared.clone(),
        };
        match Actor::spawn_linked(None, Worker::<H>::default(), args, myself.get_cell()).await {
            Ok((worker, _)) => {
                self.children[index] = Some(worker.get_cell());
                self.set_slot(index, Some(worker));
                self.shared().worker_up(index);
                Ok(())
            }
            Err(err) => Err(format!("failed to start: {err}")),
        }
    }

    /// Starts the workers that are down among `indices`, in order. A worker that
    /// fails to start is a failure like any other.
    async fn start_workers(&mut self, myself: &ActorRef<SupervisorMsg>, indices: Vec<usize>) {
        for index in indices {
            if self.children[index].is_some() {
                continue;
            }
            if let Err(reason) = self.start_worker(myself, index).await {
                self.on_failure(myself, index, reason).await;
                // A trip stops everything until half-open; every strategy but
                // one_for_one has scheduled the later workers with this one.
                let tripped = self.shared().circuit_state() == crate::CircuitState::Open;
                if tripped || self.policy().strategy != crate::Strategy::OneForOne {
                    break;
                }
            }
        }
        if self.shared().all_workers_up()
            && self.shared().circuit_state() != crate::CircuitState::Open
        {
            self.shared().set_status(ServiceStatus::Running);
        }
    }

    /// A worker failed (crashed, failed to start, or timed out). Restart what the
    /// strategy says after a backoff, or open the circuit if the service fails
    /// faster than restarting helps.
    async fn on_failure(&mut self, myself: &ActorRef<SupervisorMsg>, index: usize, reason: String) {
        let service = self.shared().name().to_owned();
        tracing::warn!(%service, worker = index, %reason, "worker failed");
        self.detach(index);
        let attempt = match self.shared().record_failure(Some(index), &reason) {
            Intensity::Exceeded => return self.trip(myself).await,
            Intensity::Within(attempt) => attempt,
        };
        let affected = self.policy().strategy.affected(index, self.children.len());
        self.stop_workers(affected.clone()).await;
        self.shared().set_status(ServiceStatus::Restarting);
        let delay = self.policy().backoff.delay(attempt, &mut rand::rng());
        tracing::info!(%service, ?delay, workers = ?affected, "restarting after backoff");
        let epoch = self.epoch;
        myself.send_after(delay, move || SupervisorMsg::Restart {
            indices: affected.collect(),
            epoch,
        });
    }

    /// Opens the circuit: every worker stops, pending restarts are forgotten,
    /// and the service comes back half-open after `open_for`.
    async fn trip(&mut self, myself: &ActorRef<SupervisorMsg>) {
        self.epoch += 1;
        let open_for = self.shared().trip();
        tracing::error!(
            service = %self.shared().name(),
            ?open_for,
            "restart intensity exceeded: circuit open"
        );
        self.stop_workers(0..self.children.len()).await;
        self.shared().set_status(ServiceStatus::Failed);
        let epoch = self.epoch;
        myself.send_after(open_for, move || SupervisorMsg::HalfOpen { epoch });
    }

    async fn restart_all(&mut self, myself: &ActorRef<SupervisorMsg>) {
        self.epoch += 1;
        let all: Vec<usize> = (0..self.children.len()).collect();
        self.stop_workers(all.iter().copied()).await;
        // Workers running again need a probe before a tripped circuit closes.
        self.shared().half_open();
        self.shared().record_restart(&all);
        self.start_workers(myself, all).await;
    }
}

impl<H: WorkerHandler> Actor for ServiceSupervisor<H> {
    type Msg = SupervisorMsg;
    type State = SupervisorState<H>;
    type Arguments = ServiceArgs<H>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        service: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        service.shared.set_supervisor(Some(myself));
        let count = service.shared.worker_count();
        Ok(SupervisorState {
            service,
            children: (0..count).map(|_| None).collect(),
            epoch: 0,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let all = (0..st.children.len()).collect();
        st.start_workers(&myself, all).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.stop_workers(0..st.children.len()).await;
        st.shared().set_status(ServiceStatus::Stopped);
        st.shared().set_supervisor(None);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart { indices, epoch } => {
                if epoch == st.epoch {
                    let down: Vec<usize> = indices
                        .into_iter()
                        .filter(|i| st.children[*i].is_none())
                        .collect();
                    if !down.is_empty() {
                        st.shared().record_restart(&down);
                        st.start_workers(&myself, down).await;
                    }
                }
            }
            SupervisorMsg::HalfOpen { epoch } => {
                if epoch == st.epoch && st.shared().half_open() {
                    tracing::info!(service = %st.shared().name(), "circuit half-open: restarting workers");
                    let all: Vec<usize> = (0..st.children.len()).collect();
                    st.shared().record_restart(&all);
                    st.start_workers(&myself, all).await;
                    // A half-open circuit closes at its first success; a
                    // service nobody calls (the event bus with no event to
                    // publish, a replica taken out of a load balancer for
                    // not being ready) would never have one, and stay
                    // half-open, so not ready, for ever. Quiet for
                    // `open_for`, it closes.
                    myself.send_after(st.policy().open_for, move || SupervisorMsg::Settle {
                        epoch,
                    });
                }
            }
            SupervisorMsg::Settle { epoch } => {
                // A failure since the half-open trips the circuit again,
                // which moves the epoch on.
                if epoch == st.epoch {
                    st.shared().settle_half_open();
                }
            }
            SupervisorMsg::CallTimedOut {
                index,
                actor,
                after,
            } => {
                let current = st.children[index].as_ref().map(ActorCell::get_id);
                if current == Some(actor) {
                    if let Some(cell) = st.detach(index) {
                        cell.kill();
                    }
                    let reason = format!("no reply within the call timeout ({after:?})");
                    st.on_failure(&myself, index, reason).await;
                }
            }
            SupervisorMsg::RestartAll(reply) => {
                st.restart_all(&myself).await;
                let _ = reply.send(());
            }
            SupervisorMsg::RestartWorker(index, reply) => {
                if index < st.children.len() {
                    st.stop_workers(index..index + 1).await;
                    st.shared().record_restart(&[index]);
                    st.start_workers(&myself, vec![index]).await;
                }
                let _ = reply.send(());
            }
            SupervisorMsg::ForceOpen(reply) => {
                st.epoch += 1;
                st.shared().force_open();
                tracing::warn!(service = %st.shared().name(), "circuit opened by an operator");
                let _ = reply.send(());
            }
            SupervisorMsg::ForceClose(reply) => {
                st.epoch += 1;
                st.shared().force_close();
                tracing::warn!(service = %st.shared().name(), "circuit closed by an operator");
                let down: Vec<usize> = (0..st.children.len())
                    .filter(|i| st.children[*i].is_none())
                    .collect();
                if !down.is_empty() {
                    st.shared().record_restart(&down);
                    st.start_workers(&myself, down).await;
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, reason)) = child_exit(event) else {
            return Ok(());
        };
        // Workers we stopped ourselves were detached first: only unexpected
        // exits of current workers are failures.
        if let Some(index) = st.index_of(&cell) {
            st.on_failure(&myself, index, reason).await;
        }
        Ok(())
    }
}

/// The child and the reason, if the event says a child exited (failed or stopped).
pub(crate) fn child_exit(event: SupervisionEvent) -> Option<(ActorCell, String)> {
    match event {
        SupervisionEvent::ActorFailed(cell, err) => Some((cell, err.to_string())),
        SupervisionEvent::ActorTerminated(cell, _, reason) => Some((
            cell,
            reason.unwrap_or_else(|| "stopped on its own".to_owned()),
        )),
        _ => None,
    }
}
