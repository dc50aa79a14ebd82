//! What the notifications tests share: following a notification until it
//! reaches a state, the dead letters, a user's opt-out.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{json_of, TestApp};

/// Polls the notification (as an admin) until `ready` holds (15 s at most).
pub async fn notification_until(app: &TestApp, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, found) =
            json_of(app.as_admin(reqwest::Method::GET, &format!("/api/v1/notifications/{id}")))
                .await;
        if ready(&found) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "notification {id} never got there: {found}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the notification is among the dead letters.
pub async fn is_dead_letter(app: &TestApp, id: &str) -> bool {
    let (_, letters) =
        json_of(app.as_admin(reqwest::Method::GET, "/api/v1/notifications/dead-letters")).await;
    letters["data"]
        .as_array()
        .is_some_and(|all| all.iter().any(|n| n["id"] == id))
}

/// `user` opts out of email (and keeps the other channels).
pub async fn opt_out_of_email(app: &TestApp, user: &str) {
    let (status, prefs) = json_of(
        app.as_user(
            reqwest::Method::PUT,
            "/api/v1/notifications/preferences",
            user,
        )
        .json(&serde_json::json!({"email": false, "sms": true, "push": true, "webhook": true})),
    )
    .await;
    assert_eq!(status, 200, "{prefs}");
}
