//! Overload is not failure, over real HTTP: a login flood far beyond what
//! auth can serve is shed with 503 + retry-after while nobody restarts and
//! the circuit stays closed, the rest of the API keeps answering, a message
//! whose caller has gone is never executed, and a handler that really runs
//! past its call timeout still counts as a failure.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{expect_error, spawn_app_with, TestApp, ALICE, PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};

/// Concurrent clients of the flood: more than auth's queue and workers hold.
const FLOOD_CLIENTS: usize = 96;
/// How long the flood lasts (each client logs in again as soon as answered).
const FLOOD_FOR: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Tally {
    ok: usize,
    shed: usize,
    timed_out: usize,
    other: Vec<u16>,
}

// Multi-threaded, as the server runs in production: on one thread the
// test's own 96 flood clients and the server's answers to them starve the
// probe (7-9 probes in 3 s on PostgreSQL), whatever the server does.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_flood_is_shed_without_restarts_and_the_rest_keeps_serving() {
    let app = Arc::new(
        spawn_app_with(|c| {
            // A queue the flood overfills for sure; each login is ~25 ms of CPU.
            c.services.get_mut("auth").unwrap().queue_limit = 16;
        })
        .await,
    );
    let order: Value = app
        .create_order(ALICE, json!({"amount": 5}))
        .await
        .json()
        .await
        .unwrap();
    let order_path = format!("/api/v1/orders/{}", order["id"].as_str().unwrap());

    let deadline = Instant::now() + FLOOD_FOR;
    let flood: Vec<_> = (0..FLOOD_CLIENTS)
        .map(|_| tokio::spawn(log_in_until(app.clone(), deadline)))
        .collect();
    let probe = tokio::spawn(probe_until(app.clone(), order_path, deadline));

    let mut tally = Tally::default();
    for client in flood {
        let mine = client.await.unwrap();
        tally.ok += mine.ok;
        tally.shed += mine.shed;
        tally.timed_out += mine.timed_out;
        tally.other.extend(mine.other);
    }
    let probes = probe.await.unwrap();
    eprintln!(
        "login flood: {} admitted, {} shed, {} timed out; {probes} probes",
        tally.ok, tally.shed, tally.timed_out
    );
    assert!(
        probes >= 10,
        "the probe ran {probes} times during the flood"
    );
    assert!(
        tally.other.is_empty(),
        "unexpected statuses {:?}",
        tally.other
    );
    assert!(tally.ok > 0, "no login got through the flood");
    assert!(tally.shed > 0, "the flood was never shed");

    let auth = app.admin_node("auth").await;
    assert_eq!(auth["circuit"]["state"], "closed", "{auth}");
    assert_eq!(auth["status"], "running", "{auth}");
    assert_eq!(auth["restarts"], 0, "a busy worker was restarted: {auth}");
    for worker in auth["children"].as_array().unwrap() {
        assert_eq!(worker["restarts"], 0, "{worker}");
    }
    assert!(auth["last_failure"].is_null(), "{auth}");
    assert!(
        auth["queue"]["shed"].as_u64().unwrap() >= tally.shed as u64,
        "{auth}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("actor_shed_total{actor=\"auth\"}"),
        "no shed counter for auth"
    );

    let after = log_in(&app).await;
    assert_eq!(after.status(), 200, "a login right after the flood");
}

/// Logs in as Alice again and again until `deadline`, tallying the answers.
async fn log_in_until(app: Arc<TestApp>, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let answer = log_in(&app).await;
        match answer.status().as_u16() {
            200 => tally.ok += 1,
            503 => {
                let retry_after = answer.headers().get("retry-after").cloned();
                let body = expect_error(answer, 503, "SERVICE_UNAVAILABLE").await;
                assert!(
                    retry_after.is_some(),
                    "a shed login without retry-after: {body}"
                );
                tally.shed += 1;
            }
            // Admitted but not handled before the call timeout: the caller
            // gives up, which is not the worker's failure.
            504 => tally.timed_out += 1,
            status => tally.other.push(status),
        }
    }
    tally
}

async fn log_in(app: &TestApp) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": ALICE, "password": PASSWORD}))
        .send()
        .await
        .expect("login answers")
}

/// Reads an order and `/live` until `deadline`, each of which must be 200.
async fn probe_until(app: Arc<TestApp>, order_path: String, deadline: Instant) -> usize {
    let mut probes = 0;
    while Instant::now() < deadline {
        let order = app
            .as_user(Method::GET, &order_path, ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(order.status(), 200, "GET order during the flood");
        let live = app.client.get(app.url("/live")).send().await.unwrap();
        assert_eq!(live.status(), 200, "/live during the flood");
        probes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    probes
}

#[tokio::test]
async fn a_message_whose_caller_has_gone_is_never_executed() {
    let app = spawn_app_with(|c| {
        c.server.request_timeout = Duration::from_secs(1);
        for service in c.services.values_mut() {
            service.call_timeout = Duration::from_secs(1);
        }
        c.services.get_mut("orders").unwrap().workers = 1;
    })
    .await;
    // Two slow reads, each within the call timeout, keep the only worker
    // busy for longer than the requests behind them wait.
    let slow_read = || {
        let request = app
            .as_user(Method::GET, "/api/v1/orders", ALICE)
            .header("x-fault", "delay=800");
        async move { request.send().await.unwrap().status() }
    };
    let first = tokio::spawn(slow_read());
    tokio::time::sleep(Duration::from_millis(30)).await;
    let second = tokio::spawn(slow_read());
    tokio::time::sleep(Duration::from_millis(30)).await;

    let create = app
        .as_user(Method::POST, "/api/v1/orders", ALICE)
        .json(&json!({"amount": 7, "description": "never executed"}))
        .send();
    let panic = app
        .as_user(Method::GET, "/api/v1/orders", ALICE)
        .header("x-fault", "panic")
        .send();
    let hung_up = app
        .as_user(Method::POST, "/api/v1/orders", ALICE)
        .timeout(Duration::from_millis(200))
        .json(&json!({"amount": 8, "description": "never executed"}))
        .send();
    let (create, panic, hung_up) = tokio::join!(create, panic, hung_up);
    // Given up by the server (the request's deadline passed) …
    expect_error(create.unwrap(), 504, "TIMEOUT").await;
    expect_error(panic.unwrap(), 504, "TIMEOUT").await;
    // … and by a client that hung up.
    assert!(hung_up.is_err(), "the client gave up before an answer");

    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        second.await.unwrap(),
        504,
        "its caller's deadline passed mid-handling"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let node = app.admin_node("orders").await;
        if node["queue"]["expired"].as_u64().unwrap() >= 3 {
            assert_eq!(node["restarts"], 0, "the skipped panic ran: {node}");
            assert!(node["last_failure"].is_null(), "{node}");
            break;
        }
        assert!(Instant::now() < deadline, "never skipped: {node}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let orders = app.get_json("/api/v1/orders", ALICE).await;
    assert_eq!(
        orders["pagination"]["total"], 0,
        "a given-up write happened: {orders}"
    );
    assert!(app
        .metrics()
        .await
        .contains("actor_expired_total{actor=\"orders\"} 3"));
}

#[tokio::test]
async fn handlers_that_run_past_the_call_timeout_still_trip_the_circuit() {
    let app = spawn_app_with(|c| {
        let orders = c.services.get_mut("orders").unwrap();
        orders.workers = 1;
        orders.max_restarts = 1;
        orders.call_timeout = Duration::from_millis(200);
    })
    .await;
    for _ in 0..2 {
        // The service, and its one worker, back up after the last restart.
        app.wait_for_status("orders", "running").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while app.admin_node("orders").await["children"][0]["status"] != "running" {
            assert!(Instant::now() < deadline, "the worker never came back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let slow = app
            .as_user(Method::GET, "/api/v1/orders", ALICE)
            .header("x-fault", "delay=1000")
            .send()
            .await
            .unwrap();
        expect_error(slow, 504, "TIMEOUT").await;
    }
    app.wait_for_circuit("orders", "open").await;
    let node = app.admin_node("orders").await;
    assert!(
        node["last_failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("call timeout"),
        "{node}"
    );
    let refused = app.create_order(ALICE, json!({"amount": 1})).await;
    expect_error(refused, 503, "SERVICE_UNAVAILABLE").await;
}

#[tokio::test]
async fn reads_have_workers_of_their_own_so_a_write_flood_neither_queues_nor_sheds_them() {
    let app = spawn_app_with(|c| {
        let orders = c.services.get_mut("orders").unwrap();
        orders.workers = 1;
        orders.read_workers = 1;
        orders.queue_limit = 1;
    })
    .await;
    let created: Value = app
        .create_order(ALICE, json!({"amount": 5}))
        .await
        .json()
        .await
        .unwrap();
    let order_path = format!("/api/v1/orders/{}", created["id"].as_str().unwrap());
    let slow_write = |amount: u64| {
        let request = app
            .as_user(Method::POST, "/api/v1/orders", ALICE)
            .header("x-fault", "delay=800")
            .json(&json!({"amount": amount}));
        tokio::spawn(async move { request.send().await.unwrap().status() })
    };
    // The only write worker is busy, and its queue (one place) is taken.
    let busy = slow_write(6);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued = slow_write(7);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let shed = app.create_order(ALICE, json!({"amount": 8})).await;
    expect_error(shed, 503, "SERVICE_UNAVAILABLE").await;

    // Reads go to their own worker: answered at once, writes still running.
    for _ in 0..5 {
        let read = app
            .as_user(Method::GET, &order_path, ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
        let list = app
            .as_user(Method::GET, "/api/v1/orders", ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(list.status(), 200);
    }
    assert!(!busy.is_finished(), "the reads waited for the slow write");
    assert_eq!(busy.await.unwrap(), 201);
    assert_eq!(queued.await.unwrap(), 201);

    let node = app.admin_node("orders").await;
    assert_eq!(node["queue"]["read_workers"], 1, "{node}");
    assert_eq!(node["children"].as_array().unwrap().len(), 2, "{node}");
    let reader = &node["children"][1];
    assert!(reader["messages_handled"].as_u64().unwrap() >= 10, "{node}");
}
