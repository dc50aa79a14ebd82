//! [`ServiceShared`]: everything known about one service, shared between its
//! supervisor (which writes it), its workers (which count messages and report
//! successes), its callers (which check the circuit) and the admin endpoint
//! (which reads snapshots). Locks are held for a few field updates at most, so
//! reading a snapshot never waits on an actor.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use serde::Serialize;
use time::OffsetDateTime;

use crate::circuit::{Admission, Circuit, CircuitState};
use crate::intensity::{Intensity, RestartWindow};
use crate::outage::{DependencyDown, Outage, Probe};
use crate::policy::SupervisionPolicy;
use crate::service::SupervisorMsg;
use crate::snapshot::{ActorNode, CircuitView, FailureRecord, NodeKind, QueueView};
use crate::ticket::Ticket;

/// How many failures a service remembers for `/admin/actors/{name}`.
const RECENT_FAILURES: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// Every worker is up.
    Running,
    /// Some workers are down and a restart is scheduled.
    Restarting,
    /// Not started yet, or shut down.
    Stopped,
    /// The circuit is open: workers are down until it half-opens.
    Failed,
}

/// Per-worker counters that survive the worker's restarts.
#[derive(Debug)]
pub struct WorkerStats {
    pub name: String,
    handled: AtomicU64,
    /// Sent, not yet taken from the mailbox.
    depth: AtomicI64,
    /// Sent, and neither answered nor handled: what load balancing looks
    /// at, since a worker busy with a slow message has an empty mailbox. A
    /// message stops counting when its caller has the reply, as a load
    /// balancer counts a request outstanding until its response: a caller
    /// that sends its next call at once must not find the worker that just
    /// answered it still counted busy (it would be queued behind a worker
    /// that really is).
    in_flight: AtomicI64,
    restarts: AtomicU64,
    /// How long this worker's recent messages took, in microseconds (a
    /// moving mean).
    handling_micros: AtomicU64,
    book: Mutex<WorkerBook>,
}

#[derive(Debug, Default)]
struct WorkerBook {
    running_since: Option<Instant>,
    last_failure: Option<FailureRecord>,
}

impl WorkerStats {
    fn new(name: String) -> Self {
        Self {
            name,
            handled: AtomicU64::new(0),
            depth: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            restarts: AtomicU64::new(0),
            handling_micros: AtomicU64::new(0),
            book: Mutex::new(WorkerBook::default()),
        }
    }

    /// Messages sent and not yet received (never negative: a stale decrement
    /// after a restart's reset is clamped).
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed).max(0) as u64
    }

    pub(crate) fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one more message in flight if the count is still `seen`: two
    /// callers that looked at the same idle worker at once do not both take
    /// it (the second looks again).
    fn try_reserve(&self, seen: i64) -> bool {
        self.in_flight
            .compare_exchange(seen, seen + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// A message reserved by [`ServiceShared::reserve_least_loaded`] was sent.
    pub(crate) fn message_sent(&self) {
        self.depth.fetch_add(1, Ordering::Relaxed);
    }

    /// The send failed: the message never reached a mailbox (its
    /// reservation is undone too).
    pub(crate) fn message_unsent(&self) {
        self.depth.fetch_sub(1, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn message_received(&self) {
        self.depth.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn message_handled(&self, ticket: &Ticket) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.release(ticket);
    }

    /// Taken from the mailbox and dropped unhandled (its caller had gone).
    pub(crate) fn message_skipped(&self, ticket: &Ticket) {
        self.release(ticket);
    }

    /// The caller has the reply: the worker is free as far as balancing
    /// goes, whatever the handler still does before it returns.
    pub(crate) fn reply_received(&self, ticket: &Ticket) {
        self.release(ticket);
    }

    fn release(&self, ticket: &Ticket) {
        if ticket.release() {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn is_running(&self) -> bool {
        lock(&self.book).running_since.is_some()
    }
}

#[derive(Debug)]
struct ServiceBook {
    status: ServiceStatus,
    circuit: Circuit,
    window: RestartWindow,
    restarts: u64,
    failures: VecDeque<FailureRecord>,
    running_since: Option<Instant>,
}

/// The shared record of one service. See the module docs.
#[derive(Debug)]
pub struct ServiceShared {
    name: String,
    policy: SupervisionPolicy,
    workers: Vec<WorkerStats>,
    /// The circuit state as a number, readable without the lock (hot path).
    circuit_fast: AtomicU8,
    book: Mutex<ServiceBook>,
    supervisor: Mutex<Option<ActorRef<SupervisorMsg>>>,
    /// How many messages may wait for the main lane's workers, and for how
    /// long; past either, calls are shed.
    queue: QueueBounds,
    /// The read lane's workers: the last `read_workers` of `workers`.
    read_workers: usize,
    /// The read lane's bounds.
    read_queue: QueueBounds,
    /// Calls refused because the queue was full.
    shed: AtomicU64,
    /// Messages skipped because their caller had given up before a worker
    /// took them.
    expired: AtomicU64,
    /// How long recent messages waited in the queue, in microseconds (an
    /// exponentially weighted mean, for `/admin/actors`; the histogram is in
    /// the metrics).
    queue_wait_micros: AtomicU64,
    /// Whether a dependency the service needs is down (see [`crate::outage`]).
    outage: Arc<Outage>,
}

/// Which of a service's workers a call goes to. A service with read workers
/// (`services.<name>.read_workers`) keeps its reads apart from everything
/// else, a bulkhead: a flood of writes neither queues nor sheds its reads,
/// each lane with a queue of its own. Without read workers both lanes are
/// the whole pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lane {
    /// Writes, events and anything not marked a read.
    #[default]
    Main,
    /// Calls that only read (the front-end's `GET` and `HEAD`).
    Reads,
}

/// The bounds of a service's two lanes.
#[derive(Clone, Copy, Debug)]
pub struct Lanes {
    /// The main lane: every worker but the read workers
    /// ([`SupervisionPolicy::read_workers`], the last of the pool).
    pub main: QueueBounds,
    pub reads: QueueBounds,
}

/// What a service's queue holds at most: a count, and an expected wait.
#[derive(Clone, Copy, Debug)]
pub struct QueueBounds {
    /// At most this many messages wait for a worker.
    pub limit: usize,
    /// A new message is shed if it would wait longer than this.
    pub max_wait: Duration,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain counters behind,
    // never a broken invariant, so the data is still good to read.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long a message sent now to these workers would wait: the messages
/// ahead of it (`queued`), at the pace the workers have been getting through
/// theirs. Zero until they have handled one.
fn expected_wait(workers: &[WorkerStats], queued: u64) -> Duration {
    let count = workers.len().max(1) as u64;
    Duration::from_micros(queued.saturating_mul(mean_handling_micros(workers)) / count)
}

/// The mean of these workers' handling times, in microseconds.
fn mean_handling_micros(workers: &[WorkerStats]) -> u64 {
    let handling: u64 = workers
        .iter()
        .map(|w| w.handling_micros.load(Ordering::Relaxed))
        .sum();
    handling / workers.len().max(1) as u64
}

/// Moves a moving mean of microseconds toward `sample`: mean ← mean +
/// (sample − mean) / 8, the first sample taken as it is. Racy but never
/// torn: concurrent updates may lose one another's sample, which a mean
/// for shedding and for a page can afford.
fn update_mean(mean_micros: &AtomicU64, sample: Duration) {
    let sample = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX);
    let mean = mean_micros.load(Ordering::Relaxed);
    let next = if mean == 0 {
        sample
    } else {
        mean - mean / 8 + sample / 8
    };
    mean_micros.store(next, Ordering::Relaxed);
}

const FAST_CLOSED: u8 = 0;
const FAST_HALF_OPEN: u8 = 1;
const FAST_OPEN: u8 = 2;

fn fast(state: CircuitState) -> u8 {
    match state {
        CircuitState::Closed => FAST_CLOSED,
        CircuitState::HalfOpen => FAST_HALF_OPEN,
        CircuitState::Open => FAST_OPEN,
    }
}

/// A service's circuit as gauges: `circuit_state` (0 closed, 1 half-open,
/// 2 open) and, as Dapr exposes its breakers, `circuit_open` 0/1, which an
/// alert can test without knowing the encoding.
fn publish_circuit_gauges(service: &str, state: CircuitState) {
    metrics::gauge!("circuit_state", "service" => service.to_owned()).set(state.gauge());
    let open = if state == CircuitState::Open {
        1.0
    } else {
        0.0
    };
    metrics::gauge!("circuit_open", "service" => service.to_owned()).set(open);
}

impl ServiceShared {
    pub fn new(
        name: impl Into<String>,
        policy: SupervisionPolicy,
        workers: usize,
        lanes: Lanes,
    ) -> Arc<Self> {
        let read_workers = policy.read_workers.min(workers.saturating_sub(1));
        let name = name.into();
        let workers = (0..workers.max(1))
            .map(|i| WorkerStats::new(format!("{name}-worker-{i}")))
            .collect();
        let book = ServiceBook {
            status: ServiceStatus::Stopped,
            circuit: Circuit::new(policy.open_for, policy.open_for_max),
            window: RestartWindow::new(policy.max_restarts, policy.within),
            restarts: 0,
            failures: VecDeque::new(),
            running_since: None,
        };
        let shared = Arc::new(Self {
            name,
            policy,
            workers,
            circuit_fast: AtomicU8::new(FAST_CLOSED),
            book: Mutex::new(book),
            supervisor: Mutex::new(None),
            queue: QueueBounds {
                limit: lanes.main.limit.max(1),
                ..lanes.main
            },
            read_workers,
            read_queue: QueueBounds {
                limit: lanes.reads.limit.max(1),
                ..lanes.reads
            },
            shed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            queue_wait_micros: AtomicU64::new(0),
            outage: Arc::default(),
        });
        shared.publish_circuit(CircuitState::Closed);
        // Zero-valued series from the start, so rate() and alerts see them
        // before the first failure.
        for counter in [
            "actor_messages_total",
            "actor_restarts_total",
            "actor_failures_total",
            "actor_shed_total",
            "actor_expired_total",
        ] {
            metrics::counter!(counter, "actor" => shared.name.clone()).increment(0);
        }
        metrics::counter!("actor_refused_total", "actor" => shared.name.clone(), "reason" => "dependency_down")
            .increment(0);
        metrics::counter!("circuit_trips_total", "service" => shared.name.clone()).increment(0);
        shared
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn policy(&self) -> &SupervisionPolicy {
        &self.policy
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    pub fn worker(&self, index: usize) -> &WorkerStats {
        &self.workers[index]
    }

    /// Reserves a message in flight on the least loaded of `candidates`
    /// (the first on a tie) and answers its index; `None` if there are no
    /// candidates. Looking and counting are one step: callers arriving at
    /// the same instant spread over idle workers instead of queueing behind
    /// the first one.
    pub(crate) fn reserve_least_loaded(
        &self,
        candidates: impl Iterator<Item = usize> + Clone,
    ) -> Option<usize> {
        loop {
            let (index, seen) = candidates
                .clone()
                .map(|i| (i, self.workers[i].in_flight()))
                .min_by_key(|&(_, in_flight)| in_flight)?;
            if self.workers[index].try_reserve(seen) {
                return Some(index);
            }
        }
    }

    /// The index of a worker by its name (`orders-worker-0`).
    pub fn worker_index(&self, name: &str) -> Option<usize> {
        self.workers.iter().position(|w| w.name == name)
    }

    pub fn status(&self) -> ServiceStatus {
        lock(&self.book).status
    }

    /// Restarts over the service's life.
    pub fn restarts(&self) -> u64 {
        lock(&self.book).restarts
    }

    pub fn circuit_state(&self) -> CircuitState {
        lock(&self.book).circuit.state()
    }

    /// Messages sent to the workers and not yet taken by one.
    pub fn queued(&self) -> u64 {
        self.workers.iter().map(WorkerStats::depth).sum()
    }

    /// At most this many messages wait, both lanes together.
    pub fn queue_limit(&self) -> usize {
        if self.read_workers == 0 {
            self.queue.limit
        } else {
            self.queue.limit + self.read_queue.limit
        }
    }

    /// The workers of a lane, by index.
    pub(crate) fn lane_workers(&self, lane: Lane) -> std::ops::Range<usize> {
        let all = self.workers.len();
        let main = all - self.read_workers;
        match lane {
            _ if self.read_workers == 0 => 0..all,
            Lane::Main => 0..main,
            Lane::Reads => main..all,
        }
    }

    fn bounds(&self, lane: Lane) -> QueueBounds {
        match lane {
            Lane::Reads if self.read_workers > 0 => self.read_queue,
            _ => self.queue,
        }
    }

    /// Whether a new message finds room in its lane's queue: fewer than the
    /// lane's limit wait, and it would not wait longer than allowed.
    pub(crate) fn has_room(&self, lane: Lane) -> bool {
        let bounds = self.bounds(lane);
        let workers = &self.workers[self.lane_workers(lane)];
        let queued: u64 = workers.iter().map(WorkerStats::depth).sum();
        queued < bounds.limit as u64 && expected_wait(workers, queued) <= bounds.max_wait
    }

    /// A call was refused because the queue was full: load, not a failure.
    pub(crate) fn record_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("actor_shed_total", "actor" => self.name.clone()).increment(1);
    }

    /// A worker skipped a message whose caller had given up.
    pub(crate) fn record_expired(&self) {
        self.expired.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("actor_expired_total", "actor" => self.name.clone()).increment(1);
    }

    /// How long a message waited for a worker.
    pub(crate) fn record_wait(&self, waited: Duration) {
        metrics::histogram!("actor_queue_wait_seconds", "actor" => self.name.clone())
            .record(waited.as_secs_f64());
        update_mean(&self.queue_wait_micros, waited);
    }

    /// How long a worker took to handle a message.
    pub(crate) fn record_handling(&self, index: usize, took: Duration) {
        update_mean(&self.workers[index].handling_micros, took);
    }

    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Whether a call may go through now. Lock-free while the circuit is closed.
    pub fn admit(&self) -> Admission {
        if self.circuit_fast.load(Ordering::Acquire) == FAST_CLOSED {
            return Admission::Admit;
        }
        lock(&self.book).circuit.admit(Instant::now())
    }

    /// Gives the service a probe of what it cannot work without: a handler
    /// failing with [`DependencyDown`] then starts an outage that refuses
    /// calls at once until the probe answers (see [`crate::outage`]).
    pub fn set_probe(&self, probe: Arc<dyn Probe>) {
        self.outage.set_probe(probe);
    }

    /// Whether calls are refused because a dependency is down.
    pub fn dependency_down(&self) -> bool {
        self.outage.is_down()
    }

    /// A handler failed because a dependency is unreachable.
    pub(crate) fn record_dependency_down(&self, failure: &DependencyDown) {
        self.outage.begin(&self.name, failure);
    }

    /// A worker handled a message without failing: closes a half-open circuit.
    pub fn record_success(&self) {
        if self.circuit_fast.load(Ordering::Acquire) != FAST_HALF_OPEN {
            return;
        }
        let closed = lock(&self.book).circuit.record_success();
        if closed {
            tracing::info!(service = %self.name, "circuit closed: the service answered successfully");
            self.publish_circuit(CircuitState::Closed);
        }
    }

    // ---- written by the supervisor -------------------------------------------------

    pub(crate) fn set_supervisor(&self, supervisor: Option<ActorRef<SupervisorMsg>>) {
        *lock(&self.supervisor) = supervisor;
    }

    pub(crate) fn supervisor(&self) -> Option<ActorRef<SupervisorMsg>> {
        lock(&self.supervisor).clone()
    }

    pub(crate) fn set_status(&self, status: ServiceStatus) {
        let mut book = lock(&self.book);
        if status == ServiceStatus::Running && book.status != ServiceStatus::Running {
            book.running_since = Some(Instant::now());
        } else if status != ServiceStatus::Running {
            book.running_since = None;
        }
        book.status = status;
    }

    /// Notes a failure and counts it against the intensity window.
    pub(crate) fn record_failure(&self, worker: Option<usize>, reason: &str) -> Intensity {
        let record = FailureRecord {
            at: OffsetDateTime::now_utc(),
            reason: reason.to_owned(),
            worker: worker.map(|i| self.workers[i].name.clone()),
        };
        metrics::counter!("actor_failures_total", "actor" => self.name.clone()).increment(1);
        if let Some(i) = worker {
            let mut wb = lock(&self.workers[i].book);
            wb.last_failure = Some(record.clone());
            wb.running_since = None;
        }
        let mut book = lock(&self.book);
        if book.failures.len() == RECENT_FAILURES {
            book.failures.pop_front();
        }
        book.failures.push_back(record);
        if book.circuit.state() == CircuitState::HalfOpen {
            // A failure while half-open re-opens the circuit whatever the window says.
            return Intensity::Exceeded;
        }
        book.window.record(Instant::now())
    }

    pub(crate) fn record_restart(&self, workers: &[usize]) {
        lock(&self.book).restarts += 1;
        for &i in workers {
            self.workers[i].restarts.fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!("actor_restarts_total", "actor" => self.name.clone()).increment(1);
    }

    pub(crate) fn worker_up(&self, index: usize) {
        let worker = &self.workers[index];
        // Messages counted against the previous incarnation died with its mailbox.
        worker.depth.store(0, Ordering::Relaxed);
        worker.in_flight.store(0, Ordering::Relaxed);
        lock(&worker.book).running_since = Some(Instant::now());
    }

    pub(crate) fn worker_down(&self, index: usize) {
        lock(&self.workers[index].book).running_since = None;
    }

    pub(crate) fn all_workers_up(&self) -> bool {
        self.workers.iter().all(WorkerStats::is_running)
    }

    /// Opens the circuit; returns how long it stays open.
    pub(crate) fn trip(&self) -> Duration {
        let open_for = {
            let mut book = lock(&self.book);
            book.status = ServiceStatus::Failed;
            book.running_since = None;
            book.circuit.trip(Instant::now())
        };
        metrics::counter!("circuit_trips_total", "service" => self.name.clone()).increment(1);
        self.publish_circuit(CircuitState::Open);
        open_for
    }

    /// Open → half-open, with a clean intensity window. False if the circuit
    /// was not open on a timer (closed or forced meanwhile).
    pub(crate) fn half_open(&self) -> bool {
        let moved = {
            let mut book = lock(&self.book);
            let moved = book.circuit.half_open();
            if moved {
                book.window.clear();
            }
            moved
        };
        if moved {
            self.publish_circuit(CircuitState::HalfOpen);
        }
        moved
    }

    pub(crate) fn force_open(&self) {
        lock(&self.book).circuit.force_open();
        self.publish_circuit(CircuitState::Open);
    }

    /// Closes a half-open circuit whose workers have run for `open_for`
    /// without failing (see `SupervisorMsg::Settle`); anything else is left.
    pub(crate) fn settle_half_open(&self) {
        let closed = lock(&self.book).circuit.record_success();
        if closed {
            tracing::info!(service = %self.name, "circuit closed: no failure while half-open");
            self.publish_circuit(CircuitState::Closed);
        }
    }

    pub(crate) fn force_close(&self) {
        {
            let mut book = lock(&self.book);
            book.circuit.close();
            book.window.clear();
        }
        self.publish_circuit(CircuitState::Closed);
    }

    fn publish_circuit(&self, state: CircuitState) {
        self.circuit_fast.store(fast(state), Ordering::Release);
        publish_circuit_gauges(&self.name, state);
    }

    // ---- read by the admin endpoint ------------------------------------------------

    /// Sets the gauges that are sampled rather than counted (mailbox depth).
    pub fn publish_gauges(&self) {
        let depth: u64 = self.workers.iter().map(WorkerStats::depth).sum();
        metrics::gauge!("actor_mailbox_depth", "actor" => self.name.clone()).set(depth as f64);
        metrics::gauge!("actor_queue_limit", "actor" => self.name.clone())
            .set(self.queue_limit() as f64);
        publish_circuit_gauges(&self.name, self.circuit_state());
    }

    /// The service's node with its workers as children. `detail` adds the
    /// recent failures (the single-actor view).
    pub fn snapshot(&self, detail: bool) -> ActorNode {
        let now = Instant::now();
        let book = lock(&self.book);
        let circuit = CircuitView {
            state: book.circuit.state(),
            opened_at: book.circuit.opened_at(),
            retry_at: book.circuit.retry_at(),
            trips: book.circuit.trips(),
            forced: book.circuit.is_forced(),
        };
        let children: Vec<ActorNode> = (0..self.workers.len())
            .map(|i| self.worker_node(i, detail, now))
            .collect();
        ActorNode {
            name: self.name.clone(),
            kind: NodeKind::Service,
            status: book.status,
            circuit: Some(circuit),
            strategy: Some(self.policy.strategy),
            restarts: book.restarts,
            restarts_in_window: Some(book.window.count(now)),
            messages_handled: children.iter().map(|c| c.messages_handled).sum(),
            mailbox_depth: children.iter().map(|c| c.mailbox_depth).sum(),
            queue: Some(QueueView {
                limit: self.queue_limit() as u64,
                max_wait_ms: self.queue.max_wait.as_secs_f64() * 1000.0,
                shed: self.shed(),
                expired: self.expired(),
                wait_ms: self.queue_wait_micros.load(Ordering::Relaxed) as f64 / 1000.0,
                handling_ms: mean_handling_micros(&self.workers[self.lane_workers(Lane::Main)])
                    as f64
                    / 1000.0,
                read_workers: self.read_workers,
            }),
            outage: self.outage.view(),
            last_failure: book.failures.back().cloned(),
            recent_failures: detail.then(|| book.failures.iter().rev().cloned().collect()),
            uptime_seconds: book
                .running_since
                .map(|t| now.duration_since(t).as_secs_f64()),
            children,
        }
    }

    /// One worker's node.
    pub fn worker_node(&self, index: usize, detail: bool, now: Instant) -> ActorNode {
        let worker = &self.workers[index];
        let book = lock(&worker.book);
        ActorNode {
            name: worker.name.clone(),
            kind: NodeKind::Worker,
            status: if book.running_since.is_some() {
                ServiceStatus::Running
            } else {
                ServiceStatus::Stopped
            },
            circuit: None,
            strategy: None,
            restarts: worker.restarts.load(Ordering::Relaxed),
            restarts_in_window: None,
            messages_handled: worker.handled.load(Ordering::Relaxed),
            mailbox_depth: worker.depth(),
            queue: None,
            outage: None,
            last_failure: book.last_failure.clone(),
            recent_failures: detail.then(|| book.last_failure.iter().cloned().collect()),
            uptime_seconds: book
                .running_since
                .map(|t| now.duration_since(t).as_secs_f64()),
            children: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_of(workers: usize) -> Arc<ServiceShared> {
        let bounds = QueueBounds {
            limit: 1_000,
            max_wait: Duration::from_secs(1),
        };
        let lanes = Lanes {
            main: bounds,
            reads: bounds,
        };
        ServiceShared::new("pool", SupervisionPolicy::default(), workers, lanes)
    }

    /// Callers arriving at once on idle workers spread evenly: the check
    /// of the least loaded worker and the count against it are one step,
    /// so no two callers both take the worker they both saw idle. (With a
    /// separate look and count, two callers that replied at the same moment
    /// queued behind one worker while the other stood idle.)
    #[test]
    fn simultaneous_callers_spread_over_idle_workers() {
        const WORKERS: usize = 4;
        const CALLERS: usize = 8;
        const CALLS: usize = 500;
        let service = service_of(WORKERS);
        let start = std::sync::Barrier::new(CALLERS);
        std::thread::scope(|scope| {
            for _ in 0..CALLERS {
                scope.spawn(|| {
                    start.wait();
                    for _ in 0..CALLS {
                        assert!(service.reserve_least_loaded(0..WORKERS).is_some());
                    }
                });
            }
        });
        let counts: Vec<i64> = (0..WORKERS)
            .map(|i| service.worker(i).in_flight())
            .collect();
        let even = (CALLERS * CALLS / WORKERS) as i64;
        assert_eq!(counts, vec![even; WORKERS]);
    }

    #[test]
    fn the_least_loaded_candidate_is_reserved_and_a_release_frees_it() {
        let service = service_of(3);
        assert_eq!(service.reserve_least_loaded(0..3), Some(0));
        assert_eq!(service.reserve_least_loaded(0..3), Some(1));
        // Only the candidates count: worker 2 is not live here.
        assert_eq!(service.reserve_least_loaded(0..2), Some(0));
        let ticket = Ticket::new(Instant::now() + Duration::from_secs(1));
        service.worker(1).reply_received(&ticket);
        assert_eq!(service.reserve_least_loaded(0..2), Some(1));
        assert_eq!(service.reserve_least_loaded(std::iter::empty()), None);
    }
}
