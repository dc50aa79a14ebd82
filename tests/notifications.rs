//! The notifications service over real HTTP: an admin sends a webhook
//! notification, a receiver on loopback (started here) takes the signed
//! POST, and the notification becomes `sent`; a receiver that fails is
//! retried with growing delays and then the notification is dead, listed
//! among the dead letters and retried from there; templates are checked
//! when written and rendered strictly when used; every 422 names its field.

mod common;

use std::time::{Duration, Instant};

use common::notifications::{is_dead_letter, notification_until};
use common::{expect_error, spawn_app_with, TestApp, ALICE};
use reqwest::Method;
use serde_json::{json, Value};
use testkit::Receiver;

const SECRET: &str = "webhook-secret-for-the-tests-0123";

async fn spawn() -> TestApp {
    spawn_app_with(|config| {
        let section = config.service_mut("notifications");
        section.set("webhook", json!({"secret": SECRET})).unwrap();
        section.set("max_attempts", 3).unwrap();
        section.set("retry_base", "100ms").unwrap();
        section.set("retry_max", "400ms").unwrap();
        section.set("poll_every", "50ms").unwrap();
    })
    .await
}

#[tokio::test]
async fn a_webhook_is_signed_delivered_once_and_marked_sent() {
    let app = spawn().await;
    let receiver = Receiver::start().await.unwrap();
    let sent = app
        .as_admin(Method::POST, "/api/v1/notifications/send")
        .header("idempotency-key", "hook-1")
        .json(&json!({"channel": "webhook", "to": receiver.url("/hook"), "body": "{\"order\":42}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let accepted: Value = sent.json().await.unwrap();
    assert_eq!(accepted["status"], "queued", "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();

    let done = notification_until(&app, &id, |n| n["status"] == "sent").await;
    assert_eq!(done["attempts"], 1, "{done}");
    assert!(done["sent_at"].is_string(), "{done}");
    let received = receiver.received();
    assert_eq!(received.len(), 1, "delivered once");
    let hook = &received[0];
    assert_eq!(hook.body.as_ref(), b"{\"order\":42}");
    assert_eq!(hook.headers["idempotency-key"], id.as_str());
    let signature = hook.headers["x-stageworks-signature"].to_str().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(actors::notifications::providers::verify_signature(
        SECRET.as_bytes(),
        signature,
        &hook.body,
        now,
        300
    ));
    assert!(!actors::notifications::providers::verify_signature(
        b"another-secret-entirely-0123456",
        signature,
        &hook.body,
        now,
        300
    ));

    // The same key and body again: the stored answer, nothing sent twice.
    let replay = app
        .as_admin(Method::POST, "/api/v1/notifications/send")
        .header("idempotency-key", "hook-1")
        .json(&json!({"channel": "webhook", "to": receiver.url("/hook"), "body": "{\"order\":42}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(replayed["id"], id.as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_growing_delays_then_dead_then_retried_by_hand() {
    let app = spawn().await;
    let receiver = Receiver::start().await.unwrap();
    receiver.answer(&[503, 503, 503]);
    let accepted: Value = app
        .as_admin(Method::POST, "/api/v1/notifications/send")
        .json(&json!({"channel": "webhook", "to": receiver.url("/flaky"), "body": "{}"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    let dead = notification_until(&app, &id, |n| n["status"] == "dead").await;
    assert_eq!(dead["attempts"], 3, "max_attempts: {dead}");
    assert!(
        dead["last_error"].as_str().unwrap().contains("503"),
        "{dead}"
    );
    assert!(!dead["last_error"].as_str().unwrap().contains(SECRET));
    let tries = receiver.received();
    assert_eq!(tries.len(), 3);
    // Backoff from retry_base 100 ms: each wait at least the base.
    for pair in tries.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(100),
            "retried too soon"
        );
    }

    assert!(
        is_dead_letter(&app, &id).await,
        "{id} among the dead letters"
    );

    let request = format!("retry-{}", uuid::Uuid::now_v7().simple());
    let retried = app
        .as_admin(
            Method::POST,
            &format!("/api/v1/notifications/dead-letters/{id}/retry"),
        )
        .header("x-request-id", &request)
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 202);
    let sent = notification_until(&app, &id, |n| n["status"] == "sent").await;
    assert_eq!(sent["attempts"], 1, "attempts reset: {sent}");
    assert_eq!(receiver.received().len(), 4);

    // The audit log has who retried it, with their request id.
    let recorded = audit_entry_until(&app, &request, "notification.retried").await;
    assert_eq!(recorded["actor_id"], ADMIN_ID, "{recorded}");
    assert_eq!(recorded["resource_type"], "notification", "{recorded}");
    assert_eq!(recorded["resource_id"], id.as_str(), "{recorded}");

    // Not dead any more: a second retry is a conflict.
    let again = app
        .as_admin(
            Method::POST,
            &format!("/api/v1/notifications/dead-letters/{id}/retry"),
        )
        .send()
        .await
        .unwrap();
    expect_error(again, 409, "CONFLICT").await;
}

#[tokio::test]
async fn a_receiver_that_asks_to_wait_is_not_tried_again_before_its_retry_after() {
    let app = spawn().await;
    let receiver = Receiver::start().await.unwrap();
    receiver.answer_retry_after(429, 2);
    let (status, accepted) = common::json_of(
        app.as_admin(Method::POST, "/api/v1/notifications/send")
            .json(&json!({"channel": "webhook", "to": receiver.url("/busy"), "body": "{}"})),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap();
    let sent = notification_until(&app, id, |n| n["status"] == "sent").await;
    assert_eq!(sent["attempts"], 2, "{sent}");
    let tries = receiver.received();
    assert_eq!(tries.len(), 2);
    // The backoff alone (at most retry_max, 400 ms) would have come back sooner.
    let waited = tries[1].at - tries[0].at;
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, before the receiver's retry-after: 2"
    );
}

#[tokio::test]
async fn templates_are_checked_when_written_and_rendered_strictly() {
    let app = spawn().await;
    let receiver = Receiver::start().await.unwrap();
    let template = json!({
        "name": "order_hook", "channel": "webhook",
        "body": "{\"order\":\"{{order.number}}\",\"who\":\"{{name}}\"}"
    });
    let created = app
        .as_admin(Method::POST, "/api/v1/notifications/templates")
        .json(&template)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let twice = app
        .as_admin(Method::POST, "/api/v1/notifications/templates")
        .json(&template)
        .send()
        .await
        .unwrap();
    expect_error(twice, 409, "CONFLICT").await;
    let broken = app
        .as_admin(Method::POST, "/api/v1/notifications/templates")
        .json(&json!({"name": "broken", "channel": "webhook", "body": "{{#if x}}never closed"}))
        .send()
        .await
        .unwrap();
    let body = expect_error(broken, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["errors"][0]["field"], "body", "{body}");

    // A variable the data lacks is a 422 naming it; nothing is queued.
    let missing = app
        .as_admin(Method::POST, "/api/v1/notifications/send")
        .json(
            &json!({"channel": "webhook", "to": receiver.url("/t"), "template": "order_hook",
                      "data": {"name": "Ann"}}),
        )
        .send()
        .await
        .unwrap();
    let body = expect_error(missing, 422, "VALIDATION_ERROR").await;
    assert_eq!(
        body["error"]["errors"][0]["field"], "data.order.number",
        "{body}"
    );

    let accepted: Value = app
        .as_admin(Method::POST, "/api/v1/notifications/send")
        .json(
            &json!({"channel": "webhook", "to": receiver.url("/t"), "template": "order_hook",
                      "data": {"name": "Ann & Bob", "order": {"number": "ORD-7"}}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().unwrap();
    notification_until(&app, id, |n| n["status"] == "sent").await;
    assert_eq!(
        receiver.received()[0].body.as_ref(),
        b"{\"order\":\"ORD-7\",\"who\":\"Ann & Bob\"}",
        "rendered, not HTML-escaped"
    );

    // An edit changes what the next notification says.
    let replaced = app
        .as_admin(Method::PUT, "/api/v1/notifications/templates/order_hook")
        .json(&json!({"channel": "webhook", "body": "{\"v\":2}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    let accepted: Value = app
        .as_admin(Method::POST, "/api/v1/notifications/send")
        .json(&json!({"channel": "webhook", "to": receiver.url("/t"), "template": "order_hook"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    notification_until(&app, accepted["id"].as_str().unwrap(), |n| {
        n["status"] == "sent"
    })
    .await;
    assert_eq!(receiver.received()[1].body.as_ref(), b"{\"v\":2}");

    // The defaults exist from the first start.
    let list: Value = app
        .as_admin(Method::GET, "/api/v1/notifications/templates")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for default in ["welcome", "invoice_created", "invoice_paid"] {
        assert!(names.contains(&default), "{names:?}");
    }
    let deleted = app
        .as_admin(Method::DELETE, "/api/v1/notifications/templates/order_hook")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
}

#[tokio::test]
async fn the_contracts_refusals_name_their_field_and_users_see_only_theirs() {
    let app = spawn().await;
    let cases = [
        (
            json!({"channel": "sms", "to": "+14155550123", "body": "hi"}),
            "channel",
        ),
        (json!({"channel": "fax", "to": "x"}), "channel"),
        (
            json!({"channel": "webhook", "to": "ftp://x.example.com", "body": "{}"}),
            "to",
        ),
        (
            json!({"channel": "webhook", "to": "https://x.example.com", "template": "nope"}),
            "template",
        ),
        (
            json!({"channel": "webhook", "to": "https://x.example.com", "template": "welcome"}),
            "template",
        ),
        (
            json!({"channel": "webhook", "to": "https://x.example.com"}),
            "template",
        ),
    ];
    for (body, field) in cases {
        let refused = app
            .as_admin(Method::POST, "/api/v1/notifications/send")
            .json(&body)
            .send()
            .await
            .unwrap();
        let error = expect_error(refused, 422, "VALIDATION_ERROR").await;
        assert_eq!(
            error["error"]["errors"][0]["field"], field,
            "{body}: {error}"
        );
    }
    let bulk = app
        .as_admin(Method::POST, "/api/v1/notifications/send-bulk")
        .json(&json!({"channel": "webhook", "template": "welcome",
                      "recipients": [{"to": "https://a.example.com"}, {"to": "nope"}]}))
        .send()
        .await
        .unwrap();
    let error = expect_error(bulk, 422, "VALIDATION_ERROR").await;
    assert_eq!(
        error["error"]["errors"][0]["field"], "recipients[1].to",
        "{error}"
    );

    // Sending is for admins; a user's list holds only what is theirs.
    let forbidden = app
        .as_user(Method::POST, "/api/v1/notifications/send", ALICE)
        .json(&json!({"channel": "webhook", "to": "https://a.example.com", "body": "{}"}))
        .send()
        .await
        .unwrap();
    expect_error(forbidden, 403, "FORBIDDEN").await;
    let mine: Value = app
        .as_user(Method::GET, "/api/v1/notifications", ALICE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["data"], json!([]), "{mine}");
    let prefs = app
        .as_user(Method::PUT, "/api/v1/notifications/preferences", ALICE)
        .json(&json!({"email": false, "sms": true, "push": true, "webhook": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(prefs.status(), 200);
    let prefs: Value = app
        .as_user(Method::GET, "/api/v1/notifications/preferences", ALICE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prefs["email"], false, "{prefs}");
}

#[tokio::test]
async fn a_bulk_send_reaches_every_recipient_once_and_reports_its_progress() {
    let app = spawn().await;
    let receiver = Receiver::start().await.unwrap();
    let recipients: Vec<Value> = (0..50)
        .map(|i| json!({"to": receiver.url(&format!("/r/{i}")), "data": {"n": i}}))
        .collect();
    let created = app.as_admin(Method::POST, "/api/v1/notifications/templates")
        .json(&json!({"name": "numbered", "channel": "webhook", "body": "{\"n\":{{n}},\"of\":\"{{of}}\"}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let accepted: Value = app
        .as_admin(Method::POST, "/api/v1/notifications/send-bulk")
        .json(
            &json!({"channel": "webhook", "template": "numbered", "data": {"of": "fifty"},
                      "recipients": recipients}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(accepted["accepted"], 50, "{accepted}");
    let batch = format!(
        "/api/v1/notifications/batches/{}",
        accepted["batch_id"].as_str().unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let progress: Value = app
            .as_admin(Method::GET, &batch)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(progress["total"], 50, "{progress}");
        if progress["sent"] == 50 {
            break;
        }
        assert!(Instant::now() < deadline, "batch not sent: {progress}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seen: Vec<i64> = receiver
        .received()
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>(), "each recipient once");
}

/// The admin every `as_admin` request is (see `common::admin_token`).
const ADMIN_ID: &str = "00000000-0000-0000-0000-00ad00000001";

/// The audit entry of `action` caused by `request`, once audit has it.
async fn audit_entry_until(app: &TestApp, request: &str, action: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, found) = common::json_of(app.as_admin(
            Method::GET,
            &format!("/api/v1/audit/search?request_id={request}&action={action}"),
        ))
        .await;
        assert_eq!(status, 200, "{found}");
        if let Some(entry) = found["data"].as_array().and_then(|d| d.first()) {
            return entry.clone();
        }
        assert!(Instant::now() < deadline, "no {action} entry for {request}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
