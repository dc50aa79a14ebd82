//! The webhook provider: an HTTP POST of the rendered JSON body to the
//! notification's URL, signed so that the receiver can tell it came from us
//! and was not replayed. The signature follows Stripe's scheme, which
//! receivers often have code for already:
//!
//! `x-stageworks-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//!
//! The receiver recomputes the HMAC over the timestamp and the raw body, and
//! refuses a timestamp too far from its clock ([`verify_signature`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{
    body_prefix, check_common, classify_status, http_client, http_url, quote, request_failed,
    retry_after, Channel, Common, Delivery, Provider, Secret, SendError, DEFAULT_PER_SECOND,
    DEFAULT_TIMEOUT,
};
use crate::service::SettingProblem;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-stageworks-signature";

/// The shortest signing secret accepted: HMAC-SHA256 with a short key is
/// guessable offline from one signed request.
pub const MIN_SECRET_BYTES: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// `[services.notifications.webhook]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// The HMAC key of the signature header (required, at least 16 bytes);
    /// receivers verify with the same secret.
    pub secret: Secret,
    pub per_second: u32,
    pub required: bool,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            secret: Secret::default(),
            per_second: DEFAULT_PER_SECOND,
            required: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl WebhookSettings {
    pub fn common(&self) -> Common {
        Common {
            per_second: self.per_second,
            required: self.required,
            timeout: self.timeout,
        }
    }

    /// Checks the settings and builds the provider; problems name their keys
    /// (`webhook.secret`).
    pub fn build(&self) -> Result<WebhookProvider, Vec<SettingProblem>> {
        let mut problems = Vec::new();
        check_common(Channel::Webhook, self.common(), &mut problems);
        let secret = self.secret.expose();
        if secret.is_empty() {
            problems.push(SettingProblem::new(
                "webhook.secret",
                format!("required (at least {MIN_SECRET_BYTES} bytes; receivers verify the signature with it)"),
            ));
        } else if secret.len() < MIN_SECRET_BYTES {
            problems.push(SettingProblem::new(
                "webhook.secret",
                format!("too short: at least {MIN_SECRET_BYTES} bytes"),
            ));
        }
        let client = http_client(self.timeout)
            .map_err(|e| problems.push(SettingProblem::new("webhook", e)))
            .ok();
        match client {
            Some(client) if problems.is_empty() => Ok(WebhookProvider {
                client,
                secret: self.secret.clone(),
            }),
            _ => Err(problems),
        }
    }
}

/// Posts to webhook URLs.
pub struct WebhookProvider {
    client: reqwest::Client,
    secret: Secret,
}

impl WebhookProvider {
    async fn post(&self, delivery: &Delivery<'_>) -> Result<(), SendError> {
        let url = http_url(delivery.to).map_err(|e| SendError::Rejected(format!("to: {e}")))?;
        // The body is sent as JSON: one that is not would be refused by any
        // receiver that parses it, and trying again cannot fix it.
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(delivery.body) {
            return Err(SendError::Rejected(format!("body: not JSON ({e})")));
        }
        let timestamp = unix_now();
        let signature = sign(
            self.secret.expose().as_bytes(),
            timestamp,
            delivery.body.as_bytes(),
        );
        let id = delivery.id.to_string();
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", &id)
            .header(SIGNATURE_HEADER, signature)
            .body(delivery.body.to_owned())
            .send()
            .await
            .map_err(|e| request_failed("webhook", e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = retry_after(&response);
        let body = body_prefix(response, 1024).await;
        let mut text = format!("webhook answered {status}{}", after.shown);
        let quoted = quote(&body);
        if !quoted.is_empty() {
            text.push_str(": ");
            text.push_str(&quoted);
        }
        classify_status(status, text, after.wait)
    }
}

impl Provider for WebhookProvider {
    fn channel(&self) -> Channel {
        Channel::Webhook
    }

    fn send<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            self.post(delivery)
                .await
                .map_err(|e| e.redacted(&[self.secret.expose()]))
        })
    }

    fn ping(&self) -> Option<BoxFuture<'_, Result<(), String>>> {
        None
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length (a long one is hashed first), so this
    // cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header's value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Whether `header` (an `x-stageworks-signature` value) signs `body` with
/// `secret`, at a time within `tolerance_secs` of `now` (unix seconds). For
/// receivers and tests. Several `v1=` are accepted (any one matching will
/// do), so that a sender may sign with an old and a new secret while it
/// changes; the comparison is constant-time.
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => {
                if timestamp.is_some() {
                    return false;
                }
                match t.parse::<i64>() {
                    Ok(t) => timestamp = Some(t),
                    Err(_) => return false,
                }
            }
            Some(("v1", v1)) => signatures.push(v1),
            // Other schemes are ignored, as in Stripe's.
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    if now.abs_diff(timestamp) > tolerance_secs.unsigned_abs() {
        return false;
    }
    let expected = mac(secret, timestamp, body);
    signatures
        .into_iter()
        .any(|v1| hex::decode(v1).is_ok_and(|tag| expected.clone().verify_slice(&tag).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::super::test_http::{Reply, TestServer};
    use super::*;

    const SECRET: &str = "whsec-0123456789-abcdef-secret";

    fn provider() -> WebhookProvider {
        WebhookSettings {
            secret: SECRET.into(),
            timeout: Duration::from_secs(5),
            ..WebhookSettings::default()
        }
        .build()
        .unwrap()
    }

    fn delivery<'a>(to: &'a str, body: &'a str) -> Delivery<'a> {
        Delivery {
            id: uuid::Uuid::now_v7(),
            to,
            subject: Some("ignored"),
            body,
            html: None,
            push: None,
        }
    }

    #[tokio::test]
    async fn posts_the_body_signed_with_the_id() {
        let server = TestServer::start(|_| Reply::status(204)).await;
        let url = server.url("/hooks/orders?tenant=7");
        let body = r#"{"event":"invoice.paid","amount":1200}"#;
        let delivery = delivery(&url, body);
        let before = unix_now();
        provider().send(&delivery).await.unwrap();

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hooks/orders?tenant=7");
        assert_eq!(request.body, body.as_bytes());
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.header("idempotency-key"),
            Some(delivery.id.to_string().as_str())
        );
        let signature = request.header(SIGNATURE_HEADER).unwrap();
        let now = unix_now();
        let t: i64 = signature
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .and_then(|t| t.parse().ok())
            .unwrap();
        assert!((before..=now).contains(&t), "{signature}");

        // A receiver's checks: this body, this secret, now.
        assert!(verify_signature(
            SECRET.as_bytes(),
            signature,
            body.as_bytes(),
            now,
            300
        ));
        assert!(!verify_signature(
            SECRET.as_bytes(),
            signature,
            br#"{"event":"invoice.paid","amount":1}"#,
            now,
            300
        ));
        assert!(!verify_signature(
            b"another-secret-of-enough-bytes",
            signature,
            body.as_bytes(),
            now,
            300
        ));
        assert!(!verify_signature(
            SECRET.as_bytes(),
            signature,
            body.as_bytes(),
            t + 301,
            300
        ));
        assert!(!verify_signature(
            SECRET.as_bytes(),
            signature,
            body.as_bytes(),
            t - 301,
            300
        ));
    }

    #[test]
    fn signatures_match_an_independent_computation() {
        // Computed with Python's hmac module: HMAC-SHA256(b"Jefe",
        // b"1700000000.what do ya want for nothing?").
        assert_eq!(
            sign(b"Jefe", 1_700_000_000, b"what do ya want for nothing?"),
            "t=1700000000,v1=1cdd0650c8be1cb0974b1788d458b1e781206cfef59b85faafc582d2e182c57e"
        );
    }

    #[test]
    fn malformed_signature_headers_are_refused() {
        let body = b"{}";
        let good = sign(SECRET.as_bytes(), 1000, body);
        let v1 = good.split_once(",v1=").unwrap().1;
        assert!(verify_signature(SECRET.as_bytes(), &good, body, 1000, 0));
        // Rotation: an unknown signature beside the good one.
        let rotated = format!("t=1000,v1={},v1={v1}", "00".repeat(32));
        assert!(verify_signature(SECRET.as_bytes(), &rotated, body, 1000, 0));
        for bad in [
            String::new(),
            format!("v1={v1}"),
            "t=1000".to_owned(),
            format!("t=abc,v1={v1}"),
            format!("t=1000,t=1000,v1={v1}"),
            format!("t=1000,v1={}", &v1[..62]),
            format!("t=1000,v1=zz{}", &v1[2..]),
            format!("t=1000,v0={v1}"),
        ] {
            assert!(
                !verify_signature(SECRET.as_bytes(), &bad, body, 1000, 0),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn answers_are_classified_and_never_show_the_secret() {
        let server = TestServer::start(|request| match request.path.as_str() {
            "/gone" => Reply::status(410).body("no such hook"),
            "/busy" => Reply::status(503).header("retry-after", "30"),
            "/slow" => Reply::status(429),
            "/moved" => Reply::status(301).header("location", "http://elsewhere.invalid/"),
            // A receiver that echoes what it was sent (and a secret).
            _ => Reply::status(400).body(format!("bad signature, expected {SECRET}")),
        })
        .await;
        let provider = provider();
        let send = |path: &str| {
            let url = server.url(path);
            let provider = &provider;
            async move { provider.send(&delivery(&url, "{}")).await }
        };
        assert!(
            matches!(send("/gone").await, Err(SendError::Rejected(m)) if m.contains("410") && m.contains("no such hook"))
        );
        assert!(
            matches!(send("/busy").await, Err(SendError::Throttled { message, wait }) if message.contains("503") && message.contains("retry-after: 30") && wait == Duration::from_secs(30))
        );
        assert!(matches!(send("/slow").await, Err(SendError::Retryable(_))));
        assert!(matches!(send("/moved").await, Err(SendError::Rejected(m)) if m.contains("301")));
        let echoed = send("/echo").await.unwrap_err();
        assert!(matches!(echoed, SendError::Rejected(_)));
        assert!(!echoed.to_string().contains(SECRET), "{echoed}");
        assert_eq!(server.requests().len(), 5, "no redirect followed");

        // Nothing listening: retryable, and the URL (with its token) is not quoted.
        let closed = TestServer::closed_port_url("/hook/token-in-the-path");
        let err = provider.send(&delivery(&closed, "{}")).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(!err.to_string().contains("token-in-the-path"), "{err}");
    }

    #[tokio::test]
    async fn bad_recipients_and_bodies_are_rejected_without_sending() {
        let provider = provider();
        for (to, body) in [
            ("ftp://example.com/hook", "{}"),
            ("not a url", "{}"),
            ("https://example.com/hook", "not json"),
        ] {
            let err = provider.send(&delivery(to, body)).await.unwrap_err();
            assert!(matches!(err, SendError::Rejected(_)), "{to} {body}: {err}");
        }
    }

    #[test]
    fn the_secret_is_required_and_long_enough() {
        for (secret, message) in [("", "required"), ("short-secret", "too short")] {
            let problems = WebhookSettings {
                secret: secret.into(),
                ..WebhookSettings::default()
            }
            .build()
            .err()
            .unwrap();
            assert_eq!(problems.len(), 1);
            assert_eq!(problems[0].key, "webhook.secret");
            assert!(problems[0].message.starts_with(message), "{problems:?}");
            assert!(!problems[0].message.contains("short-secret"));
        }
    }
}
