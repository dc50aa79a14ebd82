//! The admin page's data over real HTTP: the live stream (`/admin/stream`,
//! server-sent events) sends every service, shows a forced circuit within
//! two seconds, needs the admin token, is bounded and stops when its client
//! leaves or the app shuts down; the history (`/admin/history`) stays at
//! its capacity and holds the series the charts draw. The page itself in a
//! browser: tests/browser/admin_page.py.

mod common;

use std::time::{Duration, Instant};

use common::{json_of, spawn_app_with, TestApp, ALICE};
use serde_json::{json, Value};

const TOKEN: &str = "an-admin-token-for-the-page";

async fn app_with(adjust: impl FnOnce(&mut stageworks::config::Config)) -> TestApp {
    spawn_app_with(|c| {
        c.admin.token = Some(TOKEN.into());
        adjust(c);
    })
    .await
}

/// Reads server-sent events off a streamed response.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(app: &TestApp) -> Events {
        let response = app
            .admin_get("/admin/stream")
            .send()
            .await
            .expect("the stream answers");
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next `snapshot` event's JSON; `None` once the stream has ended.
    async fn snapshot(&mut self) -> Option<Value> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                if raw.lines().any(|l| l == "event: snapshot") {
                    let data = raw.lines().find_map(|l| l.strip_prefix("data: "))?;
                    return Some(serde_json::from_str(data).expect("snapshot JSON"));
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.response.chunk())
                .await
                .expect("an event within 5 s");
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                _ => return None,
            }
        }
    }
}

fn service<'a>(snapshot: &'a Value, name: &str) -> &'a Value {
    snapshot["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {snapshot}"))
}

#[tokio::test]
async fn the_stream_sends_every_service_and_shows_a_forced_circuit_within_two_seconds() {
    let app = app_with(|_| {}).await;
    let mut events = Events::open(&app).await;
    let first = events.snapshot().await.expect("a first snapshot");
    let (_, tree) = json_of(app.admin_get("/admin/actors")).await;
    let names = |nodes: &Value| -> Vec<String> {
        nodes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&first["services"]), names(&tree["root"]["children"]));
    let orders = service(&first, "orders");
    assert_eq!(orders["circuit"]["state"], "closed");
    assert!(orders["queue"]["limit"].as_u64().unwrap() > 0);
    assert!(orders["recent_failures"].is_array());
    assert!(!orders["children"].as_array().unwrap().is_empty());
    assert!(first["events"]["subscribers"].is_array());
    assert!(first["events"]["producers"].is_array());

    let forced_at = Instant::now();
    let forced = app
        .admin_request(reqwest::Method::POST, "/admin/circuits/orders/open")
        .send()
        .await
        .unwrap();
    assert_eq!(forced.status(), 200);
    loop {
        let snapshot = events.snapshot().await.expect("the stream goes on");
        let circuit = &service(&snapshot, "orders")["circuit"];
        if circuit["state"] == "open" && circuit["forced"] == true {
            break;
        }
        assert!(
            forced_at.elapsed() < Duration::from_secs(2),
            "no open circuit within 2 s: {circuit}"
        );
    }
    assert!(
        forced_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        forced_at.elapsed()
    );
    let closed = app
        .admin_request(reqwest::Method::POST, "/admin/circuits/orders/close")
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    let snapshot = events.snapshot().await.unwrap();
    assert_eq!(service(&snapshot, "orders")["circuit"]["state"], "closed");
}

#[tokio::test]
async fn the_stream_needs_the_admin_token_in_its_header() {
    let app = app_with(|_| {}).await;
    let url = app.admin_url("/admin/stream");
    let anonymous = app.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = app
        .client
        .get(&url)
        .bearer_auth("an-admin-token-for-the-pagE")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // A token in the URL would end up in logs and histories: not taken.
    let in_query = app
        .client
        .get(format!("{url}?token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), 401);
    // The page and its assets need none, and allow nothing from elsewhere.
    for asset in ["/admin/", "/admin/admin.js", "/admin/admin.css"] {
        let page = app.client.get(app.admin_url(asset)).send().await.unwrap();
        assert_eq!(page.status(), 200, "{asset}");
        let policy = page.headers()["content-security-policy"].to_str().unwrap();
        assert!(policy.starts_with("default-src 'none'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    }
}

#[tokio::test]
async fn streams_are_bounded_and_a_client_that_leaves_frees_its_stream() {
    let app = app_with(|c| c.admin.max_streams = 1).await;
    let mut first = Events::open(&app).await;
    first.snapshot().await.expect("a snapshot");
    let second = app.admin_get("/admin/stream").send().await.unwrap();
    assert_eq!(second.status(), 503);
    assert!(second.headers().contains_key("retry-after"));

    // The client goes: its task ends (its permit with it), so a new stream
    // is let in.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let next = app.admin_get("/admin/stream").send().await.unwrap();
        if next.status() == 200 {
            break;
        }
        assert_eq!(next.status(), 503);
        assert!(
            Instant::now() < deadline,
            "the stream of a client that left still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_open_stream_ends_when_the_app_shuts_down() {
    let mut app = app_with(|_| {}).await;
    let mut events = Events::open(&app).await;
    events.snapshot().await.expect("a snapshot");
    let started = Instant::now();
    app.stop().await;
    // Not held until the shutdown timeout (5 s in tests) by the stream.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let mut ended = false;
    for _ in 0..5 {
        if events.snapshot().await.is_none() {
            ended = true;
            break;
        }
    }
    assert!(ended, "the stream went on after the shutdown");
}

#[tokio::test]
async fn the_history_stays_at_its_capacity_and_holds_the_series() {
    let app = app_with(|c| {
        c.admin.history_every = Duration::from_millis(20);
        c.admin.history_samples = 25;
    })
    .await;
    for amount in 1..=3 {
        let created = app.create_order(ALICE, json!({ "amount": amount })).await;
        assert_eq!(created.status(), 201);
    }
    let history = |app: &TestApp| {
        let request = app.admin_get("/admin/history");
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let full = loop {
        let view = history(&app).await;
        if view["samples"] == 25 {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "never filled: {}",
            view["samples"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(full["capacity"], 25);
    // More samples were taken since; the count stays at the cap.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = history(&app).await;
    assert_eq!(later["samples"], 25);
    assert_eq!(later["timestamps"].as_array().unwrap().len(), 25);
    assert_ne!(later["timestamps"][0], full["timestamps"][0]);
    let series = later["series"].as_array().unwrap();
    for s in series {
        assert_eq!(s["values"].as_array().unwrap().len(), 25, "{}", s["metric"]);
    }
    let has = |metric: &str, label: &str| {
        series
            .iter()
            .any(|s| s["metric"] == metric && s["label"] == label)
    };
    assert!(has("process_rss_bytes", ""));
    assert!(has("service_messages_per_second", "orders"));
    assert!(has("service_queue_wait_ms", "orders"));
    assert!(has("service_queue_depth", "billing"));
    assert!(has("http_requests_per_second", "POST /api/v1/orders"));
    assert!(has("http_errors_per_second", "POST /api/v1/orders"));
    assert!(series.iter().any(|s| s["metric"] == "event_lag_seconds"));
    assert!(series.iter().any(|s| s["metric"] == "event_pending"));

    let anonymous = app
        .client
        .get(app.admin_url("/admin/history"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}
