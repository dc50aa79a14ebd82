//! Two replicas sharing one PostgreSQL serve the same data: an order created
//! through one is read through the other, and an idempotency key holds across
//! both (the same key sent to both creates one order).
//!
//! Runs against `STAGEWORKS_TEST_DATABASE_URL` and `STAGEWORKS_TEST_REDIS_URL`,
//! or the machine's PostgreSQL (127.0.0.1:5432, database `test`) and Redis
//! (127.0.0.1:6379) when those are not set: replicas need shared servers,
//! SQLite files and the in-memory store are one process's.

mod common;

use common::{spawn_app_in, test_config, TestApp, TestDatabase, ALICE, BOB};
use reqwest::Method;
use serde_json::{json, Value};

const LOCAL_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
const LOCAL_REDIS: &str = "redis://127.0.0.1:6379";

async fn two_replicas() -> (TestApp, TestApp) {
    let admin = common::test_database_url().unwrap_or_else(|| LOCAL_POSTGRES.to_owned());
    let database = TestDatabase::create(&admin).await;
    // One deployment: both replicas use the same key prefix in Redis.
    let prefix = format!("stageworks-test:{}:", uuid::Uuid::now_v7().simple());
    let replica = |database: Option<TestDatabase>, url: String| {
        let prefix = prefix.clone();
        async move {
            let data = tempfile::tempdir().unwrap();
            let mut config = test_config(&data);
            config.database.url = url;
            // Revocations and limits are shared through Redis between replicas.
            config.redis.url = common::test_redis_url().unwrap_or_else(|| LOCAL_REDIS.to_owned());
            config.redis.key_prefix = prefix;
            spawn_app_in(config, data, database).await
        }
    };
    let url = database.url.clone();
    // The database lives with the first replica; dropping it ends the other
    // replica's connections too (DROP DATABASE … WITH (FORCE)).
    let first = replica(Some(database), url.clone()).await;
    let second = replica(None, url).await;
    (first, second)
}

#[tokio::test]
async fn an_order_created_on_one_replica_is_read_on_the_other() {
    let (one, two) = two_replicas().await;
    let created: Value = one
        .create_order(ALICE, json!({"amount": 777}))
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let read = two.get_json(&format!("/api/v1/orders/{id}"), ALICE).await;
    assert_eq!(read, created);

    let cancelled = two
        .as_user(Method::POST, &format!("/api/v1/orders/{id}/cancel"), ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let seen_by_one = one.get_json(&format!("/api/v1/orders/{id}"), ALICE).await;
    assert_eq!(seen_by_one["status"], "cancelled");
    let again = one
        .as_user(Method::POST, &format!("/api/v1/orders/{id}/cancel"), ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let other_user = two
        .as_user(Method::GET, &format!("/api/v1/orders/{id}"), BOB)
        .send()
        .await
        .unwrap();
    assert_eq!(other_user.status(), 404);
}

#[tokio::test]
async fn an_idempotency_key_holds_across_replicas() {
    let (one, two) = two_replicas().await;
    let body = json!({"amount": 4321});
    let send = |app: &TestApp| {
        app.as_user(Method::POST, "/api/v1/orders", ALICE)
            .header("idempotency-key", "across-replicas")
            .json(&body)
            .send()
    };
    // A request on replica one has claimed the key and is not done with it
    // when replica two gets the key.
    let running = one
        .order_key_in_flight(ALICE, "across-replicas", &body)
        .await;
    let in_flight = send(&two).await.unwrap();
    assert_eq!(in_flight.status(), 409);
    // It ends without an answer stored; its retry on replica one succeeds.
    running.release().await;
    let first = send(&one).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();

    let replayed = send(&two).await.unwrap();
    assert_eq!(replayed.status(), 201);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(replayed.json::<Value>().await.unwrap(), first);

    // Both at once: one order between them.
    let (a, b) = tokio::join!(
        one.as_user(Method::POST, "/api/v1/orders", BOB)
            .header("idempotency-key", "race")
            .json(&json!({"amount": 1}))
            .send(),
        two.as_user(Method::POST, "/api/v1/orders", BOB)
            .header("idempotency-key", "race")
            .json(&json!({"amount": 1}))
            .send(),
    );
    let statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    assert!(statuses.contains(&201), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    let bobs = one.get_json("/api/v1/orders", BOB).await;
    assert_eq!(bobs["pagination"]["total"], 1);
    let alices = two.get_json("/api/v1/orders", ALICE).await;
    assert_eq!(alices["pagination"]["total"], 1);
}

#[tokio::test]
async fn a_logout_on_one_replica_ends_the_token_on_the_other_at_once() {
    let (one, two) = two_replicas().await;
    let token = &one.users[ALICE].access_token;
    let on_two = || {
        two.client
            .get(two.url("/api/v1/auth/me"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        on_two().await.unwrap().status(),
        200,
        "replicas accept each other's tokens"
    );
    let out = one
        .as_user(Method::POST, "/api/v1/auth/logout", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(
        on_two().await.unwrap().status(),
        401,
        "the revocation reached the other replica"
    );
}

/// Events go through Redis Streams with one consumer group per subscriber:
/// orders spread over both replicas make exactly one invoice each, and the
/// numbers stay unique and gap-free across replicas.
#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_orders_over_two_replicas_make_five_hundred_invoices() {
    use futures::StreamExt;
    const ORDERS: usize = 500;
    let (one, two) = two_replicas().await;
    let replicas = [&one, &two];
    let created: Vec<String> = futures::stream::iter(0..ORDERS)
        .map(|i| async move {
            // A replica whose queue is full sheds with 503 + retry-after
            // (overload, nothing written: on a loaded machine it happens);
            // the client does what a client should and tries again later.
            let mut shed = 0;
            let response = loop {
                let response = replicas[i % 2]
                    .create_order(ALICE, json!({"amount": 100 + i}))
                    .await;
                if response.status() != 503 || shed == 20 {
                    break response;
                }
                assert!(
                    response.headers().contains_key("retry-after"),
                    "a 503 without retry-after: {:?}",
                    response.text().await
                );
                shed += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            };
            assert_eq!(response.status(), 201);
            let order: Value = response.json().await.unwrap();
            order["id"].as_str().unwrap().to_owned()
        })
        .buffer_unordered(16)
        .collect()
        .await;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let page = one.get_json("/api/v1/invoices?limit=1", ALICE).await;
        if page["pagination"]["total"] == ORDERS {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "invoicing did not catch up: {page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut invoices = Vec::new();
    for page in 1..=ORDERS.div_ceil(100) {
        let body = two
            .get_json(&format!("/api/v1/invoices?limit=100&page={page}"), ALICE)
            .await;
        invoices.extend(body["data"].as_array().unwrap().clone());
    }
    let invoiced: std::collections::HashSet<&str> = invoices
        .iter()
        .map(|i| i["order_id"].as_str().unwrap())
        .collect();
    let ordered: std::collections::HashSet<&str> = created.iter().map(String::as_str).collect();
    assert_eq!(invoices.len(), ORDERS);
    assert_eq!(invoiced, ordered, "every order has exactly one invoice");
    let mut numbers: Vec<String> = invoices
        .iter()
        .map(|i| i["number"].as_str().unwrap().to_owned())
        .collect();
    numbers.sort();
    let expected: Vec<String> = (1..=ORDERS).map(|n| format!("INV-{n:06}")).collect();
    assert_eq!(numbers, expected);

    // Both replicas consumed from the group: the work was shared, not repeated.
    let mut delivered = Vec::new();
    for replica in replicas {
        let overview: Value = replica
            .admin_get("/admin/events")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(overview["transport"], "redis_streams");
        let billing = overview["subscribers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "billing")
            .unwrap()["delivered"]
            .as_u64()
            .unwrap();
        delivered.push(billing);
    }
    eprintln!("billing deliveries per replica: {delivered:?}");
    assert!(delivered.iter().sum::<u64>() >= ORDERS as u64);
}

#[tokio::test]
async fn a_cancel_on_one_replica_racing_a_payment_on_the_other_never_leaves_the_money_taken() {
    let (one, two) = two_replicas().await;
    let tally = common::races::cancel_and_pay(&one, &two, ALICE, 10).await;
    eprintln!("cancel and pay across replicas, 10 rounds: {tally:?}");
}
