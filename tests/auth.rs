//! Authentication over real HTTP: sign-up and sign-in, the tokens the edge
//! must refuse, refresh rotation and reuse, logout and session revocation
//! taking effect at once, and owner-or-admin rules.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{expect_error, spawn_app, TestApp, ALICE, BOB, JWT_SECRET, PASSWORD};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Claims as the auth service issues them, for Alice, to be bent by each test.
fn claims(app: &TestApp) -> Value {
    json!({
        "sub": app.user_id(ALICE),
        "sid": uuid::Uuid::now_v7().to_string(),
        "role": "user",
        "iss": "stageworks",
        "aud": "stageworks-api",
        "iat": now(),
        "exp": now() + 600,
        "jti": uuid::Uuid::now_v7().to_string(),
    })
}

fn sign(claims: &Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

async fn orders_with(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/v1/orders"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_edge_refuses_every_forged_or_stale_token() {
    let app = spawn_app().await;
    let good = sign(&claims(&app), JWT_SECRET.as_bytes());
    assert_eq!(
        orders_with(&app, &good).await.status(),
        200,
        "a well-signed token passes"
    );

    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(&app))
    );
    let other_key = sign(
        &claims(&app),
        b"another-secret-that-is-long-enough-for-hs256",
    );
    let mut expired_claims = claims(&app);
    expired_claims["exp"] = json!(now() - 120);
    expired_claims["iat"] = json!(now() - 1000);
    let mut wrong_aud = claims(&app);
    wrong_aud["aud"] = json!("someone-else");
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let mut payload = claims(&app);
        payload["role"] = json!("admin");
        format!("{}.{}.{}", parts[0], b64(&payload), parts[2])
    };
    let hs512 = encode(
        &Header::new(Algorithm::HS512),
        &claims(&app),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    for (what, token) in [
        ("alg none", alg_none),
        ("another key", other_key),
        ("expired", sign(&expired_claims, JWT_SECRET.as_bytes())),
        ("wrong audience", sign(&wrong_aud, JWT_SECRET.as_bytes())),
        ("tampered payload", tampered),
        ("another algorithm", hs512),
        ("garbage", "not-a-jwt".to_owned()),
    ] {
        let refused = orders_with(&app, &token).await;
        assert_eq!(refused.status(), 401, "{what}");
        expect_error(refused, 401, "UNAUTHENTICATED").await;
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    let login = |email: &str, password: &str| {
        app.client
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    let wrong = login(ALICE, "not the right password").await.unwrap();
    let unknown = login("nobody@example.com", PASSWORD).await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(unknown.status(), 401);
    let (wrong, unknown) = (wrong.bytes().await.unwrap(), unknown.bytes().await.unwrap());
    assert_eq!(wrong, unknown, "byte-identical bodies");
}

#[tokio::test]
async fn register_validates_and_refuses_a_taken_email() {
    let app = spawn_app().await;
    let register = |body: Value| {
        app.client
            .post(app.url("/api/v1/auth/register"))
            .json(&body)
            .send()
    };
    let taken = register(json!({"email": ALICE, "password": PASSWORD, "name": "Again"}))
        .await
        .unwrap();
    expect_error(taken, 409, "CONFLICT").await;
    let short = register(json!({"email": "new@example.com", "password": "short", "name": "N"}))
        .await
        .unwrap();
    let body = expect_error(short, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["errors"][0]["field"], "password");
    let created =
        register(json!({"email": "New@Example.com", "password": PASSWORD, "name": "New"}))
            .await
            .unwrap();
    assert_eq!(created.status(), 201);
    let user: Value = created.json().await.unwrap();
    assert_eq!(user["email"], "new@example.com");
    assert_eq!(user["role"], "user");
    assert!(user.get("password").is_none() && !user.to_string().contains(PASSWORD));
}

#[tokio::test]
async fn refresh_rotates_and_reusing_a_spent_token_revokes_the_session() {
    let app = spawn_app().await;
    let alice = &app.users[ALICE];
    let refresh = |token: &str| {
        app.client
            .post(app.url("/api/v1/auth/refresh"))
            .json(&json!({"refresh_token": token}))
            .send()
    };
    let rotated = refresh(&alice.refresh_token).await.unwrap();
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let new_access = rotated["access_token"].as_str().unwrap();
    let new_refresh = rotated["refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, alice.refresh_token);
    assert_eq!(orders_with(&app, new_access).await.status(), 200);

    let reused = refresh(&alice.refresh_token).await.unwrap();
    expect_error(reused, 401, "UNAUTHENTICATED").await;
    // The whole session is gone: its newest tokens too, at once.
    expect_error(refresh(new_refresh).await.unwrap(), 401, "UNAUTHENTICATED").await;
    expect_error(orders_with(&app, new_access).await, 401, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn logout_ends_the_access_token_at_once() {
    let app = spawn_app().await;
    let me: Value = app.get_json("/api/v1/auth/me", ALICE).await;
    assert_eq!(me["email"], ALICE);
    let out = app
        .as_user(Method::POST, "/api/v1/auth/logout", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let after = app
        .as_user(Method::GET, "/api/v1/auth/me", ALICE)
        .send()
        .await
        .unwrap();
    expect_error(after, 401, "UNAUTHENTICATED").await;
    let valid: Value = app
        .client
        .post(app.url("/api/v1/auth/validate"))
        .json(&json!({"token": app.users[ALICE].access_token}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(valid["valid"], false);
    // Bob is untouched.
    assert_eq!(
        app.as_user(Method::GET, "/api/v1/auth/me", BOB)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_by_their_owner_only() {
    let app = spawn_app().await;
    let sessions = app.get_json("/api/v1/auth/sessions", ALICE).await;
    let list = sessions
        .as_array()
        .or_else(|| sessions["data"].as_array())
        .expect("a list of sessions");
    let mine = list
        .iter()
        .find(|s| s["current"] == true)
        .expect("the current session is marked");
    let id = mine["id"].as_str().unwrap();

    let by_bob = app
        .as_user(Method::DELETE, &format!("/api/v1/auth/sessions/{id}"), BOB)
        .send()
        .await
        .unwrap();
    expect_error(by_bob, 404, "NOT_FOUND").await;
    assert_eq!(
        app.as_user(Method::GET, "/api/v1/auth/me", ALICE)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let by_alice = app
        .as_user(
            Method::DELETE,
            &format!("/api/v1/auth/sessions/{id}"),
            ALICE,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(by_alice.status(), 204);
    let after = app
        .as_user(Method::GET, "/api/v1/auth/me", ALICE)
        .send()
        .await
        .unwrap();
    expect_error(after, 401, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn one_user_cannot_read_or_cancel_anothers_order() {
    let app = spawn_app().await;
    let order: Value = app
        .create_order(ALICE, json!({"amount": 10}))
        .await
        .json()
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap();
    let read = app
        .as_user(Method::GET, &format!("/api/v1/orders/{id}"), BOB)
        .send()
        .await
        .unwrap();
    expect_error(read, 404, "NOT_FOUND").await;
    let cancel = app
        .as_user(Method::POST, &format!("/api/v1/orders/{id}/cancel"), BOB)
        .send()
        .await
        .unwrap();
    expect_error(cancel, 404, "NOT_FOUND").await;
    let bobs = app.get_json("/api/v1/orders", BOB).await;
    assert_eq!(bobs["pagination"]["total"], 0);
}

#[tokio::test]
async fn a_token_is_refused_before_its_nbf_with_the_leeway_of_exp() {
    let app = spawn_app().await;
    let with_nbf = |nbf: i64| {
        let mut claims = claims(&app);
        claims["nbf"] = json!(nbf);
        sign(&claims, JWT_SECRET.as_bytes())
    };
    let early = orders_with(&app, &with_nbf(now() + 120)).await;
    expect_error(early, 401, "UNAUTHENTICATED").await;
    // 10 s early is within the 30 s leeway `exp` has too; a past nbf is fine.
    assert_eq!(orders_with(&app, &with_nbf(now() + 10)).await.status(), 200);
    assert_eq!(orders_with(&app, &with_nbf(now() - 60)).await.status(), 200);
    let validated: Value = app
        .client
        .post(app.url("/api/v1/auth/validate"))
        .json(&json!({"token": with_nbf(now() + 120)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        validated,
        json!({"valid": false, "reason": "not_yet_valid"})
    );
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let token = sign(&claims(&app), JWT_SECRET.as_bytes());
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let answer = app
            .client
            .get(app.url("/api/v1/orders"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{scheme}");
    }
    let basic = app
        .client
        .get(app.url("/api/v1/orders"))
        .header("authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    expect_error(basic, 401, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn two_authorization_headers_are_400_naming_the_header() {
    let app = spawn_app().await;
    let alice = sign(&claims(&app), JWT_SECRET.as_bytes());
    let mut bob_claims = claims(&app);
    bob_claims["sub"] = json!(app.user_id(BOB));
    let bob = sign(&bob_claims, JWT_SECRET.as_bytes());
    for (first, second) in [(&alice, &bob), (&alice, &alice)] {
        let answer = app
            .client
            .get(app.url("/api/v1/orders"))
            .header("authorization", format!("Bearer {first}"))
            .header("authorization", format!("Bearer {second}"))
            .send()
            .await
            .unwrap();
        let error = expect_error(answer, 400, "BAD_REQUEST").await;
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("authorization"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_key_given_twice_in_a_body_is_400_and_creates_no_account() {
    let app = spawn_app().await;
    let body = format!(
        r#"{{"email": "first@example.com", "password": "{PASSWORD}", "name": "Twice",
             "email": "second@example.com"}}"#
    );
    let refused = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let error = expect_error(refused, 400, "BAD_REQUEST").await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"email\""),
        "{error}"
    );
    for email in ["first@example.com", "second@example.com"] {
        let login = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        expect_error(login, 401, "UNAUTHENTICATED").await;
    }
}

#[tokio::test]
async fn names_with_control_or_bidi_override_characters_are_422() {
    let app = spawn_app().await;
    for (i, name) in ["Ann\u{0}", "Ann\u{202E}eel", "\u{2067}Ann"]
        .iter()
        .enumerate()
    {
        let refused = app
            .client
            .post(app.url("/api/v1/auth/register"))
            .json(
                &json!({"email": format!("n{i}@example.com"), "password": PASSWORD, "name": name}),
            )
            .send()
            .await
            .unwrap();
        let error = expect_error(refused, 422, "VALIDATION_ERROR").await;
        assert_eq!(
            error["error"]["errors"][0]["field"], "name",
            "{name:?}: {error}"
        );
    }
}
