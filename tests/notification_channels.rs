//! The notifications service end to end through each channel's real
//! protocol, against servers on loopback started here (`testkit`):
//!
//! * email over SMTP: a registration sends one welcome email (rendered
//!   subject and body, `Message-ID` from the notification id); an edited
//!   template changes the next one; `user.registered` delivered again (the
//!   auth outbox republished after a restart) sends nothing more; an
//!   opted-out user's notification is `skipped`;
//! * an SMTP server that is down: retries with growing delays, dead after
//!   `max_attempts`, and once it is back a retry from the dead letters
//!   delivers once, each outcome announced (`notification.dead`, `notification.retried`,
//!   `notification.sent`); marked `required`, it takes `/ready` down and
//!   back while the API keeps accepting;
//! * SMS through a Twilio-compatible API: method, path, form fields, basic
//!   auth, idempotency key;
//! * Web Push: the payload decrypted with the subscription's keys, and a
//!   subscription the push service answers 410 for is removed.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::notifications::{is_dead_letter, notification_until, opt_out_of_email};
use common::{json_of, spawn_app_in, test_config, TestApp, TestDatabase, ALICE, BOB};
use reqwest::Method;
use serde_json::{json, Value};
use testkit::{PushSubscriber, Receiver, SmtpSink};

const FROM: &str = "Stageworks <noreply@example.com>";

/// The service's settings for the tests: retries in test time, email to
/// `sink`, and whatever `extra` adds (`sms`, `push`, `required`, …).
fn notifications(config: &mut stageworks::config::Config, sink: &SmtpSink, extra: &Value) {
    let section = config.service_mut("notifications");
    let mut email = json!({
        "host": "127.0.0.1", "port": sink.port(), "security": "none",
        "from": FROM, "per_second": 1000, "timeout": "2s",
    });
    if let Some(more) = extra.get("email").and_then(Value::as_object) {
        for (key, value) in more {
            email[key] = value.clone();
        }
    }
    section.set("email", email).unwrap();
    for channel in ["sms", "push"] {
        if let Some(settings) = extra.get(channel) {
            section.set(channel, settings.clone()).unwrap();
        }
    }
    // A 10,000-recipient bulk takes 0.5-0.7 s in a release build and
    // several seconds in this debug build on a loaded machine.
    section.call_timeout = Duration::from_secs(20);
    section.set("max_attempts", 3).unwrap();
    section.set("retry_base", "200ms").unwrap();
    section.set("retry_max", "800ms").unwrap();
    section.set("poll_every", "50ms").unwrap();
}

/// A test app on `data` (and `database`, on PostgreSQL) with
/// [`notifications`]' settings; Alice and Bob register as it starts.
async fn start(
    data: tempfile::TempDir,
    database: Option<TestDatabase>,
    sink: &SmtpSink,
    extra: &Value,
) -> TestApp {
    let mut config = test_config(&data);
    if let Some(database) = &database {
        config.database.url = database.url.clone();
    }
    if let Some(redis) = common::test_redis_url() {
        config.redis.url = redis;
    }
    notifications(&mut config, sink, extra);
    spawn_app_in(config, data, database).await
}

/// A fresh app: its own data dir, and its own database when the tests run
/// on PostgreSQL.
async fn spawn(sink: &SmtpSink, extra: Value) -> TestApp {
    let database = match common::test_database_url() {
        Some(admin) => Some(TestDatabase::create(&admin).await),
        None => None,
    };
    start(tempfile::tempdir().unwrap(), database, sink, &extra).await
}

/// Polls `check` until it holds (20 s at most), or fails naming `what`.
async fn until<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The notifications addressed to a user, as the admin lists them.
async fn notifications_of(app: &TestApp, user_id: &str) -> Vec<Value> {
    let (status, listed) = json_of(app.as_admin(
        Method::GET,
        &format!("/api/v1/notifications?user_id={user_id}"),
    ))
    .await;
    assert_eq!(status, 200, "{listed}");
    listed["data"].as_array().unwrap().clone()
}

/// The mails `sink` took for `to`.
fn mails_to(sink: &SmtpSink, to: &str) -> Vec<testkit::Mail> {
    sink.mails().into_iter().filter(|m| m.to == [to]).collect()
}

async fn register(app: &TestApp, email: &str) -> Value {
    let (status, user) = json_of(
        app.client
            .post(app.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": common::PASSWORD, "name": "Carol"})),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    user
}

/// A connection to `service`'s own database: its SQLite file, or the
/// test database (where its tables are in the schema named after it).
enum ServiceDb {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl ServiceDb {
    async fn open(app: &TestApp, service: &str) -> Self {
        use sqlx::Connection as _;
        match &app.database {
            Some(database) => {
                let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
                sqlx::query(&format!("SET search_path TO {service}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                ServiceDb::Postgres(conn)
            }
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(app.data.path().join(format!("{service}.db")))
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
                ServiceDb::Sqlite(
                    sqlx::SqliteConnection::connect_with(&options)
                        .await
                        .unwrap(),
                )
            }
        }
    }

    async fn execute(&mut self, statement: &str) -> u64 {
        match self {
            ServiceDb::Sqlite(conn) => sqlx::query(statement)
                .execute(conn)
                .await
                .unwrap()
                .rows_affected(),
            ServiceDb::Postgres(conn) => sqlx::query(statement)
                .execute(conn)
                .await
                .unwrap()
                .rows_affected(),
        }
    }

    /// The events of its outbox, oldest first: `(topic, event)`.
    async fn outbox(&mut self) -> Vec<(String, Value)> {
        let statement = "SELECT topic, event FROM outbox ORDER BY seq";
        let rows: Vec<(String, String)> = match self {
            ServiceDb::Sqlite(conn) => sqlx::query_as(statement).fetch_all(conn).await,
            ServiceDb::Postgres(conn) => sqlx::query_as(statement).fetch_all(conn).await,
        }
        .unwrap();
        rows.into_iter()
            .map(|(topic, event)| (topic, serde_json::from_str(&event).unwrap()))
            .collect()
    }
}

/// Marks every `user.registered` event of auth's outbox unpublished, as if
/// the process had died between publishing them and recording it: the
/// relay of the next start hands them on again, with their ids.
async fn republish_registrations(app: &TestApp) -> u64 {
    ServiceDb::open(app, "auth")
        .await
        .execute(
            "UPDATE outbox SET published_at = NULL, claimed_until = 0 \
             WHERE topic = 'user.registered'",
        )
        .await
}

#[tokio::test]
async fn a_registration_sends_one_welcome_email_even_when_its_event_comes_twice() {
    let sink = SmtpSink::start().await.unwrap();
    let mut app = spawn(&sink, json!({})).await;

    // Alice and Bob registered as the app started: one welcome each.
    let mails = sink.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(mails.len(), 2, "{mails:?}");
    let welcome = &mails_to(&sink, ALICE)[0];
    assert_eq!(
        welcome.header("Subject").as_deref(),
        Some("Welcome, alice@example.com")
    );
    assert_eq!(welcome.header("From").as_deref(), Some(FROM));
    assert_eq!(welcome.from, "noreply@example.com");
    assert!(
        welcome
            .body()
            .contains("your account alice@example.com is ready."),
        "{}",
        welcome.data
    );
    // Its Message-ID is the notification's id, which Alice sees as sent.
    let alice_id = app.user_id(ALICE).to_owned();
    let listed = notifications_of(&app, &alice_id).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["template"], "welcome");
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let sent = notification_until(&app, &id, |n| n["status"] == "sent").await;
    assert_eq!(sent["attempts"], 1, "{sent}");
    assert_eq!(
        welcome.header("Message-ID"),
        Some(format!("<{id}@example.com>"))
    );

    // An admin edits the template: the next registration gets the new text.
    let (status, edited) = json_of(
        app.as_admin(Method::PUT, "/api/v1/notifications/templates/welcome")
            .json(&json!({
                "channel": "email",
                "subject": "Glad you are here, {{name}}",
                "body": "Sign in as {{email}}.",
            })),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    register(&app, "carol@example.com").await;
    let mails = sink.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(mails.len(), 3, "{mails:?}");
    let carol = &mails_to(&sink, "carol@example.com")[0];
    assert_eq!(
        carol.header("Subject").as_deref(),
        Some("Glad you are here, Carol")
    );
    assert!(
        carol.body().contains("Sign in as carol@example.com."),
        "{}",
        carol.data
    );

    // The process stops; auth's outbox is made to hand its three
    // registrations on again; the next start delivers them again.
    app.stop().await;
    let republished = republish_registrations(&app).await;
    assert_eq!(republished, 3, "three user.registered events in the outbox");
    let data = std::mem::replace(&mut app.data, tempfile::tempdir().unwrap());
    let database = app.database.take();
    let app = start(data, database, &sink, &json!({})).await;
    until("the registrations are delivered again", || async {
        let subscriber = app.events_subscriber("notifications").await;
        subscriber["delivered"].as_u64() >= Some(3) && subscriber["pending"].as_u64() == Some(0)
    })
    .await;
    // The inbox knew them: no notification more, no mail more. The
    // edited template was not put back by the restart either.
    for user in [ALICE, BOB] {
        let listed = notifications_of(&app, app.user_id(user)).await;
        assert_eq!(listed.len(), 1, "{user}: {listed:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(), 3, "{:?}", sink.mails());
    let (_, template) =
        json_of(app.as_admin(Method::GET, "/api/v1/notifications/templates/welcome")).await;
    assert_eq!(template["subject"], "Glad you are here, {{name}}");
}

#[tokio::test]
async fn a_user_who_opted_out_of_email_is_skipped_and_sent_nothing() {
    let sink = SmtpSink::start().await.unwrap();
    let app = spawn(&sink, json!({})).await;
    sink.wait_for(2, Duration::from_secs(15)).await;
    opt_out_of_email(&app, BOB).await;
    let (status, queued) = json_of(
        app.as_admin(Method::POST, "/api/v1/notifications/send")
            .json(&json!({
                "channel": "email", "user_id": app.user_id(BOB),
                "subject": "News", "body": "Something new.",
            })),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    let id = queued["id"].as_str().unwrap();
    let skipped = notification_until(&app, id, |n| n["status"] != "queued").await;
    assert_eq!(skipped["status"], "skipped", "{skipped}");
    assert_eq!(skipped["attempts"], 0, "{skipped}");
    // Alice did not opt out: hers goes, and Bob's still has not.
    let (_, for_alice) = json_of(
        app.as_admin(Method::POST, "/api/v1/notifications/send")
            .json(&json!({
                "channel": "email", "user_id": app.user_id(ALICE),
                "subject": "News", "body": "Something new.",
            })),
    )
    .await;
    notification_until(&app, for_alice["id"].as_str().unwrap(), |n| {
        n["status"] == "sent"
    })
    .await;
    let news: Vec<_> = sink
        .mails()
        .into_iter()
        .filter(|m| m.header("Subject").as_deref() == Some("News"))
        .collect();
    assert_eq!(news.len(), 1, "{news:?}");
    assert_eq!(news[0].to, [ALICE]);
}

#[tokio::test]
async fn an_smtp_server_that_is_down_gets_retries_then_a_dead_letter_then_one_delivery() {
    let mut sink = SmtpSink::start().await.unwrap();
    let app = spawn(&sink, json!({"email": {"required": true}})).await;
    sink.wait_for(2, Duration::from_secs(15)).await;
    let ready = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    sink.stop();
    // Required, the provider takes the process out of rotation…
    until("/ready fails with the SMTP server down", || async {
        let ready = app.client.get(app.url("/ready")).send().await.unwrap();
        ready.status() == 503
    })
    .await;
    let (_, health) = json_of(app.client.get(app.url("/health"))).await;
    assert!(
        health.to_string().contains("provider:email"),
        "the provider is named: {health}"
    );
    // … while the API still accepts: the notification waits in the queue.
    let (status, queued) = json_of(
        app.as_admin(Method::POST, "/api/v1/notifications/send")
            .json(&json!({
                "channel": "email", "to": "ops@example.com",
                "subject": "Disk almost full", "body": "Only 3% left on /var.",
            })),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    let id = queued["id"].as_str().unwrap().to_owned();
    let dead = notification_until(&app, &id, |n| n["status"] == "dead").await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert!(
        dead["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("127.0.0.1")),
        "the last error says which server failed: {dead}"
    );
    assert!(
        is_dead_letter(&app, &id).await,
        "{id} among the dead letters"
    );

    // Back: ready again, and the retried dead letter is delivered once.
    sink.resume().await.unwrap();
    until("/ready answers again", || async {
        let ready = app.client.get(app.url("/ready")).send().await.unwrap();
        ready.status() == 200
    })
    .await;
    let (status, retried) = json_of(app.as_admin(
        Method::POST,
        &format!("/api/v1/notifications/dead-letters/{id}/retry"),
    ))
    .await;
    assert_eq!(status, 202, "{retried}");
    let sent = notification_until(&app, &id, |n| n["status"] == "sent").await;
    assert_eq!(sent["attempts"], 1, "attempts start again: {sent}");
    // It announced both outcomes and the retry between them, through its outbox.
    let announced: Vec<(String, Value)> = ServiceDb::open(&app, "notifications")
        .await
        .outbox()
        .await
        .into_iter()
        .filter(|(_, event)| event["data"]["id"] == id.as_str())
        .collect();
    let topics: Vec<&str> = announced.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "notification.dead",
            "notification.retried",
            "notification.sent"
        ],
        "{announced:?}"
    );
    assert_eq!(announced[0].1["data"]["attempts"], 3, "{announced:?}");
    assert!(
        announced[0].1["data"]["last_error"].is_string(),
        "{announced:?}"
    );
    assert_eq!(
        announced[2].1["data"]["to"], "ops@example.com",
        "{announced:?}"
    );
    let to_ops = mails_to(&sink, "ops@example.com");
    assert_eq!(to_ops.len(), 1, "{to_ops:?}");
    assert_eq!(
        to_ops[0].header("Message-ID"),
        Some(format!("<{id}@example.com>"))
    );
}

#[tokio::test]
async fn an_sms_goes_to_the_twilio_compatible_api_with_its_form_and_credentials() {
    let sink = SmtpSink::start().await.unwrap();
    let api = Receiver::start().await.unwrap();
    let sid = "AC00000000000000000000000000000001";
    let token = "sms-auth-token-for-the-tests";
    let app = spawn(
        &sink,
        json!({"sms": {"base_url": api.url(""), "account_sid": sid,
                        "auth_token": token, "from": "+15005550006"}}),
    )
    .await;
    let (status, queued) = json_of(
        app.as_admin(Method::POST, "/api/v1/notifications/send")
            .json(&json!({
                "channel": "sms", "to": "+14155550123", "body": "Your code is 4321 & valid 5 min",
            })),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    let id = queued["id"].as_str().unwrap();
    notification_until(&app, id, |n| n["status"] == "sent").await;

    let requests = api.received();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(
        request.uri.path(),
        format!("/2010-04-01/Accounts/{sid}/Messages.json")
    );
    assert_eq!(
        request.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{sid}:{token}"));
    assert_eq!(request.headers["authorization"], format!("Basic {basic}"));
    assert_eq!(request.headers["idempotency-key"], id);
    let form: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&request.body).into_owned().collect();
    assert_eq!(form["To"], "+14155550123");
    assert_eq!(form["From"], "+15005550006");
    assert_eq!(form["Body"], "Your code is 4321 & valid 5 min");
}

#[tokio::test]
async fn a_push_is_encrypted_for_its_subscription_and_a_gone_subscription_is_removed() {
    let sink = SmtpSink::start().await.unwrap();
    let push_service = Receiver::start().await.unwrap();
    let app = spawn(
        &sink,
        json!({"push": {"vapid_private_key": testkit::push::vapid_private_key(),
                         "subject": "mailto:ops@example.com"}}),
    )
    .await;
    let browser = PushSubscriber::new();
    let endpoint = push_service.url("/push/alice-device-1");
    let (status, subscription) = json_of(
        app.as_user(Method::POST, "/api/v1/notifications/subscriptions", ALICE)
            .json(&json!({"endpoint": endpoint,
                          "keys": {"p256dh": browser.p256dh, "auth": browser.auth_base64}})),
    )
    .await;
    assert_eq!(status, 201, "{subscription}");
    let push = json!({"channel": "push", "user_id": app.user_id(ALICE),
                      "body": "{\"title\":\"Invoice paid\",\"body\":\"€12.00 received\"}"});
    let (status, queued) = json_of(
        app.as_admin(Method::POST, "/api/v1/notifications/send")
            .json(&push),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    notification_until(&app, queued["id"].as_str().unwrap(), |n| {
        n["status"] == "sent"
    })
    .await;
    let requests = push_service.received();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].uri.path(), "/push/alice-device-1");
    assert_eq!(requests[0].headers["content-encoding"], "aes128gcm");
    assert!(requests[0].headers["authorization"]
        .to_str()
        .unwrap()
        .starts_with("vapid t="));
    let plaintext = browser.decrypt(&requests[0].body).unwrap();
    assert_eq!(
        String::from_utf8(plaintext).unwrap(),
        "{\"title\":\"Invoice paid\",\"body\":\"€12.00 received\"}"
    );

    // The push service says the subscription is gone: it is removed, so
    // the next push to Alice has nowhere to go (422 on user_id).
    push_service.answer(&[410]);
    let (_, queued) = json_of(
        app.as_admin(Method::POST, "/api/v1/notifications/send")
            .json(&push),
    )
    .await;
    let gone = notification_until(&app, queued["id"].as_str().unwrap(), |n| {
        !matches!(n["status"].as_str(), Some("queued" | "sending"))
    })
    .await;
    assert_eq!(
        gone["status"], "dead",
        "a gone subscription is final: {gone}"
    );
    let refused = app
        .as_admin(Method::POST, "/api/v1/notifications/send")
        .json(&push)
        .send()
        .await
        .unwrap();
    let body = common::expect_error(refused, 422, "VALIDATION_ERROR").await;
    assert!(body.to_string().contains("user_id"), "{body}");
}

#[tokio::test]
async fn ten_thousand_recipients_in_one_call_pass_the_servers_body_limit_only_for_send_bulk() {
    let sink = SmtpSink::start().await.unwrap();
    let app = spawn(&sink, json!({})).await;
    let note = "n".repeat(100);
    let recipients: Vec<Value> = (0..10_000)
        .map(|i| json!({"to": format!("reader{i}@example.com"), "data": {"name": format!("Reader {i}"), "note": note}}))
        .collect();
    let body = json!({"channel": "email", "template": "welcome",
                      "data": {"email": "news@example.com"}, "recipients": recipients});
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(bytes.len() > 1024 * 1024, "{} bytes", bytes.len());
    let (status, accepted) = json_of(
        app.as_admin(Method::POST, "/api/v1/notifications/send-bulk")
            .header("content-type", "application/json")
            .body(bytes.clone()),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["accepted"], 10_000, "{accepted}");
    let (_, batch) = json_of(app.as_admin(
        Method::GET,
        &format!(
            "/api/v1/notifications/batches/{}",
            accepted["batch_id"].as_str().unwrap()
        ),
    ))
    .await;
    assert_eq!(batch["total"], 10_000, "{batch}");

    // The other routes keep the server's 1 MiB.
    let refused = app
        .as_admin(Method::POST, "/api/v1/notifications/send")
        .header("content-type", "application/json")
        .body(bytes)
        .send()
        .await
        .unwrap();
    common::expect_error(refused, 413, "PAYLOAD_TOO_LARGE").await;
}

#[tokio::test]
async fn a_bulk_to_users_is_addressed_from_what_the_service_knows_of_them() {
    let sink = SmtpSink::start().await.unwrap();
    let app = spawn(&sink, json!({})).await;
    sink.wait_for(2, Duration::from_secs(15)).await;
    opt_out_of_email(&app, BOB).await;
    let bulk = |recipients: Value| {
        app.as_admin(Method::POST, "/api/v1/notifications/send-bulk")
            .json(&json!({"channel": "email", "template": "welcome",
                          "data": {"name": "you", "email": "news@example.com"},
                          "recipients": recipients}))
    };
    // A user the service never heard of refuses the whole call, by index.
    let stranger = uuid::Uuid::now_v7().to_string();
    let refused = bulk(json!([{"user_id": app.user_id(ALICE)}, {"user_id": stranger}]))
        .send()
        .await
        .unwrap();
    let body = common::expect_error(refused, 422, "VALIDATION_ERROR").await;
    assert!(body.to_string().contains("recipients[1].user_id"), "{body}");
    // Alice gets hers at her address; Bob, opted out, is skipped.
    let (status, accepted) = json_of(bulk(json!([
        {"user_id": app.user_id(ALICE)}, {"user_id": app.user_id(BOB)}
    ])))
    .await;
    assert_eq!(status, 202, "{accepted}");
    let batch = format!(
        "/api/v1/notifications/batches/{}",
        accepted["batch_id"].as_str().unwrap()
    );
    until("the batch is settled", || async {
        let (_, progress) = json_of(app.as_admin(Method::GET, &batch)).await;
        progress["sent"] == 1 && progress["skipped"] == 1
    })
    .await;
    let news: Vec<_> = sink
        .mails()
        .into_iter()
        .filter(|m| m.header("Subject").as_deref() == Some("Welcome, you"))
        .collect();
    assert_eq!(news.len(), 1, "{news:?}");
    assert_eq!(news[0].to, [ALICE]);
}
