//! The root of the tree: starts the service supervisors in order, restarts one
//! that dies (its circuit and history survive in [`ServiceShared`]), stops them
//! in reverse order, and renders the whole tree for inspection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};

use crate::service::SupervisorMsg;
use crate::shared::{ServiceShared, ServiceStatus};
use crate::snapshot::{ActorNode, NodeKind};

/// How long the root waits before restarting a service supervisor that died.
/// Supervisors run no service code, so this is a bug path, not a hot one.
const SUPERVISOR_RESTART_DELAY: Duration = Duration::from_secs(1);

/// Something the root can start as one of its children.
pub trait ServiceStarter: Send + Sync + 'static {
    fn shared(&self) -> &Arc<ServiceShared>;
    /// Spawns the service supervisor linked to `root`.
    fn start(&self, root: ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>>;
}

pub struct RootSupervisor;

pub struct RootState {
    services: Vec<Arc<dyn ServiceStarter>>,
    running: Vec<Option<ActorCell>>,
}

pub enum RootMsg {
    StartService(usize),
}

impl RootState {
    async fn start(&mut self, myself: &ActorRef<RootMsg>, index: usize) {
        let name = self.services[index].shared().name().to_owned();
        match self.services[index].start(myself.get_cell()).await {
            Ok(cell) => self.running[index] = Some(cell),
            Err(err) => {
                tracing::error!(service = %name, error = %err, "service supervisor failed to start");
                myself.send_after(SUPERVISOR_RESTART_DELAY, move || {
                    RootMsg::StartService(index)
                });
            }
        }
    }
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = Vec<Arc<dyn ServiceStarter>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        services: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let running = services.iter().map(|_| None).collect();
        Ok(RootState { services, running })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for index in 0..st.services.len() {
            st.start(&myself, index).await;
        }
        Ok(())
    }

    /// Stops the services in reverse start order, each draining its workers.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for (index, slot) in st.running.iter_mut().enumerate().rev() {
            if let Some(cell) = slot.take() {
                let name = st.services[index].shared().name().to_owned();
                tracing::info!(service = %name, "stopping service");
                if cell
                    .stop_and_wait(Some("shutdown".into()), None)
                    .await
                    .is_err()
                {
                    cell.kill();
                }
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::StartService(index) => {
                if st.running[index].is_none() {
                    st.start(&myself, index).await;
                }
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
        let Some((cell, reason)) = crate::service::child_exit(event) else {
            return Ok(());
        };
        let id = cell.get_id();
        let Some(index) = st
            .running
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.get_id() == id))
        else {
            return Ok(());
        };
        st.running[index] = None;
        let shared = st.services[index].shared().clone();
        tracing::error!(service = %shared.name(), %reason, "service supervisor died; restarting it");
        // A supervisor that panicked did not run post_stop: its workers are orphans.
        cell.stop_children(Some("supervisor died".into()));
        shared.set_status(ServiceStatus::Restarting);
        myself.send_after(SUPERVISOR_RESTART_DELAY, move || {
            RootMsg::StartService(index)
        });
        Ok(())
    }
}

/// The whole tree, for the admin endpoint and probes. Cheap to clone.
#[derive(Clone)]
pub struct Tree {
    services: Vec<Arc<ServiceShared>>,
    started_at: Instant,
}

/// Why an operator's request about an actor could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no actor named `{0}`")]
    NotFound(String),
    #[error("the supervisor of `{0}` is not running")]
    NotRunning(String),
}

impl Tree {
    pub fn new(services: Vec<Arc<ServiceShared>>) -> Self {
        Self {
            services,
            started_at: Instant::now(),
        }
    }

    pub fn services(&self) -> &[Arc<ServiceShared>] {
        &self.services
    }

    pub fn service(&self, name: &str) -> Option<&Arc<ServiceShared>> {
        self.services.iter().find(|s| s.name() == name)
    }

    pub fn snapshot(&self) -> ActorNode {
        let children: Vec<ActorNode> = self.services.iter().map(|s| s.snapshot(false)).collect();
        ActorNode {
            name: "root".to_owned(),
            kind: NodeKind::Root,
            status: ServiceStatus::Running,
            circuit: None,
            strategy: Some(crate::Strategy::OneForOne),
            restarts: 0,
            restarts_in_window: None,
            messages_handled: children.iter().map(|c| c.messages_handled).sum(),
            mailbox_depth: children.iter().map(|c| c.mailbox_depth).sum(),
            queue: None,
            outage: None,
            last_failure: None,
            recent_failures: None,
            uptime_seconds: Some(self.started_at.elapsed().as_secs_f64()),
            children,
        }
    }

    /// One node by name (a service, or a worker such as `orders-worker-0`),
    /// with its recent failures.
    pub fn node(&self, name: &str) -> Option<ActorNode> {
        if name == "root" {
            return Some(self.snapshot());
        }
        self.services.iter().find_map(|s| {
            if s.name() == name {
                Some(s.snapshot(true))
            } else {
                s.worker_index(name)
                    .map(|i| s.worker_node(i, true, Instant::now()))
            }
        })
    }

    pub fn publish_gauges(&self) {
        for service in &self.services {
            service.publish_gauges();
        }
    }

    /// Restarts a service or one worker now (an operator's request; counts as a restart).
    pub async fn restart(&self, name: &str) -> Result<ActorNode, ControlError> {
        let (service, worker) = self.locate(name)?;
        match worker {
            Some(index) => ask(service, |reply| SupervisorMsg::RestartWorker(index, reply)).await?,
            None => ask(service, SupervisorMsg::RestartAll).await?,
        }
        self.node(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))
    }

    /// Forces a service's circuit open or closed.
    pub async fn force_circuit(&self, name: &str, open: bool) -> Result<ActorNode, ControlError> {
        let service = self
            .service(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        if open {
            ask(service, SupervisorMsg::ForceOpen).await?;
        } else {
            ask(service, SupervisorMsg::ForceClose).await?;
        }
        Ok(service.snapshot(true))
    }

    fn locate(&self, name: &str) -> Result<(&Arc<ServiceShared>, Option<usize>), ControlError> {
        self.services
            .iter()
            .find_map(|s| {
                if s.name() == name {
                    Some((s, None))
                } else {
                    s.worker_index(name).map(|i| (s, Some(i)))
                }
            })
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))
    }
}

/// How long an operator's request may wait for a supervisor busy restarting workers.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

async fn ask(
    service: &ServiceShared,
    build: impl FnOnce(RpcReplyPort<()>) -> SupervisorMsg,
) -> Result<(), ControlError> {
    let not_running = || ControlError::NotRunning(service.name().to_owned());
    let supervisor = service.supervisor().ok_or_else(not_running)?;
    match supervisor.call(build, Some(CONTROL_TIMEOUT)).await {
        Ok(ractor::rpc::CallResult::Success(())) => Ok(()),
        _ => Err(not_running()),
    }
}
