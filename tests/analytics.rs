//! The analytics service over real HTTP, on both backends: a scripted
//! history of events (chosen ids and `occurred_at` across several hours and
//! days, put through the real outbox, relay and bus) gives `/stats` and
//! `/timeseries` equal to what this file counts from the same script; a
//! redelivered event changes nothing; a late event recomputes its closed
//! hour and day; real traffic (register, login, order, pay) is counted; the
//! scheduled jobs run, show in `/jobs` and the metrics, and a job made to
//! fail or panic is retried at the next tick; bad parameters are 422s naming
//! their field and a user asking for another's figures is a 403.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::analytics::{admin_eventually, fast_jobs, inject, job, metric, rfc3339, Scripted};
use common::{expect_error, json_of, spawn_app_with, TestApp, ALICE};
use reqwest::Method;
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

async fn spawn() -> TestApp {
    spawn_app_with(fast_jobs).await
}

fn midnight_today() -> i64 {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    now - now.rem_euclid(DAY)
}

/// The script: four users over three days, one of them (`old`) five days
/// back, before the hours kept (two days).
struct History {
    events: Vec<Scripted>,
    old_day: i64,
    first_day: i64,
    end: i64,
}

fn history() -> History {
    let end = midnight_today();
    let (d0, d1, d2) = (end - 5 * DAY, end - 2 * DAY, end - DAY);
    let (u1, u2, u3, old) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let user = |id: Uuid| json!({"id": id, "email": format!("{id}@example.com"), "name": "x", "role": "user", "created_at": "2026-01-01T00:00:00Z"});
    let login = |id: Uuid| json!({"user_id": id, "session_id": Uuid::now_v7(), "ip": null, "user_agent": null});
    let order = |id: Uuid, amount: i64, currency: &str| json!({"id": Uuid::now_v7(), "user_id": id, "amount": amount, "currency": currency, "status": "created", "created_at": "2026-01-01T00:00:00Z"});
    let invoice = |id: Uuid, amount: i64, currency: &str| json!({"id": Uuid::now_v7(), "number": "INV-000001", "order_id": Uuid::now_v7(), "user_id": id, "amount": amount, "currency": currency, "status": "open", "created_at": "2026-01-01T00:00:00Z"});
    let m = |h: i64, min: i64| h * HOUR + min * 60;
    let events = vec![
        Scripted::new("user.registered", d0 + m(10, 0), old, user(old)),
        Scripted::new("user.logged_in", d0 + m(10, 5), old, login(old)),
        Scripted::new("user.registered", d1 + m(1, 10), u1, user(u1)),
        Scripted::new("user.registered", d1 + m(1, 50), u2, user(u2)),
        Scripted::new("user.logged_in", d1 + m(1, 20), u1, login(u1)),
        Scripted::new("user.logged_in", d1 + m(3, 5), u1, login(u1)),
        Scripted::new("order.created", d1 + m(3, 10), u1, order(u1, 1000, "USD")),
        Scripted::new(
            "invoice.created",
            d1 + m(3, 11),
            u1,
            invoice(u1, 1000, "USD"),
        ),
        Scripted::new("invoice.paid", d1 + m(4, 0), u1, invoice(u1, 1000, "USD")),
        Scripted::new("user.registered", d2 + m(5, 0), u3, user(u3)),
        Scripted::new("user.logged_in", d2 + m(5, 30), u2, login(u2)),
        Scripted::new("user.logged_in", d2 + m(5, 40), u3, login(u3)),
        Scripted::new("order.created", d2 + m(6, 0), u2, order(u2, 2500, "EUR")),
        Scripted::new(
            "invoice.created",
            d2 + m(6, 1),
            u2,
            invoice(u2, 2500, "EUR"),
        ),
        Scripted::new("order.cancelled", d2 + m(7, 0), u2, order(u2, 2500, "EUR")),
        Scripted::new("invoice.voided", d2 + m(7, 1), u2, invoice(u2, 2500, "EUR")),
        Scripted::new("invoice.paid", d2 + m(23, 59), u3, invoice(u3, 700, "USD")),
    ];
    History {
        events,
        old_day: d0,
        first_day: d1,
        end,
    }
}

/// What this file expects an event to count, independently of the service.
fn counted(event: &Scripted) -> Vec<(String, i64)> {
    let money = |kind: &str| {
        (
            format!(
                "revenue.{kind}.{}",
                event.data["currency"].as_str().unwrap()
            ),
            event.data["amount"].as_i64().unwrap(),
        )
    };
    let one = |m: &str| (m.to_owned(), 1);
    match event.topic {
        "user.registered" => vec![one("users.registered")],
        "user.logged_in" => vec![one("logins")],
        "order.created" => vec![one("orders.created")],
        "order.cancelled" => vec![one("orders.cancelled")],
        "invoice.created" => vec![one("invoices.created"), money("invoiced")],
        "invoice.paid" => vec![one("invoices.paid"), one("orders.paid"), money("paid")],
        "invoice.voided" => vec![one("invoices.voided")],
        other => panic!("unscripted topic {other}"),
    }
}

/// The expected value of `metric` in the bucket of `size` starting at `t`.
fn expected(events: &[Scripted], metric: &str, t: i64, size: i64) -> i64 {
    let inside: Vec<&Scripted> = events
        .iter()
        .filter(|e| e.at >= t && e.at < t + size)
        .collect();
    if metric == "users.active" {
        return inside.iter().map(|e| e.user).collect::<BTreeSet<_>>().len() as i64;
    }
    inside
        .iter()
        .flat_map(|e| counted(e))
        .filter(|(m, _)| m == metric)
        .map(|(_, n)| n)
        .sum()
}

/// The expected `/stats` over `[from, to)`, when every event there is countable by hour.
fn expected_stats(events: &[Scripted], from: i64, to: i64) -> Value {
    let inside: Vec<&Scripted> = events
        .iter()
        .filter(|e| e.at >= from && e.at < to)
        .collect();
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for (m, n) in inside.iter().flat_map(|e| counted(e)) {
        *sums.entry(m).or_default() += n;
    }
    let get = |m: &str| sums.get(m).copied().unwrap_or(0);
    let currencies: BTreeSet<&str> = sums
        .keys()
        .filter_map(|m| {
            m.rsplit_once('.')
                .filter(|_| m.starts_with("revenue."))
                .map(|(_, c)| c)
        })
        .collect();
    json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "users": {
            "registered": get("users.registered"),
            "active": inside.iter().map(|e| e.user).collect::<BTreeSet<_>>().len(),
        },
        "logins": get("logins"),
        "orders": {"created": get("orders.created"), "cancelled": get("orders.cancelled"), "paid": get("orders.paid")},
        "invoices": {"created": get("invoices.created"), "paid": get("invoices.paid"), "voided": get("invoices.voided")},
        "revenue": currencies.iter().map(|c| json!({
            "currency": c,
            "invoiced": get(&format!("revenue.invoiced.{c}")),
            "paid": get(&format!("revenue.paid.{c}")),
        })).collect::<Vec<_>>(),
    })
}

const METRICS: &[&str] = &[
    "users.registered",
    "users.active",
    "logins",
    "orders.created",
    "orders.cancelled",
    "orders.paid",
    "invoices.created",
    "invoices.paid",
    "invoices.voided",
    "revenue.invoiced.USD",
    "revenue.paid.USD",
    "revenue.invoiced.EUR",
];

fn series_path(metric: &str, interval: &str, from: i64, to: i64) -> String {
    format!(
        "/api/v1/analytics/timeseries?metric={metric}&interval={interval}&from={}&to={}",
        rfc3339(from),
        rfc3339(to)
    )
}

fn expected_points(events: &[Scripted], metric: &str, size: i64, from: i64, to: i64) -> Value {
    let starts = (from..to).step_by(size as usize);
    json!(starts
        .map(|t| json!({"t": rfc3339(t), "value": expected(events, metric, t, size)}))
        .collect::<Vec<_>>())
}

/// Waits until every hourly and daily series of the kept days matches the script.
async fn series_match(app: &TestApp, events: &[Scripted], history: &History) {
    for metric in METRICS {
        for (interval, size) in [("hour", HOUR), ("day", DAY)] {
            let want = expected_points(events, metric, size, history.first_day, history.end);
            admin_eventually(
                app,
                &series_path(metric, interval, history.first_day, history.end),
                |body| {
                    body["points"] == want
                        && body["interval"] == interval
                        && body["metric"] == *metric
                },
            )
            .await;
        }
    }
}

#[tokio::test]
async fn a_scripted_history_gives_the_figures_counted_from_it_once_each() {
    let app = spawn().await;
    let history = history();
    let mut events = history.events.clone();
    for event in &events {
        inject(&app, event).await;
    }
    // The kept days, hour by hour and day by day.
    series_match(&app, &events, &history).await;
    // The whole script in /stats: the old day is read from its day, the rest from hours.
    let stats_path = format!(
        "/api/v1/analytics/stats?from={}&to={}",
        rfc3339(history.old_day),
        rfc3339(history.end)
    );
    let want = expected_stats(&events, history.old_day, history.end);
    admin_eventually(&app, &stats_path, |body| *body == want).await;
    // A range that starts and ends inside days, in hours.
    let (from, to) = (
        history.first_day + 2 * HOUR,
        history.first_day + DAY + 6 * HOUR,
    );
    let inner = format!(
        "/api/v1/analytics/stats?from={}&to={}",
        rfc3339(from),
        rfc3339(to)
    );
    let (status, body) = json_of(app.as_admin(Method::GET, &inner)).await;
    assert_eq!(status, 200);
    assert_eq!(body, expected_stats(&events, from, to));

    // Every event delivered again (same ids): once the bus has delivered
    // them all, nothing has changed.
    let delivered = || async {
        app.events_subscriber("analytics").await["delivered"]
            .as_u64()
            .unwrap()
    };
    let before = delivered().await;
    for event in &events {
        inject(&app, &event.again()).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while delivered().await < before + events.len() as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the redeliveries were not delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, again) = json_of(app.as_admin(Method::GET, &stats_path)).await;
    assert_eq!(again, want, "a redelivery changed the figures");
    series_match(&app, &events, &history).await;

    // The purge (every 2 s, two days kept) drops the old day's hours; its day stays.
    let old_hours = series_path("logins", "hour", history.old_day, history.old_day + DAY);
    admin_eventually(&app, &old_hours, |body| {
        body["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["value"] == 0)
    })
    .await;
    let old_day = series_path("logins", "day", history.old_day, history.old_day + DAY);
    let (_, body) = json_of(app.as_admin(Method::GET, &old_day)).await;
    assert_eq!(
        body["points"],
        json!([{"t": rfc3339(history.old_day), "value": 1}])
    );

    // Once the jobs closed the past hours and days, a late event by a new
    // user re-opens its hour and day: their distinct users are recomputed.
    let applied = rfc3339(OffsetDateTime::now_utc().unix_timestamp());
    admin_eventually(&app, "/api/v1/analytics/jobs", |jobs| {
        ["hourly_close", "daily_rollup"].iter().all(|name| {
            let job = job(jobs, name);
            job["last_error"].is_null()
                && job["last_run_at"]
                    .as_str()
                    .is_some_and(|at| at > applied.as_str())
        })
    })
    .await;
    let late_user = Uuid::now_v7();
    let late = Scripted::new(
        "user.logged_in",
        history.first_day + HOUR + 30 * 60,
        late_user,
        json!({"user_id": late_user, "session_id": Uuid::now_v7(), "ip": null, "user_agent": null}),
    );
    inject(&app, &late).await;
    events.push(late);
    series_match(&app, &events, &history).await;
}

#[tokio::test]
async fn real_traffic_is_counted_and_each_user_sees_only_their_own_figures() {
    let app = spawn().await;
    let carol = format!("carol-{}@example.com", Uuid::now_v7());
    let signed = app.sign_in(&carol).await;
    let as_carol = |method: Method, path: &str| {
        app.client
            .request(method, app.url(path))
            .bearer_auth(&signed.access_token)
    };
    let order: Value = as_carol(Method::POST, "/api/v1/orders")
        .json(&json!({"amount": 1234, "currency": "USD"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order_id = order["id"].as_str().expect("order id").to_owned();
    let invoice = loop {
        let (status, body) = json_of(as_carol(
            Method::GET,
            &format!("/api/v1/invoices/by-order/{order_id}"),
        ))
        .await;
        if status == 200 {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let paid = as_carol(
        Method::POST,
        &format!("/api/v1/invoices/{}/pay", invoice["id"].as_str().unwrap()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(paid.status(), 200);

    // Alice, Bob (the test app's users) and Carol registered and signed in.
    admin_eventually(&app, "/api/v1/analytics/stats", |stats| {
        stats["users"] == json!({"registered": 3, "active": 3})
            && stats["logins"] == 3
            && stats["orders"] == json!({"created": 1, "cancelled": 0, "paid": 1})
            && stats["invoices"] == json!({"created": 1, "paid": 1, "voided": 0})
            && stats["revenue"] == json!([{"currency": "USD", "invoiced": 1234, "paid": 1234}])
    })
    .await;
    let mine = format!("/api/v1/analytics/users/{}", signed.id);
    let figures = loop {
        let (status, body) = json_of(as_carol(Method::GET, &mine)).await;
        assert_eq!(status, 200, "{body}");
        if body["invoices_paid"] == 1 {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(figures["user_id"], signed.id.as_str());
    assert_eq!(figures["logins"], 1);
    assert_eq!(figures["orders"], 1);
    assert_eq!(
        figures["amount_paid"],
        json!([{"currency": "USD", "amount": 1234}])
    );
    assert_eq!(figures["active_days"], 1);
    assert!(figures["last_active_at"].is_string(), "{figures}");
    let (status, by_admin) = json_of(app.as_admin(Method::GET, &mine)).await;
    assert_eq!(status, 200);
    assert_eq!(by_admin, figures);

    // Another user's figures: 403, also with a malformed id (authorisation first).
    for path in [mine.as_str(), "/api/v1/analytics/users/not-a-uuid"] {
        let response = app.as_user(Method::GET, path, ALICE).send().await.unwrap();
        expect_error(response, 403, "FORBIDDEN").await;
    }
    // The admin's routes, for a user: 403 before the parameters are read.
    for path in [
        "/api/v1/analytics/stats",
        "/api/v1/analytics/stats?from=yesterday",
        "/api/v1/analytics/timeseries?metric=nope",
        "/api/v1/analytics/jobs",
    ] {
        let response = app.as_user(Method::GET, path, ALICE).send().await.unwrap();
        expect_error(response, 403, "FORBIDDEN").await;
    }
    let anonymous = app
        .client
        .get(app.url("/api/v1/analytics/stats"))
        .send()
        .await
        .unwrap();
    expect_error(anonymous, 401, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn bad_ranges_and_unknown_metrics_are_422s_naming_the_field() {
    let app = spawn().await;
    let cases = [
        ("/api/v1/analytics/stats?from=yesterday", "from"),
        ("/api/v1/analytics/stats?to=2026-13-01T00:00:00Z", "to"),
        ("/api/v1/analytics/stats?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("/api/v1/analytics/stats?from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("/api/v1/analytics/timeseries?metric=users.deleted", "metric"),
        ("/api/v1/analytics/timeseries?metric=revenue.paid.dollars", "metric"),
        ("/api/v1/analytics/timeseries", "metric"),
        ("/api/v1/analytics/timeseries?metric=logins&interval=week", "interval"),
        (
            "/api/v1/analytics/timeseries?metric=logins&interval=hour&from=2020-01-01T00:00:00Z&to=2021-03-01T00:00:00Z",
            "from",
        ),
    ];
    for (path, field) in cases {
        let response = app.as_admin(Method::GET, path).send().await.unwrap();
        let body = expect_error(response, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["errors"][0]["field"], field, "{path}: {body}");
    }
    // Exactly 10 000 hourly points is allowed; the default range is the last 30 days.
    let (status, body) = json_of(app.as_admin(
        Method::GET,
        "/api/v1/analytics/timeseries?metric=logins&interval=hour&from=2020-01-01T00:00:00Z&to=2021-02-20T16:00:00Z",
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["points"].as_array().unwrap().len(), 10_000);
    let (status, body) =
        json_of(app.as_admin(Method::GET, "/api/v1/analytics/timeseries?metric=logins")).await;
    assert_eq!(status, 200);
    let points = body["points"].as_array().unwrap();
    assert!((30..=31).contains(&points.len()), "{body}");
    assert!(
        points[0]["t"].as_str().unwrap().ends_with("T00:00:00Z"),
        "{body}"
    );
}

#[tokio::test]
async fn jobs_run_on_their_schedule_and_a_failing_or_panicking_job_is_retried() {
    let app = spawn().await;
    let metrics = app.metrics().await;
    for name in ["hourly_close", "daily_rollup", "purge"] {
        for outcome in ["ok", "error"] {
            let series =
                format!("analytics_job_runs_total{{job=\"{name}\",outcome=\"{outcome}\"}}");
            assert!(metrics.contains(&series), "metrics lack {series}");
        }
    }
    let jobs = admin_eventually(&app, "/api/v1/analytics/jobs", |jobs| {
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["last_run_at"].is_string())
    })
    .await;
    for name in ["hourly_close", "daily_rollup", "purge"] {
        let job = job(&jobs, name);
        assert_eq!(job["schedule"], "*/2 * * * * *");
        assert!(job["next_run_at"].is_string(), "{job}");
        assert!(job["last_duration_ms"].is_number(), "{job}");
    }
    assert!(app
        .metrics()
        .await
        .contains("analytics_job_duration_seconds"));

    // Made to fail: the failure shows in /jobs and the metrics; unmarked,
    // the next tick runs it again.
    let errors = |text: &str| {
        metric(
            text,
            "analytics_job_runs_total{job=\"daily_rollup\",outcome=\"error\"}",
        )
    };
    let before = errors(&app.metrics().await);
    mark(&app, Method::PUT, "daily_rollup", "error").await;
    admin_eventually(&app, "/api/v1/analytics/jobs", |jobs| {
        job(jobs, "daily_rollup")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("injected"))
    })
    .await;
    assert!(errors(&app.metrics().await) > before);
    mark(&app, Method::DELETE, "daily_rollup", "error").await;
    admin_eventually(&app, "/api/v1/analytics/jobs", |jobs| {
        job(jobs, "daily_rollup")["last_error"].is_null()
    })
    .await;

    // Made to panic: its supervisor restarts the jobs' worker, and the job runs again.
    mark(&app, Method::PUT, "hourly_close", "panic").await;
    admin_eventually(&app, "/api/v1/analytics/jobs", |jobs| {
        job(jobs, "hourly_close")["last_error"].is_string()
    })
    .await;
    mark(&app, Method::DELETE, "hourly_close", "panic").await;
    admin_eventually(&app, "/api/v1/analytics/jobs", |jobs| {
        job(jobs, "hourly_close")["last_error"].is_null()
    })
    .await;
    let node = app.admin_node("analytics-jobs").await;
    assert!(node["restarts"].as_u64().unwrap() >= 1, "{node}");
    // The service's own workers were not touched.
    assert_eq!(app.admin_node("analytics").await["restarts"], 0);
}

async fn mark(app: &TestApp, method: Method, job: &str, fault: &str) {
    let response = app
        .admin_request(method, &format!("/admin/faults/jobs/{job}/{fault}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}
