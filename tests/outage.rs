//! Dependency outages are survived, not hidden: with the database down the
//! orders service refuses at once (503 with retry-after, its outage state,
//! then its circuit), `/ready` is 503 while `/live` stays 200 and fast, and
//! when the database returns it serves again by itself and every write that
//! was accepted (201) is still there.
//!
//! These tests start their own PostgreSQL (and Redis) on free ports, so they
//! can stop them without disturbing anything else.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::own_servers::{OwnPostgres, OwnRedis};
use common::{spawn_app_in, test_config, TestApp, ALICE};
use reqwest::Method;
use serde_json::{json, Value};

/// What the load loop saw: status, order id (for 201s), and how long it took.
type Outcome = (u16, Option<String>, Duration);

fn spawn_load(
    app: &TestApp,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Outcome>>>,
) -> tokio::task::JoinHandle<()> {
    let client = app.client.clone();
    let url = app.url("/api/v1/orders");
    let token = app.users[ALICE].access_token.clone();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let response = client
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({"amount": 100}))
                .send()
                .await;
            let outcome = match response {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    (
                        status,
                        body["id"].as_str().map(str::to_owned),
                        started.elapsed(),
                    )
                }
                Err(_) => (0, None, started.elapsed()),
            };
            seen.lock().unwrap().push(outcome);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Times `/live` every 20 ms until `stop`: how the process answers its
/// liveness probe while a dependency is down.
fn spawn_live_sampler(
    app: &TestApp,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Duration>> {
    let client = app.client.clone();
    let url = app.url("/live");
    tokio::spawn(async move {
        let mut took = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let answered = client.get(&url).send().await;
            assert_eq!(answered.map(|r| r.status().as_u16()).ok(), Some(200));
            took.push(started.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        took
    })
}

fn percentile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_of(app: &TestApp, path: &str) -> u16 {
    match app.client.get(app.url(path)).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_refused_at_once_and_loses_no_accepted_write() {
    let postgres = OwnPostgres::start();
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(&data);
    config.database.url = postgres.url();
    // The default: without the outage state, every request of the outage
    // would wait this long for a connection.
    config.database.acquire_timeout = Duration::from_secs(3);
    config.database.statement_timeout = Duration::from_millis(500);
    {
        let orders = config.services.get_mut("orders").unwrap();
        orders.max_restarts = 2;
        orders.call_timeout = Duration::from_secs(1);
        orders.open_for = Duration::from_millis(500);
        orders.open_for_max = Duration::from_secs(2);
    }
    let app = spawn_app_in(config, data, None).await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let load = spawn_load(&app, stop.clone(), seen.clone());
    let count = |status: u16| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|o| o.0 == status)
            .count()
    };
    wait_until(
        "orders accepted before the outage",
        Duration::from_secs(10),
        || async { count(201) >= 5 },
    )
    .await;

    let live = spawn_live_sampler(&app, stop.clone());
    postgres.stop();
    let outage_started = seen.lock().unwrap().len();
    // Fast refusals: the circuit, not a timeout per request.
    wait_until(
        "fast 503s while the database is down",
        Duration::from_secs(15),
        || async {
            seen.lock().unwrap()[outage_started..]
                .iter()
                .any(|(status, _, took)| *status == 503 && *took < Duration::from_millis(200))
        },
    )
    .await;
    // Down for longer than a connect timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        status_of(&app, "/ready").await,
        503,
        "not ready without its database"
    );
    assert_eq!(status_of(&app, "/live").await, 200, "alive all the same");
    let health: Value = app
        .client
        .get(app.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["dependencies"][0]["status"], "down");

    postgres.resume();
    let recovered_from = seen.lock().unwrap().len();
    wait_until(
        "orders accepted again after the database returns",
        Duration::from_secs(30),
        || async {
            seen.lock().unwrap()[recovered_from..]
                .iter()
                .any(|o| o.0 == 201)
        },
    )
    .await;
    let outage = seen.lock().unwrap()[outage_started..recovered_from].to_vec();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let live = live.await.unwrap();
    app.wait_for_circuit("orders", "closed").await;
    wait_until("ready again", Duration::from_secs(10), || async {
        status_of(&app, "/ready").await == 200
    })
    .await;

    let outcomes = seen.lock().unwrap().clone();
    let accepted: Vec<String> = outcomes
        .iter()
        .filter_map(|o| (o.0 == 201).then(|| o.1.clone()).flatten())
        .collect();
    for status in outcomes.iter().map(|o| o.0) {
        // An unreachable database is the server's 503 with retry-after,
        // never a 500 (issue 13).
        assert!(
            matches!(status, 201 | 503 | 504),
            "unexpected status {status} during the outage"
        );
    }
    for id in &accepted {
        let read = app
            .as_user(Method::GET, &format!("/api/v1/orders/{id}"), ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200, "accepted order {id} was lost");
    }
    // At once: after the first refusal, every request of the outage is
    // refused without waiting for a connection (supervision::outage), and
    // none runs into its timeout.
    let first_refusal = outage
        .iter()
        .position(|o| o.0 == 503)
        .expect("503s during the outage");
    let refusals: Vec<Duration> = outage[first_refusal..].iter().map(|o| o.2).collect();
    let slow = refusals
        .iter()
        .filter(|took| **took > Duration::from_millis(250))
        .count();
    let timeouts = outage[first_refusal..]
        .iter()
        .filter(|o| o.0 == 504)
        .count();
    eprintln!(
        "outage: first 503 after {:?} ({} requests before it), then {} requests: p99 {:?}, {slow} over 250 ms, {timeouts} 504; /live p99 {:?} over {} probes",
        outage[..=first_refusal].iter().map(|o| o.2).sum::<Duration>(),
        first_refusal,
        refusals.len(),
        percentile(&refusals, 0.99),
        percentile(&live, 0.99),
        live.len(),
    );
    assert_eq!(
        timeouts, 0,
        "a request of the outage timed out after the first refusal"
    );
    // A restarting worker (the failures still open the circuit) may hold
    // one or two requests briefly; a connect timeout per request would be all of them.
    assert!(
        slow * 20 <= refusals.len(),
        "{slow} of {} requests took over 250 ms",
        refusals.len()
    );
    assert!(
        percentile(&live, 0.99) < Duration::from_millis(100),
        "/live p99 {:?} during the outage",
        percentile(&live, 0.99)
    );
    let node = app.admin_node("orders").await;
    assert!(node["outage"]["outages"].as_u64().unwrap() >= 1, "{node}");
    assert_eq!(node["outage"]["down"], false, "{node}");
    eprintln!(
        "outage test: {} requests, {} accepted, {} refused with 503",
        outcomes.len(),
        accepted.len(),
        outcomes.iter().filter(|o| o.0 == 503).count()
    );
}

/// With Redis down: authenticated routes answer 503 with retry-after (a
/// token's session cannot be checked for revocation, and a revoked token must
/// not pass), while what does not need Redis (signing up, probes) works.
async fn assert_needs_redis_and_the_rest_works(app: &TestApp) {
    let refused = app.create_order(ALICE, json!({"amount": 1})).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(refused.status(), 503);
    let registered = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .json(&json!({"email": format!("{}@example.com", uuid::Uuid::now_v7()), "password": "long enough password", "name": "N"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
}

/// The `kv:redis` entry of `/health`.
async fn redis_health(app: &TestApp) -> Value {
    let health: Value = app
        .client
        .get(app.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    health["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "kv:redis")
        .cloned()
        .expect("Redis is a dependency when configured")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_reported_the_rest_keeps_serving_and_it_reconnects() {
    let redis = OwnRedis::start();
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(&data);
    config.redis.url = redis.url();
    config.redis.command_timeout = Duration::from_millis(300);
    let app = spawn_app_in(config, data, None).await;
    wait_until("ready with Redis up", Duration::from_secs(10), || async {
        status_of(&app, "/ready").await == 200
    })
    .await;
    let up = redis_health(&app).await;
    assert_eq!(up["status"], "up");
    assert!(up["latency_ms"].as_f64().unwrap() >= 0.0);

    redis.stop();
    wait_until(
        "not ready without Redis",
        Duration::from_secs(10),
        || async { status_of(&app, "/ready").await == 503 },
    )
    .await;
    assert_eq!(redis_health(&app).await["status"], "down");
    assert_eq!(status_of(&app, "/live").await, 200);
    assert_needs_redis_and_the_rest_works(&app).await;

    redis.resume();
    wait_until(
        "Redis reconnected by itself",
        Duration::from_secs(40),
        || async { status_of(&app, "/ready").await == 200 },
    )
    .await;
    assert_eq!(redis_health(&app).await["status"], "up");
    assert_eq!(
        app.create_order(ALICE, json!({"amount": 1})).await.status(),
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_up_does_not_stop_the_process() {
    let redis = OwnRedis::start();
    redis.stop();
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(&data);
    config.redis.url = redis.url();
    config.redis.connect_timeout = Duration::from_millis(300);
    let app = spawn_app_in(config, data, None).await;
    assert_eq!(status_of(&app, "/ready").await, 503);
    assert_eq!(redis_health(&app).await["status"], "down");
    assert_needs_redis_and_the_rest_works(&app).await;

    redis.resume();
    wait_until(
        "connected once Redis is up",
        Duration::from_secs(40),
        || async { status_of(&app, "/ready").await == 200 },
    )
    .await;
    assert_eq!(
        app.create_order(ALICE, json!({"amount": 1})).await.status(),
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_down_at_start_up_is_waited_for_not_fatal() {
    let postgres = OwnPostgres::start();
    postgres.stop();
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(&data);
    config.database.url = postgres.url();
    config.database.acquire_timeout = Duration::from_millis(300);
    {
        let orders = config.services.get_mut("orders").unwrap();
        orders.open_for = Duration::from_millis(500);
        orders.open_for_max = Duration::from_secs(1);
    }
    // Workers cannot start: spawn without waiting for them.
    config.validate(actors::BUILTIN).unwrap();
    let app = stageworks::app::App::start(config)
        .await
        .expect("starts without its database");
    let base = format!("http://{}", app.public_addr());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = |path: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .get(format!("{base}{path}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(status("/live").await, 200);
    assert_eq!(status("/ready").await, 503);
    let token = common::mint_token(uuid::Uuid::now_v7());
    let create = || {
        client
            .post(format!("{base}/api/v1/orders"))
            .bearer_auth(&token)
            .json(&json!({"amount": 5}))
            .send()
    };
    let refused = create().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));

    postgres.resume();
    wait_until(
        "orders served once the database is up",
        Duration::from_secs(30),
        || async { create().await.is_ok_and(|r| r.status() == 201) },
    )
    .await;
    wait_until("ready", Duration::from_secs(10), || async {
        status("/ready").await == 200
    })
    .await;
    app.shutdown();
    app.stopped().await;
}
