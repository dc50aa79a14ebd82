//! The inspection snapshot: what `/admin/actors` shows, as serde types.

use serde::Serialize;
use time::OffsetDateTime;

use crate::circuit::CircuitState;
use crate::strategy::Strategy;

/// One failure, as the supervisor saw it.
#[derive(Clone, Debug, Serialize)]
pub struct FailureRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub reason: String,
    /// The worker that failed, if it was one worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CircuitView {
    pub state: CircuitState,
    #[serde(with = "time::serde::rfc3339::option")]
    pub opened_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub retry_at: Option<OffsetDateTime>,
    /// Times the circuit has opened over the service's life.
    pub trips: u64,
    /// Opened by an operator: stays open until closed by one.
    pub forced: bool,
}

/// A service's queue, as `/admin/actors` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct QueueView {
    /// At most this many messages wait (`services.<name>.queue_limit`).
    pub limit: u64,
    /// Calls refused at once because the queue was full (503, not failures).
    pub shed: u64,
    /// Messages dropped unhandled because their caller had given up.
    pub expired: u64,
    /// How long recent messages waited for a worker, in milliseconds (a
    /// moving mean).
    pub wait_ms: f64,
    /// A call is shed if it would wait longer than this, in milliseconds
    /// (`services.<name>.max_queue_wait`).
    pub max_wait_ms: f64,
    /// How long recent messages took to handle, in milliseconds (a moving
    /// mean): with the depth, what the expected wait is reckoned from.
    pub handling_ms: f64,
    /// Workers that serve reads alone (`services.<name>.read_workers`), the
    /// last of the service's workers; their queue is counted in `limit`.
    pub read_workers: usize,
}

/// A service's dependency outages (see [`crate::outage`]), for a service
/// that has a probe.
#[derive(Clone, Debug, Serialize)]
pub struct OutageView {
    /// Whether calls are refused now because a dependency is down.
    pub down: bool,
    /// For how long, in milliseconds, and what was said of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_for_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Outages over the service's life.
    pub outages: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Root,
    Service,
    Worker,
}

/// One node of the supervision tree.
#[derive(Clone, Debug, Serialize)]
pub struct ActorNode {
    pub name: String,
    pub kind: NodeKind,
    pub status: crate::ServiceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit: Option<CircuitView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    pub restarts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts_in_window: Option<u32>,
    pub messages_handled: u64,
    /// Messages waiting for a worker (the service's queue, or this worker's
    /// mailbox).
    pub mailbox_depth: u64,
    /// The service's queue: its bound and what it refused or dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueView>,
    /// Its dependency outages, if it has a probe of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outage: Option<OutageView>,
    pub last_failure: Option<FailureRecord>,
    /// Only in the single-actor view (`/admin/actors/{name}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_failures: Option<Vec<FailureRecord>>,
    /// Seconds since the node last (re)started; null while it is down.
    pub uptime_seconds: Option<f64>,
    pub children: Vec<ActorNode>,
}

impl ActorNode {
    /// Finds a node by name in this subtree.
    pub fn find(&self, name: &str) -> Option<&ActorNode> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|child| child.find(name))
    }
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}
