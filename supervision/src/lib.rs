//! Supervision for Stageworks: supervisors over [ractor] actors with OTP restart
//! strategies, restart intensity, backoff with jitter, a circuit per service, and
//! an inspection snapshot of the whole tree.
//!
//! # Shape
//!
//! ```text
//! RootSupervisor ─┬─ ServiceSupervisor<orders>  ─┬─ Worker 0
//!                 │                               └─ Worker 1 …
//!                 └─ ServiceSupervisor<billing> ─── …
//! ```
//!
//! * A **service** is a [`ServiceSupervisor`] plus a pool of identical
//!   [`Worker`]s running the service's [`WorkerHandler`]. Callers reach it through
//!   a typed [`ServiceHandle`], which picks the least-loaded live worker, asks with
//!   a timeout and maps every way a call can go wrong to a [`CallError`].
//! * The service supervisor applies its [`Strategy`] among its workers, counts
//!   restarts against the intensity window and, when the window is exceeded,
//!   opens the service's [`Circuit`] instead of giving up: the front-end answers
//!   with fast 503s, siblings keep serving, and after `open_for` (doubling on each
//!   consecutive trip, capped) the workers are restarted half-open. The first
//!   message handled successfully closes the circuit; a failure opens it again.
//! * Everything the supervisors know lives in [`ServiceShared`], behind short
//!   mutex sections and atomics, so the admin endpoint reads a [`ActorNode`]
//!   snapshot without sending the actors a message.
//!
//! # Why not `ractor-supervisor`
//!
//! The `ractor-supervisor` crate implements OTP strategies and intensity, but when
//! the intensity is exceeded the supervisor itself fails (the OTP meaning). We
//! need the opposite: a tripped service must stay registered, answer 503 at once,
//! and come back by itself after `open_for` in a half-open state that the first
//! successful reply closes. Expressing that on top of it would mean catching the
//! supervisor's own death one level up and rebuilding its children, losing the
//! restart history the circuit needs. The state machine is small, so it lives
//! here, in plain modules that are unit-tested without actors ([`circuit`],
//! [`intensity`], [`backoff`], [`strategy`]).
//!
//! # Traps this crate handles
//!
//! * ractor has no restart strategies: a linked child's exit reaches only the
//!   parent's `handle_supervisor_evt`, whose default stops the parent. The
//!   supervisors here override it for every event.
//! * A panic in `pre_start` does not produce a supervision event; `spawn_linked`
//!   returns the error instead. The supervisor treats that as a failure like any
//!   other.
//! * ractor exposes no mailbox length, so the depth is counted: incremented by
//!   [`ServiceHandle`] on send, decremented by the worker on receipt.
//! * Messages queued in a worker that dies are dropped with their reply ports:
//!   the caller learns whether its message had started ([`CallError::Crashed`],
//!   a 500) or not ([`CallError::Unavailable`], a 503 it may retry).

pub mod backoff;
pub mod circuit;
pub mod handle;
pub mod intensity;
pub mod outage;
pub mod policy;
pub mod root;
pub mod service;
pub mod shared;
pub mod snapshot;
pub mod strategy;
mod ticket;
pub mod trace;
pub mod worker;

pub use backoff::Backoff;
pub use circuit::{Admission, Circuit, CircuitState};
pub use handle::{CallError, ServiceHandle};
pub use intensity::RestartWindow;
pub use outage::{DependencyDown, Probe};
pub use policy::SupervisionPolicy;
pub use root::{ControlError, RootSupervisor, ServiceStarter, Tree};
pub use service::{ServiceSupervisor, SupervisorMsg};
pub use shared::{Lane, Lanes, QueueBounds, ServiceShared, ServiceStatus};
pub use snapshot::{ActorNode, CircuitView, FailureRecord, OutageView};
pub use strategy::Strategy;
pub use ticket::Deadline;
pub use worker::{Worker, WorkerHandler};

/// The error a worker returns (or panics with) to say "I failed, restart me".
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
