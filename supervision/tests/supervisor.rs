//! The supervision rules, driven with toy workers: every strategy, the
//! intensity window, each circuit transition, a panic in `pre_start`, call
//! timeouts, and what callers see when a worker dies.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorRef, RpcReplyPort};
use supervision::root::RootMsg;
use supervision::{
    Backoff, BoxError, CallError, CircuitState, Deadline, RootSupervisor, ServiceHandle,
    ServiceStatus, ServiceSupervisor, Strategy, SupervisionPolicy, Tree, WorkerHandler,
};

/// A worker that does what its message says.
struct Toy;

#[derive(Clone, Default)]
struct ToyArgs {
    /// The index of every worker start, in order.
    starts: Arc<Mutex<Vec<usize>>>,
    /// While above zero, each start panics (and decrements it).
    failing_starts: Arc<AtomicU32>,
}

enum ToyMsg {
    /// Replies with the worker's index.
    Which(RpcReplyPort<usize>),
    /// Sleeps, then replies with the worker's index.
    Sleep(Duration, RpcReplyPort<usize>),
    /// Replies with the worker's index, then goes on working this long.
    ReplyThenLinger(Duration, RpcReplyPort<usize>),
    Panic(RpcReplyPort<usize>),
    /// Returns an error from the handler.
    Fail(RpcReplyPort<usize>),
}

impl WorkerHandler for Toy {
    type Msg = ToyMsg;
    type Context = ();
    type State = usize;
    type Args = ToyArgs;

    async fn init(args: &ToyArgs, index: usize) -> Result<usize, BoxError> {
        let should_fail = args
            .failing_starts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if should_fail {
            panic!("toy worker {index} refuses to start");
        }
        args.starts.lock().unwrap().push(index);
        Ok(index)
    }

    async fn handle(msg: ToyMsg, _ctx: &(), index: &mut usize) -> Result<(), BoxError> {
        match msg {
            ToyMsg::Which(reply) => {
                let _ = reply.send(*index);
            }
            ToyMsg::Sleep(d, reply) => {
                tokio::time::sleep(d).await;
                let _ = reply.send(*index);
            }
            ToyMsg::ReplyThenLinger(d, reply) => {
                let _ = reply.send(*index);
                tokio::time::sleep(d).await;
            }
            ToyMsg::Panic(_reply) => panic!("toy worker {index} was told to panic"),
            ToyMsg::Fail(_reply) => return Err(format!("toy worker {index} failed").into()),
        }
        Ok(())
    }
}

fn policy(strategy: Strategy) -> SupervisionPolicy {
    SupervisionPolicy {
        strategy,
        max_restarts: 3,
        within: Duration::from_secs(10),
        backoff: Backoff {
            min: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
        open_for: Duration::from_millis(300),
        open_for_max: Duration::from_secs(2),
        shutdown_timeout: Duration::from_secs(1),
        queue_limit: Some(16),
        max_queue_wait: None,
        read_workers: 0,
    }
}

struct Running {
    root: ActorRef<RootMsg>,
    tree: Tree,
    handles: Vec<ServiceHandle<ToyMsg>>,
    args: Vec<ToyArgs>,
}

impl Running {
    async fn stop(self) {
        self.root.stop_and_wait(None, None).await.unwrap();
    }

    fn starts(&self, service: usize) -> Vec<usize> {
        self.args[service].starts.lock().unwrap().clone()
    }
}

async fn start(services: Vec<(&str, SupervisionPolicy, usize, ToyArgs)>) -> Running {
    let mut handles = Vec::new();
    let mut starters = Vec::new();
    let mut args_out = Vec::new();
    for (name, policy, workers, args) in services {
        let (handle, starter) = ServiceSupervisor::<Toy>::build(
            name,
            policy,
            workers,
            Duration::from_millis(500),
            args.clone(),
        );
        handles.push(handle);
        starters.push(starter);
        args_out.push(args);
    }
    let tree = Tree::new(starters.iter().map(|s| s.shared().clone()).collect());
    let (root, _) = Actor::spawn(None, RootSupervisor, starters).await.unwrap();
    let running = Running {
        root,
        tree,
        handles,
        args: args_out,
    };
    for h in &running.handles {
        let shared = h.shared().clone();
        wait_until("service running", || {
            shared.status() == ServiceStatus::Running
        })
        .await;
    }
    running
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Keeps worker 0 busy so that the next call goes to worker 1.
fn occupy_worker_0(handle: &ServiceHandle<ToyMsg>) -> tokio::task::JoinHandle<()> {
    let h = handle.clone();
    tokio::spawn(async move {
        let index = h
            .call(|r| ToyMsg::Sleep(Duration::from_millis(200), r))
            .await;
        assert_eq!(index, Ok(0));
    })
}

async fn crash_worker_1(handle: &ServiceHandle<ToyMsg>) {
    let busy = occupy_worker_0(handle);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let err = handle.call(ToyMsg::Panic).await.unwrap_err();
    assert!(matches!(err, CallError::Crashed { .. }), "{err:?}");
    busy.await.unwrap();
}

async fn restarted_with(running: &Running, expected_starts: usize) -> Vec<usize> {
    wait_until("restart", || running.starts(0).len() == expected_starts).await;
    let shared = running.handles[0].shared().clone();
    wait_until("running again", || {
        shared.status() == ServiceStatus::Running
    })
    .await;
    running.starts(0)[3..].to_vec()
}

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_worker() {
    let running = start(vec![(
        "toy",
        policy(Strategy::OneForOne),
        3,
        ToyArgs::default(),
    )])
    .await;
    assert_eq!(running.starts(0), vec![0, 1, 2]);
    crash_worker_1(&running.handles[0]).await;
    assert_eq!(restarted_with(&running, 4).await, vec![1]);
    let node = running.tree.node("toy").unwrap();
    assert_eq!(node.restarts, 1);
    assert_eq!(node.restarts_in_window, Some(1));
    assert_eq!(node.children[1].restarts, 1);
    assert_eq!(node.children[0].restarts, 0);
    let failure = node.last_failure.unwrap();
    assert!(
        failure.reason.contains("told to panic"),
        "{}",
        failure.reason
    );
    assert_eq!(failure.worker.as_deref(), Some("toy-worker-1"));
    running.stop().await;
}

#[tokio::test]
async fn one_for_all_restarts_every_worker() {
    let running = start(vec![(
        "toy",
        policy(Strategy::OneForAll),
        3,
        ToyArgs::default(),
    )])
    .await;
    crash_worker_1(&running.handles[0]).await;
    let mut restarted = restarted_with(&running, 6).await;
    restarted.sort();
    assert_eq!(restarted, vec![0, 1, 2]);
    running.stop().await;
}

#[tokio::test]
async fn rest_for_one_restarts_the_failed_worker_and_later_ones() {
    let running = start(vec![(
        "toy",
        policy(Strategy::RestForOne),
        3,
        ToyArgs::default(),
    )])
    .await;
    crash_worker_1(&running.handles[0]).await;
    assert_eq!(restarted_with(&running, 5).await, vec![1, 2]);
    running.stop().await;
}

#[tokio::test]
async fn an_error_returned_by_a_handler_is_a_failure_too() {
    let running = start(vec![(
        "toy",
        policy(Strategy::OneForOne),
        1,
        ToyArgs::default(),
    )])
    .await;
    let err = running.handles[0].call(ToyMsg::Fail).await.unwrap_err();
    assert!(matches!(err, CallError::Crashed { .. }), "{err:?}");
    wait_until("restart", || running.starts(0).len() == 2).await;
    running.stop().await;
}

/// Fails the single worker of service 0 `times` times, waiting for each restart.
async fn fail_times(running: &Running, times: usize) {
    for _ in 0..times {
        let shared = running.handles[0].shared().clone();
        wait_until("a worker is up", || {
            shared.status() == ServiceStatus::Running
        })
        .await;
        let _ = running.handles[0].call(ToyMsg::Panic).await;
    }
}

#[tokio::test]
async fn exceeding_the_intensity_opens_the_circuit_without_touching_siblings() {
    let running = start(vec![
        ("flaky", policy(Strategy::OneForOne), 1, ToyArgs::default()),
        ("steady", policy(Strategy::OneForOne), 1, ToyArgs::default()),
    ])
    .await;
    let flaky = running.handles[0].shared().clone();
    fail_times(&running, 3).await;
    wait_until("third restart", || running.starts(0).len() == 4).await;
    assert_eq!(flaky.circuit_state(), CircuitState::Closed);

    fail_times(&running, 1).await;
    wait_until("circuit open", || {
        flaky.circuit_state() == CircuitState::Open
    })
    .await;
    assert_eq!(flaky.status(), ServiceStatus::Failed);
    match running.handles[0].call(ToyMsg::Which).await {
        Err(CallError::CircuitOpen { retry_after, .. }) => {
            assert!(retry_after <= Duration::from_millis(300), "{retry_after:?}")
        }
        other => panic!("expected an open circuit, got {other:?}"),
    }
    // The sibling keeps serving, and the process (root) is untouched.
    assert_eq!(running.handles[1].call(ToyMsg::Which).await, Ok(0));
    let tree = running.tree.snapshot();
    assert_eq!(
        tree.find("steady").unwrap().circuit.as_ref().unwrap().state,
        CircuitState::Closed
    );
    assert_eq!(
        tree.find("flaky").unwrap().circuit.as_ref().unwrap().trips,
        1
    );
    running.stop().await;
}

#[tokio::test]
async fn open_circuit_half_opens_after_open_for_and_a_success_closes_it() {
    let running = start(vec![(
        "toy",
        policy(Strategy::OneForOne),
        1,
        ToyArgs::default(),
    )])
    .await;
    let shared = running.handles[0].shared().clone();
    fail_times(&running, 4).await;
    wait_until("open", || shared.circuit_state() == CircuitState::Open).await;
    let opened = Instant::now();

    wait_until("half-open", || {
        shared.circuit_state() == CircuitState::HalfOpen
    })
    .await;
    assert!(
        opened.elapsed() >= Duration::from_millis(250),
        "half-opened too early"
    );
    wait_until("worker restarted", || {
        shared.status() == ServiceStatus::Running
    })
    .await;

    assert_eq!(running.handles[0].call(ToyMsg::Which).await, Ok(0));
    assert_eq!(shared.circuit_state(), CircuitState::Closed);
    running.stop().await;
}

/// A service nobody calls while it is half-open (the event bus with no event
/// to publish; a replica a load balancer stopped routing to, as it is not
/// ready) would otherwise stay half-open, and its replica unready, for ever.
#[tokio::test]
async fn a_half_open_circuit_with_no_call_and_no_failure_closes_after_open_for() {
    let running = start(vec![(
        "toy",
        policy(Strategy::OneForOne),
        1,
        ToyArgs::default(),
    )])
    .await;
    let shared = running.handles[0].shared().clone();
    fail_times(&running, 4).await;
    wait_until("open", || shared.circuit_state() == CircuitState::Open).await;
    wait_until("half-open", || {
        shared.circuit_state() == CircuitState::HalfOpen
    })
    .await;
    let half_opened = Instant::now();
    // No call: it closes by itself, after open_for (300 ms), not before.
    wait_until("closed without a call", || {
        shared.circuit_state() == CircuitState::Closed
    })
    .await;
    let after = half_opened.elapsed();
    assert!(
        after >= Duration::from_millis(250),
        "closed {after:?} after half-opening"
    );
    assert_eq!(shared.status(), ServiceStatus::Running);
    assert_eq!(running.handles[0].call(ToyMsg::Which).await, Ok(0));
    running.stop().await;
}

#[tokio::test]
async fn a_failure_while_half_open_reopens_for_twice_as_long() {
    let running = start(vec![(
        "toy",
        policy(Strategy::OneForOne),
        1,
        ToyArgs::default(),
    )])
    .await;
    let shared = running.handles[0].shared().clone();
    fail_times(&running, 4).await;
    wait_until("open", || shared.circuit_state() == CircuitState::Open).await;
    wait_until("half-open", || {
        shared.circuit_state() == CircuitState::HalfOpen
    })
    .await;
    wait_until("worker restarted", || {
        shared.status() == ServiceStatus::Running
    })
    .await;

    let _ = running.handles[0].call(ToyMsg::Panic).await;
    wait_until("re-opened", || shared.circuit_state() == CircuitState::Open).await;
    let reopened = Instant::now();
    let node = running.tree.node("toy").unwrap();
    assert_eq!(node.circuit.unwrap().trips, 2);
    wait_until("half-open again", || {
        shared.circuit_state() == CircuitState::HalfOpen
    })
    .await;
    let waited = reopened.elapsed();
    assert!(
        waited >= Duration::from_millis(550),
        "second open lasted only {waited:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_panic_in_pre_start_is_a_failure_that_is_retried() {
    let args = ToyArgs::default();
    args.failing_starts.store(2, Ordering::SeqCst);
    let running = start(vec![("toy", policy(Strategy::OneForOne), 1, args)]).await;
    assert_eq!(running.starts(0), vec![0]);
    let node = running.tree.node("toy").unwrap();
    assert_eq!(node.restarts, 2);
    let failures = node.recent_failures.unwrap();
    assert_eq!(failures.len(), 2);
    assert!(
        failures[0].reason.contains("refuses to start"),
        "{}",
        failures[0].reason
    );
    assert_eq!(running.handles[0].call(ToyMsg::Which).await, Ok(0));
    running.stop().await;
}

#[tokio::test]
async fn a_worker_that_never_starts_trips_the_circuit_instead_of_looping() {
    let args = ToyArgs::default();
    args.failing_starts.store(u32::MAX, Ordering::SeqCst);
    let (handle, starter) = ServiceSupervisor::<Toy>::build(
        "broken",
        policy(Strategy::OneForOne),
        1,
        Duration::from_millis(500),
        args,
    );
    let (root, _) = Actor::spawn(None, RootSupervisor, vec![starter])
        .await
        .unwrap();
    let shared = handle.shared().clone();
    wait_until("open", || shared.circuit_state() == CircuitState::Open).await;
    assert!(matches!(
        handle.call(ToyMsg::Which).await,
        Err(CallError::CircuitOpen { .. })
    ));
    root.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn a_call_that_misses_its_timeout_restarts_the_stuck_worker() {
    let running = start(vec![(
        "toy",
        policy(Strategy::OneForOne),
        1,
        ToyArgs::default(),
    )])
    .await;
    let err = running.handles[0]
        .call(|r| ToyMsg::Sleep(Duration::from_secs(5), r))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err:?}");
    wait_until("restart", || running.starts(0).len() == 2).await;
    let node = running.tree.node("toy").unwrap();
    assert!(node.last_failure.unwrap().reason.contains("call timeout"));
    let shared = running.handles[0].shared().clone();
    wait_until("running", || shared.status() == ServiceStatus::Running).await;
    assert_eq!(running.handles[0].call(ToyMsg::Which).await, Ok(0));
    running.stop().await;
}

#[tokio::test]
async fn a_call_stops_counting_against_its_worker_when_the_caller_has_the_reply() {
    // Balancing counts a call as a load balancer counts a request: until
    // its reply. Worker 1 answers and lingers; worker 0 is busy for real.
    // Counted until its handler returned, worker 1 would tie with worker 0
    // and the next call would queue behind worker 0's long sleep (the race
    // a client sending its next request at once runs into).
    let running = start(vec![(
        "toy",
        policy(Strategy::OneForOne),
        2,
        ToyArgs::default(),
    )])
    .await;
    let handle = &running.handles[0];
    let busy = occupy_worker_0(handle);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let answered = handle
        .call(|r| ToyMsg::ReplyThenLinger(Duration::from_millis(100), r))
        .await;
    assert_eq!(answered, Ok(1));
    let next = handle.call(ToyMsg::Which).await;
    assert_eq!(next, Ok(1), "the next call went behind the busy worker");
    busy.await.unwrap();
    running.stop().await;
}

#[tokio::test]
async fn a_full_queue_sheds_at_once_and_sheds_are_not_failures() {
    let small_queue = SupervisionPolicy {
        queue_limit: Some(2),
        ..policy(Strategy::OneForOne)
    };
    let running = start(vec![("toy", small_queue, 1, ToyArgs::default())]).await;
    let h = running.handles[0].clone();
    let sleep = |h: ServiceHandle<ToyMsg>| {
        tokio::spawn(async move {
            h.call(|r| ToyMsg::Sleep(Duration::from_millis(100), r))
                .await
        })
    };
    let busy = sleep(h.clone());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let queued = [sleep(h.clone()), sleep(h.clone())];
    tokio::time::sleep(Duration::from_millis(20)).await;
    let refused_at = Instant::now();
    let shed = h.call(ToyMsg::Which).await;
    assert!(matches!(shed, Err(CallError::Shed { .. })), "{shed:?}");
    assert!(
        refused_at.elapsed() < Duration::from_millis(50),
        "refused at once"
    );
    assert_eq!(busy.await.unwrap(), Ok(0));
    for call in queued {
        assert_eq!(call.await.unwrap(), Ok(0), "what was admitted is served");
    }
    let node = running.tree.node("toy").unwrap();
    assert_eq!(node.queue.as_ref().unwrap().shed, 1);
    assert_eq!(node.queue.as_ref().unwrap().limit, 2);
    assert_eq!(node.restarts, 0);
    assert!(node.last_failure.is_none(), "{:?}", node.last_failure);
    assert_eq!(running.starts(0).len(), 1, "no worker was restarted");
    running.stop().await;
}

#[tokio::test]
async fn a_call_that_would_wait_longer_than_the_bound_is_shed_before_the_queue_is_full() {
    let bounded_wait = SupervisionPolicy {
        queue_limit: Some(16),
        max_queue_wait: Some(Duration::from_millis(150)),
        ..policy(Strategy::OneForOne)
    };
    let running = start(vec![("toy", bounded_wait, 1, ToyArgs::default())]).await;
    let h = running.handles[0].clone();
    let sleep = |h: ServiceHandle<ToyMsg>| {
        tokio::spawn(async move {
            h.call(|r| ToyMsg::Sleep(Duration::from_millis(100), r))
                .await
        })
    };
    // One handled message teaches the queue that a message takes ~100 ms.
    assert_eq!(sleep(h.clone()).await.unwrap(), Ok(0));
    let busy = sleep(h.clone());
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Waiting ahead (the one in hand is not counted): none, then one
    // (~100 ms), both within the bound.
    let admitted = [sleep(h.clone()), sleep(h.clone())];
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Two ahead: ~200 ms, past it, with 14 places left in the queue.
    let shed = h.call(ToyMsg::Which).await;
    assert!(matches!(shed, Err(CallError::Shed { .. })), "{shed:?}");
    assert_eq!(busy.await.unwrap(), Ok(0));
    for call in admitted {
        assert_eq!(call.await.unwrap(), Ok(0), "what was admitted is served");
    }
    let node = running.tree.node("toy").unwrap();
    let queue = node.queue.unwrap();
    assert_eq!(queue.shed, 1);
    assert_eq!(queue.max_wait_ms, 150.0);
    assert!(queue.handling_ms >= 90.0, "{queue:?}");
    assert!(node.last_failure.is_none());
    // Once the queue has drained, calls are admitted again.
    assert_eq!(h.call(ToyMsg::Which).await, Ok(0));
    running.stop().await;
}

#[tokio::test]
async fn a_message_whose_caller_gave_up_is_skipped_not_handled() {
    let running = start(vec![(
        "toy",
        policy(Strategy::OneForOne),
        1,
        ToyArgs::default(),
    )])
    .await;
    let h = running.handles[0].clone();
    let busy = tokio::spawn({
        let h = h.clone();
        async move {
            h.call(|r| ToyMsg::Sleep(Duration::from_millis(200), r))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The caller goes away while its message waits behind the busy worker.
    let gone = tokio::time::timeout(Duration::from_millis(50), h.call(ToyMsg::Which)).await;
    assert!(gone.is_err(), "the caller stopped waiting");
    assert_eq!(busy.await.unwrap(), Ok(0));
    wait_until("skipped", || {
        running.tree.node("toy").unwrap().queue.unwrap().expired == 1
    })
    .await;
    let node = running.tree.node("toy").unwrap();
    assert_eq!(node.messages_handled, 1, "only the sleep was handled");
    assert!(node.last_failure.is_none());
    assert_eq!(h.call(ToyMsg::Which).await, Ok(0));
    running.stop().await;
}

#[tokio::test]
async fn a_message_that_waited_out_its_timeout_in_the_queue_fails_nobody() {
    let running = start(vec![(
        "toy",
        policy(Strategy::OneForOne),
        1,
        ToyArgs::default(),
    )])
    .await;
    let h = running.handles[0].clone();
    // Two 300 ms messages on one worker with a 500 ms call timeout: the
    // second waits 300 ms, starts, and misses its caller's timeout, but
    // itself runs only 300 ms: the worker is busy, not stuck.
    let first = tokio::spawn({
        let h = h.clone();
        async move {
            h.call(|r| ToyMsg::Sleep(Duration::from_millis(300), r))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = h
        .call(|r| ToyMsg::Sleep(Duration::from_millis(300), r))
        .await;
    assert!(
        matches!(second, Err(CallError::Timeout { .. })),
        "{second:?}"
    );
    assert_eq!(first.await.unwrap(), Ok(0));
    // Past the point where a stuck handler would have been reported.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let node = running.tree.node("toy").unwrap();
    assert!(node.last_failure.is_none(), "{:?}", node.last_failure);
    assert_eq!(running.starts(0).len(), 1, "no worker was restarted");
    assert_eq!(node.circuit.unwrap().state, CircuitState::Closed);
    running.stop().await;
}

#[tokio::test]
async fn messages_queued_behind_a_crash_are_refused_not_lost_in_silence() {
    let running = start(vec![(
        "toy",
        policy(Strategy::OneForOne),
        1,
        ToyArgs::default(),
    )])
    .await;
    let h = running.handles[0].clone();
    let crash = tokio::spawn({
        let h = h.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            h.call(ToyMsg::Panic).await
        }
    });
    let slow = tokio::spawn({
        let h = h.clone();
        async move {
            h.call(|r| ToyMsg::Sleep(Duration::from_millis(100), r))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Queued behind the panic: never started, so the caller may safely retry.
    let queued = h.call(ToyMsg::Which).await;
    assert_eq!(slow.await.unwrap(), Ok(0));
    assert!(matches!(
        crash.await.unwrap(),
        Err(CallError::Crashed { .. })
    ));
    assert!(
        matches!(queued, Err(CallError::Unavailable { .. })),
        "{queued:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn mailbox_depth_and_messages_handled_are_counted() {
    let running = start(vec![(
        "toy",
        policy(Strategy::OneForOne),
        1,
        ToyArgs::default(),
    )])
    .await;
    let h = running.handles[0].clone();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move {
                h.call(|r| ToyMsg::Sleep(Duration::from_millis(40), r))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let busy = running.tree.node("toy").unwrap();
    assert!(busy.mailbox_depth >= 3, "depth {}", busy.mailbox_depth);
    for c in calls {
        assert_eq!(c.await.unwrap(), Ok(0));
    }
    let idle = running.tree.node("toy").unwrap();
    assert_eq!(idle.mailbox_depth, 0);
    assert_eq!(idle.messages_handled, 5);
    running.stop().await;
}

#[tokio::test]
async fn operators_can_force_the_circuit_and_restart_a_service() {
    let running = start(vec![(
        "toy",
        policy(Strategy::OneForOne),
        2,
        ToyArgs::default(),
    )])
    .await;
    let node = running.tree.force_circuit("toy", true).await.unwrap();
    assert_eq!(node.circuit.unwrap().state, CircuitState::Open);
    assert!(matches!(
        running.handles[0].call(ToyMsg::Which).await,
        Err(CallError::CircuitOpen { .. })
    ));
    let node = running.tree.force_circuit("toy", false).await.unwrap();
    assert_eq!(node.circuit.unwrap().state, CircuitState::Closed);
    assert!(running.handles[0].call(ToyMsg::Which).await.is_ok());

    let node = running.tree.restart("toy").await.unwrap();
    assert_eq!(node.restarts, 1);
    assert_eq!(running.starts(0).len(), 4);
    let node = running.tree.restart("toy-worker-1").await.unwrap();
    assert_eq!(node.restarts, 2);
    assert!(running.tree.restart("nobody").await.is_err());
    running.stop().await;
}

#[tokio::test]
async fn stopping_the_root_stops_every_service() {
    let running = start(vec![
        ("first", policy(Strategy::OneForOne), 1, ToyArgs::default()),
        ("second", policy(Strategy::OneForOne), 1, ToyArgs::default()),
    ])
    .await;
    let shared: Vec<_> = running.handles.iter().map(|h| h.shared().clone()).collect();
    running.stop().await;
    for s in shared {
        assert_eq!(s.status(), ServiceStatus::Stopped);
    }
}

/// A worker whose messages travel with a context: `before` refuses a
/// context that says so, and `handle` answers with what it was given.
struct Ctxd;

#[derive(Default)]
struct Ask {
    who: &'static str,
    refuse: bool,
}

impl Deadline for Ask {
    fn deadline(&self) -> Option<Instant> {
        None
    }
}

impl WorkerHandler for Ctxd {
    type Msg = RpcReplyPort<&'static str>;
    type Context = Ask;
    type State = ();
    type Args = ();

    async fn init(_args: &(), _index: usize) -> Result<(), BoxError> {
        Ok(())
    }

    async fn before(ctx: &Ask) -> Result<(), BoxError> {
        if ctx.refuse {
            return Err("refused before handling".into());
        }
        Ok(())
    }

    async fn handle(reply: Self::Msg, ctx: &Ask, _state: &mut ()) -> Result<(), BoxError> {
        let _ = reply.send(ctx.who);
        Ok(())
    }
}

#[tokio::test]
async fn the_context_reaches_the_handler_and_a_refusal_before_it_is_a_failure() {
    let (handle, starter) = ServiceSupervisor::<Ctxd>::build(
        "ctxd",
        policy(Strategy::OneForOne),
        1,
        Duration::from_millis(500),
        (),
    );
    let (root, _) = Actor::spawn(None, RootSupervisor, vec![starter])
        .await
        .unwrap();
    let shared = handle.shared().clone();
    wait_until("service running", || {
        shared.status() == ServiceStatus::Running
    })
    .await;

    let ask = Ask {
        who: "alice",
        refuse: false,
    };
    assert_eq!(handle.call_with(ask, |r| r).await, Ok("alice"));
    // `call` sends the default context.
    assert_eq!(handle.call(|r| r).await, Ok(""));

    let refused = Ask {
        who: "bob",
        refuse: true,
    };
    let err = handle.call_with(refused, |r| r).await.unwrap_err();
    assert!(matches!(err, CallError::Crashed { .. }), "{err:?}");
    wait_until("the failure recorded", || shared.restarts() == 1).await;
    let node = shared.snapshot(true);
    let failure = node.last_failure.unwrap();
    assert!(
        failure.reason.contains("refused before handling"),
        "{}",
        failure.reason
    );
    wait_until("running again", || {
        shared.status() == ServiceStatus::Running
    })
    .await;
    assert_eq!(handle.call(|r| r).await, Ok(""));
    root.stop_and_wait(None, None).await.unwrap();
}
