//! The orders routes over real HTTP: every route, every validation rule,
//! ownership, idempotency keys.

mod common;

use common::{expect_error, spawn_app, spawn_app_with, ALICE, BOB};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn create_read_list_and_cancel_an_order() {
    let app = spawn_app().await;
    let created = app
        .create_order(
            ALICE,
            json!({"amount": 5000, "currency": "EUR", "description": "two tickets"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let order: Value = created.json().await.unwrap();
    assert_eq!(order["user_id"], app.user_id(ALICE));
    assert_eq!(order["amount"], 5000);
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["description"], "two tickets");
    assert_eq!(order["status"], "created");
    let id = order["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    assert!(time::OffsetDateTime::parse(
        order["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339
    )
    .is_ok());

    let read: Value = app.get_json(&format!("/api/v1/orders/{id}"), ALICE).await;
    assert_eq!(read, order);

    let cancelled = app
        .as_user(Method::POST, &format!("/api/v1/orders/{id}/cancel"), ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["id"], order["id"]);

    let again = app
        .as_user(Method::POST, &format!("/api/v1/orders/{id}/cancel"), ALICE)
        .send()
        .await
        .unwrap();
    expect_error(again, 409, "CONFLICT").await;
}

#[tokio::test]
async fn currency_defaults_from_configuration() {
    let app = spawn_app_with(|c| {
        c.service_mut("orders")
            .set("default_currency", "GBP")
            .unwrap()
    })
    .await;
    let order: Value = app
        .create_order(ALICE, json!({"amount": 1}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(order["currency"], "GBP");
}

#[tokio::test]
async fn lists_are_paginated_newest_first_and_show_only_the_callers_orders() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for amount in 1..=5 {
        let order: Value = app
            .create_order(ALICE, json!({"amount": amount}))
            .await
            .json()
            .await
            .unwrap();
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    app.create_order(BOB, json!({"amount": 99})).await;

    let page: Value = app.get_json("/api/v1/orders?page=2&limit=2", ALICE).await;
    assert_eq!(
        page["pagination"],
        json!({"page": 2, "limit": 2, "total": 5, "pages": 3})
    );
    let listed: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[2].as_str(), ids[1].as_str()]);

    let bobs: Value = app.get_json("/api/v1/orders", BOB).await;
    assert_eq!(bobs["pagination"]["total"], 1);
    assert_eq!(bobs["data"][0]["amount"], 99);
}

#[tokio::test]
async fn list_parameters_out_of_range_are_422_naming_the_field() {
    let app = spawn_app().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("page=0", "page"),
        ("page=x", "page"),
    ] {
        let response = app
            .as_user(Method::GET, &format!("/api/v1/orders?{query}"), ALICE)
            .send()
            .await
            .unwrap();
        let body = expect_error(response, 422, "VALIDATION_ERROR").await;
        assert_eq!(
            body["error"]["errors"][0]["field"], field,
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn another_users_order_is_not_found() {
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
    // Untouched by the attempt.
    let still: Value = app.get_json(&format!("/api/v1/orders/{id}"), ALICE).await;
    assert_eq!(still["status"], "created");
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_not_found() {
    let app = spawn_app().await;
    for id in ["0190d5e4-0000-7000-8000-000000000000", "not-a-uuid"] {
        let response = app
            .as_user(Method::GET, &format!("/api/v1/orders/{id}"), ALICE)
            .send()
            .await
            .unwrap();
        expect_error(response, 404, "NOT_FOUND").await;
    }
}

#[tokio::test]
async fn the_caller_must_be_named() {
    let app = spawn_app().await;
    let anonymous = app
        .client
        .post(app.url("/api/v1/orders"))
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    expect_error(anonymous, 401, "UNAUTHENTICATED").await;
    let forged = app
        .client
        .post(app.url("/api/v1/orders"))
        .bearer_auth("not.a.token")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    expect_error(forged, 401, "UNAUTHENTICATED").await;
    // The stand-in header of the days before auth names nobody now.
    let by_header = app
        .client
        .post(app.url("/api/v1/orders"))
        .header("x-user-id", app.user_id(ALICE))
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    expect_error(by_header, 401, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn bodies_that_are_not_json_are_400() {
    let app = spawn_app().await;
    let broken = app
        .as_user(Method::POST, "/api/v1/orders", ALICE)
        .header("content-type", "application/json")
        .body("{\"amount\": ")
        .send()
        .await
        .unwrap();
    expect_error(broken, 400, "BAD_REQUEST").await;
    let text = app
        .as_user(Method::POST, "/api/v1/orders", ALICE)
        .header("content-type", "text/plain")
        .body("amount=5")
        .send()
        .await
        .unwrap();
    let body = expect_error(text, 400, "BAD_REQUEST").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("content-type"));
}

#[tokio::test]
async fn invalid_fields_are_422_naming_each_field_and_nothing_is_written() {
    let app = spawn_app().await;
    let cases = [
        (json!({"amount": 0}), "amount"),
        (json!({"amount": -5}), "amount"),
        (json!({"amount": "5000"}), "amount"),
        (json!({"amount": 1.5}), "amount"),
        (json!({}), "amount"),
        (json!({"amount": 5, "currency": "usd"}), "currency"),
        (json!({"amount": 5, "currency": 840}), "currency"),
        (
            json!({"amount": 5, "description": "x".repeat(501)}),
            "description",
        ),
        (json!({"amount": 5, "price": 5}), "price"),
        (json!([1, 2]), "body"),
    ];
    for (body, field) in cases {
        let response = app.create_order(ALICE, body.clone()).await;
        let error = expect_error(response, 422, "VALIDATION_ERROR").await;
        let fields: Vec<&str> = error["error"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&field),
            "{body} should name {field}: {error}"
        );
    }
    let list: Value = app.get_json("/api/v1/orders", ALICE).await;
    assert_eq!(
        list["pagination"]["total"], 0,
        "a rejected request wrote nothing"
    );
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_response_and_creates_one_order() {
    let app = spawn_app().await;
    let send = |body: Value| {
        app.as_user(Method::POST, "/api/v1/orders", ALICE)
            .header("idempotency-key", "order-42")
            .json(&body)
            .send()
    };
    let first = send(json!({"amount": 4200})).await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    let second = send(json!({"amount": 4200})).await.unwrap();
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(second, first);

    let other_body = send(json!({"amount": 1})).await.unwrap();
    let error = expect_error(other_body, 422, "VALIDATION_ERROR").await;
    assert_eq!(error["error"]["errors"][0]["field"], "idempotency-key");

    // Scoped to the caller: Bob's "order-42" is another key.
    let bobs = app
        .as_user(Method::POST, "/api/v1/orders", BOB)
        .header("idempotency-key", "order-42")
        .json(&json!({"amount": 4200}))
        .send()
        .await
        .unwrap();
    assert_eq!(bobs.status(), 201);
    assert!(bobs.headers().get("idempotent-replayed").is_none());

    let list: Value = app.get_json("/api/v1/orders", ALICE).await;
    assert_eq!(list["pagination"]["total"], 1);
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_422() {
    let app = spawn_app().await;
    let response = app
        .as_user(Method::POST, "/api/v1/orders", ALICE)
        .header("idempotency-key", "x".repeat(256))
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    let error = expect_error(response, 422, "VALIDATION_ERROR").await;
    assert_eq!(error["error"]["errors"][0]["field"], "idempotency-key");
}

#[tokio::test]
async fn the_same_key_while_the_first_request_is_in_flight_is_409() {
    let app = spawn_app().await;
    let body = json!({"amount": 7});
    let send = || {
        app.as_user(Method::POST, "/api/v1/orders", ALICE)
            .header("idempotency-key", "slow-one")
            .json(&body)
            .send()
    };
    // The first request has claimed the key and is not done with it.
    let first = app.order_key_in_flight(ALICE, "slow-one", &body).await;
    let duplicate = send().await.unwrap();
    expect_error(duplicate, 409, "CONFLICT").await;
    // It ends without an answer stored, as a failed request does: the key
    // is free for the retry, whose answer is then replayed.
    first.release().await;
    let retried = send().await.unwrap();
    assert_eq!(retried.status(), 201);
    let replay = send().await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
}

/// The row cache (SQLite) answers reads of the orders this process wrote,
/// and every later write changes what it answers: a cancel at once, a
/// payment (applied from `invoice.paid`) as soon as it committed. Reads are
/// never answered from it on PostgreSQL, where another replica may write.
#[tokio::test]
async fn reads_follow_every_write_whether_or_not_the_row_cache_answers_them() {
    let app = spawn_app().await;
    let path = |id: &str| format!("/api/v1/orders/{id}");
    let paid: Value = app
        .create_order(ALICE, json!({"amount": 700, "currency": "EUR"}))
        .await
        .json()
        .await
        .unwrap();
    let cancelled: Value = app
        .create_order(ALICE, json!({"amount": 800, "currency": "EUR"}))
        .await
        .json()
        .await
        .unwrap();
    let (paid_id, cancelled_id) = (
        paid["id"].as_str().unwrap(),
        cancelled["id"].as_str().unwrap(),
    );
    assert_eq!(app.get_json(&path(paid_id), ALICE).await, paid);
    assert_eq!(app.get_json(&path(cancelled_id), ALICE).await, cancelled);

    let cancel = app
        .as_user(
            Method::POST,
            &format!("/api/v1/orders/{cancelled_id}/cancel"),
            ALICE,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let answered: Value = cancel.json().await.unwrap();
    assert_eq!(answered["status"], "cancelled");
    assert_eq!(app.get_json(&path(cancelled_id), ALICE).await, answered);

    let invoice = app
        .eventually(
            &format!("/api/v1/invoices/by-order/{paid_id}"),
            ALICE,
            |_| true,
        )
        .await;
    let pay = app
        .as_user(
            Method::POST,
            &format!("/api/v1/invoices/{}/pay", invoice["id"].as_str().unwrap()),
            ALICE,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pay.status(), 200);
    let read = app
        .eventually(&path(paid_id), ALICE, |o| o["status"] != "created")
        .await;
    assert_eq!(read["status"], "paid");

    let hits = app
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("db_row_cache_lookups_total") && l.contains("outcome=\"hit\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    if app.database.is_some() {
        assert_eq!(hits, 0.0, "PostgreSQL reads never come from the row cache");
    } else {
        assert!(
            hits >= 3.0,
            "the reads of fresh rows were cache hits: {hits}"
        );
    }
}

#[tokio::test]
async fn a_cancel_racing_a_payment_never_leaves_a_cancelled_order_paid() {
    let app = spawn_app().await;
    let tally = common::races::cancel_and_pay(&app, &app, ALICE, 20).await;
    eprintln!("cancel and pay, 20 rounds: {tally:?}");
}

/// The field names of a 422.
fn fields(error: &Value) -> Vec<String> {
    error["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

async fn post_raw(app: &common::TestApp, body: &str) -> reqwest::Response {
    app.as_user(Method::POST, "/api/v1/orders", ALICE)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn only_iso_4217_codes_are_currencies() {
    let app = spawn_app().await;
    for code in ["EUR", "JPY", "CHF"] {
        let created = app
            .create_order(ALICE, json!({"amount": 5, "currency": code}))
            .await;
        assert_eq!(created.status(), 201, "{code}");
    }
    for (code, message) in [
        ("XYZ", "is not an ISO 4217 currency code"),
        ("ABC", "is not an ISO 4217 currency code"),
        // Lowercase stays refused, as before: codes are not upper-cased.
        (
            "usd",
            "must be a three-letter ISO 4217 code in capitals, such as USD",
        ),
    ] {
        let refused = app
            .create_order(ALICE, json!({"amount": 5, "currency": code}))
            .await;
        let error = expect_error(refused, 422, "VALIDATION_ERROR").await;
        assert_eq!(error["error"]["errors"][0]["field"], "currency", "{error}");
        assert_eq!(error["error"]["errors"][0]["message"], message, "{error}");
    }
    let list: Value = app.get_json("/api/v1/orders", ALICE).await;
    assert_eq!(list["pagination"]["total"], 3);
}

#[tokio::test]
async fn descriptions_with_control_or_bidi_override_characters_are_422() {
    let app = spawn_app().await;
    for bad in [
        "nul\u{0}byte",
        "two\nlines",
        "escape\u{1b}[31m",
        "c1\u{85}",
        "invoice \u{202E}fdp.exe",
        "isolate \u{2066}x\u{2069}",
    ] {
        let refused = app
            .create_order(ALICE, json!({"amount": 5, "description": bad}))
            .await;
        let error = expect_error(refused, 422, "VALIDATION_ERROR").await;
        assert_eq!(fields(&error), ["description"], "{bad:?}: {error}");
    }
    // Right-to-left text with its marks is printable.
    let hebrew = "שלום 42\u{200F} café";
    let created = app
        .create_order(ALICE, json!({"amount": 5, "description": hebrew}))
        .await;
    assert_eq!(created.status(), 201);
    let order: Value = created.json().await.unwrap();
    assert_eq!(order["description"], hebrew);
}

#[tokio::test]
async fn numbers_out_of_range_are_422_naming_the_field() {
    let app = spawn_app().await;
    for (body, field) in [
        (r#"{"amount": 1e400}"#, "amount"),
        (r#"{"amount": -1e400}"#, "amount"),
        (r#"{"amount": 1e300}"#, "amount"),
        (r#"{"amount": 18446744073709551616}"#, "amount"),
        (r#"{"amount": 5, "extra": {"n": [1, 1e999]}}"#, "extra.n[1]"),
    ] {
        let refused = post_raw(&app, body).await;
        let error = expect_error(refused, 422, "VALIDATION_ERROR").await;
        assert!(
            fields(&error).contains(&field.to_owned()),
            "{body} should name {field}: {error}"
        );
    }
    let list: Value = app.get_json("/api/v1/orders", ALICE).await;
    assert_eq!(list["pagination"]["total"], 0, "nothing was written");
}

#[tokio::test]
async fn a_key_given_twice_is_400_naming_it_at_any_depth() {
    let app = spawn_app().await;
    for (body, key) in [
        (r#"{"amount": 5, "amount": 7}"#, "\"amount\""),
        (
            r#"{"amount": 5, "description": "a", "description": "b"}"#,
            "\"description\"",
        ),
        (r#"{"amount": 5, "\u0061mount": 7}"#, "\"amount\""),
        (
            r#"{"amount": 5, "meta": [{"k": 1, "k": 2}]}"#,
            "\"meta[0].k\"",
        ),
    ] {
        let refused = post_raw(&app, body).await;
        let error = expect_error(refused, 400, "BAD_REQUEST").await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(key), "{body} should name {key}: {error}");
    }
    let list: Value = app.get_json("/api/v1/orders", ALICE).await;
    assert_eq!(list["pagination"]["total"], 0, "nothing was written");
}
