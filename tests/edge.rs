//! The edge: security headers on every answer, CORS (nothing allowed by
//! default, preflights answered for configured origins), and rate limits
//! (GCRA per IP and per user, 429 with retry-after and the quota headers).

mod common;

use std::time::Duration;

use common::{expect_error, spawn_app, spawn_app_with, ALICE, BOB};
use config_helpers::*;
use reqwest::Method;
use serde_json::json;

mod config_helpers {
    use stageworks::config::{Config, LimitConfig};
    use std::time::Duration;

    pub fn limit(config: &mut Config, requests: u32, per: Duration) {
        config.rate_limit.enabled = true;
        config.rate_limit.api = LimitConfig { requests, per };
        // Keep the per-user limit out of the way unless a test sets it.
        config.rate_limit.user = LimitConfig {
            requests: 1000,
            per: Duration::from_secs(60),
        };
    }
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_no_server_banner() {
    let app = spawn_app().await;
    for response in [
        app.client.get(app.url("/live")).send().await.unwrap(),
        app.client.get(app.url("/nowhere")).send().await.unwrap(),
        app.create_order(ALICE, json!({"amount": 1})).await,
    ] {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        assert!(headers.get("server").is_none(), "no server banner");
    }
}

fn preflight(
    app: &common::TestApp,
    path: &str,
    origin: &str,
    method: &str,
) -> reqwest::RequestBuilder {
    app.client
        .request(Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
}

#[tokio::test]
async fn cors_allows_nothing_by_default() {
    let app = spawn_app().await;
    let refused = preflight(&app, "/api/v1/orders", "https://app.example.com", "POST")
        .send()
        .await
        .unwrap();
    expect_error(refused, 403, "FORBIDDEN").await;
    let actual = app
        .as_user(Method::GET, "/api/v1/orders", ALICE)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        actual.status(),
        200,
        "CORS is not authorization: the request itself is served"
    );
    assert!(actual
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn cors_preflights_are_answered_for_configured_origins() {
    let app = spawn_app_with(|c| {
        c.cors.allowed_origins = vec!["https://app.example.com".into()];
        c.cors.allow_credentials = true;
    })
    .await;
    let allowed = preflight(&app, "/api/v1/orders", "https://app.example.com", "POST")
        .header(
            "access-control-request-headers",
            "Content-Type, Authorization, Idempotency-Key",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-max-age"], "600");

    let other_origin = preflight(&app, "/api/v1/orders", "https://evil.example.com", "POST")
        .send()
        .await
        .unwrap();
    let body = expect_error(other_origin, 403, "FORBIDDEN").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("origin"));
    let bad_header = preflight(&app, "/api/v1/orders", "https://app.example.com", "POST")
        .header("access-control-request-headers", "x-secret-sauce")
        .send()
        .await
        .unwrap();
    expect_error(bad_header, 403, "FORBIDDEN").await;
    let wrong_method = preflight(&app, "/api/v1/orders", "https://app.example.com", "DELETE")
        .send()
        .await
        .unwrap();
    expect_error(wrong_method, 403, "FORBIDDEN").await;
    let unknown_path = preflight(&app, "/api/v1/nothing", "https://app.example.com", "GET")
        .send()
        .await
        .unwrap();
    expect_error(unknown_path, 404, "NOT_FOUND").await;

    let actual = app.create_order(ALICE, json!({"amount": 1})).await;
    assert!(
        actual
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "no origin, no grant"
    );
    let actual = app
        .as_user(Method::GET, "/api/v1/orders", ALICE)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        actual.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(actual.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("x-request-id"));
    assert!(actual.headers()["vary"]
        .to_str()
        .unwrap()
        .contains("origin"));
}

#[tokio::test]
async fn the_api_limit_refuses_exactly_past_its_count_and_recovers() {
    let app = spawn_app_with(|c| limit(c, 5, Duration::from_secs(2))).await;
    for n in 1..=5u32 {
        let ok = app
            .as_user(Method::GET, "/api/v1/orders", ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "request {n} is within the limit");
        assert_eq!(ok.headers()["ratelimit-limit"], "5");
        assert_eq!(
            ok.headers()["ratelimit-remaining"],
            (5 - n).to_string().as_str()
        );
    }
    let refused = app
        .as_user(Method::GET, "/api/v1/orders", ALICE)
        .send()
        .await
        .unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1, "one request's worth: 2 s / 5, rounded up");
    assert_eq!(refused.headers()["ratelimit-remaining"], "0");
    assert!(refused.headers().contains_key("ratelimit-reset"));
    expect_error(refused, 429, "RATE_LIMITED").await;
    // Probes are never limited.
    assert_eq!(
        app.client
            .get(app.url("/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = app
        .as_user(Method::GET, "/api/v1/orders", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "recovered after retry-after");
}

#[tokio::test]
async fn forwarded_addresses_count_only_behind_trusted_proxies() {
    let spoofed = |app: &common::TestApp, client: &str| {
        app.as_user(Method::GET, "/api/v1/orders", ALICE)
            .header("x-forwarded-for", client.to_owned())
            .send()
    };
    // Off by default: x-forwarded-for is the client's to forge, so it changes nothing.
    let app = spawn_app_with(|c| limit(c, 2, Duration::from_secs(60))).await;
    assert_eq!(spoofed(&app, "1.1.1.1").await.unwrap().status(), 200);
    assert_eq!(spoofed(&app, "2.2.2.2").await.unwrap().status(), 200);
    assert_eq!(spoofed(&app, "3.3.3.3").await.unwrap().status(), 429);

    // Behind one trusted proxy, the address it appended is the client.
    let app = spawn_app_with(|c| {
        limit(c, 2, Duration::from_secs(60));
        c.rate_limit.trusted_proxy_hops = 1;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            spoofed(&app, "9.9.9.9, 1.1.1.1").await.unwrap().status(),
            200
        );
    }
    assert_eq!(
        spoofed(&app, "8.8.8.8, 1.1.1.1").await.unwrap().status(),
        429,
        "same client, other forged prefix"
    );
    assert_eq!(
        spoofed(&app, "2.2.2.2").await.unwrap().status(),
        200,
        "another client"
    );
}

#[tokio::test]
async fn each_user_has_a_limit_of_their_own() {
    let app = spawn_app_with(|c| {
        limit(c, 100, Duration::from_secs(60));
        c.rate_limit.user.requests = 2;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            app.as_user(Method::GET, "/api/v1/orders", ALICE)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let refused = app
        .as_user(Method::GET, "/api/v1/orders", ALICE)
        .send()
        .await
        .unwrap();
    expect_error(refused, 429, "RATE_LIMITED").await;
    let bob = app
        .as_user(Method::GET, "/api/v1/orders", BOB)
        .send()
        .await
        .unwrap();
    assert_eq!(bob.status(), 200, "Bob's quota is his own");
    assert_eq!(
        bob.headers()["ratelimit-remaining"],
        "1",
        "the tighter of his IP and user quotas"
    );
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_email_whatever_the_address() {
    let app = spawn_app_with(|c| {
        limit(c, 100, Duration::from_secs(60));
        c.rate_limit.auth.requests = 100;
        c.service_mut("auth")
            .set("email_limit", json!({"requests": 3, "per": "60s"}))
            .unwrap();
        c.rate_limit.trusted_proxy_hops = 1;
    })
    .await;
    // Alice signed in once when the app started; two more guesses from
    // other addresses use up her email's quota.
    let attempt = |email: &'static str, from: &'static str| {
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("x-forwarded-for", from)
            .json(&json!({"email": email, "password": "a wrong guess, long enough"}))
            .send()
    };
    assert_eq!(attempt(ALICE, "1.1.1.1").await.unwrap().status(), 401);
    assert_eq!(attempt(ALICE, "2.2.2.2").await.unwrap().status(), 401);
    let refused = attempt(ALICE, "3.3.3.3").await.unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    expect_error(refused, 429, "RATE_LIMITED").await;
    assert_eq!(
        attempt(BOB, "3.3.3.3").await.unwrap().status(),
        401,
        "Bob's email has its own quota"
    );
}
