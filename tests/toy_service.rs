//! A service from outside the crate: the toy notes service of `toy/`,
//! defined in this test crate with its own settings, tables, topic and
//! routes, registered beside the built-in services with
//! `App::builder(..).service(..)` and driven over HTTP, events included.

mod common;
mod toy;

use actors::ServiceDefinition;
use reqwest::Method;
use serde_json::{json, Value};
use stageworks::config::{Config, ConfigError};

use common::{expect_error, spawn_app_of, ALICE, BOB};

fn services() -> Vec<ServiceDefinition> {
    let mut services = actors::BUILTIN.to_vec();
    services.push(toy::SERVICE);
    services
}

#[tokio::test]
async fn a_service_defined_outside_the_crate_serves_stores_publishes_and_consumes() {
    let app = spawn_app_of(&services(), |c| {
        c.service_mut(toy::NAME).set("max_length", 12).unwrap()
    })
    .await;

    // Its route, its own setting.
    let created = app
        .as_user(Method::POST, "/api/v1/notes", ALICE)
        .json(&json!({"text": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let note: Value = created.json().await.unwrap();
    assert_eq!(note["text"], "hello");
    assert_eq!(note["user_id"], app.user_id(ALICE));
    let too_long = app
        .as_user(Method::POST, "/api/v1/notes", ALICE)
        .json(&json!({"text": "longer than twelve"}))
        .send()
        .await
        .unwrap();
    let body = expect_error(too_long, 422, "VALIDATION_ERROR").await;
    assert!(body.to_string().contains("1 to 12"), "{body}");

    // Its table, and the owner rule: Bob cannot see Alice's note.
    let path = format!("/api/v1/notes/{}", note["id"].as_str().unwrap());
    let hidden = app.as_user(Method::GET, &path, BOB).send().await.unwrap();
    expect_error(hidden, 404, "NOT_FOUND").await;

    // Its topic: note.created leaves through its outbox and comes back
    // through the bus to its own subscription.
    let announced = app
        .eventually(&path, ALICE, |n| n["announced"] == true)
        .await;
    assert_eq!(announced["text"], "hello");

    // A built-in service's topic reaches it too.
    assert_eq!(
        app.create_order(ALICE, json!({"amount": 5})).await.status(),
        201
    );
    assert_eq!(
        app.create_order(ALICE, json!({"amount": 6})).await.status(),
        201
    );
    app.eventually("/api/v1/notes/orders-seen", ALICE, |seen| {
        seen["orders"] == 2
    })
    .await;
    let bobs: Value = app.get_json("/api/v1/notes/orders-seen", BOB).await;
    assert_eq!(bobs["orders"], 0);

    // It is in the supervision tree and the event flow like any service.
    let node = app.admin_node(toy::NAME).await;
    assert_eq!(node["status"], "running", "{node}");
    let events: Value = app
        .admin_get("/admin/events")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(events.to_string().contains("\"notes\""), "{events}");
}

#[tokio::test]
async fn a_disabled_service_is_not_started_and_its_routes_are_unknown() {
    let app = spawn_app_of(&services(), |c| c.service_mut(toy::NAME).enabled = false).await;
    let refused = app
        .as_user(Method::POST, "/api/v1/notes", ALICE)
        .json(&json!({"text": "hello"}))
        .send()
        .await
        .unwrap();
    expect_error(refused, 404, "NOT_FOUND").await;
    let node = app
        .admin_get(&format!("/admin/actors/{}", toy::NAME))
        .send()
        .await
        .unwrap();
    assert_eq!(node.status(), 404);
}

fn problems(config: &Config) -> String {
    match config.validate(&services()) {
        Err(ConfigError::Invalid(problems)) => problems.join("\n"),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn its_settings_are_checked_and_shown_like_a_built_in_services() {
    let mut config = Config::default();
    config.service_mut(toy::NAME).set("max_length", 0).unwrap();
    assert!(
        problems(&config).contains("services.notes.max_length: must be from 1 to 10000"),
        "{}",
        problems(&config)
    );

    let mut config = Config::default();
    config.service_mut(toy::NAME).set("max_lenght", 5).unwrap();
    assert!(
        problems(&config).contains("services.notes.max_lenght: no such setting (known: max_length"),
        "{}",
        problems(&config)
    );

    let shown = Config::default().to_masked_toml(&services()).unwrap();
    assert!(shown.contains("[services.notes]"), "{shown}");
    assert!(shown.contains("max_length = 280"), "{shown}");

    // Without it registered, its section is an unknown service.
    let mut config = Config::default();
    config.service_mut(toy::NAME);
    let err = config.validate(actors::BUILTIN).unwrap_err().to_string();
    assert!(err.contains("services.notes: no such service"), "{err}");
}

/// How the `counting` stream tagged `tag` ended, once it has.
fn counting_outcome(tag: &str) -> Option<(u64, bool)> {
    toy::COUNTINGS
        .lock()
        .unwrap()
        .iter()
        .find(|(t, _, _)| t == tag)
        .map(|(_, produced, left)| (*produced, *left))
}

#[tokio::test]
async fn a_streamed_response_is_sent_as_produced_and_stops_when_the_client_leaves() {
    use futures::StreamExt as _;
    let app = spawn_app_of(&services(), |_| {}).await;

    // Whole: every line in order, chunked (its length was never known).
    let whole = app
        .as_user(
            Method::GET,
            "/api/v1/notes/counting?to=100000&tag=whole",
            ALICE,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["content-type"], "text/plain");
    assert!(whole.headers().get("content-length").is_none());
    let text = whole.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 100_000);
    assert_eq!(lines[0], "1");
    assert_eq!(lines[99_999], "100000");
    assert_eq!(counting_outcome("whole"), Some((100_000, false)));

    // A client that reads a little and goes away: the producer, held back
    // by the channel and the socket, notices and stops far short of the end.
    let mut partial = app
        .as_user(
            Method::GET,
            "/api/v1/notes/counting?to=100000000&tag=left",
            ALICE,
        )
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let first = partial.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"1\n"), "{first:?}");
    drop(partial);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (produced, left) = loop {
        if let Some(outcome) = counting_outcome("left") {
            break outcome;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the producer never stopped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(left, "the producer saw the client leave");
    assert!(
        produced < 10_000_000,
        "backpressure holds the producer near the reader: {produced} lines produced"
    );
}
