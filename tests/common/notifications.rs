//! What the notifications tests share: following a notification until it
//! reaches a state.

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
