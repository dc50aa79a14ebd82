//! The runtime over real HTTP: routing errors, limits, request ids, probes,
//! supervision as seen by clients (500 on a panic, 503 with retry-after while
//! a circuit is open, 504 on a call timeout), the admin listener, metrics and
//! graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{expect_error, spawn_app, spawn_app_with, ALICE};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let app = spawn_app().await;
    // Routing comes before authentication: no token needed for a 404.
    let missing = app
        .client
        .get(app.url("/api/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    expect_error(missing, 404, "NOT_FOUND").await;
    let wrong = app
        .client
        .delete(app.url("/api/v1/orders"))
        .send()
        .await
        .unwrap();
    let allow = wrong.headers()["allow"].to_str().unwrap().to_owned();
    expect_error(wrong, 405, "METHOD_NOT_ALLOWED").await;
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = spawn_app_with(|c| c.server.max_body_bytes = 1024).await;
    let big = json!({"amount": 1, "description": "x".repeat(2000)});
    let response = app.create_order(ALICE, big).await;
    expect_error(response, 413, "PAYLOAD_TOO_LARGE").await;
    // Chunked, with no content-length to trust.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(vec![b' '; 800]), Ok(vec![b' '; 800])];
    let streamed = app
        .as_user(Method::POST, "/api/v1/orders", ALICE)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_error(streamed, 413, "PAYLOAD_TOO_LARGE").await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let app = spawn_app().await;
    let echoed = app
        .client
        .get(app.url("/live"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-123");
    let made = app.client.get(app.url("/live")).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let error = app
        .client
        .get(app.url("/nope"))
        .header("x-request-id", "err-1")
        .send()
        .await
        .unwrap();
    assert_eq!(error.headers()["x-request-id"], "err-1");
    let admin = app
        .client
        .get(app.admin_url("/admin/actors"))
        .header("x-request-id", "adm-1")
        .send()
        .await
        .unwrap();
    assert_eq!(admin.headers()["x-request-id"], "adm-1");
}

#[tokio::test]
async fn probes_report_live_ready_and_health() {
    let app = spawn_app().await;
    let live = app.client.get(app.url("/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let ready = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let health: Value = app
        .client
        .get(app.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(health["system"]["load_avg"].as_array().unwrap().len(), 3);
    assert!(health["system"]["rss_bytes"].as_u64().unwrap() > 1_000_000);
    let db = health["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"].as_str().unwrap().ends_with(":orders"))
        .expect("the orders database is a dependency");
    let backend = if common::test_database_url().is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(db["name"], format!("{backend}:orders"));
    if common::test_redis_url().is_some() {
        assert!(health["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "kv:redis" && d["status"] == "up"));
    }
    assert_eq!(db["status"], "up");
    assert!(db["latency_ms"].as_f64().unwrap() >= 0.0);
    let orders = health["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "orders")
        .unwrap();
    assert_eq!(
        orders,
        &json!({"name": "orders", "status": "running", "circuit": "closed", "restarts": 0})
    );
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_and_the_worker_comes_back() {
    let app = spawn_app_with(|c| c.services.get_mut("orders").unwrap().workers = 1).await;
    let crash = app
        .as_user(Method::POST, "/api/v1/orders", ALICE)
        .header("x-fault", "panic")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    let body = expect_error(crash, 500, "INTERNAL").await;
    assert!(
        !body.to_string().contains("injected"),
        "internals stay in the logs: {body}"
    );

    app.wait_for_status("orders", "running").await;
    let next = app.create_order(ALICE, json!({"amount": 2})).await;
    assert_eq!(next.status(), 201);

    let node = app.admin_node("orders").await;
    assert_eq!(node["restarts"], 1);
    assert_eq!(node["circuit"]["state"], "closed");
    assert!(
        node["last_failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("injected fault"),
        "{node}"
    );
    assert!(node["recent_failures"].as_array().unwrap().len() == 1);
    let worker = app.admin_node("orders-worker-0").await;
    assert_eq!(worker["restarts"], 1);
    assert_eq!(worker["status"], "running");
}

#[tokio::test]
async fn repeated_failures_open_the_circuit_then_it_closes_by_itself() {
    let app = spawn_app_with(|c| {
        let orders = c.services.get_mut("orders").unwrap();
        orders.workers = 1;
        orders.max_restarts = 2;
    })
    .await;
    for _ in 0..3 {
        app.wait_for_status("orders", "running").await;
        let crash = app
            .as_user(Method::GET, "/api/v1/orders", ALICE)
            .header("x-fault", "panic")
            .send()
            .await
            .unwrap();
        assert_eq!(crash.status(), 500);
    }
    app.wait_for_circuit("orders", "open").await;

    let refused_at = Instant::now();
    let refused = app.create_order(ALICE, json!({"amount": 1})).await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1).contains(&retry_after), "retry-after {retry_after}");
    expect_error(refused, 503, "SERVICE_UNAVAILABLE").await;
    assert!(
        refused_at.elapsed() < Duration::from_millis(200),
        "an open circuit answers at once"
    );

    // The rest of the process keeps serving.
    assert_eq!(
        app.client
            .get(app.url("/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the process still serves");
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["status"], "degraded");
    let orders_health = health["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "orders")
        .unwrap();
    assert_eq!(orders_health["circuit"], "open");

    let tree: Value = app
        .client
        .get(app.admin_url("/admin/actors"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let orders = tree["root"]["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "orders")
        .unwrap();
    assert_eq!(orders["name"], "orders");
    assert_eq!(orders["status"], "failed");
    assert_eq!(orders["circuit"]["trips"], 1);
    assert!(orders["circuit"]["retry_at"].is_string());
    // The recorder is the process's: an app another test starts meanwhile
    // sets its own orders' gauges to closed. Each scrape sets this app's
    // again, so a later one shows them.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = app.metrics().await;
        if metrics.contains("circuit_state{service=\"orders\"} 2")
            && metrics.contains("circuit_open{service=\"orders\"} 1")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        metrics.contains("circuit_state{service=\"orders\"} 2")
            && metrics.contains("circuit_open{service=\"orders\"} 1"),
        "{metrics}"
    );

    // After open_for the service is restarted half-open; the first success closes it.
    app.wait_for_circuit("orders", "half_open").await;
    app.wait_for_status("orders", "running").await;
    let created = app.create_order(ALICE, json!({"amount": 3})).await;
    assert_eq!(created.status(), 201);
    app.wait_for_circuit("orders", "closed").await;
    assert_eq!(
        app.client
            .get(app.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains("circuit_state{service=\"orders\"} 0"));
    assert!(metrics.contains("circuit_open{service=\"orders\"} 0"));
}

#[tokio::test]
async fn a_reply_slower_than_the_call_timeout_is_504_and_a_failure() {
    let app = spawn_app_with(|c| {
        c.services.get_mut("orders").unwrap().call_timeout = Duration::from_millis(300)
    })
    .await;
    let started = Instant::now();
    let slow = app
        .as_user(Method::GET, "/api/v1/orders", ALICE)
        .header("x-fault", "delay=3000")
        .send()
        .await
        .unwrap();
    expect_error(slow, 504, "TIMEOUT").await;
    assert!(started.elapsed() < Duration::from_secs(2));
    app.wait_for_status("orders", "running").await;
    let node = app.admin_node("orders").await;
    assert!(
        node["last_failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("call timeout"),
        "{node}"
    );
}

#[tokio::test]
async fn the_request_timeout_bounds_a_whole_request() {
    let app = spawn_app_with(|c| {
        c.server.request_timeout = Duration::from_millis(300);
        // A call timeout may not exceed the request timeout (checked at start-up).
        for service in c.services.values_mut() {
            service.call_timeout = Duration::from_millis(300);
        }
    })
    .await;
    let slow = app
        .as_user(Method::GET, "/api/v1/orders", ALICE)
        .header("x-fault", "delay=1500")
        .send()
        .await
        .unwrap();
    expect_error(slow, 504, "TIMEOUT").await;
}

#[tokio::test]
async fn operators_can_restart_actors_and_force_circuits() {
    let app = spawn_app().await;
    let restarted = app
        .client
        .post(app.admin_url("/admin/actors/orders/restart"))
        .send()
        .await
        .unwrap();
    assert_eq!(restarted.status(), 202);
    let node: Value = restarted.json().await.unwrap();
    assert_eq!(node["name"], "orders");
    assert_eq!(node["restarts"], 1);

    let opened: Value = app
        .client
        .post(app.admin_url("/admin/circuits/orders/open"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(opened["circuit"]["state"], "open");
    assert_eq!(opened["circuit"]["forced"], true);
    let refused = app.create_order(ALICE, json!({"amount": 1})).await;
    assert!(refused.headers().contains_key("retry-after"));
    expect_error(refused, 503, "SERVICE_UNAVAILABLE").await;

    let closed = app
        .client
        .post(app.admin_url("/admin/circuits/orders/close"))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    assert_eq!(
        app.create_order(ALICE, json!({"amount": 1})).await.status(),
        201
    );

    let unknown = app
        .client
        .post(app.admin_url("/admin/actors/nobody/restart"))
        .send()
        .await
        .unwrap();
    expect_error(unknown, 404, "NOT_FOUND").await;
    let wrong = app
        .client
        .get(app.admin_url("/admin/circuits/orders/open"))
        .send()
        .await
        .unwrap();
    expect_error(wrong, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn the_admin_listener_requires_its_token_when_one_is_set() {
    let app = spawn_app_with(|c| c.admin.token = Some("a-very-secret-admin-token".into())).await;
    let anonymous = app
        .client
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    expect_error(anonymous, 401, "UNAUTHENTICATED").await;
    let wrong = app
        .client
        .get(app.admin_url("/admin/actors"))
        .bearer_auth("a-very-secret-admin-tokeN")
        .send()
        .await
        .unwrap();
    expect_error(wrong, 401, "UNAUTHENTICATED").await;
    let right = app
        .client
        .get(app.admin_url("/admin/actors"))
        .bearer_auth("a-very-secret-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);

    // The live page is static and fetches the tree with the operator's token.
    let page = app
        .client
        .get(app.admin_url("/admin/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.headers().contains_key("content-security-policy"));
    // Its script reads the live stream (tests/admin_page.rs has the rest).
    assert!(page.text().await.unwrap().contains("/admin/admin.js"));
}

#[tokio::test]
async fn metrics_reflect_requests_actors_and_restarts_and_pass_promtool() {
    let app = spawn_app_with(|c| c.services.get_mut("orders").unwrap().workers = 1).await;
    let order: Value = app
        .create_order(ALICE, json!({"amount": 5}))
        .await
        .json()
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap();
    app.as_user(Method::GET, &format!("/api/v1/orders/{id}"), ALICE)
        .send()
        .await
        .unwrap();
    app.as_user(Method::GET, "/api/v1/orders", ALICE)
        .header("x-fault", "panic")
        .send()
        .await
        .unwrap();
    app.wait_for_status("orders", "running").await;

    let response = app
        .client
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let metrics = response.text().await.unwrap();
    for expected in [
        "http_requests_total{method=\"POST\",route=\"/api/v1/orders\",status=\"201\"}",
        "http_requests_total{method=\"GET\",route=\"/api/v1/orders/{id}\",status=\"200\"}",
        "http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/orders\",status=\"201\",le=\"0.005\"}",
        "actor_messages_total{actor=\"orders\"}",
        "actor_message_duration_seconds_bucket{actor=\"orders\",le=\"0.1\"}",
        "actor_mailbox_depth{actor=\"orders\"}",
        "actor_restarts_total{actor=\"orders\"}",
        "actor_failures_total{actor=\"orders\"}",
        "circuit_state{service=\"orders\"}",
        "process_resident_memory_bytes",
        "# TYPE http_request_duration_seconds histogram",
    ] {
        assert!(metrics.contains(expected), "missing {expected} in\n{metrics}");
    }
    assert!(
        !metrics.contains(id),
        "route labels are patterns, never raw paths"
    );

    let promtool = which("promtool").expect(
        "promtool is needed for this test: apt-get install prometheus (.ci/run installs it)",
    );
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Counters the default test app has no series of, and why: the labels
/// of `http_requests_total` are those of what happened (the route and
/// status answered); the others belong to parts it does not configure
/// (Redis; notification channels, registered at 0 per configured channel).
const COUNTERS_MADE_ON_USE: &[&str] = &[
    "http_requests_total",
    "redis_errors_total",
    "notifications_sent_total",
    "notifications_failed_total",
];

#[tokio::test]
async fn every_counter_and_the_process_and_build_series_exist_from_the_start() {
    let app = spawn_app().await;
    let metrics = app.metrics().await;
    let mut counters = counters_in_the_code();
    counters.retain(|name| !COUNTERS_MADE_ON_USE.contains(&name.as_str()));
    if std::env::var_os("STAGEWORKS_TEST_DATABASE_URL").is_some() {
        // The row cache is SQLite's only (on PostgreSQL another replica may
        // change a row behind this process's back): no cache, no series.
        counters.retain(|name| name != "db_row_cache_lookups_total");
    }
    assert!(counters.len() > 15, "found only {counters:?} in the code");
    let missing: Vec<_> = counters
        .iter()
        .filter(|name| {
            !metrics
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "counters without a series before anything happened: {missing:?}\n{metrics}"
    );
    for expected in [
        concat!(
            "stageworks_build_info{version=\"",
            env!("CARGO_PKG_VERSION"),
            "\"} 1"
        ),
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_start_time_seconds gauge",
        "process_open_fds ",
        "process_max_fds ",
        "process_resident_memory_bytes ",
        "circuit_open{service=\"orders\"} 0",
        "circuit_state{service=\"billing\"} 0",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
}

/// Every counter name the sources register (`counter!("name"` and the
/// names listed for a loop of `counter!(counter, …)`), read from the
/// sources so that a counter added later is checked too.
fn counters_in_the_code() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = std::collections::BTreeSet::new();
    let mut dirs: Vec<_> = ["src", "supervision/src", "actors/src"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                names.extend(quoted_counter_names(&source));
            }
        }
    }
    names.into_iter().collect()
}

/// `"…_total"` string literals that start a `counter!(` or stand in a list
/// of names (the zero-initialising loops, the descriptions).
fn quoted_counter_names(source: &str) -> Vec<String> {
    source
        .match_indices("_total\"")
        .filter_map(|(end, _)| {
            let start = source[..end].rfind('"')? + 1;
            let name = &source[start..end + "_total".len()];
            let well_formed = name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            let used = source.contains(&format!("counter!(\"{name}\""))
                || source.contains(&format!("\"{name}\","));
            (well_formed && used).then(|| name.to_owned())
        })
        .collect()
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_then_refuses_new_ones() {
    let mut app = spawn_app().await;
    let in_flight = tokio::spawn(
        app.as_user(Method::POST, "/api/v1/orders", ALICE)
            .header("x-fault", "delay=700")
            .json(&json!({"amount": 11}))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = app.base.clone();
    let client = app.client.clone();
    let stopping = tokio::spawn(async move {
        app.stop().await;
        app
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let finished = in_flight.await.unwrap().unwrap();
    assert_eq!(finished.status(), 201, "the in-flight request completed");
    let app = stopping.await.unwrap();
    let refused = client.get(format!("{base}/live")).send().await;
    assert!(refused.is_err(), "no longer accepting connections");
    drop(app);
}

#[tokio::test]
async fn http2_is_served_alongside_http1() {
    let app = spawn_app().await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(app.url("/live")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let created = h2
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&app.users[ALICE].access_token)
        .json(&json!({"amount": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
}

#[tokio::test]
async fn a_slow_request_holds_one_worker_not_the_service() {
    let app = spawn_app_with(|c| c.services.get_mut("orders").unwrap().workers = 2).await;
    let slow = tokio::spawn(
        app.as_user(Method::GET, "/api/v1/orders", ALICE)
            .header("x-fault", "delay=1500")
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fast = app.create_order(ALICE, json!({"amount": 3})).await;
    assert_eq!(fast.status(), 201);
    assert!(
        !slow.is_finished(),
        "the fast request was answered while the slow one was still running"
    );
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
}
