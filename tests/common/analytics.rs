//! What the analytics tests share: an app whose jobs tick every two
//! seconds, scripted events put through the real outbox and bus (the
//! fault-injection admin route `POST /admin/faults/events/{producer}`), and
//! polling until the figures settle.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::TestApp;

/// Every job every two seconds, and the shortest retention the settings take.
pub fn fast_jobs(config: &mut stageworks::config::Config) {
    let section = config.service_mut("analytics");
    for job in ["hourly_close", "daily_rollup", "purge"] {
        section.set(job, "*/2 * * * * *").unwrap();
    }
    section.set("hourly_retention", "2d").unwrap();
}

/// A scripted event: its id, topic, time and payload, published by `producer`.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub producer: &'static str,
    pub id: Uuid,
    pub topic: &'static str,
    pub at: i64,
    pub user: Uuid,
    pub data: Value,
}

pub fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

impl Scripted {
    pub fn new(topic: &'static str, at: i64, user: Uuid, data: Value) -> Self {
        let producer = match topic.split('.').next() {
            Some("user") => "auth",
            Some("order") => "orders",
            _ => "billing",
        };
        Self {
            producer,
            id: Uuid::now_v7(),
            topic,
            at,
            user,
            data,
        }
    }

    /// The same event (same id) through another producer's outbox: an
    /// outbox holds an event id once, so a redelivery is scripted this way.
    pub fn again(&self) -> Self {
        let producer = if self.producer == "auth" {
            "orders"
        } else {
            "auth"
        };
        Self {
            producer,
            ..self.clone()
        }
    }

    pub fn json(&self) -> String {
        json!({
            "id": self.id,
            "topic": self.topic,
            "occurred_at": rfc3339(self.at),
            "request_id": "analytics-test",
            "actor_id": self.user,
            "data": self.data,
        })
        .to_string()
    }
}

/// Publishes `event` through its producer's outbox.
pub async fn inject(app: &TestApp, event: &Scripted) {
    let response = app
        .admin_request(
            Method::POST,
            &format!("/admin/faults/events/{}", event.producer),
        )
        .query(&[("event", event.json())])
        .send()
        .await
        .expect("admin answers");
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
}

/// Polls `path` as the admin until `ready` holds for its JSON.
pub async fn admin_eventually(app: &TestApp, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = app
            .as_admin(Method::GET, path)
            .send()
            .await
            .expect("request sent");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 200 && ready(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out polling {path}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The job named `name` in `/jobs`.
pub fn job<'a>(jobs: &'a Value, name: &str) -> &'a Value {
    jobs.as_array()
        .and_then(|all| all.iter().find(|j| j["name"] == name))
        .unwrap_or_else(|| panic!("no job {name} in {jobs}"))
}

/// A metric's value in the Prometheus text (0 when absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
